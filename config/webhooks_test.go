package config

import (
	"strings"
	"testing"
)

func TestWebhooks(t *testing.T) {
	doc := `
webhooks:
  listen: 127.0.0.1:9466
  max_body: 64KiB
sources:
  - name: onramp
    provider: stripe_crypto_onramp_sessions
    api_key: sk_test_1
    webhook_secret: ${WHSEC}
  - name: cd
    provider: coindirect_payments
    hawk_id: id
    hawk_key: key
    merchant_id: m
    webhook_secret: merchant-secret
    webhook_signature_header: X-Signature-Test
`
	cfg, err := Parse([]byte(doc), testEnv(map[string]string{"WHSEC": "whsec_a,whsec_b"}), readTestdata)
	if err != nil {
		t.Fatal(err)
	}
	w := cfg.Webhooks
	if w.Listen != "127.0.0.1:9466" || w.MaxBody != 64<<10 {
		t.Fatalf("webhooks = %+v", w)
	}
	if got := cfg.Sources[0].Settings.Value("webhook_secret"); got != "whsec_a,whsec_b" {
		t.Fatalf("webhook_secret = %q", got)
	}
	if got := cfg.Sources[1].Settings.Value("webhook_signature_header"); got != "X-Signature-Test" {
		t.Fatalf("webhook_signature_header = %q", got)
	}
	out, err := cfg.Effective()
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"whsec_a", "merchant-secret"} {
		if strings.Contains(string(out), secret) {
			t.Fatalf("config check prints the webhook secret %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(string(out), "listen: 127.0.0.1:9466") {
		t.Fatalf("config check does not print the webhook listener:\n%s", out)
	}
	keys := map[string]bool{}
	for _, s := range cfg.Secrets() {
		keys[s.Key] = true
	}
	if !keys["webhook_secret"] {
		t.Fatalf("Secrets() leaves out webhook_secret: %v", cfg.Secrets())
	}
}

func TestWebhooksInvalid(t *testing.T) {
	doc := `
webhooks:
  listen: nowhere
  tls: {cert: a.pem}
  max_body: lots
sources:
  - name: cpn
    provider: circle_cpn_payments
    api_key: k
`
	_, err := Parse([]byte(doc), testEnv(nil), readTestdata)
	for _, want := range []string{"webhooks.listen", "webhooks.tls", "webhooks.max_body"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s: %v", want, err)
		}
	}
	// Circle verifies with its public keys: a webhook_secret is not one of its keys.
	doc = "sources:\n  - name: ramp\n    provider: circle_ramp_sessions\n    api_key: A:B:C\n    webhook_secret: x\n"
	if _, err := Parse([]byte(doc), testEnv(nil), readTestdata); err == nil || !strings.Contains(err.Error(), "webhook_secret: unknown key") {
		t.Errorf("webhook_secret on a Circle source: %v", err)
	}
}
