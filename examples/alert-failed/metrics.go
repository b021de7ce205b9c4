package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// alertMetrics are alert-failed's Prometheus series, on a registry of their own.
type alertMetrics struct {
	reg          *prometheus.Registry
	deliveries   *prometheus.CounterVec // sink, outcome: delivered | dead_letter | already_delivered
	deadLetters  *prometheus.CounterVec // sink
	retries      *prometheus.CounterVec // sink
	lastDelivery *prometheus.GaugeVec   // sink
	terminated   prometheus.Counter
}

func newAlertMetrics() *alertMetrics {
	m := &alertMetrics{
		reg: prometheus.NewRegistry(),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "alert_failed_deliveries_total",
			Help: "Events handled per sink, by outcome: delivered (2xx), dead_letter (refused for good), already_delivered (found in the delivered file)."}, []string{"sink", "outcome"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "alert_failed_dead_letters_total",
			Help: "Alerts a sink refused for good (4xx other than 408 and 429), published to the dead-letter subject."}, []string{"sink"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "alert_failed_retries_total",
			Help: "Failed attempts that will be retried (5xx, 408, 429, no answer)."}, []string{"sink"}),
		lastDelivery: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "alert_failed_last_delivery_timestamp_seconds",
			Help: "Unix time of the last alert a sink accepted."}, []string{"sink"}),
		terminated: prometheus.NewCounter(prometheus.CounterOpts{Name: "alert_failed_terminated_total",
			Help: "Messages that are not watcher events, terminated without alerting."}),
	}
	m.reg.MustRegister(m.deliveries, m.deadLetters, m.retries, m.lastDelivery, m.terminated,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// handler serves /metrics from the registry and /healthz: 200 "ok" while healthy
// returns nil, else 503 with its error.
func (m *alertMetrics) handler(healthy func() error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := healthy(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(err.Error() + "\n"))
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// serveHTTP listens on addr and serves h until ctx ends. The listener is open when
// it returns; the server's end is logged.
func serveHTTP(ctx context.Context, addr string, h http.Handler, log *slog.Logger) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("HTTP server stopped", "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	return ln.Addr(), nil
}
