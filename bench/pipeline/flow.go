package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/publish"
	"github.com/payments-watcher/watcher/state/bbolt"
)

// ackCounter is the publisher's Observer: it counts acknowledged messages and failed
// passes, and signals when the count reaches a target.
type ackCounter struct {
	acked, failed atomic.Int64
	mu            sync.Mutex
	target        int64
	reached       chan struct{}
}

func (a *ackCounter) Published(time.Duration) {
	n := a.acked.Add(1)
	a.mu.Lock()
	if a.reached != nil && n >= a.target {
		close(a.reached)
		a.reached = nil
	}
	a.mu.Unlock()
}

func (a *ackCounter) PublishFailed(string)  { a.failed.Add(1) }
func (a *ackCounter) Outbox(int, time.Time) {}

// expect returns a channel closed once n more messages than now are acknowledged.
func (a *ackCounter) expect(n int) <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	ch := make(chan struct{})
	a.target = a.acked.Load() + int64(n)
	if a.acked.Load() >= a.target {
		close(ch)
		return ch
	}
	a.reached = ch
	return ch
}

// flow is watcher's pipeline as the daemon runs it for one source, fed pre-built
// pages instead of a provider: poller.Poller (diff.Compare, event rendering,
// bbolt.Store.Commit page by page) and publish.Publisher (outbox to JetStream, deletes
// after acknowledgement) over a real state file and the embedded NATS server.
type flow struct {
	store   *bbolt.Store
	src     *pagedSource
	p       *poller.Poller
	acks    *ackCounter
	stopPub context.CancelFunc
	pubDone chan error
}

// flowLookback reaches back further than any pre-built item, so that every cycle
// walks all pages.
const flowLookback = 10 * 365 * 24 * time.Hour

func startFlow(ctx context.Context, statePath string, js jetstream.JetStream, cfg publish.Config, pageSize int, log *slog.Logger) (*flow, error) {
	store, err := bbolt.Open(statePath, bbolt.Options{})
	if err != nil {
		return nil, err
	}
	f := &flow{store: store, src: &pagedSource{}, acks: &ackCounter{}, pubDone: make(chan error, 1)}
	f.p = poller.New(poller.Config{
		Name: "bench", Provider: "circle_cpn_payments", Kind: "payment",
		Interval: time.Hour, DiscoveryOverlap: flowLookback, Lookback: flowLookback,
		OpenRefresh: 24 * time.Hour, PageSize: pageSize, OpenMaxAge: flowLookback, SettleWindow: 24 * time.Hour,
		RateLimit: 1e9, Baseline: "silent", MaxPages: 1 << 30,
	}, f.src, store, cfg.SubjectPrefix, log)
	pub := publish.New(js, store, cfg, publish.Options{Observer: f.acks}, log)
	pubCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	f.stopPub = stop
	go func() { f.pubDone <- pub.Run(pubCtx) }()
	return f, nil
}

// close stops the publisher and closes the state file.
func (f *flow) close() error {
	f.stopPub()
	<-f.pubDone
	return f.store.Close()
}

// cycle serves pages to one poller cycle and waits until want events are
// acknowledged; it returns the figures from the start of the cycle to the last
// acknowledgement.
func (f *flow) cycle(ctx context.Context, pages [][]diff.Item, want int) (Figures, error) {
	f.src.set(pages)
	out := Figures{}
	for _, p := range pages {
		out.Items += len(p)
	}
	done := f.acks.expect(want)
	failedBefore := f.acks.failed.Load()
	m := startMeter()
	if err := f.p.Poll(ctx); err != nil {
		return Figures{}, err
	}
	timer := time.NewTimer(ackTimeout + time.Duration(want)*time.Millisecond)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		n, _, _ := f.store.OutboxStats(ctx)
		return Figures{}, fmt.Errorf("pipeline: %d events still in the outbox after %s (%d publisher passes failed)",
			n, time.Since(m.began).Round(time.Millisecond), f.acks.failed.Load()-failedBefore)
	case <-ctx.Done():
		return Figures{}, ctx.Err()
	}
	// The publisher deletes a window's entries after its acknowledgements: the cycle
	// ends when the outbox is empty.
	for {
		n, _, err := f.store.OutboxStats(ctx)
		if err != nil {
			return Figures{}, err
		}
		if n == 0 {
			break
		}
		select {
		case <-timer.C:
			return Figures{}, fmt.Errorf("pipeline: %d acknowledged events still in the outbox after %s", n, time.Since(m.began).Round(time.Millisecond))
		case <-ctx.Done():
			return Figures{}, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	m.finish(&out)
	out.Transitions = want
	if n := f.acks.failed.Load() - failedBefore; n > 0 {
		return Figures{}, fmt.Errorf("pipeline: %d publisher passes failed", n)
	}
	return out, nil
}

// sampleBody renders the event of item's transition from pending with the poller's
// own builder, for the raw measurements' messages: the same size as the pipeline's.
func sampleBody(it *diff.Item) ([]byte, error) {
	prev := statusPending
	tr := diff.Transition{Kind: it.Kind, ID: it.ID, Previous: &prev, Current: it.Status, Sequence: 2, Item: it}
	m, err := poller.Message(poller.EventSource{Name: "bench", Provider: "circle_cpn_payments"}, &tr, time.Now().UTC())
	if err != nil {
		return nil, fmt.Errorf("sample event: %w", err)
	}
	return m.Body, nil
}
