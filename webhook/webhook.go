// Package webhook turns providers' webhook deliveries into hints: a delivery whose
// signature verifies names an item, and the source's poller reads that item by id at
// once (poller.Poller.Hint). A delivery never becomes data itself, so the events,
// their ids, sequences and order are exactly those polling produces; webhooks only
// shorten the time until the read.
//
// The listener serves POST /webhooks/{source} (and HEAD, answered 200, which Circle
// requires of an endpoint). It answers at once: verification is local (a Circle
// public key is fetched once per key id and cached), and the read happens later on
// the poller's goroutine, within the source's rate limit.
//
// Each provider's verification is one Verifier, registered by provider id in
// Verifiers (one line per provider; the verifier lives in its own file here).
package webhook

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/payments-watcher/watcher/poller/provider"
)

// Delivery is one request as a Verifier sees it.
type Delivery struct {
	Header http.Header
	// Path and RawQuery are the request's, as received (Coindirect signs them).
	Path, RawQuery string
	Body           []byte
	Now            time.Time
}

// Verified is what a delivery with a valid signature says.
type Verified struct {
	// ID is the top-level item the delivery names; "" when it names none the source
	// polls (an event type of no interest), which is acknowledged and ignored.
	ID string
	// ReplayKey identifies the delivery for replay detection (its signature or the
	// provider's notification id); a second delivery with the same key within
	// ReplayWindow is a replay.
	ReplayKey string
}

// Verification failures a Verifier returns (wrapped); each maps to one Result.
var (
	// ErrUnsigned: the signature header is missing or carries no signature.
	ErrUnsigned = errors.New("no signature")
	// ErrBadSignature: no signature matches.
	ErrBadSignature = errors.New("signature does not match")
	// ErrStale: the signature is valid but its timestamp is outside the tolerance.
	ErrStale = errors.New("signature timestamp outside the tolerance")
	// ErrMalformed: a signature header or a signed body that cannot be read.
	ErrMalformed = errors.New("malformed delivery")
	// ErrKeyUnavailable: the provider's public key named by the delivery is not known
	// yet; the provider retries the delivery.
	ErrKeyUnavailable = errors.New("signing key not available yet")
)

// Verifier checks one source's deliveries. Verify must not block on the network for
// long (see circle.go); it is called concurrently.
type Verifier interface {
	Verify(ctx context.Context, d Delivery) (Verified, error)
}

// Factory builds the verifier of a source from its settings; client reaches the
// provider with the source's base_url and CA. It returns ErrNotConfigured when the
// source lacks what verification needs (a webhook_secret).
type Factory func(s provider.Settings, client *provider.Client) (Verifier, error)

// ErrNotConfigured means a source of a provider with webhooks did not configure them.
var ErrNotConfigured = errors.New("webhooks not configured for this source")

// Verifiers maps provider ids to their verifier; a provider absent from it has no
// documented webhooks, and its sources refuse deliveries (404).
var Verifiers = map[string]Factory{
	"stripe_crypto_onramp_sessions": newStripe,
	"coindirect_payments":           newCoindirect,
	"circle_cpn_payments":           newCircleCPN,
}

// Tolerance is the accepted age of a Stripe signature's timestamp, and ReplayWindow
// how long a delivery's ReplayKey is remembered.
const (
	Tolerance    = 5 * time.Minute
	ReplayWindow = Tolerance
)

// replays remembers the ReplayKeys seen within ReplayWindow.
type replays struct {
	mu   sync.Mutex
	seen map[string]time.Time // key -> when it stops being remembered
}

// seenBefore records key at now and reports whether it was recorded within the window.
func (r *replays) seenBefore(key string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if until, ok := r.seen[key]; ok && now.Before(until) {
		return true
	}
	if len(r.seen) >= 1024 {
		for k, until := range r.seen {
			if !now.Before(until) {
				delete(r.seen, k)
			}
		}
	}
	r.seen[key] = now.Add(ReplayWindow)
	return false
}

// Results of a delivery, the values of the result label of watcher_webhooks_total.
const (
	ResultAccepted       = "accepted"        // 202: the item's read is queued
	ResultCoalesced      = "coalesced"       // 202: the item's read was queued already
	ResultDropped        = "dropped"         // 202: the hint queue is full; polling catches up
	ResultNotHeld        = "not_held"        // 202: another replica polls the source
	ResultIgnored        = "ignored"         // 200: verified, names no item the source polls
	ResultReplayed       = "replayed"        // 200: verified, seen within the replay window; nothing read
	ResultUnsigned       = "unsigned"        // 401
	ResultBadSignature   = "bad_signature"   // 401
	ResultStale          = "stale"           // 401
	ResultMalformed      = "malformed"       // 400
	ResultTooLarge       = "too_large"       // 413
	ResultKeyUnavailable = "key_unavailable" // 503: Circle key not fetched yet; Circle retries
	ResultUnsupported    = "unsupported"     // 404: the source takes no webhooks
)

// Results lists every result, for the metric's series.
var Results = []string{ResultAccepted, ResultCoalesced, ResultDropped, ResultNotHeld, ResultIgnored, ResultReplayed,
	ResultUnsigned, ResultBadSignature, ResultStale, ResultMalformed, ResultTooLarge, ResultKeyUnavailable, ResultUnsupported}

// Metrics counts deliveries by source and result.
type Metrics struct {
	total *prometheus.CounterVec
}

// NewMetrics registers watcher_webhooks_total on reg with every source's series at 0.
func NewMetrics(reg prometheus.Registerer, sources []string) (*Metrics, error) {
	m := &Metrics{total: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "watcher_webhooks_total",
		Help: "Webhook deliveries by source and result (accepted, coalesced, dropped, not_held, ignored, replayed, unsigned, bad_signature, stale, malformed, too_large, key_unavailable, unsupported).",
	}, []string{"source", "result"})}
	if err := reg.Register(m.total); err != nil {
		return nil, err
	}
	for _, s := range sources {
		for _, r := range Results {
			m.total.WithLabelValues(s, r)
		}
	}
	return m, nil
}

func (m *Metrics) count(source, result string) {
	if m != nil {
		m.total.WithLabelValues(source, result).Inc()
	}
}
