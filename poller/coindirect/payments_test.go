package coindirect

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller/provider"
)

// TestStatusTables pins the tables to DESIGN §3: every documented value, nothing else.
func TestStatusTables(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want diff.Mapping
	}{
		{"payment", PaymentStatus, diff.Mapping{
			"PENDING":    {State: diff.Pending},
			"PROCESSING": {State: diff.Processing},
			"COMPLETE":   {State: diff.Completed, Terminal: true},
			"UNDERPAID":  {State: diff.Underpaid, Terminal: true},
			"EXPIRED":    {State: diff.Expired, Terminal: true},
			"CANCELLED":  {State: diff.Canceled, Terminal: true},
		}},
		{"transaction", TransactionStatus, diff.Mapping{
			"UNCONFIRMED": {State: diff.Pending},
			"CONFIRMED":   {State: diff.Completed, Terminal: true},
		}},
	} {
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
			for _, raw := range []string{"complete", "CANCELED", "REFUNDED", ""} {
				if s, known := tc.got.Status(raw, ""); known || s.State != diff.Unknown || s.Terminal {
					t.Errorf("undocumented %q maps to %+v (known %v), want unknown and not terminal", raw, s, known)
				}
			}
		})
	}
}

// TestParseStatuses maps one payment per documented status from a page.
func TestParseStatuses(t *testing.T) {
	items, skipped, err := ParsePaymentsPage(readFixture(t, "statuses.json"))
	if err != nil || len(skipped) != 0 {
		t.Fatalf("ParsePaymentsPage: skipped %v, err %v", skipped, err)
	}
	var got []string
	for _, it := range items {
		got = append(got, it.Status.Raw+" "+string(it.Status.State)+" "+map[bool]string{true: "T", false: "-"}[it.Status.Terminal])
		if it.Settling != it.Status.Terminal {
			t.Errorf("%s: settling %v, want it exactly for final payments", it.Status.Raw, it.Settling)
		}
	}
	want := []string{"PENDING pending -", "PROCESSING processing -", "COMPLETE completed T", "UNDERPAID underpaid T", "EXPIRED expired T", "CANCELLED canceled T"}
	if !slices.Equal(got, want) {
		t.Errorf("statuses = %q\nwant %q", got, want)
	}
}

// TestParseExample checks the documented example field by field, and that every number
// keeps its exact text: in the amounts and in the raw object.
func TestParseExample(t *testing.T) {
	items, skipped, err := ParsePaymentsPage(exampleJSON)
	if err != nil || len(skipped) != 0 || len(items) != 1 {
		t.Fatalf("ParsePaymentsPage(example) = %d items, skipped %v, err %v", len(items), skipped, err)
	}
	it := items[0]
	if it.Kind != "payment" || it.ID != "5c75bc40-c1b2-4f57-b96f-79882a6e7c4b" ||
		it.Status != (diff.Status{Raw: "COMPLETE", State: diff.Completed, Terminal: true}) ||
		!it.CreatedAt.Equal(time.Date(2021, 9, 30, 13, 53, 50, 0, time.UTC)) || it.CreatedAt.Location() != time.UTC ||
		!it.UpdatedAt.IsZero() || it.Failure != nil || !it.Settling ||
		!maps.Equal(it.Refs, map[string]string{"reference": "c71102cf-4ac7-4503-8003-2e63931dd6e6", "merchant_id": "9a57c17a-1eef-48ff-83d0-b5892c99f767"}) {
		t.Errorf("payment = %+v", it)
	}
	if it.Amount == nil || it.Amount.Currency != "JPY" || exactText(it.Amount) != "10000" || it.Amount.Value.String() != "10000" {
		t.Errorf("amount = %+v, want exactly 10000 JPY (1E+4)", it.Amount)
	}
	var page []json.RawMessage
	if err := json.Unmarshal(exampleJSON, &page); err != nil {
		t.Fatal(err)
	}
	if string(it.Raw) != compact(t, page[0]) {
		t.Errorf("raw = %s\nwant the documented object %s", it.Raw, compact(t, page[0]))
	}
	for _, text := range []string{
		`"amount":1E+4`, `"actual":0.030581700000000000`, `"rate":326992.940222420597939290`,
		`"rate":2521.442345707899981442`, `"networkFeeAmount":0.000031500000252000`, `"rate":0.000396598400000000`,
	} {
		if !strings.Contains(string(it.Raw), text) {
			t.Errorf("raw lost the number text %s", text)
		}
	}

	if len(it.Nested) != 1 {
		t.Fatalf("nested = %+v, want the one transaction", it.Nested)
	}
	tx := it.Nested[0]
	if tx.Kind != "payment_transaction" || tx.ID != "0x087bcfd76ae12d6116d35a442e51dfff99e77fbf8330be39017dbdc60df7afea" ||
		tx.Status != (diff.Status{Raw: "CONFIRMED", State: diff.Completed, Terminal: true}) ||
		!tx.CreatedAt.Equal(time.UnixMilli(1633010180000)) || tx.CreatedAt.Location() != time.UTC ||
		!tx.UpdatedAt.Equal(time.UnixMilli(1633010242000)) || tx.UpdatedAt.Location() != time.UTC ||
		tx.Settling || len(tx.Nested) != 0 || tx.Refs["tx_hash"] != tx.ID {
		t.Errorf("transaction = %+v", tx)
	}
	if tx.Amount == nil || exactText(tx.Amount) != "0.030581700000000000" || tx.Amount.Currency != "ETH" {
		t.Errorf("transaction amount = %+v, want exactly 0.030581700000000000 ETH", tx.Amount)
	}
	var p struct{ Transactions []json.RawMessage }
	json.Unmarshal(page[0], &p)
	if string(tx.Raw) != compact(t, p.Transactions[0]) {
		t.Errorf("transaction raw = %s\nwant %s", tx.Raw, compact(t, p.Transactions[0]))
	}
}

func TestParseBigDecimals(t *testing.T) {
	items, skipped, err := ParsePaymentsPage(readFixture(t, "big_decimal.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		got  *diff.Money
		want string
	}{
		{items[0].Amount, "123456789012345678901234567890.123456789012345678"},
		{items[0].Nested[0].Amount, "0.000000000000000001"},
		{items[0].Nested[1].Amount, "0.00000015"},
		{items[0].Nested[2].Amount, "0.000000000000000000"},
		{items[0].Nested[3].Amount, "110.270000"},
		{items[1].Amount, "10000"},
		{items[2].Amount, "0.030581700000000000"},
		{items[3].Amount, "-0.1"},
	} {
		if c.got == nil || exactText(c.got) != c.want {
			t.Errorf("amount %+v, want exactly %s", c.got, c.want)
		}
	}
	if !strings.Contains(string(items[0].Raw), `"rate":326992.940222420597939290`) ||
		!strings.Contains(string(items[0].Nested[1].Raw), `"amount":1.5E-7`) ||
		!strings.Contains(string(items[0].Nested[2].Raw), `"amount":0E-18`) {
		t.Errorf("raw objects lost number text: %s", items[0].Raw)
	}
	// Absurd amounts cost only their payment.
	if ids := skippedIDs(skipped); !slices.Equal(ids, []string{"b0000000-0000-4000-8000-000000000005", "b0000000-0000-4000-8000-000000000006"}) || len(items) != 4 {
		t.Errorf("%d items, skipped %v", len(items), skipped)
	}
}

func TestParseTransactions(t *testing.T) {
	items, skipped, err := ParsePaymentsPage(readFixture(t, "transactions.json"))
	if err != nil || len(items) != 3 {
		t.Fatalf("%d items, err %v", len(items), err)
	}
	var got []string
	for _, n := range items[0].Nested {
		got = append(got, n.ID+" "+n.Status.Raw+" "+n.CreatedAt.Format(time.RFC3339)+" "+n.Amount.Currency)
	}
	parent := items[0].CreatedAt.Format(time.RFC3339)
	want := []string{
		"tx-null-confirmed UNCONFIRMED 2025-06-01T12:00:10Z BTC",
		"tx-absent-confirmed UNCONFIRMED 2025-06-01T12:00:20Z BTC",
		"tx-zero-confirmed UNCONFIRMED 2025-06-01T12:00:30Z BTC",
		"tx-confirmed CONFIRMED 2025-06-01T12:00:40Z BTC",
		"tx-string-dates CONFIRMED 2025-06-01T12:00:50Z BTC",
		"tx-no-created CONFIRMED " + parent + " BTC",
	}
	if !slices.Equal(got, want) {
		t.Errorf("transactions =\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	const p = "d0000000-0000-4000-8000-000000000001/transactions"
	wantSkipped := []string{p + "[6]", p + "[7]", p + "[8]", p + "[9]", p + "[10]", p + "[11]", p + "[12]", p + "[13]", p + "[14]", p + "[15]",
		"d0000000-0000-4000-8000-000000000002/transactions"}
	if ids := skippedIDs(skipped); !slices.Equal(ids, wantSkipped) {
		t.Errorf("skipped\n%s\nwant ids %v", fmtSkipped(skipped), wantSkipped)
	}
	if !strings.Contains(skipped[2].Reason, `hash "tx-confirmed" appears twice`) {
		t.Errorf("duplicate hash reason = %q", skipped[2].Reason)
	}
	// A final payment whose transactions are all confirmed still settles: more can come.
	if !items[2].Settling || !items[1].Settling || items[0].Settling {
		t.Errorf("settling = %v %v %v, want false true true", items[0].Settling, items[1].Settling, items[2].Settling)
	}
}

func TestParseDuplicatesInPage(t *testing.T) {
	items, skipped, err := ParsePaymentsPage(readFixture(t, "duplicates.json"))
	if err != nil || len(skipped) != 0 {
		t.Fatalf("skipped %v, err %v", skipped, err)
	}
	want := []string{"10000000-0000-4000-8000-000000000001", "10000000-0000-4000-8000-000000000002", "10000000-0000-4000-8000-000000000003"}
	if got := itemIDs(items); !slices.Equal(got, want) {
		t.Errorf("items %v, want %v", got, want)
	}
}

func TestParseMalformedItems(t *testing.T) {
	items, skipped, err := ParsePaymentsPage(readFixture(t, "malformed_items.json"))
	if err != nil {
		t.Fatal(err)
	}
	if got := itemIDs(items); !slices.Equal(got, []string{"f0000000-0000-4000-8000-00000000000c"}) {
		t.Errorf("items %v, want only the well-formed payment", got)
	}
	if len(skipped) != 18 {
		t.Errorf("%d skipped, want 18:\n%s", len(skipped), fmtSkipped(skipped))
	}
	for _, s := range skipped {
		if s.Reason == "" || !strings.HasPrefix(s.Reason, "[") {
			t.Errorf("skipped %+v: want a reason that locates the element", s)
		}
	}
}

// TestSecretFields pins the list of fields removed from raw objects, and checks that
// with it every raw object is the provider's object exactly.
func TestSecretFields(t *testing.T) {
	if len(secretFields) != 0 {
		t.Errorf("secretFields = %v; a payment summary carries no credentials", secretFields)
	}
	for _, name := range []string{"example.json", "statuses.json", "big_decimal.json", "nulls.json", "duplicates.json"} {
		body := readFixture(t, name)
		var page []json.RawMessage
		if err := json.Unmarshal(body, &page); err != nil {
			t.Fatal(err)
		}
		raws := map[string]string{}
		for _, el := range page {
			var p struct{ UUID string }
			json.Unmarshal(el, &p)
			raws[p.UUID] = compact(t, el)
		}
		items, _, _ := ParsePaymentsPage(body)
		for _, it := range items {
			if string(it.Raw) != raws[it.ID] {
				t.Errorf("%s: raw of %s = %s\nwant %s", name, it.ID, it.Raw, raws[it.ID])
			}
		}
	}
}

func TestEpochMillis(t *testing.T) {
	for raw, want := range map[string]string{
		`1633010030000`:   "2021-09-30T13:53:50Z",
		`"1633010030000"`: "2021-09-30T13:53:50Z",
		` 1633010030001 `: "2021-09-30T13:53:50.001Z",
		`null`:            "unset",
		``:                "unset",
		`0`:               "unset",
		`-1`:              "error",
		`1.6E12`:          "error",
		`"soon"`:          "error",
		`true`:            "error",
		`253402300799999`: "9999-12-31T23:59:59.999Z",
		`253402300800000`: "error",
	} {
		tm, set, err := epochMillis("d", json.RawMessage(raw))
		got := "unset"
		switch {
		case err != nil:
			got = "error"
		case set:
			got = tm.Format(time.RFC3339Nano)
			if tm.Location() != time.UTC {
				t.Errorf("epochMillis(%s) is not UTC", raw)
			}
		}
		if got != want {
			t.Errorf("epochMillis(%s) = %s (err %v), want %s", raw, got, err, want)
		}
	}
}

func skippedIDs(s []provider.Skipped) []string {
	var ids []string
	for _, x := range s {
		ids = append(ids, x.ID)
	}
	return ids
}

func fmtSkipped(s []provider.Skipped) string {
	var b strings.Builder
	for _, x := range s {
		b.WriteString("  " + x.ID + ": " + x.Reason + "\n")
	}
	return b.String()
}
