package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/internal/logtest"
)

const alertmanagerHint = "install it with: apt-get update && apt-get install -y --no-install-recommends prometheus-alertmanager"

// alertmanagerBinary finds Debian's prometheus-alertmanager, or an alertmanager, in
// PATH. Tests fail without it: they exist to run against the real thing.
func alertmanagerBinary(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"prometheus-alertmanager", "alertmanager"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatalf("Alertmanager not found in PATH (prometheus-alertmanager or alertmanager); %s", alertmanagerHint)
	return ""
}

// notification is the part of Alertmanager's webhook payload the tests read.
type notification struct {
	Status      string            `json:"status"`
	GroupLabels map[string]string `json:"groupLabels"`
	Alerts      []struct {
		Status      string            `json:"status"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
		StartsAt    time.Time         `json:"startsAt"`
	} `json:"alerts"`
}

// notifications is the webhook receiver Alertmanager notifies.
type notifications struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []notification
}

func newNotifications(t *testing.T) *notifications {
	n := &notifications{}
	n.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p notification
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
			t.Errorf("alertmanager notification: %v", err)
		}
		n.mu.Lock()
		n.got = append(n.got, p)
		n.mu.Unlock()
	}))
	t.Cleanup(n.srv.Close)
	return n
}

func (n *notifications) String() string {
	b, _ := json.Marshal(n.snapshot())
	return string(b)
}

func (n *notifications) snapshot() []notification {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]notification(nil), n.got...)
}

// eventIDs are the event_id labels of every firing alert notified so far.
func (n *notifications) eventIDs() map[string]int {
	ids := map[string]int{}
	for _, p := range n.snapshot() {
		for _, a := range p.Alerts {
			if a.Status == "firing" {
				ids[a.Labels["event_id"]]++
			}
		}
	}
	return ids
}

// waitFor polls cond every 20ms until it holds, failing t with what after 30s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond) // polling real servers against a deadline
	}
}

// startAlertmanager runs Alertmanager with one webhook receiver, receiverURL,
// grouping by alertname, source and state with a 1s group_wait (long enough for a
// burst of posts to land in one group) and a group_interval past any test's end. It
// returns the Alertmanager's base url once /-/ready answers.
func startAlertmanager(t *testing.T, receiverURL string) string {
	t.Helper()
	bin := alertmanagerBinary(t)
	dir := t.TempDir()
	config := fmt.Sprintf(`route:
  receiver: test
  group_by: [alertname, source, state]
  group_wait: 1s
  group_interval: 10m
  repeat_interval: 1h
receivers:
  - name: test
    webhook_configs:
      - url: %q
        send_resolved: false
`, receiverURL)
	configPath := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(configPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	logs := &logtest.Buffer{}
	cmd := exec.Command(bin, "--config.file="+configPath, "--storage.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--cluster.listen-address=", "--log.level=warn")
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("alertmanager log:\n%s", logs)
		}
	})
	base := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("alertmanager exited at start:\n%s", logs)
		default:
		}
		if resp, err := http.Get(base + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("alertmanager at %s not ready:\n%s", base, logs)
		}
		time.Sleep(20 * time.Millisecond) // polling a starting process against a deadline
	}
}

// startAM runs an alerter posting to Alertmanager at amURL (and to rcv when not nil).
func startAM(t *testing.T, js jetstream.JetStream, amURL string, rcv *receiver, args ...string) (*consumer, *alerter) {
	t.Helper()
	base := []string{"--alertmanager", amURL, "--link", "https://console.example/{source}/{kind}/{id}"}
	c, a := startWith(t, js, rcv, filepath.Join(t.TempDir(), "a.db"), io.Discard, nil, append(base, args...)...)
	return c, a
}

func TestAlertmanagerGroupsFailuresOfASource(t *testing.T) {
	_, js := runNATS(t)
	notified := newNotifications(t)
	am := startAlertmanager(t, notified.srv.URL)

	cpn := []event.Event{
		ev("cpn", "payment", "p1", 3, "CRYPTO_FUNDS_PENDING", "FAILED", "failed"),
		ev("cpn", "payment", "p2", 2, "CREATED", "FAILED", "failed"),
		ev("cpn", "payment_refund", "r1", 2, "CREATED", "FAILED", "failed"),
	}
	other := ev("coindirect", "payment", "c1", 2, "PENDING", "FAILED", "failed")
	publish(t, js, cpn...)
	publish(t, js, ev("cpn", "payment", "p3", 2, "CREATED", "COMPLETED", "completed"), other)
	c, a := startAM(t, js, am, nil)
	waitDrained(t, js, "alert-failed")
	waitFor(t, "notifications of all 4 failures", func() bool { return len(notified.eventIDs()) == 4 })
	c.stop(t)

	var cpnGroups []notification
	for _, n := range notified.snapshot() {
		if n.GroupLabels["source"] == "cpn" {
			cpnGroups = append(cpnGroups, n)
		}
	}
	if len(cpnGroups) != 1 || len(cpnGroups[0].Alerts) != 3 {
		t.Fatalf("cpn failures notified as %d notifications (%+v), want one holding 3 alerts", len(cpnGroups), cpnGroups)
	}
	want := map[string]string{"alertname": "PaymentFailed", "source": "cpn", "state": "failed"}
	for k, v := range want {
		if cpnGroups[0].GroupLabels[k] != v {
			t.Errorf("group labels %v, want %s=%s", cpnGroups[0].GroupLabels, k, v)
		}
	}
	byEvent := map[string]int{}
	for _, al := range cpnGroups[0].Alerts {
		byEvent[al.Labels["event_id"]]++
		for _, k := range []string{"alertname", "source", "provider", "kind", "state", "failure_code", "event_id"} {
			if al.Labels[k] == "" {
				t.Errorf("alert labels %v lack %s", al.Labels, k)
			}
		}
		if len(al.Labels) != 7 {
			t.Errorf("alert labels %v, want exactly alertname, source, provider, kind, state, failure_code, event_id", al.Labels)
		}
		if al.Annotations["amount"] != "110.270000" || al.Annotations["currency"] != "USDC" || al.Annotations["item_id"] == "" ||
			!strings.HasPrefix(al.Annotations["link"], "https://console.example/cpn/") || al.Annotations["failure_reason"] != "CANCELLED" {
			t.Errorf("annotations %v, want the exact amount, currency, item id, failure reason and link", al.Annotations)
		}
	}
	for _, e := range cpn {
		if byEvent[e.ID] != 1 {
			t.Errorf("event %s (%s) appears %d times in the cpn notification", e.ID, e.Data.ID, byEvent[e.ID])
		}
	}
	p1 := cpnGroups[0].Alerts[0]
	for _, al := range cpnGroups[0].Alerts {
		if al.Labels["event_id"] == cpn[2].ID && (al.Labels["kind"] != "payment_refund" || al.Annotations["parent_id"] != "parent-r1") {
			t.Errorf("refund alert %v %v, want kind payment_refund and parent_id annotation", al.Labels, al.Annotations)
		}
		if al.Labels["event_id"] == cpn[0].ID {
			p1 = al
		}
	}
	if p1.Annotations["observed_at"] != "2026-11-22T10:00:03.12Z" || p1.Annotations["summary"] != "cpn payment p1 FAILED (was CRYPTO_FUNDS_PENDING): 110.270000 USDC, CANCELLED PM01001" {
		t.Errorf("p1 alert annotations %v, want its observation time and summary", p1.Annotations)
	}
	if got := testutil.ToFloat64(a.metrics.deliveries.WithLabelValues("alertmanager", "delivered")); got != 4 {
		t.Errorf("alert_failed_deliveries_total{sink=alertmanager,outcome=delivered} = %v, want 4", got)
	}
}

// createSilence silences alerts whose label name equals value for an hour and
// returns the silence's id.
func createSilence(t *testing.T, am, name, value string) string {
	t.Helper()
	now := time.Now().UTC()
	body, _ := json.Marshal(map[string]any{
		"matchers":  []map[string]any{{"name": name, "value": value, "isRegex": false, "isEqual": true}},
		"startsAt":  now.Add(-time.Minute),
		"endsAt":    now.Add(time.Hour),
		"createdBy": "alert-failed tests",
		"comment":   "provider maintenance",
	})
	resp, err := http.Post(am+"/api/v2/silences", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		SilenceID string `json:"silenceID"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK || out.SilenceID == "" {
		t.Fatalf("create silence: status %s, %+v, %v", resp.Status, out, err)
	}
	return out.SilenceID
}

// amAlertState is the state Alertmanager gives the alert labelled event_id=id
// ("" when it holds none) and the silences suppressing it.
func amAlertState(t *testing.T, am, id string) (state string, silencedBy []string) {
	t.Helper()
	resp, err := http.Get(am + "/api/v2/alerts?filter=" + url.QueryEscape(`event_id="`+id+`"`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var alerts []struct {
		Status struct {
			State      string   `json:"state"`
			SilencedBy []string `json:"silencedBy"`
		} `json:"status"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&alerts); err != nil {
		t.Fatal(err)
	}
	if len(alerts) == 0 {
		return "", nil
	}
	return alerts[0].Status.State, alerts[0].Status.SilencedBy
}

func TestAlertmanagerSilenceSuppressesDelivery(t *testing.T) {
	_, js := runNATS(t)
	notified := newNotifications(t)
	am := startAlertmanager(t, notified.srv.URL)
	silence := createSilence(t, am, "source", "ramp")

	silenced := ev("ramp", "ramp_session", "s1", 2, "PENDING", "FAILED", "failed")
	loud := ev("cpn", "payment", "p1", 2, "CREATED", "FAILED", "failed")
	publish(t, js, silenced, loud) // the silenced alert is posted first
	c, _ := startAM(t, js, am, nil)
	waitDrained(t, js, "alert-failed")
	waitFor(t, "the notification of the unsilenced failure", func() bool { return notified.eventIDs()[loud.ID] == 1 })
	waitFor(t, "Alertmanager to hold the silenced alert", func() bool { s, _ := amAlertState(t, am, silenced.ID); return s != "" })
	c.stop(t)

	state, by := amAlertState(t, am, silenced.ID)
	if state != "suppressed" || len(by) != 1 || by[0] != silence {
		t.Errorf("silenced alert state %q silenced by %v, want suppressed by %s", state, by, silence)
	}
	for _, n := range notified.snapshot() {
		if n.GroupLabels["source"] == "ramp" {
			t.Errorf("the silenced source was notified: %+v", n)
		}
	}
	if ids := notified.eventIDs(); ids[silenced.ID] != 0 {
		t.Errorf("notified alerts %v include the silenced event %s", ids, silenced.ID)
	}
}

func TestRevokedWebhookGoesToDeadLetterWithoutDelayingAlerts(t *testing.T) {
	_, js := runNATS(t)
	notified := newNotifications(t)
	am := startAlertmanager(t, notified.srv.URL)
	revoked := newReceiver(t, func(int) int { return http.StatusGone })
	events := []event.Event{
		ev("cpn", "payment", "p1", 2, "CREATED", "FAILED", "failed"),
		ev("cpn", "payment", "p2", 2, "CREATED", "FAILED", "failed"),
	}
	publish(t, js, events...)
	// A backoff far longer than the test: any retry of the 410 would stall it.
	c, a := startAM(t, js, am, revoked, "--max-backoff", "10m")
	waitDrained(t, js, "alert-failed")
	waitFor(t, "both alerts at Alertmanager's receiver", func() bool { return len(notified.eventIDs()) == 2 })
	c.stop(t)

	calls := revoked.snapshot()
	if len(calls) != 2 || calls[0].key != events[0].ID || calls[1].key != events[1].ID {
		t.Errorf("revoked webhook got %+v, want one call per event, none retried", calls)
	}
	if got := testutil.ToFloat64(a.metrics.deadLetters.WithLabelValues("webhook")); got != 2 {
		t.Errorf("alert_failed_dead_letters_total{sink=webhook} = %v, want 2", got)
	}
	if got := testutil.ToFloat64(a.metrics.retries.WithLabelValues("webhook")); got != 0 {
		t.Errorf("alert_failed_retries_total{sink=webhook} = %v, want 0", got)
	}

	letters := deadLetters(t, js, "payments.deadletter.alert-failed", 2)
	for i, dl := range letters {
		if dl.Sink != "webhook" || dl.EventID != events[i].ID || dl.Refusal.Status != http.StatusGone ||
			dl.Subject != "payments.cpn.payment.failed" || dl.StreamSeq == 0 {
			t.Errorf("dead letter %d = %+v, want webhook's 410 for %s", i, dl, events[i].ID)
		}
		if back, err := event.Decode(dl.Event); err != nil || back.ID != events[i].ID {
			t.Errorf("dead letter %d carries %s, %v; want the event as received", i, dl.Event, err)
		}
	}

	rec := httptest.NewRecorder()
	a.metrics.handler(func() error { return nil }).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if !strings.Contains(rec.Body.String(), `alert_failed_dead_letters_total{sink="webhook"} 2`) {
		t.Errorf("/metrics lacks the dead-letter count:\n%s", rec.Body)
	}
}

// deadLetters reads the first n messages of subject from the stream.
func deadLetters(t *testing.T, js jetstream.JetStream, subject string, n int) []deadLetter {
	t.Helper()
	cons, err := js.OrderedConsumer(t.Context(), "PAYMENT_EVENTS", jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	var out []deadLetter
	for len(out) < n {
		msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("dead letter %d of %d on %s: %v", len(out)+1, n, subject, err)
		}
		var dl deadLetter
		if err := json.Unmarshal(msg.Data(), &dl); err != nil {
			t.Fatal(err)
		}
		out = append(out, dl)
	}
	return out
}

func TestRetryAfterIsHonoured(t *testing.T) {
	_, js := runNATS(t)
	rcv := newReceiver(t, nil)
	var mu sync.Mutex
	var times []time.Time
	rcv.respond = func(n int) int {
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
		if n == 1 {
			return http.StatusTooManyRequests
		}
		return http.StatusOK
	}
	retryAfterHeader(rcv, "1")
	e := ev("cpn", "payment", "p1", 2, "CREATED", "FAILED", "failed")
	publish(t, js, e)
	// --max-backoff is 20ms: only Retry-After can make the second attempt wait 1s.
	c, a := startWith(t, js, rcv, filepath.Join(t.TempDir(), "a.db"), io.Discard, nil)
	waitDrained(t, js, "alert-failed")
	c.stop(t)
	mu.Lock()
	defer mu.Unlock()
	if len(times) != 2 {
		t.Fatalf("%d calls, want a 429 then a 200", len(times))
	}
	if gap := times[1].Sub(times[0]); gap < time.Second {
		t.Errorf("retried after %s, want at least the 1s Retry-After asked for", gap)
	}
	if got := testutil.ToFloat64(a.metrics.retries.WithLabelValues("webhook")); got != 1 {
		t.Errorf("retries = %v, want 1", got)
	}
}

// retryAfterHeader makes rcv answer its 429s and 503s with Retry-After: v.
func retryAfterHeader(rcv *receiver, v string) {
	inner := rcv.srv.Config.Handler
	rcv.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inner.ServeHTTP(retryAfterWriter{w, v}, r)
	})
}

type retryAfterWriter struct {
	http.ResponseWriter
	v string
}

func (w retryAfterWriter) WriteHeader(status int) {
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", w.v)
	}
	w.ResponseWriter.WriteHeader(status)
}

func TestRetryAfterParsing(t *testing.T) {
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"": 0, "3": 3 * time.Second, "0": 0, "-1": 0, "soon": 0,
		now.Add(90 * time.Second).Format(http.TimeFormat): 90 * time.Second,
		now.Add(-time.Minute).Format(http.TimeFormat):     0,
	} {
		if got := retryAfter(v, now); got != want {
			t.Errorf("retryAfter(%q) = %s, want %s", v, got, want)
		}
	}
	for status, want := range map[int]bool{400: true, 401: true, 404: true, 410: true, 422: true, 408: false, 429: false, 500: false, 503: false} {
		if permanent(status) != want {
			t.Errorf("permanent(%d) = %v, want %v", status, !want, want)
		}
	}
}

func TestStalledAlertName(t *testing.T) {
	e := ev("cpn", "payment", "p1", 2, "CREATED", "CRYPTO_FUNDS_PENDING", "pending")
	e.Data.CreatedAt = e.Data.ObservedAt.Add(-48 * time.Hour)
	if !isStalled(e, 24*time.Hour) || alertName(e, 24*time.Hour) != "PaymentStalled" {
		t.Errorf("a pending item 48h old is not stalled after 24h")
	}
	if isStalled(e, 0) || isStalled(e, 72*time.Hour) {
		t.Errorf("stalled with the check off or a longer threshold")
	}
	e.Data.Current = event.Status{Status: "FAILED", State: "failed"}
	e.Data.Terminal = true
	if isStalled(e, 24*time.Hour) || alertName(e, 24*time.Hour) != "PaymentFailed" {
		t.Errorf("a failed item is stalled or not PaymentFailed")
	}
	e.Data.Current.State = "action_required"
	if alertName(e, 0) != "PaymentActionRequired" {
		t.Errorf("alertName = %s", alertName(e, 0))
	}
}

func TestHealthz(t *testing.T) {
	m := newAlertMetrics()
	a := newAlerter(options{}, nil, nil, nil, m)
	h := m.handler(func() error { return a.Healthy(nil) })
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "consumer not running") {
		t.Errorf("/healthz before Run: %d %q", rec.Code, rec.Body)
	}
	a.running.Store(true)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("/healthz while running: %d %q", rec.Code, rec.Body)
	}
}
