package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/poller/provider"
	"github.com/payments-watcher/watcher/publish"
	"github.com/payments-watcher/watcher/state/bbolt"
)

// BurstOptions configure RunBurst.
type BurstOptions struct {
	// Dir holds the run's state file and NATS store.
	Dir string
	// Items is how many first-sight items the one cycle reads, each an event.
	Items int
	// PageSize is the number of items per page.
	PageSize int
	// Seed makes the items reproducible.
	Seed uint64
	// Progress receives a line per step; nil discards them.
	Progress io.Writer
}

// BurstReport is what RunBurst measured: the state file through a burst of
// first-sight events with the daemon's default retention of acknowledged events,
// then compacted, then with the retained events aged out and compacted again.
type BurstReport struct {
	Machine Machine
	NATS    publish.Config
	Items   int
	// Wall is the burst's duration, from the cycle's start to the last PubAck; Cycle
	// the poller's cycle alone.
	Wall, Cycle time.Duration
	// PeakOutbox is the most events the poller found waiting in the outbox when it
	// looked between pages (pacing, nats.outbox_pace).
	PeakOutbox int
	// Retained and RetainedBytes are the retained events after the burst; Capped is
	// how many the size limit deleted before their age.
	Retained      int
	RetainedBytes int64
	Capped        int64
	// Files: the state file after the burst (size and free pages); after compacting
	// it; the uncompacted file once the retained events aged out (size and free
	// pages), and that compacted (the snapshot alone).
	Burst, BurstFree     int64
	Compacted            int64
	AgedOut, AgedOutFree int64
	SnapshotOnly         int64
}

// peakStore is the poller's state file, recording the largest outbox the poller read.
type peakStore struct {
	*bbolt.Store
	peak atomic.Int64
}

func (s *peakStore) OutboxStats(ctx context.Context) (int, time.Time, error) {
	n, oldest, err := s.Store.OutboxStats(ctx)
	if err == nil && int64(n) > s.peak.Load() {
		s.peak.Store(int64(n))
	}
	return n, oldest, err
}

// burstObserver counts acknowledgements and the events the size limit deleted.
type burstObserver struct {
	acked, capped atomic.Int64
}

func (o *burstObserver) Published(time.Duration) { o.acked.Add(1) }
func (o *burstObserver) PublishFailed(string)    {}
func (o *burstObserver) Outbox(int, time.Time)   {}
func (o *burstObserver) RetainedBytes(int64)     {}
func (o *burstObserver) RetainedPruned(n int)    { o.capped.Add(int64(n)) }
func (o *burstObserver) Republished(int)         {}

// burstSource serves the pages of an itemSet, all pending, built when asked for so
// that a million items never sit in memory at once; the cursor is the next page's
// index.
type burstSource struct {
	set      *itemSet
	pageSize int
}

func (s *burstSource) Page(_ context.Context, req provider.Request) (provider.Page, error) {
	i := 0
	if req.Cursor != "" {
		var err error
		if i, err = strconv.Atoi(req.Cursor); err != nil || i < 0 {
			return provider.Page{}, fmt.Errorf("bad cursor %q", req.Cursor)
		}
	}
	from := i * s.pageSize
	if from >= len(s.set.ids) {
		return provider.Page{}, nil
	}
	to := min(from+s.pageSize, len(s.set.ids))
	p := provider.Page{Items: s.set.page(from, to, func(int) diff.Status { return statusPending })}
	if to < len(s.set.ids) {
		p.Next = strconv.Itoa(i + 1)
	}
	return p, nil
}

// RunBurst runs one poller cycle over o.Items items never seen before with
// `baseline: emit` (an event each), published by the Publisher to the embedded NATS
// server with the daemon's default nats settings (retain_acked,
// retain_acked_max_bytes, max_outbox and outbox_pace included), then measures the
// state file, compacts it keeping the original, prunes the original's retained events
// as their age would and measures it again, and compacts that.
func RunBurst(ctx context.Context, o BurstOptions) (*BurstReport, error) {
	if o.Dir == "" || o.Items < 1 || o.PageSize < 1 {
		return nil, fmt.Errorf("burst options: dir %q, items %d and page size %d must be set", o.Dir, o.Items, o.PageSize)
	}
	progress := func(format string, args ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "%s  "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05")}, args...)...)
		}
	}
	log := slog.New(slog.DiscardHandler)
	ncfg, err := daemonNATS()
	if err != nil {
		return nil, err
	}
	ncfg = withStream(ncfg, "BURST", "burst")
	ncfg.StreamMaxBytes = 0
	r := &BurstReport{Machine: machine(), NATS: ncfg, Items: o.Items}

	_, js, stop, err := startNATS(ncfg, filepath.Join(o.Dir, "nats"), log)
	if err != nil {
		return nil, err
	}
	defer stop()

	path := filepath.Join(o.Dir, "burst.db")
	progress("burst: %d first-sight events, %d a page, retain_acked %s, retain_acked_max_bytes %d", o.Items, o.PageSize, ncfg.RetainAcked, ncfg.RetainAckedMaxBytes)
	if err := r.burst(ctx, path, js, ncfg, o, log); err != nil {
		return nil, err
	}
	progress("burst: %s; state file %s, free pages %s, retained %d events (%s)", r.Wall.Round(time.Millisecond), mibs(r.Burst), mibs(r.BurstFree), r.Retained, mibs(r.RetainedBytes))

	c, err := bbolt.Compact(path, bbolt.CompactOptions{KeepBackup: true})
	if err != nil {
		return nil, err
	}
	r.Compacted = c.After
	progress("burst: compacted to %s", mibs(r.Compacted))
	if r.AgedOut, r.AgedOutFree, err = pruneAll(ctx, c.Backup); err != nil {
		return nil, err
	}
	progress("burst: retained events pruned from the uncompacted file: %s, free pages %s", mibs(r.AgedOut), mibs(r.AgedOutFree))
	if c, err = bbolt.Compact(c.Backup, bbolt.CompactOptions{}); err != nil {
		return nil, err
	}
	r.SnapshotOnly = c.After
	progress("burst: retained events pruned, compacted to %s", mibs(r.SnapshotOnly))
	return r, nil
}

// burst runs the cycle and the publisher until every event is acknowledged, and
// records the state file's figures.
func (r *BurstReport) burst(ctx context.Context, path string, js jetstream.JetStream, ncfg publish.Config, o BurstOptions, log *slog.Logger) error {
	bs, err := bbolt.Open(path, bbolt.Options{})
	if err != nil {
		return err
	}
	defer bs.Close()
	store := &peakStore{Store: bs}
	src := &burstSource{set: newItemSet(o.Seed, o.Items, time.Now()), pageSize: o.PageSize}
	// The outbox limits as the daemon sets them (daemon's buildPoller).
	p := poller.New(poller.Config{
		Name: "burst", Provider: "circle_cpn_payments", Kind: "payment",
		Interval: time.Hour, DiscoveryOverlap: flowLookback, Lookback: flowLookback,
		OpenRefresh: 24 * time.Hour, PageSize: o.PageSize, OpenMaxAge: flowLookback, SettleWindow: 24 * time.Hour,
		RateLimit: 1e9, Baseline: "emit", MaxPages: 1 << 30,
		MaxOutbox: ncfg.MaxOutbox, PaceOutbox: ncfg.OutboxPace,
	}, src, store, ncfg.SubjectPrefix, log)
	obs := &burstObserver{}
	pub := publish.New(js, store, ncfg, publish.Options{Observer: obs}, log)
	pubCtx, stop := context.WithCancel(ctx)
	pubDone := make(chan error, 1)
	go func() { pubDone <- pub.Run(pubCtx) }()
	defer func() { stop(); <-pubDone }()

	began := time.Now()
	if err := p.Poll(ctx); err != nil {
		return err
	}
	r.Cycle = time.Since(began)
	for obs.acked.Load() < int64(o.Items) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	r.Wall = time.Since(began)
	stop()
	if err := <-pubDone; err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	pubDone <- nil
	r.Capped = obs.capped.Load()
	r.PeakOutbox = int(store.peak.Load())
	if r.Retained, _, err = store.RetainedStats(); err != nil {
		return err
	}
	if r.RetainedBytes, err = store.RetainedBytes(ctx); err != nil {
		return err
	}
	r.Burst, r.BurstFree, err = store.FileStats()
	return err
}

// pruneAll deletes every retained event of the state file at path, as their age
// would, and returns the file's size and free pages then.
func pruneAll(ctx context.Context, path string) (size, free int64, err error) {
	store, err := bbolt.Open(path, bbolt.Options{})
	if err != nil {
		return 0, 0, err
	}
	if _, _, err := store.Prune(ctx, time.Now().Add(100*365*24*time.Hour)); err != nil {
		_ = store.Close()
		return 0, 0, err
	}
	if size, free, err = store.FileStats(); err != nil {
		_ = store.Close()
		return 0, 0, err
	}
	return size, free, store.Close()
}

// mibs renders a byte count in MiB.
func mibs(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// Markdown renders the report as a section of BENCHMARKS.md.
func (r *BurstReport) Markdown(command string) string {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "Command: `%s`. Machine: %d CPUs (%s), %.1f GiB RAM, %s, %s.\n\n", command, m.CPUs, m.Model, float64(m.RAM)/(1<<30), m.Go, m.Arch)
	fmt.Fprintf(&b, "One cycle of %d CPN payments never seen before, `baseline: emit` (an event each, as the pipeline measurements render them), published to the embedded server (`sync_interval` %s) with `retain_acked` %s, `retain_acked_max_bytes` %s and `outbox_pace` %d.\n\n",
		r.Items, syncName(r.NATS.Embedded.SyncInterval), r.NATS.RetainAcked, mibs(r.NATS.RetainAckedMaxBytes), r.NATS.OutboxPace)
	b.WriteString("| | |\n|---|---|\n")
	fmt.Fprintf(&b, "| burst (cycle start to last PubAck) | %s, %.0f events/s (the cycle itself %s) |\n", r.Wall.Round(time.Second), float64(r.Items)/r.Wall.Seconds(), r.Cycle.Round(time.Second))
	fmt.Fprintf(&b, "| largest outbox the poller found between pages | %d events |\n", r.PeakOutbox)
	fmt.Fprintf(&b, "| retained after the burst | %d events, %s (%.0f bytes each) |\n", r.Retained, mibs(r.RetainedBytes), float64(r.RetainedBytes)/float64(max(r.Retained, 1)))
	fmt.Fprintf(&b, "| deleted by the size limit before their age | %d |\n", r.Capped)
	fmt.Fprintf(&b, "| state file after the burst | %s, of which free pages %s |\n", mibs(r.Burst), mibs(r.BurstFree))
	fmt.Fprintf(&b, "| after `watcher state compact` | %s |\n", mibs(r.Compacted))
	fmt.Fprintf(&b, "| not compacted, retained events aged out | %s, of which free pages %s |\n", mibs(r.AgedOut), mibs(r.AgedOutFree))
	fmt.Fprintf(&b, "| retained events aged out, compacted again (snapshot only) | %s (%.0f bytes per tracked item) |\n", mibs(r.SnapshotOnly), float64(r.SnapshotOnly)/float64(r.Items))
	return b.String()
}

func syncName(d time.Duration) string {
	if d <= 0 {
		return "always"
	}
	return d.String()
}
