package circle

import (
	"encoding/json"
	"maps"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller/provider"
)

// What only the ramp sessions have: the PREFIX:ID:SECRET key, terminal_statuses, the
// secret session url and the quote amounts. The tests every product shares are in
// products_test.go.

// TestRampTerminalStatuses checks that a source's terminal_statuses replaces the
// terminal set, in lists and in Get, and leaves the shared table alone.
func TestRampTerminalStatuses(t *testing.T) {
	before := maps.Clone(RampStatus)
	f := rampProduct.newFake(testKey)
	statuses := []string{"PENDING", "COMPLETED", "FAILED", "EXPIRED", "CANCELED", "CANCELLED", "REFUNDED", "AWAITING_PAYMENT"}
	for i, st := range statuses {
		created := t0.Add(-time.Duration(i) * time.Minute)
		f.add(st, created, rampSessionJSON(st, created, st))
	}
	base := startFake(t, f)
	type row struct {
		state    diff.State
		terminal bool
	}
	for _, tc := range []struct {
		name     string
		terminal []string
		want     map[string]row
	}{
		{name: "default", want: map[string]row{
			"PENDING": {diff.Pending, false}, "COMPLETED": {diff.Completed, true}, "FAILED": {diff.Failed, true},
			"EXPIRED": {diff.Expired, true}, "CANCELED": {diff.Canceled, true}, "CANCELLED": {diff.Canceled, true},
			"REFUNDED": {diff.Unknown, false}, "AWAITING_PAYMENT": {diff.Unknown, false},
		}},
		{name: "replaced", terminal: []string{"COMPLETED", "REFUNDED"}, want: map[string]row{
			"PENDING": {diff.Pending, false}, "COMPLETED": {diff.Completed, true}, "FAILED": {diff.Failed, false},
			"EXPIRED": {diff.Expired, false}, "CANCELED": {diff.Canceled, false}, "CANCELLED": {diff.Canceled, false},
			"REFUNDED": {diff.Unknown, true}, "AWAITING_PAYMENT": {diff.Unknown, false},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := rampProduct.newSource(t, base, 50, t0, tc.terminal...)
			p, err := src.Page(t.Context(), provider.Request{})
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Items) != len(statuses) {
				t.Fatalf("listed %d sessions, want %d", len(p.Items), len(statuses))
			}
			for _, it := range p.Items {
				if w := tc.want[it.ID]; it.Status.Raw != it.ID || it.Status.State != w.state || it.Status.Terminal != w.terminal {
					t.Errorf("listed %s: status %+v, want %+v", it.ID, it.Status, w)
				}
			}
			for _, id := range []string{"FAILED", "REFUNDED"} {
				it, err := src.(provider.Getter).Get(t.Context(), id)
				if w := tc.want[id]; err != nil || it.Status.State != w.state || it.Status.Terminal != w.terminal {
					t.Errorf("Get(%s) = %+v, %v; want %+v", id, it.Status, err, w)
				}
			}
		})
	}
	if !maps.Equal(RampStatus, before) {
		t.Errorf("a source's terminal_statuses changed RampStatus: %v", RampStatus)
	}
	items, _, err := ParseRampPage(readTestdata(t, "ramp", "statuses.json"))
	if err != nil || !items[2].Status.Terminal {
		t.Errorf("ParseRampPage after a replaced terminal set: FAILED %+v, err %v; want the default table", items[2].Status, err)
	}
}

// TestParseRampPageExample checks the documented example field by field.
func TestParseRampPageExample(t *testing.T) {
	items, skipped, err := ParseRampPage(rampExampleJSON)
	if err != nil || len(skipped) != 0 || len(items) != 1 {
		t.Fatalf("ParseRampPage(example) = %d items, skipped %v, err %v", len(items), skipped, err)
	}
	it := items[0]
	when := time.Date(2023, 1, 1, 12, 4, 5, 0, time.UTC)
	if it.Kind != "ramp_session" || it.ID != "c4d1da72-111e-4d52-bdbf-2e74a2d803d5" ||
		it.Status != (diff.Status{Raw: "PENDING", State: diff.Pending}) ||
		!it.CreatedAt.Equal(when) || it.CreatedAt.Location() != time.UTC ||
		!it.UpdatedAt.Equal(when) || it.UpdatedAt.Location() != time.UTC ||
		it.Failure != nil || len(it.Nested) != 0 || it.Settling {
		t.Errorf("session = %+v", it)
	}
	// BUY: the customer pays the quote's fiat amount.
	if it.Amount == nil || it.Amount.Value.StringFixed(-it.Amount.Value.Exponent()) != "1000.00" || it.Amount.Currency != "USD" {
		t.Errorf("amount = %+v, want 1000.00 USD as written", it.Amount)
	}
	// customerRefId and txHash are empty in the example: no refs for them.
	if want := map[string]string{"ref_id": "d620d523-b5ab-4541-94b0-efe4f4c825c8"}; !maps.Equal(it.Refs, want) {
		t.Errorf("refs = %v, want %v", it.Refs, want)
	}
	var raw, want map[string]json.RawMessage
	if err := json.Unmarshal(it.Raw, &raw); err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(compactData(t, rampExampleJSON)[0], &want)
	delete(want, "url")
	if !reflect.DeepEqual(raw, want) {
		t.Errorf("raw = %s\nwant the provider's object without url", it.Raw)
	}
}

// TestRampSessionURLRemoved checks that the hosted session url leaves raw sessions,
// and nothing else does.
func TestRampSessionURLRemoved(t *testing.T) {
	items, _, err := ParseRampPage(readTestdata(t, "ramp", "ramp_types.json"))
	if err != nil {
		t.Fatal(err)
	}
	raw := string(items[0].Raw)
	if strings.Contains(raw, `"url"`) || strings.Contains(raw, "t0k3n") {
		t.Errorf("raw keeps the session url: %s", raw)
	}
	if !strings.Contains(raw, `"redirectUrl":"https://merchant.example/done"`) || !strings.Contains(raw, `"txHash"`) {
		t.Errorf("raw lost fields that are not secret: %s", raw)
	}
}

// TestRampAmount checks which quote amount a session's events carry.
func TestRampAmount(t *testing.T) {
	items, skipped, err := ParseRampPage(readTestdata(t, "ramp", "ramp_types.json"))
	if err != nil || len(skipped) != 0 || len(items) != 5 {
		t.Fatalf("%d items, skipped %v, err %v", len(items), skipped, err)
	}
	for i, want := range []string{
		"250.00 USD",  // BUY: the customer pays fiat, not the transaction's figures
		"107.25 EURC", // SELL: the customer pays crypto
		"",            // an unknown ramp type
		"",            // no ramp type
		"12.50 USD",   // BUY with an unparsable crypto amount, which is not the event amount
	} {
		got := ""
		if a := items[i].Amount; a != nil {
			got = a.Value.StringFixed(-a.Value.Exponent()) + " " + a.Currency
		}
		if got != want {
			t.Errorf("item %d (%s) amount %q, want %q", i, items[i].ID, got, want)
		}
	}
	want := map[string]string{
		"customer_ref_id": "customer-77", "ref_id": "order-1001",
		"tx_hash": "0x5e3f0c2a9b7d1e4f6a8c0b2d4e6f8a0c2e4f6a8c0b2d4e6f8a0c2e4f6a8c0b2d",
	}
	if !maps.Equal(items[0].Refs, want) {
		t.Errorf("refs = %v, want %v", items[0].Refs, want)
	}
}

func TestParseRampPageEdgeCases(t *testing.T) {
	parse := rampProduct.parseItems
	t.Run("every documented status", func(t *testing.T) {
		items := parse(t, "statuses.json", 6)
		for _, it := range items {
			want, _ := RampStatus.Status(it.Status.Raw, "")
			if it.Status != want || it.Status.State == diff.Unknown {
				t.Errorf("%s: status %+v, want %+v", it.ID, it.Status, want)
			}
		}
	})
	t.Run("nulls and absent optional fields", func(t *testing.T) {
		items := parse(t, "nulls.json", 3)
		for _, it := range items {
			if it.Amount != nil || it.Refs != nil || !it.UpdatedAt.IsZero() || it.Status.Raw != "PENDING" {
				t.Errorf("item %s = %+v, want no amount, refs or update time", it.ID, it)
			}
		}
	})
	t.Run("times are UTC", func(t *testing.T) {
		items := parse(t, "minimal.json", -1)
		for i, want := range [][2]time.Time{
			{time.Date(2025, 3, 4, 12, 0, 0, 123456000, time.UTC), {}},
			{time.Date(2025, 3, 4, 11, 59, 30, 0, time.UTC), time.Date(2025, 3, 4, 12, 10, 0, 500000000, time.UTC)},
			{time.Date(2025, 3, 4, 11, 30, 0, 0, time.UTC), time.Date(2025, 3, 4, 12, 0, 0, 0, time.UTC)},
		} {
			it := items[i]
			if !it.CreatedAt.Equal(want[0]) || it.CreatedAt.Location() != time.UTC || !it.UpdatedAt.Equal(want[1]) ||
				(!it.UpdatedAt.IsZero() && it.UpdatedAt.Location() != time.UTC) {
				t.Errorf("item %d created %v updated %v, want %v and %v in UTC", i, it.CreatedAt, it.UpdatedAt, want[0], want[1])
			}
		}
	})
}

// TestNewRampValidation checks what only NewRamp refuses: api_keys not in the W3S
// PREFIX:ID:SECRET form, and empty terminal_statuses. TestNewValidation checks the rest.
func TestNewRampValidation(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*provider.Settings)
		want   []string
	}{
		{"one part", func(s *provider.Settings) { *s = s.With("api_key", "Zq8sNw3kVt5usecret") }, []string{"api_key", "it has 1", "PREFIX:ID:SECRET"}},
		{"two parts", func(s *provider.Settings) { *s = s.With("api_key", "TEST_API_KEY:Zq8sNw3kVt5usecret") }, []string{"api_key", "it has 2"}},
		{"four parts", func(s *provider.Settings) { *s = s.With("api_key", "TEST_API_KEY:6f1d:Zq8sNw3kVt5usecret:x") }, []string{"api_key", "it has 4"}},
		{"empty prefix", func(s *provider.Settings) { *s = s.With("api_key", ":6f1d:Zq8sNw3kVt5usecret") }, []string{"api_key", "PREFIX part", "empty"}},
		{"empty id", func(s *provider.Settings) { *s = s.With("api_key", "TEST_API_KEY::Zq8sNw3kVt5usecret") }, []string{"api_key", "ID part", "empty"}},
		{"empty secret", func(s *provider.Settings) { *s = s.With("api_key", "TEST_API_KEY:6f1d:") }, []string{"api_key", "SECRET part", "empty"}},
		{"space in secret", func(s *provider.Settings) { *s = s.With("api_key", "TEST_API_KEY:6f1d:Zq8sNw3k Vt5usecret") }, []string{"api_key", "SECRET part", "spaces"}},
		{"newline", func(s *provider.Settings) { *s = s.With("api_key", "TEST_API_KEY:6f1d:Zq8sNw3kVt5usecret\n") }, []string{"api_key", "SECRET part"}},
		{"empty terminal status", func(s *provider.Settings) { s.TerminalStatuses = []string{"COMPLETED", " "} }, []string{"terminal_statuses[1]", "empty"}},
		{"everything", func(s *provider.Settings) {
			*s = provider.Settings{BaseURL: "x", PageSize: 100, TerminalStatuses: []string{""}, Values: map[string]string{"api_key": "Zq8sNw3kVt5usecret"}}
		}, []string{"api_key", "base_url", "page_size", "terminal_statuses[0]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := rampProduct.validSettings()
			tc.change(&s)
			checkRejected(t, rampProduct, s, tc.want...)
		})
	}
	s := rampProduct.validSettings().With("api_key", "LIVE_API_KEY:0a1b2c3d4e5f:9f8e7d6c5b4a")
	if _, err := NewRamp(s, nil); err != nil {
		t.Errorf("a live key: %v", err)
	}
}

// TestRampLargestPage walks with the largest page size the collection serves, without a
// Link header: a full page of 50 continues, a short one ends the walk.
func TestRampLargestPage(t *testing.T) {
	f := rampProduct.newFake(testKey)
	f.noLink = true
	ids := rampProduct.fill(f, 120)
	src := rampProduct.newSource(t, startFake(t, f), rampMaxPageSize, t0)
	if got := walkIDs(t, src, time.Time{}); !reflect.DeepEqual(got, ids) {
		t.Errorf("walk listed %d sessions, want %d in order", len(got), len(ids))
	}
	if n := len(f.listRequests()); n != 3 {
		t.Errorf("%d list requests, want 3", n)
	}
}
