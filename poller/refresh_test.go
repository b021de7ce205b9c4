package poller

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"context"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller/provider"
)

// countingGetter records which ids were read by id.
type countingGetter struct {
	getterSource
	mu  sync.Mutex
	ids []string
}

func (c *countingGetter) Get(ctx context.Context, id string) (diff.Item, error) {
	c.mu.Lock()
	c.ids = append(c.ids, id)
	c.mu.Unlock()
	return c.getterSource.Get(ctx, id)
}

func (c *countingGetter) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	ids := c.ids
	c.ids = nil
	return ids
}

func TestRefreshScheduleByState(t *testing.T) {
	src := &fakeSource{pageSize: 100}
	src.add("pend", "NEW", now0.Add(-48*time.Hour))
	src.add("proc", "WORK", now0.Add(-47*time.Hour))
	src.add("newest", "DONE", now0.Add(-time.Hour)) // sets the high-water mark
	g := &countingGetter{getterSource: getterSource{src}}
	cfg := testConfig()
	cfg.OpenRefresh = 10 * time.Minute
	tp := newTestPoller(t, cfg, g)
	if err := tp.Poll(t.Context()); err != nil { // baseline: discovery reads both
		t.Fatal(err)
	}
	if ids := g.take(); len(ids) != 0 {
		t.Fatalf("baseline re-read %v by id", ids)
	}
	// Discovery no longer reaches them (they are below the high-water mark): from now
	// on only refresh reads them, processing every 5m and pending every 10m.
	var got []string
	for i := 1; i <= 4; i++ {
		*tp.clock = now0.Add(time.Duration(i)*5*time.Minute + time.Second)
		if err := tp.Poll(t.Context()); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprint(g.take()))
	}
	want := "[[proc] [pend proc] [proc] [pend proc]]"
	if fmt.Sprint(got) != want {
		t.Fatalf("re-reads per cycle %v, want %s", got, want)
	}
}

func TestRefreshBudgetMostOverdueFirst(t *testing.T) {
	src := &fakeSource{pageSize: 100}
	for i := range 5 {
		src.add(fmt.Sprintf("p%d", i), "NEW", now0.Add(-time.Duration(100-i)*time.Hour))
	}
	src.add("newest", "DONE", now0.Add(-time.Hour)) // sets the high-water mark
	g := &countingGetter{getterSource: getterSource{src}}
	cfg := testConfig()
	cfg.RateLimit = 100
	cfg.Interval = 25 * time.Millisecond // budget: 100/s x 25ms x 0.8 = 2 requests, 1 of them discovery
	cfg.PageSize = 1                     // make a window list look expensive
	tp := newTestPoller(t, cfg, g)
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := 1; i <= 6; i++ {
		*tp.clock = now0.Add(time.Duration(i) * time.Second)
		if err := tp.Poll(t.Context()); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprint(g.take()))
	}
	// One re-read per cycle, the least recently read first (oldest first on ties).
	want := "[[p0] [p1] [p2] [p3] [p4] [p0]]"
	if fmt.Sprint(got) != want {
		t.Fatalf("re-reads per cycle %v, want %s", got, want)
	}
}

func TestRefreshPrefersACheapWindow(t *testing.T) {
	src := &fakeSource{pageSize: 10}
	for i := range 10 {
		src.add(fmt.Sprintf("p%d", i), "NEW", now0.Add(-time.Duration(30-i)*time.Hour))
	}
	g := &countingGetter{getterSource: getterSource{src}}
	cfg := testConfig()
	cfg.PageSize = 10
	tp := newTestPoller(t, cfg, g)
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	src.set("p3", "DONE")
	*tp.clock = now0.Add(time.Minute)
	pages := src.pages.Load()
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if ids := g.take(); len(ids) != 0 {
		t.Fatalf("read %v by id; one window list of 10 items is cheaper than 10 reads", ids)
	}
	if n := src.pages.Load() - pages; n != 2 {
		t.Fatalf("%d list requests, want 2 (discovery and one window page)", n)
	}
	if got := transitions(tp.drained(t)); got != "p3:NEW>DONE#2" {
		t.Fatalf("events %s", got)
	}
}

// vanishingSource leaves one item out of every list, as a provider whose list lags.
type vanishingSource struct {
	*countingGetter
	hidden string
}

func (v *vanishingSource) Page(ctx context.Context, req provider.Request) (provider.Page, error) {
	p, err := v.countingGetter.Page(ctx, req)
	var kept []diff.Item
	for _, it := range p.Items {
		if it.ID != v.hidden {
			kept = append(kept, it)
		}
	}
	p.Items = kept
	return p, err
}

func TestItemMissingFromWindowIsReadByID(t *testing.T) {
	src := &fakeSource{pageSize: 10}
	for i := range 6 {
		src.add(fmt.Sprintf("p%d", i), "NEW", now0.Add(-time.Duration(30-i)*time.Hour))
	}
	g := &countingGetter{getterSource: getterSource{src}}
	cfg := testConfig()
	cfg.PageSize = 10
	tp := newTestPoller(t, cfg, g)
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	v := &vanishingSource{countingGetter: g, hidden: "p2"}
	tp.src = v
	src.set("p2", "FAIL")
	*tp.clock = now0.Add(time.Minute)
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if ids := g.take(); fmt.Sprint(ids) != "[p2]" {
		t.Fatalf("read %v by id, want only the missing p2", ids)
	}
	if got := transitions(tp.drained(t)); got != "p2:NEW>FAIL#2" {
		t.Fatalf("events %s", got)
	}
}

func TestWindowRefreshesEveryOpenItemItHolds(t *testing.T) {
	src := &fakeSource{pageSize: 10}
	for i := range 10 {
		src.add(fmt.Sprintf("p%d", i), "NEW", now0.Add(-time.Duration(30-i)*time.Hour))
	}
	g := &countingGetter{getterSource: getterSource{src}}
	cfg := testConfig()
	cfg.PageSize = 10
	cfg.OpenRefresh = 10 * time.Minute
	tp := newTestPoller(t, cfg, g)
	if err := tp.Poll(t.Context()); err != nil { // baseline reads all ten
		t.Fatal(err)
	}
	// Half of them were last read three minutes later than the others (as by-id reads
	// spread over cycles leave them), so their periods end three minutes apart.
	for i := 5; i < 10; i++ {
		tp.refreshed[fmt.Sprintf("p%d", i)] = now0.Add(3 * time.Minute)
	}
	pagesAt := func(at time.Duration) int32 {
		t.Helper()
		*tp.clock = now0.Add(at)
		before := src.pages.Load()
		if err := tp.Poll(t.Context()); err != nil {
			t.Fatal(err)
		}
		if ids := g.take(); len(ids) != 0 {
			t.Fatalf("at +%v read %v by id; a window of 10 items is cheaper", at, ids)
		}
		return src.pages.Load() - before
	}
	if n := pagesAt(10*time.Minute + time.Second); n != 2 {
		t.Fatalf("at +10m: %d list requests, want 2 (discovery and the window of p0-p4)", n)
	}
	// The window read p5-p9 too: they are not due again three minutes later.
	if n := pagesAt(13*time.Minute + time.Second); n != 1 {
		t.Fatalf("at +13m: %d list requests, want 1 (discovery alone)", n)
	}
	if n := pagesAt(20*time.Minute + time.Second); n != 2 {
		t.Fatalf("at +20m: %d list requests, want 2 (discovery and one window for all ten)", n)
	}
}

// arrivingSource adds an item while a window list is being walked, as a provider
// taking payments during a long refresh.
type arrivingSource struct {
	*fakeSource
	windowFrom time.Time
	arrive     func()
}

func (a *arrivingSource) Page(ctx context.Context, req provider.Request) (provider.Page, error) {
	if req.Cursor != "" && !req.From.After(a.windowFrom) && a.arrive != nil {
		a.arrive()
		a.arrive = nil
	}
	return a.fakeSource.Page(ctx, req)
}

func TestDiscoveryComesRoundDuringALongWindow(t *testing.T) {
	src := &fakeSource{pageSize: 2}
	for i := range 8 {
		src.add(fmt.Sprintf("p%d", i), "NEW", now0.Add(-time.Duration(30-i)*time.Hour))
	}
	src.add("newest", "DONE", now0.Add(-time.Hour))
	cfg := testConfig()
	cfg.PageSize = 2
	cfg.Interval = time.Nanosecond // every page of the window is an interval long
	a := &arrivingSource{fakeSource: src, windowFrom: now0.Add(-30 * time.Hour)}
	tp := newTestPoller(t, cfg, a)
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	*tp.clock = now0.Add(time.Minute)
	src.set("p0", "DONE") // the oldest: the window reaches back to it
	a.arrive = func() { src.add("fresh", "NEW", now0.Add(30*time.Second)) }
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if a.arrive != nil {
		t.Fatal("the refresh did not walk a window of several pages")
	}
	got := transitions(tp.drained(t))
	if !strings.Contains(got, "fresh:nil>NEW#1") || !strings.Contains(got, "p0:NEW>DONE#2") {
		t.Fatalf("events %s; want the item that arrived during the window and p0's change", got)
	}
}
