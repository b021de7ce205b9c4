package circle

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
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
)

// What only CPN has: its example and nested entries, and the tests of the walk
// circle.go does for every product, run here on the CPN endpoint. The tests every
// product shares are in products_test.go.

// newTestCPN builds a CPN source on baseURL whose clock reads now.
func newTestCPN(t *testing.T, baseURL string, pageSize int, now time.Time) *cpnSource {
	t.Helper()
	return cpnProduct.newSource(t, baseURL, pageSize, now).(*cpnSource)
}

// TestParseCPNPageExample checks the documented example field by field.
func TestParseCPNPageExample(t *testing.T) {
	items, skipped, err := ParseCPNPage(cpnExampleJSON)
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
	json.Unmarshal(cpnExampleJSON, &page)
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
	parse := cpnProduct.parseItems
	t.Run("status addendum", func(t *testing.T) {
		items := parse(t, "addendum.json", -1)
		for i, want := range []string{"IN_MANUAL_REVIEW", "", ""} {
			if items[i].Status.Addendum != want || items[i].Status.Raw != "CREATED" {
				t.Errorf("item %d status %+v, want addendum %q", i, items[i].Status, want)
			}
		}
	})
	t.Run("nulls and absent optional fields", func(t *testing.T) {
		items := parse(t, "nulls.json", 2)
		for _, it := range items {
			if it.Amount != nil || it.Failure != nil || it.Refs != nil || len(it.Nested) != 0 || it.Status.Addendum != "" {
				t.Errorf("item %s = %+v, want no amount, failure, refs, nested items or addendum", it.ID, it)
			}
		}
	})
	t.Run("creation times are UTC", func(t *testing.T) {
		items := parse(t, "minimal.json", -1)
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
		items := parse(t, "nested.json", -1)
		if !items[0].Settling || items[1].Settling {
			t.Errorf("settling = %v, %v; want true for the FAILED payment only", items[0].Settling, items[1].Settling)
		}
	})
	t.Run("activeRfi", func(t *testing.T) {
		items, skipped := cpnProduct.parseFixture(t, "active_rfi.json")
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
		items, skipped := cpnProduct.parseFixture(t, "nested.json")
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
}

// TestCPNPinnedToDuringInserts inserts payments between page requests: the walk must
// list each earlier payment exactly once, with the same `to` on every request, and the
// next walk starts with the new ones.
func TestCPNPinnedToDuringInserts(t *testing.T) {
	for _, noLink := range []bool{false, true} {
		t.Run(fmt.Sprintf("noLink=%v", noLink), func(t *testing.T) {
			f := cpnProduct.newFake(testKey)
			f.noLink = noLink
			f.now = func() time.Time { return t0.Add(time.Hour) } // the provider's clock runs ahead
			ids := cpnProduct.fill(f, 9)
			var inserted atomic.Int32
			f.onList = func(url.Values) {
				k := int(inserted.Add(1))
				id := fmt.Sprintf("1a5e7000-0000-4000-8000-%012d", k)
				created := t0.Add(time.Duration(k) * time.Second)
				f.add(id, created, cpnPaymentJSON(id, created, "CREATED"))
			}
			src := newTestCPN(t, startFake(t, f), 3, t0)
			got := walkIDs(t, src, time.Time{})
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
			got = walkIDs(t, src, time.Time{})
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
			f := cpnProduct.newFake(testKey)
			f.noLink = true
			ids := cpnProduct.fill(f, tc.n)
			src := newTestCPN(t, startFake(t, f), 4, t0)
			if got := walkIDs(t, src, time.Time{}); !slices.Equal(got, ids) {
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
				w.Write(cpnExampleJSON)
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
	f := cpnProduct.newFake(testKey)
	want := cpnProduct.fill(f, 5)
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

func TestCPNBaseURLPathPrefix(t *testing.T) {
	f := newCircleFake("/circle"+cpnPath, testKey)
	ids := cpnProduct.fill(f, 5)
	src := newTestCPN(t, startFake(t, f)+"/circle", 2, t0)
	if got := walkIDs(t, src, time.Time{}); !reflect.DeepEqual(got, ids) {
		t.Errorf("walk = %v, want %v", got, ids)
	}
}
