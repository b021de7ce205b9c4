package poller

import (
	"testing"
	"time"
)

// A hint the full queue drops changes nothing; the item's refresh reads it.
func TestDroppedHintIsCaughtByPolling(t *testing.T) {
	src := getterSource{&fakeSource{pageSize: 10}}
	src.add("a", "NEW", now0.Add(-2*time.Hour))
	src.add("b", "NEW", now0.Add(-time.Hour))
	cfg := testConfig()
	cfg.HintQueue = 1
	tp := newTestPoller(t, cfg, src)
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	src.set("a", "DONE")
	src.set("b", "DONE")
	if got := tp.Hint("b"); got != HintQueued {
		t.Fatalf("Hint(b) = %s, want %s", got, HintQueued)
	}
	if got := tp.Hint("b"); got != HintCoalesced {
		t.Fatalf("Hint(b) again = %s, want %s", got, HintCoalesced)
	}
	if got := tp.Hint("a"); got != HintDropped {
		t.Fatalf("Hint(a) on a full queue = %s, want %s", got, HintDropped)
	}
	gets := src.gets.Load()
	if err := tp.readHints(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := src.gets.Load() - gets; n != 1 {
		t.Fatalf("reading the hints made %d reads by id, want 1", n)
	}
	if got := transitions(tp.drained(t)); got != "b:NEW>DONE#2" {
		t.Fatalf("after the hint: %s", got)
	}
	*tp.clock = tp.clock.Add(time.Minute) // open_refresh 0: a is due
	if err := tp.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := transitions(tp.drained(t)); got != "a:NEW>DONE#2" {
		t.Fatalf("polling after the dropped hint: %s", got)
	}
}

// Hints before the baseline are discarded: the baseline records silently.
func TestHintBeforeBaselineIsDiscarded(t *testing.T) {
	src := getterSource{&fakeSource{pageSize: 10}}
	src.add("a", "NEW", now0.Add(-time.Hour))
	tp := newTestPoller(t, testConfig(), src)
	tp.Hint("a")
	if err := tp.readHints(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := src.gets.Load(); n != 0 {
		t.Fatalf("%d reads by id before the baseline", n)
	}
	if n := tp.outboxLen(t); n != 0 {
		t.Fatalf("%d events before the baseline", n)
	}
}
