package sim

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// simulated is one simulated provider: its API and item machine, and the watcher
// source that polls it. A new provider is one entry of simulatedProviders.
type simulated struct {
	id string // the provider id, as in watcher's configuration
	// source is the name the demo, benches and chaos runs give the watcher source
	// polling this provider.
	source string
	// listPath is the path of the API's list endpoint; every other path of the
	// provider reads one item.
	listPath string
	// setup gives p its machine, rendering and API, and its item ids when they are not
	// the default uuids; key is p's seed-derived key.
	setup func(p *prov, key uint64)
	// keys are the provider keys of a watcher source authenticating with c (whose
	// empty fields hold the defaults).
	keys func(c Credentials) map[string]string
	// final are the top-level raw statuses after which an item's own status no longer
	// changes.
	final []string
}

// simulatedProviders lists the simulated providers. An event names its provider by
// its position here, so the order is fixed: a new provider goes at the end.
var simulatedProviders = []simulated{
	{
		id: ProviderCPN, source: "cpn", listPath: "/v1/cpn/payments",
		setup: func(p *prov, _ uint64) {
			p.m, p.precision = cpnMachine{}, 1000
			p.render = func(seq int) any { return renderCPN(p, seq) }
			p.api = newCircleAPI(p, cpnEndpoint(p))
		},
		keys:  func(c Credentials) map[string]string { return map[string]string{"api_key": c.CircleCPNKey} },
		final: []string{"COMPLETED", "FAILED"},
	},
	{
		id: ProviderRamp, source: "ramp", listPath: "/v1/w3s/ramp/sessions",
		setup: func(p *prov, _ uint64) {
			p.m, p.precision = rampMachine{}, 1000
			p.render = func(seq int) any { return renderRamp(p, seq) }
			p.api = newCircleAPI(p, rampEndpoint(p))
		},
		keys: func(c Credentials) map[string]string { return map[string]string{"api_key": c.CircleRampKey} },
		// The last two are those of Quirks.UnknownStatuses.
		final: []string{"COMPLETED", "FAILED", "EXPIRED", "SUCCEEDED", "DECLINED"},
	},
	{
		id: ProviderSettlements, source: "settlements", listPath: "/v1/exchange/trades/settlements",
		setup: func(p *prov, _ uint64) {
			p.m = settlementMachine{}
			p.render = func(seq int) any { return renderSettlement(p, seq) }
			p.api = newCircleAPI(p, settlementEndpoint(p))
		},
		keys:  func(c Credentials) map[string]string { return map[string]string{"api_key": c.CircleSettlementsKey} },
		final: []string{"settled"},
	},
	{
		id: ProviderStripe, source: "onramp", listPath: "/v1/crypto/onramp_sessions",
		setup: func(p *prov, key uint64) {
			p.m, p.precision = stripeMachine{}, 1000
			p.render = func(seq int) any { return renderOnramp(p, seq) }
			sc := newStripeCodec(key)
			p.itemID = func(seq int) string { return sc.encode("cos_", uint64(seq)) }
			p.decodeID = func(id string) (uint64, bool) { return sc.decode("cos_", id) }
			p.api = &stripeAPI{p: p}
		},
		keys: func(c Credentials) map[string]string {
			return map[string]string{"api_key": c.StripeSecretKey, "stripe_version": DefaultStripeVersion}
		},
		final: []string{"rejected", "fulfillment_complete"},
	},
	{
		id: ProviderCoindirect, source: "coindirect", listPath: "/api/v1/pay/summary",
		setup: func(p *prov, _ uint64) {
			p.m = coindirectMachine{}
			p.render = func(seq int) any { return renderCoindirect(p, seq) }
			p.api = &coindirectAPI{p: p}
			p.nestedID = func(seq, i int) string { return coindirectTxHash(p, seq, i) }
		},
		keys: func(c Credentials) map[string]string {
			return map[string]string{"hawk_id": c.CoindirectHawkID, "hawk_key": c.CoindirectHawkKey, "merchant_id": c.CoindirectMerchantID}
		},
		final: []string{"COMPLETE", "UNDERPAID", "EXPIRED", "CANCELLED"},
	},
}

// Source is a simulated provider as a watcher source polls it.
type Source struct {
	// Name is the source name the demo, benches and chaos runs give it ("cpn").
	Name string
	// Provider is the provider id.
	Provider string
	// ListPath is the path of the provider's list endpoint; every other path of the
	// provider reads one item.
	ListPath string
	// Keys are the source's provider keys (provider.Provider.Keys), holding the
	// simulator's default credentials; the caller may change its copy.
	Keys map[string]string
}

// Sources returns every simulated provider as a watcher source with the default
// credentials, in the order of ProviderIDs.
func Sources() []Source {
	return SourcesWith(Credentials{})
}

// SourcesWith is Sources for a simulator accepting c (empty fields: the defaults).
func SourcesWith(c Credentials) []Source {
	c = c.withDefaults()
	out := make([]Source, len(simulatedProviders))
	for i, sp := range simulatedProviders {
		out[i] = Source{Name: sp.source, Provider: sp.id, ListPath: sp.listPath, Keys: maps.Clone(sp.keys(c))}
	}
	return out
}

// KeyLines renders s's provider keys as lines of a YAML source mapping, each indented
// by indent, sorted by key, values double-quoted.
func (s Source) KeyLines(indent string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(s.Keys)) {
		fmt.Fprintf(&b, "%s%s: %q\n", indent, k, s.Keys[k])
	}
	return b.String()
}
