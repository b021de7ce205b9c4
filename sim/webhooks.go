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
	"io"
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
	// Record, when set, is called once for every delivery the sender drops or posts
	// (see WebhookDelivery), so that a benchmark or test can match deliveries with the
	// truth. It is called from the sender's goroutines, concurrently, after the POST
	// has been answered, and must not block for long.
	Record func(WebhookDelivery) `json:"-"`
}

// Kinds of WebhookDelivery.
const (
	// WebhookChange: the delivery of a change (one per change of an item's status).
	WebhookChange = "change"
	// WebhookDuplicate: the second POST of a change's delivery (DuplicateRate).
	WebhookDuplicate = "duplicate"
	// WebhookReplay: one of the last undelayed deliveries, sent again (ReplayRate,
	// ReplayAge).
	WebhookReplay = "replay"
	// WebhookInjected: an extra delivery an attacker made (InjectRate): a change's
	// delivery altered, with a signature that does not match.
	WebhookInjected = "injected"
)

// WebhookDelivery is one delivery as its sender made it (WebhookTarget.Record).
type WebhookDelivery struct {
	Provider string
	// Kind is one of the Webhook* kinds.
	Kind string
	// ID is the top-level item the body names; Status and Addendum are the status (and
	// CPN statusAddendum) the body carries. For a change, duplicate or replay they are
	// the item's at Rendered; an injected delivery names a made-up id (MadeUp) or a
	// real item with another, final status.
	ID, Status, Addendum string
	// Rendered is the simulated time at which the body was rendered: the engine step
	// that made the change (the truth's transition is the item's latest at or before
	// it). A replay carries the replayed delivery's.
	Rendered time.Time
	// Dropped: never posted (DropRate); nothing below is set.
	Dropped bool
	// Forged: the signature does not match (ForgeRate, or an injected delivery).
	Forged bool
	// MadeUp: an injected delivery naming an item that does not exist.
	MadeUp bool
	// Stale: a replay presented as captured ReplayAge ago (Stripe's timestamp that far
	// back).
	Stale bool
	// Delay is how long the delivery was held back (DelayRate, MaxDelay).
	Delay time.Duration
	// Sent is the wall-clock time at which the POST started.
	Sent time.Time
	// Code is the receiver's status code (0: no answer), Answer the first line of its
	// answer's body, at most 64 bytes.
	Code   int
	Answer string
}

// WebhookFaults make a provider's deliveries unreliable. Each delivery of a change
// draws, in this order: an injected extra (InjectRate, when set; see below), dropped
// (DropRate; nothing else happens), a delay uniform in [0, MaxDelay) (for the
// DelayRate share of deliveries; every one when DelayRate is 0), a forged signature
// (ForgeRate), a second identical POST (DuplicateRate) and, before this one, a POST of
// one of the last 64 undelayed deliveries again, chosen at random (ReplayRate), which
// may carry a status its item has left since. A delayed delivery and its duplicate are
// posted from their own goroutine, so they hold back no other delivery. Reorder > 1
// makes the sender take up to that many queued deliveries at once and send them
// shuffled.
//
// ReplayAge presents a replay as one captured that long ago: a Stripe replay carries a
// timestamp ReplayAge back, signed as Stripe signed it then (beyond 5 minutes a
// verifier refuses it as stale); Coindirect and Circle sign no time, so theirs is
// re-sent unchanged. InjectRate adds, for that share of changes, an extra delivery
// an attacker made from the change's body: half of them name a made-up item id of the
// provider's format, the others the real item with another of its final statuses; all
// carry a signature that does not match (posted at once, before the genuine one).
//
// In JSON (admin API, scenario files) the fields are snake_case and MaxDelay and
// ReplayAge are Go duration strings, as in Faults: {"drop_rate":0.2,
// "duplicate_rate":0.1,"max_delay":"500ms","delay_rate":0.1,"reorder":3,
// "forge_rate":0.05,"replay_rate":0.05,"replay_age":"10m","inject_rate":0.02}; unknown
// fields are refused.
type WebhookFaults struct {
	DropRate      float64
	DuplicateRate float64
	MaxDelay      time.Duration
	DelayRate     float64
	Reorder       int
	ForgeRate     float64
	ReplayRate    float64
	ReplayAge     time.Duration
	InjectRate    float64
}

type webhookFaultsJSON struct {
	DropRate      float64 `json:"drop_rate"`
	DuplicateRate float64 `json:"duplicate_rate"`
	MaxDelay      string  `json:"max_delay,omitempty"`
	DelayRate     float64 `json:"delay_rate,omitempty"`
	Reorder       int     `json:"reorder"`
	ForgeRate     float64 `json:"forge_rate"`
	ReplayRate    float64 `json:"replay_rate"`
	ReplayAge     string  `json:"replay_age,omitempty"`
	InjectRate    float64 `json:"inject_rate,omitempty"`
}

// MarshalJSON writes f in the admin API's form.
func (f WebhookFaults) MarshalJSON() ([]byte, error) {
	j := webhookFaultsJSON{DropRate: f.DropRate, DuplicateRate: f.DuplicateRate, DelayRate: f.DelayRate, Reorder: f.Reorder,
		ForgeRate: f.ForgeRate, ReplayRate: f.ReplayRate, InjectRate: f.InjectRate}
	if f.MaxDelay != 0 {
		j.MaxDelay = f.MaxDelay.String()
	}
	if f.ReplayAge != 0 {
		j.ReplayAge = f.ReplayAge.String()
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
	*f = WebhookFaults{DropRate: j.DropRate, DuplicateRate: j.DuplicateRate, DelayRate: j.DelayRate, Reorder: j.Reorder,
		ForgeRate: j.ForgeRate, ReplayRate: j.ReplayRate, InjectRate: j.InjectRate}
	for _, d := range []struct {
		name, text string
		to         *time.Duration
	}{{"max_delay", j.MaxDelay, &f.MaxDelay}, {"replay_age", j.ReplayAge, &f.ReplayAge}} {
		if d.text == "" {
			continue
		}
		v, err := time.ParseDuration(d.text)
		if err != nil {
			return fmt.Errorf("%s: %q is not a duration", d.name, d.text)
		}
		*d.to = v
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
	Injected   int64 `json:"injected"`
}

func (f WebhookFaults) validate() error {
	var errs []error
	for name, v := range map[string]float64{"drop_rate": f.DropRate, "duplicate_rate": f.DuplicateRate, "delay_rate": f.DelayRate,
		"forge_rate": f.ForgeRate, "replay_rate": f.ReplayRate, "inject_rate": f.InjectRate} {
		if !(v >= 0 && v <= 1) {
			errs = append(errs, fmt.Errorf("%s: %v is outside 0..1", name, v))
		}
	}
	if f.MaxDelay < 0 {
		errs = append(errs, fmt.Errorf("max_delay: %v is negative", f.MaxDelay))
	}
	if f.ReplayAge < 0 {
		errs = append(errs, fmt.Errorf("replay_age: %v is negative", f.ReplayAge))
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

// hookDelivery is one delivery: its body and what it reports, built under the
// scenario lock, and once signed, its headers.
type hookDelivery struct {
	body   []byte
	header http.Header
	// id, status and addendum are what the body reports, rendered the simulated time
	// it was built at; see WebhookDelivery.
	id, status, addendum string
	rendered             time.Time
	delay                time.Duration
	forged, stale        bool
	madeUp               bool
}

// hookSender posts one provider's deliveries from its own goroutine (and delayed ones
// from a goroutine each).
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
	// The sender goroutine's only: its random source, the last undelayed deliveries of
	// changes posted (what a replay sends again), and the made-up ids so far.
	rng      *mrand.Rand
	recent   []*hookDelivery
	injected uint64
	delayed  sync.WaitGroup
	counts   struct {
		queued, overflow, posts, failed, dropped, delayed, forged, duplicated, replayed, reordered, injected atomic.Int64
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
	now := h.s.now()
	for _, seq := range h.pending {
		if seen[seq] {
			continue
		}
		seen[seq] = true
		h.n++
		it := &h.p.st.items[seq]
		d := &hookDelivery{body: h.body(seq), id: h.p.itemID(seq), status: h.p.m.statuses()[it.status],
			addendum: h.p.m.addendum(it), rendered: now}
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

// sign returns the headers of body signed for the provider at time at (Stripe's
// timestamp); forged signs another message, so that a verifier refuses it.
func (h *hookSender) sign(body []byte, forged bool, at time.Time) http.Header {
	msg := body
	if forged {
		msg = append(append([]byte(nil), body...), " forged"...)
	}
	hd := http.Header{"Content-Type": {"application/json"}}
	switch h.p.id {
	case ProviderStripe:
		ts := strconv.FormatInt(at.Unix(), 10)
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

// deliver applies the faults to one change's delivery and posts it; every random
// draw is made here, on the sender's goroutine. A delayed delivery (and its
// duplicate) is posted from a goroutine of its own (h.delayed) once its delay is over.
func (h *hookSender) deliver(ctx context.Context, d *hookDelivery, f WebhookFaults) {
	if f.InjectRate > 0 && h.rng.Float64() < f.InjectRate {
		h.counts.injected.Add(1)
		h.post(ctx, h.inject(d), WebhookInjected)
	}
	if h.rng.Float64() < f.DropRate {
		h.counts.dropped.Add(1)
		h.record(d, WebhookChange, true, time.Time{}, 0, "")
		return
	}
	if f.MaxDelay > 0 && (f.DelayRate == 0 || h.rng.Float64() < f.DelayRate) {
		h.counts.delayed.Add(1)
		d.delay = time.Duration(h.rng.Int64N(int64(f.MaxDelay)))
	}
	d.forged = h.rng.Float64() < f.ForgeRate
	if d.forged {
		h.counts.forged.Add(1)
	}
	d.header = h.sign(d.body, d.forged, h.s.now())
	dup := h.rng.Float64() < f.DuplicateRate
	if dup {
		h.counts.duplicated.Add(1)
	}
	if h.rng.Float64() < f.ReplayRate && len(h.recent) > 0 {
		h.counts.replayed.Add(1)
		h.post(ctx, h.replay(h.recent[h.rng.IntN(len(h.recent))], f.ReplayAge), WebhookReplay)
	}
	send := func() {
		h.post(ctx, d, WebhookChange)
		if dup {
			h.post(ctx, d, WebhookDuplicate)
		}
	}
	if d.delay == 0 {
		send()
		if len(h.recent) == replayMemory {
			h.recent = append(h.recent[:0], h.recent[1:]...)
		}
		h.recent = append(h.recent, d)
		return
	}
	h.delayed.Go(func() {
		t := time.NewTimer(d.delay)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
			send()
		}
	})
}

// replay returns d sent again: presented as captured age ago (a Stripe timestamp that
// far back, signed with the real secret), or as it was when age is 0 or the provider
// signs no time.
func (h *hookSender) replay(d *hookDelivery, age time.Duration) *hookDelivery {
	r := *d
	r.delay = 0
	if age > 0 && h.p.id == ProviderStripe {
		r.header, r.stale = h.sign(d.body, d.forged, h.s.now().Add(-age)), true
	}
	return &r
}

// replayMemory is how many of the last undelayed deliveries a replay chooses from.
const replayMemory = 64

// madeUpBase is the first sequence number of the made-up ids of injected deliveries:
// far beyond any simulated item, within every id format's range.
const madeUpBase = 1 << 36

// inject returns an attacker's delivery made from d: half the time naming a made-up
// item of the provider's id format, else d's item with another of the provider's
// final statuses; signed so that the signature does not match.
func (h *hookSender) inject(d *hookDelivery) *hookDelivery {
	x := &hookDelivery{id: d.id, status: d.status, addendum: d.addendum, rendered: d.rendered, forged: true}
	var v map[string]any
	dec := json.NewDecoder(bytes.NewReader(d.body))
	dec.UseNumber()
	obj, idKey := map[string]any(nil), "id"
	if dec.Decode(&v) == nil {
		switch h.p.id {
		case ProviderStripe:
			data, _ := v["data"].(map[string]any)
			obj, _ = data["object"].(map[string]any)
		case ProviderCoindirect:
			obj, _ = v["data"].(map[string]any)
			idKey = "uuid"
		default:
			obj, _ = v["notification"].(map[string]any)
		}
	}
	finals := simulatedProviders[h.p.idx].final
	var others []string
	for _, st := range finals {
		if st != d.status {
			others = append(others, st)
		}
	}
	if h.rng.IntN(2) == 0 || len(others) == 0 {
		x.id, x.madeUp = h.p.itemID(madeUpBase+int(h.injected)), true
		h.injected++
		if obj != nil {
			obj[idKey] = x.id
		}
	} else {
		x.status, x.addendum = others[h.rng.IntN(len(others))], ""
		if obj != nil {
			obj["status"] = x.status
			if h.p.id == ProviderCPN {
				delete(obj, "statusAddendum")
				v["notificationType"] = "cpn.payment." + lowerCamel(x.status)
			}
		}
	}
	x.body = d.body
	if obj != nil {
		if b, err := json.Marshal(v); err == nil {
			x.body = b
		}
	}
	x.header = h.sign(x.body, true, h.s.now())
	return x
}

// post makes one POST of d, counts it and records it as kind; a failure is not
// retried.
func (h *hookSender) post(ctx context.Context, d *hookDelivery, kind string) {
	h.counts.posts.Add(1)
	sent := time.Now()
	code, answer := 0, ""
	defer func() { h.record(d, kind, false, sent, code, answer) }()
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
	defer resp.Body.Close()
	code = resp.StatusCode
	if h.target.Record != nil {
		var buf [64]byte
		n, _ := io.ReadFull(resp.Body, buf[:])
		answer, _, _ = strings.Cut(string(buf[:n]), "\n")
	}
	if resp.StatusCode/100 != 2 {
		h.counts.failed.Add(1)
	}
}

// record passes what happened to d to the target's Record, if any.
func (h *hookSender) record(d *hookDelivery, kind string, dropped bool, sent time.Time, code int, answer string) {
	if h.target.Record == nil {
		return
	}
	h.target.Record(WebhookDelivery{Provider: h.p.id, Kind: kind, ID: d.id, Status: d.status, Addendum: d.addendum,
		Rendered: d.rendered, Dropped: dropped, Forged: d.forged, MadeUp: d.madeUp,
		Stale: d.stale, Delay: d.delay, Sent: sent, Code: code, Answer: answer})
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
		Replayed: c.replayed.Load(), Reordered: c.reordered.Load(), Injected: c.injected.Load()}
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

// Close stops the webhook senders (deliveries still queued or delayed are not sent)
// and waits for them. The simulator otherwise keeps working.
func (s *Sim) Close() {
	s.stopHooks()
	s.hooksDone.Wait()
	for _, p := range s.provs {
		if p.hook != nil {
			p.hook.delayed.Wait()
		}
	}
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
