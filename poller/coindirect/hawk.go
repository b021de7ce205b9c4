package coindirect

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Coindirect authenticates every request with a Hawk 1 "header" MAC, built the way the
// official SDK builds it: HMAC-SHA256 keyed with the Hawk key's UTF-8 bytes over
//
//	hawk.1.header\n{ts}\n{nonce}\n{METHOD}\n{path}[?{rawQuery}]\n{host}\n{port}\n\n\n
//
// (the last two lines are the empty payload hash and the empty ext), base64-encoded
// with padding, and sent as
//
//	Authorization: Hawk id="{id}", ts="{ts}", nonce="{nonce}", mac="{mac}"
//
// ts is the Unix time in seconds and must be close to the server's clock; a nonce may
// not be used twice (the API answers a reused one with 429).

// HawkMAC returns base64(HMAC-SHA256(key, normalized)), the mac attribute of a Hawk
// header for the normalized request string.
func HawkMAC(normalized, key string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(normalized))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// HawkHeader returns the Authorization header value for a request with method to u,
// signed with the Hawk credentials id and key at Unix time ts (seconds) with nonce.
// signQuery says whether u's raw query is part of the signed resource (the official
// SDK and standard Hawk sign it; one version of Coindirect's docs says not to).
// u must be absolute; id and nonce must not contain '"' or '\'.
func HawkHeader(method string, u *url.URL, id, key string, ts int64, nonce string, signQuery bool) string {
	mac := HawkMAC(hawkNormalized(method, u, ts, nonce, signQuery), key)
	return `Hawk id="` + id + `", ts="` + strconv.FormatInt(ts, 10) + `", nonce="` + nonce + `", mac="` + mac + `"`
}

// hawkNormalized is the string a Hawk header MAC covers. The path is u's escaped path,
// as sent on the wire; for every path watcher requests it equals the decoded path the
// official SDK signs. The host has no port; the port is u's, else 443 for https and 80
// for http.
func hawkNormalized(method string, u *url.URL, ts int64, nonce string, signQuery bool) string {
	resource := u.EscapedPath()
	if signQuery && u.RawQuery != "" {
		resource += "?" + u.RawQuery
	}
	var b strings.Builder
	b.WriteString("hawk.1.header\n")
	b.WriteString(strconv.FormatInt(ts, 10))
	b.WriteByte('\n')
	b.WriteString(nonce)
	b.WriteByte('\n')
	b.WriteString(strings.ToUpper(method))
	b.WriteByte('\n')
	b.WriteString(resource)
	b.WriteByte('\n')
	b.WriteString(u.Hostname())
	b.WriteByte('\n')
	b.WriteString(hawkPort(u))
	b.WriteString("\n\n\n") // port line end, empty payload hash, empty ext
	return b.String()
}

// hawkPort is u's explicit port, or the scheme's default.
func hawkPort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if strings.EqualFold(u.Scheme, "http") {
		return "80"
	}
	return "443"
}

// A Hawk server refuses a timestamp outside its window with a 401 carrying its own
// time, authenticated with the credentials' key:
//
//	WWW-Authenticate: Hawk ts="{ts}", tsm="{tsm}", error="Stale timestamp"
//
// where tsm is base64(HMAC-SHA256(key, "hawk.1.ts\n{ts}\n")). A client that verifies
// tsm may sign again with the server's time.

// hawkTSM returns the tsm a Hawk server sends with its time ts (Unix seconds, as sent).
func hawkTSM(ts, key string) string {
	return HawkMAC("hawk.1.ts\n"+ts+"\n", key)
}

// hawkAttr matches one attribute of a Hawk WWW-Authenticate header, as Hawk's own
// client reads them: name="value" with no quote or backslash in the value.
var hawkAttr = regexp.MustCompile(`(\w+)="([^"\\]*)"`)

// staleTimestamp reads the Hawk WWW-Authenticate headers of a 401. stale reports that
// the server refused the timestamp: its error attribute says "Stale timestamp" or it
// sent its time (ts). server is the server's time and ok is true only when ts is a
// Unix time in seconds and tsm verifies with key; a tsm that does not verify is
// ignored (ok false), since anyone on the path could have sent it.
func staleTimestamp(h http.Header, key string) (server time.Time, stale, ok bool) {
	for _, v := range h.Values("WWW-Authenticate") {
		scheme, rest, _ := strings.Cut(strings.TrimSpace(v), " ")
		if !strings.EqualFold(scheme, "Hawk") {
			continue
		}
		attrs := map[string]string{}
		for _, m := range hawkAttr.FindAllStringSubmatch(rest, -1) {
			attrs[m[1]] = m[2]
		}
		ts, hasTS := attrs["ts"]
		if !hasTS && !strings.EqualFold(attrs["error"], "Stale timestamp") {
			continue
		}
		sec, err := strconv.ParseInt(ts, 10, 64)
		if err != nil || sec <= 0 || sec > maxUnixSeconds {
			return time.Time{}, true, false
		}
		want := hawkTSM(ts, key)
		if !hmac.Equal([]byte(want), []byte(attrs["tsm"])) {
			return time.Time{}, true, false
		}
		return time.Unix(sec, 0), true, true
	}
	return time.Time{}, false, false
}

// maxUnixSeconds is 9999-12-31T23:59:59Z, a bound on a plausible server time.
const maxUnixSeconds = 253402300799

// nonceLen is the length of the nonces newNonce makes, as in the official SDK.
const nonceLen = 8

// newNonce returns 8 random characters from the URL-safe base64 alphabet (48 random
// bits), so that a nonce repeats within Coindirect's 15-minute window with negligible
// probability.
func newNonce() string {
	var b [nonceLen * 6 / 8]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// validHawkValue reports whether s can be a quoted Hawk header attribute: non-empty
// printable ASCII without '"' or '\'.
func validHawkValue(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}
