package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/poller"
)

func testEnv(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := vars[k]
		return v, ok
	}
}

func readTestdata(name string) ([]byte, error) {
	return os.ReadFile(filepath.Join("testdata", name))
}

func parseFile(t *testing.T, name string, env map[string]string) (*Config, error) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return Parse(data, testEnv(env), readTestdata)
}

func TestValid(t *testing.T) {
	cfg, err := parseFile(t, "valid.yaml", map[string]string{"DATA": "/var/lib/watcher", "CIRCLE_API_KEY": "TEST_API_KEY:abc:def", "PAGE": "120"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.State.Path != "/var/lib/watcher/watcher.db" || cfg.NATS.Embedded.StoreDir != "/var/lib/watcher/nats" {
		t.Errorf("paths not expanded: %q %q", cfg.State.Path, cfg.NATS.Embedded.StoreDir)
	}
	if cfg.NATS.DuplicateWindow != 20*time.Minute || cfg.NATS.Stream != "PAYMENT_EVENTS" || cfg.NATS.Replicas != 1 {
		t.Errorf("nats = %+v", cfg.NATS)
	}
	if len(cfg.Sources) != 2 {
		t.Fatalf("%d sources", len(cfg.Sources))
	}
	a, b := cfg.Sources[0], cfg.Sources[1]
	if a.Settings.Value("api_key") != "TEST_API_KEY:abc:def" || a.Settings.BaseURL != "https://api.circle.com" || a.Interval != 15*time.Second || a.Kind != "payment" {
		t.Errorf("source 0 = %+v", a)
	}
	if b.Settings.Value("api_key") != "s3cr3t-from-file" {
		t.Errorf("api_key_file gave %q", b.Settings.Value("api_key"))
	}
	if b.Settings.PageSize != 120 || b.Baseline != "emit" || b.Interval != 15*time.Second || b.Lookback != 720*time.Hour ||
		b.SettleWindow != 24*time.Hour || b.RateLimit != 5 || b.Settings.BaseURL != "https://api.circle.com" {
		t.Errorf("defaults of source 1 = %+v", b)
	}

	out, err := cfg.Effective()
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"TEST_API_KEY:abc:def", "s3cr3t-from-file"} {
		if strings.Contains(string(out), secret) {
			t.Errorf("effective config shows a secret:\n%s", out)
		}
	}
	if !strings.Contains(string(out), "api_key: "+Redacted) || !strings.Contains(string(out), "page_size: 120") {
		t.Errorf("effective config:\n%s", out)
	}
	// The printed configuration is itself a valid file that yields the same sources.
	again, err := Parse(out, testEnv(nil), readTestdata)
	if err != nil {
		t.Fatalf("the effective config does not parse: %v\n%s", err, out)
	}
	if len(again.Sources) != 2 {
		t.Errorf("re-parsed effective config has %d sources", len(again.Sources))
	}
}

func TestInvalid(t *testing.T) {
	tests := []struct {
		file string
		env  map[string]string
		want []string // every line of the error, in order
	}{
		{file: "invalid-many.yaml", want: []string{
			`nats.duplicate_window: "forever" is not a duration (e.g. 15s, 10m, 720h)`,
			`sources[0].interval: "5" is not a duration (e.g. 15s, 10m, 720h)`,
			`sources[1].name: "Bad.Name" must match [a-z0-9_-]+`,
			`sources[1].provider: unknown provider "paypal_payouts" (want one of ` + strings.Join(poller.ProviderIDs(), ", ") + `)`,
			`sources[2].name: "cpn" is already used by sources[0]`,
			`sources[2].rate_limit: -1 must be a positive number of requests per second`,
			`sources[2].baseline: "loud" must be silent or emit`,
			`sources[2].page_size: 500 is outside 1..200 for circle_cpn_payments`,
		}},
		{file: "invalid-unknown-key.yaml", want: []string{
			`sources[0].intervall: unknown key (line 5)`,
			`natz: unknown key (line 6)`,
		}},
		{file: "invalid-types.yaml", want: []string{
			`sources[0].page_size: "fifty" is not an integer (line 5)`,
		}},
		// An unset variable is listed with the other problems of the file; the value
		// it leaves unknown (sources[0].api_key) is not reported again.
		{file: "invalid-secrets.yaml", want: []string{
			`sources[0].api_key: environment variable MISSING_KEY is not set`,
			`sources[1].api_key: set either api_key or api_key_file, not both`,
			`sources[2].api_key_file: "nowhere.txt" cannot be read: no such file or directory`,
			`sources[3].api_key: is required for circle_cpn_payments (or api_key_file)`,
		}},
		{file: "invalid-secrets.yaml", env: map[string]string{"MISSING_KEY": ""}, want: []string{
			`sources[0].api_key: is required for circle_cpn_payments (or api_key_file)`,
			`sources[1].api_key: set either api_key or api_key_file, not both`,
			`sources[2].api_key_file: "nowhere.txt" cannot be read: no such file or directory`,
			`sources[3].api_key: is required for circle_cpn_payments (or api_key_file)`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			_, err := parseFile(t, tt.file, tt.env)
			if err == nil {
				t.Fatal("no error")
			}
			got := strings.Split(err.Error(), "\n")
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("errors:\n%s\nwant:\n%s", err, strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestUnsetVariablesBesideOtherProblems(t *testing.T) {
	doc := `nats:
  duplicate_window: forever
sources:
- name: a
  provider: circle_cpn_payments
  api_key_file: ${KEY_FILE}
  page_size: "${PAGE}"
  interval: ${INTERVAL}
  lookback: never
`
	want := []string{
		`sources[0].api_key_file: environment variable KEY_FILE is not set`,
		`sources[0].page_size: environment variable PAGE is not set`,
		`sources[0].interval: environment variable INTERVAL is not set`,
		`nats.duplicate_window: "forever" is not a duration (e.g. 15s, 10m, 720h)`,
		`sources[0].lookback: "never" is not a duration (e.g. 15s, 10m, 720h)`,
	}
	_, err := Parse([]byte(doc), testEnv(nil), readTestdata)
	if err == nil {
		t.Fatal("no error")
	}
	if got := err.Error(); got != strings.Join(want, "\n") {
		t.Errorf("errors:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}

	doc = "sources:\n- name: a\n  provider: circle_cpn_payments\n  api_key: ${KEY}\n  intervall: 5s\n"
	_, err = Parse([]byte(doc), testEnv(nil), readTestdata)
	want = []string{
		`sources[0].api_key: environment variable KEY is not set`,
		`sources[0].intervall: unknown key (line 5)`,
	}
	if err == nil || err.Error() != strings.Join(want, "\n") {
		t.Errorf("errors:\n%v\nwant:\n%s", err, strings.Join(want, "\n"))
	}
}

func TestDollarEscapeAndEmptyFile(t *testing.T) {
	cfg, err := Parse([]byte("sources:\n- name: a\n  provider: circle_cpn_payments\n  api_key: \"pa$$word${X}\"\n"), testEnv(map[string]string{"X": "!"}), readTestdata)
	if err != nil {
		t.Fatal(err)
	}
	if k := cfg.Sources[0].Settings.Value("api_key"); k != "pa$word!" {
		t.Fatalf("api_key = %q", k)
	}
	if _, err := Parse([]byte("# nothing\n"), testEnv(nil), readTestdata); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty file: %v", err)
	}
	if _, err := Parse([]byte("sources: [\n"), testEnv(nil), readTestdata); err == nil || !strings.Contains(err.Error(), "not valid YAML") {
		t.Fatalf("broken YAML: %v", err)
	}
}

func TestLoadNamesTheFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "missing.yaml"))
	if err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("err = %v", err)
	}
}

func TestTerminalStatusesOnlyWhereUndocumented(t *testing.T) {
	doc := "sources:\n- name: a\n  provider: circle_cpn_payments\n  api_key: k\n  terminal_statuses: [CREATED]\n" +
		"- name: b\n  provider: circle_ramp_sessions\n  api_key: TEST_API_KEY:id:secret\n  terminal_statuses: [PENDING, ARCHIVED]\n"
	_, err := Parse([]byte(doc), testEnv(nil), readTestdata)
	want := "sources[0].terminal_statuses: circle_cpn_payments statuses are documented; terminal_statuses applies only to providers whose statuses are not"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
}

func TestOpenRefreshByState(t *testing.T) {
	doc := "sources:\n- name: a\n  provider: circle_cpn_payments\n  api_key: k\n  open_refresh_by_state: {processing: 1m, settling: 30m}\n"
	cfg, err := Parse([]byte(doc), testEnv(nil), readTestdata)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Sources[0].OpenRefreshByState; got["processing"] != time.Minute || got["settling"] != 30*time.Minute || len(got) != 2 {
		t.Fatalf("open_refresh_by_state = %v", got)
	}
	if cfg.Sources[0].PageSize != 50 {
		t.Fatalf("poller page size %d, want the provider default 50", cfg.Sources[0].PageSize)
	}
	doc = "sources:\n- name: a\n  provider: circle_cpn_payments\n  api_key: k\n  open_refresh_by_state: {completed: 1m, pending: soon, processing: 0s}\n"
	_, err = Parse([]byte(doc), testEnv(nil), readTestdata)
	want := `sources[0].open_refresh_by_state.completed: "completed" is not a state an open item is re-read in (want one of pending, action_required, processing, unknown, settling)
sources[0].open_refresh_by_state.pending: "soon" is not a duration (e.g. 15s, 10m, 720h)
sources[0].open_refresh_by_state.processing: "0s" must be positive`
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant:\n%s", err, want)
	}
}

func TestOpenRefreshMax(t *testing.T) {
	src := "sources:\n- name: a\n  provider: circle_cpn_payments\n  api_key: k\n"
	for _, c := range []struct {
		line string
		want time.Duration
	}{{"", time.Hour}, {"  open_refresh_max: 0s\n", 0}, {"  open_refresh_max: 1m\n", time.Minute}, {"  open_refresh_max: 6h\n", 6 * time.Hour}} {
		cfg, err := Parse([]byte(src+c.line), testEnv(nil), readTestdata)
		if err != nil {
			t.Fatalf("%q: %v", c.line, err)
		}
		if got := cfg.Sources[0].OpenRefreshMax; got != c.want {
			t.Fatalf("%q: open_refresh_max = %v, want %v", c.line, got, c.want)
		}
	}
	_, err := Parse([]byte(src+"  open_refresh_max: -30m\n"), testEnv(nil), readTestdata)
	want := `sources[0].open_refresh_max: "-30m" must not be negative (0 turns the growth of periods with age off)`
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
}

func TestEffectiveHidesNATSURLCredentials(t *testing.T) {
	doc := "nats:\n  url: nats://alice:hunter2-pass@10.0.0.1:4222,nats://tok3n-secret@10.0.0.2:4222\nsources:\n- name: a\n  provider: circle_cpn_payments\n  api_key: k\n"
	cfg, err := Parse([]byte(doc), testEnv(nil), readTestdata)
	if err != nil {
		t.Fatal(err)
	}
	out, err := cfg.Effective()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "hunter2-pass") || strings.Contains(string(out), "tok3n-secret") || !strings.Contains(string(out), "alice") {
		t.Fatalf("effective config:\n%s", out)
	}
}
