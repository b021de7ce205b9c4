package poller

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller/provider"
)

// forgetRecorder records Observer.Forgotten and Observer.Anomaly calls; the tests
// call Poll on their own goroutine only.
type forgetRecorder struct {
	nopObserver
	forgotten int
	anomalies []string
}

func (r *forgetRecorder) Forgotten(source string, n int) { r.forgotten += n }
func (r *forgetRecorder) Anomaly(source, kind string)    { r.anomalies = append(r.anomalies, kind) }

// forgetConfig tracks a day: items created more than 24h10m ago are beyond the
// reach of every walk.
func forgetConfig() Config {
	cfg := testConfig()
	cfg.Lookback = 24 * time.Hour
	cfg.DiscoveryOverlap = 10 * time.Minute
	cfg.OpenMaxAge = 48 * time.Hour
	return cfg
}

// pollAt sets the poller's clock to at and runs a cycle, ending the test on an error.
func (tp testPoller) pollAt(t *testing.T, at time.Time) {
	t.Helper()
	*tp.clock = at
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatalf("Poll at %s: %v", at.Format(time.TimeOnly), err)
	}
}

// stored returns the ids of the source's records, in id order.
func (tp testPoller) stored(t *testing.T) []string {
	t.Helper()
	var out []string
	err := tp.store.ForEach(t.Context(), "src", func(r diff.Record) error {
		out = append(out, r.ID)
		return nil
	})
	if err != nil {
		t.Fatalf("ForEach(src): %v", err)
	}
	return out
}

// TestForgetsFinalItemsBeyondLookback: once an item is created longer ago than
// lookback and discovery_overlap, its record is removed if it is final, kept if it is
// still open (open_max_age is longer); items within lookback are kept. The removal is
// counted.
func TestForgetsFinalItemsBeyondLookback(t *testing.T) {
	src := &fakeSource{pageSize: 10}
	src.add("final-old", "DONE", now0.Add(-21*time.Hour))
	src.add("open-old", "NEW", now0.Add(-20*time.Hour))
	src.add("final-young", "DONE", now0.Add(-time.Hour))
	tp := newTestPoller(t, forgetConfig(), getterSource{src})
	rec := &forgetRecorder{}
	tp.Observe(rec)

	tp.pollAt(t, now0)
	if got, want := tp.stored(t), []string{"final-old", "final-young", "open-old"}; !slices.Equal(got, want) {
		t.Fatalf("records after the baseline = %q, want %q (all within lookback)", got, want)
	}

	tp.pollAt(t, now0.Add(5*time.Hour)) // final-old is 26h old, open-old 25h
	if got, want := tp.stored(t), []string{"final-young", "open-old"}; !slices.Equal(got, want) {
		t.Fatalf("records 26h after final-old's creation = %q, want %q", got, want)
	}
	if _, open := tp.counts(t); open != 1 {
		t.Errorf("open items = %d, want 1 (open-old)", open)
	}
	if rec.forgotten != 1 {
		t.Errorf("Forgotten reported %d records, want 1", rec.forgotten)
	}
	// The creation times that window costs are estimated from leave the record out.
	if !tp.ages.loaded {
		t.Fatal("the refresh of open-old did not load the age index; the test shows nothing of it")
	}
	var fresh ageIndex
	if err := fresh.load(t.Context(), tp.store, "src"); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(tp.ages.hours, fresh.hours) {
		t.Errorf("age index after the pass = %v, want %v as the store holds it", tp.ages.hours, fresh.hours)
	}
}

// TestForgetsStalledItems: an open item older than open_max_age is no longer re-read;
// once beyond lookback its record is removed like a final one's.
func TestForgetsStalledItems(t *testing.T) {
	src := &fakeSource{pageSize: 10}
	src.add("stalled", "NEW", now0.Add(-20*time.Hour))
	src.add("open", "NEW", now0.Add(-time.Hour))
	cfg := forgetConfig()
	cfg.OpenMaxAge = 12 * time.Hour
	tp := newTestPoller(t, cfg, getterSource{src})

	tp.pollAt(t, now0)
	tp.pollAt(t, now0.Add(time.Minute))
	if got := tp.stored(t); len(got) != 2 {
		t.Fatalf("records before stalled passes lookback = %q, want both", got)
	}
	tp.pollAt(t, now0.Add(5*time.Hour))
	if got, want := tp.stored(t), []string{"open"}; !slices.Equal(got, want) {
		t.Fatalf("records once stalled is 25h old = %q, want %q", got, want)
	}
}

// TestForgetRunsHourlyAndAfterAStart: a pass runs at the first cycle, then at the
// first cycle an hour or more after the last pass, not at the cycles between; a
// poller started anew over the same store runs one at its first cycle.
func TestForgetRunsHourlyAndAfterAStart(t *testing.T) {
	src := &fakeSource{pageSize: 10}
	src.add("a", "DONE", now0.Add(-23*time.Hour-30*time.Minute))
	src.add("b", "DONE", now0.Add(-23*time.Hour))
	src.add("c", "DONE", now0.Add(-22*time.Hour))
	tp := newTestPoller(t, forgetConfig(), getterSource{src})

	steps := []struct {
		at   time.Duration // after now0
		want []string
	}{
		{0, []string{"a", "b", "c"}},                // first pass: nothing 24h10m old yet
		{50 * time.Minute, []string{"a", "b", "c"}}, // a is 24h20m old; no pass before the hour
		{time.Hour, []string{"b", "c"}},             // the hourly pass: a goes, b is 24h old
		{110 * time.Minute, []string{"b", "c"}},     // b is 24h50m old; the next pass is at 2h
	}
	for _, s := range steps {
		tp.pollAt(t, now0.Add(s.at))
		if got := tp.stored(t); !slices.Equal(got, s.want) {
			t.Fatalf("records after the cycle at now0+%s = %q, want %q", s.at, got, s.want)
		}
	}

	// Started anew (a restart) at 1h50m: its first cycle runs a pass at once.
	restarted := New(forgetConfig(), getterSource{src}, tp.store, "payments", slog.New(slog.NewTextHandler(io.Discard, nil)))
	at := now0.Add(110 * time.Minute)
	restarted.now = func() time.Time { return at }
	if err := restarted.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got, want := tp.stored(t), []string{"c"}; !slices.Equal(got, want) {
		t.Fatalf("records after a restarted poller's first cycle = %q, want %q", got, want)
	}
}

// ignoresFrom is a provider list that ignores the date filter (every walk gets the
// whole list), with single-item reads.
type ignoresFrom struct{ getterSource }

func (s ignoresFrom) Page(ctx context.Context, req provider.Request) (provider.Page, error) {
	req.From = time.Time{}
	return s.fakeSource.Page(ctx, req)
}

// TestForgottenItemListedAgainIsNotPublished: a provider that ignores the date filter
// returns a forgotten item again; the walk leaves it out as created before its floor,
// so it is neither published as a first sight nor tracked again.
func TestForgottenItemListedAgainIsNotPublished(t *testing.T) {
	src := &fakeSource{pageSize: 10}
	src.add("old", "DONE", now0.Add(-20*time.Hour))
	src.add("new", "NEW", now0.Add(-time.Hour))
	tp := newTestPoller(t, forgetConfig(), ignoresFrom{getterSource{src}})
	rec := &forgetRecorder{}
	tp.Observe(rec)

	tp.pollAt(t, now0)
	tp.pollAt(t, now0.Add(5*time.Hour))
	if got, want := tp.stored(t), []string{"new"}; !slices.Equal(got, want) {
		t.Fatalf("records after the pass = %q, want %q", got, want)
	}
	tp.drained(t)

	rec.anomalies = nil
	tp.pollAt(t, now0.Add(5*time.Hour+time.Minute))
	if evs := tp.drained(t); len(evs) != 0 {
		t.Errorf("the cycle after old was forgotten published %s, want nothing", transitions(evs))
	}
	if got, want := tp.stored(t), []string{"new"}; !slices.Equal(got, want) {
		t.Errorf("records after old was listed again = %q, want %q", got, want)
	}
	if !slices.Contains(rec.anomalies, AnomalyDateFilterIgnored) {
		t.Errorf("anomalies %q: the list did not return old again, so the test shows nothing", strings.Join(rec.anomalies, ","))
	}
}

// TestForgetsABacklogShareByShare: a pass with more candidates than one walk over the
// records collects forgets them all, a share at a time, and keeps the rest.
func TestForgetsABacklogShareByShare(t *testing.T) {
	defer func(n int) { forgetScan = n }(forgetScan)
	forgetScan = 3
	src := &fakeSource{pageSize: 50}
	var want []string
	for i := range 10 {
		src.add(fmt.Sprintf("old%d", i), "DONE", now0.Add(-20*time.Hour-time.Duration(i)*time.Minute))
		id := fmt.Sprintf("young%d", i)
		src.add(id, "DONE", now0.Add(-time.Duration(i+1)*time.Minute))
		want = append(want, id)
	}
	tp := newTestPoller(t, forgetConfig(), getterSource{src})
	rec := &forgetRecorder{}
	tp.Observe(rec)

	tp.pollAt(t, now0)
	tp.pollAt(t, now0.Add(5*time.Hour))
	if got := tp.stored(t); !slices.Equal(got, want) {
		t.Fatalf("records after a pass over 10 candidates, 3 a share = %q, want %q", got, want)
	}
	if rec.forgotten != 10 {
		t.Errorf("Forgotten reported %d records, want 10", rec.forgotten)
	}
}

// TestForgetKeepsWhatARefreshWindowReaches: with open_max_age longer than lookback,
// an open item older than lookback is re-read by a list of its creation window, which
// holds the items created after it; those are kept, so that the window does not take
// them for new ones and publish them again. Older final items are forgotten.
func TestForgetKeepsWhatARefreshWindowReaches(t *testing.T) {
	src := &fakeSource{pageSize: 10} // no reads by id: open items are re-read by windows
	src.add("final-older", "DONE", now0.Add(-22*time.Hour))
	src.add("open-old", "NEW", now0.Add(-20*time.Hour))
	src.add("final-within", "DONE", now0.Add(-18*time.Hour))
	cfg := forgetConfig()
	cfg.OpenRefresh = time.Minute
	tp := newTestPoller(t, cfg, src)

	tp.pollAt(t, now0)
	tp.pollAt(t, now0.Add(10*time.Hour)) // every item is older than lookback now
	if got, want := tp.stored(t), []string{"final-within", "open-old"}; !slices.Equal(got, want) {
		t.Fatalf("records after the pass = %q, want %q (final-within is in open-old's window)", got, want)
	}
	tp.drained(t)

	pages := src.pages.Load()
	tp.pollAt(t, now0.Add(10*time.Hour+5*time.Minute))
	if src.pages.Load()-pages < 2 {
		t.Fatal("the cycle listed no window for open-old; the test shows nothing")
	}
	if evs := tp.drained(t); len(evs) != 0 {
		t.Errorf("the window of open-old published %s, want nothing", transitions(evs))
	}
}
