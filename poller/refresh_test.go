package poller

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

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

func TestPeriodGrowsWithAge(t *testing.T) {
	const h = time.Hour
	cases := []struct {
		state   diff.State
		age     time.Duration
		byState map[diff.State]time.Duration
		max     time.Duration
		want    time.Duration
	}{
		// The defaults: open_refresh 5m, open_refresh_max 1h.
		{diff.Pending, 0, nil, h, 5 * time.Minute},
		{diff.Pending, 59 * time.Minute, nil, h, 5 * time.Minute},
		{diff.Pending, 2 * h, nil, h, 10 * time.Minute},
		{diff.Pending, 6 * h, nil, h, 30 * time.Minute},
		{diff.Pending, 12 * h, nil, h, h},
		{diff.Pending, 30 * 24 * h, nil, h, h},
		{diff.Processing, 10 * time.Minute, nil, h, 150 * time.Second},
		{diff.Processing, h, nil, h, 5 * time.Minute},
		{diff.Processing, 12 * h, nil, h, h},
		{Settling, 2 * h, nil, h, 30 * time.Minute},
		{"", 9 * h, nil, h, 45 * time.Minute}, // "" is settling
		{Settling, 24 * h, nil, h, h},
		// A cap below open_refresh means no growth beyond the base; a base above the cap
		// stays as it is.
		{diff.Pending, 30 * 24 * h, nil, time.Minute, 5 * time.Minute},
		{diff.Processing, 30 * 24 * h, map[diff.State]time.Duration{diff.Processing: 2 * h}, h, 2 * h},
		{diff.Processing, 2 * h, map[diff.State]time.Duration{diff.Processing: time.Minute}, h, 10 * time.Minute},
		// open_refresh_max 0: the state's period at every age.
		{diff.Pending, 30 * 24 * h, nil, 0, 5 * time.Minute},
		{Settling, 30 * 24 * h, nil, 0, 30 * time.Minute},
	}
	for _, c := range cases {
		cfg := testConfig()
		cfg.OpenRefresh, cfg.OpenRefreshMax, cfg.OpenRefreshByState = 5*time.Minute, c.max, c.byState
		p := New(cfg, &fakeSource{}, nil, "payments", nil)
		if got := p.period(c.state, c.age); got != c.want {
			t.Errorf("%q aged %v (max %v, by state %v): period %v, want %v", c.state, c.age, c.max, c.byState, got, c.want)
		}
	}
}

// An old open item is re-read once its grown period has passed, a young one at its
// state's period; open_refresh_max 0 re-reads both at the state's period.
func TestOldItemsAreReadLessOften(t *testing.T) {
	for _, c := range []struct {
		max  time.Duration
		want string
	}{
		{time.Hour, "[[young] [young] [young] [young] [young] [young] [young old]]"},
		{0, "[[old young] [old young] [old young] [old young] [old young] [old young] [old young]]"},
	} {
		t.Run(fmt.Sprint("max ", c.max), func(t *testing.T) {
			src := &fakeSource{pageSize: 100}
			src.add("old", "NEW", now0.Add(-48*time.Hour))
			src.add("young", "NEW", now0.Add(-15*time.Minute))
			src.add("newest", "DONE", now0) // sets the high-water mark
			g := &countingGetter{getterSource: getterSource{src}}
			tp := agedPoller(t, g, c.max)
			if got := readsAt(t, tp, g, 5, 10, 15, 20, 25, 30, 60); got != c.want {
				t.Fatalf("reads by id per cycle %v, want %s", got, c.want)
			}
		})
	}
}

// refreshWith runs one cycle's discovery, then refresh with the given budget.
func refreshWith(t *testing.T, tp testPoller, budget int) {
	t.Helper()
	meta := tp.meta(t)
	c := &cycle{meta: &meta, seen: map[string]struct{}{}}
	if _, err := tp.discover(t.Context(), &meta, c.seen); err != nil {
		t.Fatal(err)
	}
	c.discovered = time.Now()
	if err := tp.refresh(t.Context(), c, budget); err != nil {
		t.Fatal(err)
	}
}

// stragglerSource is thirty young processing items, a processing item per given age
// and 200 final items spread over 30 days: listing from a straggler's creation is a
// walk of much of the lookback.
func stragglerSource(ages ...time.Duration) *fakeSource {
	src := &fakeSource{pageSize: 10}
	for i := range 200 {
		src.add(fmt.Sprintf("f%03d", i), "DONE", now0.Add(-time.Duration(i)*215*time.Minute))
	}
	for i := range 30 {
		src.add(fmt.Sprintf("y%02d", i), "WORK", now0.Add(-2*time.Hour-time.Duration(i)*time.Minute))
	}
	for i, age := range ages {
		src.add(fmt.Sprintf("s%d", i), "WORK", now0.Add(-age))
	}
	return src
}

func TestStragglersAreReadByID(t *testing.T) {
	const day = 24 * time.Hour
	cfg := testConfig()
	cfg.PageSize = 10
	cfg.OpenRefresh = 10 * time.Minute // processing items every 5m
	src := stragglerSource(20 * day)
	g := &countingGetter{getterSource: getterSource{src}}
	tp := newTestPoller(t, cfg, g)
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	src.set("s0", "DONE")
	src.set("y07", "FAIL")
	*tp.clock = now0.Add(5*time.Minute + time.Second)
	before := src.pages.Load()
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Discovery is one page; the window of the thirty young items about four (they and
	// the final items of their hours); listing down to the straggler would be 17.
	if n := src.pages.Load() - before; n > 6 {
		t.Fatalf("%d list requests; the straggler dragged a walk of the lookback", n)
	}
	if ids := g.take(); fmt.Sprint(ids) != "[s0]" {
		t.Fatalf("read %v by id, want the straggler alone", ids)
	}
	if got := transitions(tp.drained(t)); got != "y07:WORK>FAIL#2 s0:WORK>DONE#2" {
		t.Fatalf("events %s", got)
	}
}

// Without reads by id the only plan is the window of every due item.
func TestStragglersWithoutGetterAreListed(t *testing.T) {
	cfg := testConfig()
	cfg.PageSize = 10
	cfg.OpenRefresh = 10 * time.Minute
	src := stragglerSource(20 * 24 * time.Hour)
	tp := newTestPoller(t, cfg, src)
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	src.set("s0", "DONE")
	*tp.clock = now0.Add(5*time.Minute + time.Second)
	before := src.pages.Load()
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := src.pages.Load() - before; n < 15 {
		t.Fatalf("%d list requests, want discovery and a window down to the straggler", n)
	}
	if got := transitions(tp.drained(t)); got != "s0:WORK>DONE#2" {
		t.Fatalf("events %s", got)
	}
}

// The stragglers' reads by id share what the window's pages left of the budget, the
// most overdue first (the oldest among equals); the rest wait for the next cycle.
func TestStragglersWithinBudget(t *testing.T) {
	const day = 24 * time.Hour
	cfg := testConfig()
	cfg.PageSize = 10
	cfg.OpenRefresh = 10 * time.Minute
	src := stragglerSource(10*day, 15*day, 20*day)
	g := &countingGetter{getterSource: getterSource{src}}
	tp := newTestPoller(t, cfg, g)
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	*tp.clock = now0.Add(5*time.Minute + time.Second)
	before := src.pages.Load()
	refreshWith(t, tp, 6)
	window := int(src.pages.Load()-before) - 1 // less discovery's page
	ids := g.take()
	if window+len(ids) > 6 {
		t.Fatalf("a window of %d pages and %d reads by id (%v) over a budget of 6", window, len(ids), ids)
	}
	// The young items' window is four pages: two reads by id are left, for the two
	// oldest stragglers.
	if window != 4 || fmt.Sprint(ids) != "[s2 s1]" {
		t.Fatalf("a window of %d pages, then read %v by id; want 4 pages, then [s2 s1]", window, ids)
	}
	// A budget the young items' window fills: were it listed, no straggler would be
	// read, this cycle or any other. Reads by id alone, the most overdue first: s0,
	// waiting since the last cycle, then, all read together last cycle, the oldest.
	*tp.clock = now0.Add(10*time.Minute + 2*time.Second)
	before = src.pages.Load()
	refreshWith(t, tp, 4)
	if n := src.pages.Load() - before; n != 1 {
		t.Fatalf("%d list requests with a budget of 4, want discovery alone", n)
	}
	if ids := g.take(); fmt.Sprint(ids) != "[s0 s2 s1 y29]" {
		t.Fatalf("read %v by id with a budget of 4, want [s0 s2 s1 y29]", ids)
	}
}

// An old item seen moving is re-read at its state's period again, its period growing
// from that change; one that does not move keeps its grown period.
func TestMovedItemsAreReadAtTheBasePeriod(t *testing.T) {
	src := &fakeSource{pageSize: 100}
	src.add("moving", "NEW", now0.Add(-48*time.Hour))
	src.add("still", "NEW", now0.Add(-48*time.Hour))
	src.add("newest", "DONE", now0) // sets the high-water mark
	g := &countingGetter{getterSource: getterSource{src}}
	tp := agedPoller(t, g, time.Hour)
	src.set("moving", "WORK")
	// At 60m both are due (open_refresh_max); "moving" is seen processing, so it is
	// due again at its processing period (2m30s) from then, "still" an hour later.
	if got, want := readsAt(t, tp, g, 60, 63, 66, 70, 120), "[[moving still] [moving] [moving] [moving] [moving still]]"; got != want {
		t.Fatalf("reads by id per cycle %v, want %s", got, want)
	}
}

// agedPoller returns a poller (open_refresh 5m, open_refresh_max maxPeriod, window lists
// made to look expensive) reading through g, after its baseline cycle.
func agedPoller(t *testing.T, g *countingGetter, maxPeriod time.Duration) testPoller {
	t.Helper()
	cfg := testConfig()
	cfg.OpenRefresh, cfg.OpenRefreshMax = 5*time.Minute, maxPeriod
	cfg.PageSize = 1
	tp := newTestPoller(t, cfg, g)
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	return tp
}

// readsAt polls tp at each of the given minutes after now0 (plus a second) and returns
// the ids read by id in each cycle.
func readsAt(t *testing.T, tp testPoller, g *countingGetter, minutes ...time.Duration) string {
	t.Helper()
	var got []string
	for _, at := range minutes {
		*tp.clock = now0.Add(at*time.Minute + time.Second)
		if err := tp.Poll(t.Context()); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprint(g.take()))
	}
	return fmt.Sprint(got)
}
