package sim

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// simulated is one simulated provider: its API and item machine, and the watcher
// source that polls it. Each provider's file defines its own, listed in
// simulatedProviders.
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
	cpnSim,
	rampSim,
	settlementsSim,
	onrampSim,
	coindirectSim,
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
