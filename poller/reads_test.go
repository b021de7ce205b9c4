package poller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/state"
	"github.com/payments-watcher/watcher/state/bbolt"
)

// readsRecorder records the read times of every commit, and fails the next commit
// that carries some when failReads is set.
type readsRecorder struct {
	*bbolt.Store
	failReads bool
	reads     []map[string]time.Time
}

func (r *readsRecorder) Commit(ctx context.Context, source string, b state.Batch) error {
	if len(b.Reads) > 0 {
		if r.failReads {
			r.failReads = false
			return errors.New("disk full")
		}
		r.reads = append(r.reads, maps.Clone(b.Reads))
	}
	return r.Store.Commit(ctx, source, b)
}

// take returns the read times committed since the last call, one "id@minutes" per read.
func (r *readsRecorder) take() string {
	var out []string
	for _, m := range r.reads {
		for _, id := range slices.Sorted(maps.Keys(m)) {
			out = append(out, fmt.Sprintf("%s@%v", id, m[id].Sub(now0)))
		}
		out = append(out, "|")
	}
	r.reads = nil
	return strings.Join(out, " ")
}

// Read times that change no record go with the cycle's last commit; a failed one
// leaves them for the next cycle's, without those of items closed meanwhile.
func TestReadTimesGoWithTheCycleCommit(t *testing.T) {
	src := getterSource{&fakeSource{pageSize: 100}}
	src.add("a", "NEW", now0.Add(-30*time.Hour))
	src.add("b", "NEW", now0.Add(-29*time.Hour))
	src.add("newest", "DONE", now0)
	cfg := testConfig()
	cfg.OpenRefresh = 10 * time.Minute
	cfg.PageSize = 1 // reads by id
	tp := newTestPoller(t, cfg, src)
	rec := &readsRecorder{Store: tp.store}
	tp.Poller.store = rec
	if err := tp.Poll(t.Context()); err != nil { // baseline: new records carry their read time
		t.Fatal(err)
	}
	if got := rec.take(); got != "" {
		t.Fatalf("baseline committed read times %s", got)
	}
	// A hint between cycles reads a; the next cycle commits when.
	*tp.clock = now0.Add(2 * time.Minute)
	tp.Hint("a")
	if err := tp.readHints(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := rec.take(); got != "" {
		t.Fatalf("the hint committed read times %s before the cycle", got)
	}
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := rec.take(); got != "a@2m0s |" {
		t.Fatalf("committed read times %q, want a's at 2m", got)
	}
	// Both are read by id, b closing; the commit of their read times fails.
	src.set("b", "DONE")
	*tp.clock = now0.Add(11*time.Minute + time.Second)
	rec.failReads = true
	if err := tp.Poll(t.Context()); err == nil {
		t.Fatal("the cycle succeeded although its last commit failed")
	}
	// a's read goes with the next cycle's commit; b's is forgotten, b being closed.
	*tp.clock = now0.Add(12 * time.Minute)
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := rec.take(); got != "a@11m1s |" {
		t.Fatalf("committed read times %q, want a's from the failed cycle", got)
	}
	if len(tp.unsaved) != 0 {
		t.Fatalf("read times %v left after a successful cycle", tp.unsaved)
	}
}

// A poller started on the state file of a stopped one takes up each open item's
// re-read schedule where it stopped: it reads the items whose period has passed, not
// every open item, oldest first.
func TestRestartResumesReadSchedule(t *testing.T) {
	src := &fakeSource{pageSize: 100}
	for i := range 6 {
		src.add(fmt.Sprintf("p%d", i), "NEW", now0.Add(-time.Duration(30-i)*time.Hour))
	}
	src.add("newest", "DONE", now0) // sets the high-water mark
	g := &countingGetter{getterSource: getterSource{src}}
	cfg := testConfig()
	cfg.OpenRefresh = 10 * time.Minute
	cfg.PageSize = 1 // reads by id
	path := filepath.Join(t.TempDir(), "w.db")
	start := func(at time.Time) (*Poller, *bbolt.Store) {
		t.Helper()
		st, err := bbolt.Open(path, bbolt.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		p := New(cfg, g, st, "payments", slog.New(slog.NewTextHandler(io.Discard, nil)))
		p.now = func() time.Time { return at }
		return p, st
	}
	poll := func(p *Poller, at time.Time) string {
		t.Helper()
		p.now = func() time.Time { return at }
		if err := p.Poll(t.Context()); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(g.take())
	}

	p, st := start(now0)
	poll(p, now0) // baseline: every item read at 0
	// p3-p5 are read six minutes later (a hint each), without their records changing.
	p.now = func() time.Time { return now0.Add(6 * time.Minute) }
	for _, id := range []string{"p3", "p4", "p5"} {
		p.Hint(id)
	}
	if err := p.readHints(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := poll(p, now0.Add(6*time.Minute)); got != "[p3 p4 p5]" {
		t.Fatalf("read %s by id, want the hinted items", got)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	p, st = start(now0.Add(10*time.Minute + time.Second))
	t.Cleanup(func() { st.Close() })
	if got := poll(p, now0.Add(10*time.Minute+time.Second)); got != "[p0 p1 p2]" {
		t.Fatalf("after the restart read %s by id, want only p0-p2, read ten minutes before", got)
	}
	if got := poll(p, now0.Add(16*time.Minute+time.Second)); got != "[p3 p4 p5]" {
		t.Fatalf("six minutes later read %s by id, want p3-p5", got)
	}
}
