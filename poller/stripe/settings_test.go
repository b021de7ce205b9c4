package stripe_test

import (
	"testing"

	"github.com/payments-watcher/watcher/config/configtest"
)

// TestSettings checks the configuration of the onramp provider's keys: api_key is a
// required secret with an api_key_file twin; stripe_version is optional; webhook_secret
// is an optional secret with a webhook_secret_file twin.
func TestSettings(t *testing.T) {
	configtest.CheckKeys(t, "stripe_crypto_onramp_sessions", map[string]string{
		"api_key": "sk_test_51Pq8ZfakeKey0x9Qd7Lm2Nz8", "stripe_version": "2026-08-26.dahlia",
		"webhook_secret": "whsec_fakeWebhookSecret0x1",
	})
}
