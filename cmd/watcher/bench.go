package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"

	"github.com/payments-watcher/watcher/bench/mdsection"
	"github.com/payments-watcher/watcher/bench/pipeline"
)

// benchMarkers return the comments that delimit a generated section of the -out file.
func benchMarkers(section string) (begin, end string) {
	return mdsection.Markers("watcher bench", section)
}

// benchCommand measures watcher's own cost against the raw limits of bbolt and
// JetStream on this machine (package bench/pipeline) and prints the report.
func benchCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o := pipeline.DefaultOptions()
	fs := flag.NewFlagSet("watcher bench", flag.ContinueOnError)
	fs.IntVar(&o.PageSize, "page-size", o.PageSize, "items per page in the raw loops and the pipeline")
	fs.IntVar(&o.Pages, "pages", o.Pages, "pages of the raw loops and of each pipeline measurement")
	fs.IntVar(&o.Messages, "messages", o.Messages, "messages of the raw JetStream measurement")
	fs.IntVar(&o.Repeat, "repeat", o.Repeat, "times the raw limits and the pipeline are measured (the best is kept)")
	scales := fs.String("scales", joinInts(o.Scales), "comma-separated history `sizes` (items over all five sources) of the scale runs; empty for none")
	fs.IntVar(&o.Open, "open", o.Open, "open items at every scale")
	fs.IntVar(&o.IdleCycles, "idle-cycles", o.IdleCycles, "idle cycles measured at every scale")
	fs.Int64Var(&o.Seed, "seed", o.Seed, "seed of the items and of the simulator")
	fs.BoolVar(&o.SkipRaw, "skip-raw", false, "leave out the raw limits (step 1)")
	fs.BoolVar(&o.SkipPipeline, "skip-pipeline", false, "leave out the pipeline (step 2)")
	inProcess := fs.Bool("sim-in-process", false, "run the simulator of the scale runs in this process (its CPU and memory then count as watcher's)")
	dir := fs.String("dir", "", "`directory` for the run's files (default: a temporary one, removed afterwards)")
	out := fs.String("out", "", "markdown `file` whose generated section is replaced (appended when it has none); empty prints only")
	section := fs.String("section", "pipeline", "`name` of the generated section in the -out file")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to `file`")
	burst := fs.Int("burst", 0, "instead of the steps, run one cycle of this many first-sight events with the default retention, then compact the state file (0: off)")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return badCommandLine(stderr, "Usage: watcher bench [flags]; 'watcher bench -h' lists them\n", fmt.Errorf("bench: unexpected arguments %q", fs.Args()))
	}
	var err error
	if o.Scales, err = parseInts(*scales); err != nil {
		return fmt.Errorf("bench: -scales %q: %w", *scales, err)
	}
	o.Progress = stderr
	if !*inProcess && len(o.Scales) > 0 {
		if o.SimCommand, err = benchSimCommand(); err != nil {
			return fmt.Errorf("bench: the simulator runs as this executable's sim command: %w", err)
		}
	}
	if *dir == "" {
		tmp, err := os.MkdirTemp("", "watcher-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		o.Dir = tmp
	} else {
		if err := os.MkdirAll(*dir, 0o750); err != nil {
			return fmt.Errorf("bench: -dir: %w", err)
		}
		o.Dir = *dir
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("bench: -cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("bench: -cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}

	command := "watcher bench"
	if len(args) > 0 {
		command += " " + strings.Join(args, " ")
	}
	var md string
	switch {
	case *burst > 0:
		r, err := pipeline.RunBurst(ctx, pipeline.BurstOptions{Dir: o.Dir, Items: *burst, PageSize: o.PageSize, Seed: uint64(o.Seed), Progress: stderr})
		if err != nil {
			return err
		}
		md = r.Markdown(command)
	default:
		r, err := pipeline.Run(ctx, o)
		if err != nil {
			return err
		}
		md = r.Markdown(command)
	}
	fmt.Fprint(stdout, md)
	if *out != "" {
		return writeBenchSection(*out, *section, md)
	}
	return nil
}

// benchSimCommand returns the command that serves the simulator of the scale runs in
// a process of its own: this executable's sim command.
var benchSimCommand = func() ([]string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return []string{exe, "sim"}, nil
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

func parseInts(s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive whole number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// writeBenchSection puts md into section name of the file at path.
func writeBenchSection(path, name, md string) error {
	if err := mdsection.Write(path, "watcher bench", name, md); err != nil {
		return fmt.Errorf("bench: -out: %w", err)
	}
	return nil
}
