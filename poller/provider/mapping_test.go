package provider

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	const in = `{
		"id": "x1",
		"client_secret": "cs_live_123",
		"amount": {"amount": 110.270000, "currency": "USDC"},
		"big": 123456789012345678901234567890.123456789012345678,
		"note": "a \"quoted\" <tag> & \u00e9",
		"nested": [{"token": "t", "keep": null}, [1, {"client_secret": {"deep": true}}], "token"],
		"meta": {}
	}`
	for _, tc := range []struct {
		name   string
		fields []string
		want   string
	}{
		{"no fields: compacted as sent", nil,
			`{"id":"x1","client_secret":"cs_live_123","amount":{"amount":110.270000,"currency":"USDC"},"big":123456789012345678901234567890.123456789012345678,"note":"a \"quoted\" <tag> & \u00e9","nested":[{"token":"t","keep":null},[1,{"client_secret":{"deep":true}}],"token"],"meta":{}}`},
		{"secret members at any depth", []string{"client_secret", "token"},
			`{"id":"x1","amount":{"amount":110.270000,"currency":"USDC"},"big":123456789012345678901234567890.123456789012345678,"note":"a \"quoted\" <tag> & \u00e9","nested":[{"keep":null},[1,{}],"token"],"meta":{}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Redact(json.RawMessage(in), tc.fields)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("redact =\n%s\nwant\n%s", got, tc.want)
			}
			if !json.Valid(got) {
				t.Errorf("redact returned invalid JSON")
			}
		})
	}
	if _, err := Redact(json.RawMessage(`{"a":`), []string{"a"}); err == nil {
		t.Errorf("redact of truncated JSON: no error")
	}
}

func TestParseAmount(t *testing.T) {
	for in, want := range map[string]string{
		"110.270000": "110.27",
		"1e100":      "1" + strings.Repeat("0", 100),
		"-0.5":       "-0.5",
		"1E-100":     "0." + strings.Repeat("0", 99) + "1",
	} {
		d, err := ParseAmount(in)
		if err != nil || d.String() != want {
			t.Errorf("ParseAmount(%q) = %s, %v; want %s", in, d, err, want)
		}
	}
	for _, in := range []string{"", "abc", "1.2.3", "NaN", "Infinity", "1e101", "1e-101", "1" + strings.Repeat("0", 100), "0x10", "1_000"} {
		if d, err := ParseAmount(in); err == nil {
			t.Errorf("ParseAmount(%q) = %s, want an error", in, d)
		}
	}
}

func TestHideSecret(t *testing.T) {
	key := "TEST_API_KEY:6c1c0e4a-ee1f:Zx81secretPart"
	for in, want := range map[string]string{
		"bad key " + key:                    "bad key [api_key]",
		"entity secret Zx81secretPart gone": "entity secret [api_key] gone",
		"id 6c1c0e4a-ee1f unknown":          "id [api_key] unknown",
		"short TEST parts stay":             "short TEST parts stay",
	} {
		if got := HideSecret(in, key, "[api_key]"); got != want {
			t.Errorf("HideSecret(%q) = %q, want %q", in, got, want)
		}
	}
	if got := HideSecret("x", "", "[k]"); got != "x" {
		t.Errorf("empty secret changed the text: %q", got)
	}
}
