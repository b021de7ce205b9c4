package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
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

	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/internal/natstest"
	"github.com/payments-watcher/watcher/sim"
	"github.com/payments-watcher/watcher/webhook"
)

// The tests here post webhooks to a running daemon the way each provider does
// (docs/webhooks.md), against the simulator, and read the events off the stream.

// hookProvider is one provider with webhooks, as its deliveries look.
type hookProvider struct {
	provider, source string
	// idField names the item's id in the provider's object.
	idField string
	// created, changed and again are the statuses the test gives an item: at
	// creation, in the change a hint reports, and in a second change. claim is the
	// status the webhook body states, which the provider's never is.
	created, changed, again, claim string
	// envelope wraps the provider's object in a delivery body.
	envelope func(obj map[string]any) []byte
	// sign returns the headers of a delivery of body to u; forge signs with a key the
	// receiver does not have.
	sign func(h *hookRig, u *url.URL, body []byte, forge bool) http.Header
}

var hookProviders = []hookProvider{
	{
		provider: sim.ProviderStripe, source: "onramp", idField: "id",
		created: "initialized", changed: "requires_payment", again: "fulfillment_processing", claim: "fulfillment_complete",
		envelope: func(obj map[string]any) []byte {
			return mustMarshal(map[string]any{"id": "evt_" + randomHex(12), "object": "event", "api_version": sim.DefaultStripeVersion,
				"created": time.Now().Unix(), "data": map[string]any{"object": obj}, "livemode": false, "pending_webhooks": 1,
				"request": map[string]any{"id": nil, "idempotency_key": nil}, "type": "crypto.onramp_session_updated"})
		},
		sign: func(_ *hookRig, _ *url.URL, body []byte, forge bool) http.Header {
			secret := sim.DefaultStripeWebhookSecret
			if forge {
				secret = "whsec_notTheEndpointSecret"
			}
			return stripeHeader(secret, time.Now().Unix(), body)
		},
	},
	{
		provider: sim.ProviderCoindirect, source: "coindirect", idField: "uuid",
		created: "PENDING", changed: "PROCESSING", again: "UNDERPAID", claim: "COMPLETE",
		envelope: func(obj map[string]any) []byte {
			return mustMarshal(map[string]any{"source": "payment", "event": "statusChanged", "data": obj})
		},
		sign: func(_ *hookRig, u *url.URL, body []byte, forge bool) http.Header {
			secret := sim.DefaultCoindirectWebhookSecret
			if forge {
				secret = "not-the-merchant-secret"
			}
			mac := hmac.New(sha256.New, []byte(secret))
			mac.Write([]byte(u.Path + u.RawQuery + "application/json"))
			mac.Write(body)
			return http.Header{"Content-Type": {"application/json"}, "X-Signature": {hex.EncodeToString(mac.Sum(nil))}}
		},
	},
	{
		provider: sim.ProviderCPN, source: "cpn", idField: "id",
		created: "CREATED", changed: "CRYPTO_FUNDS_PENDING", again: "FIAT_PAYMENT_INITIATED", claim: "COMPLETED",
		envelope: func(obj map[string]any) []byte {
			return mustMarshal(map[string]any{"subscriptionId": "5f3c1f2e-9a86-4a8e-bc1f-0d1e7c2b6a11", "notificationId": uuidV4(),
				"notificationType": "cpn.payment." + lowerCamelStatus(obj["status"].(string)), "notification": obj,
				"timestamp": time.Now().UTC().Format(time.RFC3339Nano), "version": 2})
		},
		sign: func(h *hookRig, _ *url.URL, body []byte, forge bool) http.Header {
			key := h.circleKey
			if forge {
				key = h.otherKey
			}
			return circleHeader(h.circleKeyID, key, body)
		},
	},
}

// hookRig is a simulator and a daemon polling all its providers, with webhooks on.
type hookRig struct {
	simURL   string
	reads    *requestCounter
	hooksURL string
	metrics  string
	events   *collector
	// the simulator's Circle notification key, and a key Circle does not have
	circleKeyID string
	circleKey   *ecdsa.PrivateKey
	otherKey    *ecdsa.PrivateKey
	// answers tallies the deliveries' answers by source and result, as the metric
	// must count them.
	answers map[string]map[string]int
}

// newHookRig starts the simulator, NATS and the daemon, whose sources poll with
// schedule (source settings in YAML, one a line). Before the daemon starts it creates,
// per provider, the items named by names in the created status, createdAgo before now
// (their ids are returned by provider and name). The daemon's baseline records them
// silently.
func newHookRig(t *testing.T, schedule string, createdAgo time.Duration, names ...string) (*hookRig, map[string]map[string]string) {
	t.Helper()
	hooksAddr, httpAddr := hookAddrs(t)
	var skew atomic.Int64 // the simulator's clock is this far from the wall clock
	skew.Store(int64(-createdAgo))
	s, err := sim.New(sim.Config{Seed: 11, History: 2, HistorySpan: time.Hour, OpenShare: 1,
		Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	r := &hookRig{reads: &requestCounter{h: s.Handler(), n: map[string]int{}}, hooksURL: "http://" + hooksAddr + "/webhooks/",
		metrics: "http://" + httpAddr + "/metrics", answers: map[string]map[string]int{}}
	provSrv := httptest.NewServer(r.reads)
	t.Cleanup(provSrv.Close)
	r.simURL = provSrv.URL
	r.circleKeyID, r.circleKey = s.CircleWebhookKey()
	if r.otherKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}

	ids := map[string]map[string]string{}
	for _, p := range hookProviders {
		ids[p.provider] = map[string]string{}
		for _, name := range names {
			obj := simPost(t, r.simURL+"/_sim/items/"+p.provider, `{"status":"`+p.created+`"}`)
			ids[p.provider][name] = obj[p.idField].(string)
		}
	}
	skew.Store(0)

	ns := natstest.JetStream(t)
	dir := t.TempDir()
	raw, sources := demoConfigHooks(dir, ns.ClientURL(), r.simURL, httpAddr, "", hooksAddr)
	doc := string(raw)
	doc = strings.Replace(doc, "webhooks:\n", "webhooks:\n  max_body: 64KiB\n", 1)
	var block strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(schedule), "\n") {
		block.WriteString("    " + strings.TrimSpace(l) + "\n")
	}
	doc = strings.ReplaceAll(doc, "    interval: 2s\n    open_refresh: 2s\n    open_refresh_max: 20s\n", block.String())
	doc = strings.ReplaceAll(doc, "baseline: emit", "baseline: silent")
	if strings.Count(doc, block.String()) != len(sources) || strings.Count(doc, "baseline: silent") != len(sources) || !strings.Contains(doc, "max_body: 64KiB") {
		t.Fatalf("the demo configuration changed shape; the schedule, baseline or max_body was not set:\n%s", doc)
	}
	logs, stop := runConfig(t, dir, doc)
	t.Cleanup(stop)
	for range sources {
		waitLog(t, logs, "baseline walk complete")
	}
	drainLogs(t, logs)
	r.events = newCollector(t, natstest.Connect(t, ns.ClientURL()))
	return r, ids
}

// drainLogs keeps reading the daemon's log lines (kept whole in logs' buffer) until
// the test ends, so that logging never waits for the test.
func drainLogs(t *testing.T, logs *lineWriter) {
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		for {
			select {
			case <-logs.lines:
			case <-done:
				return
			}
		}
	}()
}

// force sets item id's status at the simulator and returns the provider's object.
func (r *hookRig) force(t *testing.T, p hookProvider, id, status string) map[string]any {
	t.Helper()
	return simPost(t, r.simURL+"/_sim/items/"+p.provider+"/"+id+"/status", `{"status":"`+status+`"}`)
}

// delivery is one webhook request.
type delivery struct {
	header http.Header
	body   []byte
}

// hint returns a signed delivery naming the item of obj, whose body states claim as
// its status.
func (r *hookRig) hint(t *testing.T, p hookProvider, obj map[string]any, claim string, forge bool) delivery {
	t.Helper()
	stated := map[string]any{}
	for k, v := range obj {
		stated[k] = v
	}
	stated["status"] = claim
	body := p.envelope(stated)
	u, err := url.Parse(r.hooksURL + p.source)
	if err != nil {
		t.Fatal(err)
	}
	return delivery{p.sign(r, u, body, forge), body}
}

// post posts d to source's webhook endpoint, expects the answer want (code and
// result) and tallies it. A Circle delivery answered 503 while the key is being
// fetched is posted again, as Circle retries it.
func (r *hookRig) post(t *testing.T, source string, d delivery, wantCode int, want string) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		code, result, retryAfter := postHook(t, r.hooksURL+source, d)
		r.tally(source, result)
		if result == webhook.ResultKeyUnavailable && want != result && attempt < 30 {
			if code != http.StatusServiceUnavailable || retryAfter != "1" {
				t.Fatalf("%s: key_unavailable answered %d, Retry-After %q; want 503, Retry-After 1", source, code, retryAfter)
			}
			continue
		}
		if code != wantCode || result != want {
			t.Fatalf("%s: delivery answered %d %q, want %d %q", source, code, result, wantCode, want)
		}
		return
	}
}

func (r *hookRig) tally(source, result string) {
	if r.answers[source] == nil {
		r.answers[source] = map[string]int{}
	}
	r.answers[source][result]++
}

func postHook(t *testing.T, u string, d delivery) (code int, result, retryAfter string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, bytes.NewReader(d.body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = d.header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), resp.Header.Get("Retry-After")
}

// awaitItem reads the stream until the event of top-level item id with sequence seq
// has arrived, and returns it.
func (r *hookRig) awaitItem(t *testing.T, id string, seq uint32) event.Event {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, e := range r.events.await(len(r.events.msgs)) {
			if e.Data.ID == id && e.Data.ParentID == nil && e.Data.Sequence == seq {
				return e
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no event of %s with sequence %d within 30s; events: %v", id, seq, summarize(r.events.await(len(r.events.msgs))))
		}
		r.events.await(len(r.events.msgs) + 1)
	}
}

// itemEvents returns the events of top-level item id read off the stream so far.
func (r *hookRig) itemEvents(id string) []event.Event {
	var out []event.Event
	for _, e := range r.events.await(len(r.events.msgs)) {
		if e.Data.ID == id && e.Data.ParentID == nil {
			out = append(out, e)
		}
	}
	return out
}

// checkPolled checks that e is the event polling publishes for item id of p going
// from one status to another as the provider reports it in obj: the provider's
// statuses, the sequence, the deterministic id of that transition, and the provider's
// object as data.item.
func checkPolled(t *testing.T, p hookProvider, e event.Event, obj map[string]any, from, to string, seq uint32) {
	t.Helper()
	id := obj[p.idField].(string)
	d := e.Data
	if d.Source != p.source || d.Provider != p.provider || d.ID != id || e.Subject != id || e.Source != "watcher/"+p.source {
		t.Errorf("%s: event names source %q provider %q item %q (subject %q, %q)", p.source, d.Source, d.Provider, d.ID, e.Subject, e.Source)
	}
	if d.Previous == nil || d.Previous.Status != from || d.Current.Status != to || d.Sequence != seq {
		t.Errorf("%s: event %+v -> %+v sequence %d, want %s -> %s sequence %d (the provider's, not the webhook's)",
			p.source, d.Previous, d.Current, d.Sequence, from, to, seq)
	}
	if want := event.ID(p.source, d.Kind, "", id, d.Sequence, d.Previous, d.Current); e.ID != want {
		t.Errorf("%s: event id %s, want %s (the transition's deterministic id)", p.source, e.ID, want)
	}
	var item map[string]any
	if err := json.Unmarshal(d.Item, &item); err != nil {
		t.Fatalf("%s: data.item: %v", p.source, err)
	}
	for _, k := range []string{p.idField, "status"} {
		if item[k] != obj[k] {
			t.Errorf("%s: data.item.%s = %v, the provider's object has %v", p.source, k, item[k], obj[k])
		}
	}
}

// A signed hint makes the item's read happen at once: with the interval and the
// refresh period at an hour, the event of a change reaches the stream promptly, as
// polling would publish it, with the provider's status whatever the webhook body
// says. Forged, stale, unsigned, oversized and replayed deliveries are refused with
// their documented answers, counted, and read nothing.
func TestWebhookHintsPerProvider(t *testing.T) {
	r, ids := newHookRig(t, "interval: 1h\nopen_refresh: 1h", 0, "hinted", "refused")

	// Circle requires the endpoint to answer HEAD; sources without webhooks answer 404.
	for source, want := range map[string]int{"cpn": 200, "onramp": 200, "coindirect": 200, "ramp": 404, "settlements": 404, "nosuch": 404} {
		resp, err := http.Head(r.hooksURL + source)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("HEAD /webhooks/%s: %d, want %d", source, resp.StatusCode, want)
		}
	}
	for _, source := range []string{"ramp", "settlements"} {
		if code, _, _ := postHook(t, r.hooksURL+source, delivery{http.Header{"Content-Type": {"application/json"}}, []byte(`{}`)}); code != http.StatusNotFound {
			t.Errorf("POST /webhooks/%s: %d, want 404 (no webhooks for this source)", source, code)
		}
	}

	for _, p := range hookProviders {
		t.Run(p.provider, func(t *testing.T) {
			hinted, refused := ids[p.provider]["hinted"], ids[p.provider]["refused"]

			// A change and its hint, whose body states another status.
			start := time.Now()
			obj := r.force(t, p, hinted, p.changed)
			accepted := r.hint(t, p, obj, p.claim, false)
			r.post(t, p.source, accepted, http.StatusAccepted, webhook.ResultAccepted)
			e := r.awaitItem(t, hinted, 2)
			t.Logf("%s: change -> event on the stream in %v (interval and refresh period 1h)", p.source, time.Since(start).Round(time.Millisecond))
			checkPolled(t, p, e, obj, p.created, p.changed, 2)

			// Refused deliveries naming an item whose change is waiting to be read.
			objRefused := r.force(t, p, refused, p.changed)
			r.post(t, p.source, accepted, http.StatusOK, webhook.ResultReplayed)
			r.post(t, p.source, r.hint(t, p, objRefused, p.changed, true), http.StatusUnauthorized, webhook.ResultBadSignature)
			unsigned := r.hint(t, p, objRefused, p.changed, false)
			unsigned.header = http.Header{"Content-Type": {"application/json"}}
			r.post(t, p.source, unsigned, http.StatusUnauthorized, webhook.ResultUnsigned)
			big := map[string]any{}
			for k, v := range objRefused {
				big[k] = v
			}
			big["metadata"] = map[string]any{"padding": strings.Repeat("x", 64<<10)}
			r.post(t, p.source, r.hint(t, p, big, p.changed, false), http.StatusRequestEntityTooLarge, webhook.ResultTooLarge)
			switch p.provider {
			case sim.ProviderStripe:
				stale := r.hint(t, p, objRefused, p.changed, false)
				stale.header = stripeHeader(sim.DefaultStripeWebhookSecret, time.Now().Add(-webhook.Tolerance-time.Minute).Unix(), stale.body)
				r.post(t, p.source, stale, http.StatusUnauthorized, webhook.ResultStale)
			case sim.ProviderCPN:
				unknown := r.hint(t, p, objRefused, p.changed, false)
				unknown.header = circleHeader("key-circle-never-issued", r.otherKey, unknown.body)
				r.post(t, p.source, unknown, http.StatusUnauthorized, webhook.ResultBadSignature)
				r.post(t, p.source, unknown, http.StatusUnauthorized, webhook.ResultBadSignature)
			}

			// A second change of the hinted item, hinted: hints are read in order, so
			// once its event is on the stream any read a refused delivery had queued
			// would have been made.
			obj = r.force(t, p, hinted, p.again)
			r.post(t, p.source, r.hint(t, p, obj, p.again, false), http.StatusAccepted, webhook.ResultAccepted)
			checkPolled(t, p, r.awaitItem(t, hinted, 3), obj, p.changed, p.again, 3)
			if n := r.reads.reads(hinted); n != 2 {
				t.Errorf("%s: %d reads of the hinted item, want 2 (one per accepted hint; the replay reads nothing)", p.source, n)
			}
			if n := r.reads.reads(refused); n != 0 {
				t.Errorf("%s: %d reads of the item named only by refused deliveries, want 0", p.source, n)
			}
			if evs := r.itemEvents(refused); len(evs) != 0 {
				t.Errorf("%s: events of the item named only by refused deliveries: %v", p.source, summarize(evs))
			}
			if len(r.itemEvents(hinted)) != 2 {
				t.Errorf("%s: events of the hinted item: %v, want its two changes", p.source, summarize(r.itemEvents(hinted)))
			}

			// Signed deliveries of another event type name nothing to read.
			var other delivery
			switch p.provider {
			case sim.ProviderStripe:
				other.body = mustMarshal(map[string]any{"id": "evt_" + randomHex(12), "object": "event", "type": "payment_intent.succeeded",
					"data": map[string]any{"object": map[string]any{"id": "pi_" + randomHex(12), "object": "payment_intent"}}})
			case sim.ProviderCoindirect:
				other.body = mustMarshal(map[string]any{"source": "merchant", "event": "settingsChanged", "data": map[string]any{}})
			case sim.ProviderCPN:
				other.body = mustMarshal(map[string]any{"subscriptionId": "5f3c1f2e-9a86-4a8e-bc1f-0d1e7c2b6a11", "notificationId": uuidV4(),
					"notificationType": "webhooks.test", "notification": map[string]any{"hello": "world"}, "version": 2})
			}
			u, _ := url.Parse(r.hooksURL + p.source)
			other.header = p.sign(r, u, other.body, false)
			r.post(t, p.source, other, http.StatusOK, webhook.ResultIgnored)

			// The metric counts every answer under its documented label.
			m := metricsText(t, r.metrics)
			for _, result := range webhook.Results {
				line := fmt.Sprintf(`watcher_webhooks_total{result=%q,source=%q} %d`, result, p.source, r.answers[p.source][result])
				if !strings.Contains(m, line+"\n") {
					t.Errorf("metrics: want %s; have\n%s", line, grepLines(m, `source="`+p.source+`"`))
				}
			}
		})
	}
	if n := r.reads.count("GET /v2/notifications/publicKey/" + r.circleKeyID); n != 1 {
		t.Errorf("%d fetches of the Circle key, want 1 (cached)", n)
	}
	if n := r.reads.count("GET /v2/notifications/publicKey/key-circle-never-issued"); n != 1 {
		t.Errorf("%d fetches of an unknown Circle key id named twice, want 1 (the failure is remembered)", n)
	}
}

// A change whose webhook never comes is published by polling at the first cycle
// after the item's refresh period has passed, exactly as a hint's read would publish
// it. The item is older than discovery_overlap (10m), so that only its refresh can find
// the change; refresh runs within cycles, so the interval is short too.
func TestWebhookDroppedHintPollingCatchesUp(t *testing.T) {
	r, ids := newHookRig(t, "interval: 1s\nopen_refresh: 1s\nopen_refresh_max: 0s", 30*time.Minute, "dropped")
	for _, p := range hookProviders {
		t.Run(p.provider, func(t *testing.T) {
			id := ids[p.provider]["dropped"]
			start := time.Now()
			obj := r.force(t, p, id, p.changed)
			e := r.awaitItem(t, id, 2)
			t.Logf("%s: change -> event on the stream in %v without a webhook (interval and refresh period 1s)", p.source, time.Since(start).Round(time.Millisecond))
			checkPolled(t, p, e, obj, p.created, p.changed, 2)
			if age := time.Since(e.Data.CreatedAt); age < 20*time.Minute {
				t.Errorf("%s: the item was created %v ago, within discovery_overlap: discovery, not refresh, may have read it", p.source, age.Round(time.Second))
			}
		})
	}
}

// requestCounter passes requests to the simulator and counts those watcher makes, by
// method and path.
type requestCounter struct {
	h  http.Handler
	mu sync.Mutex
	n  map[string]int
}

func (c *requestCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.UserAgent(), "watcher/") {
		c.mu.Lock()
		c.n[r.Method+" "+r.URL.Path]++
		c.mu.Unlock()
	}
	c.h.ServeHTTP(w, r)
}

func (c *requestCounter) count(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[key]
}

// reads returns how many requests watcher made whose path names item id.
func (c *requestCounter) reads(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for k, v := range c.n {
		if strings.Contains(k, "/"+id) {
			n += v
		}
	}
	return n
}

// stripeHeader signs body as Stripe does at time ts.
func stripeHeader(secret string, ts int64, body []byte) http.Header {
	t := strconv.FormatInt(ts, 10)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(t + "."))
	mac.Write(body)
	return http.Header{"Content-Type": {"application/json"}, "Stripe-Signature": {"t=" + t + ",v1=" + hex.EncodeToString(mac.Sum(nil))}}
}

// circleHeader signs body as Circle does, with key under keyID.
func circleHeader(keyID string, key *ecdsa.PrivateKey, body []byte) http.Header {
	digest := sha256.Sum256(body)
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		// Left unsigned: the delivery is then refused as unsigned, which the test reports.
		return http.Header{"Content-Type": {"application/json"}, "X-Circle-Key-Id": {keyID}}
	}
	return http.Header{"Content-Type": {"application/json"}, "X-Circle-Signature": {base64.StdEncoding.EncodeToString(sig)}, "X-Circle-Key-Id": {keyID}}
}

// mustMarshal encodes a body built of JSON values, which always encodes.
func mustMarshal(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func uuidV4() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// lowerCamelStatus turns CRYPTO_FUNDS_PENDING into cryptoFundsPending, as CPN
// notification types name payment statuses.
func lowerCamelStatus(s string) string {
	parts := strings.Split(strings.ToLower(s), "_")
	for i := 1; i < len(parts); i++ {
		if parts[i] != "" {
			parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
		}
	}
	return strings.Join(parts, "")
}
