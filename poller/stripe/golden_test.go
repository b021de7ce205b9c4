package stripe

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

var update = flag.Bool("update", false, "rewrite the testdata/onramp golden files from the current output")

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
	Raw       json.RawMessage   `json:"raw"`
}

type goldenMoney struct {
	// Value is written with the scale the provider sent ("100.00").
	Value    string `json:"value"`
	Currency string `json:"currency"`
}

type goldenSkipped struct {
	ID     string `json:"id"`
	Reason string `json:"reason"`
}

func toGolden(it diff.Item) goldenItem {
	g := goldenItem{
		Kind: it.Kind, ID: it.ID, Status: it.Status.Raw, State: it.Status.State, Terminal: it.Status.Terminal,
		CreatedAt: it.CreatedAt.Format(time.RFC3339Nano), Refs: it.Refs, Raw: it.Raw,
	}
	if !it.UpdatedAt.IsZero() {
		g.UpdatedAt = it.UpdatedAt.Format(time.RFC3339Nano)
	}
	if it.Amount != nil {
		v := it.Amount.Value
		s := v.String()
		if e := v.Exponent(); e < 0 {
			s = v.StringFixed(-e)
		}
		g.Amount = &goldenMoney{Value: s, Currency: it.Amount.Currency}
	}
	return g
}

// fixtureNames lists the fixtures: list pages as "x.json", single sessions (as Get
// reads them) as "object/x.json".
func fixtureNames(t testing.TB) []string {
	t.Helper()
	var names []string
	for _, dir := range []string{"", "object"} {
		entries, err := testdataFS.ReadDir(path.Join("testdata/onramp", dir))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if !e.IsDir() && strings.HasSuffix(e.Name(), ".json") {
				names = append(names, path.Join(dir, e.Name()))
			}
		}
	}
	return names
}

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := testdataFS.ReadFile("testdata/onramp/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOnrampGolden maps every fixture (pages with ParseOnrampPage, single sessions as
// Get maps them) and compares the result with the fixture's .golden file; -update
// rewrites them.
func TestOnrampGolden(t *testing.T) {
	names := fixtureNames(t)
	for _, name := range names {
		t.Run(strings.TrimSuffix(name, ".json"), func(t *testing.T) {
			body := readFixture(t, name)
			page := goldenPage{Items: []goldenItem{}, Skipped: []goldenSkipped{}}
			var items []diff.Item
			var skipped []provider.Skipped
			if strings.HasPrefix(name, "object/") {
				it, sk, ok := parseSession(body, "body")
				if ok {
					items = append(items, it)
				} else {
					skipped = append(skipped, sk)
				}
			} else {
				var err error
				items, skipped, err = ParseOnrampPage(body)
				if err != nil {
					var me *provider.MalformedError
					if !errors.As(err, &me) {
						t.Errorf("error %v is not a *provider.MalformedError", err)
					}
					page.Error = err.Error()
				}
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
			golden := path.Join("testdata", "onramp", strings.TrimSuffix(name, ".json")+".golden")
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
				t.Errorf("mapping %s differs from %s:\n%s", name, golden, got)
			}
		})
	}
	if len(names) < 20 {
		t.Errorf("only %d fixtures in testdata/onramp", len(names))
	}
}

// FuzzParseOnrampPage checks that no body makes the parser panic, and that what it
// returns is either a MalformedError or items fit for diff, with no client secret left.
func FuzzParseOnrampPage(f *testing.F) {
	for _, name := range fixtureNames(f) {
		body := readFixture(f, name)
		if strings.HasPrefix(name, "object/") {
			body = append(append([]byte(`{"object":"list","has_more":false,"data":[`), body...), "]}"...)
		}
		f.Add(body)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		items, skipped, err := ParseOnrampPage(body)
		if err != nil {
			var me *provider.MalformedError
			if !errors.As(err, &me) || items != nil || skipped != nil {
				t.Fatalf("ParseOnrampPage: %d items, %d skipped, err %v", len(items), len(skipped), err)
			}
			return
		}
		for _, it := range items {
			if it.ID == "" || it.Kind != kindOnrampSession || it.Status.Raw == "" || !it.Status.State.Valid() ||
				it.CreatedAt.IsZero() || it.CreatedAt.Location() != time.UTC || it.CreatedAt.Year() > 9999 ||
				!json.Valid(it.Raw) || len(it.Nested) > 0 {
				t.Fatalf("unfit item %+v", it)
			}
			if _, err := json.Marshal(it.CreatedAt); err != nil {
				t.Fatalf("created %v cannot be written: %v", it.CreatedAt, err)
			}
			if it.Amount != nil {
				if e := it.Amount.Value.Exponent(); e < -provider.MaxAmountExp || e > provider.MaxAmountExp {
					t.Fatalf("amount exponent %d", e)
				}
			}
			if hasMember(it.Raw, "client_secret") {
				t.Fatalf("raw keeps a client_secret: %s", it.Raw)
			}
		}
		for _, s := range skipped {
			if s.Reason == "" {
				t.Fatalf("skipped without a reason: %+v", s)
			}
		}
	})
}

// hasMember reports whether the JSON text raw has an object member named name at any depth.
func hasMember(raw []byte, name string) bool {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return false
	}
	var walk func(v any) bool
	walk = func(v any) bool {
		switch v := v.(type) {
		case map[string]any:
			if _, ok := v[name]; ok {
				return true
			}
			for _, e := range v {
				if walk(e) {
					return true
				}
			}
		case []any:
			for _, e := range v {
				if walk(e) {
					return true
				}
			}
		}
		return false
	}
	return walk(v)
}
