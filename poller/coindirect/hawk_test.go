package coindirect

import (
	"net/url"
	"regexp"
	"testing"
)

// The test vector of Coindirect's authentication guide.
const (
	vectorKey        = "XVNjIiG8ePzqCsQ20qk0ChIvQJpG7S0GQq5MSkEhTdSBxGMmoI82S4n0O188F9Eo"
	vectorNormalized = "hawk.1.header\n1653303875\nVIp7ugfn\nGET\n/api/currency/fiat\napi.sandbox.coindirect.com\n443\n\n\n"
	vectorMAC        = "zVUmLFKdBZywyl8ALX9Aye2bnC7AIQwxsBllXVa1LdI="
)

func TestHawkTestVector(t *testing.T) {
	if got := HawkMAC(vectorNormalized, vectorKey); got != vectorMAC {
		t.Errorf("HawkMAC(test vector) = %s, want %s", got, vectorMAC)
	}
	u, err := url.Parse("https://api.sandbox.coindirect.com/api/currency/fiat")
	if err != nil {
		t.Fatal(err)
	}
	if got := hawkNormalized("get", u, 1653303875, "VIp7ugfn", true); got != vectorNormalized {
		t.Errorf("normalized string = %q\nwant %q", got, vectorNormalized)
	}
	const want = `Hawk id="hawk-id-1", ts="1653303875", nonce="VIp7ugfn", mac="` + vectorMAC + `"`
	if got := HawkHeader("GET", u, "hawk-id-1", vectorKey, 1653303875, "VIp7ugfn", true); got != want {
		t.Errorf("HawkHeader = %s\nwant %s", got, want)
	}
	if got := HawkHeader("GET", u, "hawk-id-1", vectorKey+"x", 1653303875, "VIp7ugfn", true); got == want {
		t.Errorf("HawkHeader ignores the key")
	}
}

func TestHawkNormalized(t *testing.T) {
	for _, tc := range []struct {
		url       string
		signQuery bool
		want      string
	}{
		{"https://api.coindirect.com/api/v1/pay/summary?merchantId=m&max=10&offset=0", true,
			"hawk.1.header\n7\nn\nGET\n/api/v1/pay/summary?merchantId=m&max=10&offset=0\napi.coindirect.com\n443\n\n\n"},
		{"https://api.coindirect.com/api/v1/pay/summary?merchantId=m&max=10&offset=0", false,
			"hawk.1.header\n7\nn\nGET\n/api/v1/pay/summary\napi.coindirect.com\n443\n\n\n"},
		{"http://127.0.0.1:8080/x/api/v1/pay/u/summary", true,
			"hawk.1.header\n7\nn\nGET\n/x/api/v1/pay/u/summary\n127.0.0.1\n8080\n\n\n"},
		{"http://localhost/api", true, "hawk.1.header\n7\nn\nGET\n/api\nlocalhost\n80\n\n\n"},
		{"https://api.coindirect.com:8443/a%2Fb?q=a%20b", true,
			"hawk.1.header\n7\nn\nGET\n/a%2Fb?q=a%20b\napi.coindirect.com\n8443\n\n\n"},
	} {
		u, err := url.Parse(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		if got := hawkNormalized("GET", u, 7, "n", tc.signQuery); got != tc.want {
			t.Errorf("normalized(%s, signQuery %v) = %q\nwant %q", tc.url, tc.signQuery, got, tc.want)
		}
	}
}

func TestNewNonce(t *testing.T) {
	shape := regexp.MustCompile(`^[A-Za-z0-9_-]{8}$`)
	seen := map[string]bool{}
	for range 2000 {
		n := newNonce()
		if !shape.MatchString(n) {
			t.Fatalf("nonce %q: want 8 URL-safe characters", n)
		}
		if seen[n] {
			t.Fatalf("nonce %q repeated", n)
		}
		seen[n] = true
	}
}

func TestValidHawkValue(t *testing.T) {
	for s, want := range map[string]bool{
		"abc-123_x.y": true, "a b": true, "": false, `a"b`: false, `a\b`: false, "a\nb": false, "é": false, "a\x7f": false,
	} {
		if got := validHawkValue(s); got != want {
			t.Errorf("validHawkValue(%q) = %v, want %v", s, got, want)
		}
	}
}
