package provider

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/shopspring/decimal"
)

// Helpers that every adapter's mapping needs: exact amounts, secret removal from the
// raw object, reference maps and readable decode errors.

// Bounds on an amount's text and exponent. Real amounts are far inside them; they keep
// a hostile or broken response from producing a decimal whose printed form would take
// gigabytes (1e-2000000000 parses, and prints as two billion digits).
const (
	MaxAmountLen = 100
	MaxAmountExp = 100
)

// ParseAmount parses a decimal amount exactly as written (plain or exponent form),
// refusing absurd lengths and exponents.
func ParseAmount(s string) (decimal.Decimal, error) {
	if len(s) > MaxAmountLen {
		return decimal.Decimal{}, fmt.Errorf("longer than %d characters", MaxAmountLen)
	}
	d, err := decimal.NewFromString(s)
	if err != nil {
		return decimal.Decimal{}, errors.New("not a decimal")
	}
	if e := d.Exponent(); e < -MaxAmountExp || e > MaxAmountExp {
		return decimal.Decimal{}, fmt.Errorf("exponent %d outside ±%d", e, MaxAmountExp)
	}
	return d, nil
}

// ParseAmountJSON parses an amount given as a JSON string ("110.27") or a bare JSON
// number (110.27, 1E+4) from its literal text, never through float64. It returns
// ok false for an absent or null amount.
func ParseAmountJSON(raw json.RawMessage) (d decimal.Decimal, ok bool, err error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return decimal.Decimal{}, false, nil
	}
	var s string
	switch {
	case raw[0] == '"':
		if err := json.Unmarshal(raw, &s); err != nil {
			return decimal.Decimal{}, false, err
		}
	case raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9'):
		s = string(raw)
	default:
		return decimal.Decimal{}, false, fmt.Errorf("%s: not a decimal", Clip(string(raw), 64))
	}
	d, err = ParseAmount(s)
	if err != nil {
		return decimal.Decimal{}, false, fmt.Errorf("%q: %w", Clip(s, 64), err)
	}
	return d, true, nil
}

// Redact returns obj compacted, with every object member whose name is in fields
// removed at any depth. Member order and all other values are kept as sent.
func Redact(obj json.RawMessage, fields []string) ([]byte, error) {
	var buf bytes.Buffer
	if len(fields) == 0 {
		if err := json.Compact(&buf, obj); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	}
	drop := make(map[string]bool, len(fields))
	for _, f := range fields {
		drop[f] = true
	}
	if err := stripMembers(&buf, obj, drop); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// stripMembers writes v to buf, compacted, without the object members named in drop.
func stripMembers(buf *bytes.Buffer, v json.RawMessage, drop map[string]bool) error {
	v = bytes.TrimSpace(v)
	if len(v) == 0 || (v[0] != '{' && v[0] != '[') {
		return json.Compact(buf, v)
	}
	dec := json.NewDecoder(bytes.NewReader(v))
	if _, err := dec.Token(); err != nil { // the opening delimiter
		return err
	}
	buf.WriteByte(v[0])
	first := true
	for dec.More() {
		var key string
		if v[0] == '{' {
			t, err := dec.Token()
			if err != nil {
				return err
			}
			key, _ = t.(string)
		}
		var elem json.RawMessage
		if err := dec.Decode(&elem); err != nil {
			return err
		}
		if v[0] == '{' && drop[key] {
			continue
		}
		if !first {
			buf.WriteByte(',')
		}
		first = false
		if v[0] == '{' {
			k, err := json.Marshal(key)
			if err != nil {
				return err
			}
			buf.Write(k)
			buf.WriteByte(':')
		}
		if err := stripMembers(buf, elem, drop); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing delimiter
		return err
	}
	if v[0] == '{' {
		buf.WriteByte('}')
	} else {
		buf.WriteByte(']')
	}
	return nil
}

// Refs builds a Refs map from name, value pairs, leaving out empty values; nil when
// all are empty.
func Refs(kv ...string) map[string]string {
	var m map[string]string
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			continue
		}
		if m == nil {
			m = make(map[string]string, len(kv)/2)
		}
		m[kv[i]] = kv[i+1]
	}
	return m
}

// DecodeReason describes a json.Unmarshal failure of one item without Go type names.
func DecodeReason(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field != "" {
			return fmt.Sprintf("field %s: unexpected JSON %s", te.Field, te.Value)
		}
		return fmt.Sprintf("unexpected JSON %s", te.Value)
	}
	return err.Error()
}

// Clip shortens s to at most n bytes for messages, marking the cut.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// ParseBaseURL accepts an absolute http(s) URL with a host and an optional path prefix,
// and nothing else (no credentials, query or fragment); the path loses its trailing
// slash. Errors name the base_url key and never show user info.
func ParseBaseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" {
		shown := raw
		if err == nil {
			shown = u.Redacted()
		}
		return nil, fmt.Errorf("base_url: %q is not an absolute http(s) URL", shown)
	}
	if u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return nil, fmt.Errorf("base_url: %q must not carry credentials, a query or a fragment", u.Redacted())
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// IsObject reports whether raw is a JSON object.
func IsObject(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 0 && raw[0] == '{'
}

// NestedArray returns the elements of a nested array member; an absent or null member
// has none, anything else that is not an array is an error.
func NestedArray(raw json.RawMessage) ([]json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if raw[0] != '[' {
		return nil, errors.New("not an array")
	}
	var out []json.RawMessage
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// LastID is the "id" of the last element of data that has a string one; "" when none
// has. Elements without an id are skipped by the parsers, so a cursor after an earlier
// id only reads such elements again.
func LastID(data []json.RawMessage) string {
	for i := len(data) - 1; i >= 0; i-- {
		var v struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(data[i], &v) == nil && v.ID != "" {
			return v.ID
		}
	}
	return ""
}

// HideSecret replaces secret in s with label, and also each part of a composite secret
// (Circle's PREFIX:ID:SECRET) long enough to identify it, so that a provider echoing
// only part of a credential cannot leak it into an error.
func HideSecret(s, secret, label string) string {
	if secret == "" {
		return s
	}
	s = strings.ReplaceAll(s, secret, label)
	for _, part := range strings.Split(secret, ":") {
		if len(part) >= 8 && part != secret {
			s = strings.ReplaceAll(s, part, label)
		}
	}
	return s
}
