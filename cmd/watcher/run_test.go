package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/internal/logtest"
	"github.com/payments-watcher/watcher/internal/natstest"
)

const cpnKey = "TEST_API_KEY:e2e-id:e2e-very-secret"

// cpnServer is a small CPN-shaped provider: createDate DESC, exclusive pageAfter,
// inclusive from/to, Bearer auth, single-item reads. A pageAfter that names no item or
// a bad pageSize is a 400 {"code":2,"message":"API parameter invalid",...}, as Circle
// answers (sim/sim.go). It is written apart from sim/ and the adapter on purpose: the
// daemon is checked against an independent reading of the API.
type cpnServer struct {
	mu       sync.Mutex
	payments []map[string]any // newest first
	requests atomic.Int64
	served   chan struct{} // receives after every answered request
}

func (s *cpnServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		s.requests.Add(1)
		select {
		case s.served <- struct{}{}:
		default:
		}
	}()
	w.Header().Set("Content-Type", "application/json")
	if r.Header.Get("Authorization") != "Bearer "+cpnKey {
		w.WriteHeader(401)
		fmt.Fprint(w, `{"code":401,"message":"Malformed authorization."}`)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if id, ok := strings.CutPrefix(r.URL.Path, "/v1/cpn/payments/"); ok {
		for _, p := range s.payments {
			if p["id"] == id {
				json.NewEncoder(w).Encode(map[string]any{"data": p})
				return
			}
		}
		w.WriteHeader(404)
		fmt.Fprint(w, `{"code":404,"message":"Not found."}`)
		return
	}
	q := r.URL.Query()
	size := 50
	if v := q.Get("pageSize"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			badCircleParam(w, "pageSize", v, "pageSize must be an integer of at least 1")
			return
		}
		size = min(n, 200)
	}
	older := s.payments
	if after := q.Get("pageAfter"); after != "" {
		i := slices.IndexFunc(s.payments, func(p map[string]any) bool { return p["id"] == after })
		if i < 0 {
			badCircleParam(w, "pageAfter", after, "pageAfter is not the id of an item of this collection")
			return
		}
		older = s.payments[i+1:]
	}
	var list []map[string]any
	for _, p := range older {
		created, err := time.Parse(time.RFC3339, p["createDate"].(string))
		if err != nil {
			http.Error(w, fmt.Sprintf("fixture %v: createDate: %v", p["id"], err), http.StatusInternalServerError)
			return
		}
		if from, err := time.Parse(time.RFC3339, q.Get("from")); err == nil && created.Before(from) {
			continue
		}
		if to, err := time.Parse(time.RFC3339, q.Get("to")); err == nil && created.After(to) {
			continue
		}
		list = append(list, p)
	}
	list = list[:min(size, len(list))]
	json.NewEncoder(w).Encode(map[string]any{"data": list})
}

// badCircleParam answers Circle's 400 for a query parameter with a bad value.
func badCircleParam(w http.ResponseWriter, param, value, msg string) {
	w.WriteHeader(http.StatusBadRequest)
	json.NewEncoder(w).Encode(map[string]any{"code": 2, "message": "API parameter invalid", "errors": []any{map[string]any{
		"error": "invalid_value", "message": msg, "location": param, "invalidValue": value,
	}}})
}

func (s *cpnServer) set(id string, fn func(p map[string]any)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.payments {
		if p["id"] == id {
			fn(p)
			return
		}
	}
	panic(id)
}

func payment(id, status string, created time.Time, amount string) map[string]any {
	return map[string]any{
		"type": "payment", "id": id, "status": status, "createDate": created.Format(time.RFC3339),
		"sourceAmount": map[string]any{"amount": amount, "currency": "USDC"}, "customerRefId": "cust-" + id,
		"refunds": []any{}, "rfis": []any{}, "onChainTransactions": []any{},
	}
}

// writeFile writes a test file, ending the test if it cannot.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestCPNFakeRefusesUnknownCursor checks the fake the daemon tests run against: a
// pageAfter that names no item is refused as Circle refuses it, not served from the top.
func TestCPNFakeRefusesUnknownCursor(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	cpn := &cpnServer{payments: []map[string]any{
		payment("p2", "CREATED", now.Add(-time.Hour), "1.00"),
		payment("p1", "CREATED", now.Add(-2*time.Hour), "1.00"),
	}}
	srv := httptest.NewServer(cpn)
	defer srv.Close()
	get := func(query string) (int, map[string]any) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/v1/cpn/payments?"+query, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+cpnKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatalf("GET ?%s: %v", query, err)
		}
		return resp.StatusCode, body
	}
	code, body := get("pageAfter=p2")
	if data, _ := body["data"].([]any); code != 200 || len(data) != 1 || data[0].(map[string]any)["id"] != "p1" {
		t.Errorf("pageAfter=p2: %d %v, want p1 alone", code, body)
	}
	for _, q := range []string{"pageAfter=nope", "pageSize=0", "pageSize=x"} {
		code, body := get(q)
		if code != http.StatusBadRequest || body["code"] != 2.0 || body["message"] != "API parameter invalid" {
			t.Errorf("%s: %d %v, want 400 with code 2 API parameter invalid", q, code, body)
		}
	}
}

type runningDaemon struct {
	cancel context.CancelFunc
	done   chan error
	logs   *logtest.Buffer
}

func startDaemon(t *testing.T, cfgPath string) *runningDaemon {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &runningDaemon{cancel: cancel, done: make(chan error, 1), logs: &logtest.Buffer{}}
	go func() {
		d.done <- run(ctx, []string{"run", "-config", cfgPath, "--log-level", "debug"}, d.logs, d.logs)
	}()
	return d
}

func (d *runningDaemon) stop(t *testing.T) {
	t.Helper()
	d.cancel()
	select {
	case err := <-d.done:
		if err != nil {
			t.Fatalf("run returned %v\nlogs:\n%s", err, d.logs)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("run did not stop\nlogs:\n%s", d.logs)
	}
}

// collector reads the stream in order.
type collector struct {
	t    *testing.T
	cons jetstream.Consumer
	msgs []jetstream.Msg
}

func newCollector(t *testing.T, js jetstream.JetStream) *collector {
	t.Helper()
	ctx := t.Context()
	var stream jetstream.Stream
	deadline := time.Now().Add(20 * time.Second)
	for {
		var err error
		stream, err = js.Stream(ctx, "PAYMENT_EVENTS")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream never created: %v", err)
		}
		// The daemon creates the stream at start; ask again once the server has answered.
		time.Sleep(50 * time.Millisecond)
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return &collector{t: t, cons: cons}
}

// await reads until n messages in all have arrived.
func (c *collector) await(n int) []event.Event {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for len(c.msgs) < n {
		if time.Now().After(deadline) {
			c.t.Fatalf("got %d events, want %d", len(c.msgs), n)
		}
		batch, err := c.cons.Fetch(n-len(c.msgs), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			c.t.Fatal(err)
		}
		for m := range batch.Messages() {
			c.msgs = append(c.msgs, m)
		}
	}
	var out []event.Event
	for _, m := range c.msgs {
		e, err := event.Decode(m.Data())
		if err != nil {
			c.t.Fatal(err)
		}
		if m.Headers().Get(event.HeaderMsgID) != e.ID {
			c.t.Fatalf("Nats-Msg-Id %q, event id %q", m.Headers().Get(event.HeaderMsgID), e.ID)
		}
		if m.Subject() != event.Subject("payments", e.Data.Source, e.Data.Kind, e.Data.Current.State) {
			c.t.Fatalf("subject %s for %+v", m.Subject(), e.Data)
		}
		out = append(out, e)
	}
	return out
}

func summarize(evs []event.Event) []string {
	var out []string
	for _, e := range evs {
		prev := "nil"
		if e.Data.Previous != nil {
			prev = e.Data.Previous.Status + "+" + e.Data.Previous.Addendum
		}
		out = append(out, fmt.Sprintf("%s/%s %s>%s+%s #%d", e.Data.Kind, e.Data.ID, prev, e.Data.Current.Status, e.Data.Current.Addendum, e.Data.Sequence))
	}
	slices.Sort(out)
	return out
}

func TestRunEndToEnd(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	cpn := &cpnServer{served: make(chan struct{}, 1)}
	failed := payment("p-failed", "FAILED", now.Add(-3*time.Hour), "110.270000")
	failed["failureReason"], failed["failureCode"] = "CANCELLED", "PM01001"
	failed["refunds"] = []any{map[string]any{"id": "r1", "status": "CREATED", "amount": map[string]any{"amount": "110.270000", "currency": "USDC"}}}
	cpn.payments = []map[string]any{
		payment("p-new", "CREATED", now.Add(-1*time.Hour), "326992.940222420597939290"),
		payment("p-pending", "CRYPTO_FUNDS_PENDING", now.Add(-2*time.Hour), "5.000000"),
		failed,
	}
	provider := httptest.NewServer(cpn)
	defer provider.Close()
	ns := natstest.JetStream(t)

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "watcher.yaml")
	t.Setenv("E2E_CPN_KEY", cpnKey)
	cfg := fmt.Sprintf(`
state:
  path: %s/state/watcher.db
nats:
  url: %s
http:
  listen: 127.0.0.1:0
admin:
  listen: 127.0.0.1:0
sources:
  - name: cpn
    provider: circle_cpn_payments
    base_url: %s
    api_key: ${E2E_CPN_KEY}
    interval: 200ms
    open_refresh: 1ms
    open_refresh_max: 0s
    page_size: 2
    baseline: emit
`, dir, ns.ClientURL(), provider.URL)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	d := startDaemon(t, cfgPath)
	js := natstest.Connect(t, ns.ClientURL())
	col := newCollector(t, js)

	first := col.await(4)
	if got, want := summarize(first), []string{
		"payment/p-failed nil>FAILED+ #1",
		"payment/p-new nil>CREATED+ #1",
		"payment/p-pending nil>CRYPTO_FUNDS_PENDING+ #1",
		"payment_refund/r1 nil>CREATED+ #1",
	}; !slices.Equal(got, want) {
		t.Fatalf("first events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, e := range first {
		if e.Data.ID == "p-new" {
			if e.Data.Amount == nil || e.Data.Amount.Value.String() != "326992.94022242059793929" || e.Data.Amount.Currency != "USDC" {
				t.Errorf("amount %+v", e.Data.Amount)
			}
			if e.Data.Refs["customer_ref_id"] != "cust-p-new" || e.Data.Terminal || e.Data.Current.State != "pending" {
				t.Errorf("data %+v", e.Data)
			}
		}
		if e.Data.ID == "p-failed" && (e.Data.Failure == nil || e.Data.Failure.Code != "PM01001" || !e.Data.Terminal) {
			t.Errorf("failed payment data %+v", e.Data)
		}
		if e.Data.ID == "r1" && (e.Data.ParentID == nil || *e.Data.ParentID != "p-failed") {
			t.Errorf("refund parent %v", e.Data.ParentID)
		}
	}
	var raw struct {
		Data struct {
			Amount struct{ Value string } `json:"amount"`
		} `json:"data"`
	}
	for _, m := range col.msgs {
		e, err := event.Decode(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		if e.Data.ID != "p-new" {
			continue
		}
		if err := json.Unmarshal(m.Data(), &raw); err != nil {
			t.Fatalf("event of p-new: %v", err)
		}
	}
	if raw.Data.Amount.Value != "326992.940222420597939290" {
		t.Errorf("amount on the wire %q, want the provider's exact text", raw.Data.Amount.Value)
	}

	// A second process on the same state file is refused with a clear message.
	err := run(context.Background(), []string{"run", "--config", cfgPath}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "state", "watcher.db")) || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("second process: %v", err)
	}

	// Status changes on old items, a nested change, and an addendum alone.
	cpn.set("p-pending", func(p map[string]any) { p["status"] = "FIAT_PAYMENT_INITIATED" })
	cpn.set("p-new", func(p map[string]any) { p["statusAddendum"] = "IN_MANUAL_REVIEW" })
	cpn.set("p-failed", func(p map[string]any) {
		p["refunds"] = []any{map[string]any{"id": "r1", "status": "COMPLETED", "transactionHash": "0xabc", "amount": map[string]any{"amount": "110.270000", "currency": "USDC"}}}
	})
	all := col.await(7)
	if got, want := summarize(all[4:]), []string{
		"payment/p-new CREATED+>CREATED+IN_MANUAL_REVIEW #2",
		"payment/p-pending CRYPTO_FUNDS_PENDING+>FIAT_PAYMENT_INITIATED+ #2",
		"payment_refund/r1 CREATED+>COMPLETED+ #2",
	}; !slices.Equal(got, want) {
		t.Fatalf("change events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	d.stop(t)

	// A restart publishes nothing new: wait for it to poll the provider a few times.
	d = startDaemon(t, cfgPath)
	before := cpn.requests.Load()
	for cpn.requests.Load() < before+6 {
		select {
		case <-cpn.served:
		case <-time.After(30 * time.Second):
			t.Fatalf("restarted watcher stopped polling\nlogs:\n%s", d.logs)
		}
	}
	d.stop(t)
	stream, err := js.Stream(t.Context(), "PAYMENT_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 7 {
		t.Fatalf("stream holds %d messages after restart, want 7", info.State.Msgs)
	}
	for _, m := range col.msgs {
		if bytes.Contains(m.Data(), []byte("e2e-very-secret")) {
			t.Fatalf("event carries the API key: %s", m.Data())
		}
	}
	if strings.Contains(d.logs.String(), "e2e-very-secret") {
		t.Fatal("logs carry the API key")
	}
}

func TestConfigCheckRedacts(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "w.yaml")
	t.Setenv("CHECK_KEY", "sk-do-not-print")
	writeFile(t, path, "sources:\n  - name: cpn\n    provider: circle_cpn_payments\n    api_key: ${CHECK_KEY}\n")
	var out, errOut bytes.Buffer
	if err := run(t.Context(), []string{"config", "check", "--config", path}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "sk-do-not-print") || !strings.Contains(out.String(), "api_key: <redacted>") {
		t.Fatalf("output:\n%s", out.String())
	}
	writeFile(t, path, "sources:\n  - name: cpn\n    provider: paypal_payouts\n    interval: \"5\"\n")
	err := run(t.Context(), []string{"config", "check", "-config", path}, &out, &errOut)
	for _, want := range []string{`sources[0].interval: "5" is not a duration`, `sources[0].provider: unknown provider "paypal_payouts"`, path} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}
