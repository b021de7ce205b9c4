package main

import (
	"os"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/payments-watcher/watcher/config"
	"github.com/payments-watcher/watcher/diff"
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
