package config

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files of the effective configuration")

// TestEffectiveGolden keeps the sources of `config check` output stable: a file with
// a source of every provider, each provider key set, prints them as the golden file.
func TestEffectiveGolden(t *testing.T) {
	cfg, err := parseFile(t, "every-provider.yaml", map[string]string{"FX_KEY": "sandbox-key-Zq8sNw3k"})
	if err != nil {
		t.Fatal(err)
	}
	out, err := cfg.Effective()
	if err != nil {
		t.Fatal(err)
	}
	_, sources, found := strings.Cut(string(out), "\nsources:\n")
	if !found {
		t.Fatalf("no sources in the effective configuration:\n%s", out)
	}
	got := []byte("sources:\n" + sources)
	golden := filepath.Join("testdata", "every-provider.golden")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("effective configuration:\n%s\nwant (%s):\n%s", got, golden, want)
	}
}
