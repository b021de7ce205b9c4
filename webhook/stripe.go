package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/payments-watcher/watcher/poller/provider"
)

// Stripe signs a delivery in its Stripe-Signature header, "t=TIMESTAMP,v1=HEX[,v1=HEX]":
// v1 is hex(HMAC-SHA256(key = the endpoint's whsec_… secret, msg = TIMESTAMP + "." +
// body)). Several v1 values appear while Stripe rolls the endpoint's secret.

// stripeEvents are the event types that name an onramp session in data.object.id:
// the documented name and the dotted variant seen in third-party code.
var stripeEvents = map[string]bool{
	"crypto.onramp_session_updated": true,
	"crypto.onramp_session.updated": true,
}

type stripeVerifier struct {
	secrets [][]byte
}

func newStripe(s provider.Settings, _ *provider.Client) (Verifier, error) {
	list := secrets(s.Value("webhook_secret"))
	if len(list) == 0 {
		return nil, ErrNotConfigured
	}
	v := &stripeVerifier{}
	for _, k := range list {
		v.secrets = append(v.secrets, []byte(k))
	}
	return v, nil
}

// Verify accepts a delivery one of whose v1 signatures matches one of the secrets and
// whose timestamp is within Tolerance of d.Now; its ReplayKey is the matching
// signature.
func (v *stripeVerifier) Verify(_ context.Context, d Delivery) (Verified, error) {
	header := d.Header.Get("Stripe-Signature")
	if header == "" {
		return Verified{}, ErrUnsigned
	}
	ts, sigs, err := parseStripeSignature(header)
	if err != nil {
		return Verified{}, err
	}
	matched := ""
	for _, key := range v.secrets {
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(ts))
		mac.Write([]byte("."))
		mac.Write(d.Body)
		want := mac.Sum(nil)
		for _, s := range sigs {
			if hmac.Equal(want, s) {
				matched = hex.EncodeToString(s)
			}
		}
	}
	if matched == "" {
		return Verified{}, ErrBadSignature
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return Verified{}, fmt.Errorf("%w: Stripe-Signature t=%q", ErrMalformed, ts)
	}
	if age := d.Now.Sub(time.Unix(sec, 0)); age > Tolerance || age < -Tolerance {
		return Verified{}, ErrStale
	}
	var ev struct {
		Type string `json:"type"`
		Data struct {
			Object struct {
				ID string `json:"id"`
			} `json:"object"`
		} `json:"data"`
	}
	if err := json.Unmarshal(d.Body, &ev); err != nil {
		return Verified{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	out := Verified{ReplayKey: matched}
	if stripeEvents[ev.Type] {
		if ev.Data.Object.ID == "" {
			return Verified{}, fmt.Errorf("%w: %s without data.object.id", ErrMalformed, ev.Type)
		}
		out.ID = ev.Data.Object.ID
	}
	return out, nil
}

// parseStripeSignature returns the timestamp and the v1 signatures of a
// Stripe-Signature header; other schemes are passed over.
func parseStripeSignature(h string) (ts string, sigs [][]byte, err error) {
	for _, part := range strings.Split(h, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return "", nil, fmt.Errorf("%w: Stripe-Signature element %q", ErrMalformed, part)
		}
		switch k {
		case "t":
			ts = val
		case "v1":
			if b, err := hex.DecodeString(val); err == nil {
				sigs = append(sigs, b)
			}
		}
	}
	if ts == "" {
		return "", nil, fmt.Errorf("%w: Stripe-Signature without t", ErrMalformed)
	}
	if len(sigs) == 0 {
		return "", nil, ErrUnsigned
	}
	return ts, sigs, nil
}
