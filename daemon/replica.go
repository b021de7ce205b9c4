package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payments-watcher/watcher/cluster"
	"github.com/payments-watcher/watcher/config"
	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/metrics"
	"github.com/payments-watcher/watcher/publish"
	"github.com/payments-watcher/watcher/state/natskv"
	"github.com/payments-watcher/watcher/stateapi"
)

// PublisherLease is the lease key of the outbox publisher; no source name can be it
// (source names are [a-z0-9_-]).
const PublisherLease = "publisher:outbox"

// replica is the cluster mode's part of a daemon.
type replica struct {
	*daemon
	ctx   context.Context // the daemon's: its end is a shutdown, not a lost lease
	store *natskv.Store   // fenced by the leases; the pollers and the publisher commit through it
	pub   *publish.Publisher
	// publishing is set while this replica runs the publisher.
	publishing atomic.Bool
}

// runReplica runs one replica of a cluster (state.backend nats_kv) until ctx is
// cancelled: the state lives in NATS KV, and a source is polled, and the outbox
// published, only by the replica holding its lease (package cluster).
func runReplica(ctx context.Context, cfg *config.Config, log *slog.Logger, opt Options) error {
	log = log.With("replica", cfg.Cluster.ReplicaID)
	nc, err := publish.Connect(cfg.NATS.URL, cfg.NATS, log.With("component", "nats"))
	if err != nil {
		return err
	}
	defer nc.Close()
	if opt.Hooks.Conn != nil {
		opt.Hooks.Conn(nc)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}

	var mgr *cluster.Manager // set before any task, so before any Commit
	kvOpt := natskv.Options{
		Prefix: cfg.State.NATSKV.BucketPrefix, Replicas: cfg.State.NATSKV.Replicas,
		DuplicateWindow: cfg.NATS.DuplicateWindow,
	}
	// The state API and the metrics read through a Store of their own: reads
	// remember revisions, which must stay the pollers' (see stateapi.KV).
	readOpt := kvOpt
	readOpt.Reader = true
	shared, err := natskv.Open(ctx, js, readOpt)
	if err != nil {
		return setupErr(ctx, err)
	}
	kvOpt.Fence = func(source string) error { return mgr.Fence(source) }
	store, err := natskv.Open(ctx, js, kvOpt)
	if err != nil {
		return setupErr(ctx, err)
	}
	for _, s := range cfg.Sources { // check every source before starting
		if _, err := buildPoller(cfg, s, store, nil, opt.Version, log); err != nil {
			return err
		}
	}
	d, err := newDaemon(cfg, log, opt, stateapi.KV(shared))
	if err != nil {
		return err
	}
	if err := metrics.RegisterReplica(d.reg, cfg.Cluster.ReplicaID); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	d.holdNothing()
	r := &replica{daemon: d, ctx: ctx, store: store}
	r.pub = publish.New(js, store, cfg.NATS, publish.Options{Observer: d.met}, log.With("component", "publisher"))
	d.ready.nats = func() error {
		if r.publishing.Load() {
			return r.pub.Healthy()
		}
		if !nc.IsConnected() {
			return errors.New("nats: not connected")
		}
		return nil
	}

	keys := append([]string{PublisherLease}, d.running.order...)
	mgr, err = cluster.New(ctx, js, cluster.Config{
		ReplicaID: cfg.Cluster.ReplicaID, LeaseTTL: cfg.Cluster.LeaseTTL,
		LeaseBucket: cfg.Cluster.LeaseBucket, MembersBucket: cfg.Cluster.MembersBucket,
		Replicas: cfg.State.NATSKV.Replicas,
	}, keys, r.task, log.With("component", "cluster"))
	if err != nil {
		return setupErr(ctx, err)
	}
	d.replicaID = cfg.Cluster.ReplicaID
	d.leases = func() []string {
		var held []string
		for _, l := range mgr.Held() {
			held = append(held, l.Key)
		}
		return held
	}
	d.held = func() string {
		held := d.leases()
		if len(held) == 0 {
			return fmt.Sprintf("replica %s holds no lease", cfg.Cluster.ReplicaID)
		}
		return fmt.Sprintf("replica %s holds %s", cfg.Cluster.ReplicaID, strings.Join(held, ", "))
	}
	stopServing, err := d.serveAll(stateapi.NewView(d.state, d.running.order), d.statusPage(nc))
	if err != nil {
		return err
	}
	defer stopServing()

	log.Info("watcher replica running", "sources", len(cfg.Sources), "lease_ttl", cfg.Cluster.LeaseTTL.String(),
		"state_buckets", cfg.State.NATSKV.BucketPrefix, "stream", cfg.NATS.Stream)
	err = mgr.Run(ctx)
	log.Info("stopped; leases released")
	return err
}

// holdNothing sets every lease gauge to 0: a replica starts without a lease, and
// exports a source's state gauges, or the outbox's, only once it holds that lease.
func (d *daemon) holdNothing() {
	for _, s := range d.cfg.Sources {
		d.met.Lease(s.Name, false)
	}
	d.met.PublisherLease(false)
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

// task runs the work of lease l until ctx (the lease's) ends.
func (r *replica) task(ctx context.Context, l cluster.Lease) {
	if h := r.opt.Hooks.Task; h != nil {
		h(l, false)
		defer h(l, true)
	}
	if l.Key == PublisherLease {
		r.publish(ctx)
		return
	}
	r.poll(ctx, l)
}

// publish runs the outbox publisher while the lease is held. At shutdown (the
// daemon's context ended, the lease still held) it waits for this replica's pollers
// to finish the page in hand, then flushes the outbox.
func (r *replica) publish(ctx context.Context) {
	r.met.PublisherLease(true)
	defer r.met.PublisherLease(false)
	r.publishing.Store(true)
	defer r.publishing.Store(false)
	if err := r.restoreOutbox(ctx); err != nil && ctx.Err() == nil {
		r.log.Warn("outbox depth not read from the state", "err", err)
	}
	if err := r.pub.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		r.log.Error("publisher stopped", "err", err)
	}
	if r.ctx.Err() == nil {
		return // the lease was lost or handed over: its next holder publishes
	}
	wait, cancel := context.WithTimeout(context.Background(), shutdownFlush)
	defer cancel()
	if !r.running.waitIdle(wait) {
		r.log.Warn("sources still running at the outbox flush", "sources", strings.Join(r.running.names(), ", "))
	}
	r.flush(r.pub)
}

// poll runs the poller of source l.Key while its lease is held. A new poller per
// lease: what the last holder did is only in the store.
func (r *replica) poll(ctx context.Context, l cluster.Lease) {
	i := slices.IndexFunc(r.cfg.Sources, func(s config.Source) bool { return s.Name == l.Key })
	if i < 0 {
		r.log.Error("lease of an unknown source", "key", l.Key)
		return
	}
	s := r.cfg.Sources[i]
	r.met.Lease(s.Name, true)
	defer r.met.Lease(s.Name, false)
	r.restoreSource(ctx, s.Name)
	p, err := buildPoller(r.cfg, s, r.rec.Store(r.store), &event.Poller{ID: l.Holder, LeaseRevision: l.Revision}, r.opt.Version, r.log)
	if err != nil {
		r.log.Error("source not started", "source", s.Name, "err", err)
		return
	}
	p.Observe(r.observer())
	r.running.add(s.Name, s.Interval, p, time.Now())
	defer r.running.remove(s.Name)
	_ = p.Run(ctx)
}
