package diff

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

var payment = Mapping{
	"CREATED":                {State: Pending},
	"CRYPTO_FUNDS_PENDING":   {State: Pending},
	"FIAT_PAYMENT_INITIATED": {State: Processing},
	"COMPLETED":              {State: Completed, Terminal: true},
	"FAILED":                 {State: Failed, Terminal: true},
}

var refund = Mapping{
	"CREATED":   {State: Pending},
	"COMPLETED": {State: Completed, Terminal: true},
	"FAILED":    {State: Failed, Terminal: true},
}

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func st(m Mapping, raw string) Status {
	s, _ := m.Status(raw, "")
	return s
}

func pay(status string, nested ...Item) *Item {
	return &Item{Kind: "payment", ID: "p1", Status: st(payment, status), CreatedAt: t0, Nested: nested, Settling: status == "FAILED"}
}

func ref(id, status string) Item {
	return Item{Kind: "payment_refund", ID: id, Status: st(refund, status), CreatedAt: t0}
}

// summary renders transitions as "kind/id: prev -> cur #seq" for table comparison.
func summary(ts []Transition) string {
	var b strings.Builder
	for i, tr := range ts {
		if i > 0 {
			b.WriteString("; ")
		}
		prev := "nil"
		if tr.Previous != nil {
			prev = tr.Previous.Raw
			if tr.Previous.Addendum != "" {
				prev += "+" + tr.Previous.Addendum
			}
		}
		cur := tr.Current.Raw
		if tr.Current.Addendum != "" {
			cur += "+" + tr.Current.Addendum
		}
		fmt.Fprintf(&b, "%s/%s: %s -> %s #%d", tr.Kind, tr.ID, prev, cur, tr.Sequence)
		if tr.ParentID != "" {
			fmt.Fprintf(&b, " ^%s", tr.ParentID)
		}
	}
	return b.String()
}

func TestCompare(t *testing.T) {
	opt := Options{Now: t0.Add(time.Hour), SettleWindow: 24 * time.Hour}
	withAddendum := pay("CREATED")
	withAddendum.Status.Addendum = "IN_MANUAL_REVIEW"
	unknown := pay("CREATED")
	unknown.Status, _ = payment.Status("ON_HOLD", "")

	tests := []struct {
		name        string
		before      []*Item // observed in order before obs; their records feed the next
		obs         *Item
		want        string
		wantChanged bool
		wantSeq     uint32
	}{
		{name: "first sight", obs: pay("CREATED"), want: "payment/p1: nil -> CREATED #1", wantChanged: true, wantSeq: 1},
		{name: "no change", before: []*Item{pay("CREATED")}, obs: pay("CREATED"), want: "", wantSeq: 1},
		{name: "status change", before: []*Item{pay("CREATED")}, obs: pay("CRYPTO_FUNDS_PENDING"),
			want: "payment/p1: CREATED -> CRYPTO_FUNDS_PENDING #2", wantChanged: true, wantSeq: 2},
		{name: "same state different raw is a transition", before: []*Item{pay("CREATED"), pay("CRYPTO_FUNDS_PENDING")}, obs: pay("FAILED"),
			want: "payment/p1: CRYPTO_FUNDS_PENDING -> FAILED #3", wantChanged: true, wantSeq: 3},
		{name: "addendum alone", before: []*Item{pay("CREATED")}, obs: withAddendum,
			want: "payment/p1: CREATED -> CREATED+IN_MANUAL_REVIEW #2", wantChanged: true, wantSeq: 2},
		{name: "addendum cleared", before: []*Item{pay("CREATED"), withAddendum}, obs: pay("CREATED"),
			want: "payment/p1: CREATED+IN_MANUAL_REVIEW -> CREATED #3", wantChanged: true, wantSeq: 3},
		{name: "unknown status", before: []*Item{pay("CREATED")}, obs: unknown,
			want: "payment/p1: CREATED -> ON_HOLD #2", wantChanged: true, wantSeq: 2},
		{name: "first sight with nested", obs: pay("FAILED", ref("r1", "CREATED"), ref("r2", "COMPLETED")),
			want:        "payment/p1: nil -> FAILED #1; payment_refund/r1: nil -> CREATED #1 ^p1; payment_refund/r2: nil -> COMPLETED #1 ^p1",
			wantChanged: true, wantSeq: 1},
		{name: "nested change only", before: []*Item{pay("FAILED", ref("r1", "CREATED"))}, obs: pay("FAILED", ref("r1", "COMPLETED")),
			want: "payment_refund/r1: CREATED -> COMPLETED #2 ^p1", wantChanged: true, wantSeq: 1},
		{name: "nested appears on known item", before: []*Item{pay("FAILED")}, obs: pay("FAILED", ref("r1", "CREATED")),
			want: "payment_refund/r1: nil -> CREATED #1 ^p1", wantChanged: true, wantSeq: 1},
		{name: "nested vanishes: no event", before: []*Item{pay("FAILED", ref("r1", "CREATED"))}, obs: pay("FAILED"),
			want: "", wantSeq: 1},
		{name: "nested reappears unchanged after vanishing", before: []*Item{pay("FAILED", ref("r1", "CREATED")), pay("FAILED")}, obs: pay("FAILED", ref("r1", "CREATED")),
			want: "", wantSeq: 1},
		{name: "parent and nested change together", before: []*Item{pay("CREATED", ref("r1", "CREATED"))}, obs: pay("FAILED", ref("r1", "FAILED")),
			want: "payment/p1: CREATED -> FAILED #2; payment_refund/r1: CREATED -> FAILED #2 ^p1", wantChanged: true, wantSeq: 2},
		{name: "same id in another nested kind is another item", before: []*Item{pay("FAILED", ref("x", "CREATED"))},
			obs:  pay("FAILED", ref("x", "CREATED"), Item{Kind: "payment_rfi", ID: "x", Status: Status{Raw: "IN_REVIEW", State: Processing}}),
			want: "payment_rfi/x: nil -> IN_REVIEW #1 ^p1", wantChanged: true, wantSeq: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var prev *Record
			for _, b := range tt.before {
				r, _, _ := Compare(prev, b, opt)
				prev = &r
			}
			var snapshot Record
			if prev != nil {
				snapshot = *prev
				snapshot.Nested = append([]NestedRecord(nil), prev.Nested...)
			}
			rec, got, changed := Compare(prev, tt.obs, opt)
			if s := summary(got); s != tt.want {
				t.Errorf("transitions:\n got %s\nwant %s", s, tt.want)
			}
			if changed != tt.wantChanged {
				t.Errorf("changed = %v, want %v", changed, tt.wantChanged)
			}
			if rec.Sequence != tt.wantSeq {
				t.Errorf("record sequence = %d, want %d", rec.Sequence, tt.wantSeq)
			}
			if prev != nil && fmt.Sprint(snapshot) != fmt.Sprint(*prev) {
				t.Errorf("Compare modified prev:\n got %v\nwant %v", *prev, snapshot)
			}
			for _, tr := range got {
				if tr.Item == nil || tr.Item.ID != tr.ID {
					t.Errorf("transition %s/%s does not point at its observed item", tr.Kind, tr.ID)
				}
				if (tr.ParentID != "") != (tr.Parent != nil) {
					t.Errorf("transition %s/%s: ParentID %q but Parent %v", tr.Kind, tr.ID, tr.ParentID, tr.Parent)
				}
			}
		})
	}
}

func TestCompareRecordKeepsEveryNested(t *testing.T) {
	opt := Options{Now: t0}
	r1, _, _ := Compare(nil, pay("FAILED", ref("r1", "CREATED"), ref("r2", "CREATED")), opt)
	r2, _, _ := Compare(&r1, pay("FAILED", ref("r2", "COMPLETED")), opt)
	if len(r2.Nested) != 2 || r2.Nested[0].ID != "r1" || r2.Nested[0].Status.Raw != "CREATED" || r2.Nested[1].Status.Raw != "COMPLETED" || r2.Nested[1].Sequence != 2 {
		t.Fatalf("nested records = %+v", r2.Nested)
	}
}

func TestOpenAndSettleWindow(t *testing.T) {
	window := 24 * time.Hour
	tests := []struct {
		name     string
		before   *Item
		obs      *Item
		now      time.Time
		wantOpen map[time.Duration]bool // offset from now -> Open
	}{
		{name: "non-terminal is open", obs: pay("CREATED"), now: t0,
			wantOpen: map[time.Duration]bool{0: true, 1000 * time.Hour: true}},
		{name: "completed is closed at once", obs: pay("COMPLETED"), now: t0,
			wantOpen: map[time.Duration]bool{0: false}},
		{name: "terminal with open nested is open", obs: pay("COMPLETED", ref("r1", "CREATED")), now: t0,
			wantOpen: map[time.Duration]bool{0: true, 1000 * time.Hour: true}},
		{name: "failed seen happening settles from now", before: pay("CREATED"), obs: pay("FAILED"), now: t0.Add(48 * time.Hour),
			wantOpen: map[time.Duration]bool{0: true, window - time.Second: true, window: false}},
		{name: "failed first seen long after creation is closed", obs: pay("FAILED"), now: t0.Add(48 * time.Hour),
			wantOpen: map[time.Duration]bool{0: false}},
		{name: "failed first seen soon after creation settles from creation", obs: pay("FAILED"), now: t0.Add(time.Hour),
			wantOpen: map[time.Duration]bool{0: true, window - time.Hour - time.Second: true, window - time.Hour: false}},
		{name: "failed item whose refund then completes keeps its window", before: pay("FAILED", ref("r1", "CREATED")), obs: pay("FAILED", ref("r1", "COMPLETED")), now: t0.Add(72 * time.Hour),
			wantOpen: map[time.Duration]bool{0: true, window: false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var prev *Record
			if tt.before != nil {
				r, _, _ := Compare(nil, tt.before, Options{Now: t0, SettleWindow: window})
				prev = &r
			}
			rec, _, _ := Compare(prev, tt.obs, Options{Now: tt.now, SettleWindow: window})
			for off, want := range tt.wantOpen {
				if got := rec.Open(tt.now.Add(off)); got != want {
					t.Errorf("Open(now+%v) = %v, want %v (record %+v)", off, got, want, rec)
				}
			}
		})
	}
}

func TestStalledClearsOnTransition(t *testing.T) {
	opt := Options{Now: t0}
	r, _, _ := Compare(nil, pay("CREATED"), opt)
	r.Stalled = true
	same, _, changed := Compare(&r, pay("CREATED"), opt)
	if !same.Stalled || changed {
		t.Fatalf("unchanged item: stalled %v changed %v, want true false", same.Stalled, changed)
	}
	moved, _, changed := Compare(&r, pay("COMPLETED"), opt)
	if moved.Stalled || !changed {
		t.Fatalf("moved item: stalled %v changed %v, want false true", moved.Stalled, changed)
	}
}

func TestMapping(t *testing.T) {
	s, known := payment.Status("FAILED", "")
	if !known || s.State != Failed || !s.Terminal {
		t.Fatalf("FAILED = %+v known %v", s, known)
	}
	s, known = payment.Status("NEW_THING", "X")
	if known || s.State != Unknown || s.Terminal || s.Raw != "NEW_THING" || s.Addendum != "X" {
		t.Fatalf("unknown = %+v known %v", s, known)
	}
	custom := Mapping{"PENDING": {State: Pending}, "COMPLETED": {State: Completed, Terminal: true}}.WithTerminal([]string{"PENDING", "ARCHIVED"})
	if !custom["PENDING"].Terminal || custom["COMPLETED"].Terminal || custom["ARCHIVED"] != (Mapped{State: Unknown, Terminal: true}) {
		t.Fatalf("WithTerminal = %+v", custom)
	}
	for _, s := range States {
		if !s.Valid() {
			t.Errorf("%s not valid", s)
		}
	}
	if State("done").Valid() {
		t.Error("state done is valid")
	}
}

func TestSettleWindowExpiryIsStoredOnce(t *testing.T) {
	window := 24 * time.Hour
	r, _, _ := Compare(nil, pay("CREATED"), Options{Now: t0, SettleWindow: window})
	r, _, _ = Compare(&r, pay("FAILED"), Options{Now: t0.Add(time.Hour), SettleWindow: window})
	if r.SettleUntil.IsZero() || !r.Open(t0.Add(2*time.Hour)) {
		t.Fatalf("failed payment not settling: %+v", r)
	}
	later := Options{Now: t0.Add(26 * time.Hour), SettleWindow: window}
	expired, trs, changed := Compare(&r, pay("FAILED"), later)
	if !changed || len(trs) != 0 || !expired.SettleUntil.IsZero() || expired.Open(later.Now) {
		t.Fatalf("after the window: changed %v, %d transitions, record %+v", changed, len(trs), expired)
	}
	if _, _, changed := Compare(&expired, pay("FAILED"), later); changed {
		t.Fatal("a closed record is rewritten on every reading")
	}
}
