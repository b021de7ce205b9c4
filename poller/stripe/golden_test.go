package stripe

import (
	"embed"
	"encoding/json"
	"flag"
	"path"
	"strings"
	"testing"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller/provider"
	"github.com/payments-watcher/watcher/poller/provider/providertest"
)

var update = flag.Bool("update", false, "rewrite the testdata/onramp golden files from the current output")

//go:embed testdata
var testdataFS embed.FS

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
			golden := path.Join("testdata", "onramp", strings.TrimSuffix(name, ".json")+".golden")
			providertest.CompareGolden(t, providertest.Golden(t, items, skipped, err), golden, *update)
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
		providertest.CheckParsed(t, items, skipped, err)
		for _, it := range items {
			if it.Kind != kindOnrampSession || len(it.Nested) > 0 || it.CreatedAt.Year() > 9999 {
				t.Fatalf("unfit session %+v", it)
			}
			if hasMember(it.Raw, "client_secret") {
				t.Fatalf("raw keeps a client_secret: %s", it.Raw)
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
