package poller

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/internal/logtest"
	"github.com/payments-watcher/watcher/poller/provider"
)

// quirkyList is a provider list that behaves in ways documents allow without showing
// them: it may list oldest first, ignore the date filter, or serve fewer items a page
// than asked (still paging on with a cursor). Cursors are offsets into the filtered,
// ordered list.
type quirkyList struct {
	fakeSource  // its items, add and set; Page is quirkyList's own
	oldestFirst bool
	ignoreFrom  bool
	pageCap     int
}

func (q *quirkyList) Page(_ context.Context, req provider.Request) (provider.Page, error) {
	q.fakeSource.pages.Add(1)
	q.mu.Lock()
	defer q.mu.Unlock()
	var list []diff.Item
	for _, it := range q.items {
		if q.ignoreFrom || !it.CreatedAt.Before(req.From) {
			list = append(list, it)
		}
	}
	if q.oldestFirst {
		slices.Reverse(list)
	}
	off := 0
	if req.Cursor != "" {
		off, _ = strconv.Atoi(req.Cursor)
	}
	size := q.pageSize
	if q.pageCap > 0 {
		size = min(size, q.pageCap)
	}
	end := min(off+size, len(list))
	page := provider.Page{Items: slices.Clone(list[min(off, end):end])}
	if end < len(list) {
		page.Next = strconv.Itoa(end)
	}
	return page, nil
}

// TestWalkCopesWithQuirkyLists runs the same story against lists in every combination
// of order, date filter and page cap: a silent baseline, then a new item, an old
// item's change and a change deep in the history. Every combination must yield
// exactly the same events; the quirks are reported as anomalies.
func TestWalkCopesWithQuirkyLists(t *testing.T) {
	for _, tc := range []struct {
		name                    string
		oldestFirst, ignoreFrom bool
		pageSize, pageCap       int
		want                    []string // anomaly kinds counted
	}{
		{name: "documented", pageSize: 3},
		{name: "page size 1", pageSize: 1},
		{name: "oldest first", oldestFirst: true, pageSize: 3, want: []string{AnomalyUnordered}},
		{name: "oldest first, one a page", oldestFirst: true, pageSize: 1, want: []string{AnomalyUnordered}},
		{name: "date filter ignored", ignoreFrom: true, pageSize: 3, want: []string{AnomalyDateFilterIgnored}},
		{name: "oldest first, date filter ignored", oldestFirst: true, ignoreFrom: true, pageSize: 3,
			want: []string{AnomalyUnordered, AnomalyDateFilterIgnored}},
		{name: "oldest first, date filter ignored, one a page", oldestFirst: true, ignoreFrom: true, pageSize: 1,
			want: []string{AnomalyUnordered, AnomalyDateFilterIgnored}},
		{name: "silent page cap", pageSize: 4, pageCap: 2, want: []string{AnomalyShortPage}},
		{name: "everything", oldestFirst: true, ignoreFrom: true, pageSize: 4, pageCap: 2,
			want: []string{AnomalyUnordered, AnomalyDateFilterIgnored, AnomalyShortPage}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			list := &quirkyList{fakeSource: fakeSource{pageSize: tc.pageSize}, oldestFirst: tc.oldestFirst, ignoreFrom: tc.ignoreFrom, pageCap: tc.pageCap}
			for i := range 8 {
				list.add(fmt.Sprintf("h%d", i), "NEW", now0.Add(-time.Duration(8-i)*24*time.Hour))
			}
			cfg := testConfig()
			cfg.PageSize = tc.pageSize
			cfg.OpenRefresh = time.Minute
			tp := newTestPoller(t, cfg, list)
			obs := &resultRecorder{}
			tp.Observe(obs)
			var logs logtest.Buffer
			tp.log = slog.New(slog.NewTextHandler(&logs, nil))
			if err := tp.Poll(t.Context()); err != nil {
				t.Fatal(err)
			}
			if evs := tp.drained(t); len(evs) != 0 {
				t.Fatalf("silent baseline published %s", transitions(evs))
			}
			for cycle := 1; cycle <= 3; cycle++ {
				*tp.clock = now0.Add(time.Duration(cycle) * 2 * time.Minute)
				switch cycle {
				case 1:
					list.add("n1", "NEW", now0.Add(time.Minute))
					list.set("h7", "WORK")
				case 2:
					list.set("h0", "DONE")
					list.add("n2", "FAIL", now0.Add(3*time.Minute))
				case 3:
					list.set("n1", "DONE")
				}
				if err := tp.Poll(t.Context()); err != nil {
					t.Fatalf("cycle %d: %v", cycle, err)
				}
			}
			// The order across items follows the list's order; each item's own events
			// come in sequence order whatever the list does.
			evs := tp.drained(t)
			slices.SortStableFunc(evs, func(a, b event.Event) int { return strings.Compare(a.Data.ID, b.Data.ID) })
			got := transitions(evs)
			want := "h0:NEW>DONE#2 h7:NEW>WORK#2 n1:nil>NEW#1 n1:NEW>DONE#2 n2:nil>FAIL#1"
			if got != want {
				t.Errorf("events %s\nwant   %s", got, want)
			}
			lines := logs.Take()
			for _, k := range Anomalies {
				obs.mu.Lock()
				n := obs.anomalies[k]
				obs.mu.Unlock()
				if slices.Contains(tc.want, k) != (n > 0) {
					t.Errorf("anomaly %s counted %d times; want it counted: %v", k, n, slices.Contains(tc.want, k))
				}
				if logged := strings.Count(strings.Join(lines, "\n"), "anomaly="+k); logged > 1 || (n > 0) != (logged == 1) {
					t.Errorf("anomaly %s logged %d times (counted %d); want once when seen", k, logged, n)
				}
			}
		})
	}
}

// TestDiscoveryThatFindsNothingKnownFails: a date filter read differently by the
// provider (a wrong format) can filter out every item. A discovery walk that lists
// none of the items it listed before fails the cycle instead of finding nothing, for
// ever, in silence.
func TestDiscoveryThatFindsNothingKnownFails(t *testing.T) {
	src := &fakeSource{pageSize: 3}
	src.add("a", "NEW", now0.Add(-time.Hour))
	tp := newTestPoller(t, testConfig(), src)
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	// The provider now reads the bound as far in the future: nothing matches.
	src.mu.Lock()
	hidden := src.items
	src.items = nil
	src.mu.Unlock()
	*tp.clock = now0.Add(time.Minute)
	err := tp.Poll(t.Context())
	if err == nil || !strings.Contains(err.Error(), "returned no item created since") || !strings.Contains(err.Error(), "date filter") {
		t.Fatalf("discovery of an empty list after items were listed: %v", err)
	}
	// Restored: the next cycle succeeds and the high-water mark stayed.
	src.mu.Lock()
	src.items = hidden
	src.mu.Unlock()
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// scriptedList answers each page request with the next of its pages.
type scriptedList struct{ pages []provider.Page }

func (s *scriptedList) Page(_ context.Context, req provider.Request) (provider.Page, error) {
	if len(s.pages) == 0 {
		return provider.Page{}, nil
	}
	p := s.pages[0]
	s.pages = s.pages[1:]
	return p, nil
}

// TestShortPageFollowedByRepeatsIsNoAnomaly: items created during a walk shift offset
// pages, so the page after a short last page may repeat its end; only an item not seen
// before shows a page cap.
func TestShortPageFollowedByRepeatsIsNoAnomaly(t *testing.T) {
	item := func(id string, ago time.Duration) diff.Item {
		st, _ := statuses.Status("NEW", "")
		return diff.Item{Kind: "payment", ID: id, Status: st, CreatedAt: now0.Add(-ago), Raw: []byte(`{}`)}
	}
	for _, tc := range []struct {
		name string
		next []diff.Item
		want int
	}{
		{"repeat", []diff.Item{item("b", 2*time.Minute)}, 0},
		{"new item", []diff.Item{item("c", 3*time.Minute)}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &scriptedList{pages: []provider.Page{
				{Items: []diff.Item{item("a", time.Minute), item("b", 2*time.Minute)}, Next: "2"},
				{Items: tc.next, Next: "3"},
				{},
			}}
			cfg := testConfig()
			cfg.PageSize = 3
			tp := newTestPoller(t, cfg, src)
			obs := &resultRecorder{}
			tp.Observe(obs)
			if err := tp.Poll(t.Context()); err != nil {
				t.Fatal(err)
			}
			obs.mu.Lock()
			defer obs.mu.Unlock()
			if n := obs.anomalies[AnomalyShortPage]; n != tc.want {
				t.Errorf("short_page counted %d times, want %d", n, tc.want)
			}
		})
	}
}
