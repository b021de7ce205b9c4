package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/payments-watcher/watcher/cluster"
	"github.com/payments-watcher/watcher/config"
	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/metrics"
	"github.com/payments-watcher/watcher/publish"
	"github.com/payments-watcher/watcher/state/natskv"
)

// publisherLease is the lease key of the outbox publisher; no source name can be it
// (source names are [a-z0-9_-]).
const publisherLease = "publisher:outbox"

// clusterHooks let tests watch a replica; every field may be nil.
type clusterHooks struct {
	// conn receives the replica's NATS connection once it is up.
	conn func(*nats.Conn)
	// task is called when the work of a lease starts (stopped false) and when it has
	// returned (stopped true).
	task func(l cluster.Lease, stopped bool)
}

// serveCluster runs one replica of a cluster (state.backend nats_kv) until ctx is
// cancelled: the state lives in NATS KV, and a source is polled, and the outbox
// published, only by the replica holding its lease (package cluster).
func serveCluster(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	return runReplica(ctx, cfg, log, clusterHooks{})
}

func runReplica(ctx context.Context, cfg *config.Config, log *slog.Logger, hooks clusterHooks) error {
	log = log.With("replica", cfg.Cluster.ReplicaID)
	nc, err := publish.Connect(cfg.NATS.URL, cfg.NATS, log.With("component", "nats"))
	if err != nil {
		return err
	}
	defer nc.Close()
	if hooks.conn != nil {
		hooks.conn(nc)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}

	var mgr *cluster.Manager // set before any task, so before any Commit
	store, err := natskv.Open(ctx, js, natskv.Options{
		Prefix: cfg.State.NATSKV.BucketPrefix, Replicas: cfg.State.NATSKV.Replicas,
		DuplicateWindow: cfg.NATS.DuplicateWindow,
		Fence:           func(source string) error { return mgr.Fence(source) },
	})
	if err != nil {
		return setupErr(ctx, err)
	}

	reg := prometheus.NewRegistry()
	names := make([]string, len(cfg.Sources))
	sources := map[string]config.Source{}
	for i, s := range cfg.Sources {
		names[i] = s.Name
		sources[s.Name] = s
		if _, err := buildPoller(cfg, s, store, nil, log); err != nil { // check every source before starting
			return err
		}
	}
	met := newReplicaMetrics(reg, cfg)
	if err := metrics.RegisterBuildInfo(reg, version, buildCommit()); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	if err := metrics.RegisterReplica(reg, cfg.Cluster.ReplicaID); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	pub := publish.New(js, store, cfg.NATS, publish.Options{Observer: met}, log.With("component", "publisher"))

	task := func(ctx context.Context, l cluster.Lease) {
		if hooks.task != nil {
			hooks.task(l, false)
			defer hooks.task(l, true)
		}
		if l.Key == publisherLease {
			met.PublisherLease(true)
			defer met.PublisherLease(false)
			if err := pub.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				log.Error("publisher stopped", "err", err)
			}
			return
		}
		holdSourceMetrics(ctx, met, store, l.Key, log)
		defer met.Lease(l.Key, false)
		// A new poller per lease: what the last holder did is only in the store.
		p, err := buildPoller(cfg, sources[l.Key], store, &event.Poller{ID: l.Holder, LeaseRevision: l.Revision}, log)
		if err != nil {
			log.Error("source not started", "source", l.Key, "err", err)
			return
		}
		p.Observe(met)
		_ = p.Run(ctx)
	}
	keys := append([]string{publisherLease}, names...)
	mgr, err = cluster.New(ctx, js, cluster.Config{
		ReplicaID: cfg.Cluster.ReplicaID, LeaseTTL: cfg.Cluster.LeaseTTL,
		LeaseBucket: cfg.Cluster.LeaseBucket, MembersBucket: cfg.Cluster.MembersBucket,
		Replicas: cfg.State.NATSKV.Replicas,
	}, keys, task, log.With("component", "cluster"))
	if err != nil {
		return setupErr(ctx, err)
	}

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !nc.IsConnected() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "nats: not connected")
			return
		}
		var held []string
		for _, l := range mgr.Held() {
			held = append(held, l.Key)
		}
		fmt.Fprintf(w, "ready; replica %s holds %s\n", cfg.Cluster.ReplicaID, strings.Join(held, ", "))
	})
	stopHTTP, err := serveHTTP(cfg.HTTP.Listen, mux, log)
	if err != nil {
		return err
	}
	defer stopHTTP()

	log.Info("watcher replica running", "sources", len(names), "lease_ttl", cfg.Cluster.LeaseTTL.String(),
		"state_buckets", cfg.State.NATSKV.BucketPrefix, "stream", cfg.NATS.Stream)
	err = mgr.Run(ctx)
	log.Info("stopped; leases released")
	return err
}

// setupErr is what runReplica returns when setting up its buckets failed with err:
// nil when ctx was cancelled meanwhile (a stop asked for while NATS could not
// answer is a clean stop; nothing is held yet), else err.
func setupErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// newReplicaMetrics registers watcher's series for a replica, which holds no lease
// yet: every source's lease gauge and the publisher's start at 0 (metrics.Lease).
func newReplicaMetrics(reg prometheus.Registerer, cfg *config.Config) *metrics.Metrics {
	names := make([]string, len(cfg.Sources))
	for i, s := range cfg.Sources {
		names[i] = s.Name
	}
	met := metrics.New(reg, names)
	for _, s := range cfg.Sources {
		met.Kinds(s.Name, sourceKinds(s))
		met.Lease(s.Name, false)
	}
	met.PublisherLease(false)
	return met
}

// holdSourceMetrics marks source's lease held in met and carries over the end of its
// last successful cycle, by whichever replica, from the shared state, reading it within
// ctx (the lease's). A failed read only leaves the gauge at what this replica last saw.
func holdSourceMetrics(ctx context.Context, met *metrics.Metrics, store *natskv.Store, source string, log *slog.Logger) {
	met.Lease(source, true)
	meta, err := store.Meta(ctx, source)
	if err != nil {
		log.Warn("last success of the source not read", "source", source, "err", err)
		return
	}
	met.Restore(source, 0, meta.LastPoll)
}
