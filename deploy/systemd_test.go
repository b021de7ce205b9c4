package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestSystemdAnalyzeVerify runs systemd's own checker on the unit, which must be
// installed (Debian package systemd): any message (an unknown key, a bad value) fails.
// The unit is verified as a copy whose ExecStart names an executable stand-in, since
// verify requires the binary to exist.
func TestSystemdAnalyzeVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("systemd-analyze is required to check the unit (apt-get install systemd): %v", err)
	}
	unit, err := os.ReadFile("systemd/watcher.service")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "watcher")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(dir, "watcher.service")
	if err := os.WriteFile(copyPath, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/watcher", bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", copyPath).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

var credentialRef = regexp.MustCompile(`\$\{CREDENTIALS_DIRECTORY\}/([A-Za-z0-9._-]+)`)

// TestSystemdCredentials checks that every file the example configuration reads from
// $CREDENTIALS_DIRECTORY is one the unit loads with LoadCredential=, from the
// ConfigurationDirectory, and that it parses with systemd's value of the variable.
func TestSystemdCredentials(t *testing.T) {
	unit := systemdUnit(t)
	loaded := map[string]string{}
	for _, v := range unit["LoadCredential"] {
		name, src, ok := strings.Cut(v, ":")
		if !ok || filepath.Dir(src) != "/etc/"+unit["ConfigurationDirectory"][0] {
			t.Errorf("LoadCredential=%s: want NAME:/etc/%s/FILE", v, unit["ConfigurationDirectory"][0])
		}
		loaded[name] = src
	}
	data, err := os.ReadFile("watcher.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	refs := credentialRef.FindAllStringSubmatch(string(data), -1)
	if len(refs) == 0 {
		t.Fatal("watcher.example.yaml reads no secret from ${CREDENTIALS_DIRECTORY}")
	}
	for _, r := range refs {
		if _, ok := loaded[r[1]]; !ok {
			t.Errorf("watcher.example.yaml reads %s, which no LoadCredential= provides (have %v)", r[0], loaded)
		}
	}
	cfg := parseConfig(t, "watcher.example.yaml", data, map[string]string{"CREDENTIALS_DIRECTORY": "/run/credentials/watcher.service"})
	for _, s := range cfg.Sources {
		if !strings.HasPrefix(s.Settings.Value("api_key"), "placeholder-secret-") && s.Settings.Value("api_key") != "" {
			t.Errorf("source %s: api key not read from a file", s.Name)
		}
	}
	if !slices.Contains(unit["DynamicUser"], "yes") {
		t.Error("the unit no longer uses DynamicUser; LoadCredential is what lets it read root-only files")
	}
}
