package metrics

import (
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/publish"
)

var t0 = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

func newTest(t *testing.T) (*Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	m := New(reg, []string{"cpn", "ramp"})
	m.now = func() time.Time { return t0 }
	return m, reg
}

// gather returns the families of reg by name.
func gather(t *testing.T, reg *prometheus.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out
}

// labelSets renders every series of a family as "name=value,…", sorted.
func labelSets(f *dto.MetricFamily) []string {
	var out []string
	for _, m := range f.GetMetric() {
		var parts []string
		for _, l := range m.GetLabel() {
			parts = append(parts, l.GetName()+"="+l.GetValue())
		}
		out = append(out, strings.Join(parts, ","))
	}
	slices.Sort(out)
	return out
}

func TestSeriesExistFromTheStart(t *testing.T) {
	_, reg := newTest(t)
	fams := gather(t, reg)
	perSource := map[string]int{
		"watcher_polls_total":                       5,
		"watcher_provider_requests_total":           12,
		"watcher_provider_request_duration_seconds": 2,
		"watcher_rate_limited_total":                1,
		"watcher_backoff_wait_seconds_total":        2,
		"watcher_poll_paced_seconds_total":          1,
		"watcher_records_forgotten_total":           1,
		"watcher_items_seen_total":                  1,
		"watcher_skipped_items_total":               1,
		"watcher_open_items":                        1,
		"watcher_oldest_open_item_age_seconds":      1,
		"watcher_stalled_items":                     1,
		"watcher_last_success_timestamp_seconds":    1,
		"watcher_source_lease":                      1,
	}
	for name, n := range perSource {
		f := fams[name]
		if f == nil {
			t.Errorf("%s missing at start", name)
			continue
		}
		if got := len(f.GetMetric()); got != 2*n {
			t.Errorf("%s has %d series at start, want %d per source: %v", name, got, n, labelSets(f))
		}
	}
	for _, name := range []string{"watcher_outbox_depth", "watcher_outbox_oldest_age_seconds", "watcher_publish_latency_seconds", "watcher_published_total", "watcher_publisher_lease"} {
		if f := fams[name]; f == nil || len(f.GetMetric()) != 1 {
			t.Errorf("%s: %v, want one series", name, f)
		}
	}
	if got := labelSets(fams["watcher_publish_errors_total"]); len(got) != len(publish.Reasons) {
		t.Errorf("publish errors at start: %v, want one per reason %v", got, publish.Reasons)
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if fams[name] == nil && (name != "process_cpu_seconds_total" || runtime.GOOS == "linux") {
			t.Errorf("%s not registered", name)
		}
	}
	// Counts start at 0; a single process holds every lease.
	if v := value(t, reg, "watcher_polls_total", "result=ok,source=cpn"); v != 0 {
		t.Errorf("polls at start = %v", v)
	}
	if v := value(t, reg, "watcher_source_lease", "source=ramp"); v != 1 {
		t.Errorf("lease at start = %v, want 1", v)
	}
	if v := value(t, reg, "watcher_publisher_lease", ""); v != 1 {
		t.Errorf("publisher lease at start = %v, want 1", v)
	}
	// Without Kinds, transitions appear with their first occurrence.
	if fams["watcher_transitions_total"] != nil {
		t.Errorf("transitions before any: %v", labelSets(fams["watcher_transitions_total"]))
	}
}

func TestKindsCreateTransitionSeries(t *testing.T) {
	m, reg := newTest(t)
	m.Kinds("cpn", []string{"payment", "payment_refund", ""})
	m.Kinds("elsewhere", []string{"payment"})
	fams := gather(t, reg)
	if got := len(fams["watcher_transitions_total"].GetMetric()); got != 2*len(states) {
		t.Errorf("%d transition series, want %d (2 kinds × %d states): %v", got, 2*len(states), len(states), labelSets(fams["watcher_transitions_total"]))
	}
	want := []string{"kind=payment,source=cpn", "kind=payment_refund,source=cpn"}
	if got := labelSets(fams["watcher_unknown_status_total"]); !slices.Equal(got, want) {
		t.Errorf("unknown status series %v, want %v", got, want)
	}
	if v := value(t, reg, "watcher_transitions_total", "kind=payment_refund,source=cpn,state=unknown"); v != 0 {
		t.Errorf("pre-created transitions = %v, want 0", v)
	}
	m.Transition("cpn", "payment_refund", diff.Unknown, true)
	if v := value(t, reg, "watcher_unknown_status_total", "kind=payment_refund,source=cpn"); v != 1 {
		t.Errorf("unknown after one = %v, want 1", v)
	}
}

// TestLeaseGatesStateGauges follows a replica that gains a source, loses it and gains
// it again: the state gauges exist only while it holds the lease, the counters always.
func TestLeaseGatesStateGauges(t *testing.T) {
	m, reg := newTest(t)
	stateNames := []string{"watcher_open_items", "watcher_stalled_items", "watcher_last_success_timestamp_seconds", "watcher_oldest_open_item_age_seconds"}
	sourcesOf := func(name string) []string {
		return labelSets(gather(t, reg)[name])
	}
	m.Lease("cpn", false)
	m.Lease("ramp", false)
	m.PublisherLease(false)
	fams := gather(t, reg)
	for _, name := range append(stateNames, "watcher_outbox_depth", "watcher_outbox_oldest_age_seconds") {
		if f := fams[name]; f != nil {
			t.Errorf("%s exported without any lease: %v", name, labelSets(f))
		}
	}
	if v := value(t, reg, "watcher_source_lease", "source=cpn"); v != 0 {
		t.Errorf("lease after losing it = %v", v)
	}
	if v := value(t, reg, "watcher_publisher_lease", ""); v != 0 {
		t.Errorf("publisher lease after losing it = %v", v)
	}
	if got := sourcesOf("watcher_polls_total"); len(got) != 2*len(results) {
		t.Errorf("counters without leases: %v", got)
	}

	m.Lease("cpn", true)
	m.Restore("cpn", 0, t0.Add(-time.Minute))
	m.Open("cpn", 3, 1, t0.Add(-time.Hour))
	for _, name := range stateNames {
		if got := sourcesOf(name); !slices.Equal(got, []string{"source=cpn"}) {
			t.Errorf("%s while holding cpn only: %v", name, got)
		}
	}
	if v := value(t, reg, "watcher_last_success_timestamp_seconds", "source=cpn"); v != float64(t0.Unix()-60) {
		t.Errorf("restored last success = %v", v)
	}

	// Losing and regaining clears the tenure's open items and stalled count, not the
	// last success.
	m.Lease("cpn", false)
	m.Lease("cpn", true)
	for name, want := range map[string]float64{"watcher_open_items": 0, "watcher_stalled_items": 0,
		"watcher_oldest_open_item_age_seconds": 0, "watcher_last_success_timestamp_seconds": float64(t0.Unix() - 60)} {
		if v := value(t, reg, name, "source=cpn"); v != want {
			t.Errorf("%s after regaining = %v, want %v", name, v, want)
		}
	}
	m.PublisherLease(true)
	m.Outbox(7, t0.Add(-time.Second))
	if v := value(t, reg, "watcher_outbox_depth", ""); v != 7 {
		t.Errorf("outbox depth while publishing = %v", v)
	}
	m.Lease("elsewhere", true)
	if got := sourcesOf("watcher_source_lease"); len(got) != 2 {
		t.Errorf("lease series %v, want one per configured source", got)
	}
}

func TestReplicaInfo(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	if err := RegisterReplica(reg, "watcher-7c9-x2k9q"); err != nil {
		t.Fatal(err)
	}
	want := `# HELP watcher_replica_info Always 1; its replica label is this process's cluster.replica_id.
# TYPE watcher_replica_info gauge
watcher_replica_info{replica="watcher-7c9-x2k9q"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "watcher_replica_info"); err != nil {
		t.Error(err)
	}
}

// value returns the value of the series of family name whose labels, rendered as by
// labelSets, are labels; it fails the test when there is none.
func value(t *testing.T, reg *prometheus.Registry, name, labels string) float64 {
	t.Helper()
	f := gather(t, reg)[name]
	for _, m := range f.GetMetric() {
		if labelSets(&dto.MetricFamily{Metric: []*dto.Metric{m}})[0] == labels {
			return m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	t.Fatalf("%s{%s} not found among %v", name, labels, labelSets(f))
	return 0
}

func TestPollerSeries(t *testing.T) {
	m, reg := newTest(t)
	m.Poll("cpn", poller.ResultOK, time.Second)
	m.Poll("cpn", poller.ResultOK, time.Second)
	m.Poll("cpn", poller.ResultAuthError, time.Second)
	m.Request("cpn", poller.PurposeDiscovery, 200, 100*time.Millisecond)
	m.Request("cpn", poller.PurposeDiscovery, 204, 300*time.Millisecond)
	m.Request("cpn", poller.PurposeRefresh, 429, time.Second)
	m.Request("cpn", poller.PurposeRefresh, 404, time.Second)
	m.Request("cpn", poller.PurposeRefresh, 503, time.Second)
	m.Request("cpn", poller.PurposeRefresh, 302, time.Second)
	m.Request("cpn", poller.PurposeRefresh, 0, time.Second)
	m.Wait("cpn", WaitRateLimited, 2*time.Second)
	m.Wait("cpn", WaitRateLimited, 3*time.Second)
	m.Wait("cpn", WaitBackoff, 500*time.Millisecond)
	m.Paced("cpn", 1500*time.Millisecond)
	m.Paced("cpn", 2*time.Second)
	m.Paced("elsewhere", time.Second)
	m.Forgotten("cpn", 1000)
	m.Forgotten("cpn", 24)
	m.Forgotten("elsewhere", 5)
	m.Items("cpn", 50)
	m.Items("cpn", 1)
	m.Skipped("cpn")
	m.Transition("cpn", "payment", diff.Failed, false)
	m.Transition("cpn", "payment", diff.Failed, false)
	m.Transition("cpn", "payment_refund", diff.Unknown, true)
	m.Success("ramp", t0.Add(-30*time.Second))

	for _, c := range []struct {
		name, labels string
		want         float64
	}{
		{"watcher_polls_total", "result=ok,source=cpn", 2},
		{"watcher_polls_total", "result=auth_error,source=cpn", 1},
		{"watcher_polls_total", "result=ok,source=ramp", 0},
		{"watcher_provider_requests_total", "code=2xx,purpose=discovery,source=cpn", 2},
		{"watcher_provider_requests_total", "code=429,purpose=refresh,source=cpn", 1},
		{"watcher_provider_requests_total", "code=4xx,purpose=refresh,source=cpn", 1},
		{"watcher_provider_requests_total", "code=5xx,purpose=refresh,source=cpn", 1},
		{"watcher_provider_requests_total", "code=3xx,purpose=refresh,source=cpn", 1},
		{"watcher_provider_requests_total", "code=error,purpose=refresh,source=cpn", 1},
		{"watcher_provider_requests_total", "code=2xx,purpose=refresh,source=cpn", 0},
		{"watcher_rate_limited_total", "source=cpn", 2},
		{"watcher_backoff_wait_seconds_total", "reason=rate_limited,source=cpn", 5},
		{"watcher_backoff_wait_seconds_total", "reason=backoff,source=cpn", 0.5},
		{"watcher_poll_paced_seconds_total", "source=cpn", 3.5},
		{"watcher_poll_paced_seconds_total", "source=ramp", 0},
		{"watcher_records_forgotten_total", "source=cpn", 1024},
		{"watcher_records_forgotten_total", "source=ramp", 0},
		{"watcher_items_seen_total", "source=cpn", 51},
		{"watcher_skipped_items_total", "source=cpn", 1},
		{"watcher_transitions_total", "kind=payment,source=cpn,state=failed", 2},
		{"watcher_transitions_total", "kind=payment_refund,source=cpn,state=unknown", 1},
		{"watcher_unknown_status_total", "kind=payment_refund,source=cpn", 1},
		{"watcher_last_success_timestamp_seconds", "source=ramp", float64(t0.Unix() - 30)},
		{"watcher_last_success_timestamp_seconds", "source=cpn", 0},
	} {
		if got := value(t, reg, c.name, c.labels); got != c.want {
			t.Errorf("%s{%s} = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := labelSets(gather(t, reg)["watcher_unknown_status_total"]); !slices.Equal(got, []string{"kind=payment_refund,source=cpn"}) {
		t.Errorf("unknown status series %v", got)
	}

	// The request histogram holds every request, failed ones included.
	fams := gather(t, reg)
	for _, s := range fams["watcher_provider_request_duration_seconds"].GetMetric() {
		h := s.GetHistogram()
		labels := labelSets(&dto.MetricFamily{Metric: []*dto.Metric{s}})[0]
		switch labels {
		case "purpose=discovery,source=cpn":
			if h.GetSampleCount() != 2 || h.GetSampleSum() != 0.4 {
				t.Errorf("discovery durations: %d samples summing to %v, want 2 and 0.4", h.GetSampleCount(), h.GetSampleSum())
			}
		case "purpose=refresh,source=cpn":
			if h.GetSampleCount() != 5 {
				t.Errorf("refresh durations: %d samples, want 5", h.GetSampleCount())
			}
		}
	}
}

func TestOpenAndAges(t *testing.T) {
	m, reg := newTest(t)
	m.Restore("cpn", 4, t0.Add(-time.Hour))
	m.Restore("elsewhere", 9, t0)
	if got := value(t, reg, "watcher_stalled_items", "source=cpn"); got != 4 {
		t.Errorf("stalled after Restore = %v, want 4", got)
	}
	if got := value(t, reg, "watcher_last_success_timestamp_seconds", "source=cpn"); got != float64(t0.Add(-time.Hour).Unix()) {
		t.Errorf("last success after Restore = %v", got)
	}

	m.Open("cpn", 12, 2, t0.Add(-90*time.Minute))
	if got := value(t, reg, "watcher_open_items", "source=cpn"); got != 12 {
		t.Errorf("open = %v, want 12", got)
	}
	if got := value(t, reg, "watcher_stalled_items", "source=cpn"); got != 6 {
		t.Errorf("stalled = %v, want 4 restored + 2 found", got)
	}
	if got := value(t, reg, "watcher_oldest_open_item_age_seconds", "source=cpn"); got != 5400 {
		t.Errorf("oldest open age = %v, want 5400", got)
	}
	// The age is computed when scraped, not when reported.
	m.now = func() time.Time { return t0.Add(time.Minute) }
	if got := value(t, reg, "watcher_oldest_open_item_age_seconds", "source=cpn"); got != 5460 {
		t.Errorf("oldest open age a minute later = %v, want 5460", got)
	}
	if got := value(t, reg, "watcher_oldest_open_item_age_seconds", "source=ramp"); got != 0 {
		t.Errorf("oldest open age of a source without report = %v, want 0", got)
	}
	m.Open("cpn", 0, 0, time.Time{})
	if got := value(t, reg, "watcher_oldest_open_item_age_seconds", "source=cpn"); got != 0 {
		t.Errorf("oldest open age with nothing open = %v, want 0", got)
	}
}

func TestPublisherSeries(t *testing.T) {
	m, reg := newTest(t)
	m.Published(20 * time.Millisecond)
	m.Published(3 * time.Second)
	m.PublishFailed(publish.ReasonNotConnected)
	m.PublishFailed(publish.ReasonNotConnected)
	m.PublishFailed(publish.ReasonAckTimeout)
	m.Outbox(1500, t0.Add(-2*time.Minute))

	if got := testutil.ToFloat64(m.published); got != 2 {
		t.Errorf("published = %v, want 2", got)
	}
	if got := value(t, reg, "watcher_publish_errors_total", "reason="+publish.ReasonNotConnected); got != 2 {
		t.Errorf("not_connected errors = %v, want 2", got)
	}
	if got := value(t, reg, "watcher_publish_errors_total", "reason="+publish.ReasonAckTimeout); got != 1 {
		t.Errorf("ack_timeout errors = %v, want 1", got)
	}
	if got := value(t, reg, "watcher_outbox_depth", ""); got != 1500 {
		t.Errorf("outbox depth = %v", got)
	}
	if got := value(t, reg, "watcher_outbox_oldest_age_seconds", ""); got != 120 {
		t.Errorf("outbox oldest age = %v, want 120", got)
	}
	m.Outbox(0, time.Time{})
	if got := value(t, reg, "watcher_outbox_oldest_age_seconds", ""); got != 0 {
		t.Errorf("outbox oldest age when empty = %v, want 0", got)
	}
	lat := gather(t, reg)["watcher_publish_latency_seconds"].GetMetric()[0].GetHistogram()
	if lat.GetSampleCount() != 2 || lat.GetSampleSum() != 3.02 {
		t.Errorf("latency histogram: %d samples summing to %v, want 2 and 3.02", lat.GetSampleCount(), lat.GetSampleSum())
	}
}

// TestLabelSetsAreClosed feeds every hook values outside its documented set: none of
// them may create a series.
func TestLabelSetsAreClosed(t *testing.T) {
	m, reg := newTest(t)
	before := gather(t, reg)
	m.Poll("unknown-source", poller.ResultOK, time.Second)
	m.Poll("cpn", "exploded", time.Second)
	m.Request("unknown-source", poller.PurposeDiscovery, 200, time.Second)
	m.Request("cpn", "curiosity", 200, time.Second)
	m.Wait("cpn", "nap", time.Second)
	m.Wait("unknown-source", WaitBackoff, time.Second)
	m.Items("unknown-source", 3)
	m.Skipped("unknown-source")
	m.Transition("cpn", "payment", diff.State("made_up"), false)
	m.Transition("unknown-source", "payment", diff.Failed, false)
	m.Open("unknown-source", 1, 1, t0)
	m.Success("unknown-source", t0)
	m.PublishFailed("gremlins")
	m.Lease("unknown-source", true)
	m.Kinds("unknown-source", []string{"payment"})
	after := gather(t, reg)
	for name, f := range after {
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
			continue
		}
		if got, want := labelSets(f), labelSets(before[name]); !slices.Equal(got, want) {
			t.Errorf("%s series changed:\n got %v\nwant %v", name, got, want)
		}
		for _, s := range f.GetMetric() {
			if v := s.GetCounter().GetValue() + s.GetGauge().GetValue() + float64(s.GetHistogram().GetSampleCount()); v != 0 && !strings.HasPrefix(name, "watcher_build") && !strings.HasSuffix(name, "_lease") {
				t.Errorf("%s %v = %v after out-of-set calls, want 0", name, labelSets(&dto.MetricFamily{Metric: []*dto.Metric{s}}), v)
			}
		}
	}
	// The code label takes the six classes only, whatever the status.
	for _, code := range []int{0, 100, 199, 200, 299, 301, 404, 429, 500, 599, 600, 999, -1} {
		if c := codeClass(code); !slices.Contains(codeClasses, c) {
			t.Errorf("codeClass(%d) = %q", code, c)
		}
	}
}

func TestBuildInfo(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	if err := RegisterBuildInfo(reg, "1.2.3", "abc123"); err != nil {
		t.Fatal(err)
	}
	want := `# HELP watcher_build_info Always 1; its labels name the running build.
# TYPE watcher_build_info gauge
watcher_build_info{commit="abc123",goversion="` + runtime.Version() + `",version="1.2.3"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "watcher_build_info"); err != nil {
		t.Error(err)
	}
	if err := RegisterBuildInfo(reg, "1.2.3", "abc123"); err == nil {
		t.Error("registering the build info twice succeeded")
	}
}

func TestNewOnOwnRegistry(t *testing.T) {
	// Two registries, two Metrics: nothing touches the global default registry.
	before, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	New(prometheus.NewRegistry(), []string{"a"})
	New(prometheus.NewRegistry(), []string{"a"})
	after, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range after {
		if strings.HasPrefix(f.GetName(), "watcher_") {
			t.Errorf("%s on the default registry", f.GetName())
		}
	}
	if len(after) != len(before) {
		t.Errorf("the default registry went from %d to %d families", len(before), len(after))
	}
}
