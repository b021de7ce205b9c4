package circle

import (
	"bytes"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller/provider"
)

// What only the settlements have: their details, the refusal of terminal_statuses and
// a page limit Circle does not document. The tests every product shares are in
// products_test.go.

// TestParseSettlementsPageExample checks the documented example field by field.
func TestParseSettlementsPageExample(t *testing.T) {
	items, skipped, err := ParseSettlementsPage(settlementsExampleJSON)
	if err != nil || len(skipped) != 0 || len(items) != 1 {
		t.Fatalf("ParseSettlementsPage(example) = %d items, skipped %v, err %v", len(items), skipped, err)
	}
	it := items[0]
	const sameID = "b8627ae8-732b-4d25-b947-1df8f4007a29" // the example reuses one id everywhere
	when := time.Date(2020, 4, 10, 2, 13, 30, 0, time.UTC)
	if it.Kind != "settlement" || it.ID != sameID || it.Status != (diff.Status{Raw: "pending", State: diff.Pending}) ||
		!it.CreatedAt.Equal(when) || it.CreatedAt.Location() != time.UTC || !it.UpdatedAt.Equal(when) || it.UpdatedAt.Location() != time.UTC ||
		it.Amount != nil || it.Failure != nil || it.Settling || !maps.Equal(it.Refs, map[string]string{"entity_id": sameID}) {
		t.Errorf("settlement = %+v", it)
	}
	data := compactData(t, settlementsExampleJSON)[0]
	if !bytes.Equal(it.Raw, data) {
		t.Errorf("raw = %s\nwant the provider's object %s", it.Raw, data)
	}
	if len(it.Nested) != 1 {
		t.Fatalf("nested = %+v, want the one detail", it.Nested)
	}
	d := it.Nested[0]
	const detailRaw = `{"id":"` + sameID + `","type":"payable","amount":{"amount":"3.14","currency":"USDC"},"status":"pending",` +
		`"reference":"FXR1234567","createDate":"2020-04-10T02:13:30.000Z","updateDate":"2020-04-10T02:13:30.000Z"}`
	if d.Kind != "settlement_detail" || d.ID != sameID || d.Status != (diff.Status{Raw: "pending", State: diff.Pending}) ||
		!d.CreatedAt.Equal(when) || !d.UpdatedAt.Equal(when) || d.Amount == nil ||
		d.Amount.Value.StringFixed(-d.Amount.Value.Exponent()) != "3.14" || d.Amount.Currency != "USDC" ||
		!maps.Equal(d.Refs, map[string]string{"reference": "FXR1234567"}) || string(d.Raw) != detailRaw || len(d.Nested) != 0 {
		t.Errorf("detail = %+v (raw %s)", d, d.Raw)
	}
}

func TestParseSettlementsPageEdgeCases(t *testing.T) {
	parse := settlementsProduct.parseItems
	t.Run("every documented status", func(t *testing.T) {
		items := parse(t, "statuses.json", 2)
		got := []string{}
		for _, it := range items {
			got = append(got, fmt.Sprintf("%s %s %v", it.Status.Raw, it.Status.State, it.Status.Terminal))
			for _, n := range it.Nested {
				got = append(got, fmt.Sprintf("  %s %s %s %v", n.Kind, n.Status.Raw, n.Status.State, n.Status.Terminal))
			}
		}
		want := []string{
			"pending pending false",
			"  settlement_detail pending pending false",
			"  settlement_detail complete completed true",
			"settled completed true",
			"  settlement_detail complete completed true",
			"  settlement_detail complete completed true",
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("statuses:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})
	t.Run("nulls and absent optional fields", func(t *testing.T) {
		items := parse(t, "nulls.json", 3)
		for _, it := range items {
			if it.Amount != nil || it.Refs != nil || !it.UpdatedAt.IsZero() {
				t.Errorf("settlement %s = %+v, want no amount, refs or update time", it.ID, it)
			}
		}
		if len(items[0].Nested) != 0 || len(items[2].Nested) != 0 || len(items[1].Nested) != 1 {
			t.Fatalf("nested: %d, %d, %d; want 0, 1, 0", len(items[0].Nested), len(items[1].Nested), len(items[2].Nested))
		}
		d := items[1].Nested[0]
		if d.Amount != nil || d.Refs != nil || !d.UpdatedAt.IsZero() || !d.CreatedAt.Equal(items[1].CreatedAt) {
			t.Errorf("detail = %+v; want no amount, refs or update time, and its settlement's creation time", d)
		}
	})
	t.Run("times are UTC", func(t *testing.T) {
		items := parse(t, "minimal.json", -1)
		s, d := items[1], items[1].Nested[0]
		for _, c := range []struct {
			name      string
			got, want time.Time
		}{
			{"settlement 0 created", items[0].CreatedAt, time.Date(2025, 3, 4, 12, 0, 0, 123456000, time.UTC)},
			{"settlement 1 created", s.CreatedAt, time.Date(2025, 3, 4, 11, 59, 30, 0, time.UTC)},
			{"settlement 1 updated", s.UpdatedAt, time.Date(2025, 3, 4, 12, 10, 0, 500000000, time.UTC)},
			{"detail created", d.CreatedAt, time.Date(2025, 3, 4, 11, 30, 0, 0, time.UTC)},
			{"detail updated", d.UpdatedAt, time.Date(2025, 3, 4, 12, 0, 0, 0, time.UTC)},
		} {
			if !c.got.Equal(c.want) || c.got.Location() != time.UTC {
				t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
			}
		}
		if !items[0].UpdatedAt.IsZero() {
			t.Errorf("settlement 0 updated %v, want none", items[0].UpdatedAt)
		}
		if a := s.Amount; a == nil || a.Value.StringFixed(2) != "42.00" || a.Currency != "USDC" {
			t.Errorf("a settlement's own amount = %+v, want 42.00 USDC", a)
		}
	})
	t.Run("malformed details cost only themselves", func(t *testing.T) {
		items, skipped := settlementsProduct.parseFixture(t, "details.json")
		const p = "6e000000-0000-4000-8000-000000000001"
		want := []provider.Skipped{
			{ID: p + "/details[1]", Reason: "data[0]: details[1]: no id"},
			{ID: p + "/details[2]", Reason: `data[0]: details[2]: id "6ed00000-0000-4000-8000-000000000003": no status`},
			{ID: p + "/details[3]", Reason: `data[0]: details[3]: id "6ed00000-0000-4000-8000-000000000004": createDate "last week": not an RFC 3339 time`},
			{ID: p + "/details[4]", Reason: `data[0]: details[4]: id "6ed00000-0000-4000-8000-000000000005": updateDate "soon": not an RFC 3339 time`},
			{ID: p + "/details[5]", Reason: `data[0]: details[5]: id "6ed00000-0000-4000-8000-000000000006": amount.amount "ten": not a decimal`},
			{ID: p + "/details[6]", Reason: "data[0]: details[6]: field amount: unexpected JSON string"},
			{ID: p + "/details[7]", Reason: `data[0]: details[7]: id "6ed00000-0000-4000-8000-000000000001" appears twice`},
			{ID: p + "/details[8]", Reason: "data[0]: details[8]: field id: unexpected JSON number"},
			{ID: p + "/details[9]", Reason: "data[0]: details[9]: not a JSON object"},
			{ID: p + "/details[10]", Reason: "data[0]: details[10]: not a JSON object"},
			{ID: "6e000000-0000-4000-8000-000000000002/details", Reason: "data[1]: details: not an array"},
			{ID: "6e000000-0000-4000-8000-000000000003/details", Reason: "data[2]: details: not an array"},
		}
		if !reflect.DeepEqual(skipped, want) {
			t.Errorf("skipped:\n%s\nwant:\n%s", fmtSkipped(skipped), fmtSkipped(want))
		}
		if ids := itemIDs(items); len(items) != 3 || ids[0] != p {
			t.Fatalf("kept settlements %v, want all three", ids)
		}
		if ids := itemIDs(items[0].Nested); !reflect.DeepEqual(ids, []string{"6ed00000-0000-4000-8000-000000000001", "6ed00000-0000-4000-8000-00000000000a"}) {
			t.Errorf("kept details %v", ids)
		}
		if d := items[0].Nested[1]; !d.CreatedAt.Equal(items[0].CreatedAt) || d.Amount == nil || d.Amount.Value.String() != "0.55" ||
			!maps.Equal(d.Refs, map[string]string{"reference": "FXR1"}) {
			t.Errorf("detail without createDate = %+v", d)
		}
		if len(items[1].Nested) != 0 || len(items[2].Nested) != 0 {
			t.Errorf("settlements with a broken details member kept nested %v, %v", items[1].Nested, items[2].Nested)
		}
	})
}

// TestNewSettlementsValidation checks what only NewSettlements refuses:
// terminal_statuses, since the settlement statuses are documented. TestNewValidation
// checks the rest.
func TestNewSettlementsValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    provider.Settings
		want []string
	}{
		{"terminal statuses", settlementsProduct.validSettings(), []string{"terminal_statuses"}},
		{"everything", provider.Settings{BaseURL: "x", PageSize: -1}, []string{"api_key", "base_url", "page_size", "terminal_statuses"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.s.TerminalStatuses = []string{"settled"}
			checkRejected(t, settlementsProduct, tc.s, tc.want...)
		})
	}
}

// TestSettlementsNestedDetails lists settlements through the fake and checks that each
// carries its payable and receivable details, with their own statuses.
func TestSettlementsNestedDetails(t *testing.T) {
	f := settlementsProduct.newFake(testKey)
	settlementsProduct.fill(f, 2)
	src := settlementsProduct.newSource(t, startFake(t, f), 50, t0)
	p, err := src.Page(t.Context(), provider.Request{})
	if err != nil || len(p.Skipped) != 0 || len(p.Items) != 2 {
		t.Fatalf("Page = %+v, %v", p, err)
	}
	var got []string
	for _, it := range p.Items {
		for _, n := range it.Nested {
			got = append(got, fmt.Sprintf("%s %s %s %s", it.Status.Raw, n.Kind, n.ID, n.Status.Raw))
		}
	}
	want := []string{
		"pending settlement_detail " + fakeID(0) + "-payable pending",
		"pending settlement_detail " + fakeID(0) + "-receivable pending",
		"settled settlement_detail " + fakeID(1) + "-payable pending",
		"settled settlement_detail " + fakeID(1) + "-receivable complete",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("details:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestSettlementsWithoutLinkUnderAnUndocumentedCap: the settlements page limit is not
// documented. A server without Link headers that caps pages below the asked size is
// walked to its end (one empty page past the last); CPN, whose limit is documented,
// ends at a short page.
func TestSettlementsWithoutLinkUnderAnUndocumentedCap(t *testing.T) {
	f := settlementsProduct.newFake(testKey)
	want := settlementsProduct.fill(f, 7)
	f.noLink = true
	f.maxPageSize = 2
	src := settlementsProduct.newSource(t, startFake(t, f), 5, t0)
	var got []string
	req := provider.Request{}
	pages := 0
	for ; pages < 20; pages++ {
		p, err := src.Page(t.Context(), req)
		if err != nil {
			t.Fatalf("page %d: %v", pages+1, err)
		}
		for _, it := range p.Items {
			got = append(got, it.ID)
		}
		if p.Next == "" {
			break
		}
		req.Cursor = p.Next
	}
	if !slices.Equal(got, want) {
		t.Errorf("walk = %v, want %v", got, want)
	}
	if pages+1 != 5 { // 2+2+2+1 items, then the empty page
		t.Errorf("walk took %d pages, want 5", pages+1)
	}
}
