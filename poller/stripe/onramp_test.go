package stripe

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/base64"
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

// testKey has the shape of a Stripe test secret key; tests assert that it never shows.
const testKey = "sk_test_51Pq8ZfakeKey0x9Qd7Lm2Nz8Rk4Tw6Yb1Vc3Xe5Ua"

// t0 is the creation time (unix seconds) of the newest sessions the fakes hold.
const t0 = 1748779200 // 2025-06-01T12:00:00Z

// fixtureObject is the crypto.onramp_session of Stripe's OpenAPI fixtures, verbatim.
//
//go:embed testdata/onramp/object/fixtures3.json
var fixtureObject []byte

// sessionJSON is the fixture session with id, created and status replaced and a
// client secret of the shape Stripe gives.
func sessionJSON(id string, created int64, status string) json.RawMessage {
	dec := json.NewDecoder(bytes.NewReader(fixtureObject))
	dec.UseNumber()
	var s map[string]any
	if err := dec.Decode(&s); err != nil {
		panic(fmt.Sprintf("testdata/onramp/object/fixtures3.json: %v", err))
	}
	s["id"], s["created"], s["status"] = id, created, status
	s["client_secret"] = secretOf(id)
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return b
}

func secretOf(id string) string { return id + "_secret_Fk7Rq2Wm9Zx4Lp1Nv8Tb3Hc6Yd" }

func fakeID(i int) string { return fmt.Sprintf("cos_1Fake%06d", 999999-i) }

var documentedStatuses = []string{"initialized", "requires_payment", "fulfillment_processing", "fulfillment_complete", "rejected"}

// fill adds n sessions to f, two per minute going back from t0 (so that creation times
// tie and the id decides), and returns their ids newest first.
func fill(f *stripeFake, n int) []string {
	ids := make([]string, n)
	for i := n - 1; i >= 0; i-- { // oldest first, so that insertion order is not the answer
		ids[i] = fakeID(i)
		created := int64(t0 - (i/2)*60)
		status := documentedStatuses[i%len(documentedStatuses)]
		f.add(ids[i], created, status, sessionJSON(ids[i], created, status))
	}
	return ids
}

func startFake(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// newTestSource builds a source for baseURL with testKey.
func newTestSource(t *testing.T, baseURL string, pageSize int, version string) *onrampSource {
	t.Helper()
	s, err := NewOnrampSessions(provider.Settings{Name: "onramp", BaseURL: baseURL, PageSize: pageSize, Values: map[string]string{"api_key": testKey, "stripe_version": version}}, &provider.Client{})
	if err != nil {
		t.Fatalf("NewOnrampSessions: %v", err)
	}
	return s.(*onrampSource)
}

// walkIDs pages src to the end and returns the ids, failing t on any error or skip.
func walkIDs(t *testing.T, src provider.Source, from time.Time) []string {
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

// stripeKey turns the contract suite's keys, which have the shape of Circle's, into
// Stripe secret keys: a sk_test_ prefix and no colons.
func stripeKey(k string) string {
	return "sk_test_" + strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, k)
}

// keyGuard fails t when an error of the source it wraps shows one of keys, which the
// suite does not know about since they are derived from its own.
type keyGuard struct {
	t    *testing.T
	src  *onrampSource
	keys []string
}

func (g keyGuard) check(err error) {
	for _, k := range g.keys {
		if err != nil && strings.Contains(err.Error(), k) {
			g.t.Errorf("error shows the API key: %v", err)
		}
	}
}

func (g keyGuard) Page(ctx context.Context, req provider.Request) (provider.Page, error) {
	p, err := g.src.Page(ctx, req)
	g.check(err)
	return p, err
}

func (g keyGuard) Get(ctx context.Context, id string) (diff.Item, error) {
	it, err := g.src.Get(ctx, id)
	g.check(err)
	return it, err
}

func TestOnrampContract(t *testing.T) {
	var keys []string
	providertest.CheckSource(t, func(baseURL, apiKey string) provider.Source {
		key := stripeKey(apiKey)
		keys = append(keys, key)
		src, err := NewOnrampSessions(provider.Settings{BaseURL: baseURL, PageSize: 4, Values: map[string]string{"api_key": key}}, nil)
		if err != nil {
			t.Errorf("NewOnrampSessions: %v", err)
			return nil
		}
		return keyGuard{t: t, src: src.(*onrampSource), keys: keys}
	}, providertest.Fake{
		PageSize: 4,
		Handler: func(n int, apiKey string) (http.Handler, []string) {
			f := newStripeFake(stripeKey(apiKey))
			f.echoKey = true // a 401 shows the rejected key in full: the adapter must hide it
			return f, fill(f, n)
		},
		WriteError: writeFakeError,
		Malformed: []string{
			`{"object":"list","url":"/v1/crypto/onramp_sessions","has_more":false,"data":{}}`,
			`{"object":"list","url":"/v1/crypto/onramp_sessions","has_more":false,"data":null}`,
			`{"object":"list","url":"/v1/crypto/onramp_sessions","has_more":false}`,
			`{"object":"list","url":"/v1/crypto/onramp_sessions","data":[]}`,
			`{"url":"/v1/crypto/onramp_sessions","has_more":false,"data":[]}`,
			string(fixtureObject),
			`[]`,
			`{"object":"list","url":"/v1/crypto/onramp_sessions","has_more":true,"data":[{"status":"initialized","created":1748779200}]}`,
		},
		MissingID: "cos_1MissingSession00000000",
	})
}

func TestOnrampProvider(t *testing.T) {
	p := OnrampSessions
	if p.Kind != "onramp_session" || p.DefaultBaseURL != "https://api.stripe.com" || p.MaxPageSize != 100 ||
		p.DefaultPageSize != 10 || !slices.Equal(p.Credentials(), []string{"api_key"}) || p.New == nil {
		t.Errorf("OnrampSessions = %+v", p)
	}
	src, err := p.New(provider.Settings{BaseURL: p.DefaultBaseURL, PageSize: p.DefaultPageSize, Values: map[string]string{"api_key": testKey}}, nil)
	if err != nil {
		t.Fatalf("OnrampSessions.New with the defaults: %v", err)
	}
	if _, ok := src.(provider.Getter); !ok {
		t.Errorf("the onramp source does not implement provider.Getter")
	}
}

// TestOnrampStatusTable pins the table to DESIGN §3: every documented value, nothing else.
func TestOnrampStatusTable(t *testing.T) {
	want := diff.Mapping{
		"initialized":            {State: diff.Pending},
		"requires_payment":       {State: diff.ActionRequired},
		"fulfillment_processing": {State: diff.Processing},
		"fulfillment_complete":   {State: diff.Completed, Terminal: true},
		"rejected":               {State: diff.Failed, Terminal: true},
	}
	if !maps.Equal(OnrampStatus, want) {
		t.Errorf("OnrampStatus = %v\nwant %v", OnrampStatus, want)
	}
	if got := slices.Sorted(maps.Keys(OnrampStatus)); !slices.Equal(got, slices.Sorted(slices.Values(documentedStatuses))) {
		t.Errorf("statuses %v, documented %v", got, documentedStatuses)
	}
	for _, raw := range documentedStatuses {
		body := fmt.Sprintf(`{"object":"list","has_more":false,"data":[{"id":"cos_1","created":%d,"status":%q}]}`, t0, raw)
		items, skipped, err := ParseOnrampPage([]byte(body))
		if err != nil || len(skipped) != 0 || len(items) != 1 {
			t.Fatalf("status %s: %d items, skipped %v, err %v", raw, len(items), skipped, err)
		}
		if s := items[0].Status; s.Raw != raw || s.State != want[raw].State || s.Terminal != want[raw].Terminal || s.Addendum != "" {
			t.Errorf("status %s maps to %+v, want %+v", raw, s, want[raw])
		}
	}
	for _, raw := range []string{"requires_input", "FULFILLMENT_COMPLETE", "expired", " initialized"} {
		if s, known := OnrampStatus.Status(raw, ""); known || s.State != diff.Unknown || s.Terminal || s.Raw != raw {
			t.Errorf("Status(%q) = %+v, known %v; want unknown, not terminal, raw kept", raw, s, known)
		}
	}
}

// compactWithout is obj compacted with its top-level member name removed.
func compactWithout(t *testing.T, obj []byte, name string) []byte {
	t.Helper()
	out, err := provider.Redact(obj, []string{name})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestParseOnrampPageExample checks the reference page's example field by field.
func TestParseOnrampPageExample(t *testing.T) {
	body := readFixture(t, "example.json")
	items, skipped, err := ParseOnrampPage(body)
	if err != nil || len(skipped) != 0 || len(items) != 1 {
		t.Fatalf("ParseOnrampPage(example) = %d items, skipped %v, err %v", len(items), skipped, err)
	}
	it := items[0]
	if it.Kind != "onramp_session" || it.ID != "cos_1NamBL2eZvKYlo2CP38sZVEW" ||
		it.Status != (diff.Status{Raw: "initialized", State: diff.Pending}) ||
		!it.CreatedAt.Equal(time.Date(2023, 8, 2, 21, 2, 11, 0, time.UTC)) || it.CreatedAt.Location() != time.UTC ||
		!it.UpdatedAt.IsZero() || it.Amount != nil || it.Failure != nil || it.Refs != nil || it.Nested != nil || it.Settling {
		t.Errorf("session = %+v", it)
	}
	var page struct{ Data []json.RawMessage }
	if err := json.Unmarshal(body, &page); err != nil {
		t.Fatal(err)
	}
	if want := compactWithout(t, page.Data[0], "client_secret"); !bytes.Equal(it.Raw, want) {
		t.Errorf("raw = %s\nwant the example without client_secret: %s", it.Raw, want)
	}
}

// TestOnrampFixtureObject reads the OpenAPI fixture session through Get.
func TestOnrampFixtureObject(t *testing.T) {
	base := startFake(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(fixtureObject)
	}))
	it, err := newTestSource(t, base, 10, "").Get(t.Context(), "cos_test_xxx")
	if err != nil {
		t.Fatal(err)
	}
	if it.Kind != "onramp_session" || it.ID != "cos_test_xxx" || it.Status != (diff.Status{Raw: "initialized", State: diff.Pending}) ||
		!it.CreatedAt.Equal(time.Date(2009, 2, 13, 23, 31, 30, 0, time.UTC)) || it.CreatedAt.Location() != time.UTC ||
		it.Amount != nil || it.Refs != nil {
		t.Errorf("session = %+v", it)
	}
	if want := compactWithout(t, fixtureObject, "client_secret"); !bytes.Equal(it.Raw, want) {
		t.Errorf("raw = %s\nwant the fixture without client_secret: %s", it.Raw, want)
	}
}

func TestParseOnrampPageStatuses(t *testing.T) {
	items, skipped, err := ParseOnrampPage(readFixture(t, "statuses.json"))
	if err != nil || len(skipped) != 0 || len(items) != 5 {
		t.Fatalf("%d items, skipped %v, err %v", len(items), skipped, err)
	}
	want := []struct {
		state    diff.State
		terminal bool
		amount   string
		currency string
		refs     map[string]string
	}{
		{diff.Completed, true, "100.00", "usd", map[string]string{
			"transaction_id": "0x5c504ed432cb51138bcf09aa5e8a410dd4a1e204ef84bfed1be16dfba1b22060",
			"wallet_address": "0xB00F0759DbeeF5E543Cc3E3B07A6442F5f3928a2"}},
		{diff.Processing, false, "250.00", "usd", map[string]string{"wallet_address": "7EcDhSYGxXyscszYEp35KHN8vvw3svAuLKTzXwCFLtV"}},
		{diff.ActionRequired, false, "50.00", "usd", map[string]string{"wallet_address": "bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh"}},
		{diff.Pending, false, "", "", nil},
		{diff.Failed, true, "1000.00", "usd", nil},
	}
	for i, w := range want {
		it := items[i]
		if it.Status.State != w.state || it.Status.Terminal != w.terminal || !maps.Equal(it.Refs, w.refs) {
			t.Errorf("%s: status %+v refs %v; want %s terminal %v refs %v", it.ID, it.Status, it.Refs, w.state, w.terminal, w.refs)
		}
		if got := fmtMoney(it.Amount); got != strings.TrimSpace(w.amount+" "+w.currency) {
			t.Errorf("%s: amount %q, want %q", it.ID, got, w.amount+" "+w.currency)
		}
		if want := time.Unix(int64(t0-60*i), 0).UTC(); !it.CreatedAt.Equal(want) || it.CreatedAt.Location() != time.UTC {
			t.Errorf("%s: created %v, want %v", it.ID, it.CreatedAt, want)
		}
	}
}

// fmtMoney writes m as "value currency" with the scale the provider sent; "" for nil.
func fmtMoney(m *diff.Money) string {
	if m == nil {
		return ""
	}
	v := m.Value.String()
	if e := m.Value.Exponent(); e < 0 {
		v = m.Value.StringFixed(-e)
	}
	return strings.TrimSpace(v + " " + m.Currency)
}

func TestParseOnrampPageAmounts(t *testing.T) {
	items, skipped, err := ParseOnrampPage(readFixture(t, "amounts.json"))
	if err != nil || len(skipped) != 0 {
		t.Fatalf("%d items, skipped %v, err %v", len(items), skipped, err)
	}
	want := map[string]string{
		"cos_amt01SourceOnly":       "42.10 usd",
		"cos_amt02DestinationOnly":  "0.5 eth", // no source amount: the destination stands in
		"cos_amt03Neither":          "",
		"cos_amt04HugeSource":       "123456789012345678901234567890.123456789012345678 usd", // the source wins
		"cos_amt05TinyDestination":  "0.000000000000000001 eth",
		"cos_amt06BareNumber":       "100.00 usd", // a bare JSON number, read from its literal
		"cos_amt07NoSourceCurrency": "20.00",      // the source amount, with no currency
		"cos_amt08Zero":             "0.00 usd",
		"cos_amt09DetailsNull":      "",
		"cos_amt10DetailsAbsent":    "",
	}
	if len(items) != len(want) {
		t.Fatalf("%d items, want %d", len(items), len(want))
	}
	for _, it := range items {
		if got := fmtMoney(it.Amount); got != want[it.ID] {
			t.Errorf("%s: amount %q, want %q", it.ID, got, want[it.ID])
		}
	}
	huge := items[3].Amount.Value
	if !huge.Equal(decimal.RequireFromString("123456789012345678901234567890.123456789012345678")) {
		t.Errorf("huge amount %s lost precision", huge)
	}
}

func TestParseOnrampPageMalformedItems(t *testing.T) {
	items, skipped, err := ParseOnrampPage(readFixture(t, "malformed_items.json"))
	if err != nil {
		t.Fatal(err)
	}
	if ids := itemIDs(items); !slices.Equal(ids, []string{"cos_bad00", "cos_bad27"}) {
		t.Errorf("kept %v", ids)
	}
	if want := time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC); len(items) == 2 && !items[1].CreatedAt.Equal(want) {
		t.Errorf("cos_bad27 created %v, want %v", items[1].CreatedAt, want)
	}
	want := []provider.Skipped{
		{ID: "", Reason: "data[1]: no id"},
		{ID: "", Reason: "data[2]: no id"},
		{ID: "", Reason: "data[3]: field id: unexpected JSON number"},
		{ID: "cos_bad04", Reason: `data[4]: object "crypto.onramp_transaction_limits" is not a crypto.onramp_session`},
		{ID: "cos_bad05", Reason: "data[5]: field object: unexpected JSON number"},
		{ID: "cos_bad06", Reason: "data[6]: no status"},
		{ID: "cos_bad07", Reason: "data[7]: field status: unexpected JSON number"},
		{ID: "cos_bad08", Reason: "data[8]: created: missing"},
		{ID: "cos_bad09", Reason: "data[9]: created: missing"},
		{ID: "cos_bad10", Reason: `data[10]: created "1748779196": not an integer unix time`},
		{ID: "cos_bad11", Reason: "data[11]: created 1748779196.5: not an integer unix time"},
		{ID: "cos_bad12", Reason: "data[12]: created 0: outside 1..253402300799"},
		{ID: "cos_bad13", Reason: "data[13]: created -5: outside 1..253402300799"},
		{ID: "cos_bad14", Reason: "data[14]: created 253402300800: outside 1..253402300799"},
		{ID: "cos_bad15", Reason: "data[15]: created 1e9: not an integer unix time"},
		{ID: "cos_bad16", Reason: `data[16]: transaction_details.source_amount "abc": not a decimal`},
		{ID: "cos_bad17", Reason: `data[17]: transaction_details.source_amount "1e-2000": exponent -2000 outside ±100`},
		{ID: "cos_bad18", Reason: "data[18]: transaction_details.destination_amount true: not a decimal"},
		{ID: "cos_bad19", Reason: `data[19]: transaction_details.source_amount "": not a decimal`},
		{ID: "cos_bad20", Reason: "data[20]: field transaction_details: unexpected JSON string"},
		{ID: "cos_bad21", Reason: "data[21]: field transaction_details.transaction_id: unexpected JSON number"},
		{ID: "cos_bad22", Reason: `data[22]: transaction_details.source_amount "NaN": not a decimal`},
		{ID: "", Reason: "data[23]: not a JSON object"},
		{ID: "", Reason: "data[24]: not a JSON object"},
		{ID: "", Reason: "data[25]: not a JSON object"},
		{ID: "", Reason: "data[26]: not a JSON object"},
	}
	if !reflect.DeepEqual(skipped, want) {
		t.Errorf("skipped:\n%s\nwant:\n%s", fmtSkipped(skipped), fmtSkipped(want))
	}
}

func TestParseOnrampPageMalformedPages(t *testing.T) {
	for name, want := range map[string]string{
		"page_not_json.json":        "body: invalid character",
		"page_truncated.json":       "body: unexpected end of JSON input",
		"page_no_data.json":         `body has no "data" array`,
		"page_data_null.json":       `body has no "data" array`,
		"page_data_object.json":     `body has no "data" array`,
		"page_single_object.json":   `body is a "crypto.onramp_session" object, not a list`,
		"page_no_object.json":       `body has no "object": "list"`,
		"page_error_body.json":      `body has no "object": "list"`,
		"page_no_has_more.json":     `body has no "has_more" boolean`,
		"page_has_more_string.json": "body: field has_more: unexpected JSON string",
		"page_array.json":           "body: unexpected JSON array",
	} {
		t.Run(name, func(t *testing.T) {
			items, skipped, err := ParseOnrampPage(readFixture(t, name))
			var me *provider.MalformedError
			if !errors.As(err, &me) || items != nil || skipped != nil {
				t.Fatalf("ParseOnrampPage = %d items, %d skipped, err %v; want a *provider.MalformedError", len(items), len(skipped), err)
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		})
	}
	items, skipped, err := ParseOnrampPage(readFixture(t, "empty.json"))
	if err != nil || len(items) != 0 || len(skipped) != 0 {
		t.Errorf("empty page: %d items, %v skipped, err %v", len(items), skipped, err)
	}
}

// fixtureSecrets returns every string client_secret in the fixtures' sessions.
func fixtureSecrets(t *testing.T) []string {
	t.Helper()
	var secrets []string
	var collect func(v any)
	collect = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if s, ok := v["client_secret"].(string); ok {
				secrets = append(secrets, s)
			}
			for _, e := range v {
				collect(e)
			}
		case []any:
			for _, e := range v {
				collect(e)
			}
		}
	}
	for _, name := range fixtureNames(t) {
		var v any
		if json.Unmarshal(readFixture(t, name), &v) == nil {
			collect(v)
		}
	}
	if len(secrets) < 20 {
		t.Fatalf("only %d client secrets in the fixtures", len(secrets))
	}
	return secrets
}

// mappedText writes what a parse returned as text: raw objects as JSON, not base64.
func mappedText(items []diff.Item, skipped []provider.Skipped, err error) []byte {
	var b strings.Builder
	for _, it := range items {
		fmt.Fprintf(&b, "%s %s %v %s %v\n", it.Kind, it.ID, it.Status, it.Raw, it.Refs)
	}
	for _, s := range skipped {
		fmt.Fprintf(&b, "skipped %q %q\n", s.ID, s.Reason)
	}
	if err != nil {
		fmt.Fprintf(&b, "error %v\n", err)
	}
	return []byte(b.String())
}

// assertNoSecret fails t when what shows a client_secret member or any of secrets.
func assertNoSecret(t *testing.T, what string, text []byte, secrets []string) {
	t.Helper()
	if bytes.Contains(text, []byte(`"client_secret"`)) || bytes.Contains(text, []byte("_secret_")) {
		t.Errorf("%s shows a client secret: %s", what, text)
		return
	}
	for _, s := range secrets {
		if bytes.Contains(text, []byte(s)) {
			t.Errorf("%s shows the client secret %q: %s", what, s, text)
		}
	}
}

// TestOnrampSecrets maps every fixture and asserts that no client secret reaches the
// mapped output (raw objects, refs, skip reasons) or an error.
func TestOnrampSecrets(t *testing.T) {
	if !slices.Equal(onrampSecretFields, []string{"client_secret"}) {
		t.Errorf("secret fields = %v, want [client_secret]", onrampSecretFields)
	}
	secrets := fixtureSecrets(t)
	for _, name := range fixtureNames(t) {
		body := readFixture(t, name)
		var items []diff.Item
		var skipped []provider.Skipped
		var err error
		if strings.HasPrefix(name, "object/") {
			it, sk, ok := parseSession(body, "body")
			if ok {
				items = append(items, it)
			} else {
				skipped = append(skipped, sk)
			}
		} else {
			items, skipped, err = ParseOnrampPage(body)
		}
		assertNoSecret(t, name, mappedText(items, skipped, err), secrets)
		for _, it := range items {
			if !json.Valid(it.Raw) {
				t.Errorf("%s: %s: raw is not valid JSON: %s", name, it.ID, it.Raw)
			}
		}
	}

	// Copies of the secret elsewhere in the object: replaced where they can be, else the
	// session is skipped rather than published.
	items, skipped, err := ParseOnrampPage(readFixture(t, "secrets.json"))
	if err != nil {
		t.Fatal(err)
	}
	if ids := itemIDs(items); !slices.Equal(ids, []string{"cos_sec01", "cos_sec03"}) {
		t.Fatalf("kept %v, want cos_sec01 and cos_sec03", ids)
	}
	const wantRaw = `{"id":"cos_sec01","object":"crypto.onramp_session","created":1748779200,"livemode":true,` +
		`"metadata":{"note":"resume with [client_secret] later","order_id":"ord_1"},` +
		`"redirect_url":"https://merchant.example/return?cs=[client_secret]&step=2","status":"fulfillment_complete",` +
		`"transaction_details":{"source_amount":"10.00","source_currency":"usd","transaction_id":"tx-[client_secret]",` +
		`"wallet_address":"0x52908400098527886E0F7030069857D2E4169EE7","wallet_addresses":{"ethereum":"0x52908400098527886E0F7030069857D2E4169EE7"}}}`
	if string(items[0].Raw) != wantRaw {
		t.Errorf("raw = %s\nwant %s", items[0].Raw, wantRaw)
	}
	if items[0].Refs["transaction_id"] != "tx-[client_secret]" {
		t.Errorf("refs = %v", items[0].Refs)
	}
	wantSkipped := []provider.Skipped{
		{ID: "cos_sec02", Reason: "data[1]: the client_secret value appears in another field and cannot be removed from it"},
		{ID: "cos_sec04", Reason: "data[3]: the client_secret value appears in another field and cannot be removed from it"},
	}
	if !reflect.DeepEqual(skipped, wantSkipped) {
		t.Errorf("skipped:\n%s\nwant:\n%s", fmtSkipped(skipped), fmtSkipped(wantSkipped))
	}

	// Through the wire: pages, Get and its errors.
	f := newStripeFake(testKey)
	ids := fill(f, 7)
	src := newTestSource(t, startFake(t, f), 3, "")
	var listed []diff.Item
	cursor := ""
	for {
		p, err := src.Page(t.Context(), provider.Request{Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		listed = append(listed, p.Items...)
		if cursor = p.Next; cursor == "" {
			break
		}
	}
	got, err := src.Get(t.Context(), ids[2])
	if err != nil {
		t.Fatal(err)
	}
	var wire []string
	for _, it := range append(listed, got) {
		wire = append(wire, string(mappedText([]diff.Item{it}, nil, nil)))
		if !strings.Contains(string(it.Raw), `"id":"`+it.ID+`"`) {
			t.Errorf("raw of %s lacks its id: %s", it.ID, it.Raw)
		}
	}
	// Bodies that fail, cut or shaped so that a careless message would quote them.
	full := string(sessionJSON(ids[0], t0, "initialized"))
	for _, body := range []string{
		full[:len(full)-40],
		string(sessionJSON("cos_other", t0, "initialized")),
		strings.Replace(full, `"created":`, `"created_at":`, 1),
		`{"object":"list","has_more":false,"data":[` + full[:len(full)-40] + `]}`,
	} {
		f.configure(func(f *stripeFake) {
			f.fail = func(w http.ResponseWriter, r *http.Request) bool { w.Write([]byte(body)); return true }
		})
		_, perr := src.Page(t.Context(), provider.Request{})
		_, gerr := src.Get(t.Context(), ids[0])
		if perr == nil || gerr == nil {
			t.Errorf("serving %.60s…: Page error %v, Get error %v; want both to fail", body, perr, gerr)
		}
		wire = append(wire, fmt.Sprint(perr), fmt.Sprint(gerr))
	}
	secretsOnWire := []string{secretOf("cos_other")}
	for _, id := range ids {
		secretsOnWire = append(secretsOnWire, secretOf(id))
	}
	assertNoSecret(t, "listed and read sessions and errors", []byte(strings.Join(wire, "\n")), secretsOnWire)
	if len(listed) != 7 {
		t.Errorf("listed %d sessions, want 7", len(listed))
	}
}

func TestOnrampWalkRequests(t *testing.T) {
	f := newStripeFake(testKey)
	ids := fill(f, 10)                                                                           // created t0, t0, t0-60, t0-60, ..., t0-240, t0-240
	src := newTestSource(t, startFake(t, f)+"/", 3, "2026-08-26.preview; crypto_onramp_beta=v1") // a trailing slash on base_url is dropped

	// Inclusive and truncated to the second: t0-180 (ids 6 and 7) is in.
	from := time.Unix(t0-180, 400_000_000).In(time.FixedZone("UTC+2", 2*3600))
	if got := walkIDs(t, src, from); !slices.Equal(got, ids[:8]) {
		t.Errorf("walk from %v = %v\nwant %v", from, got, ids[:8])
	}
	reqs := f.recorded()
	want := []url.Values{
		{"limit": {"3"}, "created[gte]": {"1748779020"}},
		{"limit": {"3"}, "created[gte]": {"1748779020"}, "starting_after": {ids[2]}},
		{"limit": {"3"}, "created[gte]": {"1748779020"}, "starting_after": {ids[5]}},
	}
	if len(reqs) != len(want) {
		t.Fatalf("%d requests, want %d", len(reqs), len(want))
	}
	wantAuth := "Basic " + base64.StdEncoding.EncodeToString([]byte(testKey+":"))
	for i, r := range reqs {
		if r.path != onrampPath || !reflect.DeepEqual(r.query, want[i]) {
			t.Errorf("request %d: %s?%v, want %s?%v", i, r.path, r.query, onrampPath, want[i])
		}
		if a, acc, v := r.header.Get("Authorization"), r.header.Get("Accept"), r.header.Get("Stripe-Version"); a != wantAuth ||
			acc != "application/json" || v != "2026-08-26.preview; crypto_onramp_beta=v1" {
			t.Errorf("request %d: Authorization %q, Accept %q, Stripe-Version %q", i, a, acc, v)
		}
	}

	// Without From, the walk reaches the oldest session; without a version, no header.
	src = newTestSource(t, startFake(t, f), 4, "")
	if got := walkIDs(t, src, time.Time{}); !slices.Equal(got, ids) {
		t.Errorf("walk without from = %v\nwant %v", got, ids)
	}
	for _, r := range f.recorded()[len(want):] {
		if _, ok := r.header["Stripe-Version"]; ok || r.query.Has("created[gte]") {
			t.Errorf("request %v sent Stripe-Version %q or a created filter", r.query, r.header.Get("Stripe-Version"))
		}
	}
}

// TestOnrampWalkDuringInserts creates a session before each page is answered:
// starting_after is an object id, so the walk lists the one created before its first
// page and then each earlier session exactly once, and the next walk starts with all
// the new ones.
func TestOnrampWalkDuringInserts(t *testing.T) {
	f := newStripeFake(testKey)
	ids := fill(f, 9)
	newID := func(k int) string { return fmt.Sprintf("cos_1New%06d", k) }
	var inserted atomic.Int32
	f.onList = func(url.Values) {
		k := int(inserted.Add(1))
		f.add(newID(k), int64(t0+k), "initialized", sessionJSON(newID(k), int64(t0+k), "initialized"))
	}
	src := newTestSource(t, startFake(t, f), 2, "")
	if got, want := walkIDs(t, src, time.Time{}), append([]string{newID(1)}, ids...); !slices.Equal(got, want) {
		t.Errorf("walk during inserts = %v\nwant %v", got, want)
	}
	n := int(inserted.Load())
	if n != 5 {
		t.Fatalf("%d pages, want 5", n)
	}
	f.configure(func(f *stripeFake) { f.onList = nil })
	var want []string
	for k := n; k >= 1; k-- {
		want = append(want, newID(k))
	}
	want = append(want, ids...)
	if got := walkIDs(t, src, time.Time{}); !slices.Equal(got, want) {
		t.Errorf("next walk = %v\nwant %v", got, want)
	}
}

// TestOnrampLastPage covers how has_more and the data array end a walk.
func TestOnrampLastPage(t *testing.T) {
	session := func(id string) string { return string(sessionJSON(id, t0, "initialized")) }
	for _, tc := range []struct {
		name     string
		body     string
		wantNext string // "" for the last page
		wantErr  string
	}{
		{name: "has_more false", body: `{"object":"list","has_more":false,"data":[` + session("cos_a") + `]}`},
		{name: "has_more true and no data", body: `{"object":"list","has_more":true,"data":[]}`},
		{name: "has_more true", body: `{"object":"list","has_more":true,"data":[` + session("cos_a") + `,` + session("cos_b") + `]}`,
			wantNext: "limit=2&starting_after=cos_b"},
		{name: "continues after the last session with an id",
			body:     `{"object":"list","has_more":true,"data":[` + session("cos_a") + `,{"status":"initialized"}]}`,
			wantNext: "limit=2&starting_after=cos_a"},
		{name: "no id to continue after", body: `{"object":"list","has_more":true,"data":[{"status":"initialized"},7]}`,
			wantErr: "no item has an id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := startFake(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(tc.body)) }))
			p, err := newTestSource(t, base, 2, "").Page(t.Context(), provider.Request{})
			if tc.wantErr != "" {
				var me *provider.MalformedError
				if !errors.As(err, &me) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("Page = %+v, %v; want a *provider.MalformedError saying %q", p, err, tc.wantErr)
				}
				return
			}
			if err != nil || p.Next != tc.wantNext {
				t.Errorf("Page: next %q, err %v; want next %q", p.Next, err, tc.wantNext)
			}
		})
	}
	t.Run("a page that repeats its cursor", func(t *testing.T) {
		base := startFake(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"object":"list","has_more":true,"data":[` + session("cos_a") + `]}`))
		}))
		_, err := newTestSource(t, base, 2, "").Page(t.Context(), provider.Request{Cursor: "limit=2&starting_after=cos_a"})
		if err == nil || !strings.Contains(err.Error(), `start after "cos_a" again`) {
			t.Errorf("Page: %v, want an error about the repeated cursor", err)
		}
	})
}

func TestOnrampCursorValidation(t *testing.T) {
	f := newStripeFake(testKey)
	fill(f, 3)
	src := newTestSource(t, startFake(t, f), 2, "")
	for _, cursor := range []string{
		"starting_after=cos_a",           // no limit
		"limit=2",                        // no starting_after
		"limit=2&starting_after=",        // empty id
		"limit=0&starting_after=cos_a",   // limit out of range
		"limit=101&starting_after=cos_a", // limit out of range
		"limit=2&starting_after=a&starting_after=b",
		"limit=2&starting_after=cos_a&created[gte]=yesterday",
		"limit=2&starting_after=cos_a&status=rejected", // not a parameter a walk carries
		"https://attacker.example/v1/crypto/onramp_sessions?limit=2&starting_after=cos_a",
		"limit=2&starting_after=%zz",
	} {
		if _, err := src.Page(t.Context(), provider.Request{Cursor: cursor}); err == nil || !strings.Contains(err.Error(), "cursor") {
			t.Errorf("Page at cursor %q: %v, want a cursor error", cursor, err)
		}
	}
	if n := len(f.recorded()); n != 0 {
		t.Errorf("invalid cursors caused %d requests", n)
	}
	// A cursor keeps its own limit and created filter: they belong to the walk.
	p, err := src.Page(t.Context(), provider.Request{Cursor: "created%5Bgte%5D=1&limit=1&starting_after=" + fakeID(0), From: time.Unix(t0, 0)})
	if err != nil || len(p.Items) != 1 || p.Items[0].ID != fakeID(1) {
		t.Fatalf("Page at a cursor = %+v, %v", p, err)
	}
	if q := f.listQueries()[0]; !reflect.DeepEqual(q, url.Values{"limit": {"1"}, "created[gte]": {"1"}, "starting_after": {fakeID(0)}}) {
		t.Errorf("query at a cursor = %v", q)
	}
}

func TestOnrampErrors(t *testing.T) {
	for _, tc := range []struct {
		name      string
		key       string // the key the fake accepts, when not testKey
		echoKey   bool
		serve     func(w http.ResponseWriter)
		code      int
		message   string
		temporary bool
		auth      bool
	}{
		{name: "wrong key", key: "sk_test_someoneElsesKey0001", code: 401, auth: true,
			message: "invalid_request_error: Invalid API Key provided: sk_test_****e5Ua"},
		{name: "wrong key echoed in full", key: "sk_test_someoneElsesKey0001", echoKey: true, code: 401, auth: true,
			message: "invalid_request_error: Invalid API Key provided: [api_key]"},
		{name: "another key echoed in full", code: 401, auth: true, serve: func(w http.ResponseWriter) {
			writeStripeError(w, 401, stripeError{Type: "invalid_request_error", Message: "Expired API Key provided: rk_live_51AbCdEfGhIjKlMnOp and sk_1234567890abcdef"})
		}, message: "invalid_request_error: Expired API Key provided: [redacted key] and [redacted key]"},
		{name: "forbidden", code: 403, auth: true, serve: func(w http.ResponseWriter) {
			writeStripeError(w, 403, stripeError{Type: "invalid_request_error", Code: "secret_key_required",
				Message: "This restricted key lacks the permission to read crypto onramp sessions."})
		}, message: "invalid_request_error (secret_key_required): This restricted key lacks the permission to read crypto onramp sessions."},
		{name: "bad request", code: 400, serve: func(w http.ResponseWriter) { writeFakeError(w, 400) },
			message: "invalid_request_error (parameter_invalid_integer): Invalid integer: abc (param limit)"},
		{name: "onramp disabled", code: 400, serve: func(w http.ResponseWriter) {
			writeStripeError(w, 400, stripeError{Type: "api_error", Code: "crypto_onramp_disabled", Message: "Onramp is paused.\nTry later."})
		}, message: "api_error (crypto_onramp_disabled): Onramp is paused. Try later."},
		{name: "rate limited", code: 429, temporary: true, serve: func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", "3")
			writeFakeError(w, 429)
		}, message: "invalid_request_error (rate_limit): Too many requests in too short a time; slow down and retry."},
		{name: "server error", code: 500, temporary: true, serve: func(w http.ResponseWriter) { writeFakeError(w, 500) },
			message: "api_error: Something went wrong on our side; the request can be retried."},
		{name: "should not retry", code: 500, temporary: false, serve: func(w http.ResponseWriter) {
			w.Header().Set("Stripe-Should-Retry", "false")
			writeFakeError(w, 500)
		}, message: "api_error: Something went wrong on our side; the request can be retried. [Stripe-Should-Retry: false]"},
		{name: "gateway page", code: 502, temporary: true, serve: func(w http.ResponseWriter) {
			w.WriteHeader(502)
			w.Write([]byte("<html>bad gateway</html>"))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newStripeFake(testKey)
			if tc.key != "" {
				f.apiKey = tc.key
			}
			f.echoKey = tc.echoKey
			if tc.serve != nil {
				f.fail = func(w http.ResponseWriter, r *http.Request) bool { tc.serve(w); return true }
			}
			src := newTestSource(t, startFake(t, f), 2, "")
			_, err := src.Page(t.Context(), provider.Request{})
			var se *provider.StatusError
			if !errors.As(err, &se) {
				t.Fatalf("Page: %v, want a *provider.StatusError", err)
			}
			if se.Code != tc.code || se.Message != tc.message || se.Temporary() != tc.temporary || se.Auth() != tc.auth ||
				!strings.HasPrefix(se.RequestID, "req_fake") {
				t.Errorf("StatusError = %+v (temporary %v, auth %v)\nwant code %d, message %q, temporary %v, auth %v and the Request-Id",
					se, se.Temporary(), se.Auth(), tc.code, tc.message, tc.temporary, tc.auth)
			}
			if tc.code == 429 && se.RetryAfter != 3*time.Second {
				t.Errorf("RetryAfter = %v, want 3s", se.RetryAfter)
			}
			if strings.Contains(err.Error(), testKey) || strings.Contains(err.Error(), "someoneElsesKey") {
				t.Errorf("error shows an API key: %v", err)
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		base := srv.URL
		srv.Close()
		_, err := newTestSource(t, base, 2, "").Page(t.Context(), provider.Request{})
		if err == nil || strings.Contains(err.Error(), testKey) {
			t.Errorf("Page on a closed server: %v; want an error without the API key", err)
		}
	})
}

func TestDecodeStripeError(t *testing.T) {
	const key = "sk_live_51Zz9Yy8Xx7Ww6Vv5Uu4Tt3"
	for body, want := range map[string]string{
		`{"error":{"type":"invalid_request_error","code":"resource_missing","message":"No such crypto.onramp_session: 'cos_123'","param":"id","doc_url":"https://stripe.com/docs/error-codes/resource-missing","request_log_url":"https://dashboard.stripe.com/logs/req_1"}}`: "invalid_request_error (resource_missing): No such crypto.onramp_session: 'cos_123' (param id)",
		`{"error":{"type":"invalid_request_error","message":"Invalid API Key provided: sk_live_****Tt3"}}`: "invalid_request_error: Invalid API Key provided: sk_live_****Tt3",
		`{"error":{"type":"invalid_request_error","message":"Invalid API Key provided: ` + key + `"}}`:     "invalid_request_error: Invalid API Key provided: [api_key]",
		`{"error":{"type":"invalid_request_error","message":"key ` + key[:20] + `… was rejected"}}`:        "invalid_request_error: key [redacted key]… was rejected",
		`{"error":{"code":"rate_limit","message":"slow down"}}`:                                            "rate_limit: slow down",
		`{"error":{"type":"api_error"}}`:                                              "api_error:",
		`{"error":{"message":"only a message"}}`:                                      "only a message",
		`{"error":{"type":"api_error","message":"` + strings.Repeat("é", 400) + `"}}`: "api_error: " + strings.Repeat("é", 144) + "…",
		`{"error":{}}`:                    "",
		`{"error":"a string"}`:            "",
		`{"error":{"type":7}}`:            "",
		`{"code":401,"message":"circle"}`: "",
		`<html>502</html>`:                "",
		``:                                "",
	} {
		got := ""
		if e, ok := decodeStripeError([]byte(body)); ok {
			got = formatStripeError(e, key)
		}
		if got != want {
			t.Errorf("error body %.70s = %q, want %q", body, got, want)
		}
	}
}

func TestNewOnrampValidation(t *testing.T) {
	ok := provider.Settings{BaseURL: "https://api.stripe.com", PageSize: 10, Values: map[string]string{"api_key": testKey}}
	for _, tc := range []struct {
		name   string
		change func(*provider.Settings)
		want   []string
	}{
		{"no api key", func(s *provider.Settings) { *s = s.With("api_key", "") }, []string{"api_key: must be set"}},
		{"publishable key", func(s *provider.Settings) { *s = s.With("api_key", "pk_test_51Pq8ZfakeKey0x9Qd7Lm2Nz8") }, []string{"api_key", "publishable"}},
		{"not a Stripe key", func(s *provider.Settings) { *s = s.With("api_key", "TEST_API_KEY:6f1d0c2e9a7b:Zq8sNw3kVt5u") }, []string{"api_key", "sk_", "rk_"}},
		{"colon", func(s *provider.Settings) { *s = s.With("api_key", "sk_test_abc:def") }, []string{"api_key", "':'"}},
		{"trailing newline", func(s *provider.Settings) { *s = s.With("api_key", testKey+"\n") }, []string{"api_key", "control"}},
		{"no base url", func(s *provider.Settings) { s.BaseURL = "" }, []string{"base_url"}},
		{"ftp base url", func(s *provider.Settings) { s.BaseURL = "ftp://api.stripe.com" }, []string{"base_url", "ftp://api.stripe.com"}},
		{"relative base url", func(s *provider.Settings) { s.BaseURL = "api.stripe.com" }, []string{"base_url"}},
		{"query", func(s *provider.Settings) { s.BaseURL = "https://api.stripe.com?x=1" }, []string{"base_url"}},
		{"credentials in base url", func(s *provider.Settings) { s.BaseURL = "https://user:hunter2@api.stripe.com" }, []string{"base_url"}},
		{"page size 0", func(s *provider.Settings) { s.PageSize = 0 }, []string{"page_size", "0", "1..100"}},
		{"page size 101", func(s *provider.Settings) { s.PageSize = 101 }, []string{"page_size", "101"}},
		{"version with a newline", func(s *provider.Settings) { *s = s.With("stripe_version", "2026-08-26\r\nX-Evil: 1") }, []string{"stripe_version", "control"}},
		{"version with spaces around", func(s *provider.Settings) { *s = s.With("stripe_version", " 2026-08-26.dahlia") }, []string{"stripe_version"}},
		{"terminal statuses", func(s *provider.Settings) { s.TerminalStatuses = []string{"initialized"} }, []string{"terminal_statuses"}},
		{"everything", func(s *provider.Settings) {
			*s = provider.Settings{BaseURL: "x", PageSize: -1, Values: map[string]string{"api_key": "sk_live_real:key", "stripe_version": "\x00"}}
		}, []string{"api_key", "base_url", "page_size", "stripe_version"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := ok
			tc.change(&s)
			src, err := NewOnrampSessions(s, nil)
			if err == nil || src != nil {
				t.Fatalf("NewOnrampSessions = %v, %v; want an error", src, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "hunter2") || (s.Value("api_key") != "" && strings.Contains(err.Error(), s.Value("api_key"))) ||
				strings.Contains(err.Error(), "51Pq8Z") || strings.Contains(err.Error(), "Zq8sNw3kVt5u") {
				t.Errorf("error shows a secret: %v", err)
			}
		})
	}
	for _, s := range []provider.Settings{
		{BaseURL: "https://api.stripe.com", PageSize: 1, Values: map[string]string{"api_key": testKey}},
		{BaseURL: "https://api.stripe.com", PageSize: 100, Values: map[string]string{"api_key": "rk_live_51Pq8ZfakeRestricted", "stripe_version": "2026-08-26.dahlia"}},
		{BaseURL: "http://127.0.0.1:12111/stripe/", PageSize: 10, Values: map[string]string{"api_key": "sk_test_123"}},
	} {
		if _, err := NewOnrampSessions(s, nil); err != nil {
			t.Errorf("NewOnrampSessions(page_size %d, base_url %s): %v", s.PageSize, s.BaseURL, err)
		}
	}
}

func TestOnrampBaseURLPathPrefix(t *testing.T) {
	f := newStripeFake(testKey)
	ids := fill(f, 5)
	mux := http.NewServeMux()
	mux.Handle("/stripe/", http.StripPrefix("/stripe", f))
	base := startFake(t, mux) + "/stripe"
	src := newTestSource(t, base, 2, "")
	if got := walkIDs(t, src, time.Time{}); !slices.Equal(got, ids) {
		t.Errorf("walk = %v, want %v", got, ids)
	}
	if it, err := src.Get(t.Context(), ids[4]); err != nil || it.ID != ids[4] {
		t.Errorf("Get(%s) = %s, %v", ids[4], it.ID, err)
	}
}

func TestOnrampGet(t *testing.T) {
	f := newStripeFake(testKey)
	fill(f, 6)
	const oddID = "cos_odd/id?x=1"
	f.add(oddID, t0-3600, "rejected", sessionJSON(oddID, t0-3600, "rejected"))
	src := newTestSource(t, startFake(t, f), 100, "2026-08-26.dahlia")

	p, err := src.Page(t.Context(), provider.Request{})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []diff.Item{p.Items[0], p.Items[3], p.Items[6]} {
		got, err := src.Get(t.Context(), want.ID)
		if err != nil {
			t.Fatalf("Get(%q): %v", want.ID, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Get(%q) = %+v\nlisted as %+v", want.ID, got, want)
		}
	}
	reqs := f.recorded()
	last := reqs[len(reqs)-1]
	if last.path != onrampPath+"/"+oddID || len(last.query) != 0 || last.header.Get("Stripe-Version") != "2026-08-26.dahlia" {
		t.Errorf("Get(%q) requested %s?%v with Stripe-Version %q", oddID, last.path, last.query, last.header.Get("Stripe-Version"))
	}

	_, err = src.Get(t.Context(), "cos_123")
	var se *provider.StatusError
	if !errors.Is(err, provider.ErrNotFound) || !errors.As(err, &se) || se.Code != 404 ||
		se.Message != "invalid_request_error (resource_missing): No such crypto.onramp_session: 'cos_123' (param id)" {
		t.Errorf("Get of an unknown id: %v; want ErrNotFound and the 404 StatusError", err)
	}

	before := len(f.recorded())
	for _, id := range []string{"", ".", ".."} {
		if _, err := src.Get(t.Context(), id); err == nil {
			t.Errorf("Get(%q): no error", id)
		}
	}
	if n := len(f.recorded()) - before; n != 0 {
		t.Errorf("invalid ids caused %d requests", n)
	}

	// A 404 that is not Stripe's resource_missing (a wrong base_url) is not a missing session.
	wrong := newTestSource(t, startFake(t, f)+"/v2", 10, "")
	_, err = wrong.Get(t.Context(), "cos_123")
	if errors.Is(err, provider.ErrNotFound) || !errors.As(err, &se) || se.Code != 404 || !strings.Contains(se.Message, "Unrecognized request URL") {
		t.Errorf("Get on a wrong base_url: %v; want a 404 StatusError that is not ErrNotFound", err)
	}

	for _, tc := range []struct{ name, body, want string }{
		{"unmappable session", `{"id":"cos_x","object":"crypto.onramp_session","status":"initialized"}`, "created: missing"},
		{"another session", string(sessionJSON("cos_y", t0, "initialized")), `asked for session "cos_x", got "cos_y"`},
		{"a list", `{"object":"list","has_more":false,"data":[]}`, `object "list" is not a crypto.onramp_session`},
		{"truncated", `{"id":"cos_x"`, "unexpected end of JSON input"},
		{"not an object", `[]`, "not a JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.configure(func(f *stripeFake) {
				f.fail = func(w http.ResponseWriter, r *http.Request) bool { w.Write([]byte(tc.body)); return true }
			})
			defer f.configure(func(f *stripeFake) { f.fail = nil })
			_, err := src.Get(t.Context(), "cos_x")
			var me *provider.MalformedError
			if !errors.As(err, &me) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Get answered %s: %v, want a *provider.MalformedError saying %q", tc.body, err, tc.want)
			}
		})
	}
}

// TestFakePaging checks the fake against Stripe's documented paging, so that the
// adapter tests that rely on it mean something.
func TestFakePaging(t *testing.T) {
	f := newStripeFake(testKey)
	ids := fill(f, 7) // created t0, t0, t0-60, t0-60, t0-120, t0-120, t0-180
	base := startFake(t, f)
	list := func(query string) (code int, got []string, hasMore bool) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+onrampPath+"?"+query, nil)
		req.SetBasicAuth(testKey, "")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			Data []struct {
				ID string `json:"id"`
			} `json:"data"`
			HasMore bool `json:"has_more"`
		}
		json.NewDecoder(resp.Body).Decode(&body)
		for _, d := range body.Data {
			got = append(got, d.ID)
		}
		return resp.StatusCode, got, body.HasMore
	}
	for _, tc := range []struct {
		query   string
		code    int
		want    []string
		hasMore bool
	}{
		{"", 200, ids, false},
		{"limit=3", 200, ids[:3], true},
		{"limit=3&starting_after=" + ids[2], 200, ids[3:6], true},
		{"limit=3&starting_after=" + ids[5], 200, ids[6:], false},
		{"limit=2&ending_before=" + ids[5], 200, ids[3:5], true},
		{"limit=5&ending_before=" + ids[3], 200, ids[:3], false},
		{"created[lte]=" + fmt.Sprint(t0-60) + "&created[gt]=" + fmt.Sprint(t0-180), 200, ids[2:6], false},
		{"created[lt]=" + fmt.Sprint(t0), 200, ids[2:], false},
		{"created=" + fmt.Sprint(t0-120), 200, ids[4:6], false},
		{"status=rejected", 200, []string{ids[4]}, false},
		{"limit=0", 400, nil, false},
		{"limit=101", 400, nil, false},
		{"limit=ten", 400, nil, false},
		{"limit=2&limit=3", 400, nil, false},
		{"starting_after=" + ids[0] + "&ending_before=" + ids[3], 400, nil, false},
		{"starting_after=cos_unknown", 400, nil, false},
		{"created[gte]=yesterday", 400, nil, false},
		{"status=done", 400, nil, false},
		{"page=2", 400, nil, false},
	} {
		code, got, hasMore := list(tc.query)
		if code != tc.code || !slices.Equal(got, tc.want) || hasMore != tc.hasMore {
			t.Errorf("?%s = %d %v has_more %v; want %d %v has_more %v", tc.query, code, got, hasMore, tc.code, tc.want, tc.hasMore)
		}
	}
	for name, set := range map[string]func(*http.Request){
		"no auth":           func(*http.Request) {},
		"wrong key":         func(r *http.Request) { r.SetBasicAuth("sk_test_other", "") },
		"a password":        func(r *http.Request) { r.SetBasicAuth(testKey, "x") },
		"bearer, not basic": func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+testKey) },
	} {
		req, _ := http.NewRequest(http.MethodGet, base+onrampPath, nil)
		set(req)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("%s: HTTP %d, want 401", name, resp.StatusCode)
		}
	}
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
