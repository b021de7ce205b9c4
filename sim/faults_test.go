package sim

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// providerRequest is an authenticated list request for each provider.
func providerRequest(h *harness, provider string) (target, auth string) {
	switch provider {
	case ProviderCPN:
		return "/v1/cpn/payments", bearer(DefaultCircleCPNKey)
	case ProviderRamp:
		return "/v1/w3s/ramp/sessions", bearer(DefaultCircleRampKey)
	case ProviderSettlements:
		return "/v1/exchange/trades/settlements", bearer(DefaultCircleSettlementsKey)
	case ProviderStripe:
		return "/v1/crypto/onramp_sessions", basic(DefaultStripeSecretKey)
	}
	return cdList, h.hawk(cdList, true)
}

func TestServerErrorAndRateLimitShapes(t *testing.T) {
	want500 := map[string]string{
		ProviderCPN:         `{"code":-1,"message":"Something went wrong."}`,
		ProviderRamp:        `{"code":-1,"message":"Something went wrong."}`,
		ProviderSettlements: `{"code":-1,"message":"Something went wrong."}`,
		ProviderStripe:      `{"error":{"type":"api_error","message":"Sorry, something went wrong on Stripe's end. Please retry the request."}}`,
		ProviderCoindirect:  `{"errorList":[{"parameter":null,"message":"Internal server error","code":"internalError"}]}`,
	}
	want429 := map[string]string{
		ProviderCPN:         `{"code":429,"message":"Too many requests."}`,
		ProviderRamp:        `{"code":429,"message":"Too many requests."}`,
		ProviderSettlements: `{"code":429,"message":"Too many requests."}`,
		ProviderStripe:      `"type":"invalid_request_error","code":"rate_limit"`,
		ProviderCoindirect:  `{"errorList":[{"parameter":null,"message":"Too many requests","code":"tooManyRequests"}]}`,
	}
	for _, id := range ProviderIDs() {
		t.Run(id, func(t *testing.T) {
			h := newHarness(t, Config{Seed: 31, History: 3, Providers: []string{id}, Faults: map[string]Faults{id: {ErrorRate: 1}}})
			target, auth := providerRequest(h, id)
			r := h.get(target, auth)
			if r.code != 500 || string(r.body) != want500[id] {
				t.Errorf("500: %d %s", r.code, r.body)
			}
			if err := h.sim.SetFaults(id, Faults{RateLimitRate: 1, RetryAfter: 1500 * time.Millisecond}); err != nil {
				t.Fatal(err)
			}
			target, auth = providerRequest(h, id)
			r = h.get(target, auth)
			if r.code != 429 || !strings.Contains(string(r.body), want429[id]) || r.header.Get("Retry-After") != "2" {
				t.Errorf("429: %d Retry-After %q %s", r.code, r.header.Get("Retry-After"), r.body)
			}
			if err := h.sim.SetFaults(id, Faults{}); err != nil {
				t.Fatal(err)
			}
			target, auth = providerRequest(h, id)
			if r := h.get(target, auth); r.code != 200 {
				t.Errorf("after clearing faults: %d %s", r.code, r.body)
			}
		})
	}
}

func TestRateLimitBurstLength(t *testing.T) {
	fs := faultState{rng: rand.New(rand.NewPCG(1, 2))}
	fs.set(Faults{RateLimitRate: 1, RateLimitBurst: 3})
	if _, fa, _ := fs.decide(); fa != fateRateLimited {
		t.Fatal("burst did not start")
	}
	fs.f.RateLimitRate = 0 // no new bursts; the one started goes on
	for i := range 2 {
		if _, fa, _ := fs.decide(); fa != fateRateLimited {
			t.Fatalf("request %d of the burst was not limited", i+2)
		}
	}
	if _, fa, _ := fs.decide(); fa != fateNormal {
		t.Fatal("the burst outlasted 3 requests")
	}
}

func TestLatencyAndHangs(t *testing.T) {
	h := newHarness(t, Config{Seed: 32, History: 3, Providers: []string{ProviderCPN},
		Faults: map[string]Faults{ProviderCPN: {Latency: 80 * time.Millisecond}}})
	start := time.Now()
	if r := h.get("/v1/cpn/payments", bearer(DefaultCircleCPNKey)); r.code != 200 {
		t.Fatalf("%d", r.code)
	}
	if d := time.Since(start); d < 80*time.Millisecond {
		t.Errorf("answered in %v despite 80ms latency", d)
	}

	// A hang ends when the client gives up...
	if err := h.sim.SetFaults(ProviderCPN, Faults{TimeoutRate: 1, MaxHang: time.Minute}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.srv.URL+"/v1/cpn/payments", nil)
	req.Header.Set("Authorization", bearer(DefaultCircleCPNKey))
	_, err := h.srv.Client().Do(req)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("hanging request: %v, want the client's deadline", err)
	}
	// ...or after MaxHang, with a 504.
	if err := h.sim.SetFaults(ProviderCPN, Faults{TimeoutRate: 1, MaxHang: 50 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	r := h.get("/v1/cpn/payments", bearer(DefaultCircleCPNKey))
	if r.code != http.StatusGatewayTimeout || string(r.body) != `{"code":-1,"message":"Something went wrong."}` {
		t.Errorf("bounded hang: %d %s", r.code, r.body)
	}
}

func TestMalformedAndTruncatedBodies(t *testing.T) {
	h := newHarness(t, Config{Seed: 33, History: 30, Providers: []string{ProviderStripe},
		Faults: map[string]Faults{ProviderStripe: {MalformedRate: 1}}})
	r := h.get("/v1/crypto/onramp_sessions", basic(DefaultStripeSecretKey))
	if r.code != 200 || json.Valid(r.body) || !strings.HasPrefix(string(r.body), `{<"data"`) {
		t.Errorf("malformed: %d %.60s", r.code, r.body)
	}
	if r := h.get("/v1/crypto/onramp_sessions", bearer("sk_test_wrong")); r.code != 401 {
		t.Errorf("a malformed-body fault answered a bad key with %d", r.code)
	}

	if err := h.sim.SetFaults(ProviderStripe, Faults{TruncateRate: 1}); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/v1/crypto/onramp_sessions", nil)
	req.Header.Set("Authorization", basic(DefaultStripeSecretKey))
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated body read: %v", err)
	}
	if int64(len(body)) >= resp.ContentLength || len(body) == 0 {
		t.Errorf("read %d of %d announced bytes", len(body), resp.ContentLength)
	}
}

func TestFaultsJSON(t *testing.T) {
	in := `{"error_rate":0.1,"rate_limit_rate":0.05,"rate_limit_burst":4,"retry_after":"2s","latency":"100ms",` +
		`"latency_jitter":"50ms","timeout_rate":0.01,"max_hang":"30s","malformed_rate":0.02,"truncate_rate":0.03}`
	var f Faults
	if err := json.Unmarshal([]byte(in), &f); err != nil {
		t.Fatal(err)
	}
	want := Faults{ErrorRate: 0.1, RateLimitRate: 0.05, RateLimitBurst: 4, RetryAfter: 2 * time.Second, Latency: 100 * time.Millisecond,
		LatencyJitter: 50 * time.Millisecond, TimeoutRate: 0.01, MaxHang: 30 * time.Second, MalformedRate: 0.02, TruncateRate: 0.03}
	if f != want {
		t.Fatalf("decoded %+v", f)
	}
	out, err := json.Marshal(f)
	if err != nil || string(out) != in {
		t.Fatalf("encoded %s, %v", out, err)
	}
	for _, bad := range []string{`{"errors":1}`, `{"latency":"soon"}`} {
		if err := json.Unmarshal([]byte(bad), &f); err == nil {
			t.Errorf("%s decoded", bad)
		}
	}
	if err := (Faults{ErrorRate: 1.5, Latency: -1}).validate(); err == nil ||
		!strings.Contains(err.Error(), "error_rate") || !strings.Contains(err.Error(), "latency") {
		t.Errorf("validate: %v", err)
	}
}

// lateCase is how a test lists a provider's items and reads one by id.
type lateCase struct {
	provider string
	list     string
	get      func(id string) string
}

var lateCases = []lateCase{
	{ProviderCPN, "/v1/cpn/payments?pageSize=200", func(id string) string { return "/v1/cpn/payments/" + id }},
	{ProviderRamp, "/v1/w3s/ramp/sessions?pageSize=50", func(id string) string { return "/v1/w3s/ramp/sessions/" + id }},
	{ProviderSettlements, "/v1/exchange/trades/settlements?pageSize=200", func(id string) string { return "/v1/exchange/trades/settlements/" + id }},
	{ProviderStripe, "/v1/crypto/onramp_sessions?limit=100", func(id string) string { return "/v1/crypto/onramp_sessions/" + id }},
	{ProviderCoindirect, cdList + "&max=1000", func(id string) string { return "/api/v1/pay/" + id + "/summary" }},
}

// authGet reads target from a provider with its credentials.
func authGet(h *harness, provider, target string) response {
	h.t.Helper()
	if provider == ProviderCoindirect {
		return h.coindirectGet(target)
	}
	_, auth := providerRequest(h, provider)
	return h.get(target, auth)
}

// createItem creates an item through the admin API and returns its id.
func createItem(h *harness, provider string) string {
	h.t.Helper()
	r := post(h, "/_sim/items/"+provider, "")
	var obj struct{ ID, UUID string }
	r.json(h.t, &obj)
	if r.code != http.StatusCreated {
		h.t.Fatalf("create %s: %d %s", provider, r.code, r.body)
	}
	return obj.ID + obj.UUID
}

func TestLateItemsStayOutOfListsUntilListable(t *testing.T) {
	for _, c := range lateCases {
		t.Run(c.provider, func(t *testing.T) {
			h := newHarness(t, Config{Seed: 34, History: 5, Providers: []string{c.provider},
				Faults: map[string]Faults{c.provider: {LateRate: 1, LateBy: 10 * time.Second}}})
			id := createItem(h, c.provider)
			if r := authGet(h, c.provider, c.list); r.code != 200 || strings.Contains(string(r.body), id) {
				t.Fatalf("list at creation: %d, holds the late item: %v", r.code, strings.Contains(string(r.body), id))
			}
			if r := authGet(h, c.provider, c.get(id)); r.code != 200 {
				t.Fatalf("read by id at creation: %d %s", r.code, r.body)
			}
			if got := h.sim.FaultCounts()[c.provider].LateItems; got != 1 {
				t.Errorf("late items counted: %d, want 1", got)
			}
			h.advance(10 * time.Second)
			if r := authGet(h, c.provider, c.list); r.code != 200 || !strings.Contains(string(r.body), id) {
				t.Fatalf("list LateBy after creation: %d, lacks the late item", r.code)
			}
		})
	}
}

func TestLateRateIsAShareOfItems(t *testing.T) {
	h := newHarness(t, Config{Seed: 35, Providers: []string{ProviderCPN},
		Faults: map[string]Faults{ProviderCPN: {LateRate: 0.5, LateBy: time.Minute}}})
	ids := make([]string, 100)
	for i := range ids {
		ids[i] = createItem(h, ProviderCPN)
	}
	r := authGet(h, ProviderCPN, "/v1/cpn/payments?pageSize=200")
	hidden := 0
	for _, id := range ids {
		if !strings.Contains(string(r.body), id) {
			hidden++
		}
	}
	if hidden < 30 || hidden > 70 || h.sim.FaultCounts()[ProviderCPN].LateItems != uint64(hidden) {
		t.Errorf("%d of 100 items hidden, %d counted; want about half, each counted once",
			hidden, h.sim.FaultCounts()[ProviderCPN].LateItems)
	}
	// Listing again hides the same items and counts none twice.
	if again := authGet(h, ProviderCPN, "/v1/cpn/payments?pageSize=200"); string(again.body) != string(r.body) ||
		h.sim.FaultCounts()[ProviderCPN].LateItems != uint64(hidden) {
		t.Error("a second list at the same time differs or counted again")
	}
	h.advance(time.Minute)
	r = authGet(h, ProviderCPN, "/v1/cpn/payments?pageSize=200")
	for _, id := range ids {
		if !strings.Contains(string(r.body), id) {
			t.Fatalf("item %s still unlisted LateBy after its creation", id)
		}
	}
}

func TestCoindirectPageDriftAddsPaymentsDuringAWalk(t *testing.T) {
	h := newHarness(t, Config{Seed: 36, History: 40, HistoryTruth: true, Providers: []string{ProviderCoindirect},
		Faults: map[string]Faults{ProviderCoindirect: {PageDriftRate: 1, PageDriftMax: 2}}})
	before := h.ids(ProviderCoindirect)
	var first []cdPayment
	h.coindirectGet(cdList+"&offset=0&max=5").json(t, &first)
	if len(first) != 5 || first[0].UUID != before[0] || len(h.ids(ProviderCoindirect)) != 40 {
		t.Fatalf("offset 0 drifted: %d items, first %s", len(first), first[0].UUID)
	}
	// A walk of 5-item pages: every page past the first is preceded by 1 or 2 new
	// payments, which push the older ones down; the pages repeat items, skip none.
	seen := map[string]bool{}
	for _, p := range first {
		seen[p.UUID] = true
	}
	repeats := 0
	for offset := 5; ; offset += 5 {
		var page []cdPayment
		h.coindirectGet(cdList+"&max=5&offset="+strconv.Itoa(offset)).json(t, &page)
		for _, p := range page {
			if seen[p.UUID] {
				repeats++
			}
			seen[p.UUID] = true
		}
		if len(page) < 5 {
			break
		}
	}
	for _, id := range before {
		if !seen[id] {
			t.Fatalf("the walk skipped payment %s", id)
		}
	}
	drifts := h.sim.FaultCounts()[ProviderCoindirect].PageDrifts
	added := len(h.ids(ProviderCoindirect)) - 40
	if drifts == 0 || added < int(drifts) || added > 2*int(drifts) || repeats != added {
		t.Errorf("%d drifts added %d payments and the walk saw %d repeats; want 1-2 payments a drift, one repeat each", drifts, added, repeats)
	}
	created := 0
	for _, tr := range h.sim.Truth() {
		if tr.Kind == "payment" && tr.From == "" {
			created++
		}
	}
	if created != 40+added {
		t.Errorf("the truth records %d payments, want %d", created, 40+added)
	}
}

func TestFaultCountsByKind(t *testing.T) {
	h := newHarness(t, Config{Seed: 37, History: 5, Providers: []string{ProviderStripe},
		Faults: map[string]Faults{ProviderStripe: {ErrorRate: 1}}})
	list := "/v1/crypto/onramp_sessions"
	for range 2 {
		authGet(h, ProviderStripe, list)
	}
	for _, f := range []Faults{{RateLimitRate: 1, RateLimitBurst: 3}, {MalformedRate: 1}, {TimeoutRate: 1, MaxHang: time.Millisecond}} {
		if err := h.sim.SetFaults(ProviderStripe, f); err != nil {
			t.Fatal(err)
		}
		authGet(h, ProviderStripe, list)
	}
	if err := h.sim.SetFaults(ProviderStripe, Faults{TruncateRate: 1}); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, h.srv.URL+list, nil)
	req.Header.Set("Authorization", basic(DefaultStripeSecretKey))
	if resp, err := h.srv.Client().Do(req); err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	want := FaultCounts{ServerErrors: 2, RateLimited: 1, Hangs: 1, Malformed: 1, Truncated: 1}
	if got := h.sim.FaultCounts()[ProviderStripe]; got != want || got.Total() != 6 {
		t.Errorf("counts %+v (total %d), want %+v", got, got.Total(), want)
	}
	var viaAdmin FaultCounts
	r := h.get("/_sim/faults/"+ProviderStripe+"/counts", "")
	r.json(t, &viaAdmin)
	if r.code != 200 || viaAdmin != want {
		t.Errorf("admin counts: %d %s", r.code, r.body)
	}
}

func TestListFaultsJSON(t *testing.T) {
	in := `{"error_rate":0,"rate_limit_rate":0,"rate_limit_burst":0,"timeout_rate":0,"malformed_rate":0,"truncate_rate":0,` +
		`"late_rate":0.1,"late_by":"20s","page_drift_rate":0.2,"page_drift_max":4}`
	var f Faults
	if err := json.Unmarshal([]byte(in), &f); err != nil {
		t.Fatal(err)
	}
	if want := (Faults{LateRate: 0.1, LateBy: 20 * time.Second, PageDriftRate: 0.2, PageDriftMax: 4}); f != want {
		t.Fatalf("decoded %+v", f)
	}
	if out, err := json.Marshal(f); err != nil || string(out) != in {
		t.Fatalf("encoded %s, %v", out, err)
	}
	err := (Faults{LateRate: 2, LateBy: -time.Second, PageDriftRate: -1, PageDriftMax: -1}).validate()
	for _, key := range []string{"late_rate", "late_by", "page_drift_rate", "page_drift_max"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("validate does not name %s: %v", key, err)
		}
	}
}
