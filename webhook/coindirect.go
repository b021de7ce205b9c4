package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/payments-watcher/watcher/poller/provider"
)

// Coindirect signs a delivery as hex(HMAC-SHA256(key = the merchant's secret, msg =
// URL path + raw query (without '?', when there is one) + Content-Type + body)), per
// its sample validator. The header carrying the signature is not documented; the
// source's webhook_signature_header names it (DefaultCoindirectHeader by default).

// DefaultCoindirectHeader is the header read for Coindirect's signature when the
// source does not set webhook_signature_header.
const DefaultCoindirectHeader = "X-Signature"

type coindirectVerifier struct {
	secrets [][]byte
	header  string
}

func newCoindirect(s provider.Settings, _ *provider.Client) (Verifier, error) {
	list := secrets(s.Value("webhook_secret"))
	if len(list) == 0 {
		return nil, ErrNotConfigured
	}
	v := &coindirectVerifier{header: s.Value("webhook_signature_header")}
	if v.header == "" {
		v.header = DefaultCoindirectHeader
	}
	for _, k := range list {
		v.secrets = append(v.secrets, []byte(k))
	}
	return v, nil
}

// Verify accepts a delivery whose signature (hex, any case) matches one of the
// secrets over the path and query as received; its ReplayKey is the signature. A
// payment statusChanged event names the payment's uuid. The signature carries no
// timestamp, so no delivery is stale.
func (v *coindirectVerifier) Verify(_ context.Context, d Delivery) (Verified, error) {
	got := strings.TrimSpace(d.Header.Get(v.header))
	if got == "" {
		return Verified{}, ErrUnsigned
	}
	sig, err := hex.DecodeString(strings.ToLower(got))
	if err != nil {
		return Verified{}, fmt.Errorf("%w: %s is not hex", ErrMalformed, v.header)
	}
	ok := false
	for _, key := range v.secrets {
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(d.Path))
		mac.Write([]byte(d.RawQuery))
		mac.Write([]byte(d.Header.Get("Content-Type")))
		mac.Write(d.Body)
		if hmac.Equal(mac.Sum(nil), sig) {
			ok = true
		}
	}
	if !ok {
		return Verified{}, ErrBadSignature
	}
	var ev struct {
		Source string `json:"source"`
		Event  string `json:"event"`
		Data   struct {
			UUID string `json:"uuid"`
		} `json:"data"`
	}
	if err := json.Unmarshal(d.Body, &ev); err != nil {
		return Verified{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	out := Verified{ReplayKey: hex.EncodeToString(sig)}
	if ev.Source == "payment" {
		if ev.Data.UUID == "" {
			return Verified{}, fmt.Errorf("%w: payment event without data.uuid", ErrMalformed)
		}
		out.ID = ev.Data.UUID
	}
	return out, nil
}
