package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/payments-watcher/watcher/sim"
)

// Options shape a chaos run. The chaos phase lasts until Duration has passed, Kills
// watcher processes have been killed and NATS has been restarted NATSRestarts times,
// whichever comes last.
type Options struct {
	// Seed drives the scenario, the faults and the kill and outage schedule. The
	// simulator's truth is reproducible from it; process timing is not.
	Seed     int64
	Duration time.Duration
	// Kills is the least number of watcher SIGKILLs; each watcher process runs for a
	// uniform random time in [KillAfter[0], KillAfter[1]) before its SIGKILL.
	Kills     int
	KillAfter [2]time.Duration
	// TermEvery makes every TermEvery-th stop of a watcher process a SIGTERM (a
	// graceful stop, which must exit 0) instead of a SIGKILL; 0 never does.
	TermEvery int
	// NATSRestarts is the least number of NATS outages. One starts a uniform random
	// time in [NATSEvery/2, 3*NATSEvery/2) after the previous one ended; each lasts a
	// uniform random time in NATSDown, and they alternate SIGTERM and SIGKILL.
	NATSRestarts int
	NATSEvery    time.Duration
	NATSDown     [2]time.Duration
	// CatchUp bounds the wait, once the simulator stops changing items, for every
	// item's final status to reach the stream.
	CatchUp time.Duration
	// Rate is new items per second per provider; History the items per provider that
	// exist at the start.
	Rate    float64
	History int
	// Dir holds the state file, the NATS store, the truth and the logs.
	Dir string
	// Replicas above 1 selects the cluster run: that many watcher replicas sharing
	// their state in NATS KV (state.backend nats_kv) on a cluster of three
	// nats-server nodes, which go down one at a time (see runCluster).
	Replicas int
	// WatcherBin and NATSBin are the binaries to run; built into Dir when empty.
	WatcherBin, NATSBin string
	// Progress receives a line per phase and per outage; nil discards them.
	Progress io.Writer
}

// Report is the outcome of a run.
type Report struct {
	Options Options
	// Chaos is how long the chaos phase lasted, CatchUp how long watcher took
	// afterwards to publish every final status.
	Chaos, CatchUp time.Duration
	// Kills counts the SIGKILLs sent to watcher, Terms the graceful stops (SIGTERM)
	// during the chaos phase, Starts the watcher processes started (the final one
	// included).
	Kills, Terms, Starts int
	// BadStops are graceful stops that did not exit 0 in time.
	BadStops []string
	// UnexpectedExits are watcher processes that ended without being signalled.
	UnexpectedExits []string
	// NATSRestarts counts NATS outages by the signal that ended the server.
	NATSRestarts map[string]int
	// Faults are the faults the simulator injected, by provider id.
	Faults map[string]sim.FaultCounts
	Result Result
	// FinalStop is the result of stopping the last watcher with SIGTERM (nil: exit 0).
	FinalStop error
	// Outbox is the number of entries `watcher state outbox` lists after that stop;
	// StateCheck the result of `watcher state check`.
	Outbox     int
	StateCheck error
	// Cluster is what the cluster run adds (Options.Replicas above 1).
	Cluster ClusterReport
}

// OK reports whether the run found nothing wrong.
func (r Report) OK() bool {
	return r.Result.OK() && len(r.UnexpectedExits) == 0 && len(r.BadStops) == 0 && r.FinalStop == nil &&
		r.Outbox == 0 && r.StateCheck == nil && r.Cluster.Pollers.OK()
}

// sourcePageSize is every source's page_size: small, so that walks cross many pages.
const sourcePageSize = 10

// subjectPrefix is nats.subject_prefix in the configuration the harness writes.
const subjectPrefix = "payments"

// requestTimeout is the sources' request_timeout; hanging requests are held longer.
const requestTimeout = 2 * time.Second

// faults are the simulator's faults for every provider during the whole run.
func faults() sim.Faults {
	return sim.Faults{
		ErrorRate:     0.04,
		RateLimitRate: 0.015, RateLimitBurst: 3, RetryAfter: time.Second,
		Latency: 2 * time.Millisecond, LatencyJitter: 20 * time.Millisecond,
		TimeoutRate: 0.015, MaxHang: 5 * requestTimeout,
		MalformedRate: 0.02, TruncateRate: 0.02,
		LateRate: 0.15, LateBy: 15 * time.Second,
		PageDriftRate: 0.1, PageDriftMax: 2,
	}
}

// watcherConfig is the configuration of every watcher process of a run.
func watcherConfig(statePath, natsURL, simURL string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "state:\n  path: %s\n", statePath)
	fmt.Fprintf(&b, "nats:\n  url: %s\n  stream: %s\n  subject_prefix: %s\n", natsURL, streamName, subjectPrefix)
	b.WriteString("http:\n  listen: \"\"\nadmin:\n  listen: \"\"\n")
	writeSources(&b, simURL)
	return b.String()
}

// writeSources writes the sources: section, every simulated provider (sim.Sources) on
// simURL.
func writeSources(b *strings.Builder, simURL string) {
	b.WriteString("sources:\n")
	for _, s := range sim.Sources() {
		fmt.Fprintf(b, "  - name: %s\n    provider: %s\n    base_url: %s\n", s.Name, s.Provider, simURL)
		b.WriteString(s.KeyLines("    "))
		// Fixed periods (open_refresh_max: 0s): the catch-up's length depends on them.
		fmt.Fprintf(b, "    page_size: %d\n    interval: 1s\n    open_refresh: 1s\n    open_refresh_by_state: {settling: 5s}\n    open_refresh_max: 0s\n", sourcePageSize)
		// discovery_overlap covers the latest late item (LateBy) with room to spare.
		// Every Coindirect payment and every failed CPN payment stays open (settling)
		// for the whole run: the rate limit leaves refresh a budget for them beside
		// discovery's pages.
		fmt.Fprintf(b, "    discovery_overlap: 1m\n    rate_limit: 100\n    baseline: emit\n    request_timeout: %v\n", requestTimeout)
	}
}

// harness is one run in progress.
type harness struct {
	opt      Options
	progress io.Writer
	start    time.Time

	sim      *sim.Sim
	simURL   string
	truthLog string

	nats     *natsServer
	watchLog *os.File
	cfgPath  string
	state    string

	natsRestarts sync.Map // signal name -> *atomic.Int64
	natsTotal    atomic.Int64
}

func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(h.progress, "chaos %6.1fs: %s\n", time.Since(h.start).Seconds(), fmt.Sprintf(format, args...))
}

// Run performs one chaos run. It returns an error when the harness itself cannot do
// its work (a build, NATS or the simulator failing to start); what it found about
// watcher is in the Report.
func Run(ctx context.Context, opt Options) (Report, error) {
	h := &harness{opt: opt, progress: opt.Progress, start: time.Now()}
	if h.progress == nil {
		h.progress = io.Discard
	}
	rep := Report{Options: opt, NATSRestarts: map[string]int{}}
	if opt.Dir == "" {
		return rep, errors.New("chaos: Options.Dir is required")
	}
	if opt.WatcherBin == "" || opt.NATSBin == "" {
		h.logf("building watcher and nats-server")
		w, n, err := buildBinaries(ctx, filepath.Join(opt.Dir, "bin"))
		if err != nil {
			return rep, err
		}
		opt.WatcherBin, opt.NATSBin = cmp.Or(opt.WatcherBin, w), cmp.Or(opt.NATSBin, n)
		h.opt = opt
		rep.Options = opt
	}

	stopEngine, closeSim, err := h.startSim()
	if err != nil {
		return rep, err
	}
	defer closeSim()
	if opt.Replicas > 1 {
		err := h.runCluster(ctx, &rep, stopEngine)
		rep.Faults = h.sim.FaultCounts()
		return rep, err
	}

	natsAddr, err := serverAddr(rand.New(rand.NewPCG(uint64(opt.Seed), uint64(time.Now().UnixNano()))))
	if err != nil {
		return rep, err
	}
	natsLog, err := os.OpenFile(filepath.Join(opt.Dir, "nats.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return rep, err
	}
	defer natsLog.Close()
	h.nats = &natsServer{bin: opt.NATSBin, addr: natsAddr, storeDir: filepath.Join(opt.Dir, "nats"), log: natsLog}
	if err := h.nats.start(ctx); err != nil {
		return rep, err
	}
	defer func() { _, _ = h.nats.stop(syscall.SIGTERM) }()

	h.state = filepath.Join(opt.Dir, "watcher.db")
	h.cfgPath = filepath.Join(opt.Dir, "watcher.yaml")
	if err := os.WriteFile(h.cfgPath, []byte(watcherConfig(h.state, h.nats.url(), h.simURL)), 0o600); err != nil {
		return rep, err
	}
	if h.watchLog, err = os.OpenFile(filepath.Join(opt.Dir, "watcher.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err != nil {
		return rep, err
	}
	defer h.watchLog.Close()
	h.logf("simulator on %s, nats-server on %s, data in %s, seed %d", h.simURL, natsAddr, opt.Dir, opt.Seed)

	if err := h.chaos(ctx, &rep); err != nil {
		return rep, err
	}
	if err := h.settle(stopEngine); err != nil {
		return rep, err
	}
	err = h.catchUp(ctx, &rep)
	rep.Faults = h.sim.FaultCounts()
	return rep, err
}

// settle stops the simulator's engine and page drift: from then on no item changes
// or appears, and the truth is complete.
func (h *harness) settle(stopEngine func()) error {
	stopEngine()
	// Page drift creates payments; with it off, nothing adds to the truth any more.
	f := faults()
	f.PageDriftRate = 0
	if err := h.sim.SetFaults(sim.ProviderCoindirect, f); err != nil {
		return err
	}
	h.logf("simulator engine and page drift stopped: no item changes or appears any more")
	return nil
}

// startSim starts the simulator's engine and HTTP server. stopEngine stops the
// engine, so that no item changes any more and the truth is complete, and leaves the
// API up; closeAll stops everything. Both may be called more than once.
func (h *harness) startSim() (stopEngine, closeAll func(), err error) {
	h.truthLog = filepath.Join(h.opt.Dir, "truth.jsonl")
	truth, err := os.OpenFile(h.truthLog, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, nil, err
	}
	f := faults()
	all := map[string]sim.Faults{}
	for _, id := range sim.ProviderIDs() {
		all[id] = f
	}
	s, err := sim.New(sim.Config{
		Seed: h.opt.Seed, Rate: h.opt.Rate, History: h.opt.History, HistorySpan: 2 * time.Hour,
		OpenShare: 0.4, FailureRate: 0.3,
		Delays:       sim.Delays{Min: 300 * time.Millisecond, Mean: 3 * time.Second, Max: 20 * time.Second},
		Faults:       all,
		TruthWriter:  truth,
		TruthLimit:   -1,
		HistoryTruth: true,
	})
	if err != nil {
		truth.Close()
		return nil, nil, err
	}
	h.sim = s
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		truth.Close()
		return nil, nil, err
	}
	h.simURL = "http://" + ln.Addr().String()
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	engineCtx, cancel := context.WithCancel(context.Background())
	engineDone := make(chan struct{})
	go func() {
		defer close(engineDone)
		_ = s.Run(engineCtx) // ends with engineCtx
	}()
	stopEngine = func() {
		cancel()
		<-engineDone
	}
	var once sync.Once
	closeAll = func() {
		once.Do(func() {
			stopEngine()
			_ = srv.Close()
			truth.Close()
		})
	}
	return stopEngine, closeAll, nil
}

// streamName is nats.stream in the configuration the harness writes.
const streamName = "PAYMENT_EVENTS"

// uniform draws a duration in [r[0], r[1]).
func uniform(rng *rand.Rand, r [2]time.Duration) time.Duration {
	if r[1] <= r[0] {
		return r[0]
	}
	return r[0] + time.Duration(rng.Int64N(int64(r[1]-r[0])))
}

// after waits d or until ctx ends; it reports whether d passed.
func after(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// startWatcher starts one `watcher run` process, its output appended to watcher.log.
func (h *harness) startWatcher(rep *Report) (*proc, error) {
	rep.Starts++
	fmt.Fprintf(h.watchLog, "=== chaos: watcher start %d at %s\n", rep.Starts, time.Now().UTC().Format(time.RFC3339Nano))
	return startProc(h.opt.WatcherBin, []string{"run", "--config", h.cfgPath}, h.watchLog)
}

// chaos runs watcher processes, killing each with SIGKILL after a random time, while
// NATS goes down and comes back on its own schedule.
func (h *harness) chaos(ctx context.Context, rep *Report) error {
	rng := rand.New(rand.NewPCG(uint64(h.opt.Seed), 0xc4a05))
	begin := time.Now()
	loopDone := make(chan struct{})
	natsErr := make(chan error, 1)
	go func() {
		natsErr <- h.natsOutages(ctx, rand.New(rand.NewPCG(uint64(h.opt.Seed), 0x4a75)), loopDone)
	}()
	h.logf("chaos phase: at least %v, %d watcher kills after %v..%v each, %d NATS outages",
		h.opt.Duration, h.opt.Kills, h.opt.KillAfter[0], h.opt.KillAfter[1], h.opt.NATSRestarts)
	var loopErr error
	ownExits := 0
	for ctx.Err() == nil && (rep.Kills < h.opt.Kills || time.Since(begin) < h.opt.Duration ||
		int(h.natsTotal.Load()) < h.opt.NATSRestarts) {
		p, err := h.startWatcher(rep)
		if err != nil {
			loopErr = err
			break
		}
		ran := uniform(rng, h.opt.KillAfter)
		t := time.NewTimer(ran)
		select {
		case <-p.done:
			t.Stop()
			rep.UnexpectedExits = append(rep.UnexpectedExits, fmt.Sprintf("watcher start %d ended on its own: %v", rep.Starts, p.err))
			h.logf("watcher start %d ended on its own: %v (see %s)", rep.Starts, p.err, h.watchLog.Name())
			if ownExits++; ownExits >= 5 {
				loopErr = fmt.Errorf("watcher ended on its own at 5 starts in a row; last: %v (see %s)", p.err, h.watchLog.Name())
			}
		case <-t.C:
			ownExits = 0
			// A SIGTERM before the process has set its signal handlers would end it
			// like a SIGKILL; a graceful stop is tested once it runs.
			if h.opt.TermEvery > 0 && (rep.Kills+rep.Terms+1)%h.opt.TermEvery == 0 && p.awaitOutput(time.Minute) {
				rep.Terms++
				if err := p.stop(syscall.SIGTERM, 20*time.Second); errors.Is(err, errStuck) {
					loopErr = err
				} else if err != nil {
					rep.BadStops = append(rep.BadStops, fmt.Sprintf("watcher start %d, stopped with SIGTERM: %v", rep.Starts, err))
					h.logf("watcher start %d did not stop cleanly on SIGTERM: %v", rep.Starts, err)
				}
				break
			}
			if err := p.stop(syscall.SIGKILL, 0); errors.Is(err, errStuck) {
				loopErr = err
			}
			rep.Kills++
			if rep.Kills%10 == 0 {
				h.logf("%d watcher kills, %d NATS outages", rep.Kills, h.natsTotal.Load())
			}
		case <-ctx.Done():
			t.Stop()
			_ = p.stop(syscall.SIGKILL, 0)
		}
		if loopErr != nil {
			break
		}
	}
	close(loopDone)
	err := <-natsErr
	rep.Chaos = time.Since(begin)
	h.natsRestarts.Range(func(k, v any) bool {
		rep.NATSRestarts[k.(string)] = int(v.(*atomic.Int64).Load())
		return true
	})
	h.logf("chaos phase over: %d watcher kills, %d NATS outages in %v", rep.Kills, h.natsTotal.Load(), rep.Chaos.Round(time.Second))
	return errors.Join(loopErr, err, ctx.Err())
}

// natsOutages stops and restarts nats-server until loopDone is closed, alternating
// SIGTERM and SIGKILL. It returns with the server running.
func (h *harness) natsOutages(ctx context.Context, rng *rand.Rand, loopDone <-chan struct{}) error {
	for i := 0; ; i++ {
		if !h.awaitOutage(ctx, rng, loopDone) {
			return nil
		}
		sig := syscall.SIGTERM
		if i%2 == 1 {
			sig = syscall.SIGKILL
		}
		ended, err := h.nats.stop(sig)
		if err != nil {
			return fmt.Errorf("stop nats-server: %w", err)
		}
		if ended != sig {
			h.logf("nats-server took over a minute to stop on %s; killed", sigName(sig))
		}
		sig = ended
		down := uniform(rng, h.opt.NATSDown)
		h.logf("nats-server stopped with %s, down for %v", sigName(sig), down.Round(time.Millisecond))
		after(ctx, down) // the outage's length, not a wait for anything
		if err := h.nats.start(context.WithoutCancel(ctx)); err != nil {
			return err
		}
		h.countRestart(sig)
	}
}

// awaitOutage waits a random time around Options.NATSEvery for the next NATS
// outage; false when loopDone is closed or ctx is done first.
func (h *harness) awaitOutage(ctx context.Context, rng *rand.Rand, loopDone <-chan struct{}) bool {
	t := time.NewTimer(uniform(rng, [2]time.Duration{h.opt.NATSEvery / 2, h.opt.NATSEvery * 3 / 2}))
	defer t.Stop()
	select {
	case <-loopDone:
		return false
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// countRestart counts a NATS restart after a stop that ended with sig.
func (h *harness) countRestart(sig syscall.Signal) {
	n, _ := h.natsRestarts.LoadOrStore(sigName(sig), new(atomic.Int64))
	n.(*atomic.Int64).Add(1)
	h.natsTotal.Add(1)
}

// catchUp runs one last watcher until every item's final status is in the stream (or
// Options.CatchUp passes), stops it with SIGTERM and checks the stream and the state
// file.
func (h *harness) catchUp(ctx context.Context, rep *Report) error {
	begin := time.Now()
	p, err := h.startWatcher(rep)
	if err != nil {
		return err
	}
	defer func() { _ = p.stop(syscall.SIGKILL, 0) }()
	reader, err := newStreamReader(h.nats.url(), streamName)
	if err != nil {
		return err
	}
	defer reader.close()
	ended := func() string {
		if p.exited() {
			return fmt.Sprintf("final watcher ended on its own: %v", p.err)
		}
		return ""
	}
	if err := h.awaitFinal(ctx, reader, ended, rep); err != nil {
		return err
	}
	rep.CatchUp = time.Since(begin)
	rep.FinalStop = p.stop(syscall.SIGTERM, 30*time.Second)
	h.logf("caught up in %v; final watcher stopped with SIGTERM: %v", rep.CatchUp.Round(100*time.Millisecond), exitText(rep.FinalStop))
	if err := h.checkStream(ctx, reader, rep); err != nil {
		return err
	}
	rep.Outbox, rep.StateCheck, err = h.inspectState(ctx)
	return err
}

// readTruth reads the truth file as it is now. It is read again at every look: a
// request that drew a page drift just before drift was turned off may still add its
// payments.
func (h *harness) readTruth() ([]sim.Transition, error) {
	f, err := os.Open(h.truthLog)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadTruth(f)
}

// awaitFinal polls the stream until every item's final status is in it without a
// sequence gap, Options.CatchUp passes, or ended (called at every look) names a
// watcher process that ended on its own, which it adds to rep.UnexpectedExits.
func (h *harness) awaitFinal(ctx context.Context, reader *streamReader, ended func() string, rep *Report) error {
	truth, err := h.readTruth()
	if err != nil {
		return err
	}
	h.logf("catching up: %d truth transitions; waiting up to %v for every final status", len(truth), h.opt.CatchUp)
	deadline := time.Now().Add(h.opt.CatchUp)
	for {
		if err := reader.poll(ctx); err != nil {
			return err
		}
		if truth, err = h.readTruth(); err != nil {
			return err
		}
		res := Check(truth, reader.msgs, subjectPrefix)
		if res.MissingFinal.N == 0 && res.SequenceGaps.N == 0 {
			return nil
		}
		if e := ended(); e != "" {
			rep.UnexpectedExits = append(rep.UnexpectedExits, e)
			return nil
		}
		if time.Now().After(deadline) {
			h.logf("catch-up deadline passed: %d items lack their final status, %d have sequence gaps",
				res.MissingFinal.N, res.SequenceGaps.N)
			return nil
		}
		if !after(ctx, time.Second) {
			return ctx.Err()
		}
	}
}

// checkStream reads the rest of the stream and checks all of it against the truth
// into rep.Result.
func (h *harness) checkStream(ctx context.Context, reader *streamReader, rep *Report) error {
	if err := reader.poll(ctx); err != nil {
		return err
	}
	truth, err := h.readTruth()
	if err != nil {
		return err
	}
	rep.Result = Check(truth, reader.msgs, subjectPrefix)
	return nil
}

func exitText(err error) string {
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}

// inspectState asks the watcher binary about the stopped watcher's state file: the
// entries left in its outbox, and bbolt's consistency check.
func (h *harness) inspectState(ctx context.Context) (outbox int, check, err error) {
	out, err := exec.CommandContext(ctx, h.opt.WatcherBin, "state", "outbox", "--state", h.state).Output()
	if err != nil {
		return 0, nil, fmt.Errorf("watcher state outbox: %w", err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) != "" {
			outbox++
		}
	}
	if out, err := exec.CommandContext(ctx, h.opt.WatcherBin, "state", "check", "--state", h.state).CombinedOutput(); err != nil {
		check = fmt.Errorf("watcher state check: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return outbox, check, nil
}
