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
// removed at any depth. Member order and all other values are kept as sent; member
// names are written as encoding/json writes a string.
func Redact(obj json.RawMessage, fields []string) ([]byte, error) {
	// One pass over the bytes; anything it does not accept is left to encoding/json
	// below, whose error is the one reported.
	r := redactor{src: obj, fields: fields, out: make([]byte, 0, len(obj))}
	r.space()
	if r.value(0, true) && r.space() == len(obj) {
		return r.out, nil
	}
	if len(fields) == 0 {
		var buf bytes.Buffer
		if err := json.Compact(&buf, obj); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	}
	drop := make(map[string]bool, len(fields))
	for _, f := range fields {
		drop[f] = true
	}
	var buf bytes.Buffer
	if err := stripMembers(&buf, obj, drop); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// redactor is Redact's single pass: a JSON scanner that copies what it reads to out,
// compacted, leaving out the members named in fields. Without fields it writes member
// names as they are, as json.Compact does. Its methods return false on anything that
// is not JSON as encoding/json reads it.
type redactor struct {
	src    []byte
	pos    int
	fields []string
	out    []byte
}

// maxRedactDepth is encoding/json's limit on nesting.
const maxRedactDepth = 10000

// space skips white space and returns the position after it.
func (r *redactor) space() int {
	for r.pos < len(r.src) {
		switch r.src[r.pos] {
		case ' ', '\t', '\n', '\r':
			r.pos++
		default:
			return r.pos
		}
	}
	return r.pos
}

// value reads one value, copying it to out when emit is set.
func (r *redactor) value(depth int, emit bool) bool {
	if r.pos >= len(r.src) || depth > maxRedactDepth {
		return false
	}
	start := r.pos
	switch c := r.src[r.pos]; {
	case c == '{':
		return r.object(depth, emit)
	case c == '[':
		return r.array(depth, emit)
	case c == '"':
		if !r.str() {
			return false
		}
	case c == '-' || (c >= '0' && c <= '9'):
		if !r.number() {
			return false
		}
	case c == 't':
		if !r.literal("true") {
			return false
		}
	case c == 'f':
		if !r.literal("false") {
			return false
		}
	case c == 'n':
		if !r.literal("null") {
			return false
		}
	default:
		return false
	}
	if emit {
		r.out = append(r.out, r.src[start:r.pos]...)
	}
	return true
}

func (r *redactor) object(depth int, emit bool) bool {
	r.pos++ // {
	if emit {
		r.out = append(r.out, '{')
	}
	first := true
	r.space()
	if r.pos < len(r.src) && r.src[r.pos] == '}' {
		r.pos++
		if emit {
			r.out = append(r.out, '}')
		}
		return true
	}
	for {
		r.space()
		keyStart := r.pos
		if r.pos >= len(r.src) || r.src[r.pos] != '"' || !r.str() {
			return false
		}
		key := r.src[keyStart:r.pos]
		r.space()
		if r.pos >= len(r.src) || r.src[r.pos] != ':' {
			return false
		}
		r.pos++
		r.space()
		keep := emit
		plain := len(r.fields) == 0 || plainName(key)
		var name string
		if !plain {
			var err error
			if name, err = unquote(key); err != nil {
				return false
			}
		}
		if keep {
			if plain {
				keep = !r.dropped(key[1 : len(key)-1])
			} else {
				keep = !r.dropped([]byte(name))
			}
		}
		if keep {
			if !first {
				r.out = append(r.out, ',')
			}
			first = false
			if plain {
				r.out = append(r.out, key...)
			} else {
				k, err := json.Marshal(name)
				if err != nil {
					return false
				}
				r.out = append(r.out, k...)
			}
			r.out = append(r.out, ':')
		}
		if !r.value(depth+1, keep) {
			return false
		}
		r.space()
		if r.pos >= len(r.src) {
			return false
		}
		switch r.src[r.pos] {
		case ',':
			r.pos++
		case '}':
			r.pos++
			if emit {
				r.out = append(r.out, '}')
			}
			return true
		default:
			return false
		}
	}
}

func (r *redactor) array(depth int, emit bool) bool {
	r.pos++ // [
	if emit {
		r.out = append(r.out, '[')
	}
	r.space()
	if r.pos < len(r.src) && r.src[r.pos] == ']' {
		r.pos++
		if emit {
			r.out = append(r.out, ']')
		}
		return true
	}
	for first := true; ; first = false {
		r.space()
		if emit && !first {
			r.out = append(r.out, ',')
		}
		if !r.value(depth+1, emit) {
			return false
		}
		r.space()
		if r.pos >= len(r.src) {
			return false
		}
		switch r.src[r.pos] {
		case ',':
			r.pos++
		case ']':
			r.pos++
			if emit {
				r.out = append(r.out, ']')
			}
			return true
		default:
			return false
		}
	}
}

func (r *redactor) dropped(name []byte) bool {
	for _, f := range r.fields {
		if string(name) == f {
			return true
		}
	}
	return false
}

// plainName reports whether encoding/json writes the name that quoted stands for
// back exactly as quoted: printable ASCII without escapes or the characters it escapes
// for HTML.
func plainName(quoted []byte) bool {
	for _, c := range quoted[1 : len(quoted)-1] {
		if c < 0x20 || c >= 0x80 || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

func unquote(quoted []byte) (string, error) {
	var s string
	err := json.Unmarshal(quoted, &s)
	return s, err
}

// plainByte marks the bytes a string holds as they are: not a quote, a backslash or
// a control character.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// str reads a string (validating its escapes) from its opening quote.
func (r *redactor) str() bool {
	r.pos++ // "
	for r.pos < len(r.src) {
		rest := r.src[r.pos:]
		n := 0
		for n < len(rest) && plainByte[rest[n]] {
			n++
		}
		r.pos += n
		if r.pos >= len(r.src) {
			return false
		}
		c := r.src[r.pos]
		switch {
		case c == '"':
			r.pos++
			return true
		case c < 0x20:
			return false
		case c == '\\':
			if r.pos+1 >= len(r.src) {
				return false
			}
			switch r.src[r.pos+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				r.pos += 2
			case 'u':
				if r.pos+6 > len(r.src) {
					return false
				}
				for _, h := range r.src[r.pos+2 : r.pos+6] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return false
					}
				}
				r.pos += 6
			default:
				return false
			}
		default:
			r.pos++
		}
	}
	return false
}

// number reads a number as JSON's grammar has it.
func (r *redactor) number() bool {
	digits := func() int {
		n := 0
		for r.pos < len(r.src) && r.src[r.pos] >= '0' && r.src[r.pos] <= '9' {
			r.pos++
			n++
		}
		return n
	}
	if r.src[r.pos] == '-' {
		r.pos++
	}
	if r.pos >= len(r.src) {
		return false
	}
	if r.src[r.pos] == '0' {
		r.pos++
	} else if digits() == 0 {
		return false
	}
	if r.pos < len(r.src) && r.src[r.pos] == '.' {
		r.pos++
		if digits() == 0 {
			return false
		}
	}
	if r.pos < len(r.src) && (r.src[r.pos] == 'e' || r.src[r.pos] == 'E') {
		r.pos++
		if r.pos < len(r.src) && (r.src[r.pos] == '+' || r.src[r.pos] == '-') {
			r.pos++
		}
		if digits() == 0 {
			return false
		}
	}
	return true
}

func (r *redactor) literal(word string) bool {
	if !bytes.HasPrefix(r.src[r.pos:], []byte(word)) {
		return false
	}
	r.pos += len(word)
	return true
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
	return Elements(raw)
}

// Elements returns the elements of the JSON array raw, as json.Unmarshal into a
// []json.RawMessage does (with its errors), in one pass over raw and without copying:
// the elements share raw's memory.
func Elements(raw json.RawMessage) ([]json.RawMessage, error) {
	r := redactor{src: raw}
	r.space()
	if out, ok := r.elements(); ok && r.space() == len(raw) {
		return out, nil
	}
	var out []json.RawMessage
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// elements reads an array, returning its elements.
func (r *redactor) elements() ([]json.RawMessage, bool) {
	if r.pos >= len(r.src) || r.src[r.pos] != '[' {
		return nil, false
	}
	r.pos++
	out := []json.RawMessage{}
	r.space()
	if r.pos < len(r.src) && r.src[r.pos] == ']' {
		r.pos++
		return out, true
	}
	for {
		r.space()
		start := r.pos
		if !r.value(1, false) {
			return nil, false
		}
		out = append(out, r.src[start:r.pos:r.pos])
		r.space()
		if r.pos >= len(r.src) {
			return nil, false
		}
		switch r.src[r.pos] {
		case ',':
			r.pos++
		case ']':
			r.pos++
			return out, true
		default:
			return nil, false
		}
	}
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
