package sim

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

// allowed lists every transition the documented state machines permit, per provider
// and kind: from -> to ("" is the item's appearance). CPN addendum-only changes are
// checked separately.
var allowed = map[string]map[string]map[string][]string{
	ProviderCPN: {
		"payment": {
			"":                       {"CREATED", "CRYPTO_FUNDS_PENDING", "FAILED"},
			"CREATED":                {"CRYPTO_FUNDS_PENDING", "FAILED"},
			"CRYPTO_FUNDS_PENDING":   {"FIAT_PAYMENT_INITIATED", "FAILED"},
			"FIAT_PAYMENT_INITIATED": {"COMPLETED", "FAILED"},
		},
		"payment_rfi": {
			"":                     {"INFORMATION_REQUIRED"},
			"INFORMATION_REQUIRED": {"IN_REVIEW"},
			"IN_REVIEW":            {"APPROVED", "FAILED"},
		},
		"payment_onchain_transaction": {
			"":            {"CREATED"},
			"CREATED":     {"PENDING"},
			"PENDING":     {"BROADCASTED"},
			"BROADCASTED": {"COMPLETED", "FAILED"},
		},
		"payment_refund": {
			"":        {"CREATED", "COMPLETED", "FAILED"},
			"CREATED": {"COMPLETED", "FAILED"},
		},
	},
	ProviderRamp: {
		"ramp_session": {"": {"PENDING"}, "PENDING": {"COMPLETED", "FAILED", "EXPIRED"}},
	},
	ProviderSettlements: {
		"settlement":        {"": {"pending"}, "pending": {"settled"}},
		"settlement_detail": {"": {"pending"}, "pending": {"complete"}},
	},
	ProviderStripe: {
		"onramp_session": {
			"":                       {"initialized"},
			"initialized":            {"requires_payment", "rejected"},
			"requires_payment":       {"fulfillment_processing", "rejected"},
			"fulfillment_processing": {"fulfillment_complete"},
		},
	},
	ProviderCoindirect: {
		"payment": {
			"":           {"PENDING"},
			"PENDING":    {"PROCESSING", "EXPIRED", "CANCELLED"},
			"PROCESSING": {"COMPLETE", "UNDERPAID"},
		},
		"payment_transaction": {"": {"UNCONFIRMED"}, "UNCONFIRMED": {"CONFIRMED"}},
	},
}

var terminal = map[string][]string{
	ProviderCPN:        {"COMPLETED", "FAILED"},
	ProviderCoindirect: {"COMPLETE", "UNDERPAID", "EXPIRED", "CANCELLED"},
}

func scenario(seed int64) Config {
	return Config{
		Seed: seed, Rate: 2, History: 400, HistorySpan: 2 * time.Hour, OpenShare: 0.2,
		FailureRate: 0.3, HistoryTruth: true, TruthLimit: 1_000_000,
		Delays: Delays{Min: 100 * time.Millisecond, Mean: 5 * time.Second, Max: time.Minute},
	}
}

// runScenario steps a simulator through d in steps of step and returns its truth.
func runScenario(t *testing.T, cfg Config, d, step time.Duration) []Transition {
	t.Helper()
	clock := &testClock{t: testStart}
	cfg.Now = clock.Now
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	end := testStart.Add(d)
	for now := testStart; now.Before(end); now = now.Add(step) {
		s.Step(now)
	}
	s.Step(end)
	return s.Truth()
}

func TestMachinesMakeOnlyDocumentedTransitions(t *testing.T) {
	truth := runScenario(t, scenario(1), time.Hour, time.Second)
	if len(truth) < 10000 {
		t.Fatalf("only %d transitions", len(truth))
	}
	type key struct{ provider, kind, id string }
	last := map[key]Transition{}
	seen := map[string]bool{} // "provider kind from>to"
	lateNested := map[string]int{}
	for i, tr := range truth {
		if tr.Seq != uint64(i+1) {
			t.Fatalf("entry %d has seq %d", i, tr.Seq)
		}
		k := key{tr.Provider, tr.Kind, tr.ID}
		prev, ok := last[k]
		if !ok && tr.From != "" || ok && tr.From != prev.To {
			t.Fatalf("%+v does not continue from %+v", tr, prev)
		}
		if ok && tr.At.Before(prev.At) {
			t.Fatalf("%+v is earlier than the item's previous change %+v", tr, prev)
		}
		last[k] = tr
		if tr.From == tr.To {
			// Only CPN's statusAddendum changes without the status, and only while CREATED.
			if tr.Provider != ProviderCPN || tr.Kind != "payment" || tr.To != "CREATED" || tr.FromAddendum == tr.ToAddendum {
				t.Fatalf("%+v changes nothing documented", tr)
			}
			seen[tr.Provider+" addendum "+tr.FromAddendum+">"+tr.ToAddendum] = true
			continue
		}
		if tr.ToAddendum != "" && tr.To != "CREATED" {
			t.Fatalf("%+v: statusAddendum outside CREATED", tr)
		}
		if !slices.Contains(allowed[tr.Provider][tr.Kind][tr.From], tr.To) {
			t.Fatalf("%+v is not a documented transition", tr)
		}
		seen[tr.Provider+" "+tr.Kind+" "+tr.From+">"+tr.To] = true
		if tr.ParentID != "" {
			parent, ok := last[key{tr.Provider, "payment", tr.ParentID}]
			if tr.From == "" && ok && slices.Contains(terminal[tr.Provider], parent.To) {
				lateNested[tr.Provider+" "+tr.Kind]++
			}
		}
	}
	// Every documented edge happens at least once.
	for provider, kinds := range allowed {
		for kind, froms := range kinds {
			for from, tos := range froms {
				for _, to := range tos {
					if !seen[provider+" "+kind+" "+from+">"+to] {
						t.Errorf("%s %s %q -> %q never happened", provider, kind, from, to)
					}
				}
			}
		}
	}
	for _, e := range []string{ProviderCPN + " addendum >IN_MANUAL_REVIEW", ProviderCPN + " addendum IN_MANUAL_REVIEW>"} {
		if !seen[e] {
			t.Errorf("%s never happened", e)
		}
	}
	// Nested items appear after the parent's final status: CPN refunds, Coindirect
	// transactions.
	for _, k := range []string{ProviderCPN + " payment_refund", ProviderCoindirect + " payment_transaction"} {
		if lateNested[k] == 0 {
			t.Errorf("no %s appeared after its payment's final status", k)
		}
	}
}

func TestSameSeedSameTruth(t *testing.T) {
	a := runScenario(t, scenario(7), 15*time.Minute, time.Second)
	b := runScenario(t, scenario(7), 15*time.Minute, time.Second)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("two runs with the same seed made different transitions")
	}
	// Processing in due order makes the truth independent of how Step calls are spaced.
	c := runScenario(t, scenario(7), 15*time.Minute, 4*time.Minute+3*time.Second)
	if !reflect.DeepEqual(a, c) {
		t.Fatal("stepping every 4m3s made different transitions than stepping every second")
	}
	d := runScenario(t, scenario(8), 15*time.Minute, time.Second)
	if reflect.DeepEqual(a, d) {
		t.Fatal("another seed made the same transitions")
	}
}

func TestHistoryIsOrderedAndLeavesTheOpenShareOpen(t *testing.T) {
	const n = 3000
	h := newHarness(t, Config{Seed: 3, History: n, HistorySpan: 30 * 24 * time.Hour, OpenShare: 0.1, FailureRate: 0.1})
	start, span := testStart.UnixMilli(), (30 * 24 * time.Hour).Milliseconds()
	for _, p := range h.sim.provs {
		if len(p.st.items) != n {
			t.Fatalf("%s: %d items", p.id, len(p.st.items))
		}
		open := 0
		for i, it := range p.st.items {
			if it.created < start-span || it.created >= start {
				t.Fatalf("%s item %d created at %d, outside the span", p.id, i, it.created)
			}
			if i > 0 && it.created < p.st.items[i-1].created {
				t.Fatalf("%s item %d created before item %d", p.id, i, i-1)
			}
			if it.due != 0 {
				open++
				if it.due <= start {
					t.Fatalf("%s item %d is due at %d, before the start", p.id, i, it.due)
				}
			}
		}
		if share := float64(open) / n; share < 0.08 || share > 0.12 {
			t.Errorf("%s: %.3f of history open, want about 0.1", p.id, share)
		}
		for i, it := range p.st.items {
			// Final items may still move only shortly after they ended (a settle window);
			// an item that ended days before the start does not.
			if it.due != 0 && finalStatus(p, i) && it.created < start-(24*time.Hour).Milliseconds() {
				t.Fatalf("%s item %d is left open on final status %s: created %d, due %d, start %d", p.id, i, p.m.statuses()[it.status], it.created, it.due, start)
			}
		}
	}
	if got := len(h.sim.Truth()); got != 0 {
		t.Errorf("history recorded %d transitions without HistoryTruth", got)
	}
}

func TestTruthWriterGetsEveryTransitionAsJSONL(t *testing.T) {
	var buf bytes.Buffer
	cfg := scenario(5)
	cfg.TruthWriter, cfg.TruthLimit = &buf, 50
	cfg.History = 20
	clock := &testClock{t: testStart}
	cfg.Now = clock.Now
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Step(testStart.Add(2 * time.Minute))
	var lines []Transition
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		var tr Transition
		if err := json.Unmarshal(sc.Bytes(), &tr); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		lines = append(lines, tr)
	}
	if len(lines) <= 50 {
		t.Fatalf("writer got %d transitions, want more than the retained 50", len(lines))
	}
	for i, tr := range lines {
		if tr.Seq != uint64(i+1) {
			t.Fatalf("line %d has seq %d", i, tr.Seq)
		}
	}
	kept := s.Truth()
	if !reflect.DeepEqual(kept, lines[len(lines)-50:]) {
		t.Fatal("Truth() is not the newest 50 transitions written")
	}
}

type failingWriter struct{ n int }

func (w *failingWriter) Write(p []byte) (int, error) {
	w.n++
	return 0, errors.New("disk full")
}

func TestTruthWriterStopsAtItsFirstError(t *testing.T) {
	w := &failingWriter{}
	cfg := scenario(5)
	cfg.TruthWriter, cfg.History = w, 10
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Step(time.Now().Add(5 * time.Minute))
	if w.n != 1 {
		t.Fatalf("writer called %d times after failing, want 1", w.n)
	}
	if len(s.Truth()) < 2 {
		t.Fatal("in-memory truth stopped with the writer")
	}
}

func TestRunCreatesItemsAtRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, err := New(Config{Seed: 1, Rate: 10, Providers: []string{ProviderStripe}, FailureRate: 0.1})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- s.Run(ctx) }()
		time.Sleep(60 * time.Second) // fake time: the bubble's clock
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Run returned %v", err)
		}
		s.mu.RLock()
		n := len(s.byID[ProviderStripe].st.items)
		s.mu.RUnlock()
		if n < 480 || n > 720 {
			t.Fatalf("%d items in 60s at 10/s", n)
		}
	})
}

func TestNewReportsEveryBadSetting(t *testing.T) {
	_, err := New(Config{
		Rate: -1, History: -1, OpenShare: 2, FailureRate: -0.1, Providers: []string{"paypal"},
		Faults:      map[string]Faults{"paypal": {}, ProviderCPN: {ErrorRate: 3}},
		Credentials: Credentials{CircleRampKey: "no-colons"},
		Delays:      Delays{Min: time.Minute, Mean: time.Second, Max: time.Second},
	})
	if err == nil {
		t.Fatal("New accepted a bad config")
	}
	for _, want := range []string{"rate:", "history:", "open_share:", "failure_rate:", `providers: unknown provider "paypal"`,
		`faults: unknown provider "paypal"`, "faults[circle_cpn_payments]: error_rate", "circle_ramp_key", "delays:"} {
		if !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func ExampleNew() {
	s, err := New(Config{Seed: 1, Rate: 1, Providers: []string{ProviderRamp}, Now: func() time.Time { return testStart }})
	if err != nil {
		panic(err)
	}
	s.Step(testStart.Add(time.Minute))
	fmt.Println(len(s.Truth()) > 0)
	// Output: true
}

func TestOpenHistoryResumesSpreadOverOpenResumeWithin(t *testing.T) {
	within := 10 * time.Minute
	h := newHarness(t, Config{Seed: 5, History: 2000, HistorySpan: 30 * 24 * time.Hour, OpenShare: 0.2, OpenResumeWithin: within,
		Providers: []string{ProviderCPN}})
	start, end := testStart.UnixMilli(), testStart.Add(within).UnixMilli()
	var early, late, open int
	for _, it := range h.sim.provs[0].st.items {
		if it.due == 0 {
			continue
		}
		open++
		if it.due <= start || it.due > end+1 {
			t.Fatalf("open item due at %d, outside (%d, %d]", it.due, start, end)
		}
		if it.due < start+within.Milliseconds()/4 {
			early++
		}
		if it.due > end-within.Milliseconds()/4 {
			late++
		}
	}
	// Uniform over the span: about a quarter of them in each end quarter.
	if open < 300 || early < open/6 || late < open/6 {
		t.Fatalf("%d open items, %d resume in the first quarter, %d in the last; want them spread", open, early, late)
	}
}

// TestHistoryStatusesMatchTheTruth checks that every item and nested item the history
// built shows the status its last recorded transition gave it, open items (whose last
// step was undone) included.
func TestHistoryStatusesMatchTheTruth(t *testing.T) {
	for _, id := range ProviderIDs() {
		t.Run(id, func(t *testing.T) {
			s, err := New(Config{Seed: 9, History: 2000, OpenShare: 0.5, FailureRate: 0.5, HistoryTruth: true,
				Providers: []string{id}, Now: func() time.Time { return testStart }})
			if err != nil {
				t.Fatal(err)
			}
			type key struct{ kind, parent, id string }
			last := map[key]string{}
			for _, tr := range s.Truth() {
				last[key{tr.Kind, tr.ParentID, tr.ID}] = tr.To + "/" + tr.ToAddendum
			}
			p := s.byID[id]
			e := env{s: s, p: p}
			for seq := range p.st.items {
				it := &p.st.items[seq]
				k := key{p.m.kind(), "", p.itemID(seq)}
				if got := p.m.statuses()[it.status] + "/" + p.m.addendum(it); got != last[k] {
					t.Fatalf("item %d shows %s, its truth ends %s", seq, got, last[k])
				}
				for i, kd := range p.st.kidsOf(it) {
					k := key{p.m.kidKind(kd.kind), p.itemID(seq), e.kidID(seq, i)}
					if got := p.m.kidStatus(kd.kind, kd.status) + "/"; got != last[k] {
						t.Fatalf("item %d's %s %d shows %s, its truth ends %s", seq, k.kind, i, got, last[k])
					}
				}
			}
		})
	}
}
