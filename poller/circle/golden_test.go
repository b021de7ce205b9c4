package circle

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

var update = flag.Bool("update", false, "rewrite the testdata/*/*.golden files from the current output")

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
	Addendum  string            `json:"addendum,omitempty"`
	Terminal  bool              `json:"terminal"`
	CreatedAt string            `json:"created_at"`
	Amount    *goldenMoney      `json:"amount,omitempty"`
	Failure   *goldenFailure    `json:"failure,omitempty"`
	Refs      map[string]string `json:"refs,omitempty"`
	Settling  bool              `json:"settling,omitempty"`
	Raw       json.RawMessage   `json:"raw"`
	Nested    []goldenItem      `json:"nested,omitempty"`
}

type goldenMoney struct {
	// Value is written with the scale the provider sent ("110.270000").
	Value    string `json:"value"`
	Currency string `json:"currency"`
}

type goldenFailure struct {
	Reason string `json:"reason"`
	Code   string `json:"code"`
}

type goldenSkipped struct {
	ID     string `json:"id"`
	Reason string `json:"reason"`
}

func toGolden(it diff.Item) goldenItem {
	g := goldenItem{
		Kind: it.Kind, ID: it.ID, Status: it.Status.Raw, State: it.Status.State, Addendum: it.Status.Addendum,
		Terminal: it.Status.Terminal, CreatedAt: it.CreatedAt.Format(time.RFC3339Nano), Refs: it.Refs,
		Settling: it.Settling, Raw: it.Raw,
	}
	if it.Amount != nil {
		v := it.Amount.Value
		s := v.String()
		if e := v.Exponent(); e < 0 {
			s = v.StringFixed(-e)
		}
		g.Amount = &goldenMoney{Value: s, Currency: it.Amount.Currency}
	}
	if it.Failure != nil {
		g.Failure = &goldenFailure{Reason: it.Failure.Reason, Code: it.Failure.Code}
	}
	for _, n := range it.Nested {
		g.Nested = append(g.Nested, toGolden(n))
	}
	return g
}

// TestParseCPNPageGolden maps every testdata/cpn/*.json fixture and compares the result
// with the fixture's .golden file; -update rewrites them.
func TestParseCPNPageGolden(t *testing.T) {
	entries, err := testdataFS.ReadDir("testdata/cpn")
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
			items, skipped, err := ParseCPNPage(readFixture(t, name))
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
			golden := path.Join("testdata", "cpn", strings.TrimSuffix(name, ".json")+".golden")
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
				t.Errorf("ParseCPNPage(%s) differs from %s:\n%s", name, golden, got)
			}
		})
	}
	if n < 10 {
		t.Errorf("only %d fixtures in testdata/cpn", n)
	}
}

// FuzzParseCPNPage checks that no body makes the parser panic, and that what it returns
// is either a MalformedError or items fit for diff.
func FuzzParseCPNPage(f *testing.F) {
	entries, err := testdataFS.ReadDir("testdata/cpn")
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".json") {
			f.Add(readFixture(f, e.Name()))
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		items, skipped, err := ParseCPNPage(body)
		if err != nil {
			var me *provider.MalformedError
			if !errors.As(err, &me) || items != nil || skipped != nil {
				t.Fatalf("ParseCPNPage: %d items, %d skipped, err %v", len(items), len(skipped), err)
			}
			return
		}
		var check func(it *diff.Item, nested bool)
		check = func(it *diff.Item, nested bool) {
			if it.ID == "" || it.Kind == "" || it.Status.Raw == "" || !it.Status.State.Valid() ||
				it.CreatedAt.IsZero() || it.CreatedAt.Location() != time.UTC || !json.Valid(it.Raw) ||
				(nested && len(it.Nested) > 0) {
				t.Fatalf("unfit item %+v", it)
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
			check(&items[i], false)
		}
		for _, s := range skipped {
			if s.Reason == "" {
				t.Fatalf("skipped without a reason: %+v", s)
			}
		}
	})
}
