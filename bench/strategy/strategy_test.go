package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/sim"
	"github.com/payments-watcher/watcher/webhook"
)

// TestSmallRun runs the whole benchmark at a small scale and checks what must hold at
// any scale: no duplicate event, every event a subsequence of its item's truth, every
// final status seen once the engine stops, nothing published while idle, and an idle
// cycle costing exactly one discovery request per source.
func TestSmallRun(t *testing.T) {
	o := options{
		Seed: 7, History: 40, HistorySpan: 720 * time.Hour, OpenShare: 0.5, FailureRate: 0.3, Rate: 1,
		Delays:   sim.Delays{Min: 100 * time.Millisecond, Mean: 300 * time.Millisecond, Max: time.Second},
		Duration: 3 * time.Second, CatchUp: 10 * time.Second, IdleCycles: 3,
		Interval: 200 * time.Millisecond, OpenRefresh: time.Second, Lookback: 720 * time.Hour, OpenMaxAge: 720 * time.Hour,
		RateLimit: 1000, Naive: true, Slice: time.Second, Dir: t.TempDir(),
	}
	res, err := run(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	if !res.SameScenario {
		t.Errorf("the two simulators made different truths from the same seed")
	}
	if res.Truth == 0 || res.Watcher.Observed == 0 || res.Naive.Observed == 0 {
		t.Fatalf("nothing happened: %d truth transitions, %d watcher events, %d naive transitions", res.Truth, res.Watcher.Observed, res.Naive.Observed)
	}
	for _, v := range []struct {
		who string
		v   verdict
	}{{"watcher", res.Watcher}, {"naive", res.Naive}} {
		if v.v.DupIDs != 0 || v.v.DupSeqs != 0 {
			t.Errorf("%s: %d duplicate event ids, %d duplicate sequences: %v", v.who, v.v.DupIDs, v.v.DupSeqs, v.v.Examples)
		}
		if v.v.NotSubsequence != 0 {
			t.Errorf("%s: %d events are not a subsequence of the truth: %v", v.who, v.v.NotSubsequence, v.v.Examples)
		}
		if v.v.MissedFinal != 0 {
			t.Errorf("%s: %d of %d final statuses never observed: %v", v.who, v.v.MissedFinal, v.v.TruthFinal, v.v.Examples)
		}
	}
	if !res.Converged {
		t.Errorf("watcher had not seen every item's last status %s after the engine stopped", o.CatchUp)
	}
	if res.IdleEvents != 0 {
		t.Errorf("%d events committed while nothing changed", res.IdleEvents)
	}
	quiet := 0
	for _, s := range res.Sources {
		if len(s.Idle) != o.IdleCycles {
			t.Errorf("%s: %d idle cycles recorded, want %d", s.Name, len(s.Idle), o.IdleCycles)
		}
		for i, c := range s.Idle {
			if c.refresh == 0 {
				quiet++
				// Coindirect documents no page limit: until its server has served a full
				// page, a short page is followed by the empty page that proves the end.
				if want := idleDiscovery(s.Name); c.discovery < 1 || c.discovery > want {
					t.Errorf("%s: idle cycle %d with no item due made %d requests, want 1 to %d", s.Name, i+1, c.discovery, want)
				}
			}
		}
		if s.Discovery[phaseRun] == 0 || s.NaiveRequests[phaseRun] == 0 {
			t.Errorf("%s: %d watcher discovery and %d naive requests while the engine ran", s.Name, s.Discovery[phaseRun], s.NaiveRequests[phaseRun])
		}
		if s.Failures != 0 {
			t.Errorf("%s: %d failed cycles (%v)", s.Name, s.Failures, s.Other)
		}
	}
	if quiet == 0 {
		t.Error("no idle cycle without an open item due; the idle cost was not measured")
	}
	for msg, n := range res.Logs {
		t.Errorf("watcher logged %d x %s: %v", n, msg, res.LogLines[msg])
	}

	md := res.markdown("go run ./bench/strategy -history 40")
	for _, want := range []string{"| 1. requests per idle cycle (nothing new, no open item due) | exactly 1 per source | cpn 1 (", "| met |",
		"go run ./bench/strategy -history 40", "| coindirect |"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

func TestWriteSectionReplacesOnlyItsSection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	if err := os.WriteFile(path, []byte("# Benchmarks\n\nintro\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeSection(path, "main", "first run\n"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(readFile(t, path)+"\nanalysis\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeSection(path, "main", "second run\n"); err != nil {
		t.Fatal(err)
	}
	if err := writeSection(path, "other", "another section\n"); err != nil {
		t.Fatal(err)
	}
	begin, end := markers("main")
	ob, oe := markers("other")
	want := "# Benchmarks\n\nintro\n" + begin + "\n\nsecond run\n\n" + end + "\n\nanalysis\n" + ob + "\n\nanother section\n\n" + oe + "\n"
	if got := readFile(t, path); got != want {
		t.Fatalf("file:\n%s\nwant:\n%s", got, want)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestCheckFlagsWhatTheTruthContradicts(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(s int) time.Time { return start.Add(time.Duration(s) * time.Second) }
	ti, err := indexTruth([]sim.Transition{
		{Seq: 1, Provider: sim.ProviderCoindirect, Kind: "payment", ID: "new", To: "PENDING", At: at(0)},
		{Seq: 2, Provider: sim.ProviderCoindirect, Kind: "payment", ID: "new", From: "PENDING", To: "PROCESSING", At: at(1)},
		{Seq: 3, Provider: sim.ProviderCoindirect, Kind: "payment", ID: "new", From: "PROCESSING", To: "COMPLETE", At: at(2)},
		{Seq: 4, Provider: sim.ProviderCoindirect, Kind: "payment", ID: "old", From: "PENDING", To: "EXPIRED", At: at(3)},
		{Seq: 5, Provider: sim.ProviderCoindirect, Kind: "payment_transaction", ID: "tx", ParentID: "done", To: "UNCONFIRMED", At: at(4)},
	})
	if err != nil {
		t.Fatal(err)
	}
	ti.finalBefore = map[string]bool{sim.ProviderCoindirect + "/done": true}
	key := func(id string) itemKey { return itemKey{sim.ProviderCoindirect, "payment", "", id} }
	pending, complete := status{raw: "PENDING"}, status{raw: "COMPLETE"}
	good := []observation{
		{key: key("new"), eventID: "e1", cur: pending, seq: 1, at: at(0).Add(500 * time.Millisecond)},
		// PROCESSING was missed between two reads: collapsed, not an error.
		{key: key("new"), eventID: "e2", prev: &pending, cur: complete, seq: 2, at: at(4)},
		{key: itemKey{sim.ProviderCoindirect, "payment_transaction", "done", "tx"}, eventID: "e3", cur: status{raw: "UNCONFIRMED"}, seq: 1, at: at(10)},
	}
	v := check(good, ti, 0)
	if v.DupIDs+v.DupSeqs+v.NotSubsequence != 0 || v.MissedFinal != 1 || v.TruthFinal != 2 || v.Collapsed != 2 {
		t.Errorf("verdict %+v: want only old's EXPIRED missed, PROCESSING and EXPIRED collapsed", v)
	}
	if len(v.DelayNew) != 2 || v.DelayNew[1] != 2*time.Second || len(v.DelayFinal) != 1 || v.DelayFinal[0] != 6*time.Second {
		t.Errorf("delays new %v final %v, want [500ms 2s] and [6s]", v.DelayNew, v.DelayFinal)
	}

	bad := append(slices.Clone(good),
		observation{key: key("new"), eventID: "e2", prev: &pending, cur: complete, seq: 3, at: at(5)},       // same id again
		observation{key: key("old"), eventID: "e4", prev: &complete, cur: pending, seq: 2, at: at(5)},       // not in its truth
		observation{key: key("unchanged"), eventID: "e5", prev: &pending, cur: complete, seq: 2, at: at(5)}, // never changed
	)
	v = check(bad, ti, 0)
	if v.DupIDs != 1 || v.NotSubsequence != 3 || v.NotInTruth != 1 {
		t.Errorf("verdict %+v: want 1 duplicate id and 3 events outside the truth (1 of an unchanged item)", v)
	}
}

// idleDiscovery is the most requests an idle discovery walk of the named source may
// make: one page, and for coindirect the empty page after a short one.
func idleDiscovery(source string) int {
	if strings.Contains(source, "coindirect") {
		return 2
	}
	return 1
}

// smallHookOptions is TestSmallRun's scale with webhooks in mode, their faults raised
// so that every kind of bad delivery happens in a few seconds.
func smallHookOptions(t *testing.T, mode string) options {
	o := options{
		Seed: 7, History: 40, HistorySpan: 720 * time.Hour, OpenShare: 0.5, FailureRate: 0.3, Rate: 1,
		Delays:   sim.Delays{Min: 100 * time.Millisecond, Mean: 300 * time.Millisecond, Max: time.Second},
		Duration: 3 * time.Second, CatchUp: 10 * time.Second, IdleCycles: 3,
		Interval: 200 * time.Millisecond, OpenRefresh: time.Second, OpenRefreshMax: 4 * time.Second,
		Lookback: 720 * time.Hour, OpenMaxAge: 720 * time.Hour,
		RateLimit: 1000, Naive: mode == hooksHints, Slice: time.Second, Dir: t.TempDir(),
		Hooks: defaultHookOptions(),
	}
	o.Hooks.Mode = mode
	o.Hooks.Faults.DropRate = 0.3
	o.Hooks.Faults.MaxDelay = 500 * time.Millisecond
	o.Hooks.Faults.InjectRate = 0.2
	o.Hooks.Faults.ReplayRate = 0.1
	o.Hooks.Faults.DuplicateRate = 0.1
	return o
}

// TestHintsRun runs the hints mode at a small scale and checks what holds at any
// scale: the events are polling's (every one in the truth, no duplicate, no final
// status missed) however the deliveries misbehave; forged deliveries are refused, and
// none of them, nor any replay, makes watcher read anything.
func TestHintsRun(t *testing.T) {
	res, err := run(t.Context(), smallHookOptions(t, hooksHints))
	if err != nil {
		t.Fatal(err)
	}
	v, h := res.Watcher, res.Hooks
	if h == nil {
		t.Fatal("no webhook figures in a hints run")
	}
	if v.DupIDs+v.DupSeqs != 0 || v.NotSubsequence != 0 || v.MissedFinal != 0 {
		t.Errorf("watcher: %d + %d duplicates, %d events not in the truth, %d of %d finals missed: %v",
			v.DupIDs, v.DupSeqs, v.NotSubsequence, v.MissedFinal, v.TruthFinal, v.Examples)
	}
	if got := strings.Join(h.Sources, ","); got != "coindirect,cpn,onramp" {
		t.Errorf("sources with hints %q, want coindirect,cpn,onramp", got)
	}
	badSig := 0
	for _, s := range h.Sources {
		badSig += h.Listener[s][webhook.ResultBadSignature]
		if h.Listener[s][webhook.ResultAccepted] == 0 {
			t.Errorf("%s: no delivery accepted: %v", s, h.Listener[s])
		}
	}
	injected := h.ByKind["injected, made-up id"][webhook.ResultBadSignature] + h.ByKind["injected, real id, another final status"][webhook.ResultBadSignature]
	if injected == 0 || badSig < injected {
		t.Errorf("%d injected deliveries refused as bad signatures, %d bad signatures counted by the listener: %v", injected, badSig, h.ByKind)
	}
	if h.RefusedHinted != 0 || h.UnknownGets != 0 {
		t.Errorf("%d forged or replayed deliveries accepted, %d reads of unknown ids", h.RefusedHinted, h.UnknownGets)
	}
	if h.Hinted == 0 || h.Unmatched != 0 {
		t.Errorf("%d hinted changes; %d accepted deliveries match no change of the truth", h.Hinted, h.Unmatched)
	}
	md := res.markdown("go run ./bench/strategy -webhooks hints")
	for _, want := range []string{"| 5a. delay change -> event, hinted changes", "| 6c. single-item reads of ids the simulator never made (answered 404) | 0 | 0 | met |", "| coindirect |"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

// TestWebhooksOnlyRun runs the only mode at a small scale and checks that the naive
// consumer's failures are real: with deliveries dropped it misses final statuses, and
// it emits events for forged deliveries that are not in the truth.
func TestWebhooksOnlyRun(t *testing.T) {
	res, err := run(t.Context(), smallHookOptions(t, hooksOnly))
	if err != nil {
		t.Fatal(err)
	}
	c := res.Consumer
	if c == nil {
		t.Fatal("no consumer figures in an only run")
	}
	if !c.Settled || c.Events == 0 || c.TruthFinal == 0 {
		t.Fatalf("settled %v, %d events, %d final statuses in the truth", c.Settled, c.Events, c.TruthFinal)
	}
	if c.MissedFinal == 0 || c.NeverDelivered == 0 {
		t.Errorf("%d of %d final statuses missed (%d never delivered) with %.0f%% of deliveries dropped", c.MissedFinal, c.TruthFinal,
			c.NeverDelivered, c.Faults.DropRate*100)
	}
	if c.FromMadeUp == 0 || c.NotInTruth < c.FromMadeUp {
		t.Errorf("%d events from made-up ids, %d events not in the truth", c.FromMadeUp, c.NotInTruth)
	}
	if c.InOrder == 0 || c.InOrder+c.OutOfOrder+c.Repeated > c.FromGenuine {
		t.Errorf("genuine events: %d, of which %d in order, %d out of order, %d repeated", c.FromGenuine, c.InOrder, c.OutOfOrder, c.Repeated)
	}
	md := res.markdown("go run ./bench/strategy -webhooks only")
	if !strings.Contains(md, "| missed final statuses: never delivered") || !strings.Contains(md, "**missed**") {
		t.Errorf("report:\n%s", md)
	}
}

// analyzeHooks credits a change with the first genuine delivery the listener accepted
// for it, finds the change a body reports by its status and render time, and counts a
// forged delivery the listener accepted as a read it caused.
func TestAnalyzeHooksMatchesDeliveriesWithChanges(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(s int) time.Time { return start.Add(time.Duration(s) * time.Second) }
	p := sim.ProviderCoindirect
	ti, err := indexTruth([]sim.Transition{
		{Seq: 1, Provider: p, Kind: "payment", ID: "a", From: "PENDING", To: "PROCESSING", At: at(1)},
		{Seq: 2, Provider: p, Kind: "payment", ID: "a", From: "PROCESSING", To: "COMPLETE", At: at(5)},
		{Seq: 3, Provider: p, Kind: "payment", ID: "b", From: "PENDING", To: "EXPIRED", At: at(2)},
	})
	if err != nil {
		t.Fatal(err)
	}
	v := check([]observation{
		{key: itemKey{p, "payment", "", "a"}, eventID: "e1", prev: &status{raw: "PENDING"}, cur: status{raw: "PROCESSING"}, seq: 2, at: at(1).Add(100 * time.Millisecond)},
		{key: itemKey{p, "payment", "", "a"}, eventID: "e2", prev: &status{raw: "PROCESSING"}, cur: status{raw: "COMPLETE"}, seq: 3, at: at(9)},
	}, ti, 0)
	ds := []sim.WebhookDelivery{
		// a's first change: its POST accepted, its duplicate refused as a replay.
		{Provider: p, Kind: sim.WebhookChange, ID: "a", Status: "PROCESSING", Rendered: at(1), Sent: at(1).Add(50 * time.Millisecond), Answer: webhook.ResultAccepted},
		{Provider: p, Kind: sim.WebhookDuplicate, ID: "a", Status: "PROCESSING", Rendered: at(1), Sent: at(1).Add(60 * time.Millisecond), Answer: webhook.ResultReplayed},
		// a's second change, held back; polling read it first.
		{Provider: p, Kind: sim.WebhookChange, ID: "a", Status: "COMPLETE", Rendered: at(5), Delay: 4 * time.Second, Sent: at(10), Answer: webhook.ResultCoalesced},
		// b's change dropped; an injected delivery for b refused, a replay accepted.
		{Provider: p, Kind: sim.WebhookChange, ID: "b", Status: "EXPIRED", Rendered: at(2), Dropped: true},
		{Provider: p, Kind: sim.WebhookInjected, ID: "b", Status: "COMPLETE", Forged: true, Rendered: at(2), Sent: at(2), Answer: webhook.ResultBadSignature},
		{Provider: p, Kind: sim.WebhookReplay, ID: "a", Status: "PROCESSING", Rendered: at(1), Sent: at(6), Answer: webhook.ResultAccepted},
		// A body that no change of the item produced.
		{Provider: p, Kind: sim.WebhookChange, ID: "a", Status: "CANCELLED", Rendered: at(6), Sent: at(6), Answer: webhook.ResultAccepted},
	}
	r := analyzeHooks(ds, ti, v, 0)
	if r.Changes != 3 || r.Hinted != 2 || r.Unmatched != 1 || r.RefusedHinted != 1 {
		t.Errorf("changes %d, hinted %d, unmatched %d, refused but read %d; want 3, 2, 1, 1", r.Changes, r.Hinted, r.Unmatched, r.RefusedHinted)
	}
	if len(r.DelayPrompt) != 1 || r.DelayPrompt[0] != 100*time.Millisecond || len(r.DelayHeld) != 1 || r.DelayHeld[0] != 4*time.Second {
		t.Errorf("prompt %v, held %v; want [100ms] and [4s]", r.DelayPrompt, r.DelayHeld)
	}
	if r.PolledFirst != 1 || len(r.HintToEvent) != 1 || r.HintToEvent[0] != 50*time.Millisecond {
		t.Errorf("polled first %d, hint -> event %v; want 1 and [50ms]", r.PolledFirst, r.HintToEvent)
	}
	if r.TopFinal != 2 || r.TopMissed != 1 {
		t.Errorf("final top-level items %d, missed %d; want 2 and 1 (b)", r.TopFinal, r.TopMissed)
	}
	if got := r.ByKind["injected, real id, another final status"][webhook.ResultBadSignature]; got != 1 {
		t.Errorf("by kind %v", r.ByKind)
	}
}

// checkConsumer tells apart what a trusting consumer gets wrong: a final status never
// delivered, one overwritten by a late delivery, an event for a made-up item, a status
// repeated by a replay, and an earlier status arriving late.
func TestCheckConsumerFindsTheNaiveConsumersFailures(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(s int) time.Time { return start.Add(time.Duration(s) * time.Second) }
	p := sim.ProviderCoindirect
	tr := func(seq int, id, from, to string, s int) sim.Transition {
		return sim.Transition{Seq: uint64(seq), Provider: p, Kind: "payment", ID: id, From: from, To: to, At: at(s)}
	}
	ti, err := indexTruth([]sim.Transition{
		tr(1, "ok", "PENDING", "PROCESSING", 1), tr(2, "ok", "PROCESSING", "COMPLETE", 2),
		tr(3, "lost", "PENDING", "EXPIRED", 1),
		tr(4, "late", "PENDING", "PROCESSING", 1), tr(5, "late", "PROCESSING", "COMPLETE", 2),
	})
	if err != nil {
		t.Fatal(err)
	}
	key := func(id string) itemKey { return itemKey{p, "payment", "", id} }
	st := func(raw string) status { return status{raw: raw} }
	ev := func(id, cur string, s int) consumerEvent { return consumerEvent{key: key(id), cur: st(cur), at: at(s)} }
	events := []consumerEvent{
		ev("ok", "PROCESSING", 1), ev("ok", "COMPLETE", 3),
		ev("late", "COMPLETE", 3), ev("late", "PROCESSING", 4), // held back, overtaken
		ev("madeup", "COMPLETE", 3),
		ev("ok", "PROCESSING", 5), // a replay
	}
	last := map[itemKey]status{key("ok"): st("PROCESSING"), key("late"): st("PROCESSING"), key("madeup"): st("COMPLETE")}
	cause := func(i int, kind string, madeUp bool) sim.WebhookDelivery {
		return sim.WebhookDelivery{Kind: kind, MadeUp: madeUp, Forged: kind == sim.WebhookInjected, Answer: fmt.Sprintf("event %d", i)}
	}
	ds := []sim.WebhookDelivery{cause(0, sim.WebhookChange, false), cause(1, sim.WebhookChange, false), cause(2, sim.WebhookChange, false),
		cause(3, sim.WebhookChange, false), cause(4, sim.WebhookInjected, true), cause(5, sim.WebhookReplay, false)}
	var r consumerResult
	checkConsumer(&r, events, last, ds, ti, 0)
	if r.TruthFinal != 3 || r.MissedFinal != 3 || r.NeverDelivered != 1 || r.Overwritten != 2 {
		t.Errorf("finals %d, missed %d (never delivered %d, overwritten %d); want 3, 3 (1, 2)", r.TruthFinal, r.MissedFinal, r.NeverDelivered, r.Overwritten)
	}
	if r.FromMadeUp != 1 || r.FromReplay != 1 || r.FromGenuine != 4 || r.InOrder != 3 || r.OutOfOrder != 1 || r.Repeated != 0 {
		t.Errorf("made up %d, replay %d, genuine %d: in order %d, out of order %d, repeated %d; want 1, 1, 4: 3, 1, 0",
			r.FromMadeUp, r.FromReplay, r.FromGenuine, r.InOrder, r.OutOfOrder, r.Repeated)
	}
	if r.NotInTruth != 3 || r.FalseFinal != 1 || r.WrongLast != 4 {
		t.Errorf("not in the truth %d, false finals %d, wrong last %d; want 3 (made up, late, replay), 1, 4", r.NotInTruth, r.FalseFinal, r.WrongLast)
	}
}
