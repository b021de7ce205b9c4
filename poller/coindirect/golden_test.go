package coindirect

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller/provider"
)

var update = flag.Bool("update", false, "rewrite the testdata/coindirect/*.golden files from the current output")

//go:embed testdata
var testdataFS embed.FS

// goldenPage is the mapped form of one fixture, as the golden files hold it.
type goldenPage struct {
	Error   string          `json:"error,omitempty"`
	Items   []goldenItem    `json:"items"`
	Skipped []goldenSkipped `json:"skipped"`
}

type goldenItem struct {
	Kind      string            `json:"kind"`
	ID        string            `json:"id"`
	Status    string            `json:"status"`
	State     diff.State        `json:"state"`
	Terminal  bool              `json:"terminal"`
	CreatedAt string            `json:"created_at"`
	UpdatedAt string            `json:"updated_at,omitempty"`
	Amount    *goldenMoney      `json:"amount,omitempty"`
	Refs      map[string]string `json:"refs,omitempty"`
	Settling  bool              `json:"settling,omitempty"`
	Raw       json.RawMessage   `json:"raw"`
	Nested    []goldenItem      `json:"nested,omitempty"`
}

type goldenMoney struct {
	// Value keeps the scale the provider sent (0.030581700000000000).
	Value    string `json:"value"`
	Currency string `json:"currency"`
}

type goldenSkipped struct {
	ID     string `json:"id"`
	Reason string `json:"reason"`
}

// exactText prints a decimal with the scale it was parsed with.
func exactText(m *diff.Money) string {
	v := m.Value
	if e := v.Exponent(); e < 0 {
		return v.StringFixed(-e)
	}
	return v.String()
}

func toGolden(it diff.Item) goldenItem {
	if it.Failure != nil {
		panic("Coindirect items carry no failure")
	}
	g := goldenItem{
		Kind: it.Kind, ID: it.ID, Status: it.Status.Raw, State: it.Status.State, Terminal: it.Status.Terminal,
		CreatedAt: it.CreatedAt.Format(time.RFC3339Nano), Refs: it.Refs, Settling: it.Settling, Raw: it.Raw,
	}
	if !it.UpdatedAt.IsZero() {
		g.UpdatedAt = it.UpdatedAt.Format(time.RFC3339Nano)
	}
	if it.Amount != nil {
		g.Amount = &goldenMoney{Value: exactText(it.Amount), Currency: it.Amount.Currency}
	}
	for _, n := range it.Nested {
		g.Nested = append(g.Nested, toGolden(n))
	}
	return g
}

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := testdataFS.ReadFile("testdata/coindirect/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestParsePaymentsPageGolden maps every testdata/coindirect/*.json fixture and
// compares the result with the fixture's .golden file; -update rewrites them.
func TestParsePaymentsPageGolden(t *testing.T) {
	entries, err := testdataFS.ReadDir("testdata/coindirect")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".json") {
			continue
		}
		n++
		t.Run(strings.TrimSuffix(name, ".json"), func(t *testing.T) {
			items, skipped, err := ParsePaymentsPage(readFixture(t, name))
			page := goldenPage{Items: []goldenItem{}, Skipped: []goldenSkipped{}}
			if err != nil {
				var me *provider.MalformedError
				if !errors.As(err, &me) {
					t.Errorf("error %v is not a *provider.MalformedError", err)
				}
				page.Error = err.Error()
			}
			for _, it := range items {
				page.Items = append(page.Items, toGolden(it))
			}
			for _, s := range skipped {
				page.Skipped = append(page.Skipped, goldenSkipped{ID: s.ID, Reason: s.Reason})
			}
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			enc.SetIndent("", "  ")
			if err := enc.Encode(page); err != nil {
				t.Fatalf("encode: %v", err)
			}
			got := buf.Bytes()
			golden := path.Join("testdata", "coindirect", strings.TrimSuffix(name, ".json")+".golden")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("ParsePaymentsPage(%s) differs from %s:\n%s", name, golden, got)
			}
		})
	}
	if n < 12 {
		t.Errorf("only %d fixtures in testdata/coindirect", n)
	}
}

// FuzzParsePaymentsPage checks that no body makes the parser panic, and that what it
// returns is either a MalformedError or items fit for diff.
func FuzzParsePaymentsPage(f *testing.F) {
	entries, err := testdataFS.ReadDir("testdata/coindirect")
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".json") {
			f.Add(readFixture(f, e.Name()))
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		items, skipped, err := ParsePaymentsPage(body)
		if err != nil {
			var me *provider.MalformedError
			if !errors.As(err, &me) || items != nil || skipped != nil {
				t.Fatalf("ParsePaymentsPage: %d items, %d skipped, err %v", len(items), len(skipped), err)
			}
			return
		}
		ids := map[string]bool{}
		var check func(it *diff.Item, nested bool)
		check = func(it *diff.Item, nested bool) {
			if it.ID == "" || it.Kind == "" || it.Status.Raw == "" || !it.Status.State.Valid() ||
				it.CreatedAt.IsZero() || it.CreatedAt.Location() != time.UTC ||
				(!it.UpdatedAt.IsZero() && it.UpdatedAt.Location() != time.UTC) || !json.Valid(it.Raw) ||
				(nested && len(it.Nested) > 0) {
				t.Fatalf("unfit item %+v", it)
			}
			if _, err := it.CreatedAt.MarshalJSON(); err != nil {
				t.Fatalf("created at %v cannot be printed: %v", it.CreatedAt, err)
			}
			if it.Amount != nil {
				if e := it.Amount.Value.Exponent(); e < -provider.MaxAmountExp || e > provider.MaxAmountExp {
					t.Fatalf("amount exponent %d", e)
				}
			}
			for i := range it.Nested {
				check(&it.Nested[i], true)
			}
		}
		for i := range items {
			if ids[items[i].ID] {
				t.Fatalf("payment %s listed twice", items[i].ID)
			}
			ids[items[i].ID] = true
			check(&items[i], false)
		}
		for _, s := range skipped {
			if s.Reason == "" {
				t.Fatalf("skipped without a reason: %+v", s)
			}
		}
	})
}
