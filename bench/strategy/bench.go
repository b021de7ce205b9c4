package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/payments-watcher/watcher/config"
	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/poller/provider"
	"github.com/payments-watcher/watcher/sim"
	"github.com/payments-watcher/watcher/state/bbolt"
)

// options shape one benchmark run.
type options struct {
	Seed int64
	// History items per provider, created evenly over HistorySpan before the start;
	// OpenShare of them are left open and move on, each at a random moment within
	// OpenResume of the start (zero: within Duration).
	History     int
	HistorySpan time.Duration
	OpenShare   float64
	OpenResume  time.Duration
	FailureRate float64
	// Rate is new items per second per provider while the engine runs.
	Rate   float64
	Delays sim.Delays
	// Duration is how long the scenario engine runs; CatchUp bounds the wait after it
	// stops for the pollers to see every item's last status.
	Duration, CatchUp time.Duration
	// IdleCycles is how many watcher cycles the idle phase drives, Interval apart.
	IdleCycles int
	// Watcher's source settings (the naive poller walks every Interval too).
	Interval, OpenRefresh, Lookback, OpenMaxAge time.Duration
	// OpenRefreshMax is watcher's open_refresh_max (0: periods do not grow with age).
	OpenRefreshMax time.Duration
	RateLimit      float64
	// Naive runs the naive poller against its own simulator; without it, watcher
	// has the machine to itself (a control for CPU contention).
	Naive bool
	// Hooks are the webhook deliveries: off, hints to watcher, or only, to a naive
	// consumer in watcher's place (webhooks.go).
	Hooks hookOptions
	// Slice is the length of the run's time slices in the request/transition timeline.
	Slice time.Duration
	// Dir holds watcher's state file.
	Dir string
	// Progress receives one line per phase; nil discards them.
	Progress io.Writer
}

// defaultOptions are the scale the benchmark is reported at.
func defaultOptions() options {
	return options{
		Seed:        1,
		History:     20_000,
		HistorySpan: 720 * time.Hour,
		OpenShare:   0.05,
		FailureRate: 0.1,
		// New items per second per provider: the 10m discovery_overlap then holds about
		// 30 items, one page even for ramp sessions (at most 50 a page).
		Rate:       0.05,
		Delays:     sim.Delays{Min: 2 * time.Second, Mean: 20 * time.Second, Max: 3 * time.Minute},
		Duration:   4 * time.Minute,
		CatchUp:    5 * time.Minute,
		IdleCycles: 10,
		// The defaults' proportion (interval 15s, open_refresh 5m), 7.5 times faster.
		Interval:    2 * time.Second,
		OpenRefresh: 40 * time.Second,
		// open_refresh_max's default 1h on the same scale.
		OpenRefreshMax: 8 * time.Minute,
		// A day beyond the history, so that no item reaches open_max_age during the run.
		Lookback:   744 * time.Hour,
		OpenMaxAge: 744 * time.Hour,
		RateLimit:  1000,
		Naive:      true,
		Slice:      30 * time.Second,
		Hooks:      defaultHookOptions(),
	}
}

// simTick is the simulators' step period.
const simTick = 50 * time.Millisecond

// benchSources are the simulated providers as sources, with the default credentials,
// as the demo configures them.
var benchSources = sim.Sources()

// watcherConfig renders the configuration of every source against the simulator at
// baseURL.
func watcherConfig(o options, statePath, baseURL string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "state:\n  path: %q\nhttp:\n  listen: \"\"\nsources:\n", statePath)
	for _, s := range benchSources {
		fmt.Fprintf(&b, "  - name: %s\n    provider: %s\n    base_url: %q\n", s.Name, s.Provider, baseURL)
		fmt.Fprintf(&b, "    interval: %s\n    open_refresh: %s\n    open_refresh_max: %s\n    lookback: %s\n    open_max_age: %s\n",
			o.Interval, o.OpenRefresh, o.OpenRefreshMax, o.Lookback, o.OpenMaxAge)
		fmt.Fprintf(&b, "    rate_limit: %g\n    baseline: silent\n    page_size: %d\n", o.RateLimit, poller.Providers[s.Provider].MaxPageSize)
		b.WriteString(s.KeyLines("    "))
		b.WriteString(hookKeyLines(o.Hooks.Mode, s.Provider, "    "))
	}
	return []byte(b.String())
}

// simClock is the simulators' clock: it stands still at its start until released, then
// runs with the wall clock, behind it by the time it stood still.
type simClock struct {
	mu       sync.Mutex
	start    time.Time
	released time.Time // wall time of the release; zero while standing still
}

func (c *simClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.released.IsZero() {
		return c.start
	}
	return c.start.Add(time.Since(c.released))
}

// release starts the clock and returns the wall clock minus the simulated clock.
func (c *simClock) release() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.released = time.Now()
	return c.released.Sub(c.start)
}

// sourceResult is what one source did.
type sourceResult struct {
	Name, Provider string
	PageSize       int
	// Items, Open and Settling are watcher's records, open items, and the open items
	// kept open only by their settle window, after the idle phase.
	Items, Open, Settling int

	// Watcher, by phase.
	Discovery, Refresh [numPhases]int
	Events             [numPhases]int
	Records            [numPhases]int // records written
	ServerList         [numPhases]int // list requests the provider served
	ServerGet          [numPhases]int // single-item requests the provider served
	Cycle              [numPhases]cycleStats
	Idle               []idleCycle // the idle phase's cycles, in order
	Failures           int         // cycles that failed, all phases
	Other              []string

	// The naive poller, by phase.
	NaiveRequests, NaiveTransitions [numPhases]int
	NaiveErrors                     int
	NaiveWalks                      [numPhases]int
	NaiveWalkMean                   [numPhases]time.Duration
	NaivePages                      int // pages of one whole walk
}

// result is one benchmark run.
type result struct {
	Opts    options
	Started time.Time
	Sources []sourceResult
	// Took is each phase's wall time, CPU the process's CPU time (user + system) in it.
	Took, CPU [numPhases]time.Duration
	// Timeline is the run phase per Slice: watcher requests, watcher events, naive
	// requests, naive transitions.
	Timeline [][]int
	// Offset is the wall clock minus the simulated clock during the run (the baseline
	// time, during which the simulated clock stood still).
	Offset time.Duration
	// Truth transitions of the run; SameScenario reports that both simulators made
	// exactly the same ones.
	Truth        int
	SameScenario bool
	// Converged reports that watcher saw every item's last status before CatchUp ran
	// out, ConvergedIn how long after the engine stopped.
	Converged   bool
	ConvergedIn time.Duration
	// NaiveConverged is the same for the naive poller.
	NaiveConverged   bool
	NaiveConvergedIn time.Duration
	Watcher, Naive   verdict
	// IdleEvents counts events committed in the idle phase (nothing changes then).
	IdleEvents int
	// Logs counts watcher's warnings and errors by message.
	Logs     map[string]int
	LogLines map[string][]string
	// Hooks is what the webhook deliveries did in the hints mode; nil otherwise.
	Hooks *hookResult
	// Consumer is the naive webhook consumer's run in the only mode, which has no
	// watcher and no naive poller; nil otherwise.
	Consumer *consumerResult
}

// bench is one run in progress.
type bench struct {
	o        options
	log      io.Writer
	t        *tally
	obs      *observer
	logs     *logCounter
	store    *bbolt.Store
	pollers  []*poller.Poller
	naive    []*naivePoller    // nil without the naive poller
	provider map[string]string // source name -> provider id
	watchRec *recorder
	naiveRec *recorder
	clock    *simClock
	simW     *sim.Sim
	simN     *sim.Sim
	// The hints mode's deliveries, listener and reads of unknown ids.
	hookLog     *hookLog
	listener    *hookListener
	unknownGets atomic.Int64
	// idleCycles holds, per source, the requests of each idle cycle.
	idleMu     sync.Mutex
	idleCycles map[string][]idleCycle
}

// idleCycle is what one idle-phase cycle of one source requested.
type idleCycle struct{ discovery, refresh int }

func (b *bench) progress(format string, args ...any) {
	if b.log != nil {
		fmt.Fprintf(b.log, "%s  "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05")}, args...)...)
	}
}

// simConfig is the scenario of both simulators, on the simulated clock now.
func simConfig(o options, now func() time.Time) sim.Config {
	return sim.Config{
		Seed: o.Seed, Rate: o.Rate, History: o.History, HistorySpan: o.HistorySpan, OpenShare: o.OpenShare,
		OpenResumeWithin: cmp.Or(o.OpenResume, o.Duration),
		FailureRate:      o.FailureRate, Delays: o.Delays, Now: now,
		// A change becomes visible at the engine's next step: a short tick keeps that
		// lag, which the delays include, small.
		Tick:       simTick,
		TruthLimit: 50_000_000, // every transition of the run is kept; the slice grows as needed
		// The clock stands still during the baseline, so the simulators lag the wall
		// clock that Coindirect's Hawk timestamps come from by that long.
		HawkSkew: 24 * time.Hour,
	}
}

// run performs the whole benchmark.
func run(ctx context.Context, o options) (*result, error) {
	if o.Hooks.Mode == hooksOnly {
		return runConsumer(ctx, o)
	}
	b := &bench{o: o, log: o.Progress, t: newTally(o.Slice), logs: newLogCounter(), watchRec: newRecorder(), naiveRec: newRecorder(),
		clock: &simClock{start: time.Now().UTC().Truncate(time.Second)}}
	b.obs = newObserver(b.t)
	res := &result{Opts: o, Started: time.Now().UTC()}

	simCfg := simConfig(o, b.clock.Now)
	// In the hints mode watcher's simulator delivers webhooks to the listener, which
	// is built once the pollers are.
	hooks := &lateHandler{}
	if o.Hooks.Mode == hooksHints {
		srvH := httptest.NewServer(hooks)
		defer srvH.Close()
		b.hookLog = &hookLog{}
		simCfg.Webhooks = hookTargets(o.Hooks, srvH.URL, b.hookLog)
	}
	var err error
	if b.simW, err = sim.New(simCfg); err != nil {
		return nil, fmt.Errorf("simulator for watcher: %w", err)
	}
	defer b.simW.Close()
	srvW := httptest.NewServer(countRequests(countNotFound(b.simW.Handler(), &b.unknownGets), b.t))
	defer srvW.Close()
	simCfg.Webhooks = nil // the naive poller's simulator sends none
	naiveURL := ""
	if o.Naive {
		if b.simN, err = sim.New(simCfg); err != nil {
			return nil, fmt.Errorf("simulator for the naive poller: %w", err)
		}
		srvN := httptest.NewServer(b.simN.Handler())
		defer srvN.Close()
		naiveURL = srvN.URL
	}

	statePath := filepath.Join(o.Dir, "watcher.db")
	cfg, err := config.Parse(watcherConfig(o, statePath, srvW.URL), func(string) (string, bool) { return "", false }, os.ReadFile)
	if err != nil {
		return nil, fmt.Errorf("watcher configuration: %w", err)
	}
	b.store, err = bbolt.Open(statePath, bbolt.Options{NoSync: true})
	if err != nil {
		return nil, err
	}
	defer b.store.Close()
	if err := b.build(cfg, naiveURL); err != nil {
		return nil, err
	}
	if o.Hooks.Mode == hooksHints {
		if b.listener, err = newHookListener(cfg, b.pollers, slog.New(b.logs)); err != nil {
			return nil, err
		}
		hooks.set(b.listener.h)
	}

	// Baseline: the simulated clock stands still, so nothing changes while both
	// pollers record what exists.
	b.progress("baseline: %d sources, %d history items each, simulated clock stopped", len(b.pollers), o.History)
	began, cpu := time.Now(), cpuTime()
	if err := b.baseline(ctx); err != nil {
		return nil, err
	}
	res.Took[phaseBaseline], res.CPU[phaseBaseline] = time.Since(began), cpuTime()-cpu
	finalBefore, err := b.finalItems(ctx)
	if err != nil {
		return nil, err
	}

	// Run: the engines, watcher's loops, the naive walks and the outbox reader.
	res.Offset = b.clock.release()
	b.t.setPhase(phaseRun)
	b.progress("run: engine running for %s (baseline took %s)", o.Duration, res.Took[phaseBaseline].Round(time.Millisecond))
	began, cpu = time.Now(), cpuTime()
	simCtx, stopSims := context.WithCancel(ctx)
	var sims sync.WaitGroup
	for _, s := range []*sim.Sim{b.simW, b.simN} {
		if s != nil {
			sims.Go(func() { _ = s.Run(simCtx) })
		}
	}
	pollCtx, stopPolling := context.WithCancel(ctx)
	var polling sync.WaitGroup
	for _, p := range b.pollers {
		polling.Go(func() { _ = p.Run(pollCtx) })
	}
	for _, n := range b.naive {
		polling.Go(func() { n.run(pollCtx, o.Interval) })
	}
	drainCtx, stopDrain := context.WithCancel(context.WithoutCancel(ctx))
	drainErr := make(chan error, 1)
	go func() { drainErr <- b.drainLoop(drainCtx) }()
	stopAll := func() error {
		stopPolling()
		polling.Wait()
		stopDrain()
		return <-drainErr
	}

	if err := wait(ctx, o.Duration); err != nil {
		stopSims()
		sims.Wait()
		_ = stopAll()
		return nil, err
	}
	stopSims()
	sims.Wait()
	// Both engines end at the same simulated time, so their truths are the same.
	end := b.clock.Now()
	b.simW.Step(end)
	truthW := b.simW.Truth()
	truthN := truthW
	if b.simN != nil {
		b.simN.Step(end)
		truthN = b.simN.Truth()
	}
	quiet := time.Now()
	b.t.setPhase(phaseCatchUp)
	res.Took[phaseRun], res.CPU[phaseRun] = time.Since(began), cpuTime()-cpu
	began, cpu = quiet, cpuTime()

	res.Truth = len(truthW)
	res.SameScenario = reflect.DeepEqual(truthW, truthN)
	ti, err := indexTruth(truthW)
	if err != nil {
		_ = stopAll()
		return nil, err
	}
	ti.finalBefore = finalBefore
	tiN := ti
	if !res.SameScenario {
		if tiN, err = indexTruth(truthN); err != nil {
			_ = stopAll()
			return nil, err
		}
		tiN.finalBefore = finalBefore
	}
	b.progress("catch-up: engine stopped after %d transitions; waiting up to %s for every last status", len(truthW), o.CatchUp)

	if err := b.catchUp(ctx, res, ti, tiN, quiet); err != nil {
		_ = stopAll()
		return nil, err
	}
	res.Took[phaseCatchUp], res.CPU[phaseCatchUp] = time.Since(began), cpuTime()-cpu
	b.simW.Close() // every delivery was made in the catch-up; none reaches the idle phase
	b.t.setPhase(phaseStopping)
	if err := stopAll(); err != nil {
		return nil, err
	}
	if err := b.drain(ctx); err != nil {
		return nil, err
	}

	// Idle: the engine stays stopped; watcher's cycles are driven one by one.
	b.t.setPhase(phaseIdle)
	b.progress("idle: %d watcher cycles, %s apart", o.IdleCycles, o.Interval)
	began, cpu = time.Now(), cpuTime()
	if err := b.idle(ctx); err != nil {
		return nil, err
	}
	if err := b.drain(ctx); err != nil {
		return nil, err
	}
	res.Took[phaseIdle], res.CPU[phaseIdle] = time.Since(began), cpuTime()-cpu
	res.Timeline = b.t.sliced(cntDiscovery, cntRefresh, cntEvents, cntNaiveReq, cntNaiveTr)

	res.Watcher = check(b.watchRec.snapshot(), ti, res.Offset)
	if b.naive != nil {
		res.Naive = check(b.naiveRec.snapshot(), tiN, res.Offset)
	}
	if err := b.collect(ctx, res); err != nil {
		return nil, err
	}
	if b.listener != nil {
		if res.Hooks, err = b.hookResult(res, ti); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// catchUp waits until watcher has seen every item's last status, every naive source
// has completed a walk that started after the engine stopped (at quiet) and, in the
// hints mode, every webhook delivery has been made, or until CatchUp has passed.
func (b *bench) catchUp(ctx context.Context, res *result, ti, tiN *truthIndex, quiet time.Time) error {
	deadline := quiet.Add(b.o.CatchUp)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		if !res.Converged {
			if f, other := b.watchRec.behind(ti); f == 0 && other == 0 {
				res.Converged, res.ConvergedIn = true, time.Since(quiet)
			}
		}
		if !res.NaiveConverged && b.naive != nil {
			f, other := b.naiveRec.behind(tiN)
			done := f == 0 && other == 0
			for _, n := range b.naive {
				done = done && n.doneSince(quiet)
			}
			if done {
				res.NaiveConverged, res.NaiveConvergedIn = true, time.Since(quiet)
			}
		}
		hooksDone := b.hookLog == nil || b.hookLog.settled(b.simW)
		if (res.Converged && (res.NaiveConverged || b.naive == nil) && hooksDone) || time.Now().After(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// build makes watcher's pollers (as the daemon does) and the naive pollers.
func (b *bench) build(cfg *config.Config, naiveURL string) error {
	log := slog.New(b.logs)
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 4
	naiveTransport := http.DefaultTransport.(*http.Transport).Clone()
	naiveTransport.MaxIdleConnsPerHost = 4
	b.provider = map[string]string{}
	for _, s := range cfg.Sources {
		b.provider[s.Name] = s.Config.Provider
		client := &provider.Client{HTTP: &http.Client{Transport: transport}, UserAgent: "watcher-bench"}
		src, err := s.Provider.New(s.Settings, client)
		if err != nil {
			return fmt.Errorf("source %s: %w", s.Name, err)
		}
		pc := s.Config
		pc.RequestTimeout = s.RequestTimeout
		p := poller.New(pc, src, countingStore{b.store, b.t}, "payments", log.With("source", s.Name))
		p.Observe(b.obs)
		b.pollers = append(b.pollers, p)
		if naiveURL == "" {
			continue
		}
		ns := s.Settings
		ns.BaseURL = naiveURL
		nsrc, err := s.Provider.New(ns, &provider.Client{HTTP: &http.Client{Transport: naiveTransport}, UserAgent: "naive-bench"})
		if err != nil {
			return fmt.Errorf("naive source %s: %w", s.Name, err)
		}
		b.naive = append(b.naive, &naivePoller{name: s.Name, provider: s.Config.Provider, src: nsrc, lookback: s.Lookback,
			settle: s.SettleWindow, maxPages: s.MaxPages, t: b.t, rec: b.naiveRec, recs: map[string]diff.Record{}})
	}
	return nil
}

// baseline makes every poller's first walk, all at once.
func (b *bench) baseline(ctx context.Context) error {
	errs := make([]error, len(b.pollers)+len(b.naive))
	var wg sync.WaitGroup
	for i, p := range b.pollers {
		wg.Go(func() {
			if err := p.Poll(ctx); err != nil {
				errs[i] = fmt.Errorf("watcher baseline of %s: %w", p.Name(), err)
			}
		})
	}
	for i, n := range b.naive {
		wg.Go(func() {
			if err := n.cycle(ctx, true); err != nil {
				errs[len(b.pollers)+i] = fmt.Errorf("naive baseline: %w", err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return b.drain(ctx) // a silent baseline publishes nothing; anything here is checked
}

// finalItems returns the top-level items (provider + "/" + id) that watcher's
// records show final.
func (b *bench) finalItems(ctx context.Context) (map[string]bool, error) {
	out := map[string]bool{}
	for _, p := range b.pollers {
		prov := b.provider[p.Name()]
		err := b.store.ForEach(ctx, p.Name(), func(r diff.Record) error {
			if r.Status.Terminal {
				out[prov+"/"+r.ID] = true
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// cpuTime returns the CPU time (user + system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// idle drives IdleCycles cycles of every watcher poller, Interval apart.
func (b *bench) idle(ctx context.Context) error {
	for i := range b.o.IdleCycles {
		if i > 0 {
			if err := wait(ctx, b.o.Interval); err != nil {
				return err
			}
		}
		errs := make([]error, len(b.pollers))
		var wg sync.WaitGroup
		for j, p := range b.pollers {
			wg.Go(func() {
				name := p.Name()
				disc, ref := b.t.get(name, cntDiscovery, phaseIdle), b.t.get(name, cntRefresh, phaseIdle)
				if err := p.Poll(ctx); err != nil {
					errs[j] = fmt.Errorf("idle cycle %d of %s: %w", i+1, name, err)
				}
				c := idleCycle{b.t.get(name, cntDiscovery, phaseIdle) - disc, b.t.get(name, cntRefresh, phaseIdle) - ref}
				b.idleMu.Lock()
				if b.idleCycles == nil {
					b.idleCycles = map[string][]idleCycle{}
				}
				b.idleCycles[name] = append(b.idleCycles[name], c)
				b.idleMu.Unlock()
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return err
		}
	}
	return nil
}

// drainLoop reads the outbox whenever a commit adds events, until ctx ends.
func (b *bench) drainLoop(ctx context.Context) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := b.drain(ctx); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			// What the last commits before the end added is still read.
			return b.drain(context.WithoutCancel(ctx))
		case <-b.store.Changed():
		case <-tick.C:
		}
	}
}

// drain records and deletes every outbox entry, as a publisher would after its
// acknowledgement.
func (b *bench) drain(ctx context.Context) error {
	for {
		es, err := b.store.Pending(ctx, 0, 1000)
		if err != nil {
			return err
		}
		if len(es) == 0 {
			return nil
		}
		seqs := make([]uint64, len(es))
		for i, e := range es {
			seqs[i] = e.Seq
			ev, err := event.Decode(e.Msg.Body)
			if err != nil {
				return fmt.Errorf("outbox entry %d: %w", e.Seq, err)
			}
			if ev.ID != e.Msg.ID {
				return fmt.Errorf("outbox entry %d: message id %s, event id %s", e.Seq, e.Msg.ID, ev.ID)
			}
			d := ev.Data
			o := observation{key: itemKey{d.Provider, d.Kind, "", d.ID}, eventID: ev.ID, cur: status{d.Current.Status, d.Current.Addendum},
				seq: d.Sequence, at: d.ObservedAt}
			if d.ParentID != nil {
				o.key.parent = *d.ParentID
			}
			if d.Previous != nil {
				o.prev = &status{d.Previous.Status, d.Previous.Addendum}
			}
			b.watchRec.add(o)
		}
		if err := b.store.Delete(ctx, seqs); err != nil {
			return err
		}
	}
}

// collect gathers the per-source figures.
func (b *bench) collect(ctx context.Context, res *result) error {
	for i, p := range b.pollers {
		prov := b.provider[p.Name()]
		sr := sourceResult{Name: p.Name(), Provider: prov, PageSize: poller.Providers[prov].MaxPageSize, Idle: b.idleCycles[p.Name()]}
		for ph := range numPhases {
			sr.Discovery[ph] = b.t.get(sr.Name, cntDiscovery, ph)
			sr.Refresh[ph] = b.t.get(sr.Name, cntRefresh, ph)
			sr.Events[ph] = b.t.get(sr.Name, cntEvents, ph)
			sr.Records[ph] = b.t.get(sr.Name, cntRecords, ph)
			sr.ServerList[ph] = b.t.get(prov, cntServerLst, ph)
			sr.ServerGet[ph] = b.t.get(prov, cntServerGet, ph)
			sr.Cycle[ph] = b.obs.cycle(ph, sr.Name)
			sr.NaiveRequests[ph] = b.t.get(prov, cntNaiveReq, ph)
			sr.NaiveTransitions[ph] = b.t.get(prov, cntNaiveTr, ph)
			sr.Failures += b.t.get(sr.Name, "poll/"+poller.ResultError, ph)
			if b.naive != nil {
				sr.NaiveWalks[ph], sr.NaiveWalkMean[ph], _ = b.naive[i].walks(ph)
			}
		}
		if b.naive != nil {
			_, _, sr.NaivePages = b.naive[i].walks(phaseBaseline)
		}
		sr.NaiveErrors = b.t.get(prov, cntNaiveErr, phaseBaseline, phaseRun, phaseCatchUp)
		all := []phase{phaseBaseline, phaseRun, phaseCatchUp, phaseIdle}
		for _, w := range append(b.t.whats(sr.Name, "code/"), b.t.whats(sr.Name, "wait/")...) {
			if n := b.t.get(sr.Name, w, all...); n > 0 {
				sr.Other = append(sr.Other, fmt.Sprintf("%s %d", w, n))
			}
		}
		if st := b.t.get(sr.Name, cntStalled, all...); st > 0 {
			sr.Other = append(sr.Other, fmt.Sprintf("stalled %d", st))
		}
		if sk := b.t.get(sr.Name, cntSkipped, all...); sk > 0 {
			sr.Other = append(sr.Other, fmt.Sprintf("skipped %d", sk))
		}
		items, open, err := b.store.Counts(sr.Name)
		if err != nil {
			return err
		}
		sr.Items, sr.Open = items, open
		ois, err := b.store.OpenItems(ctx, sr.Name)
		if err != nil {
			return err
		}
		for _, oi := range ois {
			if oi.State == "" {
				sr.Settling++
			}
		}
		res.IdleEvents += sr.Events[phaseIdle]
		res.Sources = append(res.Sources, sr)
	}
	res.Logs = b.logs.counts()
	res.LogLines = map[string][]string{}
	for k := range res.Logs {
		res.LogLines[k] = b.logs.example(k)
	}
	return nil
}

// wait waits d or until ctx ends.
func wait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
