package circle

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller/provider"
	"github.com/payments-watcher/watcher/poller/provider/providertest"
)

// testKey has the shape of a Circle key; tests assert that it never shows in errors.
const testKey = "TEST_API_KEY:6f1d0c2e9a7b:Zq8sNw3kVt5u"

// t0 is the creation time of the newest items the fakes hold.
var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

//go:embed testdata/cpn/example.json
var exampleJSON []byte

// cpnPaymentJSON is the documented example payment with id, createDate and status
// replaced, and nested ids made unique to the payment.
func cpnPaymentJSON(id string, created time.Time, status string) json.RawMessage {
	var page struct {
		Data []map[string]any `json:"data"`
	}
	dec := json.NewDecoder(bytes.NewReader(exampleJSON))
	dec.UseNumber()
	if err := dec.Decode(&page); err != nil {
		panic(fmt.Sprintf("testdata/cpn/example.json: %v", err))
	}
	p := page.Data[0]
	p["id"], p["createDate"], p["status"] = id, created.Format(time.RFC3339Nano), status
	for _, field := range []string{"rfis", "onChainTransactions", "refunds"} {
		for i, e := range p[field].([]any) {
			e.(map[string]any)["id"] = fmt.Sprintf("%s-%s-%d", id, field, i)
		}
	}
	b, err := json.Marshal(p)
	if err != nil {
		panic(err)
	}
	return b
}

func fakeID(i int) string { return fmt.Sprintf("c4d1da72-0000-4000-8000-%012d", i) }

var fakeStatuses = []string{"CREATED", "CRYPTO_FUNDS_PENDING", "FIAT_PAYMENT_INITIATED", "COMPLETED", "FAILED"}

// fillCPN adds n payments to f, two per minute going back from t0 (so that creation
// times tie), and returns their ids newest first.
func fillCPN(f *circleFake, n int) []string {
	for i := n - 1; i >= 0; i-- {
		created := t0.Add(-time.Duration(i/2) * time.Minute)
		f.add(fakeID(i), created, cpnPaymentJSON(fakeID(i), created, fakeStatuses[i%len(fakeStatuses)]))
	}
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fakeID(i)
	}
	return ids
}

// newTestCPN builds a CPN source on baseURL whose clock reads now.
func newTestCPN(t *testing.T, baseURL string, pageSize int, now time.Time) *cpnSource {
	t.Helper()
	s, err := NewCPN(provider.Settings{Name: "cpn", BaseURL: baseURL, PageSize: pageSize, Values: map[string]string{"api_key": testKey}}, &provider.Client{})
	if err != nil {
		t.Fatalf("NewCPN: %v", err)
	}
	src := s.(*cpnSource)
	src.l.now = func() time.Time { return now }
	return src
}

// startFake serves f and returns its base URL.
func startFake(t *testing.T, f http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return srv.URL
}

// walkCPN pages src to the end and returns the ids, failing t on any error or skip.
func walkCPN(t *testing.T, src provider.Source, from time.Time) []string {
	t.Helper()
	var ids []string
	cursor := ""
	for range providertest.MaxPages {
		p, err := src.Page(t.Context(), provider.Request{Cursor: cursor, From: from})
		if err != nil {
			t.Fatalf("page at %q: %v", cursor, err)
		}
		if len(p.Skipped) > 0 {
			t.Fatalf("page at %q skipped %+v", cursor, p.Skipped)
		}
		for _, it := range p.Items {
			ids = append(ids, it.ID)
		}
		if p.Next == "" {
			return ids
		}
		cursor = p.Next
	}
	t.Fatalf("walk did not end within %d pages", providertest.MaxPages)
	return nil
}

func cpnContractFake(configure func(*circleFake)) providertest.Fake {
	return providertest.Fake{
		PageSize: 4,
		Handler: func(n int, apiKey string) (http.Handler, []string) {
			f := newCircleFake(cpnPath, apiKey)
			configure(f)
			return f, fillCPN(f, n)
		},
		WriteError: writeCircleError,
		Malformed: []string{
			`{"data":{}}`,
			`{"data":null}`,
			`{"payments":[]}`,
			`[]`,
			`{"data":[{"id":"c4d1da72-111e-4d52-bdbf-2e74a2d803d5","status":"CREATED"}]`,
		},
		MissingID: "00000000-0000-4000-8000-000000000000",
	}
}

func TestCPNContract(t *testing.T) {
	newSource := func(baseURL, apiKey string) provider.Source {
		src, err := NewCPN(provider.Settings{BaseURL: baseURL, PageSize: 4, Values: map[string]string{"api_key": apiKey}}, nil)
		if err != nil {
			t.Errorf("NewCPN: %v", err)
			return nil
		}
		return src
	}
	t.Run("link_header", func(t *testing.T) {
		providertest.CheckSource(t, newSource, cpnContractFake(func(*circleFake) {}))
	})
	t.Run("relative_links", func(t *testing.T) {
		providertest.CheckSource(t, newSource, cpnContractFake(func(f *circleFake) { f.relativeLinks = true }))
	})
	t.Run("no_link_header", func(t *testing.T) {
		providertest.CheckSource(t, newSource, cpnContractFake(func(f *circleFake) { f.noLink = true }))
	})
}

func TestCPNProvider(t *testing.T) {
	if CPN.Kind != "payment" || CPN.DefaultBaseURL != "https://api.circle.com" || CPN.MaxPageSize != 200 ||
		CPN.DefaultPageSize != 50 || !reflect.DeepEqual(CPN.Credentials(), []string{"api_key"}) || CPN.New == nil {
		t.Errorf("CPN = %+v", CPN)
	}
	src, err := CPN.New(provider.Settings{BaseURL: CPN.DefaultBaseURL, PageSize: CPN.DefaultPageSize, Values: map[string]string{"api_key": testKey}}, nil)
	if err != nil {
		t.Fatalf("CPN.New with the defaults: %v", err)
	}
	if _, ok := src.(provider.Getter); !ok {
		t.Errorf("the CPN source does not implement provider.Getter")
	}
}

// TestCPNStatusTables pins the tables to DESIGN §3: every documented value, nothing else.
func TestCPNStatusTables(t *testing.T) {
	p, a, c, f := diff.Pending, diff.ActionRequired, diff.Completed, diff.Failed
	tables := []struct {
		name string
		got  diff.Mapping
		want diff.Mapping
	}{
		{"payment", CPNPaymentStatus, diff.Mapping{
			"CREATED": {State: p}, "CRYPTO_FUNDS_PENDING": {State: p}, "FIAT_PAYMENT_INITIATED": {State: diff.Processing},
			"COMPLETED": {State: c, Terminal: true}, "FAILED": {State: f, Terminal: true},
		}},
		{"rfi", CPNRFIStatus, diff.Mapping{
			"INFORMATION_REQUIRED": {State: a}, "IN_REVIEW": {State: diff.Processing},
			"APPROVED": {State: c, Terminal: true}, "FAILED": {State: f, Terminal: true},
		}},
		{"refund", CPNRefundStatus, diff.Mapping{
			"CREATED": {State: p}, "COMPLETED": {State: c, Terminal: true}, "FAILED": {State: f, Terminal: true},
		}},
		{"onchain_transaction", CPNOnchainStatus, diff.Mapping{
			"CREATED": {State: p}, "PENDING": {State: p}, "BROADCASTED": {State: diff.Processing},
			"COMPLETED": {State: c, Terminal: true}, "FAILED": {State: f, Terminal: true},
		}},
	}
	for _, tc := range tables {
		t.Run(tc.name, func(t *testing.T) {
			if !maps.Equal(tc.got, tc.want) {
				t.Errorf("table = %v\nwant %v", tc.got, tc.want)
			}
			for raw, row := range tc.want {
				s, known := tc.got.Status(raw, "")
				if !known || s.State != row.State || s.Terminal != row.Terminal || s.Raw != raw {
					t.Errorf("Status(%q) = %+v, known %v; want %+v", raw, s, known, row)
				}
			}
			if s, known := tc.got.Status("NOT_DOCUMENTED", ""); known || s.State != diff.Unknown || s.Terminal {
				t.Errorf("an undocumented status maps to %+v (known %v), want unknown and not terminal", s, known)
			}
		})
	}
}

// TestParseCPNPageExample checks the documented example field by field.
func TestParseCPNPageExample(t *testing.T) {
	items, skipped, err := ParseCPNPage(exampleJSON)
	if err != nil || len(skipped) != 0 || len(items) != 1 {
		t.Fatalf("ParseCPNPage(example) = %d items, skipped %v, err %v", len(items), skipped, err)
	}
	it := items[0]
	want := diff.Item{
		Kind:      "payment",
		ID:        "c4d1da72-111e-4d52-bdbf-2e74a2d803d5",
		Status:    diff.Status{Raw: "COMPLETED", State: diff.Completed, Addendum: "IN_MANUAL_REVIEW", Terminal: true},
		CreatedAt: time.Date(2023, 1, 1, 12, 4, 5, 0, time.UTC),
		Amount:    &diff.Money{Value: decimal.RequireFromString("110.270000"), Currency: "USDC"},
		Failure:   &diff.Failure{Reason: "CANCELLED", Code: "PM01001"},
		Refs:      map[string]string{"customer_ref_id": "custom_ref_id", "ref_code": "custom_ref_id", "quote_id": "custom_ref_id"},
	}
	if it.Kind != want.Kind || it.ID != want.ID || it.Status != want.Status || !it.CreatedAt.Equal(want.CreatedAt) ||
		it.CreatedAt.Location() != time.UTC || !it.Amount.Value.Equal(want.Amount.Value) || it.Amount.Currency != "USDC" ||
		*it.Failure != *want.Failure || !maps.Equal(it.Refs, want.Refs) || it.Settling {
		t.Errorf("payment = %+v\nwant %+v", it, want)
	}
	if got := it.Amount.Value.StringFixed(-it.Amount.Value.Exponent()); got != "110.270000" {
		t.Errorf("amount keeps %s, want the provider's 110.270000", got)
	}
	var compact bytes.Buffer
	var page struct{ Data []json.RawMessage }
	json.Unmarshal(exampleJSON, &page)
	json.Compact(&compact, page.Data[0])
	if !bytes.Equal(it.Raw, compact.Bytes()) {
		t.Errorf("raw = %s\nwant the provider's object %s", it.Raw, compact.Bytes())
	}
	const sameID = "c4d1da72-111e-4d52-bdbf-2e74a2d803d5" // the example reuses one id everywhere
	wantNested := []struct {
		kind   string
		status diff.Status
		raw    string
		refs   map[string]string
		amount string
	}{
		{"payment_rfi", diff.Status{Raw: "APPROVED", State: diff.Completed, Terminal: true}, `{"id":"` + sameID + `","status":"APPROVED"}`, nil, ""},
		{"payment_onchain_transaction", diff.Status{Raw: "PENDING", State: diff.Pending}, `{"id":"` + sameID + `","status":"PENDING"}`, nil, ""},
		{"payment_refund", diff.Status{Raw: "CREATED", State: diff.Pending},
			`{"id":"` + sameID + `","status":"CREATED","amount":{"amount":"110.270000","currency":"USDC"},"transactionHash":"<string>"}`,
			map[string]string{"tx_hash": "<string>"}, "110.27"},
	}
	if len(it.Nested) != len(wantNested) {
		t.Fatalf("nested = %+v, want %d entries", it.Nested, len(wantNested))
	}
	for i, w := range wantNested {
		n := it.Nested[i]
		if n.Kind != w.kind || n.ID != sameID || n.Status != w.status || !n.CreatedAt.Equal(it.CreatedAt) ||
			string(n.Raw) != w.raw || !maps.Equal(n.Refs, w.refs) || len(n.Nested) != 0 {
			t.Errorf("nested[%d] = %+v (raw %s)\nwant %+v", i, n, n.Raw, w)
		}
		if (n.Amount == nil) != (w.amount == "") || (n.Amount != nil && (n.Amount.Value.String() != w.amount || n.Amount.Currency != "USDC")) {
			t.Errorf("nested[%d] amount = %+v, want %q USDC", i, n.Amount, w.amount)
		}
	}
}

func TestParseCPNPageEdgeCases(t *testing.T) {
	parse := func(t *testing.T, name string) ([]diff.Item, []provider.Skipped) {
		t.Helper()
		body := readFixture(t, name)
		items, skipped, err := ParseCPNPage(body)
		if err != nil {
			t.Fatalf("ParseCPNPage(%s): %v", name, err)
		}
		return items, skipped
	}
	t.Run("big decimals are exact", func(t *testing.T) {
		items, skipped := parse(t, "big_decimal.json")
		if len(items) != 3 || len(skipped) != 0 {
			t.Fatalf("%d items, skipped %v", len(items), skipped)
		}
		for _, c := range []struct {
			got  *diff.Money
			want string
		}{
			{items[0].Amount, "123456789012345678901234567890.123456789012345678"},
			{items[0].Nested[0].Amount, "0.000000000000000001"},
			{items[0].Nested[1].Amount, "110.27"}, // a bare JSON number, read from its literal
			{items[0].Nested[2].Amount, "1500"},
			{items[1].Amount, "-0.1"},
			{items[2].Amount, "99999999999999999999999999999999999999.99"},
		} {
			if c.got == nil || c.got.Value.String() != c.want || !c.got.Value.Equal(decimal.RequireFromString(c.want)) {
				t.Errorf("amount %+v, want exactly %s", c.got, c.want)
			}
		}
	})
	t.Run("status addendum", func(t *testing.T) {
		items, _ := parse(t, "addendum.json")
		for i, want := range []string{"IN_MANUAL_REVIEW", "", ""} {
			if items[i].Status.Addendum != want || items[i].Status.Raw != "CREATED" {
				t.Errorf("item %d status %+v, want addendum %q", i, items[i].Status, want)
			}
		}
	})
	t.Run("nulls and absent optional fields", func(t *testing.T) {
		items, skipped := parse(t, "nulls.json")
		if len(items) != 2 || len(skipped) != 0 {
			t.Fatalf("%d items, skipped %v", len(items), skipped)
		}
		for _, it := range items {
			if it.Amount != nil || it.Failure != nil || it.Refs != nil || len(it.Nested) != 0 || it.Status.Addendum != "" {
				t.Errorf("item %s = %+v, want no amount, failure, refs, nested items or addendum", it.ID, it)
			}
		}
	})
	t.Run("creation times are UTC", func(t *testing.T) {
		items, _ := parse(t, "minimal.json")
		for i, want := range []time.Time{
			time.Date(2025, 3, 4, 12, 0, 0, 123456000, time.UTC),
			time.Date(2025, 3, 4, 11, 59, 30, 0, time.UTC),
			time.Date(2025, 3, 4, 11, 30, 0, 0, time.UTC),
		} {
			if !items[i].CreatedAt.Equal(want) || items[i].CreatedAt.Location() != time.UTC {
				t.Errorf("item %d created %v, want %v", i, items[i].CreatedAt, want)
			}
		}
		if f := items[2].Failure; f == nil || *f != (diff.Failure{Code: "PM09000"}) || !items[2].Settling {
			t.Errorf("failed payment: failure %+v, settling %v; want the code alone and settling", f, items[2].Settling)
		}
	})
	t.Run("failed payments keep settling", func(t *testing.T) {
		items, _ := parse(t, "nested.json")
		if !items[0].Settling || items[1].Settling {
			t.Errorf("settling = %v, %v; want true for the FAILED payment only", items[0].Settling, items[1].Settling)
		}
	})
	t.Run("unknown statuses map to unknown", func(t *testing.T) {
		items, skipped := parse(t, "unknown_status.json")
		if len(items) != 2 || len(skipped) != 0 {
			t.Fatalf("%d items, skipped %v", len(items), skipped)
		}
		all := append([]diff.Item{items[0], items[1]}, items[0].Nested...)
		for _, it := range all {
			if it.Status.State != diff.Unknown || it.Status.Terminal || it.Status.Raw == "" {
				t.Errorf("%s %s: status %+v, want unknown, not terminal, raw kept", it.Kind, it.ID, it.Status)
			}
		}
	})
	t.Run("activeRfi", func(t *testing.T) {
		items, skipped := parse(t, "active_rfi.json")
		got := map[string][]string{}
		for _, it := range items {
			for _, n := range it.Nested {
				got[it.ID] = append(got[it.ID], n.Kind+" "+n.ID+" "+n.Status.Raw)
			}
		}
		want := map[string][]string{
			"a0000000-0000-4000-8000-000000000001": {"payment_rfi ar000000-0000-4000-8000-000000000001 INFORMATION_REQUIRED"},
			"a0000000-0000-4000-8000-000000000002": {"payment_rfi ar000000-0000-4000-8000-000000000002 IN_REVIEW"},
			"a0000000-0000-4000-8000-000000000003": {
				"payment_rfi ar000000-0000-4000-8000-000000000003 APPROVED",
				"payment_rfi ar000000-0000-4000-8000-000000000004 IN_REVIEW",
			},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("nested = %v\nwant %v", got, want)
		}
		wantSkipped := []string{"a0000000-0000-4000-8000-000000000004/activeRfi", "a0000000-0000-4000-8000-000000000005/activeRfi"}
		if ids := skippedIDs(skipped); !reflect.DeepEqual(ids, wantSkipped) || len(items) != 5 {
			t.Errorf("%d items, skipped %v; want 5 items, skipped %v", len(items), skipped, wantSkipped)
		}
	})
	t.Run("malformed nested entries cost only themselves", func(t *testing.T) {
		items, skipped := parse(t, "nested.json")
		const p = "f0000000-0000-4000-8000-00000000000e"
		wantSkipped := []string{
			p + "/rfis[1]", p + "/rfis[2]", p + "/rfis[3]", p + "/rfis[4]", p + "/rfis[5]",
			p + "/onChainTransactions", p + "/refunds[0]", p + "/refunds[2]",
		}
		if ids := skippedIDs(skipped); !reflect.DeepEqual(ids, wantSkipped) {
			t.Errorf("skipped %v\nwant %v", skipped, wantSkipped)
		}
		if len(items) != 2 || len(items[0].Nested) != 12 || len(items[1].Nested) != 2 {
			t.Fatalf("items = %+v", items)
		}
		if n := items[1].Nested; n[0].ID != "r2000000-0000-4000-8000-000000000001" || n[0].Status.Raw != "APPROVED" ||
			n[1].ID != "e2000000-0000-4000-8000-000000000002" || n[1].Amount.Value.String() != "10" {
			t.Errorf("kept nested = %+v", n)
		}
	})
	t.Run("malformed items are skipped, the rest kept", func(t *testing.T) {
		items, skipped := parse(t, "malformed_items.json")
		if ids := itemIDs(items); !reflect.DeepEqual(ids, []string{"m0000000-0000-4000-8000-000000000001", "m0000000-0000-4000-8000-000000000012"}) {
			t.Errorf("kept %v", ids)
		}
		want := []provider.Skipped{
			{ID: "", Reason: "data[1]: no id"},
			{ID: "", Reason: "data[2]: no id"},
			{ID: "", Reason: "data[3]: field id: unexpected JSON number"},
			{ID: "m0000000-0000-4000-8000-000000000005", Reason: "data[4]: createDate: missing"},
			{ID: "m0000000-0000-4000-8000-000000000006", Reason: `data[5]: createDate "yesterday": not an RFC 3339 time`},
			{ID: "m0000000-0000-4000-8000-000000000007", Reason: `data[6]: createDate "2025-06-01 00:00:07": not an RFC 3339 time`},
			{ID: "m0000000-0000-4000-8000-000000000008", Reason: "data[7]: field createDate: unexpected JSON number"},
			{ID: "m0000000-0000-4000-8000-000000000009", Reason: "data[8]: no status"},
			{ID: "m0000000-0000-4000-8000-00000000000a", Reason: "data[9]: field status: unexpected JSON number"},
			{ID: "m0000000-0000-4000-8000-00000000000b", Reason: `data[10]: sourceAmount.amount "abc": not a decimal`},
			{ID: "m0000000-0000-4000-8000-00000000000c", Reason: `data[11]: sourceAmount.amount "1.2.3": not a decimal`},
			{ID: "m0000000-0000-4000-8000-00000000000d", Reason: "data[12]: sourceAmount.amount true: not a decimal"},
			{ID: "m0000000-0000-4000-8000-00000000000e", Reason: `data[13]: sourceAmount.amount "1e-2000": exponent -2000 outside ±100`},
			{ID: "m0000000-0000-4000-8000-00000000000f", Reason: "data[14]: field sourceAmount: unexpected JSON string"},
			{ID: "m0000000-0000-4000-8000-000000000010", Reason: `data[15]: sourceAmount.amount "NaN": not a decimal`},
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

func TestParseCPNPageMalformedPages(t *testing.T) {
	for _, name := range []string{"page_not_json.json", "page_no_data.json", "page_data_object.json", "page_data_null.json", "page_truncated.json"} {
		t.Run(name, func(t *testing.T) {
			items, skipped, err := ParseCPNPage(readFixture(t, name))
			var me *provider.MalformedError
			if !errors.As(err, &me) || items != nil || skipped != nil {
				t.Errorf("ParseCPNPage = %d items, %d skipped, err %v; want a *provider.MalformedError", len(items), len(skipped), err)
			}
		})
	}
	items, skipped, err := ParseCPNPage(readFixture(t, "empty.json"))
	if err != nil || len(items) != 0 || len(skipped) != 0 {
		t.Errorf("empty page: %d items, %v skipped, err %v", len(items), skipped, err)
	}
}

// TestCPNSecretFields pins what is removed from CPN raw objects: nothing, since a CPN
// payment carries no credentials; the redact hook itself is tested in circle_test.go.
func TestCPNSecretFields(t *testing.T) {
	if len(cpnSecretFields) != 0 || len(cpnEndpoint.secretFields) != 0 {
		t.Errorf("CPN secret fields = %v, want none", cpnSecretFields)
	}
}

func TestCPNWalkRequests(t *testing.T) {
	f := newCircleFake(cpnPath, testKey)
	ids := fillCPN(f, 10)
	now := t0.Add(90*time.Second + 700*time.Millisecond)
	src := newTestCPN(t, startFake(t, f)+"/", 4, now) // a trailing slash on base_url is dropped

	from := t0.Add(-3 * time.Minute) // inclusive: ids 0..7 (two per minute)
	got := walkCPN(t, src, from)
	if !reflect.DeepEqual(got, ids[:8]) {
		t.Errorf("walk = %v\nwant %v", got, ids[:8])
	}
	reqs := f.listRequests()
	if len(reqs) != 2 {
		t.Fatalf("%d list requests, want 2", len(reqs))
	}
	want := []url.Values{
		{"pageSize": {"4"}, "to": {"2025-06-01T12:01:30Z"}, "from": {"2025-06-01T11:57:00Z"}},
		{"pageSize": {"4"}, "to": {"2025-06-01T12:01:30Z"}, "from": {"2025-06-01T11:57:00Z"}, "pageAfter": {ids[3]}},
	}
	for i, r := range reqs {
		if !reflect.DeepEqual(r.query, want[i]) {
			t.Errorf("request %d query = %v, want %v", i, r.query, want[i])
		}
		if a, acc := r.header.Get("Authorization"), r.header.Get("Accept"); a != "Bearer "+testKey || acc != "application/json" {
			t.Errorf("request %d: Authorization %q, Accept %q", i, a, acc)
		}
	}

	// Without From, the walk reaches the oldest item.
	if got := walkCPN(t, src, time.Time{}); !reflect.DeepEqual(got, ids) {
		t.Errorf("walk without from = %v\nwant %v", got, ids)
	}
}

// TestCPNPinnedToDuringInserts inserts payments between page requests: the walk must
// list each earlier payment exactly once, with the same `to` on every request, and the
// next walk starts with the new ones.
func TestCPNPinnedToDuringInserts(t *testing.T) {
	for _, noLink := range []bool{false, true} {
		t.Run(fmt.Sprintf("noLink=%v", noLink), func(t *testing.T) {
			f := newCircleFake(cpnPath, testKey)
			f.noLink = noLink
			f.now = func() time.Time { return t0.Add(time.Hour) } // the provider's clock runs ahead
			ids := fillCPN(f, 9)
			var inserted atomic.Int32
			f.onList = func(url.Values) {
				k := int(inserted.Add(1))
				id := fmt.Sprintf("1a5e7000-0000-4000-8000-%012d", k)
				created := t0.Add(time.Duration(k) * time.Second)
				f.add(id, created, cpnPaymentJSON(id, created, "CREATED"))
			}
			src := newTestCPN(t, startFake(t, f), 3, t0)
			got := walkCPN(t, src, time.Time{})
			if !reflect.DeepEqual(got, ids) {
				t.Errorf("walk during inserts = %v\nwant %v", got, ids)
			}
			reqs := f.listRequests()
			for i, r := range reqs {
				if to := r.query.Get("to"); to != "2025-06-01T12:00:00Z" {
					t.Errorf("request %d: to = %q, want the walk's pinned 2025-06-01T12:00:00Z", i, to)
				}
			}
			n := int(inserted.Load())
			src.l.now = func() time.Time { return t0.Add(time.Hour) }
			f.configure(func(f *circleFake) { f.onList = nil })
			got = walkCPN(t, src, time.Time{})
			if len(got) != n+len(ids) || got[0] != fmt.Sprintf("1a5e7000-0000-4000-8000-%012d", n) || !reflect.DeepEqual(got[n:], ids) {
				t.Errorf("next walk = %v, want the %d inserted payments newest first, then %v", got, n, ids)
			}
		})
	}
}

func TestCPNPageAfterFallback(t *testing.T) {
	for _, tc := range []struct {
		n         int
		wantAfter []string // pageAfter of each request after the first
	}{
		{n: 7, wantAfter: []string{fakeID(3)}},
		{n: 8, wantAfter: []string{fakeID(3), fakeID(7)}}, // a full last page costs one empty page
		{n: 0},
	} {
		t.Run(fmt.Sprint(tc.n), func(t *testing.T) {
			f := newCircleFake(cpnPath, testKey)
			f.noLink = true
			ids := fillCPN(f, tc.n)
			src := newTestCPN(t, startFake(t, f), 4, t0)
			if got := walkCPN(t, src, time.Time{}); !slices.Equal(got, ids) {
				t.Errorf("walk = %v, want %v", got, ids)
			}
			reqs := f.listRequests()
			if len(reqs) != len(tc.wantAfter)+1 {
				t.Fatalf("%d requests, want %d", len(reqs), len(tc.wantAfter)+1)
			}
			for i, r := range reqs[1:] {
				if a, ps, to := r.query.Get("pageAfter"), r.query.Get("pageSize"), r.query.Get("to"); a != tc.wantAfter[i] || ps != "4" || to != "2025-06-01T12:00:00Z" {
					t.Errorf("request %d: pageAfter %q pageSize %q to %q; want %q, 4, the pinned to", i+1, a, ps, to, tc.wantAfter[i])
				}
			}
		})
	}
}

// TestCPNLinkDecidesTheLastPage serves one full page: without a Link header the adapter
// continues after its last id; a Link header without rel="next" ends the walk.
func TestCPNLinkDecidesTheLastPage(t *testing.T) {
	for _, tc := range []struct {
		name     string
		link     []string
		wantNext string
	}{
		{"no Link header", nil, "pageAfter=c4d1da72-111e-4d52-bdbf-2e74a2d803d5"},
		{"Link without next", []string{`</v1/cpn/payments?pageSize=1>; rel="self", </v1/cpn/payments?pageSize=1>; rel="first"`}, ""},
		{"empty Link header", []string{""}, ""},
		{"next in a second Link header", []string{`</v1/cpn/payments?pageSize=1>; rel="self"`, `</v1/cpn/payments?pageSize=1&pageAfter=x>; rel=next`}, "pageAfter=x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := startFake(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header()["Link"] = tc.link
				w.Write(exampleJSON)
			}))
			src := newTestCPN(t, base, 1, t0)
			p, err := src.Page(t.Context(), provider.Request{})
			if err != nil {
				t.Fatal(err)
			}
			if (tc.wantNext == "") != (p.Next == "") || !strings.Contains(p.Next, tc.wantNext) {
				t.Errorf("Next = %q, want one with %q", p.Next, tc.wantNext)
			}
		})
	}
}

// TestCPNFollowsForeignLinksOnBaseURL: a gateway passes on Circle's links, which name
// Circle's host. The walk follows them on base_url's origin (reporting it once a
// page), reaches every item, and never sends anything to the other origin.
func TestCPNFollowsForeignLinksOnBaseURL(t *testing.T) {
	var foreign atomic.Int32
	other := startFake(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		foreign.Add(1)
		w.Write([]byte(`{"data":[]}`))
	}))
	f := newCircleFake(cpnPath, testKey)
	want := fillCPN(f, 5)
	base := startFake(t, f)
	otherURL, _ := url.Parse(other)
	for name, origin := range map[string]string{
		"same host, other port":   other,
		"same host, other scheme": "https://" + strings.TrimPrefix(base, "http://"),
		"other host":              "http://attacker.example",
	} {
		t.Run(name, func(t *testing.T) {
			f.configure(func(f *circleFake) { f.linkOrigin = origin })
			src := newTestCPN(t, base, 2, t0)
			var got []string
			req := provider.Request{}
			for range 10 {
				p, err := src.Page(t.Context(), req)
				if err != nil {
					t.Fatalf("Page at %q: %v", req.Cursor, err)
				}
				for _, it := range p.Items {
					got = append(got, it.ID)
				}
				if p.Next == "" {
					break
				}
				if !strings.HasPrefix(p.Next, base+cpnPath+"?") {
					t.Fatalf("next %q is not on base_url %s", p.Next, base)
				}
				a := src.Anomalies()
				if len(a) != 1 || a[0].Kind != provider.AnomalyForeignLink || !strings.Contains(a[0].Detail, origin) {
					t.Errorf("anomalies after a foreign link: %+v", a)
				}
				req.Cursor = p.Next
			}
			if !slices.Equal(got, want) {
				t.Errorf("walk = %v, want %v", got, want)
			}
		})
	}
	f.configure(func(f *circleFake) { f.linkOrigin = "" })
	src := newTestCPN(t, base, 2, t0)
	_, err := src.Page(t.Context(), provider.Request{Cursor: other + cpnPath + "?pageAfter=x"})
	if err == nil || !strings.Contains(err.Error(), otherURL.Host) {
		t.Errorf("Page at a cursor on another host: %v, want a refusal naming it", err)
	}
	for _, cursor := range []string{"not a url", "/v1/cpn/payments?pageAfter=x"} {
		if _, err := src.Page(t.Context(), provider.Request{Cursor: cursor}); err == nil {
			t.Errorf("Page at cursor %q: no error", cursor)
		}
	}
	if n := foreign.Load(); n != 0 {
		t.Errorf("the other host received %d requests", n)
	}
}

func TestCPNErrors(t *testing.T) {
	for _, tc := range []struct {
		name      string
		key       string
		serve     func(w http.ResponseWriter)
		code      int
		message   string
		temporary bool
	}{
		{name: "wrong key", key: "TEST_API_KEY:6f1d0c2e9a7b:wrong", code: 401, message: "code 401: Malformed authorization."},
		{name: "forbidden", serve: func(w http.ResponseWriter) { writeCircleErrorMessage(w, 403, "Forbidden.") }, code: 403, message: "code 403: Forbidden."},
		{name: "bad request", serve: func(w http.ResponseWriter) { writeCircleErrorMessage(w, 400, "Invalid pageSize.") }, code: 400, message: "code 2: Invalid pageSize."},
		{name: "rate limited", serve: func(w http.ResponseWriter) { writeCircleError(w, 429) }, code: 429, message: "code 429: Too many requests.", temporary: true},
		{name: "server error", serve: func(w http.ResponseWriter) { writeCircleError(w, 500) }, code: 500, message: "code -1: Something went wrong.", temporary: true},
		{name: "gateway page", serve: func(w http.ResponseWriter) { w.WriteHeader(502); w.Write([]byte("<html>bad gateway</html>")) }, code: 502, temporary: true},
		{name: "key echoed", serve: func(w http.ResponseWriter) {
			writeCircleErrorMessage(w, 401, "Malformed authorization: "+testKey+"\nline two")
		}, code: 401, message: "code 401: Malformed authorization: [api_key] line two"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newCircleFake(cpnPath, testKey)
			if tc.key != "" {
				f.apiKey = tc.key
			}
			if tc.serve != nil {
				f.fail = func(w http.ResponseWriter, r *http.Request) bool { tc.serve(w); return true }
			}
			src := newTestCPN(t, startFake(t, f), 2, t0)
			_, err := src.Page(t.Context(), provider.Request{})
			var se *provider.StatusError
			if !errors.As(err, &se) {
				t.Fatalf("Page: %v, want a *provider.StatusError", err)
			}
			if se.Code != tc.code || se.Message != tc.message || se.Temporary() != tc.temporary || se.RequestID == "" {
				t.Errorf("StatusError = %+v; want code %d, message %q, temporary %v and the X-Request-Id", se, tc.code, tc.message, tc.temporary)
			}
			if strings.Contains(err.Error(), testKey) {
				t.Errorf("error shows the API key: %v", err)
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		base := srv.URL
		srv.Close()
		_, err := newTestCPN(t, base, 2, t0).Page(t.Context(), provider.Request{})
		if err == nil || strings.Contains(err.Error(), testKey) {
			t.Errorf("Page on a closed server: %v; want an error without the API key", err)
		}
	})
}

func TestNewCPNValidation(t *testing.T) {
	ok := provider.Settings{BaseURL: "https://api.circle.com", PageSize: 50, Values: map[string]string{"api_key": testKey}}
	for _, tc := range []struct {
		name   string
		change func(*provider.Settings)
		want   []string
	}{
		{"no api key", func(s *provider.Settings) { *s = s.With("api_key", "") }, []string{"api_key"}},
		{"no base url", func(s *provider.Settings) { s.BaseURL = "" }, []string{"base_url"}},
		{"ftp base url", func(s *provider.Settings) { s.BaseURL = "ftp://api.circle.com" }, []string{"base_url", "ftp://api.circle.com"}},
		{"relative base url", func(s *provider.Settings) { s.BaseURL = "api.circle.com" }, []string{"base_url"}},
		{"no host", func(s *provider.Settings) { s.BaseURL = "https://" }, []string{"base_url"}},
		{"query", func(s *provider.Settings) { s.BaseURL = "https://api.circle.com?x=1" }, []string{"base_url"}},
		{"credentials in base url", func(s *provider.Settings) { s.BaseURL = "https://user:hunter2@api.circle.com" }, []string{"base_url"}},
		{"page size 0", func(s *provider.Settings) { s.PageSize = 0 }, []string{"page_size", "0", "1..200"}},
		{"page size 201", func(s *provider.Settings) { s.PageSize = 201 }, []string{"page_size", "201"}},
		{"everything", func(s *provider.Settings) { *s = provider.Settings{BaseURL: "x", PageSize: -1} }, []string{"api_key", "base_url", "page_size"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := ok
			tc.change(&s)
			src, err := NewCPN(s, nil)
			if err == nil || src != nil {
				t.Fatalf("NewCPN(%+v) = %v, %v; want an error", s, src, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "hunter2") || (s.Value("api_key") != "" && strings.Contains(err.Error(), s.Value("api_key"))) {
				t.Errorf("error shows a secret: %v", err)
			}
		})
	}
	for _, size := range []int{1, 200} {
		s := ok
		s.PageSize = size
		if _, err := NewCPN(s, nil); err != nil {
			t.Errorf("page_size %d: %v", size, err)
		}
	}
}

func TestCPNBaseURLPathPrefix(t *testing.T) {
	f := newCircleFake("/circle"+cpnPath, testKey)
	ids := fillCPN(f, 5)
	src := newTestCPN(t, startFake(t, f)+"/circle", 2, t0)
	if got := walkCPN(t, src, time.Time{}); !reflect.DeepEqual(got, ids) {
		t.Errorf("walk = %v, want %v", got, ids)
	}
}

func TestCPNGet(t *testing.T) {
	f := newCircleFake(cpnPath, testKey)
	fillCPN(f, 6)
	const slashID = "odd/id"
	f.add(slashID, t0.Add(-time.Hour), cpnPaymentJSON(slashID, t0.Add(-time.Hour), "CREATED"))
	base := startFake(t, f)
	src := newTestCPN(t, base, 50, t0)
	checkCircleGet(t, f, src, 7, "payment", cpnPaymentJSON("y", t0, "CREATED"))

	p, err := src.Page(t.Context(), provider.Request{})
	if err != nil {
		t.Fatal(err)
	}
	want := p.Items[4]
	if got, err := src.Get(t.Context(), want.ID); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Get(%q) = %+v, %v\nlisted as %+v", want.ID, got, err, want)
	}
	before := f.requestCount()
	for _, id := range []string{"", ".", ".."} {
		if _, err := src.Get(t.Context(), id); err == nil {
			t.Errorf("Get(%q): no error", id)
		}
	}
	if n := f.requestCount() - before; n != 0 {
		t.Errorf("invalid ids caused %d requests", n)
	}
}

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := testdataFS.ReadFile("testdata/cpn/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func skippedIDs(s []provider.Skipped) []string {
	var ids []string
	for _, x := range s {
		ids = append(ids, x.ID)
	}
	return ids
}

func itemIDs(items []diff.Item) []string {
	var ids []string
	for _, it := range items {
		ids = append(ids, it.ID)
	}
	return ids
}

func fmtSkipped(s []provider.Skipped) string {
	var b strings.Builder
	for _, x := range s {
		fmt.Fprintf(&b, "  %q %q\n", x.ID, x.Reason)
	}
	return b.String()
}
