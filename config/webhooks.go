package config

import (
	"crypto/tls"
	"net"
)

// DefaultWebhookMaxBody bounds a webhook delivery's body when webhooks.max_body is
// not set.
const DefaultWebhookMaxBody = 1 << 20

// Webhooks is the `webhooks:` section: the listener of provider webhooks, which are
// verified and then only make the poller read the item they name (package webhook).
type Webhooks struct {
	// Listen is the host:port of POST /webhooks/{source}; "" (the default) disables it.
	Listen string
	// TLSCert and TLSKey, both set or neither, serve the listener over TLS.
	TLSCert, TLSKey string
	// MaxBody bounds a delivery's body in bytes.
	MaxBody int64
}

type rawWebhooks struct {
	Listen string `yaml:"listen"`
	TLS    struct {
		Cert string `yaml:"cert"`
		Key  string `yaml:"key"`
	} `yaml:"tls"`
	MaxBody string `yaml:"max_body"` // bytes, or with a unit: 1MiB
}

// webhooks reads the webhooks section: a host:port listener, a TLS pair that loads,
// a positive body bound.
func (v *validator) webhooks(raw rawWebhooks) Webhooks {
	w := Webhooks{Listen: raw.Listen, TLSCert: raw.TLS.Cert, TLSKey: raw.TLS.Key,
		MaxBody: v.sizeOr("webhooks.max_body", raw.MaxBody, DefaultWebhookMaxBody)}
	if raw.MaxBody != "" && w.MaxBody <= 0 && !v.has("webhooks.max_body") {
		v.addf("webhooks.max_body", "%q must be positive", raw.MaxBody)
	}
	if w.Listen == "" {
		return w
	}
	if _, _, err := net.SplitHostPort(w.Listen); err != nil {
		v.addf("webhooks.listen", "%q is not a host:port address", w.Listen)
	}
	switch {
	case (w.TLSCert == "") != (w.TLSKey == ""):
		v.addf("webhooks.tls", "set both cert and key, or neither")
	case w.TLSCert != "":
		v.files = append(v.files, secretFile{"webhooks.tls.key", w.TLSKey})
		if _, err := tls.LoadX509KeyPair(w.TLSCert, w.TLSKey); err != nil {
			v.addf("webhooks.tls", "%v", err)
		}
	}
	return w
}

// webhooksOut is the webhooks section as `config check` prints it.
type webhooksOut struct {
	Listen  string      `yaml:"listen"`
	TLS     *webhookTLS `yaml:"tls,omitempty"`
	MaxBody int64       `yaml:"max_body"`
}

type webhookTLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// printWebhooks returns the section to print; nil when the listener is off.
func printWebhooks(w Webhooks) *webhooksOut {
	if w.Listen == "" {
		return nil
	}
	out := &webhooksOut{Listen: w.Listen, MaxBody: w.MaxBody}
	if w.TLSCert != "" {
		out.TLS = &webhookTLS{Cert: w.TLSCert, Key: w.TLSKey}
	}
	return out
}
