// Package metrics turns what watcher's pollers and publisher report into Prometheus
// series, all named watcher_*, on a registry the caller provides (never the global
// one).
//
// Every label has a closed set of values: source is one of the configured source
// names given to New, and result, purpose, code, reason and state take only the
// values their hooks document. A call with a value outside its set is not counted,
// so that a mistake can never grow the number of series. The series of each source
// exist from the start, at 0; so do watcher_transitions_total and
// watcher_unknown_status_total for every kind given to Kinds, so that a first
// increment is an increase a rule can see.
//
// # Leases
//
// In a cluster each source is polled, and the outbox published, by the one replica
// holding its lease; every replica exports every source's counters, but only the
// holder's move. watcher_source_lease{source} is 1 on the holder and 0 elsewhere, and
// watcher_publisher_lease is 1 on the replica running the publisher. The series that
// describe a source's current state (watcher_last_success_timestamp_seconds,
// watcher_open_items, watcher_stalled_items, watcher_oldest_open_item_age_seconds)
// and the outbox gauges are exported only while this process holds the lease, so a
// former holder's frozen values disappear instead of ageing into alerts and a sum
// over replicas counts each source once. A single process holds every lease: New
// starts with all of them held, and only a cluster replica calls Lease.
package metrics

import (
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/publish"
)

// Label values of the closed sets.
var (
	results     = []string{poller.ResultOK, poller.ResultError, poller.ResultAuthError, poller.ResultOutboxFull, poller.ResultCanceled}
	purposes    = []string{poller.PurposeDiscovery, poller.PurposeRefresh}
	codeClasses = []string{"2xx", "3xx", "4xx", "5xx", "429", "error"}
	waitReasons = []string{WaitRateLimited, WaitBackoff}
	states      = []diff.State{diff.Pending, diff.ActionRequired, diff.Processing, diff.Completed, diff.Underpaid,
		diff.Failed, diff.Canceled, diff.Expired, diff.Unknown}
)

// Reasons of poller.Observer.Wait.
const (
	WaitRateLimited = "rate_limited"
	WaitBackoff     = "backoff"
)

// Histogram buckets, in seconds. Provider requests take from tens of milliseconds to
// the request timeout; the publish latency runs from a commit to its PubAck, which is
// milliseconds while NATS is up and as long as an outage when it is not.
var (
	requestBuckets = []float64{0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}
	latencyBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600}
)

// Metrics implements poller.Observer and publish.Observer. Its methods are safe for
// concurrent use and never block on anything but a short lock.
type Metrics struct {
	sources []string
	now     func() time.Time

	polls          *prometheus.CounterVec
	requests       *prometheus.CounterVec
	requestSeconds *prometheus.HistogramVec
	rateLimited    *prometheus.CounterVec
	waitSeconds    *prometheus.CounterVec
	pacedSeconds   *prometheus.CounterVec
	forgotten      *prometheus.CounterVec
	items          *prometheus.CounterVec
	skipped        *prometheus.CounterVec
	transitions    *prometheus.CounterVec
	unknown        *prometheus.CounterVec
	anomalies      *prometheus.CounterVec
	lease          *prometheus.GaugeVec
	publisherLease prometheus.Gauge
	publishLatency prometheus.Histogram
	published      prometheus.Counter
	publishErrors  *prometheus.CounterVec
	retention      retentionSeries

	mu           sync.Mutex
	state        map[string]*sourceState // per source
	publishing   bool                    // the publisher lease is held
	outboxDepth  int
	outboxOldest time.Time // zero when the outbox is empty
}

// sourceState is what the state gauges of one source export.
type sourceState struct {
	held        bool
	open        int
	stalled     int
	oldestOpen  time.Time // zero when nothing is open
	lastSuccess time.Time // zero before the first successful cycle
}

var (
	_ poller.Observer  = (*Metrics)(nil)
	_ publish.Observer = (*Metrics)(nil)
)

// New registers watcher's series for the given source names on reg, with the Go
// runtime and process collectors, and returns the Metrics that feeds them. It panics
// if reg already holds any of these series, as registering the same Metrics twice
// would.
func New(reg prometheus.Registerer, sources []string) *Metrics {
	src := []string{"source"}
	m := &Metrics{
		sources: slices.Clone(sources),
		now:     time.Now,
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "watcher_polls_total",
			Help: "Polling cycles by outcome.",
		}, []string{"source", "result"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "watcher_provider_requests_total",
			Help: "Provider HTTP requests by purpose and status class (2xx, 3xx, 4xx, 5xx, 429, error when no response arrived).",
		}, []string{"source", "purpose", "code"}),
		requestSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "watcher_provider_request_duration_seconds",
			Help:    "Duration of provider HTTP requests, failed ones included.",
			Buckets: requestBuckets,
		}, []string{"source", "purpose"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "watcher_rate_limited_total",
			Help: "Provider answers 429 Too Many Requests that made the source wait.",
		}, src),
		waitSeconds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "watcher_backoff_wait_seconds_total",
			Help: "Time spent waiting before retrying provider requests, by reason (rate_limited, backoff).",
		}, []string{"source", "reason"}),
		pacedSeconds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "watcher_poll_paced_seconds_total",
			Help: "Time walks spent waiting between pages for NATS to take events, the outbox holding nats.outbox_pace events or more.",
		}, src),
		forgotten: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "watcher_records_forgotten_total",
			Help: "Snapshot records removed from the state because no walk can reach their items again (created before lookback and not open).",
		}, src),
		items: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "watcher_items_seen_total",
			Help: "Top-level items read from the provider (lists and single-item reads).",
		}, src),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "watcher_skipped_items_total",
			Help: "Malformed items left out of a page.",
		}, src),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "watcher_transitions_total",
			Help: "Status transitions committed for publishing, by kind and normalized state.",
		}, []string{"source", "kind", "state"}),
		unknown: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "watcher_unknown_status_total",
			Help: "Transitions to a raw status the provider's mapping does not know (published with state unknown).",
		}, []string{"source", "kind"}),
		anomalies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "watcher_provider_anomalies_total",
			Help: "Provider behaviour the documents do not show, by kind (unordered, date_filter_ignored, short_page, foreign_link, clock_skew, signing); counted at most once per cycle.",
		}, []string{"source", "kind"}),
		lease: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "watcher_source_lease",
			Help: "1 while this process holds the source's lease (polls it), else 0; a single process holds every source.",
		}, src),
		publisherLease: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "watcher_publisher_lease",
			Help: "1 while this process holds the outbox publisher's lease, else 0; a single process always holds it.",
		}),
		publishLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "watcher_publish_latency_seconds",
			Help:    "Time from an event's commit to the outbox to its JetStream acknowledgement.",
			Buckets: latencyBuckets,
		}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "watcher_published_total",
			Help: "Events acknowledged by JetStream (duplicates it dropped included).",
		}),
		publishErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "watcher_publish_errors_total",
			Help: "Failed passes over the outbox, by reason.",
		}, []string{"reason"}),
		retention:  newRetentionSeries(),
		state:      map[string]*sourceState{},
		publishing: true,
	}
	reg.MustRegister(
		m.polls, m.requests, m.requestSeconds, m.rateLimited, m.waitSeconds, m.pacedSeconds, m.forgotten, m.items, m.skipped,
		m.transitions, m.unknown, m.anomalies, m.lease, m.publisherLease, m.publishLatency,
		m.published, m.publishErrors, stateCollector{m},
		m.retention.retainedBytes, m.retention.pruned, m.retention.republished,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	for _, s := range m.sources {
		for _, r := range results {
			m.polls.WithLabelValues(s, r)
		}
		for _, p := range purposes {
			m.requestSeconds.WithLabelValues(s, p)
			for _, c := range codeClasses {
				m.requests.WithLabelValues(s, p, c)
			}
		}
		for _, r := range waitReasons {
			m.waitSeconds.WithLabelValues(s, r)
		}
		for _, k := range poller.Anomalies {
			m.anomalies.WithLabelValues(s, k)
		}
		m.rateLimited.WithLabelValues(s)
		m.pacedSeconds.WithLabelValues(s)
		m.forgotten.WithLabelValues(s)
		m.items.WithLabelValues(s)
		m.skipped.WithLabelValues(s)
		m.state[s] = &sourceState{held: true}
		m.lease.WithLabelValues(s).Set(1)
	}
	m.publisherLease.Set(1)
	for _, r := range publish.Reasons {
		m.publishErrors.WithLabelValues(r)
	}
	return m
}

// Kinds creates, at 0, the transition series of source for each of kinds and every
// normalized state, and its unknown-status series for each of kinds. The kinds are
// those the source's provider adapter emits, top-level and nested. A kind not given
// here is still counted, from its first transition on.
func (m *Metrics) Kinds(source string, kinds []string) {
	if !m.known(source) {
		return
	}
	for _, k := range kinds {
		if k == "" {
			continue
		}
		m.unknown.WithLabelValues(source, k)
		for _, st := range states {
			m.transitions.WithLabelValues(source, k, string(st))
		}
	}
}

// Lease records whether this process holds the lease of source: the source's state
// gauges are exported only while it does (see the package doc). Gaining a lease
// clears what an earlier tenure left (open items, stalled count), which the first
// cycle sets again; call Restore after Lease to carry over the last success.
func (m *Metrics) Lease(source string, held bool) {
	if !m.known(source) {
		return
	}
	m.mu.Lock()
	st := m.state[source]
	if held && !st.held {
		*st = sourceState{lastSuccess: st.lastSuccess}
	}
	st.held = held
	m.mu.Unlock()
	m.lease.WithLabelValues(source).Set(boolValue(held))
}

// PublisherLease records whether this process runs the outbox publisher: the outbox
// gauges are exported only while it does.
func (m *Metrics) PublisherLease(held bool) {
	m.mu.Lock()
	m.publishing = held
	m.mu.Unlock()
	m.publisherLease.Set(boolValue(held))
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// RegisterReplica registers watcher_replica_info{replica}, always 1, on reg: it names
// the cluster replica behind a scrape target, for dashboards joining on instance.
func RegisterReplica(reg prometheus.Registerer, replica string) error {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "watcher_replica_info",
		Help:        "Always 1; its replica label is this process's cluster.replica_id.",
		ConstLabels: prometheus.Labels{"replica": replica},
	})
	g.Set(1)
	return reg.Register(g)
}

// RegisterBuildInfo registers watcher_build_info{version,commit,goversion}, always 1,
// on reg.
func RegisterBuildInfo(reg prometheus.Registerer, version, commit string) error {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "watcher_build_info",
		Help:        "Always 1; its labels name the running build.",
		ConstLabels: prometheus.Labels{"version": version, "commit": commit, "goversion": runtime.Version()},
	})
	g.Set(1)
	return reg.Register(g)
}

// Restore sets what a source's gauges carry over from before this process started,
// as the state file holds it: the records marked stalled and the end of the last
// successful cycle (zero: never). Call it before the source's poller starts.
func (m *Metrics) Restore(source string, stalled int, lastSuccess time.Time) {
	if !m.known(source) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.state[source]
	st.stalled = max(stalled, 0)
	if !lastSuccess.IsZero() {
		st.lastSuccess = lastSuccess
	}
}

func (m *Metrics) known(source string) bool { return slices.Contains(m.sources, source) }

// Poll counts a cycle; took is not recorded (provider requests have their own
// histogram).
func (m *Metrics) Poll(source, result string, _ time.Duration) {
	if m.known(source) && slices.Contains(results, result) {
		m.polls.WithLabelValues(source, result).Inc()
	}
}

// Request counts a provider request by the class of its status code and records its
// duration.
func (m *Metrics) Request(source, purpose string, code int, took time.Duration) {
	if !m.known(source) || !slices.Contains(purposes, purpose) {
		return
	}
	m.requests.WithLabelValues(source, purpose, codeClass(code)).Inc()
	m.requestSeconds.WithLabelValues(source, purpose).Observe(took.Seconds())
}

// codeClass is the code label of an HTTP status: 429 on its own, else its class;
// "error" when no response arrived (0) or the code is not a final HTTP status.
func codeClass(code int) string {
	switch {
	case code == 429:
		return "429"
	case code >= 200 && code < 300:
		return "2xx"
	case code >= 300 && code < 400:
		return "3xx"
	case code >= 400 && code < 500:
		return "4xx"
	case code >= 500 && code < 600:
		return "5xx"
	default:
		return "error"
	}
}

// Wait adds a pause before a retry; a rate_limited pause is also counted in
// watcher_rate_limited_total.
func (m *Metrics) Wait(source, reason string, d time.Duration) {
	if !m.known(source) || !slices.Contains(waitReasons, reason) {
		return
	}
	if reason == WaitRateLimited {
		m.rateLimited.WithLabelValues(source).Inc()
	}
	m.waitSeconds.WithLabelValues(source, reason).Add(max(d, 0).Seconds())
}

// Paced adds a wait of a walk for NATS to take events (nats.outbox_pace).
func (m *Metrics) Paced(source string, d time.Duration) {
	if m.known(source) {
		m.pacedSeconds.WithLabelValues(source).Add(max(d, 0).Seconds())
	}
}

// Forgotten counts snapshot records removed from the state.
func (m *Metrics) Forgotten(source string, n int) {
	if m.known(source) && n > 0 {
		m.forgotten.WithLabelValues(source).Add(float64(n))
	}
}

// Items counts items read.
func (m *Metrics) Items(source string, n int) {
	if m.known(source) && n > 0 {
		m.items.WithLabelValues(source).Add(float64(n))
	}
}

// Skipped counts a malformed item.
func (m *Metrics) Skipped(source string) {
	if m.known(source) {
		m.skipped.WithLabelValues(source).Inc()
	}
}

// Transition counts a transition, and a transition to an unknown raw status.
func (m *Metrics) Transition(source, kind string, state diff.State, unknown bool) {
	if !m.known(source) || kind == "" || !slices.Contains(states, state) {
		return
	}
	m.transitions.WithLabelValues(source, kind, string(state)).Inc()
	if unknown {
		m.unknown.WithLabelValues(source, kind).Inc()
	}
}

// Open sets the open items and the creation time of the oldest, and adds the items
// the cycle marked stalled.
func (m *Metrics) Open(source string, open, stalled int, oldest time.Time) {
	if !m.known(source) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.state[source]
	st.open = open
	st.stalled += max(stalled, 0)
	st.oldestOpen = oldest
}

// Anomaly counts provider behaviour the documents do not show (poller.Anomalies).
func (m *Metrics) Anomaly(source, kind string) {
	if !m.known(source) || !slices.Contains(poller.Anomalies, kind) {
		return
	}
	m.anomalies.WithLabelValues(source, kind).Inc()
}

// Success records the end of a successful cycle.
func (m *Metrics) Success(source string, at time.Time) {
	if m.known(source) {
		m.mu.Lock()
		m.state[source].lastSuccess = at
		m.mu.Unlock()
	}
}

// Published counts an acknowledged event and records its latency.
func (m *Metrics) Published(latency time.Duration) {
	m.published.Inc()
	m.publishLatency.Observe(max(latency, 0).Seconds())
}

// PublishFailed counts a failed pass over the outbox.
func (m *Metrics) PublishFailed(reason string) {
	if slices.Contains(publish.Reasons, reason) {
		m.publishErrors.WithLabelValues(reason).Inc()
	}
}

// Outbox sets the outbox depth and the enqueueing time of its oldest entry.
func (m *Metrics) Outbox(depth int, oldest time.Time) {
	m.mu.Lock()
	m.outboxDepth = depth
	m.outboxOldest = oldest
	m.mu.Unlock()
}

func unixSeconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

// stateCollector exports the state gauges of the leases held at scrape time, and
// computes the ages then, so that an age keeps growing between the reports that set
// the times it is measured from.
type stateCollector struct{ m *Metrics }

var (
	openDesc = prometheus.NewDesc("watcher_open_items",
		"Items still re-read because they or a nested item are not final, as of the last cycle; exported while the source's lease is held.",
		[]string{"source"}, nil)
	stalledDesc = prometheus.NewDesc("watcher_stalled_items",
		"Items open longer than open_max_age and no longer re-read; exported while the source's lease is held.",
		[]string{"source"}, nil)
	lastSuccessDesc = prometheus.NewDesc("watcher_last_success_timestamp_seconds",
		"Unix time of the end of the last successful cycle; 0 before the first; exported while the source's lease is held.",
		[]string{"source"}, nil)
	oldestOpenDesc = prometheus.NewDesc("watcher_oldest_open_item_age_seconds",
		"Age (from its creation at the provider) of the oldest open item, as of the last cycle; 0 when none is open; exported while the source's lease is held.",
		[]string{"source"}, nil)
	outboxDepthDesc = prometheus.NewDesc("watcher_outbox_depth",
		"Events waiting in the outbox for their JetStream acknowledgement; exported while the publisher lease is held.",
		nil, nil)
	outboxOldestDesc = prometheus.NewDesc("watcher_outbox_oldest_age_seconds",
		"Time the oldest event in the outbox has waited for its JetStream acknowledgement; 0 when the outbox is empty; exported while the publisher lease is held.",
		nil, nil)
)

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{openDesc, stalledDesc, lastSuccessDesc, oldestOpenDesc, outboxDepthDesc, outboxOldestDesc} {
		ch <- d
	}
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	now := m.now()
	age := func(t time.Time) float64 {
		if t.IsZero() {
			return 0
		}
		return max(now.Sub(t), 0).Seconds()
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
		return prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	var out []prometheus.Metric
	m.mu.Lock()
	for _, s := range m.sources {
		st := m.state[s]
		if !st.held {
			continue
		}
		out = append(out,
			gauge(openDesc, float64(st.open), s),
			gauge(stalledDesc, float64(st.stalled), s),
			gauge(lastSuccessDesc, unixSeconds(st.lastSuccess), s),
			gauge(oldestOpenDesc, age(st.oldestOpen), s))
	}
	if m.publishing {
		out = append(out, gauge(outboxDepthDesc, float64(m.outboxDepth)), gauge(outboxOldestDesc, age(m.outboxOldest)))
	}
	m.mu.Unlock()
	for _, mt := range out {
		ch <- mt
	}
}
