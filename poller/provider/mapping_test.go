package provider

import (
	"bytes"
	"encoding/json"
	"reflect"
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

// FuzzRedact checks Redact's single pass against json.Compact (without fields) and
// the decoder-based stripMembers: the same output, or the same error, for any input.
func FuzzRedact(f *testing.F) {
	for _, s := range []string{
		`{"id":"x1","client_secret":"cs","nested":[{"token":"t","keep":null},[1,{"client_secret":{"deep":true}}],"token"]}`,
		` { "a" : [ 1 , -2.5e+3 , true , false , null , "s\"\\\/\b\f\n\r\t\u00e9" ] , "b" : { } , "c" : [ ] } `,
		`{"\u0074oken":1,"<k>":2,"é":3,"x\u2028":4}`,
		`{"a":01}`, `{"a":}`, `{"a":1}x`, `[1,]`, `{"a" 1}`, `"\ud800"`, `-`, `1.`, `1e`, `tru`, "{\"a\":\"\x01\"}",
	} {
		f.Add([]byte(s))
	}
	fields := []string{"client_secret", "token", "a", "<k>"}
	drop := map[string]bool{}
	for _, k := range fields {
		drop[k] = true
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := Redact(in, nil)
		var compact bytes.Buffer
		cerr := json.Compact(&compact, in)
		if (err == nil) != (cerr == nil) || (err != nil && err.Error() != cerr.Error()) {
			t.Fatalf("Redact(%q, nil): error %v, json.Compact's %v", in, err, cerr)
		}
		if err == nil && !bytes.Equal(got, compact.Bytes()) {
			t.Fatalf("Redact(%q, nil) = %q, json.Compact's %q", in, got, compact.Bytes())
		}

		got, err = Redact(in, fields)
		var want bytes.Buffer
		werr := stripMembers(&want, in, drop)
		if (err == nil) != (werr == nil) || (err != nil && err.Error() != werr.Error()) {
			t.Fatalf("Redact(%q): error %v, decoder's %v", in, err, werr)
		}
		if err == nil && !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("Redact(%q) = %q, decoder's %q", in, got, want.Bytes())
		}
	})
}

func BenchmarkRedact(b *testing.B) {
	obj := json.RawMessage(`{"type":"payment","id":"c4d1da72-111e-4d52-bdbf-2e74a2d803d5","quoteId":"custom_ref_id","paymentMethodType":"SPEI",` +
		`"blockchain":"ETH-SEPOLIA","senderAddress":"0xe01be9cdd9e744ae6a709794bfe531ec3ec0671c","createDate":"2023-01-01T12:04:05Z",` +
		`"status":"COMPLETED","sourceAmount":{"amount":"110.270000","currency":"USDC"},"destinationAmount":{"amount":"183.24","currency":"MXN"},` +
		`"fees":{"breakdown":[{"amount":{"amount":"0.240000","currency":"USDC"},"type":"BFI_TRANSACTION_FEE"}],"totalAmount":{"amount":"110.270000","currency":"USDC"}},` +
		`"refunds":[{"id":"c4d1da72-111e-4d52-bdbf-2e74a2d803d5","status":"CREATED","amount":{"amount":"110.270000","currency":"USDC"}}],"metadata":{}}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(obj)))
	for b.Loop() {
		if _, err := Redact(obj, []string{"client_secret"}); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzElements checks Elements against json.Unmarshal into a []json.RawMessage.
func FuzzElements(f *testing.F) {
	for _, s := range []string{`[]`, ` [ 1 , {"a":[2]} , "x" , null ] `, `[1,]`, `[`, `[1] 2`, `null`, `{}`, `[{"a":}]`, `[ ]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := Elements(in)
		var want []json.RawMessage
		werr := json.Unmarshal(in, &want)
		if (err == nil) != (werr == nil) || (err != nil && err.Error() != werr.Error()) {
			t.Fatalf("Elements(%q): error %v, json.Unmarshal's %v", in, err, werr)
		}
		if err == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("Elements(%q) = %q, json.Unmarshal's %q", in, got, want)
		}
	})
}
