package event

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"
)

func TestIDDeterministicAndDistinct(t *testing.T) {
	prev := &Status{Status: "CREATED", State: "pending"}
	cur := Status{Status: "FAILED", State: "failed"}
	base := ID("cpn", "payment", "", "p1", 2, prev, cur)
	if again := ID("cpn", "payment", "", "p1", 2, &Status{Status: "CREATED", State: "pending"}, cur); again != base {
		t.Fatalf("same transition gave %s and %s", base, again)
	}
	if len(base) != 32 {
		t.Fatalf("id %q: want 32 hex characters", base)
	}
	variants := map[string]string{
		"source":      ID("cpn2", "payment", "", "p1", 2, prev, cur),
		"kind":        ID("cpn", "payment_refund", "", "p1", 2, prev, cur),
		"parent":      ID("cpn", "payment", "x", "p1", 2, prev, cur),
		"id":          ID("cpn", "payment", "", "p2", 2, prev, cur),
		"sequence":    ID("cpn", "payment", "", "p1", 3, prev, cur),
		"first sight": ID("cpn", "payment", "", "p1", 2, nil, cur),
		"previous":    ID("cpn", "payment", "", "p1", 2, &Status{Status: "CRYPTO_FUNDS_PENDING"}, cur),
		"addendum":    ID("cpn", "payment", "", "p1", 2, prev, Status{Status: "FAILED", Addendum: "IN_MANUAL_REVIEW"}),
		"shifted":     ID("cp", "npayment", "", "p1", 2, prev, cur),
	}
	seen := map[string]string{base: "base"}
	for name, id := range variants {
		if other, dup := seen[id]; dup {
			t.Errorf("%s and %s share id %s", name, other, id)
		}
		seen[id] = name
	}
	// The normalized state is derived from the raw status: it does not change the id.
	if ID("cpn", "payment", "", "p1", 2, prev, Status{Status: "FAILED", State: "unknown"}) != base {
		t.Error("id depends on the normalized state")
	}
}

// TestIDGolden pins the id function to values computed once and written here.
//
// The id is JetStream's de-duplication key (Nats-Msg-Id) and what consumers drop
// repeats by: a watcher upgraded across a change of this function gives a transition
// that the old version already published a new id, so it is published and delivered
// twice. Never "update" these values to make the test pass; a change of the function
// needs a plan for the upgrade (and a statement in the release notes) first.
func TestIDGolden(t *testing.T) {
	prev := func(status, addendum string) *Status { return &Status{Status: status, Addendum: addendum} }
	tests := []struct {
		source, kind, parent, id string
		sequence                 uint32
		previous                 *Status
		current                  Status
		want                     string
	}{
		{"cpn", "payment", "", "p1", 1, nil, Status{Status: "PENDING"}, "effcde12f5a6c140f3e011411b0271bc"},
		{"cpn", "payment", "", "p1", 2, prev("PENDING", ""), Status{Status: "CONFIRMED"}, "37ae7cfea5f22d646a356dd93262cc61"},
		{"cpn", "payment", "", "p1", 3, prev("CONFIRMED", ""), Status{Status: "FAILED", Addendum: "IN_MANUAL_REVIEW"}, "8e687d4fcd84fa83598485ab65e23ceb"},
		{"cpn", "payment_refund", "p1", "r1", 1, nil, Status{Status: "PENDING"}, "57070ce45eb10466ed0705b8c04605fa"},
		{"cpn", "payment_refund", "p1", "r1", 2, prev("PENDING", "x"), Status{Status: "COMPLETE", Addendum: "y"}, "e2789350e398134525ec9224df964758"},
		{"onramp", "onramp_session", "", "cos_1", 4, prev("requires_payment", ""), Status{Status: "fulfillment_complete"}, "d5788b3c31745e46819d406c1c37d150"},
		{"", "", "", "", 0, nil, Status{}, "a4ef9014f82f8cfe95ee3f9a2fe7f128"},
		{"ünï côdé", "payment", "", "id with spaces/*>", 4294967295, prev("", ""), Status{}, "c3a174cee6482e55529cbebaddef8594"},
	}
	for _, tt := range tests {
		// The normalized state is not part of the id: setting it must change nothing.
		cur := tt.current
		cur.State = "anything"
		if got := ID(tt.source, tt.kind, tt.parent, tt.id, tt.sequence, tt.previous, cur); got != tt.want {
			t.Errorf("ID(%q, %q, %q, %q, %d, %+v, %+v) = %s, want %s",
				tt.source, tt.kind, tt.parent, tt.id, tt.sequence, tt.previous, tt.current, got, tt.want)
		}
	}
}

func TestSubject(t *testing.T) {
	s := Subject("payments", "cpn", "payment", "failed")
	if s != "payments.cpn.payment.failed" {
		t.Fatalf("subject %q", s)
	}
	prefix, source, kind, state, err := SplitSubject("acme.payments.cpn.payment_refund.completed")
	if err != nil || prefix != "acme.payments" || source != "cpn" || kind != "payment_refund" || state != "completed" {
		t.Fatalf("split = %q %q %q %q %v", prefix, source, kind, state, err)
	}
	if _, _, _, _, err := SplitSubject("a.b.c"); err == nil || !strings.Contains(err.Error(), `"a.b.c"`) {
		t.Fatalf("short subject error %v", err)
	}
}

func TestJSONShape(t *testing.T) {
	observed := time.Date(2026, 11, 22, 10, 0, 3, 120e6, time.UTC)
	e := Event{
		SpecVersion: SpecVersion, ID: "abc", Source: "watcher/cpn", Type: Type, Subject: "p1", Time: observed,
		DataContentType: "application/json",
		Data: Data{
			Source: "cpn", Provider: "circle_cpn_payments", Kind: "payment", ID: "p1",
			Current: Status{Status: "FAILED", State: "failed"}, Terminal: true, Sequence: 1,
			CreatedAt: time.Date(2023, 1, 1, 12, 4, 5, 0, time.UTC), ObservedAt: observed,
			Amount: &Money{Value: decimal.RequireFromString("326992.940222420597939290"), Currency: "USDC"},
			Item:   json.RawMessage(`{"id":"p1"}`),
		},
	}
	body, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"specversion":"1.0"`, `"parent_id":null`, `"previous":null`, `"updated_at":null`,
		`"amount":{"value":"326992.940222420597939290","currency":"USDC"}`,
		`"time":"2026-11-22T10:00:03.12Z"`, `"created_at":"2023-01-01T12:04:05Z"`, `"item":{"id":"p1"}`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("body lacks %s:\n%s", want, body)
		}
	}
	back, err := Decode(body)
	if err != nil {
		t.Fatal(err)
	}
	if !back.Data.Amount.Value.Equal(e.Data.Amount.Value) {
		t.Fatalf("amount %s after round trip, want %s", back.Data.Amount.Value, e.Data.Amount.Value)
	}
	for in, want := range map[string]string{"1E+4": "10000", "0.030581700000000000": "0.030581700000000000", "110.270000": "110.270000", "-5": "-5"} {
		b, err := json.Marshal(Money{Value: decimal.RequireFromString(in), Currency: "X"})
		if err != nil || string(b) != `{"value":"`+want+`","currency":"X"}` {
			t.Errorf("Money %s encodes as %s (%v), want value %s", in, b, err, want)
		}
	}
	if _, err := Decode([]byte(`{"specversion":"1.0","type":"other"}`)); err == nil {
		t.Fatal("Decode accepted a foreign event")
	}
}
