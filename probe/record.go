package probe

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/payments-watcher/watcher/poller/provider"
)

// Exchange is one HTTP round trip as the recorder saw it.
type Exchange struct {
	Method string
	// URL is the request URL without user info or query (the query may carry ids).
	URL string
	// Status is the response's status code; 0 when no response came (Err says why).
	Status int
	// Header holds the response headers the checks read: Date, Link and
	// WWW-Authenticate.
	Header http.Header
	// Sent and Received bracket the round trip on this host's clock.
	Sent, Received time.Time
	Err            error
}

// recordedHeaders are the response headers an Exchange keeps.
var recordedHeaders = []string{"Date", "Link", "Www-Authenticate"}

// errBudget is the error of a request beyond the probe's bound.
var errBudget = errors.New("probe request budget spent")

// recorder is an http.RoundTripper that records every exchange and refuses requests
// beyond max, so that a probe cannot exceed its request bound whatever a check does.
type recorder struct {
	next http.RoundTripper
	max  int
	now  func() time.Time

	mu sync.Mutex
	ex []Exchange
}

// RoundTrip sends req through the next transport unless max exchanges were made.
func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	if len(r.ex) >= r.max {
		r.mu.Unlock()
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, fmt.Errorf("%w: %d requests made", errBudget, r.max)
	}
	i := len(r.ex)
	r.ex = append(r.ex, Exchange{Method: req.Method, URL: plainURL(req.URL), Sent: r.now()})
	r.mu.Unlock()

	resp, err := r.next.RoundTrip(req)

	r.mu.Lock()
	defer r.mu.Unlock()
	e := &r.ex[i]
	e.Received = r.now()
	e.Err = err
	if resp != nil {
		e.Status = resp.StatusCode
		e.Header = http.Header{}
		for _, k := range recordedHeaders {
			if v, ok := resp.Header[k]; ok {
				e.Header[k] = append([]string(nil), v...)
			}
		}
	}
	return resp, err
}

// count is the number of requests made so far.
func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ex)
}

// since returns copies of the exchanges made after the first n.
func (r *recorder) since(n int) []Exchange {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n >= len(r.ex) {
		return nil
	}
	return append([]Exchange(nil), r.ex[n:]...)
}

// all returns copies of every exchange so far.
func (r *recorder) all() []Exchange { return r.since(0) }

// plainURL prints u without user info, query or fragment.
func plainURL(u *url.URL) string {
	v := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}
	return v.String()
}

// originOf is origin of a raw URL; the raw text when it does not parse.
func originOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return provider.Origin(u)
}

// last is the final exchange of a call (the one after any redirects); ok is false when
// the call made none.
func last(ex []Exchange) (Exchange, bool) {
	if len(ex) == 0 {
		return Exchange{}, false
	}
	return ex[len(ex)-1], true
}

// nextLinks returns the targets of every Link rel="next" of the exchange, resolved
// against its URL (RFC 8288: relation types compare case-insensitively).
func (e Exchange) nextLinks() []*url.URL {
	base, err := url.Parse(e.URL)
	if err != nil {
		return nil
	}
	var out []*url.URL
	for _, v := range e.Header.Values("Link") {
		for _, l := range splitLinks(v) {
			if !l.has("next") {
				continue
			}
			if u, err := base.Parse(l.target); err == nil {
				out = append(out, u)
			}
		}
	}
	return out
}

// link is one element of a Link header value.
type link struct {
	target string
	params string // everything after the target, up to the next link
}

// has reports whether the link's rel parameter lists rel.
func (l link) has(rel string) bool {
	for _, p := range strings.Split(l.params, ";") {
		name, val, found := strings.Cut(strings.TrimSpace(p), "=")
		if !found || !strings.EqualFold(strings.TrimSpace(name), "rel") {
			continue
		}
		for _, r := range strings.Fields(strings.Trim(strings.TrimSpace(val), `"`)) {
			if strings.EqualFold(r, rel) {
				return true
			}
		}
		return false
	}
	return false
}

// splitLinks splits a Link header value into its links: `<uri>; params, <uri>; …`.
// Commas inside <…> belong to the target. A value it cannot read yields the links
// before the damage.
func splitLinks(v string) []link {
	var out []link
	for {
		start := strings.IndexByte(v, '<')
		if start < 0 {
			return out
		}
		end := strings.IndexByte(v[start:], '>')
		if end < 0 {
			return out
		}
		l := link{target: strings.TrimSpace(v[start+1 : start+end])}
		v = v[start+end+1:]
		if next := strings.IndexByte(v, '<'); next >= 0 {
			l.params, v = v[:next], v[next:]
		} else {
			l.params, v = v, ""
		}
		l.params = strings.TrimRight(strings.TrimSpace(l.params), ",")
		out = append(out, l)
	}
}
