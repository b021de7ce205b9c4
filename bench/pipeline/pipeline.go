// Package pipeline measures what watcher itself costs, on the machine it runs on,
// beside what that machine's bbolt and JetStream can do at all.
//
// One Run measures, in one process:
//
//  1. The raw limits: JetStream asynchronous publishing with Nats-Msg-Id to a
//     file-storage stream of the embedded NATS server (publish.StartEmbedded); bbolt
//     page-sized write transactions with fsync; and a minimal loop that does only what
//     delivering a page of transitions needs (one transaction of snapshot and outbox
//     puts, an asynchronous publish, a transaction of outbox deletes after the
//     acknowledgements), without HTTP, parsing, comparison or encoding.
//  2. Watcher's pipeline on the same machine: poller.Poller (diff.Compare, event
//     rendering, bbolt.Store.Commit page by page) and publish.Publisher draining the
//     outbox to the same server, as the daemon runs them, fed pre-built provider items
//     instead of HTTP; once with every item changed and once with a tenth changed.
//  3. Scale: watcher's pollers built from a configuration as the daemon builds them,
//     polling the provider simulator (package sim) over loopback HTTP, five sources at
//     once: the baseline walk of every item, the state file's size, and the CPU time of
//     idle cycles, at several numbers of tracked items with the same number of open
//     items.
//
// Every figure is wall time, process CPU time, peak resident set and peak Go heap in
// use; Report.Markdown renders them with the pipeline's figures as ratios of the raw
// limits and the targets each is held to. Nothing here asserts a target: the report
// says whether each was met.
package pipeline

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payments-watcher/watcher/config"
	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/publish"
)

// Options shape one Run.
type Options struct {
	// Dir holds the run's state files and JetStream store; it must exist. Run leaves
	// its files there.
	Dir string
	// PageSize is the page of the raw loops and the pipeline (items per commit);
	// Pages how many pages each walks.
	PageSize, Pages int
	// Messages is how many messages the raw JetStream measurement publishes.
	Messages int
	// Repeat is how many times steps 1 and 2 are measured, their measurements
	// interleaved; the report keeps each one's best (the machine's least disturbed).
	Repeat int
	// Scales are the numbers of history items (all five sources together) of the scale
	// runs, each with Open open items (or all, when fewer), IdleCycles idle cycles
	// measured after a first one. No scale runs are made when empty.
	Scales     []int
	Open       int
	IdleCycles int
	// Seed makes the items and the simulator's scenario reproducible.
	Seed int64
	// SimCommand, when set, is the command that serves the simulator in a process of
	// its own for the scale runs (watcher sim: the executable and "sim"), so that their
	// figures are watcher's alone; empty runs the simulator in this process.
	SimCommand []string
	// SkipRaw and SkipPipeline leave out steps 1 and 2.
	SkipRaw, SkipPipeline bool
	// Progress receives one line per measurement; nil discards them.
	Progress io.Writer
}

// DefaultOptions are the scale the benchmark is reported at.
func DefaultOptions() Options {
	return Options{
		PageSize: 100, Pages: 200, Messages: 20_000, Repeat: 3,
		Scales: []int{10_000, 100_000, 1_000_000}, Open: 10_000, IdleCycles: 20, Seed: 1,
	}
}

func (o Options) validate() error {
	var errs []error
	if o.Dir == "" {
		errs = append(errs, errors.New("dir: empty"))
	}
	if o.PageSize < 1 || o.Pages < 1 || o.Messages < 1 || o.Repeat < 1 {
		errs = append(errs, fmt.Errorf("page size %d, pages %d, messages %d and repeat %d must be at least 1", o.PageSize, o.Pages, o.Messages, o.Repeat))
	}
	for _, s := range o.Scales {
		if s < len(scaleSources) {
			errs = append(errs, fmt.Errorf("scale %d: fewer items than the %d sources", s, len(scaleSources)))
		}
	}
	if o.Open < 0 || o.IdleCycles < 1 {
		errs = append(errs, fmt.Errorf("open %d must not be negative and idle cycles %d must be at least 1", o.Open, o.IdleCycles))
	}
	return errors.Join(errs...)
}

// Mixes of the raw loops and the pipeline: which share of the items changed.
const (
	AllChanged   = iota // every item changed
	TenthChanged        // every tenth item changed
	numMixes
)

// every is the stride of the changed items of each mix.
var every = [numMixes]int{AllChanged: 1, TenthChanged: 10}

// MixName names a mix in the report.
func MixName(mix int) string {
	if mix == AllChanged {
		return "every item changed"
	}
	return "10% changed"
}

// Report is one Run's figures.
type Report struct {
	Started time.Time
	Machine Machine
	Options Options
	// NATS is the configuration everything published with: the daemon's defaults
	// (embedded server, stream and publisher settings) with the measurement's stream.
	NATS publish.Config
	// EventBytes is the size of the events the raw measurements publish: the size of
	// the pipeline's.
	EventBytes int
	// Step 1, each the best of Options.Repeat.
	RawPublish       Figures
	RawBolt, Minimal [numMixes]Figures
	// Step 2, each the best of Options.Repeat.
	Pipeline [numMixes]Figures
	// Step 3, in the order of Options.Scales.
	Scales []Scale
}

// Machine describes where a Run ran.
type Machine struct {
	CPUs     int
	Model    string
	RAM      uint64
	Go, Arch string
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), Arch: runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if k, v, ok := bytes.Cut(sc.Bytes(), []byte(":")); ok && string(bytes.TrimSpace(k)) == "model name" {
				m.Model = string(bytes.TrimSpace(v))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("MemTotal:")); ok {
				if f := bytes.Fields(rest); len(f) == 2 {
					kb, _ := strconv.ParseUint(string(f[0]), 10, 64)
					m.RAM = kb * 1024
				}
				break
			}
		}
	}
	return m
}

// daemonNATS returns the daemon's default `nats:` configuration, as the configuration
// loader fills it in for a file that sets none of it.
func daemonNATS() (publish.Config, error) {
	cfg, err := config.Parse(scaleConfig("watcher.db", "http://127.0.0.1:1"), func(string) (string, bool) { return "", false }, os.ReadFile)
	if err != nil {
		return publish.Config{}, fmt.Errorf("default configuration: %w", err)
	}
	return cfg.NATS, nil
}

// withStream returns c publishing to stream under prefix.
func withStream(c publish.Config, stream, prefix string) publish.Config {
	c.Stream, c.SubjectPrefix = stream, prefix
	return c
}

// best keeps in *dst the better of *dst and f: the shorter wall time for the same
// work.
func best(dst *Figures, f Figures) {
	if dst.Wall == 0 || (f.Wall > 0 && f.Wall < dst.Wall) {
		*dst = f
	}
}

// Run makes every measurement o asks for and returns the figures.
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("bench options: %w", err)
	}
	log := slog.New(slog.DiscardHandler)
	progress := func(format string, args ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "%s  "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05")}, args...)...)
		}
	}
	r := &Report{Started: time.Now().UTC(), Machine: machine(), Options: o}
	ncfg, err := daemonNATS()
	if err != nil {
		return nil, err
	}
	r.NATS = ncfg

	nc, js, stop, err := startNATS(ncfg, filepath.Join(o.Dir, "nats"), log)
	if err != nil {
		return nil, err
	}
	defer stop()

	if !o.SkipRaw || !o.SkipPipeline {
		if err := r.steps12(ctx, o, nc, ncfg, log, progress); err != nil {
			return nil, err
		}
	}

	for i, target := range o.Scales {
		progress("scale: %d history items (%d open), baseline over HTTP then %d idle cycles", target, min(o.Open, target), o.IdleCycles)
		dir := filepath.Join(o.Dir, fmt.Sprintf("scale-%d", i))
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, err
		}
		cfg := withStream(ncfg, "SCALE", "scale")
		sc, err := runScale(ctx, dir, js, cfg, o.SimCommand, o.Seed, target, o.Open, o.IdleCycles, log)
		deleteStream(js, cfg.Stream)
		if err != nil {
			return nil, fmt.Errorf("scale %d: %w", target, err)
		}
		progress("scale: %d tracked: baseline %s, idle cycle CPU %s", sc.Tracked, sc.Baseline.Wall.Round(time.Millisecond), sc.IdleCPU().Round(time.Microsecond))
		r.Scales = append(r.Scales, sc)
	}
	return r, nil
}

// steps12 measures the raw limits and the pipeline, Options.Repeat times,
// interleaved so that a disturbance of the machine does not favour one of them.
func (r *Report) steps12(ctx context.Context, o Options, nc *nats.Conn, ncfg publish.Config, log *slog.Logger, progress func(string, ...any)) (err error) {
	// Each measurement publishes through a JetStream context of its own, as the
	// daemon's publisher has one.
	newJS := func() (jetstream.JetStream, error) { return jetstream.New(nc) }
	items := newItemSet(uint64(o.Seed), o.Pages*o.PageSize, time.Now().UTC())
	sample := items.page(0, 1, func(int) diff.Status { return statusProcessing })
	body, err := sampleBody(&sample[0])
	if err != nil {
		return err
	}
	r.EventBytes = len(body)

	var raws, mins [numMixes]*boltFile
	defer func() {
		for _, f := range append(raws[:], mins[:]...) {
			if f != nil {
				if cerr := f.close(); err == nil {
					err = cerr
				}
			}
		}
	}()
	var fl *flow
	pcfg := withStream(ncfg, "PIPELINE", "pipeline")
	if !o.SkipPipeline {
		js, err := newJS()
		if err != nil {
			return err
		}
		if fl, err = startFlow(ctx, filepath.Join(o.Dir, "pipeline.db"), js, pcfg, o.PageSize, log); err != nil {
			return err
		}
		defer func() {
			if cerr := fl.close(); err == nil {
				err = cerr
			}
			deleteStream(js, pcfg.Stream)
		}()
		progress("pipeline: silent baseline of %d items (not measured)", len(items.ids))
		if _, err := fl.cycle(ctx, items.round(o.PageSize, func(i int) diff.Status { return items.status[i] }), 0); err != nil {
			return fmt.Errorf("pipeline baseline: %w", err)
		}
	}
	if !o.SkipRaw {
		for mix := range numMixes {
			if raws[mix], err = openBolt(filepath.Join(o.Dir, fmt.Sprintf("raw-%d.db", mix)), items.ids); err != nil {
				return err
			}
			if mins[mix], err = openBolt(filepath.Join(o.Dir, fmt.Sprintf("minimal-%d.db", mix)), items.ids); err != nil {
				return err
			}
		}
	}

	round := 0
	for rep := range o.Repeat {
		if !o.SkipRaw {
			js, err := newJS()
			if err != nil {
				return err
			}
			progress("raw %d/%d: JetStream, %d asynchronous publishes of %d bytes", rep+1, o.Repeat, o.Messages, len(body))
			f, err := rawPublish(ctx, js, withStream(ncfg, "RAW", "raw"), o.Messages, body)
			if err != nil {
				return fmt.Errorf("raw JetStream: %w", err)
			}
			best(&r.RawPublish, f)
		}
		for mix := range numMixes {
			if !o.SkipRaw {
				progress("raw %d/%d: bbolt, %d page transactions with fsync, %s", rep+1, o.Repeat, o.Pages, MixName(mix))
				f, err := rawBolt(raws[mix], o.PageSize, every[mix], body)
				if err != nil {
					return fmt.Errorf("raw bbolt: %w", err)
				}
				best(&r.RawBolt[mix], f)
				progress("raw %d/%d: minimal loop, %d pages, %s", rep+1, o.Repeat, o.Pages, MixName(mix))
				js, err := newJS()
				if err != nil {
					return err
				}
				if f, err = minimalLoop(ctx, js, withStream(ncfg, "MINIMAL", "minimal"), mins[mix], o.PageSize, every[mix], body, fmt.Sprintf("%d-%d", rep, mix)); err != nil {
					return fmt.Errorf("minimal loop: %w", err)
				}
				best(&r.Minimal[mix], f)
			}
			if !o.SkipPipeline {
				progress("pipeline %d/%d: %d pages, %s", rep+1, o.Repeat, o.Pages, MixName(mix))
				pages, want := items.next(o.PageSize, every[mix], round)
				round++
				f, err := fl.cycle(ctx, pages, want)
				if err != nil {
					return fmt.Errorf("pipeline, %s: %w", MixName(mix), err)
				}
				best(&r.Pipeline[mix], f)
			}
		}
	}
	return nil
}

// startNATS starts the embedded NATS server of ncfg with its store in dir, on a free
// loopback port, and connects to it as the daemon does. stop closes the connection
// and shuts the server down.
func startNATS(ncfg publish.Config, dir string, log *slog.Logger) (*nats.Conn, jetstream.JetStream, func(), error) {
	emb := ncfg.Embedded
	emb.Listen, emb.StoreDir = "127.0.0.1:0", dir
	srv, err := publish.StartEmbedded(emb, log)
	if err != nil {
		return nil, nil, nil, err
	}
	nc, err := publish.Connect(srv.ClientURL(), ncfg, log)
	if err != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, nil, nil, err
	}
	stop := func() {
		nc.Close()
		srv.Shutdown()
		srv.WaitForShutdown()
	}
	js, err := jetstream.New(nc)
	if err != nil {
		stop()
		return nil, nil, nil, fmt.Errorf("nats: %w", err)
	}
	return nc, js, stop, nil
}
