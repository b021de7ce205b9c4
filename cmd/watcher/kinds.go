package main

import (
	"github.com/payments-watcher/watcher/config"
)

// sourceKinds returns the item kinds source s can emit: its provider's top-level kind
// first, then the nested ones (provider.Provider.Kinds). The metrics create each
// kind's transition and unknown-status series at 0 from it, so that the first unknown
// status of a kind is an increase. The registration test in poller keeps the kinds
// equal to those of the adapters' golden files.
func sourceKinds(s config.Source) []string {
	return s.Provider.Kinds()
}
