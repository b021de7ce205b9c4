package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse feeds Parse arbitrary documents: it must never panic or hang, it returns
// a configuration or an error (never both, never neither), every error has a message,
// and a configuration it returns can be printed. The seed corpus is testdata/*.yaml
// and the edge cases below; crashers found later go to testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	paths, err := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	if err != nil || len(paths) == 0 {
		f.Fatalf("seed corpus: %v (%d files)", err, len(paths))
	}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		"",
		"~",
		"---\n---\n",
		"[]",
		"sources: 1",
		"sources: [1, [2], {a: b}]",
		"state: {path: [x]}",
		"a: &a [*a]",
		"sources: &s [*s]",
		"sources:\n- &x {name: a, provider: circle_cpn_payments, api_key: k}\n- *x\n",
		"sources:\n- name: a\n  provider: circle_cpn_payments\n  api_key: k\n  <<: {interval: 1s}\n",
		"x: &a [a,a,a,a]\ny: &b [*a,*a,*a,*a]\nz: &c [*b,*b,*b,*b]\nsources: [*c,*c,*c,*c]\n",
		"sources:\n- name: a\n  provider: circle_cpn_payments\n  api_key: k\n  rate_limit: .nan\n",
		"sources:\n- name: a\n  provider: circle_cpn_payments\n  api_key: k\n  rate_limit: .inf\n",
		"sources:\n- name: a\n  provider: circle_cpn_payments\n  api_key: k\n  page_size: 99999999999999999999\n",
		"sources:\n- name: a\n  provider: circle_cpn_payments\n  api_key: k\n  interval: 9999999999999h\n",
		"sources:\n- name: a\n  provider: circle_cpn_payments\n  api_key: !!binary aGVsbG8=\n",
		"sources:\n- name: a\n  provider: circle_cpn_payments\n  api_key: ${UNSET}${DATA}$$\n  page_size: ${PAGE}\n",
		"sources:\n- name: a\n  provider: circle_cpn_payments\n  api_key: \"$${DATA}\"\n",
		"sources:\n- name: a\n  provider: circle_cpn_payments\n  base_url: https://x\n  ca_file: ca.pem\n  api_key_file: secret.txt\n",
		"sources:\n- name: a\n  provider: coindirect_payments\n  hawk_id: i\n  hawk_key: k\n  merchant_id: m\n  sign_query: maybe\n",
		"sources:\n- name: a\n  provider: circle_cpn_payments\n  api_key: k\n  open_refresh_by_state: {pending: [1], ? [a] : b}\n",
		"sources:\n- name: a\n  provider: circle_cpn_payments\n  api_key: k\n  base_url: \"http://[::1\"\n",
		"http: {listen: null}\nsources: null\n",
		"nats:\n  url: nats://u:p@h:1,\x00\n",
		"\t- a",
		"{a: 1, a: 2}",
	} {
		f.Add([]byte(s))
	}
	env := testEnv(map[string]string{"DATA": "/var/lib/watcher", "CIRCLE_API_KEY": "TEST_API_KEY:a:b", "PAGE": "120"})
	read := files(map[string][]byte{
		"secret.txt": []byte("s3cr3t\n"),
		"ca.pem":     []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"),
	})
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, env, read)
		switch {
		case err != nil && cfg != nil:
			t.Fatalf("Parse returned a configuration and an error: %v", err)
		case err == nil && cfg == nil:
			t.Fatal("Parse returned neither a configuration nor an error")
		case err != nil:
			if strings.TrimSpace(err.Error()) == "" {
				t.Fatalf("error without a message: %#v", err)
			}
			return
		}
		if len(cfg.Sources) == 0 {
			t.Fatal("a valid configuration without sources")
		}
		if _, err := cfg.Effective(); err != nil {
			t.Fatalf("Effective: %v", err)
		}
	})
}

// TestParseEdgeCases pins what the edge cases of FuzzParse's corpus must give.
func TestParseEdgeCases(t *testing.T) {
	for _, rate := range []string{".nan", ".inf", "-.inf", "-1"} {
		_, err := Parse(cpnSource("  rate_limit: "+rate+"\n"), testEnv(nil), readTestdata)
		if err == nil || !strings.Contains(err.Error(), "sources[0].rate_limit: ") || !strings.Contains(err.Error(), "must be a positive number of requests per second") {
			t.Errorf("rate_limit %s: %v", rate, err)
		}
	}

	// An alias visits its anchor's value again; "$$" must still be one literal "$".
	doc := "sources:\n- name: a\n  provider: circle_cpn_payments\n  api_key: &k \"p$${X}\"\n" +
		"- name: b\n  provider: circle_cpn_payments\n  api_key: *k\n"
	cfg, err := Parse([]byte(doc), testEnv(map[string]string{"X": "expanded"}), readTestdata)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range cfg.Sources {
		if s.Settings.Value("api_key") != "p${X}" {
			t.Errorf("source %s: api_key %q, want p${X}", s.Name, s.Settings.Value("api_key"))
		}
	}
}

func TestAliasBombAndRepeatedKeys(t *testing.T) {
	// A few hundred bytes that describe millions of values through aliases.
	doc := "sources:\n- &a\n  name: a\n  provider: circle_cpn_payments\n  api_key: k\n  terminal_statuses: &b [" +
		strings.Repeat("x,", 300) + "x]\n" + strings.Repeat("- *a\n", 1000)
	_, err := Parse([]byte(doc), testEnv(nil), readTestdata)
	if err == nil || !strings.Contains(err.Error(), "the file describes more than 20000 values (aliases expanded)") {
		t.Fatalf("alias bomb: %.300v", err)
	}

	// Repeated keys, repeated again by aliases: reported, and the report is bounded.
	doc = "sources:\n- &a\n  name: a\n" + strings.Repeat("  provider: circle_cpn_payments\n", 2000) + strings.Repeat("- *a\n", 300)
	_, err = Parse([]byte(doc), testEnv(nil), readTestdata)
	if err == nil || !strings.HasPrefix(err.Error(), "sources[0].provider: key repeated (line 5, first on line 4)\n") ||
		strings.Count(err.Error(), "\n") != maxErrors {
		t.Fatalf("repeated keys: %.300v (%d lines)", err, strings.Count(err.Error(), "\n")+1)
	}
}
