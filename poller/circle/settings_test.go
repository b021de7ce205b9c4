package circle_test

import (
	"testing"

	"github.com/payments-watcher/watcher/config/configtest"
)

// TestSettings checks the configuration of each Circle provider's keys: api_key is a
// required secret, with an api_key_file twin.
func TestSettings(t *testing.T) {
	for id, key := range map[string]string{
		"circle_cpn_payments":         "TEST_API_KEY:cpn:Zq8sNw3kVt5usecret",
		"circle_ramp_sessions":        "TEST_API_KEY:ramp:Zq8sNw3kVt5usecret",
		"circle_exchange_settlements": "sandbox-key-Zq8sNw3k",
	} {
		t.Run(id, func(t *testing.T) {
			configtest.CheckKeys(t, id, map[string]string{"api_key": key})
		})
	}
}
