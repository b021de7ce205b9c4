package sim

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
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Webhook secrets used when a WebhookTarget leaves Secret empty. Like the demo API
// credentials they are not secrets.
const (
	DefaultStripeWebhookSecret     = "whsec_simDemoWebhookSecret000000"
	DefaultCoindirectWebhookSecret = "sim-coindirect-webhook-secret"
)

// webhookQueue bounds the deliveries waiting for a provider's sender; a change made
// while it is full is not delivered (counted as Overflow).
const webhookQueue = 1024

// WebhookTarget is where one provider's webhooks go and how they misbehave. Only
// circle_cpn_payments, stripe_crypto_onramp_sessions and coindirect_payments send
// webhooks: one per change of a top-level item's status (or CPN status addendum),
// never on creation, as the providers document.
//
//   - Stripe: event crypto.onramp_session_updated with data.object the session, signed
//     in Stripe-Signature (t=…,v1=hex HMAC-SHA256 of "{t}.{body}" with Secret).
//   - Coindirect: {"source":"payment","event":"statusChanged","data":{payment}}, signed
//     in X-Signature with hex HMAC-SHA256 of URL path + raw query + Content-Type + body.
//   - Circle CPN: a v2 notification {notificationId, notificationType
//     "cpn.payment.<status>", notification: the payment, timestamp, version 2}, signed
//     in X-Circle-Signature (base64 DER ECDSA P-256 over SHA-256 of the body) with the
//     simulator's key named in X-Circle-Key-Id and served at
//     GET /v2/notifications/publicKey/{keyId}. Secret is unused.
type WebhookTarget struct {
	URL string `json:"url"`
	// Secret is the HMAC key (Stripe, Coindirect); empty means the Default*WebhookSecret.
	Secret string        `json:"secret,omitempty"`
	Faults WebhookFaults `json:"faults"`
}

// WebhookFaults make a provider's deliveries unreliable. Each delivery draws, in this
// order: dropped (DropRate; nothing else happens), a delay uniform in [0, MaxDelay),
// a forged signature (ForgeRate), a second identical POST (DuplicateRate) and, after
// it, a POST of an earlier delivery again (ReplayRate). Reorder > 1 makes the sender
// take up to that many queued deliveries at once and send them shuffled.
//
// In JSON (admin API, scenario files) the fields are snake_case and MaxDelay is a Go
// duration string, as in Faults: {"drop_rate":0.2,"duplicate_rate":0.1,
// "max_delay":"500ms","reorder":3,"forge_rate":0.05,"replay_rate":0.05}; unknown fields
// are refused.
type WebhookFaults struct {
	DropRate      float64
	DuplicateRate float64
	MaxDelay      time.Duration
	Reorder       int
	ForgeRate     float64
	ReplayRate    float64
}

type webhookFaultsJSON struct {
	DropRate      float64 `json:"drop_rate"`
	DuplicateRate float64 `json:"duplicate_rate"`
	MaxDelay      string  `json:"max_delay,omitempty"`
	Reorder       int     `json:"reorder"`
	ForgeRate     float64 `json:"forge_rate"`
	ReplayRate    float64 `json:"replay_rate"`
}

// MarshalJSON writes f in the admin API's form.
func (f WebhookFaults) MarshalJSON() ([]byte, error) {
	j := webhookFaultsJSON{DropRate: f.DropRate, DuplicateRate: f.DuplicateRate, Reorder: f.Reorder,
		ForgeRate: f.ForgeRate, ReplayRate: f.ReplayRate}
	if f.MaxDelay != 0 {
		j.MaxDelay = f.MaxDelay.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads the admin API's form; unknown fields and a bad duration are errors.
func (f *WebhookFaults) UnmarshalJSON(b []byte) error {
	var j webhookFaultsJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return err
	}
	*f = WebhookFaults{DropRate: j.DropRate, DuplicateRate: j.DuplicateRate, Reorder: j.Reorder,
		ForgeRate: j.ForgeRate, ReplayRate: j.ReplayRate}
	if j.MaxDelay != "" {
		d, err := time.ParseDuration(j.MaxDelay)
		if err != nil {
			return fmt.Errorf("max_delay: %q is not a duration", j.MaxDelay)
		}
		f.MaxDelay = d
	}
	return nil
}

// WebhookCounts are what one provider's sender did.
type WebhookCounts struct {
	// Queued deliveries (one per change); Overflow changes found the queue full.
	Queued   int64 `json:"queued"`
	Overflow int64 `json:"overflow"`
	// Posts made, and Failed those that got no answer or a non-2xx one (forged
	// deliveries are refused by a verifying receiver, so they count here too).
	Posts  int64 `json:"posts"`
	Failed int64 `json:"failed"`
	// Faults injected.
	Dropped    int64 `json:"dropped"`
	Delayed    int64 `json:"delayed"`
	Forged     int64 `json:"forged"`
	Duplicated int64 `json:"duplicated"`
	Replayed   int64 `json:"replayed"`
	Reordered  int64 `json:"reordered"`
}

func (f WebhookFaults) validate() error {
	var errs []error
	for name, v := range map[string]float64{"drop_rate": f.DropRate, "duplicate_rate": f.DuplicateRate,
		"forge_rate": f.ForgeRate, "replay_rate": f.ReplayRate} {
		if !(v >= 0 && v <= 1) {
			errs = append(errs, fmt.Errorf("%s: %v is outside 0..1", name, v))
		}
	}
	if f.MaxDelay < 0 {
		errs = append(errs, fmt.Errorf("max_delay: %v is negative", f.MaxDelay))
	}
	if f.Reorder < 0 || f.Reorder > webhookQueue {
		errs = append(errs, fmt.Errorf("reorder: %d is outside 0..%d", f.Reorder, webhookQueue))
	}
	return errors.Join(errs...)
}

// webhookProviders are the providers that send webhooks.
var webhookProviders = []string{ProviderCPN, ProviderStripe, ProviderCoindirect}

func (t WebhookTarget) validate(provider string) error {
	var errs []error
	isHook := false
	for _, p := range webhookProviders {
		isHook = isHook || p == provider
	}
	if !isHook {
		errs = append(errs, fmt.Errorf("%s sends no webhooks", provider))
	}
	if u, err := url.Parse(t.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("url: %q is not an http(s) URL", t.URL))
	}
	if err := t.Faults.validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// hookDelivery is one delivery: its body, built under the scenario lock, and once
// signed, its headers.
type hookDelivery struct {
	body   []byte
	header http.Header
}

// hookSender posts one provider's deliveries from its own goroutine.
type hookSender struct {
	s       *Sim
	p       *prov
	target  WebhookTarget
	secret  []byte
	q       chan *hookDelivery
	pending []int // items changed since the last flush; guarded by s.mu
	n       uint64

	mu     sync.Mutex // guards faults
	faults WebhookFaults
	rng    *mrand.Rand // the sender goroutine's only
	last   *hookDelivery
	counts struct {
		queued, overflow, posts, failed, dropped, delayed, forged, duplicated, replayed, reordered atomic.Int64
	}
	client *http.Client
}

func newHookSender(s *Sim, p *prov, t WebhookTarget) *hookSender {
	h := &hookSender{s: s, p: p, target: t, faults: t.Faults, q: make(chan *hookDelivery, webhookQueue),
		rng:    mrand.New(mrand.NewPCG(s.seed, 0x400c+uint64(p.idx))),
		client: &http.Client{Timeout: 10 * time.Second}}
	secret := t.Secret
	if secret == "" && p.id == ProviderStripe {
		secret = DefaultStripeWebhookSecret
	}
	if secret == "" && p.id == ProviderCoindirect {
		secret = DefaultCoindirectWebhookSecret
	}
	h.secret = []byte(secret)
	return h
}

// touch notes that item seq changed; the caller holds s.mu.
func (h *hookSender) touch(seq int) {
	h.pending = append(h.pending, seq)
}

// flush renders the items changed since the last flush, once each, and queues their
// deliveries without waiting; the caller holds s.mu.
func (h *hookSender) flush() {
	seen := map[int]bool{}
	for _, seq := range h.pending {
		if seen[seq] {
			continue
		}
		seen[seq] = true
		h.n++
		d := &hookDelivery{body: h.body(seq)}
		select {
		case h.q <- d:
			h.counts.queued.Add(1)
		default:
			h.counts.overflow.Add(1)
		}
	}
	h.pending = h.pending[:0]
}

// body is the provider's webhook payload for item seq's current state.
func (h *hookSender) body(seq int) []byte {
	obj := h.p.render(seq)
	now := h.s.now()
	d := deriver{x: mix64(h.s.seed ^ uint64(h.p.idx+1)<<56 ^ h.n)}
	var v any
	switch h.p.id {
	case ProviderStripe:
		v = map[string]any{"id": "evt_" + d.alnum(24), "object": "event", "api_version": DefaultStripeVersion,
			"created": now.Unix(), "data": map[string]any{"object": obj}, "livemode": false, "pending_webhooks": 1,
			"request": map[string]any{"id": nil, "idempotency_key": nil}, "type": "crypto.onramp_session_updated"}
	case ProviderCoindirect:
		v = map[string]any{"source": "payment", "event": "statusChanged", "data": obj}
	default:
		status := h.p.m.statuses()[h.p.st.items[seq].status]
		v = map[string]any{"subscriptionId": "00000000-0000-0000-0000-000000000000", "notificationId": d.uuid(),
			"notificationType": "cpn.payment." + lowerCamel(status), "notification": obj,
			"timestamp": now.UTC().Format(time.RFC3339Nano), "version": 2}
	}
	b, _ := json.Marshal(v) // maps of rendered API objects always marshal
	return b
}

// lowerCamel turns CRYPTO_FUNDS_PENDING into cryptoFundsPending.
func lowerCamel(s string) string {
	parts := strings.Split(strings.ToLower(s), "_")
	for i := 1; i < len(parts); i++ {
		if parts[i] != "" {
			parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
		}
	}
	return strings.Join(parts, "")
}

// sign returns the headers of body signed for the provider; forged signs another
// message, so that a verifier refuses it.
func (h *hookSender) sign(body []byte, forged bool) http.Header {
	msg := body
	if forged {
		msg = append(append([]byte(nil), body...), " forged"...)
	}
	hd := http.Header{"Content-Type": {"application/json"}}
	switch h.p.id {
	case ProviderStripe:
		ts := strconv.FormatInt(h.s.now().Unix(), 10)
		hd.Set("Stripe-Signature", "t="+ts+",v1="+hmacHex(h.secret, []byte(ts), []byte("."), msg))
	case ProviderCoindirect:
		u, _ := url.Parse(h.target.URL) // validated
		hd.Set("X-Signature", hmacHex(h.secret, []byte(u.Path), []byte(u.RawQuery), []byte(hd.Get("Content-Type")), msg))
	default:
		key := h.s.circleKey()
		digest := sha256.Sum256(msg)
		sig, _ := ecdsa.SignASN1(rand.Reader, key.priv, digest[:])
		hd.Set("X-Circle-Signature", base64.StdEncoding.EncodeToString(sig))
		hd.Set("X-Circle-Key-Id", key.id)
	}
	return hd
}

func hmacHex(key []byte, parts ...[]byte) string {
	mac := hmac.New(sha256.New, key)
	for _, p := range parts {
		mac.Write(p)
	}
	return hex.EncodeToString(mac.Sum(nil))
}

// run sends queued deliveries until ctx ends.
func (h *hookSender) run(ctx context.Context) {
	for {
		var batch []*hookDelivery
		select {
		case <-ctx.Done():
			return
		case d := <-h.q:
			batch = append(batch, d)
		}
		f := h.getFaults()
		for len(batch) < f.Reorder {
			select {
			case d := <-h.q:
				batch = append(batch, d)
				continue
			default:
			}
			break
		}
		if len(batch) > 1 {
			h.rng.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
			h.counts.reordered.Add(1)
		}
		for _, d := range batch {
			h.deliver(ctx, d, f)
		}
	}
}

// deliver applies the faults to one delivery and posts it.
func (h *hookSender) deliver(ctx context.Context, d *hookDelivery, f WebhookFaults) {
	if h.rng.Float64() < f.DropRate {
		h.counts.dropped.Add(1)
		return
	}
	if f.MaxDelay > 0 {
		h.counts.delayed.Add(1)
		t := time.NewTimer(time.Duration(h.rng.Int64N(int64(f.MaxDelay))))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
	forged := h.rng.Float64() < f.ForgeRate
	if forged {
		h.counts.forged.Add(1)
	}
	d.header = h.sign(d.body, forged)
	h.post(ctx, d)
	if h.rng.Float64() < f.DuplicateRate {
		h.counts.duplicated.Add(1)
		h.post(ctx, d)
	}
	if prev := h.last; h.rng.Float64() < f.ReplayRate && prev != nil {
		h.counts.replayed.Add(1)
		h.post(ctx, prev)
	}
	h.last = d
}

// post makes one POST and counts it; a failure is not retried.
func (h *hookSender) post(ctx context.Context, d *hookDelivery) {
	h.counts.posts.Add(1)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.target.URL, bytes.NewReader(d.body))
	if err != nil {
		h.counts.failed.Add(1)
		return
	}
	req.Header = d.header.Clone()
	resp, err := h.client.Do(req)
	if err != nil {
		h.counts.failed.Add(1)
		h.s.log.Debug("webhook POST failed", "provider", h.p.id, "err", err)
		return
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		h.counts.failed.Add(1)
	}
}

func (h *hookSender) getFaults() WebhookFaults {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.faults
}

func (h *hookSender) setFaults(f WebhookFaults) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.faults = f
}

func (h *hookSender) countsNow() WebhookCounts {
	c := &h.counts
	return WebhookCounts{Queued: c.queued.Load(), Overflow: c.overflow.Load(), Posts: c.posts.Load(), Failed: c.failed.Load(),
		Dropped: c.dropped.Load(), Delayed: c.delayed.Load(), Forged: c.forged.Load(), Duplicated: c.duplicated.Load(),
		Replayed: c.replayed.Load(), Reordered: c.reordered.Load()}
}

// circleSigningKey is the simulator's Circle notification key.
type circleSigningKey struct {
	id   string
	priv *ecdsa.PrivateKey
}

// circleKey returns the simulator's P-256 notification key, derived from the seed.
func (s *Sim) circleKey() circleSigningKey {
	s.circleKeyOnce.Do(func() {
		var seed [8]byte
		binary.BigEndian.PutUint64(seed[:], s.seed)
		d := sha256.Sum256(append([]byte("sim circle notification key "), seed[:]...))
		for {
			k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:])
			if err == nil {
				s.circleSigning = circleSigningKey{id: fmt.Sprintf("sim-%016x", mix64(s.seed^0xc1c1e)), priv: k}
				return
			}
			d = sha256.Sum256(d[:])
		}
	})
	return s.circleSigning
}

// CircleWebhookKey returns the id and private key with which the simulator signs its
// Circle CPN notifications (the key GET /v2/notifications/publicKey/{keyId} serves),
// so that a test can sign deliveries of its own as Circle would.
func (s *Sim) CircleWebhookKey() (id string, key *ecdsa.PrivateKey) {
	k := s.circleKey()
	return k.id, k.priv
}

// servePublicKey answers GET /v2/notifications/publicKey/{keyId}:
// {"data":{"id":…,"algorithm":"ECDSA_SHA_256","publicKey": base64 DER SubjectPublicKeyInfo}},
// or Circle's 404 for another key id.
func (s *Sim) servePublicKey(w http.ResponseWriter, r *http.Request) {
	k := s.circleKey()
	if r.PathValue("keyId") != k.id {
		writeJSON(w, http.StatusNotFound, map[string]any{"code": 404, "message": "Not found."})
		return
	}
	der, err := x509.MarshalPKIXPublicKey(&k.priv.PublicKey)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]any{"code": -1, "message": "Something went wrong."})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": map[string]any{"id": k.id, "algorithm": "ECDSA_SHA_256",
		"publicKey": base64.StdEncoding.EncodeToString(der), "createDate": time.UnixMilli(s.start).UTC().Format(time.RFC3339)}})
}

// WebhookCounts returns what provider's webhook sender did; false when it has none.
func (s *Sim) WebhookCounts(provider string) (WebhookCounts, bool) {
	p, ok := s.byID[provider]
	if !ok || p.hook == nil {
		return WebhookCounts{}, false
	}
	return p.hook.countsNow(), true
}

// SetWebhookFaults replaces the delivery faults of provider's webhooks.
func (s *Sim) SetWebhookFaults(provider string, f WebhookFaults) error {
	p, ok := s.byID[provider]
	if !ok || p.hook == nil {
		return fmt.Errorf("set webhook faults: provider %q sends no webhooks", provider)
	}
	if err := f.validate(); err != nil {
		return fmt.Errorf("set webhook faults: %s: %w", provider, err)
	}
	p.hook.setFaults(f)
	return nil
}

// flushHooks queues the deliveries of every change since the last flush; the caller
// holds s.mu.
func (s *Sim) flushHooks() {
	for _, p := range s.provs {
		if p.hook != nil && len(p.hook.pending) > 0 {
			p.hook.flush()
		}
	}
}

// startHooks starts the webhook senders; Close stops them.
func (s *Sim) startHooks() {
	ctx, cancel := context.WithCancel(context.Background())
	s.stopHooks = cancel
	for _, p := range s.provs {
		if p.hook != nil {
			s.hooksDone.Add(1)
			go func() {
				defer s.hooksDone.Done()
				p.hook.run(ctx)
			}()
		}
	}
}

// Close stops the webhook senders (deliveries still queued are not sent) and waits for
// them. The simulator otherwise keeps working.
func (s *Sim) Close() {
	s.stopHooks()
	s.hooksDone.Wait()
}

func (s *Sim) adminWebhookFaults(w http.ResponseWriter, r *http.Request) {
	p := s.adminProv(w, r)
	if p == nil {
		return
	}
	if p.hook == nil {
		adminError(w, http.StatusNotFound, p.id+" has no webhook target")
		return
	}
	if r.Method == http.MethodPost {
		var f WebhookFaults
		if !decodeAdminBody(w, r, &f) {
			return
		}
		if err := f.validate(); err != nil {
			adminError(w, http.StatusBadRequest, err.Error())
			return
		}
		p.hook.setFaults(f)
	}
	writeJSON(w, http.StatusOK, map[string]any{"faults": p.hook.getFaults(), "counts": p.hook.countsNow()})
}
