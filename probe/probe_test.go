package probe

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/poller/provider"
	"github.com/payments-watcher/watcher/sim"
)

// counting counts the API requests a handler serves, by provider path prefix.
type counting struct {
	next http.Handler
	mu   sync.Mutex
	n    map[string]int
}

func (c *counting) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	c.n[apiOf(r.URL.Path)]++
	c.mu.Unlock()
	c.next.ServeHTTP(w, r)
}

func (c *counting) count(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[id]
}

// apiPaths maps each provider id to the path prefix of its API in the simulator.
var apiPaths = map[string]string{
	sim.ProviderCPN:         "/v1/cpn/payments",
	sim.ProviderRamp:        "/v1/w3s/ramp/sessions",
	sim.ProviderSettlements: "/v1/exchange/trades/settlements",
	sim.ProviderStripe:      "/v1/crypto/onramp_sessions",
	sim.ProviderCoindirect:  "/api/v1/pay/",
}

func apiOf(path string) string {
	for id, p := range apiPaths {
		if strings.HasPrefix(path, p) {
			return id
		}
	}
	return path
}

// sourceNames are the names the tests give each provider's source.
var sourceNames = map[string]string{
	sim.ProviderCPN:         "cpn",
	sim.ProviderRamp:        "ramp",
	sim.ProviderSettlements: "settlements",
	sim.ProviderStripe:      "onramp",
	sim.ProviderCoindirect:  "coindirect",
}

// newSim serves a simulator of 40 history items per provider, 30% of them open, with
// cfg's other settings.
func newSim(t *testing.T, cfg sim.Config) (*httptest.Server, *counting) {
	t.Helper()
	cfg.Seed, cfg.History, cfg.HistorySpan, cfg.OpenShare = 7, 40, 72*time.Hour, 0.3
	s, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := &counting{next: s.Handler(), n: map[string]int{}}
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	return srv, c
}

// simTarget is the source of provider id on the simulator at baseURL, with the
// simulator's credentials and pages of 5.
func simTarget(id, baseURL string) Target {
	set := provider.Settings{Name: sourceNames[id], BaseURL: baseURL, PageSize: 5}
	for _, s := range sim.Sources() {
		if s.Provider == id {
			set.Values = s.Keys
		}
	}
	return Target{
		Name: set.Name, ProviderID: id, Provider: poller.Providers[id], Settings: set,
		Client:         provider.NewClient(provider.ClientOptions{BaseURL: baseURL, UserAgent: "watcher/probe-test"}),
		RequestTimeout: 5 * time.Second,
	}
}

// wantChecks are the checks every source reports, in order; Coindirect adds sign_query.
var wantChecks = []string{CheckCredentials, CheckOrder, CheckPageSize, CheckDateFilter, CheckPaging, CheckGet, CheckStatuses, CheckClock}

func checkOf(r Report, name string) Check {
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	return Check{Name: name, Result: "missing"}
}

func logReport(t *testing.T, r Report) {
	t.Helper()
	for _, c := range r.Checks {
		t.Logf("%s  %s  %s  %s", c.Source, c.Name, c.Result, c.Detail)
	}
	t.Logf("%s: %d requests", r.Source, r.Requests)
}

// probeWith probes provider id on a fresh simulator of cfg, with the setting key
// changed to value.
func probeWith(t *testing.T, cfg sim.Config, id, key, value string) Report {
	t.Helper()
	srv, _ := newSim(t, cfg)
	tg := simTarget(id, srv.URL)
	tg.Settings = tg.Settings.With(key, value)
	r := Run(context.Background(), tg)
	logReport(t, r)
	return r
}

func TestProbeWellBehavedSimulator(t *testing.T) {
	srv, served := newSim(t, sim.Config{})
	for _, id := range sim.ProviderIDs() {
		t.Run(id, func(t *testing.T) {
			r := Run(context.Background(), simTarget(id, srv.URL))
			logReport(t, r)
			want := wantChecks
			if id == sim.ProviderCoindirect {
				want = append(want[:len(want):len(want)], CheckSignQuery)
			}
			if len(r.Checks) != len(want) {
				t.Fatalf("%d checks, want %d (%v)", len(r.Checks), len(want), want)
			}
			for i, c := range r.Checks {
				if c.Name != want[i] || c.Source != sourceNames[id] {
					t.Errorf("check %d is %s of %s, want %s of %s", i, c.Name, c.Source, want[i], sourceNames[id])
				}
				if c.Result != OK {
					t.Errorf("%s: %s: %s, want ok", c.Name, c.Result, c.Detail)
				}
			}
			if r.Failed() {
				t.Error("Failed() with every check ok")
			}
			if r.Requests > MaxRequests || r.Requests != served.count(id) {
				t.Errorf("%d requests counted, %d served; want them equal and at most %d", r.Requests, served.count(id), MaxRequests)
			}
		})
	}
}

func TestProbeWrongCredentials(t *testing.T) {
	r := probeWith(t, sim.Config{}, sim.ProviderCPN, "api_key", "TEST_API_KEY:wrong:key")
	c := checkOf(r, CheckCredentials)
	if c.Result != Fail || !strings.Contains(c.Detail, "401") || !strings.Contains(c.Detail, "api_key") ||
		!strings.Contains(c.Detail, "Malformed authorization") {
		t.Errorf("credentials: %s %s; want a fail naming the 401, the provider's message and api_key", c.Result, c.Detail)
	}
	for _, name := range []string{CheckOrder, CheckPageSize, CheckDateFilter, CheckPaging, CheckGet, CheckStatuses} {
		if c := checkOf(r, name); c.Result != Warn || !strings.Contains(c.Detail, "skipped") {
			t.Errorf("%s: %s %s; want a warn saying it was skipped", name, c.Result, c.Detail)
		}
	}
	if c := checkOf(r, CheckClock); c.Result != OK {
		t.Errorf("clock: %s %s; a refused answer still has a Date", c.Result, c.Detail)
	}
	if r.Requests != 1 {
		t.Errorf("%d requests after a refused first page, want 1", r.Requests)
	}
}

func TestProbeHawkKeyNeitherSigning(t *testing.T) {
	r := probeWith(t, sim.Config{}, sim.ProviderCoindirect, "hawk_key", "not-the-key")
	if c := checkOf(r, CheckSignQuery); c.Result != Fail || !strings.Contains(c.Detail, "neither") {
		t.Errorf("sign_query: %s %s; want a fail saying neither value is accepted", c.Result, c.Detail)
	}
	if c := checkOf(r, CheckCredentials); c.Result != Fail || !strings.Contains(c.Detail, "hawk_key") {
		t.Errorf("credentials: %s %s; want a fail naming hawk_key", c.Result, c.Detail)
	}
	if strings.Contains(strings.Join(details(r), "\n"), "not-the-key") {
		t.Error("the Hawk key appears in the report")
	}
}

func TestProbeSignQueryNotSigningTheQuery(t *testing.T) {
	r := probeWith(t, sim.Config{HawkQuery: sim.HawkQueryIncluded}, sim.ProviderCoindirect, "sign_query", "false")
	if c := checkOf(r, CheckSignQuery); c.Result != Fail || !strings.Contains(c.Detail, "set sign_query: true") {
		t.Errorf("sign_query: %s %s; want a fail naming true", c.Result, c.Detail)
	}
	for _, name := range wantChecks {
		if c := checkOf(r, name); c.Result != OK {
			t.Errorf("%s: %s %s; want ok once the accepted signing is found", name, c.Result, c.Detail)
		}
	}
}

func TestProbeRequestBudget(t *testing.T) {
	srv, served := newSim(t, sim.Config{})
	tg := simTarget(sim.ProviderCPN, srv.URL)
	s := newSession(tg)
	for range MaxRequests + 3 {
		s.list(context.Background(), s.src, provider.Request{})
	}
	if n := served.count(sim.ProviderCPN); n != MaxRequests {
		t.Errorf("%d requests reached the server, want the bound %d", n, MaxRequests)
	}
	if l := s.list(context.Background(), s.src, provider.Request{}); l.err == nil || !strings.Contains(l.err.Error(), "budget") {
		t.Errorf("a request beyond the bound: %v, want the budget error", l.err)
	}
}

func TestSplitLinks(t *testing.T) {
	v := `<https://a.example/x?a=1,2>; rel="first", <https://b.example/y?pageAfter=3>; rel="self next", <z>; rel=prev`
	e := Exchange{URL: "https://a.example/x", Header: http.Header{"Link": {v}}}
	got := e.nextLinks()
	if len(got) != 1 || got[0].String() != "https://b.example/y?pageAfter=3" {
		t.Errorf("next links %v", got)
	}
	if ls := splitLinks(v); len(ls) != 3 || ls[0].target != "https://a.example/x?a=1,2" || !ls[2].has("PREV") {
		t.Errorf("splitLinks: %+v", ls)
	}
}

func details(r Report) []string {
	var out []string
	for _, c := range r.Checks {
		out = append(out, c.Detail)
	}
	return out
}
