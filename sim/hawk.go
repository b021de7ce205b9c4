package sim

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// hawkMAC is Hawk 1's header mac: base64(HMAC-SHA256(key, normalized)) where normalized
// is "hawk.1.header\n{ts}\n{nonce}\n{METHOD}\n{resource}\n{host}\n{port}\n{hash}\n{ext}\n".
// Coindirect sends no payload hash and no ext, so both lines are empty.
func hawkMAC(key, ts, nonce, method, resource, host, port, hash, ext string) string {
	var b strings.Builder
	for _, part := range []string{"hawk.1.header", ts, nonce, strings.ToUpper(method), resource, host, port, hash, hawkEscapeExt(ext)} {
		b.WriteString(part)
		b.WriteByte('\n')
	}
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(b.String()))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// hawkEscapeExt escapes ext as Hawk does in the normalized string.
func hawkEscapeExt(ext string) string {
	return strings.ReplaceAll(strings.ReplaceAll(ext, `\`, `\\`), "\n", `\n`)
}

// hawkTimestampMAC is the tsm of a WWW-Authenticate answer: it lets a client check the
// server time it is told to use.
func hawkTimestampMAC(key, ts string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte("hawk.1.ts\n" + ts + "\n"))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// parseHawk reads `Hawk id="…", ts="…", nonce="…", mac="…"[, hash="…", ext="…"]`; the
// scheme compares case-insensitively.
func parseHawk(h string) (map[string]string, error) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
	if !strings.EqualFold(scheme, "Hawk") {
		return nil, errors.New("not a Hawk authorization")
	}
	attrs := map[string]string{}
	rest = strings.TrimSpace(rest)
	for rest != "" {
		name, after, ok := strings.Cut(rest, "=")
		name = strings.TrimSpace(name)
		after = strings.TrimSpace(after)
		if !ok || name == "" || !strings.HasPrefix(after, `"`) {
			return nil, errors.New("bad attribute syntax")
		}
		end := strings.IndexByte(after[1:], '"')
		if end < 0 {
			return nil, errors.New("unterminated attribute value")
		}
		if _, dup := attrs[name]; dup {
			return nil, errors.New("duplicate attribute " + name)
		}
		attrs[name] = after[1 : 1+end]
		rest = strings.TrimSpace(after[2+end:])
		rest = strings.TrimSpace(strings.TrimPrefix(rest, ","))
	}
	return attrs, nil
}

const nonceTTL = 15 * time.Minute

// nonceCache remembers the nonces of accepted requests for nonceTTL.
type nonceCache struct {
	mu      sync.Mutex
	seen    map[string]int64 // id + "\n" + nonce -> unix ms first used
	pruneAt int
}

// use reports whether nonce is fresh for id at now (unix ms), and remembers it.
func (c *nonceCache) use(id, nonce string, now int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := id + "\n" + nonce
	if t, ok := c.seen[key]; ok && now-t < nonceTTL.Milliseconds() {
		return false
	}
	c.seen[key] = now
	if len(c.seen) >= max(c.pruneAt, 4096) {
		for k, t := range c.seen {
			if now-t >= nonceTTL.Milliseconds() {
				delete(c.seen, k)
			}
		}
		c.pruneAt = 2 * len(c.seen)
	}
	return true
}

// hostPort is the host and port a client signs: the Host header's, the port defaulting
// to 443 for requests that came over TLS (or say X-Forwarded-Proto: https) and 80
// otherwise.
func hostPort(r *http.Request) (string, string) {
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil {
		host = strings.TrimSuffix(strings.TrimPrefix(r.Host, "["), "]")
		port = "80"
		if r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") {
			port = "443"
		}
	}
	return host, port
}

// hawkFailure is why a request was refused: the HTTP status, the message and, for a
// stale timestamp, the WWW-Authenticate value.
type hawkFailure struct {
	code    int
	message string
	www     string
}

// checkHawk verifies a Coindirect request's Hawk header: credentials, mac (over the
// resource forms Config.HawkQuery allows), timestamp against the provider's clock now
// (within HawkSkew; a stale one is answered with that clock's ts and its tsm), then
// nonce (remembered on the simulated clock).
func (s *Sim) checkHawk(r *http.Request, now time.Time) *hawkFailure {
	h := r.Header.Get("Authorization")
	if h == "" {
		return &hawkFailure{code: http.StatusUnauthorized, message: "Missing authentication"}
	}
	a, err := parseHawk(h)
	if err != nil {
		return &hawkFailure{code: http.StatusUnauthorized, message: "Invalid header syntax: " + err.Error()}
	}
	for _, k := range []string{"id", "ts", "nonce", "mac"} {
		if a[k] == "" {
			return &hawkFailure{code: http.StatusUnauthorized, message: "Missing attribute " + k}
		}
	}
	if a["id"] != s.creds.CoindirectHawkID {
		return &hawkFailure{code: http.StatusUnauthorized, message: "Unknown credentials"}
	}
	uri := r.RequestURI
	if uri == "" {
		uri = r.URL.RequestURI()
	}
	path, _, hasQuery := strings.Cut(uri, "?")
	var resources []string
	switch s.cfg.HawkQuery {
	case HawkQueryIncluded:
		resources = []string{uri}
	case HawkQueryExcluded:
		resources = []string{path}
	default:
		resources = []string{path}
		if hasQuery {
			resources = append(resources, uri)
		}
	}
	host, port := hostPort(r)
	key := s.creds.CoindirectHawkKey
	ok := false
	for _, res := range resources {
		want := hawkMAC(key, a["ts"], a["nonce"], r.Method, res, host, port, a["hash"], a["ext"])
		if hmac.Equal([]byte(want), []byte(a["mac"])) {
			ok = true
		}
	}
	if !ok {
		return &hawkFailure{code: http.StatusUnauthorized, message: "Bad mac"}
	}
	ts, err := strconv.ParseInt(a["ts"], 10, 64)
	if err != nil || ts < now.Add(-s.cfg.HawkSkew).Unix() || ts > now.Add(s.cfg.HawkSkew).Unix() {
		nowTS := strconv.FormatInt(now.Unix(), 10)
		return &hawkFailure{code: http.StatusUnauthorized, message: "Stale timestamp",
			www: `Hawk ts="` + nowTS + `", tsm="` + hawkTimestampMAC(key, nowTS) + `", error="Stale timestamp"`}
	}
	if !s.nonce.use(a["id"], a["nonce"], s.now().UnixMilli()) {
		return &hawkFailure{code: http.StatusTooManyRequests, message: "Invalid nonce: already used"}
	}
	return nil
}
