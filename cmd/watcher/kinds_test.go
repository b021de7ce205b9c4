package main

import (
	"slices"
	"testing"

	"github.com/payments-watcher/watcher/config"
	"github.com/payments-watcher/watcher/poller"
)

// TestSourceKinds checks that a source's kinds are its provider's top-level kind
// first, then the nested ones, sorted; poller's registration test checks those against the
// adapters' golden files.
func TestSourceKinds(t *testing.T) {
	cpn := config.Source{Provider: poller.Providers["circle_cpn_payments"]}
	want := []string{"payment", "payment_onchain_transaction", "payment_refund", "payment_rfi"}
	if got := sourceKinds(cpn); !slices.Equal(got, want) {
		t.Errorf("kinds of a CPN source: %v, want %v", got, want)
	}
	other := config.Source{}
	other.Provider.Kind = "thing"
	if got := sourceKinds(other); !slices.Equal(got, []string{"thing"}) {
		t.Errorf("kinds of a provider without nested items: %v, want its top-level kind", got)
	}
}
