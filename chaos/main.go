// Command chaos runs the real watcher binary against the provider simulator with all
// five sources, injected provider faults, watcher killed with SIGKILL at random
// moments and nats-server stopped and restarted on the same store, then checks the
// JetStream stream against the simulator's ground truth: nothing lost, nothing
// duplicated. With -cluster, three watcher replicas share their state in NATS KV on
// a three-node NATS cluster, replicas are killed and nodes (the JetStream meta leader
// among them) restarted. See RELIABILITY.md.
//
//	go run ./chaos -duration 10m
//	go run ./chaos -cluster -duration 10m
//
// The same run, shortened, is the package's test (go test ./chaos/).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/payments-watcher/watcher/sim"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
}

// longForm returns the options of `go run ./chaos` before its flags.
func longForm() Options {
	return Options{
		Duration: 10 * time.Minute, Kills: 20, KillAfter: [2]time.Duration{500 * time.Millisecond, 5 * time.Second}, TermEvery: 5,
		NATSRestarts: 3, NATSEvery: 30 * time.Second, NATSDown: [2]time.Duration{500 * time.Millisecond, 3 * time.Second},
		CatchUp: 15 * time.Minute, Rate: 1, History: 200,
	}
}

// clusterKillAfter is the run time of a replica before its stop in the long form of
// the cluster run: a dead replica's leases take about 4/3 of the lease TTL to move,
// so shorter runs would leave most sources without a poller most of the time.
var clusterKillAfter = [2]time.Duration{2 * time.Second, 10 * time.Second}

func run(args []string, stdout, stderr io.Writer) error {
	opt := longForm()
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	clustered := fs.Bool("cluster", false, "run 3 watcher replicas (state in NATS KV) on a 3-node NATS cluster; kill-min and kill-max default to 2s and 10s")
	fs.DurationVar(&opt.Duration, "duration", opt.Duration, "least length of the chaos phase")
	fs.IntVar(&opt.Kills, "kills", opt.Kills, "least number of watcher SIGKILLs")
	fs.DurationVar(&opt.KillAfter[0], "kill-min", opt.KillAfter[0], "shortest run of a watcher process before its SIGKILL")
	fs.DurationVar(&opt.KillAfter[1], "kill-max", opt.KillAfter[1], "longest run of a watcher process before its SIGKILL")
	fs.IntVar(&opt.TermEvery, "term-every", opt.TermEvery, "make every `n`th stop of watcher a SIGTERM instead of a SIGKILL (0: never)")
	fs.IntVar(&opt.NATSRestarts, "nats-restarts", opt.NATSRestarts, "least number of NATS outages")
	fs.DurationVar(&opt.NATSEvery, "nats-every", opt.NATSEvery, "mean time between NATS outages")
	fs.DurationVar(&opt.CatchUp, "catch-up", opt.CatchUp, "deadline for publishing every final status once the simulator stops")
	fs.Float64Var(&opt.Rate, "rate", opt.Rate, "new items per second per provider")
	fs.IntVar(&opt.History, "history", opt.History, "items per provider that exist at the start")
	fs.Int64Var(&opt.Seed, "seed", time.Now().UnixNano(), "scenario, fault and schedule seed")
	fs.StringVar(&opt.Dir, "dir", "", "keep state, NATS store, truth and logs in this `directory` (default: a temporary one, kept if the run fails)")
	fs.StringVar(&opt.WatcherBin, "watcher", "", "watcher `binary` (default: built from ./cmd/watcher)")
	fs.StringVar(&opt.NATSBin, "nats-server", "", "nats-server `binary` (default: built from the module's dependency)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *clustered {
		opt.Replicas = 3
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["kill-min"] {
			opt.KillAfter[0] = clusterKillAfter[0]
		}
		if !set["kill-max"] {
			opt.KillAfter[1] = clusterKillAfter[1]
		}
	}
	if opt.KillAfter[1] < opt.KillAfter[0] || opt.KillAfter[0] <= 0 {
		return fmt.Errorf("-kill-min %v and -kill-max %v: want 0 < kill-min <= kill-max", opt.KillAfter[0], opt.KillAfter[1])
	}
	temp := opt.Dir == ""
	if temp {
		d, err := os.MkdirTemp("", "watcher-chaos-")
		if err != nil {
			return err
		}
		opt.Dir = d
	} else if err := os.MkdirAll(opt.Dir, 0o755); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opt.Progress = stderr
	rep, err := Run(ctx, opt)
	if err != nil {
		fmt.Fprintf(stderr, "chaos: data kept in %s\n", opt.Dir)
		return err
	}
	rep.Write(stdout)
	if !rep.OK() {
		fmt.Fprintf(stderr, "chaos: data kept in %s\n", opt.Dir)
		return fmt.Errorf("the run found %d lost and %d duplicated", rep.Result.Lost(), rep.Result.Duplicated())
	}
	if temp {
		return os.RemoveAll(opt.Dir)
	}
	return nil
}

// Write prints the report: what was injected, what was checked and what was found.
func (r Report) Write(w io.Writer) {
	o := r.Options
	host, _ := os.Hostname()
	fmt.Fprintf(w, "watcher chaos run, seed %d, %s/%s, %d CPU (%s)\n", o.Seed, runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), host)
	fmt.Fprintf(w, "scenario: 5 sources, %d history items and %.3g new items/s per provider; chaos phase %v, catch-up %v\n",
		o.History, o.Rate, r.Chaos.Round(time.Second), r.CatchUp.Round(100*time.Millisecond))
	fmt.Fprintf(w, "watcher: %d SIGKILLs and %d SIGTERMs (after %v..%v of run time each), %d starts, %d ended on their own, %d unclean SIGTERM stops; final SIGTERM: %s\n",
		r.Kills, r.Terms, o.KillAfter[0], o.KillAfter[1], r.Starts, len(r.UnexpectedExits), len(r.BadStops), exitText(r.FinalStop))
	for _, e := range append(r.UnexpectedExits, r.BadStops...) {
		fmt.Fprintf(w, "  %s\n", e)
	}
	total := 0
	var sigs []string
	for _, k := range slices.Sorted(maps.Keys(r.NATSRestarts)) {
		total += r.NATSRestarts[k]
		sigs = append(sigs, fmt.Sprintf("%d after %s", r.NATSRestarts[k], k))
	}
	if o.Replicas > 1 {
		c := r.Cluster
		var nodes []string
		for _, k := range slices.Sorted(maps.Keys(c.NodeRestarts)) {
			nodes = append(nodes, fmt.Sprintf("%s %d", k, c.NodeRestarts[k]))
		}
		fmt.Fprintf(w, "cluster: %d replicas (state.backend nats_kv, lease_ttl %v), %d NATS nodes with replicas %d; %d lease acquisitions in the replicas' logs\n",
			c.Replicas, leaseTTL, clusterNodes, clusterNodes, c.LeaseAcquisitions)
		fmt.Fprintf(w, "nats-server nodes: %d restarts on their stores (%s; %s), %d of them of the JetStream meta leader, down %v..%v each\n",
			total, strings.Join(sigs, ", "), strings.Join(nodes, ", "), c.LeaderRestarts, o.NATSDown[0], o.NATSDown[1])
	} else {
		fmt.Fprintf(w, "nats-server: %d restarts on the same store (%s), down %v..%v each\n", total, strings.Join(sigs, ", "), o.NATSDown[0], o.NATSDown[1])
	}

	fmt.Fprintln(w, "faults injected:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "  provider\t500\t429\thang\tmalformed\ttruncated\tlate item\tpage drift\ttotal\t")
	var sum sim.FaultCounts
	row := func(name string, c sim.FaultCounts) {
		fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", name, c.ServerErrors, c.RateLimited, c.Hangs,
			c.Malformed, c.Truncated, c.LateItems, c.PageDrifts, c.Total())
	}
	for _, id := range sim.ProviderIDs() {
		c := r.Faults[id]
		row(id, c)
		sum.ServerErrors += c.ServerErrors
		sum.RateLimited += c.RateLimited
		sum.Hangs += c.Hangs
		sum.Malformed += c.Malformed
		sum.Truncated += c.Truncated
		sum.LateItems += c.LateItems
		sum.PageDrifts += c.PageDrifts
	}
	row("all", sum)
	tw.Flush()

	res := r.Result
	fmt.Fprintf(w, "checked: %d events in the stream against %d true transitions of %d items\n", res.Events, res.Transitions, res.Items)
	fmt.Fprintf(w, "lost %d, duplicated %d\n", res.Lost(), res.Duplicated())
	for _, p := range res.problems() {
		fmt.Fprintf(w, "  %-24s %d\n", p.name, p.p.N)
		for _, s := range p.p.Samples {
			fmt.Fprintf(w, "    %s\n", s)
		}
	}
	fmt.Fprintf(w, "  %-24s %d (allowed: a retried publish lands after later ones of its window)\n", "items out of stream order", res.OutOfOrder)
	if o.Replicas > 1 {
		p := r.Cluster.Pollers
		fmt.Fprintf(w, "pollers: %d source tenures in the stream (%d lease moves of sources)\n", p.Tenures, p.Moves)
		for _, x := range []namedProblems{{"event without poller", p.Unnamed}, {"overlapping pollers", p.Overlaps}} {
			fmt.Fprintf(w, "  %-24s %d\n", x.name, x.p.N)
			for _, s := range x.p.Samples {
				fmt.Fprintf(w, "    %s\n", s)
			}
		}
		fmt.Fprintf(w, "  %-24s %d (allowed, as above)\n", "lease revision went back", p.Reordered)
		fmt.Fprintf(w, "shared state after the final stops: %d outbox entries\n", r.Outbox)
	} else {
		fmt.Fprintf(w, "state file after the final stop: %d outbox entries, check: %s\n", r.Outbox, okText(r.StateCheck))
	}
	if r.OK() {
		fmt.Fprintln(w, "PASS")
	} else {
		fmt.Fprintln(w, "FAIL")
	}
}

func okText(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}
