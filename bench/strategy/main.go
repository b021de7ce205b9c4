// Command strategy measures watcher's polling strategy against a naive poller, both
// polling the provider simulator (package sim) in the same process.
//
// It builds two simulators with the same seed and configuration: watcher's pollers
// (built as the daemon builds them, with a bbolt state file) poll one, and a naive
// poller that walks each source's whole lookback every interval and compares in memory
// polls the other. The run has four phases: a silent baseline while the simulated clock
// stands still; the scenario engine running (old open items and new items change
// status); the engine stopped while both pollers catch up; and idle cycles of watcher
// alone. It then checks every event against the simulator's ground truth and prints
// (or writes into a markdown file, between marker comments) the figures: requests per
// idle cycle, requests per detected transition, missed final statuses, events that
// are not a subsequence of the truth, duplicates, and the delay from a change to its
// event.
//
// -webhooks hints adds provider webhooks: watcher's simulator delivers those of the
// providers that send them (Stripe onramp, Coindirect, Circle CPN) with faults
// (dropped, held back, duplicated, reordered, replayed, forged) to watcher's webhook
// listener, built as the daemon builds it, whose verified deliveries make the pollers
// read the items they name; the report adds the delay for changes a hint was
// delivered for and what the listener accepted and refused. -webhooks only is a
// control: the same deliveries go to a naive consumer that trusts each body, in place
// of watcher, and the report shows what it misses and gets wrong (webhooks.go,
// consumer.go).
//
//	go run ./bench/strategy                          # the default scale, printed
//	go run ./bench/strategy -out BENCHMARKS.md       # ... and written into the file
//	go run ./bench/strategy -webhooks hints -out BENCHMARKS.md   # section webhooks
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/payments-watcher/watcher/bench/mdsection"
)

// generator names this command in the markers of the sections it writes.
const generator = "go run ./bench/strategy"

// markers return the comments that delimit a generated section of the -out file.
func markers(section string) (begin, end string) { return mdsection.Markers(generator, section) }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runMain(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "strategy:", err)
		os.Exit(1)
	}
}

func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o := defaultOptions()
	fs := flag.NewFlagSet("strategy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.History, "history", o.History, "history items per provider (5 providers)")
	fs.DurationVar(&o.Duration, "duration", o.Duration, "how long the scenario engine runs")
	fs.DurationVar(&o.CatchUp, "catchup", o.CatchUp, "longest wait, after the engine stops, for every item's last status")
	fs.DurationVar(&o.Interval, "interval", o.Interval, "watcher's interval, and the naive poller's walk period")
	fs.DurationVar(&o.OpenRefresh, "open-refresh", o.OpenRefresh, "watcher's open_refresh")
	fs.DurationVar(&o.OpenRefreshMax, "open-refresh-max", o.OpenRefreshMax, "watcher's open_refresh_max (0: periods do not grow with age)")
	fs.DurationVar(&o.OpenResume, "resume-within", o.OpenResume, "open history items move on at random moments within this long of the start (0: within -duration)")
	fs.Float64Var(&o.Rate, "rate", o.Rate, "new items per second per provider while the engine runs")
	fs.Float64Var(&o.RateLimit, "rate-limit", o.RateLimit, "watcher's rate_limit (requests per second per source)")
	fs.IntVar(&o.IdleCycles, "idle-cycles", o.IdleCycles, "watcher cycles in the idle phase")
	fs.Int64Var(&o.Seed, "seed", o.Seed, "scenario seed")
	fs.BoolVar(&o.Naive, "naive", o.Naive, "run the naive poller too (false: watcher alone, a control for CPU contention); the only mode runs none")
	h := &o.Hooks
	fs.StringVar(&h.Mode, "webhooks", h.Mode, "`mode`: off (polling only), hints (watcher's simulator delivers webhooks to watcher's listener as hints) or only (a naive webhook consumer in watcher's place, a control)")
	fs.Float64Var(&h.Faults.DropRate, "hook-drop", h.Faults.DropRate, "share of webhook deliveries dropped")
	fs.Float64Var(&h.Faults.DuplicateRate, "hook-duplicate", h.Faults.DuplicateRate, "share of webhook deliveries posted twice")
	fs.Float64Var(&h.Faults.DelayRate, "hook-delay", h.Faults.DelayRate, "share of webhook deliveries held back, each by up to -hook-max-delay")
	fs.DurationVar(&h.Faults.MaxDelay, "hook-max-delay", h.Faults.MaxDelay, "longest hold-back of a webhook delivery")
	fs.IntVar(&h.Faults.Reorder, "hook-reorder", h.Faults.Reorder, "queued webhook deliveries sent shuffled in batches of up to this many")
	fs.Float64Var(&h.Faults.InjectRate, "hook-forge", h.Faults.InjectRate, "share of changes followed by an extra forged delivery (a bad signature; a made-up id, or the real item with another final status)")
	fs.Float64Var(&h.Faults.ReplayRate, "hook-replay", h.Faults.ReplayRate, "share of webhook deliveries followed by a replay of the last one")
	fs.DurationVar(&h.Faults.ReplayAge, "hook-replay-age", h.Faults.ReplayAge, "how old a replayed delivery is presented as (a Stripe timestamp that far back)")
	fs.Float64Var(&h.PollingFigure, "compare-requests", h.PollingFigure, "requests per detected transition of a polling-only run, which the hints run is held to (0: none)")
	out := fs.String("out", "", "markdown `file` whose generated section is replaced (appended when it has none); empty prints only")
	section := fs.String("section", "", "`name` of the generated section in the -out file (default main, webhooks or webhooks-only by -webhooks)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := checkHookFlags(fs, &o); err != nil {
		return err
	}
	if *section == "" {
		*section = map[string]string{hooksOff: "main", hooksHints: "webhooks", hooksOnly: "webhooks-only"}[o.Hooks.Mode]
	}
	if o.History < 0 || o.Rate < 0 || o.OpenResume < 0 || o.Duration <= 0 || o.CatchUp < 0 || o.Interval <= 0 || o.OpenRefresh <= 0 || o.OpenRefreshMax < 0 || o.IdleCycles < 1 || o.RateLimit <= 0 {
		return errors.New("-history, -rate, -resume-within, -catchup and -open-refresh-max must not be negative; -duration, -interval, -open-refresh and -rate-limit must be positive; -idle-cycles must be at least 1")
	}
	dir, err := os.MkdirTemp("", "watcher-strategy-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	o.Dir = dir
	o.Progress = stderr

	res, err := run(ctx, o)
	if err != nil {
		return err
	}
	command := "go run ./bench/strategy"
	if len(args) > 0 {
		command += " " + strings.Join(args, " ")
	}
	md := res.markdown(command)
	fmt.Fprint(stdout, md)
	if *out != "" {
		return writeSection(*out, *section, md)
	}
	return nil
}

// checkHookFlags checks the webhook flags; the only mode runs no naive poller, and
// says so when -naive asks for one.
func checkHookFlags(fs *flag.FlagSet, o *options) error {
	h := o.Hooks
	var errs []error
	switch h.Mode {
	case hooksOff, hooksHints, hooksOnly:
	default:
		errs = append(errs, fmt.Errorf("-webhooks %q: want off, hints or only", h.Mode))
	}
	for name, v := range map[string]float64{"-hook-drop": h.Faults.DropRate, "-hook-duplicate": h.Faults.DuplicateRate,
		"-hook-delay": h.Faults.DelayRate, "-hook-forge": h.Faults.InjectRate, "-hook-replay": h.Faults.ReplayRate} {
		if !(v >= 0 && v <= 1) {
			errs = append(errs, fmt.Errorf("%s %v: want a share between 0 and 1", name, v))
		}
	}
	if h.Faults.MaxDelay < 0 || h.Faults.ReplayAge < 0 || h.Faults.Reorder < 0 || h.PollingFigure < 0 {
		errs = append(errs, errors.New("-hook-max-delay, -hook-replay-age, -hook-reorder and -compare-requests must not be negative"))
	}
	if h.Mode == hooksOnly {
		fs.Visit(func(f *flag.Flag) {
			if f.Name == "naive" && o.Naive {
				errs = append(errs, errors.New("-webhooks only runs no poller: -naive does not apply"))
			}
		})
		o.Naive = false
	}
	return errors.Join(errs...)
}

// writeSection puts md into section name of the file at path.
func writeSection(path, name, md string) error { return mdsection.Write(path, generator, name, md) }
