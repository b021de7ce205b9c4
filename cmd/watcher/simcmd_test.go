package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/sim"
)

func writeScenario(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "scenario.yaml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestScenarioQuirksAndHawkQuery(t *testing.T) {
	path := writeScenario(t, `
seed: 9
hawk_query: path
quirks:
  coindirect_payments: {oldest_first: true, page_cap: 3, clock_offset: -90s}
  circle_cpn_payments: {link_origin: "https://api.circle.com", ignore_date_filter: true}
  stripe_crypto_onramp_sessions: {refuse_stripe_version: "*", forbidden: true}
  circle_ramp_sessions: {unknown_statuses: true}
`)
	cfg := sim.DefaultConfig()
	if err := applyScenario(path, &cfg); err != nil {
		t.Fatal(err)
	}
	want := map[string]sim.Quirks{
		sim.ProviderCoindirect: {OldestFirst: true, PageCap: 3, ClockOffset: -90 * time.Second},
		sim.ProviderCPN:        {LinkOrigin: "https://api.circle.com", IgnoreDateFilter: true},
		sim.ProviderStripe:     {RefuseStripeVersion: "*", Forbidden: true},
		sim.ProviderRamp:       {UnknownStatuses: true},
	}
	if len(cfg.Quirks) != len(want) {
		t.Fatalf("quirks %+v", cfg.Quirks)
	}
	for id, q := range want {
		if cfg.Quirks[id] != q {
			t.Errorf("quirks[%s] = %+v, want %+v", id, cfg.Quirks[id], q)
		}
	}
	if cfg.HawkQuery != sim.HawkQueryExcluded || cfg.Seed != 9 {
		t.Errorf("hawk_query %v, seed %d", cfg.HawkQuery, cfg.Seed)
	}
	for _, m := range []struct {
		text string
		mode sim.HawkQueryMode
	}{{"either", sim.HawkQueryEither}, {"query", sim.HawkQueryIncluded}, {"path", sim.HawkQueryExcluded}} {
		cfg := sim.DefaultConfig()
		cfg.HawkQuery = 99
		if err := applyScenario(writeScenario(t, "hawk_query: "+m.text+"\n"), &cfg); err != nil || cfg.HawkQuery != m.mode {
			t.Errorf("hawk_query %s: %v, %v", m.text, cfg.HawkQuery, err)
		}
	}
}

func TestScenarioBadQuirksNameKeyAndValue(t *testing.T) {
	for _, c := range []struct {
		text string
		want []string
	}{
		{"hawk_query: header\n", []string{"hawk_query", `"header"`}},
		{"quirks: {coindirect_payments: {oldest_frist: true}}\n", []string{"quirks.coindirect_payments", `"oldest_frist"`}},
		{"quirks: {coindirect_payments: {clock_offset: soon}}\n", []string{"quirks.coindirect_payments", "clock_offset", `"soon"`}},
		{"quirks: {coindirect_payments: {page_cap: many}}\n", []string{"quirks.coindirect_payments", "page_cap"}},
		{"quirk: {}\n", []string{"quirk"}},
	} {
		cfg := sim.DefaultConfig()
		err := applyScenario(writeScenario(t, c.text), &cfg)
		for _, w := range c.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%q: %v; want it to name %s", c.text, err, w)
			}
		}
	}
	// Values that decode but do not apply are refused when the simulator is built, with
	// the provider, key and value named.
	cfg := sim.Config{}
	if err := applyScenario(writeScenario(t, "quirks: {stripe_crypto_onramp_sessions: {link_origin: 'https://api.circle.com'}, nope: {}}\n"), &cfg); err != nil {
		t.Fatal(err)
	}
	_, err := sim.New(cfg)
	for _, w := range []string{`quirks[stripe_crypto_onramp_sessions]: link_origin: "https://api.circle.com"`, `unknown provider "nope"`} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("New: %v; want %s", err, w)
		}
	}
}

func TestSimQuirkAndHawkQueryFlags(t *testing.T) {
	path := writeScenario(t, "hawk_query: query\nquirks: {coindirect_payments: {page_cap: 5, forbidden: true}}\n")
	a, err := parseSimArgs([]string{"--scenario", path,
		"--quirk", "coindirect_payments:oldest_first",
		"--quirk", "coindirect_payments:page_cap=3",
		"--quirk", "coindirect_payments:forbidden=false",
		"--quirk", "circle_cpn_payments:link_origin=https://api.circle.com",
		"--quirk", "stripe_crypto_onramp_sessions:refuse_stripe_version=2024-06-20",
		"--quirk", "circle_ramp_sessions:clock_offset=2m",
		"--hawk-query", "path"}, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]sim.Quirks{
		sim.ProviderCoindirect: {OldestFirst: true, PageCap: 3},
		sim.ProviderCPN:        {LinkOrigin: "https://api.circle.com"},
		sim.ProviderStripe:     {RefuseStripeVersion: "2024-06-20"},
		sim.ProviderRamp:       {ClockOffset: 2 * time.Minute},
	}
	for id, q := range want {
		if a.cfg.Quirks[id] != q {
			t.Errorf("quirks[%s] = %+v, want %+v", id, a.cfg.Quirks[id], q)
		}
	}
	if a.cfg.HawkQuery != sim.HawkQueryExcluded {
		t.Errorf("--hawk-query path over the file's query: %v", a.cfg.HawkQuery)
	}
	if _, err := sim.New(sim.Config{Quirks: a.cfg.Quirks, HawkQuery: a.cfg.HawkQuery}); err != nil {
		t.Errorf("the parsed quirks do not build a simulator: %v", err)
	}
}

func TestSimBadFlagsNameFlagAndValue(t *testing.T) {
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"--quirk", "coindirect_payments"}, []string{"-quirk", `"coindirect_payments"`, "PROVIDER:NAME"}},
		{[]string{"--quirk", "paypal:oldest_first"}, []string{"-quirk", `"paypal"`}},
		{[]string{"--quirk", "coindirect_payments:sorted"}, []string{"-quirk", `unknown quirk "sorted"`, "oldest_first"}},
		{[]string{"--quirk", "circle_cpn_payments:page_cap=lots"}, []string{"-quirk", "page_cap", `"lots"`}},
		{[]string{"--quirk", "circle_cpn_payments:page_cap"}, []string{"-quirk", "page_cap"}},
		{[]string{"--quirk", "circle_cpn_payments:oldest_first=maybe"}, []string{"-quirk", "oldest_first", `"maybe"`}},
		{[]string{"--quirk", "circle_cpn_payments:link_origin"}, []string{"-quirk", "link_origin needs a value"}},
		{[]string{"--quirk", "coindirect_payments:clock_offset=soon"}, []string{"-quirk", "clock_offset", `"soon"`}},
		{[]string{"--hawk-query", "header"}, []string{"-hawk-query", `"header"`, "either, query, path"}},
	} {
		_, err := parseSimArgs(c.args, io.Discard, io.Discard)
		for _, w := range c.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%v: %v; want it to name %s", c.args, err, w)
			}
		}
	}
	// A quirk that does not apply to the provider is refused by the simulator.
	a, err := parseSimArgs([]string{"--quirk", "stripe_crypto_onramp_sessions:link_origin=https://api.circle.com"}, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sim.New(sim.Config{Quirks: a.cfg.Quirks}); err == nil || !strings.Contains(err.Error(), "link_origin") {
		t.Errorf("link_origin on Stripe: %v", err)
	}
}

func TestSimUsageListsQuirks(t *testing.T) {
	var out strings.Builder
	if _, err := parseSimArgs([]string{"-h"}, &out, io.Discard); err == nil {
		t.Fatal("-h did not stop")
	}
	for _, w := range []string{"--quirk PROVIDER:NAME[=VALUE]", "oldest_first", "ignore_date_filter", "page_cap=N", "link_origin=URL",
		"unknown_statuses", "refuse_stripe_version=V", "forbidden", "clock_offset=D", "-hawk-query"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("usage lacks %q", w)
		}
	}
}

func TestScenarioAndFlagWebhooks(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "scenario.yaml")
	doc := `webhooks:
  coindirect_payments:
    url: http://127.0.0.1:9466/webhooks/coindirect
    faults: {drop_rate: 0.2, max_delay: 250ms}
`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := parseSimArgs([]string{"--scenario", path, "--webhook", "stripe_crypto_onramp_sessions=http://127.0.0.1:9466/webhooks/onramp"}, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cd := a.cfg.Webhooks["coindirect_payments"]
	if cd.URL != "http://127.0.0.1:9466/webhooks/coindirect" || cd.Faults.DropRate != 0.2 || cd.Faults.MaxDelay != 250*time.Millisecond {
		t.Errorf("coindirect webhook from the scenario: %+v", cd)
	}
	if st := a.cfg.Webhooks["stripe_crypto_onramp_sessions"]; st.URL != "http://127.0.0.1:9466/webhooks/onramp" {
		t.Errorf("stripe webhook from --webhook: %+v", st)
	}
	if err := os.WriteFile(path, []byte("webhooks:\n  coindirect_payments: {url: x, faults: {max_delay: soon}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := parseSimArgs([]string{"--scenario", path}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), `webhooks.coindirect_payments: max_delay: "soon" is not a duration`) {
		t.Errorf("bad max_delay: %v", err)
	}
	if _, err := parseSimArgs([]string{"--webhook", "nourl"}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), `"nourl" is not PROVIDER=URL`) {
		t.Errorf("bad --webhook: %v", err)
	}
}
