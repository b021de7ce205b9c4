package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/payments-watcher/watcher/publish"
)

var _ publish.RetentionObserver = (*Metrics)(nil)

// retentionSeries are the series of the retained acknowledged events
// (nats.retain_acked).
type retentionSeries struct {
	retainedBytes prometheus.Gauge
	pruned        prometheus.Counter
	republished   prometheus.Counter
}

func newRetentionSeries() retentionSeries {
	return retentionSeries{
		retainedBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "watcher_retained_bytes",
			Help: "Size of the acknowledged events retained for re-publishing (nats.retain_acked), compressed as stored; bounded by nats.retain_acked_max_bytes.",
		}),
		pruned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "watcher_retained_pruned_total",
			Help: "Retained acknowledged events deleted by nats.retain_acked_max_bytes before nats.retain_acked had passed.",
		}),
		republished: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "watcher_retained_republished_total",
			Help: "Retained acknowledged events published again after a (re)connect because the NATS stream may have lost them.",
		}),
	}
}

// RetainedBytes sets the size of the retained events.
func (m *Metrics) RetainedBytes(n int64) { m.retention.retainedBytes.Set(float64(n)) }

// RetainedPruned counts retained events deleted by the size limit.
func (m *Metrics) RetainedPruned(n int) { m.retention.pruned.Add(float64(n)) }

// Republished counts retained events published again after a (re)connect.
func (m *Metrics) Republished(n int) { m.retention.republished.Add(float64(n)) }

// StateFile reports the size of a state file and the bytes of its free pages (space
// bbolt reuses but never returns to the file system; `watcher state compact` does);
// an error leaves the gauges out of that scrape.
type StateFile func() (size, free int64, err error)

var (
	stateFileDesc = prometheus.NewDesc("watcher_state_file_bytes",
		"Size of the bbolt state file.", nil, nil)
	stateFreeDesc = prometheus.NewDesc("watcher_state_free_pages_bytes",
		"Bytes of the bbolt state file's free pages: what `watcher state compact` would give back.", nil, nil)
)

// RegisterStateFile registers watcher_state_file_bytes and
// watcher_state_free_pages_bytes on reg, read from f at each scrape.
func RegisterStateFile(reg prometheus.Registerer, f StateFile) error {
	return reg.Register(stateFileCollector{f})
}

type stateFileCollector struct{ f StateFile }

func (c stateFileCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- stateFileDesc
	ch <- stateFreeDesc
}

func (c stateFileCollector) Collect(ch chan<- prometheus.Metric) {
	size, free, err := c.f()
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(stateFileDesc, prometheus.GaugeValue, float64(size))
	ch <- prometheus.MustNewConstMetric(stateFreeDesc, prometheus.GaugeValue, float64(free))
}
