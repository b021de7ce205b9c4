package daemon

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/payments-watcher/watcher/config"
	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/stateapi"
)

func TestReadinessRules(t *testing.T) {
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := start
	var natsErr, outboxErr error
	depth := 0
	health := poller.Health{}
	r := &readiness{
		nats: func() error { return natsErr },
		outbox: func(context.Context) (int, time.Time, error) {
			return depth, start, outboxErr
		},
		maxOutbox: 2,
		sources: func() []sourceHealth {
			return []sourceHealth{{name: "cpn", interval: 15 * time.Second, since: start, health: health}}
		},
		now:    func() time.Time { return clock },
		redact: strings.NewReplacer("k-secret", "[api_key]"),
	}
	check := func(what string, want ...string) {
		t.Helper()
		if got := r.notReady(t.Context()); !slices.Equal(got, want) {
			t.Errorf("%s: %q, want %q", what, got, want)
		}
	}
	check("at the start")
	clock = start.Add(45 * time.Second)
	check("three intervals in")
	clock = start.Add(47 * time.Second)
	check("past three intervals, a cycle running", "source cpn: no successful poll since the start 47s (interval 15s): a cycle is still running")
	health = poller.Health{LastSuccess: start.Add(40 * time.Second)}
	check("after a success")
	clock = start.Add(90 * time.Second)
	health.Err = errors.New("HTTP 401: key k-secret\nrefused")
	check("stale with an error", "source cpn: no successful poll for 50s (interval 15s): HTTP 401: key [api_key] refused")
	health = poller.Health{LastSuccess: clock}
	depth = 2
	natsErr = errors.New("connection closed")
	check("outbox full, NATS down", "nats: connection closed",
		"outbox: 2 events waiting since 2026-03-01T12:00:00Z, at or over nats.max_outbox 2; polling is paused until NATS takes them")
	natsErr, depth, outboxErr = nil, 0, errors.New("bucket gone")
	check("outbox unreadable", "outbox: bucket gone")
}

// TestReplicaMetricsStartUnheld checks a cluster replica's registry before any lease:
// every lease gauge at 0, no state gauge to freeze or double-count, and the
// transition and unknown-status series of every source's kinds at 0.
func TestReplicaMetricsStartUnheld(t *testing.T) {
	doc := `state:
  backend: nats_kv
nats:
  url: nats://127.0.0.1:4222
cluster:
  replica_id: r1
sources:
  - name: cpn
    provider: circle_cpn_payments
    api_key: k
  - name: ramp
    provider: circle_ramp_sessions
    api_key: TEST_API_KEY:a:b
`
	cfg, err := config.Parse([]byte(doc), func(string) (string, bool) { return "", false }, os.ReadFile)
	if err != nil {
		t.Fatal(err)
	}
	kinds := func(s config.Source) []string { return []string{s.Provider.Kind, "nested"} }
	d, err := newDaemon(cfg, nil, Options{Kinds: kinds, Redact: strings.NewReplacer()}, stateapi.Bolt(nil))
	if err != nil {
		t.Fatal(err)
	}
	d.holdNothing()
	fams, err := d.reg.Gather()
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
	if got := len(series["watcher_source_lease"]); got != 2 {
		t.Errorf("%d lease series, want one per source", got)
	}
	for _, m := range append(series["watcher_source_lease"], series["watcher_publisher_lease"]...) {
		if m.GetGauge().GetValue() != 0 {
			t.Errorf("lease %v = %v before any lease", m.GetLabel(), m.GetGauge().GetValue())
		}
	}
	if got := len(series["watcher_unknown_status_total"]); got != 4 {
		t.Errorf("%d unknown-status series, want one per source and kind (4)", got)
	}
	var _ prometheus.Gatherer = d.reg
}
