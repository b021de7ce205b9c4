package webhook_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/poller/provider"
	"github.com/payments-watcher/watcher/state/bbolt"
	"github.com/payments-watcher/watcher/webhook"
)

var statuses = diff.Mapping{
	"pending": {State: diff.Pending},
	"done":    {State: diff.Completed, Terminal: true},
}

// fakeProvider is a provider's list and read by id held in memory; it counts reads.
// When gate is set, a read by id signals reading (without waiting) and waits for gate
// to close.
type fakeProvider struct {
	mu      sync.Mutex
	items   []diff.Item
	gets    atomic.Int32
	gate    chan struct{}
	reading chan string
}

func (f *fakeProvider) add(id, status string, created time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, _ := statuses.Status(status, "")
	f.items = append(f.items, diff.Item{Kind: "payment", ID: id, Status: st, CreatedAt: created, Raw: []byte(`{"id":"` + id + `"}`)})
}

func (f *fakeProvider) set(id, status string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.items {
		if f.items[i].ID == id {
			f.items[i].Status, _ = statuses.Status(status, "")
		}
	}
}

func (f *fakeProvider) Page(context.Context, provider.Request) (provider.Page, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return provider.Page{Items: append([]diff.Item(nil), f.items...)}, nil
}

func (f *fakeProvider) Get(ctx context.Context, id string) (diff.Item, error) {
	f.gets.Add(1)
	if f.gate != nil {
		select {
		case f.reading <- id:
		default:
		}
		select {
		case <-f.gate:
		case <-ctx.Done():
			return diff.Item{}, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, it := range f.items {
		if it.ID == id {
			return it, nil
		}
	}
	return diff.Item{}, provider.ErrNotFound
}

// rig is one source's poller running with a long interval and refresh period, behind
// a webhook handler.
type rig struct {
	src   *fakeProvider
	store *bbolt.Store
	srv   *httptest.Server
	url   string
}

func newRig(t *testing.T, source string, v webhook.Verifier) *rig {
	t.Helper()
	r := &rig{src: &fakeProvider{}}
	r.src.add("item-1", "pending", time.Now().Add(-time.Hour))
	st, err := bbolt.Open(filepath.Join(t.TempDir(), "w.db"), bbolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	r.store = st
	p := poller.New(poller.Config{
		Name: source, Provider: "fake", Kind: "payment", Interval: time.Hour, DiscoveryOverlap: time.Minute,
		Lookback: 24 * time.Hour, OpenRefresh: time.Hour, OpenMaxAge: 24 * time.Hour, RateLimit: 100,
		Baseline: "silent", MaxPages: 10,
	}, r.src, st, "payments", slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "the baseline", func() bool {
		m, err := st.Meta(ctx, source)
		return err == nil && m.BaselineDone && !m.LastPoll.IsZero()
	})
	h := webhook.NewHandler(webhook.Options{
		Verifiers: map[string]webhook.Verifier{source: v},
		Target:    func(string) webhook.Hinter { return p },
		MaxBody:   4096,
	})
	r.srv = httptest.NewServer(h)
	t.Cleanup(r.srv.Close)
	r.url = r.srv.URL + "/webhooks/" + source
	return r
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// events returns the events in the outbox as "id:from>to".
func (r *rig) events(t *testing.T) []string {
	t.Helper()
	entries, err := r.store.Pending(t.Context(), 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		ev, err := event.Decode(e.Msg.Body)
		if err != nil {
			t.Fatal(err)
		}
		from := "nil"
		if ev.Data.Previous != nil {
			from = ev.Data.Previous.Status
		}
		out = append(out, ev.Data.ID+":"+from+">"+ev.Data.Current.Status)
	}
	return out
}

// waitEvent waits for the outbox to hold exactly want.
func (r *rig) waitEvent(t *testing.T, want string) {
	t.Helper()
	waitFor(t, "event "+want, func() bool {
		ev := r.events(t)
		return len(ev) == 1 && ev[0] == want
	})
}

func post(t *testing.T, url string, header map[string]string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func expect(t *testing.T, what string, code int, result string, wantCode int, wantResult string) {
	t.Helper()
	if code != wantCode || result != wantResult {
		t.Fatalf("%s: %d %s, want %d %s", what, code, result, wantCode, wantResult)
	}
}

func stripeSign(secret string, ts int64, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(mac, "%d.", ts)
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}

func stripeVerifier(t *testing.T, secret string) webhook.Verifier {
	t.Helper()
	v, err := webhook.Verifiers["stripe_crypto_onramp_sessions"](provider.Settings{Values: map[string]string{"webhook_secret": secret}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func stripeBody(typ, id string) []byte {
	return []byte(`{"id":"evt_1","object":"event","type":"` + typ + `","data":{"object":{"id":"` + id + `","object":"crypto.onramp_session"}}}`)
}

func TestStripeHintReadsTheItem(t *testing.T) {
	r := newRig(t, "onramp", stripeVerifier(t, "whsec_old, whsec_new"))
	r.src.set("item-1", "done")
	body := stripeBody("crypto.onramp_session_updated", "item-1")
	now := time.Now().Unix()
	// Rotation: a delivery signed with the new secret only, and with both.
	sig := "t=" + fmt.Sprint(now) + ",v1=" + stripeSign("whsec_new", now, body)
	code, res := post(t, r.url, map[string]string{"Stripe-Signature": sig}, body)
	expect(t, "signed with the new secret", code, res, 202, webhook.ResultAccepted)
	r.waitEvent(t, "item-1:pending>done")

	// The same delivery again is a replay: acknowledged, nothing read.
	gets := r.src.gets.Load()
	code, res = post(t, r.url, map[string]string{"Stripe-Signature": sig}, body)
	expect(t, "replay", code, res, 200, webhook.ResultReplayed)
	both := "t=" + fmt.Sprint(now) + ",v1=" + stripeSign("whsec_old", now, body) + ",v1=" + stripeSign("whsec_x", now, body)
	code, res = post(t, r.url, map[string]string{"Stripe-Signature": both}, body)
	expect(t, "signed with the old secret beside an unknown one", code, res, 202, webhook.ResultAccepted)
	waitFor(t, "the second read", func() bool { return r.src.gets.Load() == gets+1 })
	if ev := r.events(t); len(ev) != 1 {
		t.Fatalf("a second read of an unchanged item published %v", ev)
	}
	// The dotted event name is accepted; another type is acknowledged and ignored.
	other := stripeBody("charge.succeeded", "item-1")
	code, res = post(t, r.url, map[string]string{"Stripe-Signature": "t=" + fmt.Sprint(now) + ",v1=" + stripeSign("whsec_new", now, other)}, other)
	expect(t, "another event type", code, res, 200, webhook.ResultIgnored)
	dotted := stripeBody("crypto.onramp_session.updated", "item-1")
	code, res = post(t, r.url, map[string]string{"Stripe-Signature": "t=" + fmt.Sprint(now) + ",v1=" + stripeSign("whsec_new", now, dotted)}, dotted)
	if code != 202 {
		t.Fatalf("dotted event name: %d %s", code, res)
	}
}

func TestStripeRefusals(t *testing.T) {
	r := newRig(t, "onramp", stripeVerifier(t, "whsec_a"))
	body := stripeBody("crypto.onramp_session_updated", "item-1")
	now := time.Now().Unix()
	old := now - 6*60
	cases := []struct {
		name, header string
		body         []byte
		code         int
		result       string
	}{
		{"unsigned", "", body, 401, webhook.ResultUnsigned},
		{"no v1", fmt.Sprintf("t=%d,v0=abc", now), body, 401, webhook.ResultUnsigned},
		{"forged", fmt.Sprintf("t=%d,v1=%s", now, stripeSign("whsec_other", now, body)), body, 401, webhook.ResultBadSignature},
		{"body changed", fmt.Sprintf("t=%d,v1=%s", now, stripeSign("whsec_a", now, body)), stripeBody("crypto.onramp_session_updated", "item-2"), 401, webhook.ResultBadSignature},
		{"stale", fmt.Sprintf("t=%d,v1=%s", old, stripeSign("whsec_a", old, body)), body, 401, webhook.ResultStale},
		{"malformed header", "garbage", body, 400, webhook.ResultMalformed},
		{"oversized", fmt.Sprintf("t=%d,v1=%s", now, stripeSign("whsec_a", now, body)), bytes.Repeat([]byte("x"), 5000), 413, webhook.ResultTooLarge},
	}
	for _, c := range cases {
		h := map[string]string{}
		if c.header != "" {
			h["Stripe-Signature"] = c.header
		}
		code, res := post(t, r.url, h, c.body)
		expect(t, c.name, code, res, c.code, c.result)
	}
	// Hints are read in order: once a hint sent after them has been read, any read
	// a refused delivery had queued would have been made.
	r.src.set("item-1", "done")
	code, res := post(t, r.url, map[string]string{"Stripe-Signature": fmt.Sprintf("t=%d,v1=%s", now, stripeSign("whsec_a", now, body))}, body)
	expect(t, "a signed delivery after them", code, res, 202, webhook.ResultAccepted)
	r.waitEvent(t, "item-1:pending>done")
	if n := r.src.gets.Load(); n != 1 {
		t.Fatalf("%d reads, want 1: the signed delivery's alone", n)
	}
}

// While the poller is reading, a hint of an id already queued is coalesced, and one
// beyond the queue's 1024 distinct ids is dropped: both are answered 202.
func TestHintQueueCoalescesAndDrops(t *testing.T) {
	r := newRig(t, "onramp", stripeVerifier(t, "whsec_a"))
	r.src.gate, r.src.reading = make(chan struct{}), make(chan string, 1)
	defer close(r.src.gate)
	n := 0
	hint := func(id string) (int, string) {
		n++ // another event id, so that each delivery is signed differently
		body := []byte(fmt.Sprintf(`{"id":"evt_%d","object":"event","type":"crypto.onramp_session_updated","data":{"object":{"id":%q}}}`, n, id))
		now := time.Now().Unix()
		return post(t, r.url, map[string]string{"Stripe-Signature": fmt.Sprintf("t=%d,v1=%s", now, stripeSign("whsec_a", now, body))}, body)
	}
	code, res := hint("item-1")
	expect(t, "first hint", code, res, 202, webhook.ResultAccepted)
	if id := <-r.src.reading; id != "item-1" {
		t.Fatalf("reading %s, want item-1", id)
	}
	// The poller is held in the read of item-1: the queue fills.
	code, res = hint("item-2")
	expect(t, "queued", code, res, 202, webhook.ResultAccepted)
	code, res = hint("item-2")
	expect(t, "queued again", code, res, 202, webhook.ResultCoalesced)
	for i := range poller.DefaultHintQueue - 1 {
		code, res = hint(fmt.Sprintf("other-%d", i))
		expect(t, "filling the queue", code, res, 202, webhook.ResultAccepted)
	}
	code, res = hint("one-too-many")
	expect(t, "queue full", code, res, 202, webhook.ResultDropped)
}

func TestNotHeldReadsNothing(t *testing.T) {
	v := stripeVerifier(t, "whsec_a")
	h := webhook.NewHandler(webhook.Options{Verifiers: map[string]webhook.Verifier{"onramp": v}})
	srv := httptest.NewServer(h)
	defer srv.Close()
	body := stripeBody("crypto.onramp_session_updated", "item-1")
	now := time.Now().Unix()
	code, res := post(t, srv.URL+"/webhooks/onramp", map[string]string{"Stripe-Signature": fmt.Sprintf("t=%d,v1=%s", now, stripeSign("whsec_a", now, body))}, body)
	expect(t, "replica without the lease", code, res, 202, webhook.ResultNotHeld)
	code, _ = post(t, srv.URL+"/webhooks/other", nil, body)
	if code != 404 {
		t.Fatalf("unknown source: %d", code)
	}
}

func coindirectSign(secret, path, contentType string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(path + contentType))
	mac.Write(body)
	return strings.ToUpper(hex.EncodeToString(mac.Sum(nil)))
}

func TestCoindirectHintReadsTheItem(t *testing.T) {
	v, err := webhook.Verifiers["coindirect_payments"](provider.Settings{Values: map[string]string{
		"webhook_secret": "merchant-secret", "webhook_signature_header": "X-Test-Signature"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, "cd", v)
	r.src.set("item-1", "done")
	body := []byte(`{"source":"payment","event":"statusChanged","data":{"uuid":"item-1","status":"COMPLETE"}}`)
	ct := "application/json"
	code, res := post(t, r.url, map[string]string{"Content-Type": ct, "X-Test-Signature": coindirectSign("wrong", "/webhooks/cd", ct, body)}, body)
	expect(t, "forged", code, res, 401, webhook.ResultBadSignature)
	code, res = post(t, r.url, map[string]string{"Content-Type": ct}, body)
	expect(t, "unsigned", code, res, 401, webhook.ResultUnsigned)
	if n := r.src.gets.Load(); n != 0 {
		t.Fatalf("refused deliveries made %d reads", n)
	}
	code, res = post(t, r.url, map[string]string{"Content-Type": ct, "X-Test-Signature": coindirectSign("merchant-secret", "/webhooks/cd", ct, body)}, body)
	expect(t, "signed", code, res, 202, webhook.ResultAccepted)
	r.waitEvent(t, "item-1:pending>done")
}

// circleKeys serves GET /v2/notifications/publicKey/{id} for one key and counts fetches.
type circleKeys struct {
	priv    *ecdsa.PrivateKey
	id      string
	fetches atomic.Int32
}

func (c *circleKeys) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.fetches.Add(1)
	if r.URL.Path != "/v2/notifications/publicKey/"+c.id || r.Header.Get("Authorization") != "Bearer circle-key" {
		http.NotFound(w, r)
		return
	}
	der, _ := x509.MarshalPKIXPublicKey(&c.priv.PublicKey)
	fmt.Fprintf(w, `{"data":{"id":%q,"algorithm":"ECDSA_SHA_256","publicKey":%q}}`, c.id, base64.StdEncoding.EncodeToString(der))
}

func (c *circleKeys) sign(t *testing.T, priv *ecdsa.PrivateKey, body []byte) string {
	t.Helper()
	d := sha256.Sum256(body)
	sig, err := ecdsa.SignASN1(rand.Reader, priv, d[:])
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

// circleVerifier returns Circle's key server (key-1, served over httptest until the
// test ends) and a Circle CPN verifier that fetches its keys from it.
func circleVerifier(t *testing.T) (*circleKeys, webhook.Verifier) {
	t.Helper()
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	keys := &circleKeys{priv: priv, id: "key-1"}
	api := httptest.NewServer(keys)
	t.Cleanup(api.Close)
	client := provider.NewClient(provider.ClientOptions{BaseURL: api.URL})
	v, err := webhook.Verifiers["circle_cpn_payments"](provider.Settings{BaseURL: api.URL, Values: map[string]string{"api_key": "circle-key"}}, client)
	if err != nil {
		t.Fatal(err)
	}
	return keys, v
}

func TestCircleHintReadsTheItemWithACachedKey(t *testing.T) {
	keys, v := circleVerifier(t)
	r := newRig(t, "cpn", v)

	resp, err := http.Head(r.url)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("HEAD: %v %v", resp, err)
	}
	notification := func(n int, typ, payment string) []byte {
		return []byte(fmt.Sprintf(`{"subscriptionId":"s","notificationId":"n-%d","notificationType":%q,"notification":{"id":%q},"timestamp":"2026-11-22T10:00:00Z","version":2}`, n, typ, payment))
	}
	forger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	body := notification(0, "cpn.payment.completed", "item-1")
	code, res := post(t, r.url, map[string]string{"X-Circle-Key-Id": "key-1", "X-Circle-Signature": keys.sign(t, forger, body)}, body)
	expect(t, "forged", code, res, 401, webhook.ResultBadSignature)
	code, res = post(t, r.url, map[string]string{"X-Circle-Key-Id": "key-1"}, body)
	expect(t, "unsigned", code, res, 401, webhook.ResultUnsigned)
	if n := r.src.gets.Load(); n != 0 {
		t.Fatalf("refused deliveries made %d reads", n)
	}

	r.src.set("item-1", "done")
	for n := 1; n <= 5; n++ {
		body := notification(n, "cpn.payment.completed", "item-1")
		code, res := post(t, r.url, map[string]string{"X-Circle-Key-Id": "key-1", "X-Circle-Signature": keys.sign(t, keys.priv, body)}, body)
		if code != 202 {
			t.Fatalf("notification %d: %d %s", n, code, res)
		}
	}
	r.waitEvent(t, "item-1:pending>done")
	if n := keys.fetches.Load(); n != 1 {
		t.Fatalf("%d key fetches for six deliveries, want 1", n)
	}
	// A retry of a delivery keeps its notificationId: a replay.
	body = notification(5, "cpn.payment.completed", "item-1")
	code, res = post(t, r.url, map[string]string{"X-Circle-Key-Id": "key-1", "X-Circle-Signature": keys.sign(t, keys.priv, body)}, body)
	expect(t, "retry", code, res, 200, webhook.ResultReplayed)
}

// Deliveries naming key ids Circle never issued cannot make watcher call Circle at
// their rate: fetches of keys not cached are limited to a burst of 5, then one every
// 10s; a delivery beyond that is answered key_unavailable (503, Circle retries) without
// a request, and a cached key verifies as before.
func TestCircleKeyFetchesAreLimited(t *testing.T) {
	keys, v := circleVerifier(t)
	body := []byte(`{"subscriptionId":"s","notificationId":"n-1","notificationType":"cpn.payment.completed","notification":{"id":"item-1"},"version":2}`)
	verify := func(keyID string, at time.Time) error {
		_, err := v.Verify(t.Context(), webhook.Delivery{Body: body, Now: at,
			Header: http.Header{"X-Circle-Key-Id": {keyID}, "X-Circle-Signature": {keys.sign(t, keys.priv, body)}}})
		return err
	}
	now := time.Date(2026, 12, 5, 1, 0, 0, 0, time.UTC)
	if err := verify("key-1", now); err != nil {
		t.Fatalf("the issued key: %v", err)
	}
	var refused, putOff int
	for i := range 100 {
		err := verify(fmt.Sprintf("made-up-%d", i), now.Add(time.Duration(i)*time.Millisecond))
		switch {
		case errors.Is(err, webhook.ErrBadSignature):
			refused++
		case errors.Is(err, webhook.ErrKeyUnavailable):
			putOff++
		default:
			t.Fatalf("made-up key id %d: %v, want a bad signature or the key unavailable", i, err)
		}
	}
	if n := keys.fetches.Load(); n != 5 || refused != 4 || putOff != 96 {
		t.Fatalf("100 made-up key ids: %d key fetches in all, %d refused, %d put off; want 5 (the burst, the issued key's included), 4, 96",
			n, refused, putOff)
	}
	if err := verify("key-1", now.Add(time.Second)); err != nil {
		t.Fatalf("the cached key after made-up ones: %v", err)
	}
	if err := verify("made-up-late", now.Add(11*time.Second)); !errors.Is(err, webhook.ErrBadSignature) || keys.fetches.Load() != 6 {
		t.Fatalf("a made-up key id 11s later: %v after %d fetches, want a bad signature after one more fetch", err, keys.fetches.Load())
	}
}
