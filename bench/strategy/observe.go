package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/sim"
	"github.com/payments-watcher/watcher/state"
	"github.com/payments-watcher/watcher/state/bbolt"
)

// phase is a part of the benchmark; every count is kept per phase.
type phase int32

const (
	// phaseBaseline: the simulated clock stands still while both pollers make their
	// first, silent walk.
	phaseBaseline phase = iota
	// phaseRun: the scenario engine runs; status changes happen.
	phaseRun
	// phaseCatchUp: the engine has stopped; the pollers keep going until they have
	// seen the last status of every item (or a timeout).
	phaseCatchUp
	// phaseIdle: the engine is stopped and watcher's cycles are driven one by one.
	phaseIdle
	// phaseStopping: the pollers' loops are being cancelled; what they report then (a
	// request abandoned, a cycle cut short) is left out of every figure.
	phaseStopping
	numPhases
)

var phaseNames = [numPhases]string{"baseline", "run", "catch-up", "idle", "stopping"}

func (p phase) String() string { return phaseNames[p] }

// tally counts named things per phase and source. It is safe for concurrent use.
type tally struct {
	cur atomic.Int32 // the current phase
	mu  sync.Mutex
	n   map[tallyKey]int
	// During the run phase, counts are also kept per slice of time since runStart.
	runStart time.Time
	slice    time.Duration
	timed    map[int]map[string]int
}

type tallyKey struct {
	phase  phase
	source string
	what   string
}

func newTally(slice time.Duration) *tally {
	return &tally{n: map[tallyKey]int{}, slice: slice, timed: map[int]map[string]int{}}
}

func (t *tally) phase() phase { return phase(t.cur.Load()) }

func (t *tally) setPhase(p phase) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p == phaseRun {
		t.runStart = time.Now()
	}
	t.cur.Store(int32(p))
}

// add counts n of what for source in the current phase.
func (t *tally) add(source, what string, n int) {
	ph := t.phase()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n[tallyKey{ph, source, what}] += n
	if ph == phaseRun && t.slice > 0 {
		i := int(time.Since(t.runStart) / t.slice)
		if t.timed[i] == nil {
			t.timed[i] = map[string]int{}
		}
		t.timed[i][what] += n
	}
}

// sliced returns the run phase's counts of each of whats (summed over sources) per
// slice of time, in order.
func (t *tally) sliced(whats ...string) [][]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	last := -1
	for i := range t.timed {
		last = max(last, i)
	}
	out := make([][]int, last+1)
	for i := range out {
		out[i] = make([]int, len(whats))
		for j, w := range whats {
			out[i][j] = t.timed[i][w]
		}
	}
	return out
}

// get returns the count of what for source summed over phases.
func (t *tally) get(source, what string, phases ...phase) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	total := 0
	for _, p := range phases {
		total += t.n[tallyKey{p, source, what}]
	}
	return total
}

// whats returns the names counted for source whose name starts with prefix, sorted.
func (t *tally) whats(source, prefix string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for k := range t.n {
		if k.source == source && strings.HasPrefix(k.what, prefix) && !slices.Contains(out, k.what) {
			out = append(out, k.what)
		}
	}
	slices.Sort(out)
	return out
}

// Names counted in a tally.
const (
	cntDiscovery = "req/" + poller.PurposeDiscovery
	cntRefresh   = "req/" + poller.PurposeRefresh
	cntEvents    = "events"
	cntRecords   = "records-written"
	cntCommits   = "commits"
	cntStalled   = "stalled"
	cntSkipped   = "skipped"
	cntServerLst = "server/list"
	cntServerGet = "server/get"
	cntNaiveReq  = "naive/requests"
	cntNaiveTr   = "naive/transitions"
	cntNaiveErr  = "naive/errors"
)

// observer is the poller.Observer of watcher's pollers: it counts requests by purpose,
// transitions, waits and cycle times.
type observer struct {
	t *tally

	mu     sync.Mutex
	cycles map[tallyKey]*cycleStats // what = "" ; per phase and source
}

type cycleStats struct {
	n         int
	sum, most time.Duration
}

func newObserver(t *tally) *observer { return &observer{t: t, cycles: map[tallyKey]*cycleStats{}} }

func (o *observer) Poll(source, result string, took time.Duration) {
	o.t.add(source, "poll/"+result, 1)
	k := tallyKey{o.t.phase(), source, ""}
	o.mu.Lock()
	defer o.mu.Unlock()
	c := o.cycles[k]
	if c == nil {
		c = &cycleStats{}
		o.cycles[k] = c
	}
	c.n++
	c.sum += took
	c.most = max(c.most, took)
}

func (o *observer) cycle(p phase, source string) cycleStats {
	o.mu.Lock()
	defer o.mu.Unlock()
	if c := o.cycles[tallyKey{p, source, ""}]; c != nil {
		return *c
	}
	return cycleStats{}
}

func (o *observer) Request(source, purpose string, code int, _ time.Duration) {
	o.t.add(source, "req/"+purpose, 1)
	if code != http.StatusOK {
		o.t.add(source, fmt.Sprintf("code/%d", code), 1)
	}
}

func (o *observer) Wait(source, reason string, _ time.Duration) { o.t.add(source, "wait/"+reason, 1) }
func (o *observer) Items(string, int)                           {}
func (o *observer) Skipped(source string)                       { o.t.add(source, cntSkipped, 1) }
func (o *observer) Transition(source, _ string, _ diff.State, _ bool) {
	o.t.add(source, cntEvents, 1)
}
func (o *observer) Open(source string, _, stalled int, _ time.Time) {
	if stalled > 0 {
		o.t.add(source, cntStalled, stalled)
	}
}
func (o *observer) Anomaly(string, string)      {}
func (o *observer) Paced(string, time.Duration) {}
func (o *observer) Forgotten(string, int)       {}

func (o *observer) Success(string, time.Time) {}

// countingStore is watcher's state store, counting what the pollers write.
type countingStore struct {
	*bbolt.Store
	t *tally
}

func (s countingStore) Commit(ctx context.Context, source string, b state.Batch) error {
	s.t.add(source, cntCommits, 1)
	s.t.add(source, cntRecords, len(b.Records))
	return s.Store.Commit(ctx, source, b)
}

// listPaths are the simulated list endpoints by provider; every other path of a
// provider reads one item.
var listPaths = func() map[string]string {
	paths := map[string]string{}
	for _, s := range sim.Sources() {
		paths[s.ListPath] = s.Provider
	}
	return paths
}()

// countRequests counts, on the provider's side, the list and single-item requests that
// reach h, by provider.
func countRequests(h http.Handler, t *tally) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if prov, ok := listPaths[r.URL.Path]; ok {
			t.add(prov, cntServerLst, 1)
		} else {
			for path, prov := range listPaths {
				if strings.HasPrefix(r.URL.Path, strings.TrimSuffix(path, "summary")) {
					t.add(prov, cntServerGet, 1)
					break
				}
			}
		}
		h.ServeHTTP(w, r)
	})
}

// logCounter is a slog.Handler that counts the warnings and errors the pollers log
// and keeps the first few of each message.
type logCounter struct {
	shared *logShared
	attrs  []slog.Attr
}

type logShared struct {
	mu       sync.Mutex
	count    map[string]int
	examples map[string][]string
}

const logExamples = 3

func newLogCounter() *logCounter {
	return &logCounter{shared: &logShared{count: map[string]int{}, examples: map[string][]string{}}}
}

func (h *logCounter) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h *logCounter) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	for _, a := range h.attrs {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
	}
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	key := r.Level.String() + " " + r.Message
	s := h.shared
	s.mu.Lock()
	defer s.mu.Unlock()
	s.count[key]++
	if len(s.examples[key]) < logExamples {
		s.examples[key] = append(s.examples[key], strings.TrimSpace(b.String()))
	}
	return nil
}

func (h *logCounter) WithAttrs(as []slog.Attr) slog.Handler {
	return &logCounter{shared: h.shared, attrs: append(slices.Clip(h.attrs), as...)}
}

func (h *logCounter) WithGroup(string) slog.Handler { return h }

// counts returns the logged messages with their counts.
func (h *logCounter) counts() map[string]int {
	h.shared.mu.Lock()
	defer h.shared.mu.Unlock()
	out := make(map[string]int, len(h.shared.count))
	for k, v := range h.shared.count {
		out[k] = v
	}
	return out
}

func (h *logCounter) example(key string) []string {
	h.shared.mu.Lock()
	defer h.shared.mu.Unlock()
	return slices.Clone(h.shared.examples[key])
}
