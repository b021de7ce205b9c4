package main

import (
	"encoding/json"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/payments-watcher/watcher/config"
	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller"
)

// goldenDirs are the directories of each provider adapter's golden parse results.
var goldenDirs = map[string]string{
	"circle_cpn_payments":           "../../poller/circle/testdata/cpn",
	"circle_ramp_sessions":          "../../poller/circle/testdata/ramp",
	"circle_exchange_settlements":   "../../poller/circle/testdata/settlements",
	"stripe_crypto_onramp_sessions": "../../poller/stripe/testdata/onramp",
	"coindirect_payments":           "../../poller/coindirect/testdata/coindirect",
}

// goldenKinds returns the kinds of every item, nested ones included, in the golden
// files under dir, sorted.
func goldenKinds(t *testing.T, dir string) []string {
	t.Helper()
	type item struct {
		Kind   string `json:"kind"`
		Nested []item `json:"nested"`
	}
	var kinds []string
	var add func(items []item)
	add = func(items []item) {
		for _, it := range items {
			if !slices.Contains(kinds, it.Kind) {
				kinds = append(kinds, it.Kind)
			}
			add(it.Nested)
		}
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".golden") {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var page struct {
			Items []item `json:"items"`
		}
		if json.Unmarshal(data, &page) == nil {
			add(page.Items)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(kinds)
	return kinds
}

// TestProviderKinds keeps providerKinds equal to what the adapters emit: the kinds of
// their golden files, with the provider's top-level kind first.
func TestProviderKinds(t *testing.T) {
	if got, want := slices.Sorted(maps.Keys(providerKinds)), poller.ProviderIDs(); !slices.Equal(got, want) {
		t.Errorf("providerKinds lists %v, the providers are %v", got, want)
	}
	for id, p := range poller.Providers {
		kinds := providerKinds[id]
		if len(kinds) == 0 || kinds[0] != p.Kind {
			t.Errorf("%s: kinds %v, want the top-level kind %q first", id, kinds, p.Kind)
		}
		dir, ok := goldenDirs[id]
		if !ok {
			t.Errorf("%s: no golden directory to check its kinds against", id)
			continue
		}
		golden := goldenKinds(t, dir)
		if len(golden) == 0 {
			t.Errorf("%s: no item kinds in %s", id, dir)
		}
		if got := slices.Sorted(slices.Values(kinds)); !slices.Equal(got, golden) {
			t.Errorf("%s: providerKinds %v, the adapter's golden files show %v", id, got, golden)
		}
	}
	unknown := config.Source{}
	unknown.Config.Provider = "not_a_provider"
	unknown.Provider.Kind = "thing"
	if got := sourceKinds(unknown); !slices.Equal(got, []string{"thing"}) {
		t.Errorf("kinds of an unlisted provider: %v, want its top-level kind", got)
	}
}

// TestReplicaMetricsStartUnheld checks a cluster replica's registry before any lease:
// every lease gauge at 0, no state gauge to freeze or double-count, and the
// transition and unknown-status series of every source's kinds at 0.
func TestReplicaMetricsStartUnheld(t *testing.T) {
	raw, names := demoConfig(t.TempDir(), "nats://127.0.0.1:4222", "http://127.0.0.1:8089", "")
	cfg, err := config.Parse(raw, func(string) (string, bool) { return "", false }, os.ReadFile)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	newReplicaMetrics(reg, cfg)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string][]*dto.Metric{}
	for _, f := range fams {
		series[f.GetName()] = f.GetMetric()
	}
	for _, name := range []string{"watcher_last_success_timestamp_seconds", "watcher_open_items", "watcher_stalled_items",
		"watcher_oldest_open_item_age_seconds", "watcher_outbox_depth", "watcher_outbox_oldest_age_seconds"} {
		if len(series[name]) != 0 {
			t.Errorf("%s exported before any lease", name)
		}
	}
	if got := len(series["watcher_source_lease"]); got != len(names) {
		t.Errorf("%d lease series, want one per source (%d)", got, len(names))
	}
	for _, m := range append(series["watcher_source_lease"], series["watcher_publisher_lease"]...) {
		if m.GetGauge().GetValue() != 0 {
			t.Errorf("lease %v = %v before any lease", m.GetLabel(), m.GetGauge().GetValue())
		}
	}
	wantUnknown := 0
	for _, s := range cfg.Sources {
		wantUnknown += len(sourceKinds(s))
	}
	if got := len(series["watcher_unknown_status_total"]); got != wantUnknown || got < len(names)+3 {
		t.Errorf("%d unknown-status series, want one per source and kind (%d)", got, wantUnknown)
	}
	if got := len(series["watcher_transitions_total"]); got != wantUnknown*len(diff.States) {
		t.Errorf("%d transition series, want %d", got, wantUnknown*len(diff.States))
	}
}
