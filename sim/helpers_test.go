package sim

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testClock is a settable simulated clock.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

var testStart = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

// harness is a simulator behind a real HTTP server, on a settable clock.
type harness struct {
	t     *testing.T
	sim   *Sim
	srv   *httptest.Server
	clock *testClock
	nonce atomic.Int64
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	clock := &testClock{t: testStart}
	if cfg.Now == nil {
		cfg.Now = clock.Now
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return &harness{t: t, sim: s, srv: srv, clock: clock}
}

// advance moves the clock by d and steps the simulator to it.
func (h *harness) advance(d time.Duration) {
	now := h.clock.Now().Add(d)
	h.clock.Set(now)
	h.sim.Step(now)
}

// response is one HTTP answer, read fully.
type response struct {
	code   int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("body %s: %v", r.body, err)
	}
}

// do sends a request with the given Authorization header ("" for none) to a path or
// an absolute URL.
func (h *harness) do(method, target, auth string, body io.Reader) response {
	h.t.Helper()
	if !strings.HasPrefix(target, "http") {
		target = h.srv.URL + target
	}
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		h.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatalf("%s %s: read body: %v", method, target, err)
	}
	return response{code: resp.StatusCode, header: resp.Header, body: b}
}

func (h *harness) get(target, auth string) response {
	h.t.Helper()
	return h.do(http.MethodGet, target, auth, nil)
}

func bearer(key string) string { return "Bearer " + key }

func basic(user string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"))
}

// hawk returns a Coindirect Authorization header for a GET of target (a path with an
// optional query) signed at the simulated clock with a fresh nonce.
func (h *harness) hawk(target string, withQuery bool) string {
	u, err := url.Parse(h.srv.URL)
	if err != nil {
		h.t.Fatal(err)
	}
	host, port, _ := strings.Cut(u.Host, ":")
	resource := target
	if !withQuery {
		resource, _, _ = strings.Cut(target, "?")
	}
	ts := strconv.FormatInt(h.clock.Now().Unix(), 10)
	nonce := "n" + strconv.FormatInt(h.nonce.Add(1), 36)
	return hawkHeader(DefaultCoindirectHawkID, DefaultCoindirectHawkKey, ts, nonce, "GET", resource, host, port)
}

func hawkHeader(id, key, ts, nonce, method, resource, host, port string) string {
	mac := hawkMAC(key, ts, nonce, method, resource, host, port, "", "")
	return `Hawk id="` + id + `", ts="` + ts + `", nonce="` + nonce + `", mac="` + mac + `"`
}

// coindirectGet sends a Hawk-signed GET, with the query in the mac.
func (h *harness) coindirectGet(target string) response {
	h.t.Helper()
	return h.get(target, h.hawk(target, true))
}

// ids returns the ids of a provider's items, newest first, as the store orders them.
func (h *harness) ids(provider string) []string {
	h.sim.mu.RLock()
	defer h.sim.mu.RUnlock()
	p := h.sim.byID[provider]
	out := make([]string, len(p.st.items))
	for i := range p.st.items {
		out[len(out)-1-i] = p.itemID(i)
	}
	return out
}

// created returns an item's creation time in unix ms.
func (h *harness) created(provider, id string) int64 {
	h.t.Helper()
	h.sim.mu.RLock()
	defer h.sim.mu.RUnlock()
	p := h.sim.byID[provider]
	seq, ok := p.lookup(id)
	if !ok {
		h.t.Fatalf("%s: no item %s", provider, id)
	}
	return p.st.items[seq].created
}

// linkRels parses a Link header into rel -> URL.
func linkRels(t *testing.T, h string) map[string]string {
	t.Helper()
	out := map[string]string{}
	if h == "" {
		return out
	}
	for _, part := range strings.Split(h, ", <") {
		part = strings.TrimPrefix(part, "<")
		target, params, ok := strings.Cut(part, ">; ")
		if !ok || !strings.HasPrefix(params, `rel="`) {
			t.Fatalf("Link part %q is malformed", part)
		}
		out[strings.TrimSuffix(strings.TrimPrefix(params, `rel="`), `"`)] = target
	}
	return out
}
