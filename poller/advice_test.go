package poller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/payments-watcher/watcher/internal/logtest"
	"github.com/payments-watcher/watcher/poller/provider"
)

func TestAdvise(t *testing.T) {
	wrap := func(se *provider.StatusError) error {
		return fmt.Errorf("discovery page 1: GET https://api.example.com/x: %w", se)
	}
	unauthorized := &provider.StatusError{Code: 401, Message: "code 401: Malformed authorization.", RequestID: "3f2c"}
	for _, tc := range []struct {
		name, provider string
		credentials    []string
		err            error
		msg, cause     string
	}{
		{name: "401", provider: "circle_cpn_payments", credentials: []string{"api_key"}, err: wrap(unauthorized),
			cause: "unauthorized",
			msg: "circle_cpn_payments refused the source's credentials (HTTP 401): check api_key, then restart watcher " +
				"(other sources keep running); the provider says: code 401: Malformed authorization. (request id 3f2c)"},
		{name: "401 hawk", provider: "coindirect_payments", credentials: []string{"hawk_id", "hawk_key", "merchant_id"},
			err: wrap(&provider.StatusError{Code: 401}), cause: "unauthorized",
			msg: "coindirect_payments refused the source's credentials (HTTP 401): check hawk_id and hawk_key, then restart watcher (other sources keep running)"},
		{name: "401 unknown provider", provider: "fake", err: wrap(&provider.StatusError{Code: 401}), cause: "unauthorized",
			msg: "fake refused the source's credentials (HTTP 401): check the source's credentials, then restart watcher (other sources keep running)"},
		{name: "403", provider: "stripe_crypto_onramp_sessions", credentials: []string{"api_key"}, cause: "forbidden",
			err: wrap(&provider.StatusError{Code: 403, Message: "invalid_request_error: This restricted key lacks the permission.", RequestID: "req_9"}),
			msg: "stripe_crypto_onramp_sessions accepted the source's credentials but forbade the request (HTTP 403): " +
				"likely the key or account lacks the permission or product this endpoint needs, " +
				"or this host's IP address is not on the provider's IP allowlist for the key; " +
				"the provider says: invalid_request_error: This restricted key lacks the permission. (request id req_9)"},
		{name: "403 circle allowlist", provider: "circle_ramp_sessions", credentials: []string{"api_key"}, cause: "forbidden",
			err: wrap(&provider.StatusError{Code: 403, Message: "code 3: Forbidden.", RequestID: "c0ffee"}),
			msg: "circle_ramp_sessions accepted the source's credentials but forbade the request (HTTP 403): " +
				"likely this host's IP address is not on the API key's IP allowlist (Circle code 3 FORBIDDEN); add it in the Circle console, " +
				"or the key or account lacks the permission or product this endpoint needs; " +
				"the provider says: code 3: Forbidden. (request id c0ffee)"},
		{name: "403 merchant", provider: "coindirect_payments", credentials: []string{"hawk_id", "hawk_key", "merchant_id"}, cause: "forbidden",
			err: wrap(&provider.StatusError{Code: 403, Message: "code forbidden: Access denied (parameter merchantId)"}),
			msg: "coindirect_payments accepted the source's credentials but forbade the request (HTTP 403): " +
				"likely the key or account lacks the permission or product this endpoint needs, " +
				"or this host's IP address is not on the provider's IP allowlist for the key, " +
				"or merchant_id is not the merchant of these credentials; " +
				"the provider says: code forbidden: Access denied (parameter merchantId)"},
		{name: "identified cause", provider: "coindirect_payments", credentials: []string{"hawk_id"}, cause: "clock_skew",
			err: fmt.Errorf("discovery page 1: %w", &provider.CauseError{Cause: "clock_skew", Advice: "clock skew: provider time is 93s ahead of this host",
				Err: wrap(&provider.StatusError{Code: 401, Message: "Stale timestamp", RequestID: "r1"})}),
			msg: "clock skew: provider time is 93s ahead of this host; the provider says: Stale timestamp (request id r1)"},
		{name: "server error", provider: "circle_cpn_payments", err: wrap(&provider.StatusError{Code: 500})},
		{name: "bad request", provider: "circle_cpn_payments", err: wrap(&provider.StatusError{Code: 400})},
		{name: "network", provider: "circle_cpn_payments", err: errors.New("dial tcp: connection refused")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg, cause := advise(tc.err, tc.provider, tc.credentials)
			if msg != tc.msg || cause != tc.cause {
				t.Errorf("advise = %q, %q\nwant        %q, %q", msg, cause, tc.msg, tc.cause)
			}
		})
	}
}

// TestIdentifiedCauseIsPermanent: a refusal an adapter identified is not retried
// within the cycle, whatever the status under it.
func TestIdentifiedCauseIsPermanent(t *testing.T) {
	src := &fakeSource{pageSize: 10}
	tp := newTestPoller(t, testConfig(), src)
	src.failNext(&provider.CauseError{Cause: "x", Advice: "x", Err: &provider.StatusError{Code: 503}})
	if err := tp.Poll(t.Context()); err == nil || src.pages.Load() != 1 {
		t.Fatalf("Poll = %v after %d requests, want the error after 1", err, src.pages.Load())
	}
}

// resultRecorder records Observer.Poll results and Anomaly calls.
type resultRecorder struct {
	nopObserver
	mu        sync.Mutex
	results   []string
	anomalies map[string]int
}

func (r *resultRecorder) Poll(source, result string, took time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.results = append(r.results, result)
}

func (r *resultRecorder) Anomaly(source, kind string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.anomalies == nil {
		r.anomalies = map[string]int{}
	}
	r.anomalies[kind]++
}

// levels summarises log lines as "LEVEL cause" (or "LEVEL msg" when there is no
// cause), for comparison.
func levels(lines []string) []string {
	var out []string
	for _, l := range lines {
		level := field(l, "level")
		if c := field(l, "cause"); c != "" {
			out = append(out, level+" "+c)
		} else {
			out = append(out, level+" "+field(l, "msg"))
		}
	}
	return out
}

// field reads key=value (quoted or not) from a text-handler line.
func field(line, key string) string {
	_, rest, ok := strings.Cut(line, " "+key+"=")
	if !ok {
		return ""
	}
	if strings.HasPrefix(rest, `"`) {
		end := strings.Index(rest[1:], `"`)
		return rest[1 : end+1]
	}
	v, _, _ := strings.Cut(rest, " ")
	return v
}

// TestFailureLoggedOncePerCause runs a source that fails cycle after cycle: each cause
// is logged at ERROR once, with its advice, then at DEBUG until the cause changes or a
// cycle succeeds; the poll results report every failed cycle.
func TestFailureLoggedOncePerCause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e401 := &provider.StatusError{Code: 401, Message: "code unauthorized: Bad mac", RequestID: "r401"}
		e403 := &provider.StatusError{Code: 403, Message: "code forbidden: Access denied"}
		src := &fakeSource{pageSize: 10}
		// One error a cycle; nil is a successful cycle.
		src.failNext(e401, e401, e401, nil, e401, e403, e403, errors.New("boom"), e403)
		cfg := testConfig()
		cfg.Provider = "coindirect_payments"
		tp := newTestPoller(t, cfg, src)
		var logs logtest.Buffer
		tp.log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		obs := &resultRecorder{}
		tp.Observe(obs)

		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- tp.Run(ctx) }()
		synctest.Wait()
		var got []string
		for src.pages.Load() < 10 { // the nine failures and one success
			time.Sleep(10 * time.Second)
			synctest.Wait()
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		lines := logs.Take()
		for _, l := range lines {
			if field(l, "cause") != "" || strings.Contains(l, "poll") {
				got = append(got, l)
			}
		}
		want := []string{
			"ERROR unauthorized", "DEBUG unauthorized", "DEBUG unauthorized",
			"INFO poll succeeded again",
			"ERROR unauthorized",
			"ERROR forbidden", "DEBUG forbidden",
			"WARN poll failed; state unchanged for the failed page, retrying next interval",
			"ERROR forbidden",
			"INFO poll succeeded again",
		}
		if s := levels(got); strings.Join(s, "\n") != strings.Join(want, "\n") {
			t.Errorf("logged:\n%s\nwant:\n%s\n\nlines:\n%s", strings.Join(s, "\n"), strings.Join(want, "\n"), strings.Join(got, "\n"))
		}
		if first := got[0]; !strings.Contains(first, "check hawk_id and hawk_key") || !strings.Contains(first, "Bad mac (request id r401)") {
			t.Errorf("first ERROR lacks the advice: %s", first)
		}
		obs.mu.Lock()
		defer obs.mu.Unlock()
		wantResults := []string{"auth_error", "auth_error", "auth_error", "ok", "auth_error", "auth_error", "auth_error", "error", "auth_error", "ok"}
		if strings.Join(obs.results, " ") != strings.Join(wantResults, " ") {
			t.Errorf("poll results %v, want %v", obs.results, wantResults)
		}
	})
}

// reportingSource is a fakeSource that notes an anomaly on every call, as an adapter
// working around provider behaviour does.
type reportingSource struct {
	*fakeSource
	pending []provider.Anomaly
}

func (r *reportingSource) Page(ctx context.Context, req provider.Request) (provider.Page, error) {
	r.pending = append(r.pending, provider.Anomaly{Kind: AnomalyClockSkew, Detail: "clock skew: provider time is 93s ahead of this host"})
	return r.fakeSource.Page(ctx, req)
}

func (r *reportingSource) Anomalies() []provider.Anomaly {
	a := r.pending
	r.pending = nil
	return a
}

// TestAdapterAnomalies: anomalies an adapter reports through provider.AnomalyReporter
// are counted once per cycle and logged once per source at WARN with their detail.
func TestAdapterAnomalies(t *testing.T) {
	src := &reportingSource{fakeSource: &fakeSource{pageSize: 2}}
	for i := range 5 {
		src.add(fmt.Sprint("p", i), "NEW", now0.Add(-time.Duration(i+1)*time.Minute))
	}
	tp := newTestPoller(t, testConfig(), src)
	var logs logtest.Buffer
	tp.log = slog.New(slog.NewTextHandler(&logs, nil))
	obs := &resultRecorder{}
	tp.Observe(obs)
	for range 2 {
		if err := tp.Poll(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if n := obs.anomalies[AnomalyClockSkew]; n != 2 {
		t.Errorf("%d clock_skew anomalies counted in 2 cycles, want 2", n)
	}
	var warns []string
	for _, l := range logs.Take() {
		if field(l, "anomaly") != "" {
			warns = append(warns, l)
		}
	}
	if len(warns) != 1 || field(warns[0], "level") != "WARN" || field(warns[0], "msg") != "clock skew: provider time is 93s ahead of this host" {
		t.Errorf("anomaly log lines %q, want one WARN with the detail", warns)
	}
	if AnomalyClockSkew != provider.AnomalyClockSkew || AnomalySigning != provider.AnomalySigning {
		t.Error("the poller's anomaly kinds differ from the adapters'")
	}
}
