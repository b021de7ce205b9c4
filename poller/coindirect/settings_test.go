package coindirect_test

import (
	"strings"
	"testing"

	"github.com/payments-watcher/watcher/config"
	"github.com/payments-watcher/watcher/config/configtest"
)

var validKeys = map[string]string{
	"hawk_id": "hawk-id-1", "hawk_key": "hawk-key-Zq8sNw3kVt5u", "merchant_id": "6f0b4c1e-2d3a-4b5c-8d9e-0a1b2c3d4e5f",
	"webhook_secret": "merchant-webhook-secret-Jk4", "webhook_signature_header": "X-Signature",
}

// TestSettings checks the configuration of Coindirect's keys: hawk_id, hawk_key and
// merchant_id are required, hawk_key is a secret with a hawk_key_file twin, and
// sign_query defaults to true; webhook_secret is an optional secret with a
// webhook_secret_file twin.
func TestSettings(t *testing.T) {
	configtest.CheckKeys(t, "coindirect_payments", validKeys)
}

// TestSignQuerySetting checks that sign_query takes true or false only, and that a
// key another provider declares is unknown here.
func TestSignQuerySetting(t *testing.T) {
	doc := "sources:\n- name: cd\n  provider: coindirect_payments\n  hawk_id: h\n  hawk_key: k\n  merchant_id: m\n"
	env := func(string) (string, bool) { return "", false }
	cfg, err := config.Parse([]byte(doc+"  sign_query: false\n"), env, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v := cfg.Sources[0].Settings.Value("sign_query"); v != "false" {
		t.Errorf("sign_query = %q, want false", v)
	}
	for extra, want := range map[string]string{
		"  sign_query: maybe\n":   `sources[0].sign_query: "maybe" is not true or false (line 7)`,
		"  sign_query: [true]\n":  `sources[0].sign_query: want a single value, got a list (line 7)`,
		"  api_key: k\n":          `sources[0].api_key: unknown key (line 7)`,
		"  merchant_id_file: f\n": `sources[0].merchant_id_file: unknown key (line 7)`,
		"  stripe_version: v1\n":  `sources[0].stripe_version: unknown key (line 7)`,
		"  from_date_format: x\n": `sources[0]: from_date_format: "x" is not one of`,
		"  hawk_key_file: nope\n": `sources[0].hawk_key: set either hawk_key or hawk_key_file, not both`,
	} {
		_, err := config.Parse([]byte(doc+extra), env, func(string) ([]byte, error) { return []byte("x"), nil })
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s: err = %v, want %s…", strings.TrimSpace(extra), err, want)
		}
	}
}
