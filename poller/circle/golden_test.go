package circle

import (
	"embed"
	"flag"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the testdata/*/*.golden files from the current output")

//go:embed testdata
var testdataFS embed.FS

// The fuzz targets check that no body makes a page parser panic, and that what it
// returns is either a MalformedError or items fit for diff. Each is seeded with its
// product's fixtures (and testdata/fuzz/<target>).

func FuzzParseCPNPage(f *testing.F) { fuzzPageParser(f, cpnProduct) }

func FuzzParseRampPage(f *testing.F) { fuzzPageParser(f, rampProduct) }

func FuzzParseSettlementsPage(f *testing.F) { fuzzPageParser(f, settlementsProduct) }
