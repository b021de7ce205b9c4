package sim

import (
	"testing"
	"time"
)

// The vector published in Coindirect's authentication guide (NOTES §5.1).
func TestHawkMACPublishedVector(t *testing.T) {
	got := hawkMAC("XVNjIiG8ePzqCsQ20qk0ChIvQJpG7S0GQq5MSkEhTdSBxGMmoI82S4n0O188F9Eo",
		"1653303875", "VIp7ugfn", "GET", "/api/currency/fiat", "api.sandbox.coindirect.com", "443", "", "")
	if want := "zVUmLFKdBZywyl8ALX9Aye2bnC7AIQwxsBllXVa1LdI="; got != want {
		t.Fatalf("mac = %s, want %s", got, want)
	}
}

func TestParseHawk(t *testing.T) {
	a, err := parseHawk(`HAWK id="abc", ts="1653303875",nonce="VIp7ugfn", mac="zVUm+/="`)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"id": "abc", "ts": "1653303875", "nonce": "VIp7ugfn", "mac": "zVUm+/="}
	for k, v := range want {
		if a[k] != v {
			t.Errorf("%s = %q, want %q", k, a[k], v)
		}
	}
	for _, bad := range []string{`Bearer x`, `Hawk id=abc`, `Hawk id="abc`, `Hawk id="a", id="b"`} {
		if _, err := parseHawk(bad); err == nil {
			t.Errorf("parseHawk(%q) succeeded", bad)
		}
	}
}

func TestNonceCacheForgetsAfterTTL(t *testing.T) {
	c := nonceCache{seen: map[string]int64{}}
	now := time.Now().UnixMilli()
	if !c.use("id", "n1", now) {
		t.Fatal("first use refused")
	}
	if c.use("id", "n1", now+nonceTTL.Milliseconds()-1) {
		t.Fatal("reuse within 15 minutes accepted")
	}
	if !c.use("other", "n1", now) {
		t.Fatal("the same nonce for another id refused")
	}
	if !c.use("id", "n1", now+nonceTTL.Milliseconds()) {
		t.Fatal("reuse after 15 minutes refused")
	}
}
