package coindirect

import (
	"embed"
	"flag"
	"testing"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller/provider/providertest"
)

var update = flag.Bool("update", false, "rewrite the testdata/coindirect/*.golden files from the current output")

//go:embed testdata
var testdataFS embed.FS

// exactText prints a decimal with the scale it was parsed with.
func exactText(m *diff.Money) string {
	v := m.Value
	if e := v.Exponent(); e < 0 {
		return v.StringFixed(-e)
	}
	return v.String()
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
	providertest.GoldenFixtures(t, testdataFS, "testdata/coindirect", 12, *update, ParsePaymentsPage)
}

// FuzzParsePaymentsPage checks that no body makes the parser panic, and that what it
// returns is either a MalformedError or items fit for diff, no payment twice.
func FuzzParsePaymentsPage(f *testing.F) {
	for _, name := range providertest.Fixtures(f, testdataFS, "testdata/coindirect") {
		b, err := testdataFS.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		items, skipped, err := ParsePaymentsPage(body)
		providertest.CheckParsed(t, items, skipped, err)
		ids := map[string]bool{}
		for _, it := range items {
			if ids[it.ID] {
				t.Fatalf("payment %s listed twice", it.ID)
			}
			ids[it.ID] = true
		}
	})
}
