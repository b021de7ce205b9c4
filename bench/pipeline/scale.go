package pipeline

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payments-watcher/watcher/config"
	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/poller/provider"
	"github.com/payments-watcher/watcher/publish"
	"github.com/payments-watcher/watcher/sim"
	"github.com/payments-watcher/watcher/state/bbolt"
)

// Scale is what watcher costs at one number of tracked items, polling the simulator
// over HTTP as the daemon does.
type Scale struct {
	// Target is the number of history items asked of the simulator (all sources);
	// Tracked and Open are the records and open index entries stored after the
	// baseline.
	Target, Tracked, Open int
	// SimBuild is how long the simulator took to build its history and start (not
	// measured below); SimProcess is set when it ran in a process of its own.
	SimBuild   time.Duration
	SimProcess bool
	// SimCPU is the CPU time the simulator's process used over the whole scale run
	// (0 when it ran in this process).
	SimCPU time.Duration
	// Baseline is the first walk of every source, all five at once: every item read,
	// compared and stored (silently).
	Baseline Figures
	// FileSize is the state file's size after the baseline.
	FileSize int64
	// Idle is IdleCycles cycles of every source with nothing changed and nothing due
	// for a re-read; its Items are the cycles.
	Idle       Figures
	IdleCycles int
	// IdleRequests is the number of requests sent during the idle cycles.
	IdleRequests int
}

// BytesPerItem returns the state file's size per tracked item.
func (s Scale) BytesPerItem() float64 {
	if s.Tracked == 0 {
		return 0
	}
	return float64(s.FileSize) / float64(s.Tracked)
}

// IdleCPU returns the CPU time of one idle cycle (every source).
func (s Scale) IdleCPU() time.Duration {
	if s.IdleCycles == 0 {
		return 0
	}
	return s.Idle.CPU / time.Duration(s.IdleCycles)
}

// IdleWall returns the wall time of one idle cycle (every source).
func (s Scale) IdleWall() time.Duration {
	if s.IdleCycles == 0 {
		return 0
	}
	return s.Idle.Wall / time.Duration(s.IdleCycles)
}

// scaleSources are the simulated providers as sources, with the default credentials.
var scaleSources = sim.Sources()

// Scale run settings: a history of a million items spans a little less than the
// lookback and open_max_age, so that no open item is stalled; open_refresh is long enough that no
// open item falls due during the idle cycles (their re-reads cost per open item, not
// per tracked item, and the strategy benchmark measures them); settle_window is 0, so
// that final items do not stay open and every scale has about the same open items
// (with the default day, the final Coindirect and failed CPN payments of the last day
// would, some 7,000 more at a million).
const (
	scaleSpan        = 29 * 24 * time.Hour
	scaleLookback    = 30 * 24 * time.Hour
	scaleOpenRefresh = time.Hour
	scaleInterval    = 10 * time.Second
)

// historySpan is how long before the start a history of target items is created
// over: a million over scaleSpan, fewer over a proportionally shorter time, so that
// items arrive at the same rate at every scale (about five a minute per source) and
// only the number tracked differs. An idle discovery re-reads what arrived in the
// discovery overlap: the same at every scale.
func historySpan(target int) time.Duration {
	return max(time.Hour, time.Duration(float64(scaleSpan)*float64(target)/1e6))
}

// scaleConfig renders the configuration of every source against the simulator at
// baseURL, each at its largest page size.
func scaleConfig(statePath, baseURL string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "state:\n  path: %q\nhttp:\n  listen: \"\"\nsources:\n", statePath)
	for _, s := range scaleSources {
		fmt.Fprintf(&b, "  - name: %s\n    provider: %s\n    base_url: %q\n", s.Name, s.Provider, baseURL)
		fmt.Fprintf(&b, "    interval: %s\n    open_refresh: %s\n    lookback: %s\n    open_max_age: %s\n    settle_window: 0s\n",
			scaleInterval, scaleOpenRefresh, scaleLookback, scaleLookback)
		fmt.Fprintf(&b, "    rate_limit: 100000\n    baseline: silent\n    page_size: %d\n", poller.Providers[s.Provider].MaxPageSize)
		b.WriteString(s.KeyLines("    "))
	}
	return []byte(b.String())
}

// countingTransport counts the requests it sends.
type countingTransport struct {
	next http.RoundTripper
	n    atomic.Int64
}

func (t *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.n.Add(1)
	return t.next.RoundTrip(r)
}

// runScale serves a simulator with target history items (split over the five
// sources, open of them left open), lets watcher's pollers (built as the daemon
// builds them, over a state file with fsync and publishing to js) make their baseline
// walk, all at once, then drives idleCycles cycles of every source. With simCommand
// the simulator runs in a process of its own (see startSim), so that the figures are
// watcher's alone.
func runScale(ctx context.Context, dir string, js jetstream.JetStream, ncfg publish.Config, simCommand []string, seed int64, target, open, idleCycles int, log *slog.Logger) (sc Scale, err error) {
	sc = Scale{Target: target, IdleCycles: idleCycles}
	per := max(1, target/len(scaleSources))
	share := min(1, float64(open)/float64(per*len(scaleSources)))
	began := time.Now()
	sm, err := startSim(ctx, dir, simCommand, sim.Config{
		Seed: seed, History: per, HistorySpan: historySpan(target), OpenShare: share, FailureRate: 0.1,
		// Nothing changes while watcher polls: no new items, and the open ones move on
		// only after years.
		OpenResumeWithin: simResumeWithin,
	})
	if err != nil {
		return sc, err
	}
	defer func() { sc.SimCPU = sm.close() }()
	sc.SimBuild = time.Since(began)
	sc.SimProcess = len(simCommand) > 0

	statePath := filepath.Join(dir, "watcher.db")
	cfg, err := config.Parse(scaleConfig(statePath, sm.url), func(string) (string, bool) { return "", false }, os.ReadFile)
	if err != nil {
		return sc, fmt.Errorf("watcher configuration: %w", err)
	}
	store, err := bbolt.Open(statePath, bbolt.Options{})
	if err != nil {
		return sc, err
	}
	defer store.Close()
	pub := publish.New(js, store, ncfg, publish.Options{}, log)
	pubCtx, stopPub := context.WithCancel(context.WithoutCancel(ctx))
	pubDone := make(chan error, 1)
	go func() { pubDone <- pub.Run(pubCtx) }()
	defer func() {
		stopPub()
		<-pubDone
	}()
	counter := &countingTransport{}
	pollers, err := buildPollers(cfg, store, ncfg.SubjectPrefix, counter, log)
	if err != nil {
		return sc, err
	}
	// Before the simulator stops: it waits for connections opened but never used.
	defer counter.next.(*http.Transport).CloseIdleConnections()

	m := startMeter()
	if err := pollAll(ctx, pollers); err != nil {
		return sc, fmt.Errorf("baseline: %w", err)
	}
	m.finish(&sc.Baseline)
	for _, p := range pollers {
		items, open, err := store.Counts(p.Name())
		if err != nil {
			return sc, err
		}
		sc.Tracked += items
		sc.Open += open
	}
	sc.Baseline.Items = sc.Tracked
	fi, err := os.Stat(statePath)
	if err != nil {
		return sc, err
	}
	sc.FileSize = fi.Size()

	// One cycle first, so that every idle cycle measured is like the next.
	if err := pollAll(ctx, pollers); err != nil {
		return sc, fmt.Errorf("idle cycle: %w", err)
	}
	requests := counter.n.Load()
	m = startMeter()
	for i := range idleCycles {
		if err := pollAll(ctx, pollers); err != nil {
			return sc, fmt.Errorf("idle cycle %d: %w", i+1, err)
		}
	}
	m.finish(&sc.Idle)
	sc.Idle.Items = idleCycles
	sc.IdleRequests = int(counter.n.Load() - requests)
	if n, _, err := store.OutboxStats(ctx); err != nil || n != 0 {
		return sc, fmt.Errorf("outbox holds %d events after a silent baseline and idle cycles (%v)", n, err)
	}
	return sc, nil
}

// simResumeWithin spreads the moves of the simulator's open history items over so
// long that none happens during a run.
const simResumeWithin = 100_000 * time.Hour

// simServer is a running simulator.
type simServer struct {
	url string
	// close stops it and returns the CPU time its process used (0 in this process).
	close func() time.Duration
}

// startSim serves a simulator configured by cfg: in this process when command is
// empty, else by running command (watcher sim) with a scenario file written to dir and
// --listen 127.0.0.1:0, reading the address it listens on from its JSON log.
func startSim(ctx context.Context, dir string, command []string, cfg sim.Config) (*simServer, error) {
	if len(command) == 0 {
		sm, err := sim.New(cfg)
		if err != nil {
			return nil, fmt.Errorf("simulator: %w", err)
		}
		srv := httptest.NewServer(sm.Handler())
		return &simServer{url: srv.URL, close: func() time.Duration { srv.Close(); return 0 }}, nil
	}
	scenario := filepath.Join(dir, "scenario.yaml")
	doc := fmt.Sprintf("seed: %d\nrate: 0\nhistory: %d\nhistory_span: %s\nopen_share: %g\nopen_resume_within: %s\nfailure_rate: %g\n",
		cfg.Seed, cfg.History, cfg.HistorySpan, cfg.OpenShare, cfg.OpenResumeWithin, cfg.FailureRate)
	if err := os.WriteFile(scenario, []byte(doc), 0o600); err != nil {
		return nil, err
	}
	args := append(slices.Clone(command[1:]), "--listen", "127.0.0.1:0", "--scenario", scenario, "--log-format", "json")
	cmd := exec.CommandContext(ctx, command[0], args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("simulator %s: %w", command[0], err)
	}
	stop := func() time.Duration {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() {
			_ = cmd.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if st := cmd.ProcessState; st != nil {
			return st.UserTime() + st.SystemTime()
		}
		return 0
	}
	addr := make(chan string, 1)
	var lastLines []string
	var mu sync.Mutex
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		found := false
		for sc.Scan() {
			var line struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if !found && json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "Simulator listening" {
				found = true
				addr <- line.Addr
				continue
			}
			mu.Lock()
			lastLines = append(lastLines[max(0, len(lastLines)-4):], sc.Text())
			mu.Unlock()
		}
		close(addr)
	}()
	select {
	case a, ok := <-addr:
		if ok {
			return &simServer{url: "http://" + a, close: stop}, nil
		}
	case <-time.After(2 * time.Minute):
	case <-ctx.Done():
	}
	stop()
	mu.Lock()
	defer mu.Unlock()
	return nil, fmt.Errorf("simulator %s did not start listening: %s", strings.Join(command, " "), strings.Join(lastLines, "; "))
}

// buildPollers makes one poller per configured source, as the daemon does.
func buildPollers(cfg *config.Config, store *bbolt.Store, prefix string, counter *countingTransport, log *slog.Logger) ([]*poller.Poller, error) {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	// The daemon keeps up to 4 idle connections per provider host; here every source's
	// provider is the one simulator, so each source gets its own.
	transport.MaxIdleConnsPerHost = 4 * len(cfg.Sources)
	counter.next = transport
	var out []*poller.Poller
	for _, s := range cfg.Sources {
		client := &provider.Client{HTTP: &http.Client{Transport: counter}, UserAgent: "watcher-bench"}
		src, err := s.Provider.New(s.Settings, client)
		if err != nil {
			return nil, fmt.Errorf("source %s: %w", s.Name, err)
		}
		pc := s.Config
		pc.RequestTimeout = s.RequestTimeout
		out = append(out, poller.New(pc, src, store, prefix, log.With("source", s.Name)))
	}
	return out, nil
}

// pollAll runs one cycle of every poller, all at once.
func pollAll(ctx context.Context, pollers []*poller.Poller) error {
	errs := make([]error, len(pollers))
	var wg sync.WaitGroup
	for i, p := range pollers {
		wg.Go(func() {
			if err := p.Poll(ctx); err != nil {
				errs[i] = fmt.Errorf("%s: %w", p.Name(), err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
