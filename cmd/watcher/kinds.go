package main

import (
	"slices"

	"github.com/payments-watcher/watcher/config"
)

// providerKinds lists, per provider id, the item kinds its adapter emits: the
// top-level kind (provider.Provider.Kind) first, then the nested ones. The metrics
// create each kind's transition and unknown-status series at 0 from it, so that the
// first unknown status of a kind is an increase. TestProviderKinds keeps it equal to
// the kinds of the adapters' golden files.
var providerKinds = map[string][]string{
	"circle_cpn_payments":           {"payment", "payment_refund", "payment_rfi", "payment_onchain_transaction"},
	"circle_ramp_sessions":          {"ramp_session"},
	"circle_exchange_settlements":   {"settlement", "settlement_detail"},
	"stripe_crypto_onramp_sessions": {"onramp_session"},
	"coindirect_payments":           {"payment", "payment_transaction"},
}

// sourceKinds returns the kinds source s can emit: its provider's list, or only the
// top-level kind for a provider the list does not know.
func sourceKinds(s config.Source) []string {
	if kinds, ok := providerKinds[s.Config.Provider]; ok {
		return slices.Clone(kinds)
	}
	return []string{s.Provider.Kind}
}
