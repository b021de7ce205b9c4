package sim

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
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
