package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsserver "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/shopspring/decimal"

	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/internal/logtest"
)

func runNATS(t *testing.T) (*server.Server, jetstream.JetStream) {
	t.Helper()
	opts := natsserver.DefaultTestOptions
	opts.Port, opts.JetStream, opts.StoreDir = -1, true, t.TempDir()
	srv := natsserver.RunServer(&opts)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close(); srv.Shutdown(); srv.WaitForShutdown() })
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "PAYMENT_EVENTS", Subjects: []string{"payments.>"}}); err != nil {
		t.Fatal(err)
	}
	return srv, js
}

// ev builds a watcher event; failure and amount are set for failure states.
func ev(source, kind, id string, seq uint32, prev, status, state string) event.Event {
	observed := time.Date(2026, 11, 22, 10, 0, int(seq), 120_000_000, time.UTC)
	d := event.Data{Source: source, Provider: "circle_cpn_payments", Kind: kind, ID: id, Sequence: seq,
		Current: event.Status{Status: status, State: state}, CreatedAt: observed.Add(-time.Hour), ObservedAt: observed,
		Amount: &event.Money{Value: decimal.RequireFromString("110.270000"), Currency: "USDC"}, Item: json.RawMessage(`{}`)}
	if prev != "" {
		d.Previous = &event.Status{Status: prev, State: "pending"}
	}
	if state == "failed" {
		d.Failure = &event.Failure{Reason: "CANCELLED", Code: "PM01001"}
	}
	var parent string
	if strings.Contains(kind, "_") {
		parent = "parent-" + id
		d.ParentID = &parent
	}
	return event.Event{SpecVersion: event.SpecVersion, ID: event.ID(source, kind, parent, id, seq, d.Previous, d.Current),
		Source: "watcher/" + source, Type: event.Type, Subject: id, Time: observed, DataContentType: "application/json", Data: d}
}

func publish(t *testing.T, js jetstream.JetStream, events ...event.Event) {
	t.Helper()
	for _, e := range events {
		body, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		subject := event.Subject("payments", e.Data.Source, e.Data.Kind, e.Data.Current.State)
		if _, err := js.Publish(t.Context(), subject, body, jetstream.WithMsgID(e.ID)); err != nil {
			t.Fatal(err)
		}
	}
}

// receiver is a webhook endpoint; respond picks the status of each call.
type receiver struct {
	srv     *httptest.Server
	mu      sync.Mutex
	calls   []call
	respond func(n int) int // n counts calls from 1
}

type call struct {
	key, contentType string
	body             []byte
	status           int
}

func newReceiver(t *testing.T, respond func(n int) int) *receiver {
	r := &receiver{respond: respond}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		status := http.StatusOK
		if r.respond != nil {
			status = r.respond(len(r.calls) + 1)
		}
		r.calls = append(r.calls, call{req.Header.Get("Idempotency-Key"), req.Header.Get("Content-Type"), body, status})
		r.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) snapshot() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]call(nil), r.calls...)
}

// accepted maps each Idempotency-Key answered 2xx to how often it was.
func (r *receiver) accepted() map[string]int {
	n := map[string]int{}
	for _, c := range r.snapshot() {
		if c.status/100 == 2 {
			n[c.key]++
		}
	}
	return n
}

// consumer is one running alerter.
type consumer struct {
	cancel context.CancelFunc
	done   chan error
}

// start runs an alerter with args on top of the test defaults.
func start(t *testing.T, js jetstream.JetStream, rcv *receiver, statePath string, logs io.Writer, hook func(string) error, args ...string) *consumer {
	t.Helper()
	c, _ := startWith(t, js, rcv, statePath, logs, hook, args...)
	return c
}

// startWith is start, also returning the alerter. rcv nil means no webhook sink.
func startWith(t *testing.T, js jetstream.JetStream, rcv *receiver, statePath string, logs io.Writer, hook func(string) error, args ...string) (*consumer, *alerter) {
	t.Helper()
	base := []string{"--state", statePath, "--states", "failed,underpaid,expired", "--deliver", "all", "--ack-wait", "500ms", "--max-backoff", "20ms", "--log-level", "debug"}
	if rcv != nil {
		base = append(base, "--webhook", rcv.srv.URL)
	}
	o, err := parseOptions(append(base, args...), func(string) (string, bool) { return "", false }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	sent, err := openDelivered(o.statePath, o.retention)
	if err != nil {
		t.Fatal(err)
	}
	a := newAlerter(o, sent, http.DefaultClient, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), newAlertMetrics())
	a.beforeAck = hook
	ctx, cancel := context.WithCancel(context.Background())
	c := &consumer{cancel: cancel, done: make(chan error, 1)}
	go func() {
		err := a.Run(ctx, js)
		sent.Close()
		c.done <- err
	}()
	return c, a
}

func (c *consumer) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-c.done:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("consumer did not stop")
		return nil
	}
}

func (c *consumer) stop(t *testing.T) {
	t.Helper()
	c.cancel()
	if err := c.wait(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// waitDrained polls the durable consumer until every message it selects is
// acknowledged or terminated.
func waitDrained(t *testing.T, js jetstream.JetStream, name string) *jetstream.ConsumerInfo {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		info, err := js.Consumer(t.Context(), "PAYMENT_EVENTS", name)
		if err == nil {
			ci, err := info.Info(t.Context())
			if err == nil && ci.NumPending == 0 && ci.NumAckPending == 0 && ci.NumRedelivered == 0 && ci.Delivered.Stream > 0 {
				return ci
			}
		} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer %s not drained", name)
		}
		time.Sleep(10 * time.Millisecond) // polling a real server against a deadline
	}
}

func TestAlertsEachFailureOnce(t *testing.T) {
	_, js := runNATS(t)
	rcv := newReceiver(t, nil)
	failed := ev("cpn", "payment", "p1", 3, "CRYPTO_FUNDS_PENDING", "FAILED", "failed")
	refund := ev("cpn", "payment_refund", "r1", 2, "CREATED", "FAILED", "failed")
	underpaid := ev("coindirect", "payment", "c1", 2, "PENDING", "UNDERPAID", "underpaid")
	expired := ev("ramp", "ramp_session", "s1", 1, "", "EXPIRED", "expired")
	publish(t, js,
		ev("cpn", "payment", "p1", 1, "", "CREATED", "pending"),
		ev("cpn", "payment", "p2", 2, "CREATED", "COMPLETED", "completed"),
		failed, refund, underpaid, expired,
		ev("onramp", "onramp_session", "o1", 1, "", "requires_payment", "action_required"),
		ev("coindirect", "payment", "c2", 2, "PENDING", "CANCELLED", "canceled"),
	)
	c := start(t, js, rcv, filepath.Join(t.TempDir(), "alert-failed.db"), io.Discard, nil)
	ci := waitDrained(t, js, "alert-failed")
	c.stop(t)

	if ci.Delivered.Consumer != 4 {
		t.Errorf("consumer got %d messages, want the 4 failure events only", ci.Delivered.Consumer)
	}
	calls := rcv.snapshot()
	want := []event.Event{failed, refund, underpaid, expired}
	if len(calls) != len(want) {
		t.Fatalf("%d webhook calls, want %d: %+v", len(calls), len(want), calls)
	}
	for i, e := range want {
		if calls[i].key != e.ID || calls[i].contentType != "application/json" {
			t.Errorf("call %d: Idempotency-Key %q Content-Type %q, want %q application/json", i, calls[i].key, calls[i].contentType, e.ID)
		}
	}
	wantBody := `{"event_id":"` + failed.ID + `","source":"cpn","kind":"payment","id":"p1","parent_id":null,` +
		`"status":"FAILED","state":"failed","previous_status":"CRYPTO_FUNDS_PENDING","amount":"110.270000","currency":"USDC",` +
		`"failure_reason":"CANCELLED","failure_code":"PM01001","observed_at":"2026-11-22T10:00:03.12Z"}`
	if string(calls[0].body) != wantBody {
		t.Errorf("body\n got %s\nwant %s", calls[0].body, wantBody)
	}
	var expiredAlert map[string]any
	if err := json.Unmarshal(calls[3].body, &expiredAlert); err != nil {
		t.Fatal(err)
	}
	if expiredAlert["previous_status"] != nil || expiredAlert["failure_reason"] != nil || expiredAlert["state"] != "expired" {
		t.Errorf("first-sight expired alert = %v, want null previous_status and failure_reason", expiredAlert)
	}
	var refundAlert map[string]any
	if err := json.Unmarshal(calls[1].body, &refundAlert); err != nil {
		t.Fatal(err)
	}
	if refundAlert["parent_id"] != "parent-r1" || refundAlert["kind"] != "payment_refund" {
		t.Errorf("refund alert = %v, want parent_id parent-r1", refundAlert)
	}

	// A second run with the same consumer and record finds nothing new.
	publish(t, js, ev("cpn", "payment", "p3", 2, "CREATED", "FAILED", "failed"))
	c = start(t, js, rcv, filepath.Join(t.TempDir(), "other.db"), io.Discard, nil)
	waitDrained(t, js, "alert-failed")
	c.stop(t)
	if n := len(rcv.snapshot()); n != 5 {
		t.Errorf("%d calls after the second run, want 5 (one new event)", n)
	}
}

func TestRetriesFailingWebhook(t *testing.T) {
	_, js := runNATS(t)
	rcv := newReceiver(t, func(n int) int {
		if n <= 2 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	failed := ev("cpn", "payment", "p1", 2, "CREATED", "FAILED", "failed")
	publish(t, js, failed)
	logs := &logtest.Buffer{}
	c := start(t, js, rcv, filepath.Join(t.TempDir(), "a.db"), logs, nil)
	waitDrained(t, js, "alert-failed")
	c.stop(t)

	calls := rcv.snapshot()
	if len(calls) != 3 {
		t.Fatalf("%d calls, want 2 failed attempts and 1 accepted", len(calls))
	}
	for _, c := range calls {
		if c.key != failed.ID || !bytes.Equal(c.body, calls[0].body) {
			t.Errorf("retry sent key %q body %s, want the same event %s and body", c.key, c.body, failed.ID)
		}
	}
	if got := rcv.accepted(); got[failed.ID] != 1 || len(got) != 1 {
		t.Errorf("accepted %v, want %s once", got, failed.ID)
	}
	if n := strings.Count(logs.String(), "Delivery failed; retrying"); n != 2 {
		t.Errorf("%d retry log lines, want 2\n%s", n, logs)
	}
}

func TestRestartBetweenPostAndAckDoesNotRealert(t *testing.T) {
	_, js := runNATS(t)
	rcv := newReceiver(t, nil)
	events := []event.Event{
		ev("cpn", "payment", "p1", 2, "CREATED", "FAILED", "failed"),
		ev("cpn", "payment", "p2", 2, "CREATED", "FAILED", "failed"),
		ev("coindirect", "payment", "c1", 2, "PENDING", "EXPIRED", "expired"),
	}
	publish(t, js, events...)
	statePath := filepath.Join(t.TempDir(), "alert-failed.db")
	crash := errors.New("crash before ack")
	c := start(t, js, rcv, statePath, io.Discard, func(id string) error {
		if id == events[1].ID {
			return crash
		}
		return nil
	})
	if err := c.wait(t); !errors.Is(err, crash) {
		t.Fatalf("first run ended with %v, want the crash", err)
	}
	if got := rcv.accepted(); len(got) != 2 || got[events[1].ID] != 1 {
		t.Fatalf("before the restart accepted %v, want p1 and p2", got)
	}

	logs := &logtest.Buffer{}
	c = start(t, js, rcv, statePath, logs, nil)
	waitDrained(t, js, "alert-failed")
	c.stop(t)
	got := rcv.accepted()
	for _, e := range events {
		if got[e.ID] != 1 {
			t.Errorf("event %s (%s) accepted %d times, want once", e.ID, e.Data.ID, got[e.ID])
		}
	}
	if n := len(rcv.snapshot()); n != 3 {
		t.Errorf("%d webhook calls, want 3", n)
	}
	if !strings.Contains(logs.String(), "Already delivered") || !strings.Contains(logs.String(), events[1].ID) {
		t.Errorf("the redelivered event was not skipped as delivered:\n%s", logs)
	}
}

func TestSlackBody(t *testing.T) {
	_, js := runNATS(t)
	rcv := newReceiver(t, nil)
	e := ev("cpn", "payment", "p<1>", 3, "CRYPTO_FUNDS_PENDING", "FAILED", "failed")
	publish(t, js, e)
	c := start(t, js, rcv, filepath.Join(t.TempDir(), "a.db"), io.Discard, nil, "--slack")
	waitDrained(t, js, "alert-failed")
	c.stop(t)
	calls := rcv.snapshot()
	if len(calls) != 1 {
		t.Fatalf("%d calls, want 1", len(calls))
	}
	var body map[string]any
	if err := json.Unmarshal(calls[0].body, &body); err != nil {
		t.Fatal(err)
	}
	text, ok := body["text"].(string)
	if len(body) != 1 || !ok {
		t.Fatalf("slack body %s, want only a text string", calls[0].body)
	}
	want := ":rotating_light: *failed*: cpn payment p&lt;1&gt; FAILED (was CRYPTO_FUNDS_PENDING), 110.270000 USDC, " +
		"reason CANCELLED PM01001, observed 2026-11-22T10:00:03Z, event " + e.ID
	if text != want {
		t.Errorf("text\n got %q\nwant %q", text, want)
	}
}

func TestTerminatesNonWatcherMessages(t *testing.T) {
	_, js := runNATS(t)
	rcv := newReceiver(t, nil)
	if _, err := js.Publish(t.Context(), "payments.cpn.payment.failed", []byte(`not json`)); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(t.Context(), "payments.cpn.payment.failed", []byte(`{"specversion":"1.0","type":"other","id":"x"}`)); err != nil {
		t.Fatal(err)
	}
	e := ev("cpn", "payment", "p1", 2, "CREATED", "FAILED", "failed")
	publish(t, js, e)
	logs := &logtest.Buffer{}
	c := start(t, js, rcv, filepath.Join(t.TempDir(), "a.db"), logs, nil)
	ci := waitDrained(t, js, "alert-failed")
	c.stop(t)
	if got := rcv.accepted(); len(got) != 1 || got[e.ID] != 1 {
		t.Errorf("accepted %v, want only %s", got, e.ID)
	}
	if n := strings.Count(logs.String(), "Not a watcher event; terminated"); n != 2 {
		t.Errorf("%d terminate log lines, want 2\n%s", n, logs)
	}
	if ci.Delivered.Consumer != 3 {
		t.Errorf("%d deliveries, want 3 (terminated messages are not redelivered)", ci.Delivered.Consumer)
	}
}

func TestRunWithFlagsAndEnv(t *testing.T) {
	srv, js := runNATS(t)
	rcv := newReceiver(t, nil)
	publish(t, js, ev("cpn", "payment", "p1", 2, "CREATED", "FAILED", "failed"), ev("coindirect", "payment", "c1", 2, "PENDING", "UNDERPAID", "underpaid"))
	env := map[string]string{"ALERT_WEBHOOK_URL": rcv.srv.URL, "NATS_URL": srv.ClientURL()}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--states", "underpaid", "--http", "127.0.0.1:0", "--consumer", "ops", "--deliver", "all", "--state", filepath.Join(t.TempDir(), "a.db")}, lookup, io.Discard)
	}()
	waitDrained(t, js, "ops")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	calls := rcv.snapshot()
	if len(calls) != 1 || !strings.Contains(string(calls[0].body), `"state":"underpaid"`) {
		t.Errorf("calls %+v, want the underpaid alert only", calls)
	}
}

func TestParseOptionsErrors(t *testing.T) {
	none := func(string) (string, bool) { return "", false }
	_, err := parseOptions([]string{"--states", "failed,lost", "--deliver", "last", "--ack-wait", "0s"}, none, io.Discard)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{`--states: "lost" is not one of`, "--alertmanager (or ALERTMANAGER_URL) or --webhook (or ALERT_WEBHOOK_URL) is required", `--deliver "last"`, "--ack-wait 0s"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	_, err = parseOptions([]string{"--webhook", "ftp://hooks.example/secret"}, none, io.Discard)
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("error %v, want a rejected scheme without the url's path", err)
	}
}

func TestDeliveredPrunesExpiredIDs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.db")
	d, err := openDelivered(path, 7*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Add(-30 * 24 * time.Hour) // in the past: the reopen below prunes by the real clock
	d.now = func() time.Time { return now }
	d.lastPrune = now
	if err := d.Add("old"); err != nil {
		t.Fatal(err)
	}
	now = now.Add(6 * 24 * time.Hour)
	if err := d.Add("recent"); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * 24 * time.Hour) // "old" is 8 days old, "recent" 2
	if err := d.Add("new"); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]bool{"old": false, "recent": true, "new": true, "never": false} {
		if got, err := d.Has(id); err != nil || got != want {
			t.Errorf("Has(%q) = %v, %v; want %v", id, got, err, want)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d, err = openDelivered(path, time.Hour) // prunes at open: "recent" is older than an hour
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer d.Close()
	if got, err := d.Has("recent"); err != nil || got {
		t.Errorf("after reopening with a 1h retention Has(recent) = %v, %v; want false", got, err)
	}
}

func TestWebhookSkipsIDsRecordedByEarlierVersions(t *testing.T) {
	_, js := runNATS(t)
	rcv := newReceiver(t, nil)
	old, fresh := ev("cpn", "payment", "p1", 2, "CREATED", "FAILED", "failed"), ev("cpn", "payment", "p2", 2, "CREATED", "FAILED", "failed")
	statePath := filepath.Join(t.TempDir(), "a.db")
	d, err := openDelivered(statePath, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Add(old.ID); err != nil { // the bare id, as the webhook-only version wrote it
		t.Fatal(err)
	}
	d.Close()
	publish(t, js, old, fresh)
	c := start(t, js, rcv, statePath, io.Discard, nil)
	waitDrained(t, js, "alert-failed")
	c.stop(t)
	if got := rcv.accepted(); len(got) != 1 || got[fresh.ID] != 1 {
		t.Errorf("accepted %v, want only %s", got, fresh.ID)
	}
}
