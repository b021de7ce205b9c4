// Package metrics turns what watcher's pollers and publisher report into Prometheus
// series, all named watcher_*, on a registry the caller provides (never the global
// one).
//
// Every label has a closed set of values: source is one of the configured source
// names given to New, and result, purpose, code, reason and state take only the
// values their hooks document. A call with a value outside its set is not counted,
// so that a mistake can never grow the number of series. The series of each source
// exist from the start, at 0.
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
	items          *prometheus.CounterVec
	skipped        *prometheus.CounterVec
	transitions    *prometheus.CounterVec
	unknown        *prometheus.CounterVec
	anomalies      *prometheus.CounterVec
	open           *prometheus.GaugeVec
	stalled        *prometheus.GaugeVec
	lastSuccess    *prometheus.GaugeVec
	outboxDepth    prometheus.Gauge
	publishLatency prometheus.Histogram
	published      prometheus.Counter
	publishErrors  *prometheus.CounterVec

	mu           sync.Mutex
	oldestOpen   map[string]time.Time // per source; zero when nothing is open
	outboxOldest time.Time            // zero when the outbox is empty
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
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "watcher_open_items",
			Help: "Items still re-read because they or a nested item are not final, as of the last cycle.",
		}, src),
		stalled: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "watcher_stalled_items",
			Help: "Items open longer than open_max_age and no longer re-read.",
		}, src),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "watcher_last_success_timestamp_seconds",
			Help: "Unix time of the end of the last successful cycle; 0 before the first.",
		}, src),
		outboxDepth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "watcher_outbox_depth",
			Help: "Events waiting in the outbox for their JetStream acknowledgement.",
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
		oldestOpen: map[string]time.Time{},
	}
	reg.MustRegister(
		m.polls, m.requests, m.requestSeconds, m.rateLimited, m.waitSeconds, m.items, m.skipped,
		m.transitions, m.unknown, m.anomalies, m.open, m.stalled, m.lastSuccess, m.outboxDepth, m.publishLatency,
		m.published, m.publishErrors, ageCollector{m},
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
		m.items.WithLabelValues(s)
		m.skipped.WithLabelValues(s)
		m.open.WithLabelValues(s)
		m.stalled.WithLabelValues(s)
		m.lastSuccess.WithLabelValues(s)
	}
	for _, r := range publish.Reasons {
		m.publishErrors.WithLabelValues(r)
	}
	return m
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
	m.stalled.WithLabelValues(source).Set(float64(stalled))
	if !lastSuccess.IsZero() {
		m.lastSuccess.WithLabelValues(source).Set(unixSeconds(lastSuccess))
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
	m.open.WithLabelValues(source).Set(float64(open))
	if stalled > 0 {
		m.stalled.WithLabelValues(source).Add(float64(stalled))
	}
	m.mu.Lock()
	m.oldestOpen[source] = oldest
	m.mu.Unlock()
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
		m.lastSuccess.WithLabelValues(source).Set(unixSeconds(at))
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
	m.outboxDepth.Set(float64(depth))
	m.mu.Lock()
	m.outboxOldest = oldest
	m.mu.Unlock()
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// ageCollector computes the age gauges at scrape time from the stored times, so that
// an age keeps growing between the reports that set those times.
type ageCollector struct{ m *Metrics }

var (
	oldestOpenDesc = prometheus.NewDesc("watcher_oldest_open_item_age_seconds",
		"Age (from its creation at the provider) of the oldest open item, as of the last cycle; 0 when none is open.",
		[]string{"source"}, nil)
	outboxOldestDesc = prometheus.NewDesc("watcher_outbox_oldest_age_seconds",
		"Time the oldest event in the outbox has waited for its JetStream acknowledgement; 0 when the outbox is empty.",
		nil, nil)
)

func (c ageCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- oldestOpenDesc
	ch <- outboxOldestDesc
}

func (c ageCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	now := m.now()
	age := func(t time.Time) float64 {
		if t.IsZero() {
			return 0
		}
		return max(now.Sub(t), 0).Seconds()
	}
	m.mu.Lock()
	open := make([]float64, len(m.sources))
	for i, s := range m.sources {
		open[i] = age(m.oldestOpen[s])
	}
	outbox := age(m.outboxOldest)
	m.mu.Unlock()
	for i, s := range m.sources {
		ch <- prometheus.MustNewConstMetric(oldestOpenDesc, prometheus.GaugeValue, open[i], s)
	}
	ch <- prometheus.MustNewConstMetric(outboxOldestDesc, prometheus.GaugeValue, outbox)
}
