package circle

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller/provider"
	"github.com/payments-watcher/watcher/poller/provider/providertest"
)

//go:embed testdata/ramp/example.json
var rampExampleJSON []byte

// newRampFake is a fake of the ramp session endpoints, with the collection's documented
// page size limit (50) and default (10).
func newRampFake(apiKey string) *circleFake {
	f := newCircleFake(rampPath, apiKey)
	f.maxPageSize, f.defaultPageSize = rampMaxPageSize, rampDefaultPageSize
	return f
}

// rampSessionJSON is the documented example session with id, createDate, updateDate and
// status replaced.
func rampSessionJSON(id string, created time.Time, status string) json.RawMessage {
	var page struct {
		Data []map[string]any `json:"data"`
	}
	dec := json.NewDecoder(bytes.NewReader(rampExampleJSON))
	dec.UseNumber()
	if err := dec.Decode(&page); err != nil {
		panic(fmt.Sprintf("testdata/ramp/example.json: %v", err))
	}
	s := page.Data[0]
	s["id"], s["status"] = id, status
	s["createDate"], s["updateDate"] = created.Format(time.RFC3339Nano), created.Add(time.Minute).Format(time.RFC3339Nano)
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return b
}

var rampFakeStatuses = []string{"PENDING", "COMPLETED", "FAILED", "EXPIRED", "CANCELED", "CANCELLED", "AWAITING_PAYMENT"}

// fillRamp adds n sessions to f, two per minute going back from t0 (so that creation
// times tie), and returns their ids newest first.
func fillRamp(f *circleFake, n int) []string {
	for i := n - 1; i >= 0; i-- {
		created := t0.Add(-time.Duration(i/2) * time.Minute)
		f.add(fakeID(i), created, rampSessionJSON(fakeID(i), created, rampFakeStatuses[i%len(rampFakeStatuses)]))
	}
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fakeID(i)
	}
	return ids
}

// newTestRamp builds a ramp source on baseURL whose clock reads now.
func newTestRamp(t *testing.T, baseURL string, pageSize int, now time.Time, terminal ...string) *rampSource {
	t.Helper()
	s, err := NewRamp(provider.Settings{Name: "ramp", BaseURL: baseURL, PageSize: pageSize, TerminalStatuses: terminal, Values: map[string]string{"api_key": testKey}}, &provider.Client{})
	if err != nil {
		t.Fatalf("NewRamp: %v", err)
	}
	src := s.(*rampSource)
	src.l.now = func() time.Time { return now }
	return src
}

func TestRampContract(t *testing.T) {
	newSource := func(baseURL, apiKey string) provider.Source {
		src, err := NewRamp(provider.Settings{BaseURL: baseURL, PageSize: 4, Values: map[string]string{"api_key": apiKey}}, nil)
		if err != nil {
			t.Errorf("NewRamp: %v", err)
			return nil
		}
		return src
	}
	fake := func(configure func(*circleFake)) providertest.Fake {
		return providertest.Fake{
			PageSize: 4,
			Handler: func(n int, apiKey string) (http.Handler, []string) {
				f := newRampFake(apiKey)
				configure(f)
				return f, fillRamp(f, n)
			},
			WriteError: writeCircleError,
			Malformed: []string{
				`{"data":{}}`,
				`{"data":null}`,
				`{"sessions":[]}`,
				`[]`,
				`{"data":[{"id":"c4d1da72-111e-4d52-bdbf-2e74a2d803d5","status":"PENDING"}]`,
			},
			MissingID: "00000000-0000-4000-8000-000000000000",
		}
	}
	t.Run("link_header", func(t *testing.T) {
		providertest.CheckSource(t, newSource, fake(func(*circleFake) {}))
	})
	t.Run("relative_links", func(t *testing.T) {
		providertest.CheckSource(t, newSource, fake(func(f *circleFake) { f.relativeLinks = true }))
	})
	t.Run("no_link_header", func(t *testing.T) {
		providertest.CheckSource(t, newSource, fake(func(f *circleFake) { f.noLink = true }))
	})
}

func TestRampProvider(t *testing.T) {
	if Ramp.Kind != "ramp_session" || Ramp.DefaultBaseURL != "https://api.circle.com" || Ramp.MaxPageSize != 50 ||
		Ramp.DefaultPageSize != 10 || !reflect.DeepEqual(Ramp.Credentials(), []string{"api_key"}) || Ramp.New == nil {
		t.Errorf("Ramp = %+v", Ramp)
	}
	src, err := Ramp.New(provider.Settings{BaseURL: Ramp.DefaultBaseURL, PageSize: Ramp.DefaultPageSize, Values: map[string]string{"api_key": testKey}}, nil)
	if err != nil {
		t.Fatalf("Ramp.New with the defaults: %v", err)
	}
	if _, ok := src.(provider.Getter); !ok {
		t.Errorf("the ramp source does not implement provider.Getter")
	}
}

// TestRampStatusTable pins the table to DESIGN §3.
func TestRampStatusTable(t *testing.T) {
	want := diff.Mapping{
		"PENDING":   {State: diff.Pending},
		"COMPLETED": {State: diff.Completed, Terminal: true},
		"FAILED":    {State: diff.Failed, Terminal: true},
		"EXPIRED":   {State: diff.Expired, Terminal: true},
		"CANCELED":  {State: diff.Canceled, Terminal: true},
		"CANCELLED": {State: diff.Canceled, Terminal: true},
	}
	if !maps.Equal(RampStatus, want) {
		t.Errorf("RampStatus = %v\nwant %v", RampStatus, want)
	}
	for raw, row := range want {
		s, known := RampStatus.Status(raw, "")
		if !known || s.State != row.State || s.Terminal != row.Terminal || s.Raw != raw {
			t.Errorf("Status(%q) = %+v, known %v; want %+v", raw, s, known, row)
		}
	}
	for _, raw := range []string{"AWAITING_PAYMENT", "completed", "Pending", "REFUNDED"} {
		if s, known := RampStatus.Status(raw, ""); known || s.State != diff.Unknown || s.Terminal || s.Raw != raw {
			t.Errorf("Status(%q) = %+v (known %v), want unknown, not terminal, raw kept", raw, s, known)
		}
	}
}

// TestRampTerminalStatuses checks that a source's terminal_statuses replaces the
// terminal set, in lists and in Get, and leaves the shared table alone.
func TestRampTerminalStatuses(t *testing.T) {
	before := maps.Clone(RampStatus)
	f := newRampFake(testKey)
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
			src := newTestRamp(t, base, 50, t0, tc.terminal...)
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
				it, err := src.Get(t.Context(), id)
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

// TestRampSecretFields pins what is removed from raw sessions: the hosted session url,
// and nothing else.
func TestRampSecretFields(t *testing.T) {
	if want := []string{"url"}; !reflect.DeepEqual(rampSecretFields, want) || !reflect.DeepEqual(rampEndpoint(RampStatus).secretFields, want) {
		t.Errorf("ramp secret fields = %v, want %v", rampSecretFields, want)
	}
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

func TestParseRampPageGolden(t *testing.T) {
	checkGoldenDir(t, "ramp", ParseRampPage)
}

func TestParseRampPageEdgeCases(t *testing.T) {
	parse := func(t *testing.T, name string) ([]diff.Item, []provider.Skipped) {
		t.Helper()
		items, skipped, err := ParseRampPage(readTestdata(t, "ramp", name))
		if err != nil {
			t.Fatalf("ParseRampPage(%s): %v", name, err)
		}
		return items, skipped
	}
	t.Run("every documented status", func(t *testing.T) {
		items, skipped := parse(t, "statuses.json")
		if len(items) != 6 || len(skipped) != 0 {
			t.Fatalf("%d items, skipped %v", len(items), skipped)
		}
		for _, it := range items {
			want, _ := RampStatus.Status(it.Status.Raw, "")
			if it.Status != want || it.Status.State == diff.Unknown {
				t.Errorf("%s: status %+v, want %+v", it.ID, it.Status, want)
			}
		}
	})
	t.Run("big decimals are exact", func(t *testing.T) {
		items, skipped := parse(t, "big_decimal.json")
		if len(items) != 4 || len(skipped) != 0 {
			t.Fatalf("%d items, skipped %v", len(items), skipped)
		}
		for i, want := range []string{
			"123456789012345678901234567890.123456789012345678",
			"0.000000000000000001",
			"99999999999999999999999999999999999999.99", // a bare JSON number, read from its literal
			"1500",
		} {
			if a := items[i].Amount; a == nil || a.Value.String() != want || !a.Value.Equal(decimal.RequireFromString(want)) {
				t.Errorf("item %d amount %+v, want exactly %s", i, a, want)
			}
		}
	})
	t.Run("nulls and absent optional fields", func(t *testing.T) {
		items, skipped := parse(t, "nulls.json")
		if len(items) != 3 || len(skipped) != 0 {
			t.Fatalf("%d items, skipped %v", len(items), skipped)
		}
		for _, it := range items {
			if it.Amount != nil || it.Refs != nil || !it.UpdatedAt.IsZero() || it.Status.Raw != "PENDING" {
				t.Errorf("item %s = %+v, want no amount, refs or update time", it.ID, it)
			}
		}
	})
	t.Run("times are UTC", func(t *testing.T) {
		items, _ := parse(t, "minimal.json")
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
	t.Run("unknown statuses map to unknown", func(t *testing.T) {
		items, skipped := parse(t, "unknown_status.json")
		if len(items) != 3 || len(skipped) != 0 {
			t.Fatalf("%d items, skipped %v", len(items), skipped)
		}
		for _, it := range items {
			if it.Status.State != diff.Unknown || it.Status.Terminal || it.Status.Raw == "" {
				t.Errorf("%s: status %+v, want unknown, not terminal, raw kept", it.ID, it.Status)
			}
		}
	})
	t.Run("malformed items are skipped, the rest kept", func(t *testing.T) {
		items, skipped := parse(t, "malformed_items.json")
		if ids := itemIDs(items); !reflect.DeepEqual(ids, []string{"5m000000-0000-4000-8000-000000000001", "5m000000-0000-4000-8000-000000000012"}) {
			t.Errorf("kept %v", ids)
		}
		want := []provider.Skipped{
			{ID: "", Reason: "data[1]: no id"},
			{ID: "", Reason: "data[2]: no id"},
			{ID: "", Reason: "data[3]: field id: unexpected JSON number"},
			{ID: "5m000000-0000-4000-8000-000000000005", Reason: "data[4]: createDate: missing"},
			{ID: "5m000000-0000-4000-8000-000000000006", Reason: `data[5]: createDate "yesterday": not an RFC 3339 time`},
			{ID: "5m000000-0000-4000-8000-000000000007", Reason: "data[6]: field createDate: unexpected JSON number"},
			{ID: "5m000000-0000-4000-8000-000000000008", Reason: `data[7]: updateDate "2025-06-01 00:00:08": not an RFC 3339 time`},
			{ID: "5m000000-0000-4000-8000-000000000009", Reason: "data[8]: no status"},
			{ID: "5m000000-0000-4000-8000-00000000000a", Reason: "data[9]: field status: unexpected JSON array"},
			{ID: "5m000000-0000-4000-8000-00000000000b", Reason: `data[10]: quote.fiatAmount.amount "abc": not a decimal`},
			{ID: "5m000000-0000-4000-8000-00000000000c", Reason: `data[11]: quote.cryptoAmount.amount "1e-2000": exponent -2000 outside ±100`},
			{ID: "5m000000-0000-4000-8000-00000000000d", Reason: "data[12]: field quote.fiatAmount: unexpected JSON string"},
			{ID: "5m000000-0000-4000-8000-00000000000e", Reason: "data[13]: field quote: unexpected JSON string"},
			{ID: "5m000000-0000-4000-8000-00000000000f", Reason: "data[14]: field transaction.txHash: unexpected JSON number"},
			{ID: "5m000000-0000-4000-8000-000000000010", Reason: "data[15]: field rampType: unexpected JSON number"},
			{ID: "", Reason: "data[16]: not a JSON object"},
			{ID: "", Reason: "data[17]: not a JSON object"},
			{ID: "", Reason: "data[18]: not a JSON object"},
			{ID: "", Reason: "data[19]: not a JSON object"},
		}
		if !reflect.DeepEqual(skipped, want) {
			t.Errorf("skipped:\n%s\nwant:\n%s", fmtSkipped(skipped), fmtSkipped(want))
		}
	})
}

func TestParseRampPageMalformedPages(t *testing.T) {
	checkMalformedPages(t, "ramp", ParseRampPage)
}

func FuzzParseRampPage(f *testing.F) {
	fuzzPageParser(f, "ramp", ParseRampPage)
}

func TestNewRampValidation(t *testing.T) {
	ok := provider.Settings{BaseURL: "https://api.circle.com", PageSize: 10, Values: map[string]string{"api_key": testKey}}
	for _, tc := range []struct {
		name   string
		change func(*provider.Settings)
		want   []string
	}{
		{"no api key", func(s *provider.Settings) { *s = s.With("api_key", "") }, []string{"api_key: must be set"}},
		{"one part", func(s *provider.Settings) { *s = s.With("api_key", "Zq8sNw3kVt5usecret") }, []string{"api_key", "it has 1", "PREFIX:ID:SECRET"}},
		{"two parts", func(s *provider.Settings) { *s = s.With("api_key", "TEST_API_KEY:Zq8sNw3kVt5usecret") }, []string{"api_key", "it has 2"}},
		{"four parts", func(s *provider.Settings) { *s = s.With("api_key", "TEST_API_KEY:6f1d:Zq8sNw3kVt5usecret:x") }, []string{"api_key", "it has 4"}},
		{"empty prefix", func(s *provider.Settings) { *s = s.With("api_key", ":6f1d:Zq8sNw3kVt5usecret") }, []string{"api_key", "PREFIX part", "empty"}},
		{"empty id", func(s *provider.Settings) { *s = s.With("api_key", "TEST_API_KEY::Zq8sNw3kVt5usecret") }, []string{"api_key", "ID part", "empty"}},
		{"empty secret", func(s *provider.Settings) { *s = s.With("api_key", "TEST_API_KEY:6f1d:") }, []string{"api_key", "SECRET part", "empty"}},
		{"space in secret", func(s *provider.Settings) { *s = s.With("api_key", "TEST_API_KEY:6f1d:Zq8sNw3k Vt5usecret") }, []string{"api_key", "SECRET part", "spaces"}},
		{"newline", func(s *provider.Settings) { *s = s.With("api_key", "TEST_API_KEY:6f1d:Zq8sNw3kVt5usecret\n") }, []string{"api_key", "SECRET part"}},
		{"no base url", func(s *provider.Settings) { s.BaseURL = "" }, []string{"base_url"}},
		{"credentials in base url", func(s *provider.Settings) { s.BaseURL = "https://user:hunter2@api.circle.com" }, []string{"base_url"}},
		{"page size 0", func(s *provider.Settings) { s.PageSize = 0 }, []string{"page_size", "0", "1..50"}},
		{"page size 51", func(s *provider.Settings) { s.PageSize = 51 }, []string{"page_size", "51", "1..50"}},
		{"empty terminal status", func(s *provider.Settings) { s.TerminalStatuses = []string{"COMPLETED", " "} }, []string{"terminal_statuses[1]", "empty"}},
		{"everything", func(s *provider.Settings) {
			*s = provider.Settings{BaseURL: "x", PageSize: 100, TerminalStatuses: []string{""}, Values: map[string]string{"api_key": "Zq8sNw3kVt5usecret"}}
		}, []string{"api_key", "base_url", "page_size", "terminal_statuses[0]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := ok
			tc.change(&s)
			src, err := NewRamp(s, nil)
			if err == nil || src != nil {
				t.Fatalf("NewRamp(%+v) = %v, %v; want an error", s, src, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
			for _, secret := range []string{"hunter2", "Zq8sNw3k", "6f1d"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error shows part of a secret (%s): %v", secret, err)
				}
			}
		})
	}
	for _, size := range []int{1, 50} {
		s := ok
		s.PageSize = size
		if _, err := NewRamp(s, nil); err != nil {
			t.Errorf("page_size %d: %v", size, err)
		}
	}
	s := ok.With("api_key", "LIVE_API_KEY:0a1b2c3d4e5f:9f8e7d6c5b4a")
	if _, err := NewRamp(s, nil); err != nil {
		t.Errorf("a live key: %v", err)
	}
}

func TestRampWalkRequests(t *testing.T) {
	f := newRampFake(testKey)
	ids := fillRamp(f, 10)
	now := t0.Add(90*time.Second + 700*time.Millisecond)
	src := newTestRamp(t, startFake(t, f), 4, now)

	from := t0.Add(-3 * time.Minute) // inclusive: ids 0..7 (two per minute)
	if got := walkCPN(t, src, from); !reflect.DeepEqual(got, ids[:8]) {
		t.Errorf("walk = %v\nwant %v", got, ids[:8])
	}
	reqs := f.listRequests()
	want := []url.Values{
		{"pageSize": {"4"}, "to": {"2025-06-01T12:01:30Z"}, "from": {"2025-06-01T11:57:00Z"}},
		{"pageSize": {"4"}, "to": {"2025-06-01T12:01:30Z"}, "from": {"2025-06-01T11:57:00Z"}, "pageAfter": {ids[3]}},
	}
	if len(reqs) != len(want) {
		t.Fatalf("%d list requests, want %d", len(reqs), len(want))
	}
	for i, r := range reqs {
		if !reflect.DeepEqual(r.query, want[i]) {
			t.Errorf("request %d query = %v, want %v", i, r.query, want[i])
		}
		if a, acc := r.header.Get("Authorization"), r.header.Get("Accept"); a != "Bearer "+testKey || acc != "application/json" {
			t.Errorf("request %d: Authorization %q, Accept %q", i, a, acc)
		}
	}
	if got := walkCPN(t, src, time.Time{}); !reflect.DeepEqual(got, ids) {
		t.Errorf("walk without from = %v\nwant %v", got, ids)
	}
}

// TestRampLargestPage walks with the largest page size the collection serves, without a
// Link header: a full page of 50 continues, a short one ends the walk.
func TestRampLargestPage(t *testing.T) {
	f := newRampFake(testKey)
	f.noLink = true
	ids := fillRamp(f, 120)
	src := newTestRamp(t, startFake(t, f), rampMaxPageSize, t0)
	if got := walkCPN(t, src, time.Time{}); !reflect.DeepEqual(got, ids) {
		t.Errorf("walk listed %d sessions, want %d in order", len(got), len(ids))
	}
	if n := len(f.listRequests()); n != 3 {
		t.Errorf("%d list requests, want 3", n)
	}
}

func TestRampErrors(t *testing.T) {
	checkCircleErrors(t, rampPath, func(t *testing.T, baseURL, key string) provider.Source {
		return newTestRamp(t, baseURL, 10, t0)
	})
}

func TestRampGet(t *testing.T) {
	f := newRampFake(testKey)
	fillRamp(f, 6)
	src := newTestRamp(t, startFake(t, f), 50, t0)
	checkCircleGet(t, f, src, 6, "session", rampSessionJSON("y", t0, "PENDING"))
}
