package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/sim"
)

// exitCode is the status main exits with for run's error.
func exitCode(err error) int {
	code, _ := exitStatus(err)
	return code
}

// probeSimConfig writes the demo configuration of every provider against a simulator
// built from cfg, and returns its path and the state file it names.
func probeSimConfig(t *testing.T, cfg sim.Config) (cfgPath, statePath string) {
	t.Helper()
	cfg.Seed, cfg.History, cfg.HistorySpan, cfg.OpenShare = 11, 30, 48*time.Hour, 0.3
	s, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	raw, _ := demoConfig(dir, "", srv.URL, "", "")
	doc := strings.ReplaceAll(string(raw), "baseline: emit", "baseline: emit\n    page_size: 5")
	cfgPath = filepath.Join(dir, "watcher.yaml")
	if err := os.WriteFile(cfgPath, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgPath, filepath.Join(dir, "watcher.db")
}

func runProbe(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = run(t.Context(), append([]string{"probe"}, args...), &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestProbeCommandWellBehaved(t *testing.T) {
	cfgPath, statePath := probeSimConfig(t, sim.Config{})
	out, errOut, err := runProbe(t, "--config", cfgPath)
	if code := exitCode(err); code != 0 {
		t.Fatalf("exit %d (%v), want 0\n%s%s", code, err, out, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 5*8+1 {
		t.Errorf("%d lines, want 41 (8 checks per source, sign_query for Coindirect):\n%s", len(lines), out)
	}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 4 || f[2] != "ok" || !strings.Contains(l, f[0]+"  ") {
			t.Errorf("line %q: want SOURCE  CHECK  ok  DETAIL", l)
		}
	}
	if _, err := os.Stat(statePath); !os.IsNotExist(err) {
		t.Errorf("probe touched the state file %s: %v", statePath, err)
	}
}

func TestProbeCommandJSONAndSelection(t *testing.T) {
	cfgPath, _ := probeSimConfig(t, sim.Config{Quirks: map[string]sim.Quirks{sim.ProviderCPN: {OldestFirst: true}}})
	out, errOut, err := runProbe(t, "cpn", "--config", cfgPath, "--json", "coindirect")
	if code := exitCode(err); code != 1 {
		t.Fatalf("exit %d (%v), want 1 for cpn's failed order check\n%s%s", code, err, out, errOut)
	}
	seen := map[string]int{}
	var orderFailed bool
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		var obj map[string]any
		if err := json.Unmarshal([]byte(l), &obj); err != nil {
			t.Fatalf("line %q is not a JSON object: %v", l, err)
		}
		if len(obj) != 4 {
			t.Errorf("line %q: want exactly source, check, result, detail", l)
		}
		src, _ := obj["source"].(string)
		check, _ := obj["check"].(string)
		result, _ := obj["result"].(string)
		detail, _ := obj["detail"].(string)
		if check == "" || detail == "" || (result != "ok" && result != "warn" && result != "fail") {
			t.Errorf("line %q: want a check, a detail and a result of ok, warn or fail", l)
		}
		seen[src]++
		if src == "cpn" && check == "order" && result == "fail" {
			orderFailed = true
		}
	}
	if len(seen) != 2 || seen["cpn"] != 8 || seen["coindirect"] != 9 {
		t.Errorf("checks by source %v, want cpn's 8 and coindirect's 9 only", seen)
	}
	if !orderFailed {
		t.Errorf("no failed order check for cpn:\n%s", out)
	}
}

func TestProbeCommandBadInvocations(t *testing.T) {
	cfgPath, _ := probeSimConfig(t, sim.Config{})
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("sources:\n  - name: x\n    provider: paypal_payouts\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		says string
	}{
		{"invalid configuration", []string{"--config", bad}, `unknown provider "paypal_payouts"`},
		{"missing configuration", []string{"--config", filepath.Join(t.TempDir(), "none.yaml")}, "no such file"},
		{"unknown source", []string{"--config", cfgPath, "cpn", "paypal"}, `unknown source "paypal"`},
		{"unknown flag", []string{"--config", cfgPath, "--nats", "x"}, "flag provided but not defined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, err := runProbe(t, tc.args...)
			if code := exitCode(err); code != 2 {
				t.Errorf("exit %d (%v), want 2", code, err)
			}
			if !strings.Contains(errOut, tc.says) {
				t.Errorf("stderr %q does not say %q", errOut, tc.says)
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing", out)
			}
		})
	}
}

func TestProbeCommandNoSecretInOutput(t *testing.T) {
	_, provURL, dir := hostileSetup(t)
	cfg := fmt.Sprintf(`state:
  path: %[1]s/watcher.db
nats:
  url: nats://127.0.0.1:1
  password: %[6]s
  user: watcher
sources:
  - name: cpn
    provider: circle_cpn_payments
    base_url: %[2]s
    api_key: ${LEAK_CPN_KEY}
  - name: ramp
    provider: circle_ramp_sessions
    base_url: %[2]s
    api_key: %[3]s
  - name: settlements
    provider: circle_exchange_settlements
    base_url: %[2]s
    api_key: %[4]s
  - name: onramp
    provider: stripe_crypto_onramp_sessions
    base_url: %[2]s
    api_key: %[5]s
  - name: coindirect
    provider: coindirect_payments
    base_url: %[2]s
    hawk_id: hawk-id-1
    hawk_key_file: %[1]s/hawk.key
    merchant_id: 6f0b4c1e-2d3a-4b5c-8d9e-0a1b2c3d4e5f
`, dir, provURL, secretRamp, secretSettlements, secretStripe, secretNATSPass)
	cfgPath := filepath.Join(dir, "watcher.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, format := range [][]string{nil, {"--json"}} {
		out, errOut, err := runProbe(t, append([]string{"--config", cfgPath}, format...)...)
		if code := exitCode(err); code != 1 {
			t.Errorf("%v: exit %d (%v), want 1 against a provider refusing everything", format, code, err)
		}
		text := out + errOut + fmt.Sprint(err)
		for _, want := range []string{"HTTP 401", "HTTP 403", "credentials"} {
			if !strings.Contains(text, want) {
				t.Errorf("%v: the output never says %q:\n%s", format, want, text)
			}
		}
		for _, s := range allSecrets {
			if strings.Contains(text, s) {
				t.Errorf("%v: the output shows the secret %q:\n%s", format, s, text)
			}
		}
	}
}
