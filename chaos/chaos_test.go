package main

import (
	"cmp"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	seedFlag = flag.Int64("chaos.seed", 0, "seed of the chaos tests (0: a new one each run, printed)")
	dirFlag  = flag.String("chaos.dir", "", "keep each test's state, NATS stores, truth and logs in a directory named after the test in this one")
	// The binaries default to builds of the working tree.
	watcherFlag = flag.String("chaos.watcher", "", "watcher binary to run (default: built from ./cmd/watcher)")
	natsFlag    = flag.String("chaos.nats-server", "", "nats-server binary to run (default: built from the module's dependency)")
)

// shortForm is the test's run: at least 20 SIGKILLs of watcher after 0.5-3s each (and
// a SIGTERM every fifth stop) and 3 NATS outages, with every provider fault on. -short
// shrinks it.
func shortForm(t *testing.T) Options {
	opt := Options{
		Kills: 20, KillAfter: [2]time.Duration{500 * time.Millisecond, 3 * time.Second}, TermEvery: 5,
		NATSRestarts: 3, NATSEvery: 8 * time.Second, NATSDown: [2]time.Duration{500 * time.Millisecond, 3 * time.Second},
		CatchUp: 2 * time.Minute, Rate: 1, History: 40,
		Seed: *seedFlag,
	}
	opt.WatcherBin, opt.NATSBin = binaries(t)
	if testing.Short() {
		opt.Kills, opt.NATSRestarts, opt.NATSEvery = 6, 2, 4*time.Second
	}
	if opt.Seed == 0 {
		opt.Seed = time.Now().UnixNano()
	}
	if *dirFlag == "" {
		opt.Dir = t.TempDir()
	} else if opt.Dir = filepath.Join(*dirFlag, t.Name()); os.MkdirAll(opt.Dir, 0o755) != nil {
		t.Fatalf("cannot create %s", opt.Dir)
	}
	return opt
}

// builds are the binaries the tests of the package build once for all of them.
var builds struct {
	once             sync.Once
	dir              string
	watcher, natsBin string
	err              error
}

// binaries returns the watcher and nats-server binaries to run: those the flags name,
// else builds of the working tree made at the first call and removed by TestMain.
func binaries(t *testing.T) (watcher, natsServer string) {
	t.Helper()
	if *watcherFlag != "" && *natsFlag != "" {
		return *watcherFlag, *natsFlag
	}
	builds.once.Do(func() {
		if builds.dir, builds.err = os.MkdirTemp("", "watcher-chaos-bin-"); builds.err == nil {
			builds.watcher, builds.natsBin, builds.err = buildBinaries(context.Background(), builds.dir)
		}
	})
	if builds.err != nil {
		t.Fatalf("build: %v", builds.err)
	}
	return cmp.Or(*watcherFlag, builds.watcher), cmp.Or(*natsFlag, builds.natsBin)
}

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if builds.dir != "" {
		os.RemoveAll(builds.dir)
	}
	os.Exit(code)
}

// lineLogger writes each line to the test log.
type lineLogger struct{ t *testing.T }

func (l lineLogger) Write(b []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// shortClusterForm is the cluster test's run: three replicas, at least 25 SIGKILLs of
// them after 1.5-6s each (and a SIGTERM every fifth stop), and 3 restarts of NATS
// nodes, the first and the third of the JetStream meta leader, with every provider
// fault on. -short shrinks it.
func shortClusterForm(t *testing.T) Options {
	opt := shortForm(t)
	opt.Replicas = 3
	opt.Kills, opt.KillAfter = 25, [2]time.Duration{1500 * time.Millisecond, 6 * time.Second}
	opt.NATSRestarts, opt.NATSEvery = 3, 8*time.Second
	if testing.Short() {
		opt.Kills, opt.NATSRestarts, opt.NATSEvery = 8, 2, 5*time.Second
	}
	return opt
}

// runChaos runs opt, logs its report and checks what every run must show.
func runChaos(t *testing.T, opt Options) Report {
	t.Helper()
	opt.Progress = lineLogger{t}
	t.Logf("seed %d (rerun the scenario with -chaos.seed %d)", opt.Seed, opt.Seed)
	rep, err := Run(t.Context(), opt)
	if err != nil {
		t.Fatalf("chaos run: %v", err)
	}
	var out strings.Builder
	rep.Write(&out)
	t.Log("report:\n" + out.String())
	if !rep.OK() {
		t.Errorf("lost %d, duplicated %d, other violations: see the report above (watcher's logs in %s, kept with -chaos.dir)",
			rep.Result.Lost(), rep.Result.Duplicated(), opt.Dir)
	}
	if rep.Result.Events == 0 || rep.Result.Items == 0 {
		t.Errorf("checked %d events of %d items; the run published nothing", rep.Result.Events, rep.Result.Items)
	}
	if rep.Kills < opt.Kills || rep.Terms == 0 {
		t.Errorf("%d watcher kills and %d graceful stops, want at least %d and 1", rep.Kills, rep.Terms, opt.Kills)
	}
	checkFaults(t, rep, opt)
	return rep
}

// TestChaos runs the real watcher and nats-server binaries through SIGKILLs, NATS
// outages and provider faults, and checks that the stream holds every item's final
// status, no event twice and every item's events in a consistent, true order.
func TestChaos(t *testing.T) {
	runChaos(t, shortForm(t))
}

// TestChaosCluster is TestChaos with three watcher replicas sharing their state in
// NATS KV on a three-node NATS cluster: replicas are killed, nodes restarted (the
// JetStream meta leader among them), and besides the stream's checks no two replicas
// may have polled a source at once.
func TestChaosCluster(t *testing.T) {
	opt := shortClusterForm(t)
	rep := runChaos(t, opt)
	if rep.Cluster.LeaderRestarts == 0 {
		t.Errorf("no restart of the JetStream meta leader among %v", rep.Cluster.NodeRestarts)
	}
	if rep.Cluster.Pollers.Moves == 0 {
		t.Errorf("no source changed replicas in %d replica kills", rep.Kills)
	}
}

// checkFaults checks that the NATS restarts and every kind of provider fault happened.
func checkFaults(t *testing.T, rep Report, opt Options) {
	t.Helper()
	total := 0
	for _, n := range rep.NATSRestarts {
		total += n
	}
	if total < opt.NATSRestarts || rep.NATSRestarts["SIGTERM"] == 0 || rep.NATSRestarts["SIGKILL"] == 0 {
		t.Errorf("NATS restarts %v, want at least %d with both signals", rep.NATSRestarts, opt.NATSRestarts)
	}
	kinds := map[string]uint64{}
	for _, c := range rep.Faults {
		kinds["500"] += c.ServerErrors
		kinds["429"] += c.RateLimited
		kinds["hang"] += c.Hangs
		kinds["malformed"] += c.Malformed
		kinds["truncated"] += c.Truncated
		kinds["late item"] += c.LateItems
		kinds["page drift"] += c.PageDrifts
	}
	for k, n := range kinds {
		if n == 0 {
			t.Errorf("no %s fault was injected: %v", k, kinds)
		}
	}
	if len(kinds) != 7 {
		t.Errorf("fault counts of %d providers: %v", len(rep.Faults), rep.Faults)
	}
}
