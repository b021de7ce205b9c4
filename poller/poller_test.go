package poller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/poller/provider"
	"github.com/payments-watcher/watcher/state"
	"github.com/payments-watcher/watcher/state/bbolt"
)

var statuses = diff.Mapping{
	"NEW":  {State: diff.Pending},
	"WORK": {State: diff.Processing},
	"DONE": {State: diff.Completed, Terminal: true},
	"FAIL": {State: diff.Failed, Terminal: true},
}

// fakeSource is a provider list held in memory: newest first, offset cursors,
// From honoured, optional single-item reads.
type fakeSource struct {
	mu       sync.Mutex
	items    []diff.Item // newest first
	pageSize int
	errs     []error // returned, one per call, before answering normally
	skipped  []provider.Skipped
	cursorFn func(next int) string // overrides cursor rendering (repeat tests)

	pages, gets atomic.Int32
}

func (f *fakeSource) add(id, status string, created time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	it := diff.Item{Kind: "payment", ID: id, Status: fakeStatus(status), CreatedAt: created, Raw: []byte(`{"id":"` + id + `"}`)}
	i := slices.IndexFunc(f.items, func(o diff.Item) bool { return o.CreatedAt.Before(created) })
	if i < 0 {
		i = len(f.items)
	}
	f.items = slices.Insert(f.items, i, it)
}

func (f *fakeSource) set(id, status string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.items {
		if f.items[i].ID == id {
			f.items[i].Status = fakeStatus(status)
			return
		}
	}
	panic("no item " + id)
}

// fakeStatus maps a raw status of the fake's table; any other is a mistake in a test.
func fakeStatus(raw string) diff.Status {
	st, known := statuses.Status(raw, "")
	if !known {
		panic("status " + raw + " is not in the fake's mapping")
	}
	return st
}

func (f *fakeSource) failNext(errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, errs...)
}

func (f *fakeSource) popErr() error {
	if len(f.errs) == 0 {
		return nil
	}
	err := f.errs[0]
	f.errs = f.errs[1:]
	return err
}

func (f *fakeSource) Page(ctx context.Context, req provider.Request) (provider.Page, error) {
	f.pages.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.popErr(); err != nil {
		return provider.Page{}, err
	}
	off := 0
	if req.Cursor != "" {
		var err error
		if off, err = strconv.Atoi(strings.TrimPrefix(req.Cursor, "c")); err != nil {
			return provider.Page{}, fmt.Errorf("fake source: cursor %q is not one it gave", req.Cursor)
		}
	}
	var window []diff.Item
	for _, it := range f.items {
		if !it.CreatedAt.Before(req.From) {
			window = append(window, it)
		}
	}
	end := min(off+f.pageSize, len(window))
	page := provider.Page{Items: slices.Clone(window[min(off, end):end]), Skipped: f.skipped}
	if end < len(window) {
		page.Next = "c" + strconv.Itoa(end)
		if f.cursorFn != nil {
			page.Next = f.cursorFn(end)
		}
	}
	return page, nil
}

// getterSource adds single-item reads to fakeSource.
type getterSource struct{ *fakeSource }

func (g getterSource) Get(ctx context.Context, id string) (diff.Item, error) {
	g.gets.Add(1)
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.popErr(); err != nil {
		return diff.Item{}, err
	}
	for _, it := range g.items {
		if it.ID == id {
			return it, nil
		}
	}
	return diff.Item{}, fmt.Errorf("get %s: %w", id, provider.ErrNotFound)
}

var now0 = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

func testConfig() Config {
	return Config{
		Name: "src", Provider: "fake", Kind: "payment",
		Interval: time.Minute, DiscoveryOverlap: 10 * time.Minute, Lookback: 30 * 24 * time.Hour,
		OpenRefresh: 0, OpenMaxAge: 30 * 24 * time.Hour, SettleWindow: 0,
		RateLimit: 1000, Baseline: "silent", MaxPages: 100, RetryFor: time.Minute,
	}
}

func newStore(t *testing.T) *bbolt.Store {
	t.Helper()
	st, err := bbolt.Open(filepath.Join(t.TempDir(), "w.db"), bbolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

type testPoller struct {
	*Poller
	store *bbolt.Store
	clock *time.Time
}

func newTestPoller(t *testing.T, cfg Config, src provider.Source) testPoller {
	t.Helper()
	st := newStore(t)
	p := New(cfg, src, st, "payments", slog.New(slog.NewTextHandler(io.Discard, nil)))
	clock := now0
	p.now = func() time.Time { return clock }
	return testPoller{p, st, &clock}
}

// meta returns the source's metadata, ending the test if the store fails.
func (tp testPoller) meta(t *testing.T) state.Meta {
	t.Helper()
	m, err := tp.store.Meta(t.Context(), "src")
	if err != nil {
		t.Fatalf("Meta(src): %v", err)
	}
	return m
}

// counts returns how many items the store holds of the source and how many are open.
func (tp testPoller) counts(t *testing.T) (items, open int) {
	t.Helper()
	items, open, err := tp.store.Counts("src")
	if err != nil {
		t.Fatalf("Counts(src): %v", err)
	}
	return items, open
}

// outboxLen returns how many messages wait in the outbox.
func (tp testPoller) outboxLen(t *testing.T) int {
	t.Helper()
	n, _, err := tp.store.OutboxStats(t.Context())
	if err != nil {
		t.Fatalf("OutboxStats(): %v", err)
	}
	return n
}

// drained returns and deletes every outbox message.
func (tp testPoller) drained(t *testing.T) []event.Event {
	t.Helper()
	entries, err := tp.store.Pending(t.Context(), 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var out []event.Event
	var seqs []uint64
	for _, e := range entries {
		ev, err := event.Decode(e.Msg.Body)
		if err != nil {
			t.Fatal(err)
		}
		if e.Msg.ID != ev.ID {
			t.Fatalf("message id %s, event id %s", e.Msg.ID, ev.ID)
		}
		if want := event.Subject("payments", "src", ev.Data.Kind, ev.Data.Current.State); e.Msg.Subject != want {
			t.Fatalf("subject %s, want %s", e.Msg.Subject, want)
		}
		out = append(out, ev)
		seqs = append(seqs, e.Seq)
	}
	if err := tp.store.Delete(t.Context(), seqs); err != nil {
		t.Fatal(err)
	}
	return out
}

func transitions(evs []event.Event) string {
	var parts []string
	for _, e := range evs {
		prev := "nil"
		if e.Data.Previous != nil {
			prev = e.Data.Previous.Status
		}
		parts = append(parts, fmt.Sprintf("%s:%s>%s#%d", e.Data.ID, prev, e.Data.Current.Status, e.Data.Sequence))
	}
	return strings.Join(parts, " ")
}

func TestSilentBaselineThenTransitions(t *testing.T) {
	src := &fakeSource{pageSize: 2}
	for i := range 5 {
		src.add(fmt.Sprintf("p%d", i), "NEW", now0.Add(-time.Duration(5-i)*time.Hour))
	}
	src.add("old", "DONE", now0.Add(-40*24*time.Hour)) // beyond lookback
	tp := newTestPoller(t, testConfig(), getterSource{src})
	ctx := t.Context()

	if err := tp.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if evs := tp.drained(t); len(evs) != 0 {
		t.Fatalf("silent baseline published %s", transitions(evs))
	}
	items, open, err := tp.store.Counts("src")
	if err != nil || items != 5 || open != 5 {
		t.Fatalf("after baseline: %d items, %d open, %v; want 5 5 (the item beyond lookback is not tracked)", items, open, err)
	}
	meta := tp.meta(t)
	if !meta.BaselineDone || !meta.HighWater.Equal(now0.Add(-time.Hour)) {
		t.Fatalf("meta after baseline = %+v", meta)
	}

	// An old open item moves, a new item appears, an item fails.
	*tp.clock = now0.Add(time.Minute)
	src.set("p0", "WORK")
	src.set("p3", "FAIL")
	src.add("p5", "NEW", now0.Add(30*time.Second))
	if err := tp.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	got := transitions(tp.drained(t))
	want := "p5:nil>NEW#1 p0:NEW>WORK#2 p3:NEW>FAIL#2"
	if got != want {
		t.Fatalf("events %s, want %s", got, want)
	}

	// Nothing changed: nothing published, and p3 (final) is no longer re-read.
	*tp.clock = now0.Add(2 * time.Minute)
	gets := src.gets.Load()
	if err := tp.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if evs := tp.drained(t); len(evs) != 0 {
		t.Fatalf("idle cycle published %s", transitions(evs))
	}
	if n := src.gets.Load() - gets; n != 4 {
		t.Fatalf("idle cycle re-read %d items by id, want 4: the open p0 p1 p2 p4 (discovery saw p5)", n)
	}
}

func TestEmitBaselinePublishesFirstSight(t *testing.T) {
	src := &fakeSource{pageSize: 10}
	src.add("a", "NEW", now0.Add(-time.Hour))
	src.add("b", "DONE", now0.Add(-2*time.Hour))
	cfg := testConfig()
	cfg.Baseline = "emit"
	tp := newTestPoller(t, cfg, src)
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	evs := tp.drained(t)
	if got := transitions(evs); got != "a:nil>NEW#1 b:nil>DONE#1" {
		t.Fatalf("events %s", got)
	}
	d := evs[1].Data
	if !d.Terminal || d.Previous != nil || d.Current.State != "completed" || d.Source != "src" || d.Provider != "fake" ||
		string(d.Item) != `{"id":"b"}` || !d.ObservedAt.Equal(now0) || evs[1].Source != "watcher/src" {
		t.Fatalf("event data %+v", d)
	}
}

func TestIdleCycleCostsOneRequest(t *testing.T) {
	src := &fakeSource{pageSize: 2}
	for i := range 9 {
		src.add(fmt.Sprintf("p%d", i), "DONE", now0.Add(-time.Duration(9-i)*24*time.Hour))
	}
	tp := newTestPoller(t, testConfig(), src)
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := src.pages.Load(); n != 5 {
		t.Fatalf("baseline read %d pages, want 5", n)
	}
	before := src.pages.Load()
	*tp.clock = now0.Add(time.Minute)
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := src.pages.Load() - before; n != 1 {
		t.Fatalf("idle cycle read %d pages, want 1", n)
	}
}

func TestLateVisibleItemWithinOverlapIsFound(t *testing.T) {
	src := &fakeSource{pageSize: 10}
	src.add("a", "NEW", now0.Add(-time.Minute))
	cfg := testConfig()
	cfg.Baseline = "emit"
	tp := newTestPoller(t, cfg, src)
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	tp.drained(t)
	// Created before the high-water mark, but visible only now.
	src.add("late", "NEW", now0.Add(-5*time.Minute))
	*tp.clock = now0.Add(time.Minute)
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := transitions(tp.drained(t)); got != "late:nil>NEW#1" {
		t.Fatalf("events %s", got)
	}
}

func TestMalformedPageLeavesStateUntouched(t *testing.T) {
	src := &fakeSource{pageSize: 2}
	for i := range 4 {
		src.add(fmt.Sprintf("p%d", i), "NEW", now0.Add(-time.Duration(4-i)*time.Hour))
	}
	cfg := testConfig()
	cfg.Baseline = "emit"
	cfg.RetryFor = time.Nanosecond // give up at once
	tp := newTestPoller(t, cfg, src)
	src.failNext(&provider.MalformedError{Err: errors.New("unexpected end of JSON input")})
	err := tp.Poll(t.Context())
	var me *provider.MalformedError
	if !errors.As(err, &me) {
		t.Fatalf("err = %v, want a MalformedError", err)
	}
	if n := tp.outboxLen(t); n != 0 {
		t.Fatalf("outbox has %d entries after a failed first page", n)
	}
	if items, _ := tp.counts(t); items != 0 {
		t.Fatalf("%d records after a failed first page", items)
	}
	if h := tp.Health(); h.Err == nil || h.Failures != 1 {
		t.Fatalf("health %+v", h)
	}
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if evs := tp.drained(t); len(evs) != 4 {
		t.Fatalf("%d events after recovery, want 4", len(evs))
	}
	if h := tp.Health(); h.Err != nil || h.Failures != 0 || !h.LastSuccess.Equal(now0) {
		t.Fatalf("health %+v", h)
	}
}

func TestSkippedItemsDoNotStopThePage(t *testing.T) {
	src := &fakeSource{pageSize: 10, skipped: []provider.Skipped{{ID: "bad", Reason: "no createDate"}}}
	src.add("good", "NEW", now0.Add(-time.Hour))
	cfg := testConfig()
	cfg.Baseline = "emit"
	tp := newTestPoller(t, cfg, src)
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := transitions(tp.drained(t)); got != "good:nil>NEW#1" {
		t.Fatalf("events %s", got)
	}
}

func TestRepeatingCursorEndsTheWalk(t *testing.T) {
	src := &fakeSource{pageSize: 1, cursorFn: func(int) string { return "c1" }}
	for i := range 3 {
		src.add(fmt.Sprintf("p%d", i), "NEW", now0.Add(-time.Duration(3-i)*time.Hour))
	}
	tp := newTestPoller(t, testConfig(), src)
	err := tp.Poll(t.Context())
	if err == nil || !strings.Contains(err.Error(), `repeated cursor "c1"`) {
		t.Fatalf("err = %v", err)
	}
	if meta := tp.meta(t); meta.BaselineDone {
		t.Fatal("an aborted baseline was marked done")
	}
}

func TestMaxPages(t *testing.T) {
	src := &fakeSource{pageSize: 1}
	for i := range 5 {
		src.add(fmt.Sprintf("p%d", i), "NEW", now0.Add(-time.Duration(5-i)*time.Hour))
	}
	cfg := testConfig()
	cfg.MaxPages = 3
	tp := newTestPoller(t, cfg, src)
	err := tp.Poll(t.Context())
	if err == nil || !strings.Contains(err.Error(), "stopped after 3 pages (max_pages)") {
		t.Fatalf("err = %v", err)
	}
}

func TestRetriesTemporaryFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{pageSize: 10}
		src.add("a", "NEW", now0.Add(-time.Hour))
		cfg := testConfig()
		cfg.Baseline = "emit"
		tp := newTestPoller(t, cfg, src)
		tp.now = func() time.Time { return time.Now().UTC() }
		src.failNext(
			&provider.StatusError{Code: 500},
			&provider.StatusError{Code: 429, RetryAfter: 7 * time.Second},
			&provider.MalformedError{Err: io.ErrUnexpectedEOF},
		)
		start := time.Now()
		if err := tp.Poll(t.Context()); err != nil {
			t.Fatal(err)
		}
		if n := src.pages.Load(); n != 4 {
			t.Fatalf("%d page requests, want 4 (3 failures, 1 success)", n)
		}
		if waited := time.Since(start); waited < 7*time.Second {
			t.Fatalf("waited %v in all; Retry-After asked for 7s", waited)
		}
		if got := transitions(tp.drained(t)); got != "a:nil>NEW#1" {
			t.Fatalf("events %s", got)
		}
	})
}

func TestAuthFailureIsNotRetried(t *testing.T) {
	src := &fakeSource{pageSize: 10}
	src.add("a", "NEW", now0.Add(-time.Hour))
	tp := newTestPoller(t, testConfig(), src)
	src.failNext(&provider.StatusError{Code: 401, Message: "code 401: Malformed authorization."})
	err := tp.Poll(t.Context())
	var se *provider.StatusError
	if !errors.As(err, &se) || !se.Auth() {
		t.Fatalf("err = %v", err)
	}
	if n := src.pages.Load(); n != 1 {
		t.Fatalf("%d requests, want 1", n)
	}
}

func TestRunPollsAtOnceThenEveryInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{pageSize: 10}
		tp := newTestPoller(t, testConfig(), src)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- tp.Run(ctx) }()
		synctest.Wait()
		if n := src.pages.Load(); n != 1 {
			t.Fatalf("%d polls at start, want 1", n)
		}
		time.Sleep(time.Minute + 7*time.Second) // the interval plus the most jitter can add
		synctest.Wait()
		if n := src.pages.Load(); n != 2 {
			t.Fatalf("%d polls after one interval, want 2", n)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

func TestWindowRefreshWithoutGetter(t *testing.T) {
	src := &fakeSource{pageSize: 2}
	for i := range 6 {
		src.add(fmt.Sprintf("p%d", i), "DONE", now0.Add(-time.Duration(10-i)*24*time.Hour))
	}
	src.set("p1", "NEW") // the one open item, 9 days old
	tp := newTestPoller(t, testConfig(), src)
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	src.set("p1", "FAIL")
	*tp.clock = now0.Add(time.Minute)
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := transitions(tp.drained(t)); got != "p1:NEW>FAIL#2" {
		t.Fatalf("events %s", got)
	}
	if _, open := tp.counts(t); open != 0 {
		t.Fatalf("%d open items, want 0", open)
	}
}

func TestOpenItemsPastMaxAgeStall(t *testing.T) {
	src := &fakeSource{pageSize: 10}
	src.add("young", "NEW", now0.Add(-time.Hour))
	src.add("ancient", "NEW", now0.Add(-20*24*time.Hour))
	cfg := testConfig()
	cfg.OpenMaxAge = 10 * 24 * time.Hour
	tp := newTestPoller(t, cfg, getterSource{src})
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	*tp.clock = now0.Add(time.Minute)
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	open, err := tp.store.OpenItems(t.Context(), "src")
	if err != nil {
		t.Fatalf("OpenItems(src): %v", err)
	}
	if len(open) != 1 || open[0].ID != "young" {
		t.Fatalf("open items %+v, want only young", open)
	}
	recs, err := tp.store.Load(t.Context(), "src", []string{"ancient"})
	if err != nil {
		t.Fatalf("Load(src, ancient): %v", err)
	}
	if r := recs["ancient"]; r == nil || !r.Stalled {
		t.Fatalf("ancient record %+v, want stalled", r)
	}
}

func TestFullOutboxPutsOffTheCycle(t *testing.T) {
	src := &fakeSource{pageSize: 10}
	src.add("a", "NEW", now0.Add(-time.Hour))
	src.add("b", "NEW", now0.Add(-2*time.Hour))
	cfg := testConfig()
	cfg.Baseline = "emit"
	cfg.MaxOutbox = 2
	tp := newTestPoller(t, cfg, src)
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	src.set("a", "DONE")
	*tp.clock = now0.Add(time.Minute)
	pages := src.pages.Load()
	if err := tp.Poll(t.Context()); !errors.Is(err, ErrOutboxFull) {
		t.Fatalf("err = %v, want ErrOutboxFull", err)
	}
	if src.pages.Load() != pages {
		t.Fatal("polled the provider with a full outbox")
	}
	if evs := tp.drained(t); len(evs) != 2 {
		t.Fatalf("%d events, want the 2 first sights", len(evs))
	}
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := transitions(tp.drained(t)); got != "a:NEW>DONE#2" {
		t.Fatalf("events after the outbox drained: %s", got)
	}
}

func TestRebaselineRecordsWithoutEvents(t *testing.T) {
	src := &fakeSource{pageSize: 2}
	for i := range 4 {
		src.add(fmt.Sprintf("p%d", i), "NEW", now0.Add(-time.Duration(4-i)*time.Hour))
	}
	cfg := testConfig()
	cfg.Baseline = "emit"
	tp := newTestPoller(t, cfg, getterSource{src})
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := len(tp.drained(t)); n != 4 {
		t.Fatalf("%d first-sight events, want 4", n)
	}
	src.set("p0", "WORK")
	src.set("p3", "DONE")
	tp.RequestRebaseline()
	*tp.clock = now0.Add(time.Minute)
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if evs := tp.drained(t); len(evs) != 0 {
		t.Fatalf("rebaseline published %s", transitions(evs))
	}
	if meta := tp.meta(t); meta.Rebaseline || !meta.BaselineDone {
		t.Fatalf("meta after rebaseline %+v", meta)
	}
	src.set("p0", "DONE")
	*tp.clock = now0.Add(2 * time.Minute)
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := transitions(tp.drained(t)); got != "p0:WORK>DONE#3" {
		t.Fatalf("events after rebaseline: %s", got)
	}
}
