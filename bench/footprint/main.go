// Command footprint is the soak benchmark of the watcher daemon: it runs `watcher run`
// alone in its own process, with the provider simulator (`watcher sim`) and
// nats-server in processes of their own, under a steady load of new and open items,
// and records over time what the daemon holds: its resident memory (anonymous and
// file-backed), Go heap and goroutines (from its /metrics), open files, the state
// file's size and free pages, and the size of the JetStream stream it publishes to.
//
//	go run ./bench/footprint -soak 1h -dir /tmp/soak-current
//	go run ./bench/footprint -soak 1h -watcher /tmp/watcher-prev.bin -label previous -dir /tmp/soak-previous
//
// It writes footprint.csv and footprint.svg in -dir and prints a markdown summary,
// which -out puts into a generated section of a markdown file (BENCHMARKS.md).
// The daemon measured is the current tree's `watcher` unless -watcher names another
// binary (an earlier release); the simulator is always the current tree's, so that
// both see the same load. The daemon's configuration uses only keys that 21890d4 and
// later releases all accept. -compare draws the CSVs of several runs in one picture.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/payments-watcher/watcher/bench/mdsection"
	"github.com/payments-watcher/watcher/bench/pipeline"
)

// options configure a run.
type options struct {
	// Soak is how long the daemon runs under load after it first answers /metrics.
	Soak time.Duration
	// Every is the interval between samples.
	Every time.Duration
	// Rate is new items per second per provider; History the items per provider that
	// exist when the simulator starts (a share of them open); Seed the scenario seed.
	Rate    float64
	History int
	Seed    int64
	// Burst, when above 0, replaces History: the simulator starts with Burst items
	// per provider, each a first-sight event (baseline: emit) the daemon publishes at
	// once, so that the run shows the state file after a burst.
	Burst int
	// Lookback, when above 0, bounds what the daemon's sources track: each gets
	// lookback and open_max_age Lookback, discovery_overlap 1m and settle_window 2m,
	// so that the run shows the daemon with a tracked set bounded by lookback. 0 leaves
	// those keys at their defaults.
	Lookback time.Duration
	// Watcher is the daemon binary measured; "" builds the current tree's.
	Watcher string
	// NATSServer is the nats-server binary; "" builds it from the module's dependency.
	NATSServer string
	// Dir holds the binaries built, the state file, the NATS store, the logs and the
	// results (footprint.csv, footprint.svg).
	Dir string
	// Label names the run in the summary and the picture ("current", "previous").
	Label string
	// Command is the command line shown in the summary.
	Command string
	// Progress receives a line per sample and the run's steps; nil discards them.
	Progress io.Writer
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := mainErr(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "footprint:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("bad command line")

func mainErr(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o := options{Every: 10 * time.Second, Rate: 4, History: 200, Seed: 1, Label: "current", Progress: stderr}
	fs := flag.NewFlagSet("footprint", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&o.Soak, "soak", 0, "how long the daemon runs under load (required unless -compare)")
	fs.DurationVar(&o.Every, "every", o.Every, "interval between samples")
	fs.Float64Var(&o.Rate, "rate", o.Rate, "new items per second per provider (the simulator's --rate)")
	fs.IntVar(&o.History, "history", o.History, "items per provider that exist when the simulator starts")
	fs.IntVar(&o.Burst, "burst", 0, "start the simulator with this many items per provider instead of -history, a burst of first sights (0: off)")
	fs.DurationVar(&o.Lookback, "lookback", 0, "give every source this lookback and open_max_age, discovery_overlap 1m and settle_window 2m (0: their defaults)")
	fs.Int64Var(&o.Seed, "seed", o.Seed, "scenario seed of the simulator (the same seed gives the same load)")
	fs.StringVar(&o.Watcher, "watcher", "", "daemon `binary` to measure (default: build the current tree's ./cmd/watcher)")
	fs.StringVar(&o.NATSServer, "nats-server", "", "nats-server `binary` (default: build github.com/nats-io/nats-server/v2 from the module cache)")
	fs.StringVar(&o.Dir, "dir", "", "`directory` of the run's files and results (default: a new temporary one, kept)")
	fs.StringVar(&o.Label, "label", o.Label, "name of the run in the summary and the picture")
	out := fs.String("out", "", "markdown `file` whose generated section is replaced (appended when it has none); empty prints only")
	section := fs.String("section", "footprint", "`name` of the generated section in the -out file")
	compare := fs.String("compare", "", "instead of running, draw `A.csv,B.csv` (labelled by -compare-labels) into the SVG file named by -svg")
	labels := fs.String("compare-labels", "current,previous", "labels of the -compare runs")
	svgOut := fs.String("svg", "", "output `file` of -compare")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	if *compare != "" {
		return compareRuns(strings.Split(*compare, ","), strings.Split(*labels, ","), *svgOut)
	}
	if o.Soak <= 0 || o.Every <= 0 || o.Rate <= 0 || o.History < 0 || o.Burst < 0 || o.Lookback < 0 {
		return fmt.Errorf("%w: -soak %s, -every %s and -rate %g must be positive, -history %d, -burst %d and -lookback %s not negative",
			errUsage, o.Soak, o.Every, o.Rate, o.History, o.Burst, o.Lookback)
	}
	if o.Burst > 0 {
		o.History = o.Burst
	}
	if o.Dir == "" {
		d, err := os.MkdirTemp("", "watcher-footprint-")
		if err != nil {
			return err
		}
		o.Dir = d
	}
	o.Command = "go run ./bench/footprint " + strings.Join(args, " ")
	r, err := run(ctx, o)
	if r != nil && len(r.Series.Rows) > 0 {
		// A run stopped early (Ctrl-C, the daemon exiting) still leaves its samples.
		if werr := r.write(); werr != nil && err == nil {
			err = werr
		}
		md := r.Markdown()
		fmt.Fprint(stdout, md)
		if *out != "" && err == nil {
			if werr := mdsection.Write(*out, "go run ./bench/footprint", *section, md); werr != nil {
				return fmt.Errorf("-out %s: %w", *out, werr)
			}
		}
	}
	return err
}

// compareRuns draws the CSVs of several runs into one picture at svg.
func compareRuns(csvs, labels []string, svg string) error {
	if svg == "" {
		return fmt.Errorf("%w: -compare needs -svg FILE", errUsage)
	}
	var runs []pipeline.Series
	for i, path := range csvs {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("-compare: %w", err)
		}
		s, err := pipeline.ReadSeries(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("-compare %s: %w", path, err)
		}
		if strings.Join(s.Columns, ",") != strings.Join(columns, ",") {
			return fmt.Errorf("-compare %s: columns %q are not the footprint's %q", path, s.Columns, columns)
		}
		if i < len(labels) {
			s.Label = labels[i]
		}
		runs = append(runs, s)
	}
	return os.WriteFile(svg, pipeline.SVG(panels, runs...), 0o644)
}

// write puts the samples into footprint.csv and footprint.svg in the run's directory.
func (r *report) write() error {
	r.CSV, r.SVG = filepath.Join(r.Options.Dir, "footprint.csv"), filepath.Join(r.Options.Dir, "footprint.svg")
	if err := os.WriteFile(r.CSV, r.Series.CSV(), 0o644); err != nil {
		return err
	}
	return os.WriteFile(r.SVG, pipeline.SVG(panels, r.Series), 0o644)
}
