package circle

import (
	"strings"
	"testing"
)

func TestLinkRel(t *testing.T) {
	const next = "https://api.circle.com/v1/cpn/payments?to=2023-01-01T12%3A04%3A05Z&pageSize=50&pageAfter=c4d1"
	for _, tc := range []struct {
		name   string
		values []string
		want   string
		found  bool
		bad    bool
	}{
		{name: "circle style", values: []string{
			`<https://api.circle.com/v1/cpn/payments?to=2023-01-01T12%3A04%3A05Z&pageSize=50>; rel="self", ` +
				`<https://api.circle.com/v1/cpn/payments?to=2023-01-01T12%3A04%3A05Z&pageSize=50>; rel="first", ` +
				`<` + next + `>; rel="next", ` +
				`<https://api.circle.com/v1/cpn/payments?pageBefore=a1>; rel="prev"`,
		}, want: next, found: true},
		{name: "unquoted, upper case, extra parameters", values: []string{`<x>; title="a, b; c"; REL=NEXT`}, want: "x", found: true},
		{name: "several relation types", values: []string{`<x>; rel="prev last"`, `<y>; rel="first next"`}, want: "y", found: true},
		{name: "only the first rel counts", values: []string{`<x>; rel="prev"; rel="next"`}},
		{name: "next-page is not next", values: []string{`<x>; rel="next-page"`}},
		{name: "no next", values: []string{`<x>; rel="self", <y>; rel="first"`}},
		{name: "empty header", values: []string{""}},
		{name: "stray commas and spaces", values: []string{` , <x> ;rel=next ,`}, want: "x", found: true},
		{name: "escaped quote", values: []string{`<x>; title="say \"hi\""; rel="next"`}, want: "x", found: true},
		{name: "no angle brackets", values: []string{`https://api.circle.com/x; rel="next"`}, bad: true},
		{name: "unclosed bracket", values: []string{`<https://api.circle.com/x; rel="next"`}, bad: true},
		{name: "unclosed quote", values: []string{`<x>; rel="next`}, bad: true},
		{name: "junk after target", values: []string{`<x> junk; rel="next"`}, bad: true},
		{name: "empty parameter", values: []string{`<x>; ; rel="next"`}, bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, found, err := linkRel(tc.values, "next")
			if (err != nil) != tc.bad || got != tc.want || found != tc.found {
				t.Errorf("linkRel(%q) = %q, %v, %v; want %q, %v, error %v", tc.values, got, found, err, tc.want, tc.found, tc.bad)
			}
		})
	}
}

func TestDecodeCircleError(t *testing.T) {
	for body, want := range map[string]string{
		`{"code":401,"message":"Malformed authorization."}`: "code 401: Malformed authorization.",
		`{"code":-1,"message":"Something went wrong."}`:     "code -1: Something went wrong.",
		`{"code":2,"message":"API parameter invalid.","errors":[{"error":"invalid_value","message":"must be >= 1","location":"pageSize","invalidValue":"0"}]}`: "code 2: API parameter invalid.",
		`{"message":"only a message"}`:                                         "only a message",
		`{"code":401,"message":"bad key k3y` + strings.Repeat(".", 300) + `"}`: "code 401: bad key [api_key]" + strings.Repeat(".", 283) + "…",
		`{"code":5}`:                         "code 5: ",
		`{"code":"401","message":"strange"}`: "",
		`{"error":"other shape"}`:            "",
		`<html>502</html>`:                   "",
		``:                                   "",
		`{"code":1,"message":"a` + strings.Repeat("é", 400) + `"}`: "code 1: a" + strings.Repeat("é", 149) + "…",
	} {
		if got := decodeCircleError([]byte(body), "k3y"); got != want {
			t.Errorf("decodeCircleError(%.60s) = %q, want %q", body, got, want)
		}
	}
}

// FuzzLinkRel checks that no Link header makes the parser panic and that a found
// target comes from the header.
func FuzzLinkRel(f *testing.F) {
	f.Add(`<https://api.circle.com/v1/cpn/payments?pageAfter=a>; rel="next", <x>; rel="prev"`)
	f.Add(`<x>; title="a \"b\", c"; rel=next`)
	f.Add(`<x`)
	f.Fuzz(func(t *testing.T, v string) {
		target, found, err := linkRel([]string{v}, "next")
		if err != nil && found {
			t.Fatalf("linkRel(%q) found %q and failed: %v", v, target, err)
		}
		if found && !strings.Contains(v, target) {
			t.Fatalf("linkRel(%q) = %q, not a target in the header", v, target)
		}
	})
}
