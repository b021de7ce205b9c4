package poller

import (
	"slices"

	"github.com/payments-watcher/watcher/poller/circle"
	"github.com/payments-watcher/watcher/poller/coindirect"
	"github.com/payments-watcher/watcher/poller/provider"
	"github.com/payments-watcher/watcher/poller/stripe"
)

// Providers maps the configuration's provider ids to their adapters. A new provider
// is a sub-package, its tests, and one line here (CONTRIBUTING.md, "Adding a
// provider"; TestRegistrationComplete checks the rest of that list).
var Providers = map[string]provider.Provider{
	"circle_cpn_payments":           circle.CPN,
	"circle_ramp_sessions":          circle.Ramp,
	"circle_exchange_settlements":   circle.Settlements,
	"stripe_crypto_onramp_sessions": stripe.OnrampSessions,
	"coindirect_payments":           coindirect.Payments,
}

// ProviderIDs returns the provider ids, sorted.
func ProviderIDs() []string {
	ids := make([]string, 0, len(Providers))
	for id := range Providers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
