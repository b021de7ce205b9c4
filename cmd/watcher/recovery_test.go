package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/payments-watcher/watcher/state/bbolt"
)

// TestDamagedStateFileGivesTheWayOut: every command that opens a damaged state file
// fails with ErrCorrupt, names the file and says how to recover.
func TestDamagedStateFileGivesTheWayOut(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.db")
	writeStateFile(t, good)
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	damaged := filepath.Join(dir, "watcher.db")
	if err := os.WriteFile(damaged, data[:os.Getpagesize()+100], 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "watcher.yaml")
	cfg := "state:\n  path: " + damaged + "\nhttp:\n  listen: \"\"\nsources:\n  - name: cpn\n    provider: circle_cpn_payments\n    api_key: k\n    base_url: http://127.0.0.1:1\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	rebaseline := "watcher state rebaseline --state " + damaged + " SOURCE"
	checkLine := "watcher state check --state " + damaged + "   shows what is damaged."
	for _, tc := range []struct {
		args      []string
		wantCheck bool
	}{
		{[]string{"run", "--config", cfgPath}, true},
		{[]string{"state", "sources", "--config", cfgPath}, true},
		{[]string{"state", "outbox", "--state", damaged}, true},
		{[]string{"state", "rebaseline", "cpn", "--state", damaged}, true},
		{[]string{"state", "check", "--state", damaged}, false},
	} {
		var out, errOut bytes.Buffer
		err := run(t.Context(), tc.args, &out, &errOut)
		if !errors.Is(err, bbolt.ErrCorrupt) {
			t.Errorf("%s: %v; want ErrCorrupt", tc.args, err)
			continue
		}
		msg := err.Error()
		for _, want := range []string{"state file " + damaged + " is damaged", "To recover, with watcher stopped:",
			"Restore " + damaged + " from a backup", rebaseline, "move " + damaged + " aside", "outbox are not sent"} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s: the error lacks %q:\n%s", tc.args, want, msg)
			}
		}
		if strings.Contains(msg, checkLine) != tc.wantCheck {
			t.Errorf("%s: suggests `watcher state check` = %v, want %v:\n%s", tc.args, !tc.wantCheck, tc.wantCheck, msg)
		}
	}
	// Nothing wrote to the damaged file.
	if got, err := os.ReadFile(damaged); err != nil || len(got) != os.Getpagesize()+100 {
		t.Fatalf("the damaged file now has %d bytes (%v)", len(got), err)
	}
}

func TestConfigCheckPrintsWarnings(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "cpn.key")
	if err := os.WriteFile(key, []byte("s3cr3t-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "watcher.yaml")
	cfg := "sources:\n  - name: cpn\n    provider: circle_cpn_payments\n    api_key_file: " + key + "\n    base_url: http://circle-proxy.internal:8080\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if err := run(t.Context(), []string{"config", "check", "--config", cfgPath}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`watcher config check: warning: sources[0].api_key_file: "` + key + `" holds a secret but has mode 0644, so other users may read it; chmod 600 it`,
		`watcher config check: warning: sources[0].base_url: "http://circle-proxy.internal:8080" is plain http to another host`,
	} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut.String())
		}
	}
	if strings.Contains(out.String()+errOut.String(), "s3cr3t-key") {
		t.Fatal("config check printed the secret")
	}
	if !strings.Contains(out.String(), "is valid") {
		t.Fatalf("stdout:\n%s", out.String())
	}
}
