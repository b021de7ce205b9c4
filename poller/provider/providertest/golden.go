package providertest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller/provider"
)

// Parser is the signature of an adapter's exported Parse…Page function.
type Parser func(body []byte) ([]diff.Item, []provider.Skipped, error)

// The golden-file format of a parse result, shared by every adapter's fixtures.
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
	UpdatedAt string            `json:"updated_at,omitempty"`
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
	if it.Failure != nil {
		g.Failure = &goldenFailure{Reason: it.Failure.Reason, Code: it.Failure.Code}
	}
	for _, n := range it.Nested {
		g.Nested = append(g.Nested, toGolden(n))
	}
	return g
}

// Golden renders a parse result in the golden-file format: every mapped field of every
// item (amounts with the provider's scale), the skipped items, and the error of a
// malformed page. An error that is not a *provider.MalformedError fails t.
func Golden(t testing.TB, items []diff.Item, skipped []provider.Skipped, err error) []byte {
	t.Helper()
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
		t.Fatalf("encode golden: %v", err)
	}
	return buf.Bytes()
}

// CompareGolden compares got with the golden file at file (a path relative to the
// package directory), or rewrites the file when update is set.
func CompareGolden(t testing.TB, got []byte, file string, update bool) {
	t.Helper()
	if update {
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("mapping differs from %s:\n%s", file, got)
	}
}

// Fixtures returns the *.json files of dir in fsys (an embedded testdata tree).
func Fixtures(t testing.TB, fsys fs.FS, dir string) []string {
	t.Helper()
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".json") {
			names = append(names, path.Join(dir, e.Name()))
		}
	}
	return names
}

// GoldenFixtures parses every dir/*.json fixture of fsys with parse and compares the
// result with the fixture's .golden file beside it (rewritten when update is set). It
// fails when dir holds fewer than min fixtures.
func GoldenFixtures(t *testing.T, fsys fs.FS, dir string, min int, update bool, parse Parser) {
	names := Fixtures(t, fsys, dir)
	for _, name := range names {
		t.Run(strings.TrimSuffix(path.Base(name), ".json"), func(t *testing.T) {
			body, err := fs.ReadFile(fsys, name)
			if err != nil {
				t.Fatal(err)
			}
			items, skipped, err := parse(body)
			CompareGolden(t, Golden(t, items, skipped, err), strings.TrimSuffix(name, ".json")+".golden", update)
		})
	}
	if len(names) < min {
		t.Errorf("only %d fixtures in %s", len(names), dir)
	}
}

// CheckParsed fails t when a parser's result breaks the adapter contract: an error
// must be a *provider.MalformedError with nothing else returned; every item must have a
// kind, an id, a raw status with a valid state, a UTC creation time, a raw JSON object
// and a bounded amount; nested items have no nested items; every skip has a reason.
// Fuzz targets call it on whatever the parser returned.
func CheckParsed(t testing.TB, items []diff.Item, skipped []provider.Skipped, err error) {
	t.Helper()
	if err != nil {
		var me *provider.MalformedError
		if !errors.As(err, &me) || items != nil || skipped != nil {
			t.Fatalf("parse: %d items, %d skipped, err %v", len(items), len(skipped), err)
		}
		return
	}
	var check func(it *diff.Item, nested bool)
	check = func(it *diff.Item, nested bool) {
		if it.ID == "" || it.Kind == "" || it.Status.Raw == "" || !it.Status.State.Valid() ||
			it.CreatedAt.IsZero() || it.CreatedAt.Location() != time.UTC ||
			(!it.UpdatedAt.IsZero() && it.UpdatedAt.Location() != time.UTC) || !json.Valid(it.Raw) ||
			(nested && len(it.Nested) > 0) {
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
}
