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
	"path"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller/provider"
	"github.com/payments-watcher/watcher/poller/provider/providertest"
)

// The Circle products share circle.go: the tests here run once for each of them, from
// the products table. What only one product has stays in its own file.

// testKey has the shape of a Circle key (the W3S PREFIX:ID:SECRET form the ramp
// adapter requires); tests assert that it never shows in errors.
const testKey = "TEST_API_KEY:6f1d0c2e9a7b:Zq8sNw3kVt5u"

// t0 is the creation time of the newest items the fakes hold.
var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// product describes one Circle product for the shared tests.
type product struct {
	name     string // subtest name
	provider provider.Provider
	new      func(provider.Settings, *provider.Client) (provider.Source, error)
	endpoint listEndpoint
	path     string // the list path
	dir      string // the fixtures, testdata/<dir>
	parse    pageParser
	// maxPageSize and defaultPageSize are the collection's page size limits.
	maxPageSize, defaultPageSize int
	kind                         string // the top-level kind
	// statuses holds every kind the product produces with its documented status table.
	statuses map[string]diff.Mapping
	// undocumented are statuses no table of the product knows.
	undocumented []string
	secretFields []string
	// key is an api_key the constructor accepts.
	key string
	// collection names the product's items in a body that is not Circle's {"data":[...]}.
	collection string
	// fakeStatuses are the statuses the fakes' items cycle through; the first is
	// documented and not terminal.
	fakeStatuses []string
	// itemJSON is the documented example item with id, createDate and status replaced.
	itemJSON func(id string, created time.Time, status string) json.RawMessage
}

var (
	cpnProduct = &product{
		name: "cpn", provider: CPN, new: NewCPN, endpoint: cpnEndpoint, path: cpnPath, dir: "cpn", parse: ParseCPNPage,
		maxPageSize: 200, defaultPageSize: 50, kind: "payment",
		statuses: map[string]diff.Mapping{
			"payment": {
				"CREATED": {State: diff.Pending}, "CRYPTO_FUNDS_PENDING": {State: diff.Pending}, "FIAT_PAYMENT_INITIATED": {State: diff.Processing},
				"COMPLETED": {State: diff.Completed, Terminal: true}, "FAILED": {State: diff.Failed, Terminal: true},
			},
			"payment_rfi": {
				"INFORMATION_REQUIRED": {State: diff.ActionRequired}, "IN_REVIEW": {State: diff.Processing},
				"APPROVED": {State: diff.Completed, Terminal: true}, "FAILED": {State: diff.Failed, Terminal: true},
			},
			"payment_refund": {
				"CREATED": {State: diff.Pending}, "COMPLETED": {State: diff.Completed, Terminal: true}, "FAILED": {State: diff.Failed, Terminal: true},
			},
			"payment_onchain_transaction": {
				"CREATED": {State: diff.Pending}, "PENDING": {State: diff.Pending}, "BROADCASTED": {State: diff.Processing},
				"COMPLETED": {State: diff.Completed, Terminal: true}, "FAILED": {State: diff.Failed, Terminal: true},
			},
		},
		undocumented: []string{"NOT_DOCUMENTED", "completed"},
		key:          testKey, collection: "payments",
		fakeStatuses: []string{"CREATED", "CRYPTO_FUNDS_PENDING", "FIAT_PAYMENT_INITIATED", "COMPLETED", "FAILED"},
		itemJSON:     cpnPaymentJSON,
	}
	rampProduct = &product{
		name: "ramp", provider: Ramp, new: NewRamp, endpoint: rampEndpoint(RampStatus), path: rampPath, dir: "ramp", parse: ParseRampPage,
		maxPageSize: 50, defaultPageSize: 10, kind: "ramp_session",
		statuses: map[string]diff.Mapping{"ramp_session": {
			"PENDING":   {State: diff.Pending},
			"COMPLETED": {State: diff.Completed, Terminal: true},
			"FAILED":    {State: diff.Failed, Terminal: true},
			"EXPIRED":   {State: diff.Expired, Terminal: true},
			"CANCELED":  {State: diff.Canceled, Terminal: true},
			"CANCELLED": {State: diff.Canceled, Terminal: true},
		}},
		undocumented: []string{"AWAITING_PAYMENT", "completed", "Pending", "REFUNDED"},
		secretFields: []string{"url"},
		key:          testKey, collection: "sessions",
		fakeStatuses: []string{"PENDING", "COMPLETED", "FAILED", "EXPIRED", "CANCELED", "CANCELLED", "AWAITING_PAYMENT"},
		itemJSON:     rampSessionJSON,
	}
	settlementsProduct = &product{
		name: "settlements", provider: Settlements, new: NewSettlements, endpoint: settlementsEndpoint, path: settlementsPath,
		dir: "settlements", parse: ParseSettlementsPage,
		maxPageSize: 200, defaultPageSize: 50, kind: "settlement",
		statuses: map[string]diff.Mapping{
			"settlement":        {"pending": {State: diff.Pending}, "settled": {State: diff.Completed, Terminal: true}},
			"settlement_detail": {"pending": {State: diff.Pending}, "complete": {State: diff.Completed, Terminal: true}},
		},
		undocumented: []string{"failed", "SETTLED", "completed"},
		key:          "sandbox-key-Zq8sNw3k", collection: "settlements",
		fakeStatuses: []string{"pending", "settled"},
		itemJSON:     settlementJSON,
	}
	products = []*product{cpnProduct, rampProduct, settlementsProduct}
)

// The documented examples, and items made from them for the fakes.

//go:embed testdata/cpn/example.json
var cpnExampleJSON []byte

// cpnPaymentJSON is the documented example payment with id, createDate and status
// replaced, and nested ids made unique to the payment.
func cpnPaymentJSON(id string, created time.Time, status string) json.RawMessage {
	p := exampleItem(cpnExampleJSON, id, created, status, 0)
	for _, field := range []string{"rfis", "onChainTransactions", "refunds"} {
		for i, e := range p[field].([]any) {
			e.(map[string]any)["id"] = fmt.Sprintf("%s-%s-%d", id, field, i)
		}
	}
	return mustMarshal(p)
}

//go:embed testdata/ramp/example.json
var rampExampleJSON []byte

// rampSessionJSON is the documented example session with id, createDate, updateDate and
// status replaced.
func rampSessionJSON(id string, created time.Time, status string) json.RawMessage {
	return mustMarshal(exampleItem(rampExampleJSON, id, created, status, time.Minute))
}

//go:embed testdata/settlements/example.json
var settlementsExampleJSON []byte

// settlementJSON is the documented example settlement with id, createDate, updateDate
// and status replaced, and a payable and a receivable detail whose ids are unique to
// the settlement (the receivable one complete once the settlement is settled).
func settlementJSON(id string, created time.Time, status string) json.RawMessage {
	s := exampleItem(settlementsExampleJSON, id, created, status, time.Hour)
	payable := s["details"].([]any)[0].(map[string]any)
	payable["id"] = id + "-payable"
	receivable := maps.Clone(payable)
	receivable["id"], receivable["type"] = id+"-receivable", "receivable"
	if status == "settled" {
		receivable["status"] = "complete"
	}
	s["details"] = []any{payable, receivable}
	return mustMarshal(s)
}

// forEachProduct runs test as a subtest for each product.
func forEachProduct(t *testing.T, test func(t *testing.T, p *product)) {
	for _, p := range products {
		t.Run(p.name, func(t *testing.T) { test(t, p) })
	}
}

// newFake is a fake of the product's endpoints with the collection's page size limits.
func (p *product) newFake(apiKey string) *circleFake {
	f := newCircleFake(p.path, apiKey)
	f.maxPageSize, f.defaultPageSize = p.maxPageSize, p.defaultPageSize
	return f
}

// fill adds n items to f, two per minute going back from t0 (so that creation times
// tie), and returns their ids newest first.
func (p *product) fill(f *circleFake, n int) []string {
	for i := n - 1; i >= 0; i-- {
		created := t0.Add(-time.Duration(i/2) * time.Minute)
		f.add(fakeID(i), created, p.itemJSON(fakeID(i), created, p.fakeStatuses[i%len(p.fakeStatuses)]))
	}
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fakeID(i)
	}
	return ids
}

// newSource builds a source of the product on baseURL whose clock reads now.
func (p *product) newSource(t *testing.T, baseURL string, pageSize int, now time.Time, terminal ...string) provider.Source {
	t.Helper()
	s := provider.Settings{Name: p.name, BaseURL: baseURL, PageSize: pageSize, TerminalStatuses: terminal, Values: map[string]string{"api_key": testKey}}
	src, err := p.new(s, &provider.Client{})
	if err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
	listerOf(src).now = func() time.Time { return now }
	return src
}

// listerOf returns the lister behind a Circle source.
func listerOf(src provider.Source) *lister {
	switch s := src.(type) {
	case *cpnSource:
		return s.l
	case *rampSource:
		return s.l
	case *settlementsSource:
		return s.l
	}
	panic(fmt.Sprintf("%T is not a Circle source", src))
}

// exampleItem decodes the first item of a fixture page, numbers kept as written, and
// sets its id, status and createDate, and its updateDate updated after that unless
// updated is 0.
func exampleItem(body []byte, id string, created time.Time, status string, updated time.Duration) map[string]any {
	var page struct {
		Data []map[string]any `json:"data"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&page); err != nil {
		panic(fmt.Sprintf("example page: %v", err))
	}
	it := page.Data[0]
	it["id"], it["status"], it["createDate"] = id, status, created.Format(time.RFC3339Nano)
	if updated != 0 {
		it["updateDate"] = created.Add(updated).Format(time.RFC3339Nano)
	}
	return it
}

func mustMarshal(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func fakeID(i int) string { return fmt.Sprintf("c4d1da72-0000-4000-8000-%012d", i) }

// startFake serves f and returns its base URL.
func startFake(t *testing.T, f http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return srv.URL
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

// pageParser is the signature of the exported Parse…Page functions.
type pageParser func(body []byte) ([]diff.Item, []provider.Skipped, error)

// readTestdata reads testdata/<dir>/<name>.
func readTestdata(t testing.TB, dir, name string) []byte {
	t.Helper()
	b, err := testdataFS.ReadFile(path.Join("testdata", dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// parseFixture maps testdata/<p.dir>/<name>, failing t when the page is malformed.
func (p *product) parseFixture(t *testing.T, name string) ([]diff.Item, []provider.Skipped) {
	t.Helper()
	items, skipped, err := p.parse(readTestdata(t, p.dir, name))
	if err != nil {
		t.Fatalf("parse %s/%s: %v", p.dir, name, err)
	}
	return items, skipped
}

// parseItems maps testdata/<p.dir>/<name>, failing t unless it is n items without a
// skip; n < 0 takes any number.
func (p *product) parseItems(t *testing.T, name string, n int) []diff.Item {
	t.Helper()
	items, skipped := p.parseFixture(t, name)
	if n >= 0 && (len(items) != n || len(skipped) != 0) {
		t.Fatalf("%s/%s: %d items, skipped %v; want %d items", p.dir, name, len(items), skipped, n)
	}
	return items
}

// fuzzPageParser seeds f with the fixtures of testdata/<p.dir> and checks that p.parse
// never panics and returns either a MalformedError alone or items fit for diff.
func fuzzPageParser(f *testing.F, p *product) {
	for _, name := range providertest.Fixtures(f, testdataFS, path.Join("testdata", p.dir)) {
		b, err := testdataFS.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		items, skipped, err := p.parse(body)
		providertest.CheckParsed(t, items, skipped, err)
	})
}

// compactData returns the compacted elements of a fixture's data array.
func compactData(t *testing.T, body []byte) [][]byte {
	t.Helper()
	var page struct{ Data []json.RawMessage }
	if err := json.Unmarshal(body, &page); err != nil {
		t.Fatal(err)
	}
	out := make([][]byte, len(page.Data))
	for i, d := range page.Data {
		var buf bytes.Buffer
		if err := json.Compact(&buf, d); err != nil {
			t.Fatal(err)
		}
		out[i] = buf.Bytes()
	}
	return out
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

func TestContract(t *testing.T) {
	// Each constructor is named here, beside the contract-suite run, where poller's
	// TestRegistrationComplete looks for it.
	for _, tc := range []struct {
		p     *product
		build func(provider.Settings) (provider.Source, error)
	}{
		{cpnProduct, func(s provider.Settings) (provider.Source, error) { return NewCPN(s, nil) }},
		{rampProduct, func(s provider.Settings) (provider.Source, error) { return NewRamp(s, nil) }},
		{settlementsProduct, func(s provider.Settings) (provider.Source, error) { return NewSettlements(s, nil) }},
	} {
		p := tc.p
		newSource := func(baseURL, apiKey string) provider.Source {
			src, err := tc.build(provider.Settings{BaseURL: baseURL, PageSize: 4, Values: map[string]string{"api_key": apiKey}})
			if err != nil {
				t.Errorf("%s: %v", p.name, err)
				return nil
			}
			return src
		}
		fake := func(configure func(*circleFake)) providertest.Fake {
			return providertest.Fake{
				PageSize: 4,
				Handler: func(n int, apiKey string) (http.Handler, []string) {
					f := p.newFake(apiKey)
					configure(f)
					return f, p.fill(f, n)
				},
				WriteError: writeCircleError,
				Malformed: []string{
					`{"data":{}}`,
					`{"data":null}`,
					`{"` + p.collection + `":[]}`,
					`[]`,
					`{"data":[{"id":"c4d1da72-111e-4d52-bdbf-2e74a2d803d5","status":"` + p.fakeStatuses[0] + `"}]`,
				},
				MissingID: "00000000-0000-4000-8000-000000000000",
			}
		}
		t.Run(p.name, func(t *testing.T) {
			t.Run("link_header", func(t *testing.T) {
				providertest.CheckSource(t, newSource, fake(func(*circleFake) {}))
			})
			t.Run("relative_links", func(t *testing.T) {
				providertest.CheckSource(t, newSource, fake(func(f *circleFake) { f.relativeLinks = true }))
			})
			t.Run("no_link_header", func(t *testing.T) {
				providertest.CheckSource(t, newSource, fake(func(f *circleFake) { f.noLink = true }))
			})
		})
	}
}

func TestProvider(t *testing.T) {
	forEachProduct(t, func(t *testing.T, p *product) {
		pr := p.provider
		if pr.Kind != p.kind || pr.DefaultBaseURL != "https://api.circle.com" || pr.MaxPageSize != p.maxPageSize ||
			pr.DefaultPageSize != p.defaultPageSize || !reflect.DeepEqual(pr.Credentials(), []string{"api_key"}) ||
			pr.New == nil || reflect.ValueOf(pr.New).Pointer() != reflect.ValueOf(p.new).Pointer() {
			t.Errorf("%s = %+v", p.name, pr)
		}
		if got := slices.Sorted(maps.Keys(pr.Statuses)); !slices.Equal(got, slices.Sorted(maps.Keys(p.statuses))) {
			t.Errorf("kinds = %v, want %v", got, slices.Sorted(maps.Keys(p.statuses)))
		}
		for _, base := range []string{pr.DefaultBaseURL, "https://api-sandbox.circle.com"} {
			src, err := pr.New(provider.Settings{BaseURL: base, PageSize: pr.DefaultPageSize, Values: map[string]string{"api_key": testKey}}, nil)
			if err != nil {
				t.Fatalf("New on %s with the defaults: %v", base, err)
			}
			if _, ok := src.(provider.Getter); !ok {
				t.Errorf("the %s source does not implement provider.Getter", p.name)
			}
		}
	})
}

// TestStatusTables pins the tables to DESIGN §3: every documented value, nothing else.
func TestStatusTables(t *testing.T) {
	forEachProduct(t, func(t *testing.T, p *product) {
		for kind, want := range p.statuses {
			t.Run(kind, func(t *testing.T) {
				got := p.provider.Statuses[kind]
				if !maps.Equal(got, want) {
					t.Errorf("table = %v\nwant %v", got, want)
				}
				for raw, row := range want {
					s, known := got.Status(raw, "")
					if !known || s.State != row.State || s.Terminal != row.Terminal || s.Raw != raw {
						t.Errorf("Status(%q) = %+v, known %v; want %+v", raw, s, known, row)
					}
				}
				for _, raw := range p.undocumented {
					if s, known := got.Status(raw, ""); known || s.State != diff.Unknown || s.Terminal || s.Raw != raw {
						t.Errorf("Status(%q) = %+v (known %v), want unknown, not terminal, raw kept", raw, s, known)
					}
				}
			})
		}
	})
}

// TestSecretFields pins what is removed from each product's raw objects; the ramp
// session url is the only secret (see ramp_test.go).
func TestSecretFields(t *testing.T) {
	forEachProduct(t, func(t *testing.T, p *product) {
		if !slices.Equal(p.endpoint.secretFields, p.secretFields) {
			t.Errorf("secret fields = %v, want %v", p.endpoint.secretFields, p.secretFields)
		}
	})
}

// TestParsePageGolden maps every testdata/<product>/*.json fixture and compares the
// result with the fixture's .golden file; -update rewrites them.
func TestParsePageGolden(t *testing.T) {
	forEachProduct(t, func(t *testing.T, p *product) {
		providertest.GoldenFixtures(t, testdataFS, path.Join("testdata", p.dir), 10, *update, providertest.Parser(p.parse))
	})
}

// TestParsePageMalformedPages checks that the page_*.json fixtures are
// *provider.MalformedErrors and that empty.json is an empty page.
func TestParsePageMalformedPages(t *testing.T) {
	forEachProduct(t, func(t *testing.T, p *product) {
		for _, name := range []string{"page_not_json.json", "page_no_data.json", "page_data_object.json", "page_data_null.json", "page_truncated.json"} {
			t.Run(name, func(t *testing.T) {
				items, skipped, err := p.parse(readTestdata(t, p.dir, name))
				var me *provider.MalformedError
				if !errors.As(err, &me) || items != nil || skipped != nil {
					t.Errorf("parse = %d items, %d skipped, err %v; want a *provider.MalformedError", len(items), len(skipped), err)
				}
			})
		}
		items, skipped, err := p.parse(readTestdata(t, p.dir, "empty.json"))
		if err != nil || len(items) != 0 || len(skipped) != 0 {
			t.Errorf("empty page: %d items, %v skipped, err %v", len(items), skipped, err)
		}
	})
}

// TestParsePageUnknownStatuses: statuses no table knows map to unknown, at every level.
func TestParsePageUnknownStatuses(t *testing.T) {
	for p, n := range map[*product]int{cpnProduct: 2, rampProduct: 3, settlementsProduct: 2} {
		t.Run(p.name, func(t *testing.T) {
			items, skipped := p.parseFixture(t, "unknown_status.json")
			if len(items) != n || len(skipped) != 0 {
				t.Fatalf("%d items, skipped %v; want %d items", len(items), skipped, n)
			}
			for _, it := range items {
				for _, it := range append([]diff.Item{it}, it.Nested...) {
					if it.Status.State != diff.Unknown || it.Status.Terminal || it.Status.Raw == "" {
						t.Errorf("%s %s: status %+v, want unknown, not terminal, raw kept", it.Kind, it.ID, it.Status)
					}
				}
			}
		})
	}
}

// TestParsePageBigDecimals: amounts keep every digit, at every level; want lists the
// amounts of the items and their nested items in order, "" where there is none.
func TestParsePageBigDecimals(t *testing.T) {
	for p, want := range map[*product][]string{
		cpnProduct: {
			"123456789012345678901234567890.123456789012345678",
			"0.000000000000000001",
			"110.27", // a bare JSON number, read from its literal
			"1500",
			"-0.1",
			"99999999999999999999999999999999999999.99",
		},
		rampProduct: {
			"123456789012345678901234567890.123456789012345678",
			"0.000000000000000001",
			"99999999999999999999999999999999999999.99", // a bare JSON number, read from its literal
			"1500",
		},
		settlementsProduct: {
			"", // a settlement without an amount
			"123456789012345678901234567890.123456789012345678",
			"0.000000000000000001",
			"110.27", // a bare JSON number, read from its literal
			"-1500",
			"99999999999999999999999999999999999999.99",
		},
	} {
		t.Run(p.name, func(t *testing.T) {
			var got []*diff.Money
			for _, it := range p.parseItems(t, "big_decimal.json", -1) {
				got = append(got, it.Amount)
				for _, n := range it.Nested {
					got = append(got, n.Amount)
				}
			}
			if len(got) != len(want) {
				t.Fatalf("%d amounts, want %d", len(got), len(want))
			}
			for i, w := range want {
				if a := got[i]; (a == nil) != (w == "") || a != nil && (a.Value.String() != w || !a.Value.Equal(decimal.RequireFromString(w))) {
					t.Errorf("amount %d = %+v, want exactly %q", i, a, w)
				}
			}
		})
	}
}

// TestParsePageMalformedItems: items that cannot be mapped are skipped with the reason,
// the rest of the page kept. testdata/<product>/malformed_items.skipped lists the
// expected skips, one "id<TAB>reason" a line; unlike the .golden files, -update leaves
// it alone.
func TestParsePageMalformedItems(t *testing.T) {
	for p, kept := range map[*product][]string{
		cpnProduct:         {"m0000000-0000-4000-8000-000000000001", "m0000000-0000-4000-8000-000000000012"},
		rampProduct:        {"5m000000-0000-4000-8000-000000000001", "5m000000-0000-4000-8000-000000000012"},
		settlementsProduct: {"6m000000-0000-4000-8000-000000000001", "6m000000-0000-4000-8000-00000000000e"},
	} {
		t.Run(p.name, func(t *testing.T) {
			items, skipped := p.parseFixture(t, "malformed_items.json")
			if ids := itemIDs(items); !reflect.DeepEqual(ids, kept) {
				t.Errorf("kept %v, want %v", ids, kept)
			}
			var want []provider.Skipped
			for _, line := range strings.Split(strings.TrimSuffix(string(readTestdata(t, p.dir, "malformed_items.skipped")), "\n"), "\n") {
				id, reason, ok := strings.Cut(line, "\t")
				if !ok {
					t.Fatalf("malformed_items.skipped: line %q has no tab", line)
				}
				want = append(want, provider.Skipped{ID: id, Reason: reason})
			}
			if !reflect.DeepEqual(skipped, want) {
				t.Errorf("skipped:\n%s\nwant:\n%s", fmtSkipped(skipped), fmtSkipped(want))
			}
		})
	}
}

// checkRejected checks that p's constructor refuses s with an error naming each of
// want and showing no secret.
func checkRejected(t *testing.T, p *product, s provider.Settings, want ...string) {
	t.Helper()
	src, err := p.new(s, nil)
	if err == nil || src != nil {
		t.Fatalf("%s(%+v) = %v, %v; want an error", p.name, s, src, err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not name %q", err, w)
		}
	}
	for _, secret := range []string{"hunter2", "Zq8sNw3k", "6f1d", s.Value("api_key")} {
		if secret != "" && strings.Contains(err.Error(), secret) {
			t.Errorf("error shows part of a secret (%s): %v", secret, err)
		}
	}
}

// validSettings are settings p's constructor accepts.
func (p *product) validSettings() provider.Settings {
	return provider.Settings{BaseURL: p.provider.DefaultBaseURL, PageSize: p.defaultPageSize, Values: map[string]string{"api_key": p.key}}
}

func TestNewValidation(t *testing.T) {
	forEachProduct(t, func(t *testing.T, p *product) {
		limits := fmt.Sprintf("1..%d", p.maxPageSize)
		over := strconv.Itoa(p.maxPageSize + 1)
		for _, tc := range []struct {
			name   string
			change func(*provider.Settings)
			want   []string
		}{
			{"no api key", func(s *provider.Settings) { *s = s.With("api_key", "") }, []string{"api_key: must be set"}},
			{"no base url", func(s *provider.Settings) { s.BaseURL = "" }, []string{"base_url"}},
			{"ftp base url", func(s *provider.Settings) { s.BaseURL = "ftp://api.circle.com" }, []string{"base_url", "ftp://api.circle.com"}},
			{"relative base url", func(s *provider.Settings) { s.BaseURL = "api.circle.com" }, []string{"base_url"}},
			{"no host", func(s *provider.Settings) { s.BaseURL = "https://" }, []string{"base_url"}},
			{"query", func(s *provider.Settings) { s.BaseURL = "https://api.circle.com?x=1" }, []string{"base_url"}},
			{"credentials in base url", func(s *provider.Settings) { s.BaseURL = "https://user:hunter2@api.circle.com" }, []string{"base_url"}},
			{"page size 0", func(s *provider.Settings) { s.PageSize = 0 }, []string{"page_size", "0", limits}},
			{"page size " + over, func(s *provider.Settings) { s.PageSize = p.maxPageSize + 1 }, []string{"page_size", over, limits}},
			{"everything", func(s *provider.Settings) { *s = provider.Settings{BaseURL: "x", PageSize: -1} }, []string{"api_key", "base_url", "page_size"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				s := p.validSettings()
				tc.change(&s)
				checkRejected(t, p, s, tc.want...)
			})
		}
		for _, size := range []int{1, p.maxPageSize} {
			s := p.validSettings()
			s.PageSize = size
			if _, err := p.new(s, nil); err != nil {
				t.Errorf("page_size %d: %v", size, err)
			}
		}
	})
}

func TestWalkRequests(t *testing.T) {
	forEachProduct(t, func(t *testing.T, p *product) {
		f := p.newFake(testKey)
		ids := p.fill(f, 10)
		now := t0.Add(90*time.Second + 700*time.Millisecond)
		src := p.newSource(t, startFake(t, f)+"/", 4, now) // a trailing slash on base_url is dropped

		from := t0.Add(-3 * time.Minute) // inclusive: ids 0..7 (two per minute)
		if got := walkIDs(t, src, from); !reflect.DeepEqual(got, ids[:8]) {
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

		// Without From, the walk reaches the oldest item.
		if got := walkIDs(t, src, time.Time{}); !reflect.DeepEqual(got, ids) {
			t.Errorf("walk without from = %v\nwant %v", got, ids)
		}
	})
}

// TestErrors provokes Circle's documented error answers on each list endpoint and on
// its single-item endpoint, and checks that each becomes a *provider.StatusError
// carrying the decoded message and request id, never the API key.
func TestErrors(t *testing.T) {
	const wrongKey = "TEST_API_KEY:6f1d0c2e9a7b:wrong"
	forEachProduct(t, func(t *testing.T, p *product) {
		for _, tc := range []struct {
			name      string
			key       string
			serve     func(w http.ResponseWriter)
			code      int
			message   string
			temporary bool
		}{
			{name: "wrong key", key: wrongKey, code: 401, message: "code 401: Malformed authorization."},
			{name: "forbidden", serve: func(w http.ResponseWriter) { writeCircleErrorMessage(w, 403, "Forbidden.") }, code: 403, message: "code 403: Forbidden."},
			{name: "bad request", serve: func(w http.ResponseWriter) { writeCircleErrorMessage(w, 400, "Invalid pageSize.") }, code: 400, message: "code 2: Invalid pageSize."},
			{name: "not found", serve: func(w http.ResponseWriter) { writeCircleError(w, 404) }, code: 404, message: "code 404: Not found."},
			{name: "rate limited", serve: func(w http.ResponseWriter) { writeCircleError(w, 429) }, code: 429, message: "code 429: Too many requests.", temporary: true},
			{name: "server error", serve: func(w http.ResponseWriter) { writeCircleError(w, 500) }, code: 500, message: "code -1: Something went wrong.", temporary: true},
			{name: "gateway page", serve: func(w http.ResponseWriter) { w.WriteHeader(502); w.Write([]byte("<html>bad gateway</html>")) }, code: 502, temporary: true},
			{name: "key echoed", serve: func(w http.ResponseWriter) {
				writeCircleErrorMessage(w, 401, "Malformed authorization: "+testKey+"\nline two")
			}, code: 401, message: "code 401: Malformed authorization: [api_key] line two"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				f := p.newFake(testKey)
				if tc.key != "" {
					f.apiKey = tc.key
				}
				if tc.serve != nil {
					f.fail = func(w http.ResponseWriter, r *http.Request) bool { tc.serve(w); return true }
				}
				src := p.newSource(t, startFake(t, f), p.defaultPageSize, t0)
				_, pageErr := src.Page(t.Context(), provider.Request{})
				_, getErr := src.(provider.Getter).Get(t.Context(), "c4d1da72-111e-4d52-bdbf-2e74a2d803d5")
				for call, err := range map[string]error{"Page": pageErr, "Get": getErr} {
					var se *provider.StatusError
					if !errors.As(err, &se) {
						t.Fatalf("%s: %v, want a *provider.StatusError", call, err)
					}
					if se.Code != tc.code || se.Message != tc.message || se.Temporary() != tc.temporary || se.RequestID == "" {
						t.Errorf("%s: StatusError = %+v; want code %d, message %q, temporary %v and the X-Request-Id",
							call, se, tc.code, tc.message, tc.temporary)
					}
					if got := errors.Is(err, provider.ErrNotFound); got != (call == "Get" && tc.code == 404) {
						t.Errorf("%s: errors.Is(%v, ErrNotFound) = %v", call, err, got)
					}
					if strings.Contains(err.Error(), testKey) || strings.Contains(err.Error(), wrongKey) {
						t.Errorf("%s: error shows the API key: %v", call, err)
					}
				}
			})
		}
		t.Run("unreachable", func(t *testing.T) {
			srv := httptest.NewServer(http.NotFoundHandler())
			base := srv.URL
			srv.Close()
			_, err := p.newSource(t, base, p.defaultPageSize, t0).Page(t.Context(), provider.Request{})
			if err == nil || strings.Contains(err.Error(), testKey) {
				t.Errorf("Page on a closed server: %v; want an error without the API key", err)
			}
		})
	})
}

// TestGet checks Get against the fake: listed items (one with a slash in its id) read
// back as listed, an unknown id is the 404 wrapping provider.ErrNotFound, answers that
// are not the one asked-for item (an item the adapter cannot map, another item, a
// list, a truncated body) are MalformedErrors, and ids that are no path segment send
// no request.
func TestGet(t *testing.T) {
	forEachProduct(t, func(t *testing.T, p *product) {
		f := p.newFake(testKey)
		p.fill(f, 6)
		const slashID = "odd/id"
		f.add(slashID, t0.Add(-time.Hour), p.itemJSON(slashID, t0.Add(-time.Hour), p.fakeStatuses[0]))
		src := p.newSource(t, startFake(t, f), 50, t0)
		g := src.(provider.Getter)

		page, err := src.Page(t.Context(), provider.Request{})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Items) != 7 || page.Items[6].ID != slashID {
			t.Fatalf("listed %v, want 7 items ending with %q", itemIDs(page.Items), slashID)
		}
		for _, i := range []int{0, 4, 6} {
			want := page.Items[i]
			if got, err := g.Get(t.Context(), want.ID); err != nil || !reflect.DeepEqual(got, want) {
				t.Errorf("Get(%q) = %+v, %v\nlisted as %+v", want.ID, got, err, want)
			}
		}
		_, err = g.Get(t.Context(), "00000000-0000-4000-8000-000000000000")
		var se *provider.StatusError
		if !errors.Is(err, provider.ErrNotFound) || !errors.As(err, &se) || se.Code != 404 || se.Message != "code 404: Not found." {
			t.Errorf("Get of an unknown id: %v; want ErrNotFound and the 404 StatusError", err)
		}
		for _, tc := range []struct{ name, body string }{
			{"unmappable " + p.kind, `{"data":{"id":"x","createDate":"2025-01-01T00:00:00Z"}}`},
			{"another " + p.kind, `{"data":` + string(p.itemJSON("y", t0, p.fakeStatuses[0])) + "}"},
			{"a list", `{"data":[]}`},
			{"truncated", `{"data":{"id":"x"`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				f.configure(func(f *circleFake) {
					f.fail = func(w http.ResponseWriter, r *http.Request) bool { w.Write([]byte(tc.body)); return true }
				})
				defer f.configure(func(f *circleFake) { f.fail = nil })
				_, err := g.Get(t.Context(), "x")
				var me *provider.MalformedError
				if !errors.As(err, &me) {
					t.Errorf("Get answered %s: %v, want a *provider.MalformedError", tc.body, err)
				}
			})
		}
		before := f.requestCount()
		for _, id := range []string{"", ".", ".."} {
			if _, err := g.Get(t.Context(), id); err == nil {
				t.Errorf("Get(%q): no error", id)
			}
		}
		if n := f.requestCount() - before; n != 0 {
			t.Errorf("invalid ids caused %d requests", n)
		}
	})
}
