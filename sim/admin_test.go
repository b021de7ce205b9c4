package sim

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"
)

func post(h *harness, path, body string) response {
	h.t.Helper()
	return h.do(http.MethodPost, path, "", strings.NewReader(body))
}

func TestAdminCreateAndForceStatus(t *testing.T) {
	h := newHarness(t, Config{Seed: 41, History: 10})
	r := post(h, "/_sim/items/circle_cpn_payments", `{"status":"CRYPTO_FUNDS_PENDING"}`)
	var created cpnPayment
	r.json(t, &created)
	if r.code != http.StatusCreated || created.Status != "CRYPTO_FUNDS_PENDING" {
		t.Fatalf("create: %d %s", r.code, r.body)
	}
	if ids := h.ids(ProviderCPN); ids[0] != created.ID {
		t.Fatalf("the created payment is not the newest")
	}
	p, _ := circleCases[0].page(h, "/v1/cpn/payments?pageSize=1")
	if p.Data[0].ID != created.ID {
		t.Fatal("the created payment is not on the first page")
	}

	r = post(h, "/_sim/items/circle_cpn_payments/"+created.ID+"/status", `{"status":"FAILED"}`)
	var forced cpnPayment
	r.json(t, &forced)
	if r.code != 200 || forced.Status != "FAILED" || forced.FailureReason == "" {
		t.Fatalf("force: %d %s", r.code, r.body)
	}
	got := h.get("/v1/cpn/payments/"+created.ID, bearer(DefaultCircleCPNKey))
	if !bytes.Contains(got.body, []byte(`"status":"FAILED"`)) {
		t.Fatalf("GET after force: %s", got.body)
	}

	truth := h.sim.Truth()
	if len(truth) != 2 {
		t.Fatalf("truth %+v, want creation and forced change", truth)
	}
	for i, want := range [][2]string{{"", "CRYPTO_FUNDS_PENDING"}, {"CRYPTO_FUNDS_PENDING", "FAILED"}} {
		tr := truth[i]
		if tr.Provider != ProviderCPN || tr.Kind != "payment" || tr.ID != created.ID || tr.From != want[0] || tr.To != want[1] ||
			!tr.At.Equal(testStart) {
			t.Errorf("truth[%d] = %+v, want %v at %v", i, tr, want, testStart)
		}
	}

	// The truth endpoint streams JSON lines after a sequence number.
	r = h.get("/_sim/truth?after=1", "")
	if r.code != 200 || r.header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("truth: %d %s", r.code, r.header)
	}
	var lines []Transition
	sc := bufio.NewScanner(bytes.NewReader(r.body))
	for sc.Scan() {
		var tr Transition
		if err := json.Unmarshal(sc.Bytes(), &tr); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, tr)
	}
	if len(lines) != 1 || lines[0] != truth[1] {
		t.Errorf("truth?after=1 = %+v", lines)
	}

	// The engine goes on from a forced status (a FAILED payment gets no further status).
	h.advance(time.Hour)
	for _, tr := range h.sim.Truth()[2:] {
		if tr.ID == created.ID {
			t.Errorf("forced FAILED payment changed again: %+v", tr)
		}
	}
}

func TestAdminErrors(t *testing.T) {
	h := newHarness(t, Config{Seed: 42, History: 3, Providers: []string{ProviderStripe}})
	id := h.ids(ProviderStripe)[0]
	for _, c := range []struct {
		path, body string
		code       int
	}{
		{"/_sim/items/paypal", "", 404},
		{"/_sim/items/circle_cpn_payments", "", 404}, // not simulated here
		{"/_sim/items/stripe_crypto_onramp_sessions", `{"status":"done"}`, 400},
		{"/_sim/items/stripe_crypto_onramp_sessions", `{"state":"rejected"}`, 400},
		{"/_sim/items/stripe_crypto_onramp_sessions/cos_nope/status", `{"status":"rejected"}`, 404},
		{"/_sim/items/stripe_crypto_onramp_sessions/" + id + "/status", `{}`, 400},
		{"/_sim/faults/stripe_crypto_onramp_sessions", `{"error_rate":2}`, 400},
		{"/_sim/faults/stripe_crypto_onramp_sessions", `{"latency":"x"}`, 400},
	} {
		if r := post(h, c.path, c.body); r.code != c.code || !bytes.Contains(r.body, []byte(`"error"`)) {
			t.Errorf("POST %s %s: %d %s, want %d", c.path, c.body, r.code, r.body, c.code)
		}
	}
	if r := h.get("/_sim/truth?after=x", ""); r.code != 400 {
		t.Errorf("truth?after=x: %d", r.code)
	}
}

func TestAdminFaults(t *testing.T) {
	h := newHarness(t, Config{Seed: 43, History: 3, Providers: []string{ProviderRamp}})
	r := post(h, "/_sim/faults/circle_ramp_sessions", `{"error_rate":1}`)
	if r.code != 200 {
		t.Fatalf("set faults: %d %s", r.code, r.body)
	}
	if r := h.get("/_sim/faults/circle_ramp_sessions", ""); string(r.body) != `{"error_rate":1,"rate_limit_rate":0,"rate_limit_burst":0,"timeout_rate":0,"malformed_rate":0,"truncate_rate":0}` {
		t.Errorf("get faults: %s", r.body)
	}
	if r := h.get("/v1/w3s/ramp/sessions", bearer(DefaultCircleRampKey)); r.code != 500 {
		t.Errorf("with error_rate 1: %d", r.code)
	}
	post(h, "/_sim/faults/circle_ramp_sessions", `{}`)
	if r := h.get("/v1/w3s/ramp/sessions", bearer(DefaultCircleRampKey)); r.code != 200 {
		t.Errorf("after clearing: %d", r.code)
	}
}

// addrHandler captures the "addr" attribute of log records.
type addrHandler struct {
	slog.Handler
	addr chan string
}

func (addrHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h addrHandler) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "addr" {
			h.addr <- a.Value.String()
		}
		return true
	})
	return nil
}

func TestListenAndServe(t *testing.T) {
	addrs := make(chan string, 1)
	log := slog.New(addrHandler{Handler: slog.DiscardHandler, addr: addrs})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- ListenAndServe(ctx, "127.0.0.1:0", Config{Seed: 1, Rate: 5, History: 10}, log)
	}()
	var addr string
	select {
	case addr = <-addrs:
	case err := <-done:
		t.Fatalf("ListenAndServe returned %v before listening", err)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/v1/w3s/ramp/sessions", nil)
	req.Header.Set("Authorization", bearer(DefaultCircleRampKey))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte(`"rampType"`)) {
		t.Fatalf("GET: %d %s", resp.StatusCode, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("ListenAndServe after cancel: %v", err)
	}
	if _, err := http.Get("http://" + addr + "/v1/w3s/ramp/sessions"); err == nil {
		t.Error("server still answers after ListenAndServe returned")
	}
	if err := ListenAndServe(t.Context(), "127.0.0.1:0", Config{Rate: -1}, nil); err == nil {
		t.Error("a bad config was served")
	}
}
