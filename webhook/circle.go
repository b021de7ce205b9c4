package webhook

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/payments-watcher/watcher/poller/provider"
)

// Circle's documents say to verify a notification "with Circle-provided public keys".
// The rest is inferred from third-party code: the signature is in X-Circle-Signature
// (base64 of an ASN.1 DER ECDSA signature over SHA-256 of the raw body), the key id
// in X-Circle-Key-Id, and the key is read with GET /v2/notifications/publicKey/{keyId}
// (the source's api_key as Bearer), answering {"data":{"publicKey": base64 DER
// SubjectPublicKeyInfo}} of a P-256 key.

const (
	// circleKeyWait is how long a delivery waits for the first fetch of its key; a
	// fetch that takes longer goes on, and the delivery is refused with 503 (Circle
	// retries it, and finds the key cached).
	circleKeyWait = time.Second
	// circleKeyRetry is how long a failed key fetch is remembered, so that deliveries
	// naming unknown key ids cannot make watcher call Circle at their rate.
	circleKeyRetry = time.Minute
	// circleMaxKeys bounds the cache; Circle rotates its keys rarely.
	circleMaxKeys = 64
	// circleFetchBurst fetches of keys not cached may be made at once, then one every
	// circleFetchEvery: deliveries naming key ids Circle never issued, each a new id,
	// cannot make watcher call Circle (with the source's api_key, whose rate limit
	// polling shares) at their rate. A delivery whose key would need a fetch beyond
	// that is answered ErrKeyUnavailable, and Circle retries it.
	circleFetchBurst = 5
	circleFetchEvery = 10 * time.Second
)

var circleKeyID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

type circleVerifier struct {
	client *provider.Client
	apiKey string

	mu      sync.Mutex
	keys    map[string]*circleKey
	fetches *rate.Limiter // the fetches of keys not cached, on the deliveries' clock
}

// circleKey is one key id's fetch: done is closed when pub or err is set.
type circleKey struct {
	done    chan struct{}
	pub     *ecdsa.PublicKey
	err     error
	fetched time.Time // when the fetch started; set before it starts
}

func newCircleCPN(s provider.Settings, c *provider.Client) (Verifier, error) {
	key := s.Value("api_key")
	if key == "" || c == nil {
		return nil, ErrNotConfigured
	}
	return &circleVerifier{client: c, apiKey: key, keys: map[string]*circleKey{},
		fetches: rate.NewLimiter(rate.Every(circleFetchEvery), circleFetchBurst)}, nil
}

// Verify accepts a delivery signed by the key it names. It names the payment of a
// v2 CPN notification: notification.id for cpn.payment.* types, else
// notification.paymentId when present (refunds, RFIs, transactions). Its ReplayKey is
// notificationId, which Circle keeps across retries of a delivery. No delivery is
// stale: the signature carries no timestamp, and Circle retries for hours.
func (v *circleVerifier) Verify(ctx context.Context, d Delivery) (Verified, error) {
	sigText, keyID := d.Header.Get("X-Circle-Signature"), d.Header.Get("X-Circle-Key-Id")
	if sigText == "" || keyID == "" {
		return Verified{}, ErrUnsigned
	}
	if !circleKeyID.MatchString(keyID) {
		return Verified{}, fmt.Errorf("%w: X-Circle-Key-Id", ErrMalformed)
	}
	sig, err := base64.StdEncoding.DecodeString(sigText)
	if err != nil {
		return Verified{}, fmt.Errorf("%w: X-Circle-Signature is not base64", ErrMalformed)
	}
	pub, err := v.key(ctx, keyID, d.Now)
	if err != nil {
		return Verified{}, err
	}
	digest := sha256.Sum256(d.Body)
	if !ecdsa.VerifyASN1(pub, digest[:], sig) {
		return Verified{}, ErrBadSignature
	}
	var n struct {
		NotificationID   string `json:"notificationId"`
		NotificationType string `json:"notificationType"`
		Notification     struct {
			ID        string `json:"id"`
			PaymentID string `json:"paymentId"`
		} `json:"notification"`
	}
	if err := json.Unmarshal(d.Body, &n); err != nil {
		return Verified{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	out := Verified{ReplayKey: n.NotificationID}
	if out.ReplayKey == "" {
		out.ReplayKey = sigText
	}
	switch {
	case strings.HasPrefix(n.NotificationType, "cpn.payment."):
		out.ID = n.Notification.ID
	case n.Notification.PaymentID != "":
		out.ID = n.Notification.PaymentID
	}
	return out, nil
}

// key returns the public key of id: cached, or fetched once (concurrent deliveries
// share the fetch) when the fetch budget allows. It waits for a fetch at most
// circleKeyWait; ErrKeyUnavailable then, when the budget is spent, or while a failed
// fetch other than a 404 is remembered. A key that does not exist at Circle (404) is
// ErrBadSignature, remembered for circleKeyRetry.
func (v *circleVerifier) key(ctx context.Context, id string, now time.Time) (*ecdsa.PublicKey, error) {
	v.mu.Lock()
	k, ok := v.keys[id]
	if ok {
		select {
		case <-k.done:
			ok = k.err == nil || now.Sub(k.fetched) < circleKeyRetry
		default:
		}
	}
	if !ok {
		if !v.fetches.AllowN(now, 1) {
			v.mu.Unlock()
			return nil, fmt.Errorf("%w: key %s not fetched, too many keys fetched lately", ErrKeyUnavailable, id)
		}
		if len(v.keys) >= circleMaxKeys {
			v.evictFailed()
		}
		k = &circleKey{done: make(chan struct{}), fetched: now}
		v.keys[id] = k
		go v.fetch(id, k)
	}
	v.mu.Unlock()
	t := time.NewTimer(circleKeyWait)
	defer t.Stop()
	select {
	case <-k.done:
	case <-t.C:
		return nil, ErrKeyUnavailable
	case <-ctx.Done():
		return nil, ErrKeyUnavailable
	}
	if k.err != nil {
		var se *provider.StatusError
		if errors.As(k.err, &se) && se.Code == http.StatusNotFound {
			return nil, ErrBadSignature
		}
		return nil, ErrKeyUnavailable
	}
	return k.pub, nil
}

// evictFailed forgets the failed fetches, or every key when none failed; v.mu is held.
func (v *circleVerifier) evictFailed() {
	for id, k := range v.keys {
		select {
		case <-k.done:
			if k.err != nil {
				delete(v.keys, id)
			}
		default:
		}
	}
	if len(v.keys) >= circleMaxKeys {
		clear(v.keys)
	}
}

// fetch reads key id from Circle into k and closes k.done.
func (v *circleVerifier) fetch(id string, k *circleKey) {
	defer close(k.done)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.client.BaseURL+"/v2/notifications/publicKey/"+url.PathEscape(id), nil)
	if err != nil {
		k.err = err
		return
	}
	req.Header.Set("Authorization", "Bearer "+v.apiKey)
	req.Header.Set("Accept", "application/json")
	body, _, err := v.client.Do(ctx, req, nil)
	if err != nil {
		k.err = err
		return
	}
	k.pub, k.err = parseCirclePublicKey(body)
}

// parseCirclePublicKey reads {"data":{"publicKey": …}}: base64 DER
// SubjectPublicKeyInfo, or the same in PEM, of an ECDSA key.
func parseCirclePublicKey(body []byte) (*ecdsa.PublicKey, error) {
	var r struct {
		Data struct {
			PublicKey string `json:"publicKey"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("public key response: %w", err)
	}
	der, err := base64.StdEncoding.DecodeString(r.Data.PublicKey)
	if b, _ := pem.Decode([]byte(r.Data.PublicKey)); b != nil {
		der, err = b.Bytes, nil
	}
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key: %T, want ECDSA", pub)
	}
	return ec, nil
}
