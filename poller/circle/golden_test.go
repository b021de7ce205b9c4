package circle

import (
	"embed"
	"flag"
	"testing"

	"github.com/payments-watcher/watcher/poller/provider/providertest"
)

var update = flag.Bool("update", false, "rewrite the testdata/*/*.golden files from the current output")

//go:embed testdata
var testdataFS embed.FS

// TestParseCPNPageGolden maps every testdata/cpn/*.json fixture and compares the result
// with the fixture's .golden file; -update rewrites them.
func TestParseCPNPageGolden(t *testing.T) {
	providertest.GoldenFixtures(t, testdataFS, "testdata/cpn", 10, *update, ParseCPNPage)
}

// FuzzParseCPNPage checks that no body makes the parser panic, and that what it returns
// is either a MalformedError or items fit for diff.
func FuzzParseCPNPage(f *testing.F) {
	for _, name := range providertest.Fixtures(f, testdataFS, "testdata/cpn") {
		b, err := testdataFS.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		items, skipped, err := ParseCPNPage(body)
		providertest.CheckParsed(t, items, skipped, err)
	})
}
