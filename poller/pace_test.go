package poller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/payments-watcher/watcher/internal/logtest"
	"github.com/payments-watcher/watcher/state"
	"github.com/payments-watcher/watcher/state/bbolt"
)

// outboxWatch is a bbolt state file that records the most events its outbox held
// after any commit. take, the tests' publisher, removes events under the same lock,
// so the recorded peak is exact.
type outboxWatch struct {
	*bbolt.Store
	mu    sync.Mutex
	peak  int
	taken int
}

func (w *outboxWatch) Commit(ctx context.Context, source string, b state.Batch) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.Store.Commit(ctx, source, b); err != nil {
		return err
	}
	n, _, err := w.Store.OutboxStats(ctx)
	if err != nil {
		return err
	}
	w.peak = max(w.peak, n)
	return nil
}

// take deletes up to n of the oldest waiting events, as their acknowledgements would,
// and returns how many it deleted.
func (w *outboxWatch) take(ctx context.Context, n int) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	entries, err := w.Store.Pending(ctx, 0, n)
	if err != nil {
		return 0, err
	}
	seqs := make([]uint64, len(entries))
	for i, e := range entries {
		seqs[i] = e.Seq
	}
	if err := w.Store.Delete(ctx, seqs); err != nil {
		return 0, err
	}
	w.taken += len(seqs)
	return len(seqs), nil
}

func (w *outboxWatch) figures() (peak, taken int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.peak, w.taken
}

// publishEvery takes batch events from w every period until ctx ends, as a publisher
// whose acknowledgements arrive at that rate; it sends on empty, when a receiver
// waits, each time it finds the outbox empty.
func publishEvery(ctx context.Context, t *testing.T, w *outboxWatch, batch int, period time.Duration, empty chan<- struct{}) {
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		n, err := w.take(ctx, batch)
		if err != nil {
			if ctx.Err() == nil {
				t.Errorf("publisher: %v", err)
			}
			return
		}
		if n == 0 {
			select {
			case empty <- struct{}{}:
			default:
			}
		}
	}
}

// startPublisher runs publishEvery (5 events every 10ms) in a goroutine until stop,
// which waits for it to end.
func startPublisher(t *testing.T, w *outboxWatch) (empty <-chan struct{}, stop func()) {
	ctx, cancel := context.WithCancel(t.Context())
	e := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		publishEvery(ctx, t, w, 5, 10*time.Millisecond, e)
	}()
	return e, func() {
		cancel()
		<-done
	}
}

// paceRecorder records Observer.Paced calls.
type paceRecorder struct {
	nopObserver
	mu    sync.Mutex
	waits []time.Duration
}

func (r *paceRecorder) Paced(source string, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.waits = append(r.waits, d)
}

func (r *paceRecorder) recorded() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Duration(nil), r.waits...)
}

// pacedPoller returns a poller over items first-sight items in pages of 10 with an
// outbox pace of 30, on a bbolt file watched by an outboxWatch, its pacing looking at
// the outbox every 10 ms and giving up after stall; its logs go to logs.
func pacedPoller(t *testing.T, items int, stall time.Duration) (*Poller, *fakeSource, *outboxWatch, *paceRecorder, *logtest.Buffer) {
	t.Helper()
	src := &fakeSource{pageSize: 10}
	for i := range items {
		src.add(fmt.Sprintf("p%03d", i), "NEW", now0.Add(-time.Duration(i+1)*time.Minute))
	}
	cfg := testConfig()
	cfg.Baseline = "emit"
	cfg.MaxPages = 1000
	cfg.PaceOutbox = 30
	w := &outboxWatch{Store: newStore(t)}
	logs := &logtest.Buffer{}
	p := New(cfg, src, w, "payments", slog.New(slog.NewTextHandler(logs, nil)))
	clock := now0
	p.now = func() time.Time { return clock }
	p.paced.stall, p.paced.check, p.paced.maxCheck = stall, 10*time.Millisecond, 10*time.Millisecond
	obs := &paceRecorder{}
	p.Observe(obs)
	return p, src, w, obs, logs
}

// countLines returns how many lines of logs contain s.
func countLines(logs string, s string) int {
	n := 0
	for line := range strings.Lines(logs) {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

const (
	paceStartLog = "the outbox reached nats.outbox_pace"
	paceEndLog   = "walks no longer wait for NATS"
	paceStallLog = "the outbox has not got smaller for the stall period"
)

// TestWalkIsPacedByThePublisher: a walk of 20 pages of first-sight events, its
// events taken by a publisher far slower than the walk, never lets the outbox hold
// more than the pace plus one page; it waits for the publisher, completes, and loses
// nothing. One pacing episode is logged once however many waits it takes, and its end
// is logged by the next walk that finds the outbox below half the pace.
func TestWalkIsPacedByThePublisher(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const items = 200
		p, src, w, obs, logs := pacedPoller(t, items, time.Second)
		empty, stop := startPublisher(t, w)
		defer stop()

		if err := p.Poll(t.Context()); err != nil {
			t.Fatal(err)
		}
		if n, _, err := w.Counts("src"); err != nil || n != items {
			t.Fatalf("%d items stored (%v), want %d", n, err, items)
		}
		peak, _ := w.figures()
		if limit := p.cfg.PaceOutbox + src.pageSize; peak > limit {
			t.Fatalf("the outbox held %d events at its peak, want at most the pace plus one page, %d", peak, limit)
		}
		waits := obs.recorded()
		if len(waits) < 2 {
			t.Fatalf("%d waits reported, want several: the publisher takes 5 events in 10ms", len(waits))
		}
		if n := countLines(logs.String(), paceStartLog); n != 1 {
			t.Fatalf("pacing start logged %d times, want once:\n%s", n, logs)
		}
		if n := countLines(logs.String(), paceEndLog) + countLines(logs.String(), paceStallLog); n != 0 {
			t.Fatalf("pacing end logged during the walk, the outbox never below half the pace without a wait:\n%s", logs)
		}

		<-empty
		_, taken := w.figures()
		if taken != items {
			t.Fatalf("the publisher took %d events, want one per item, %d", taken, items)
		}
		// One new item: the next walk's first look finds one event, fewer than any look
		// of the paced walk found (each after a page of 10, or a wait that ended at 5 or
		// more: the publisher takes 5 at a time, and looks come every 10 ms as its
		// batches do).
		src.add("n00", "NEW", now0.Add(-30*time.Second))
		if err := p.Poll(t.Context()); err != nil {
			t.Fatal(err)
		}
		if n := countLines(logs.String(), paceEndLog); n != 1 {
			t.Fatalf("pacing end logged %d times by the next walk, want once:\n%s", n, logs)
		}
		if got := len(obs.recorded()); got != len(waits) {
			t.Fatalf("the next walk waited (%d waits, %d before) with the outbox below the pace", got, len(waits))
		}
	})
}

// TestPacingStopsWhenNothingIsTaken: with nothing taking events (NATS away), a walk
// at the pace waits one stall period, then goes on without waiting again and
// completes, the outbox holding every event, as it would without pacing.
func TestPacingStopsWhenNothingIsTaken(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const items, stall = 200, 2 * time.Second
		p, _, w, obs, logs := pacedPoller(t, items, stall)
		if err := p.Poll(t.Context()); err != nil {
			t.Fatal(err)
		}
		if n, _, err := w.Counts("src"); err != nil || n != items {
			t.Fatalf("%d items stored (%v), want %d", n, err, items)
		}
		if n, _, err := w.OutboxStats(t.Context()); err != nil || n != items {
			t.Fatalf("outbox holds %d events (%v), want every one, %d", n, err, items)
		}
		waits := obs.recorded()
		if len(waits) != 1 || waits[0] < stall {
			t.Fatalf("waits %v, want one of the stall period %s: the walk goes on after it", waits, stall)
		}
		if a, b := countLines(logs.String(), paceStartLog), countLines(logs.String(), paceStallLog); a != 1 || b != 1 {
			t.Fatalf("pacing start logged %d times, its stall %d, want once each:\n%s", a, b, logs)
		}
	})
}

// TestPacingWaitEndsWithTheContext: a walk waiting at the pace ends as soon as its
// context does, long before the stall period, without reading another page.
func TestPacingWaitEndsWithTheContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, src, w, obs, _ := pacedPoller(t, 200, time.Hour)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- p.Poll(ctx) }()
		synctest.Wait()
		if n, _, err := w.OutboxStats(t.Context()); err != nil || n != p.cfg.PaceOutbox {
			t.Fatalf("outbox holds %d events (%v) while the walk waits, want the pace, %d", n, err, p.cfg.PaceOutbox)
		}
		pages := src.pages.Load()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Poll = %v, want context.Canceled", err)
		}
		if got := src.pages.Load(); got != pages {
			t.Fatalf("%d pages read after the cancellation", got-pages)
		}
		if waits := obs.recorded(); len(waits) != 1 || waits[0] >= time.Hour {
			t.Fatalf("waits %v, want one, ended by the cancellation before the stall period", waits)
		}
	})
}

// TestPacingResumesWhenEventsAreTakenAgain: after a walk stopped waiting because
// nothing took events, a later walk paces again once the outbox has got smaller (NATS
// is back): its outbox stays within the pace plus one page.
func TestPacingResumesWhenEventsAreTakenAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const items, stall = 200, 100 * time.Millisecond
		p, src, w, obs, _ := pacedPoller(t, items, stall)
		if err := p.Poll(t.Context()); err != nil {
			t.Fatal(err)
		}
		if waits := obs.recorded(); len(waits) != 1 {
			t.Fatalf("waits %v with nothing taking events, want one", waits)
		}

		// NATS is back: the publisher empties the outbox, then the source gains 50 items.
		empty, stop := startPublisher(t, w)
		defer stop()
		<-empty
		w.mu.Lock()
		w.peak = 0
		w.mu.Unlock()
		for i := range 50 {
			src.add(fmt.Sprintf("n%02d", i), "NEW", now0.Add(-30*time.Second))
		}
		if err := p.Poll(t.Context()); err != nil {
			t.Fatal(err)
		}
		if waits := obs.recorded(); len(waits) < 2 {
			t.Fatalf("waits %v: the walk after NATS came back did not pace", waits)
		}
		peak, taken := w.figures()
		if limit := p.cfg.PaceOutbox + src.pageSize; peak > limit {
			t.Fatalf("the outbox held %d events at its peak after NATS came back, want at most %d", peak, limit)
		}
		if n, _, err := w.OutboxStats(t.Context()); err != nil || n+taken != items+50 {
			t.Fatalf("%d events waiting (%v) and %d taken, want %d in all", n, err, taken, items+50)
		}
	})
}
