// Package publish drains watcher's outbox to a NATS JetStream stream, and can start
// an embedded NATS server for single-machine deployments.
//
// Delivery is effectively once into the stream: every message is published with the
// header Nats-Msg-Id set to its event id, an outbox entry is deleted only after its
// PubAck arrived, and anything not acknowledged is sent again later. The stream's
// duplicate window drops the copies it already holds, so re-sending is always safe.
package publish

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/state"
)

// Outbox is the part of the state store the Publisher consumes.
type Outbox interface {
	// Pending returns at most max entries with Seq > after, in increasing Seq.
	Pending(after uint64, max int) ([]state.OutboxEntry, error)
	// Delete removes the entries with these sequence numbers.
	Delete(seqs []uint64) error
	// Changed is signalled after a commit that appended messages.
	Changed() <-chan struct{}
}

// Options tune a Publisher; zero values take the defaults.
type Options struct {
	// Batch is the publish window: how many messages may await their PubAck at once.
	// Default 256. Keep it within the JetStream context's limit on pending
	// asynchronous publishes (jetstream.WithPublishAsyncMaxPending, default 4000).
	Batch int
	// AckTimeout bounds the wait for the acknowledgements of one window, and each
	// attempt to create or update the stream. Default 5s.
	AckTimeout time.Duration
	// Idle is how often Run looks at the outbox without a Changed signal. Default 1s.
	Idle time.Duration
	// Observer receives what the Publisher does, for metrics; nil means none.
	Observer Observer
}

// Observer receives what a Publisher does, for metrics. Implementations must be safe
// for concurrent use and must not block.
type Observer interface {
	// Published reports one message acknowledged by JetStream (a duplicate the stream
	// dropped included); latency runs from its enqueueing (OutboxEntry.Enqueued) to
	// the acknowledgement.
	Published(latency time.Duration)
	// PublishFailed reports a pass over the outbox (Run's or Drain's) that ended in an
	// error; reason is one of the Reason* constants.
	PublishFailed(reason string)
	// Outbox reports, after each pass, the entries left in the outbox and the
	// Enqueued time of the oldest (zero when empty). It is called only when the Outbox
	// has an OutboxStats method (state.Store has).
	Outbox(depth int, oldest time.Time)
}

// Reasons of Observer.PublishFailed.
const (
	// ReasonNotConnected: the NATS connection is down.
	ReasonNotConnected = "not_connected"
	// ReasonStream: creating or updating the stream failed.
	ReasonStream = "stream"
	// ReasonNoStream: no stream captured a message's subject (it was deleted, or NATS
	// restarted without its store).
	ReasonNoStream = "no_stream"
	// ReasonAckTimeout: acknowledgements did not arrive within Options.AckTimeout.
	ReasonAckTimeout = "ack_timeout"
	// ReasonRejected: NATS refused a message or answered it with an error.
	ReasonRejected = "rejected"
	// ReasonOutbox: reading or deleting outbox entries failed.
	ReasonOutbox = "outbox"
)

// Reasons lists every reason Observer.PublishFailed may report.
var Reasons = []string{ReasonNotConnected, ReasonStream, ReasonNoStream, ReasonAckTimeout, ReasonRejected, ReasonOutbox}

type nopObserver struct{}

func (nopObserver) Published(time.Duration) {}
func (nopObserver) PublishFailed(string)    {}
func (nopObserver) Outbox(int, time.Time)   {}

// outboxStats is the optional part of an Outbox that Observer.Outbox reports.
type outboxStats interface {
	OutboxStats() (n int, oldest time.Time, err error)
}

// Defaults of Options.
const (
	DefaultBatch      = 256
	DefaultAckTimeout = 5 * time.Second
	DefaultIdle       = time.Second
)

// Retry backoff of Run: exponential with jitter, from retryMin up to retryMax.
const (
	retryMin = 100 * time.Millisecond
	retryMax = 30 * time.Second
)

// Publisher moves outbox entries to JetStream. Run and Drain may be called from
// different goroutines (their passes over the outbox never overlap); Healthy may be
// called at any time.
//
// Ordering: entries are sent in Seq order, one window of up to Options.Batch
// messages at a time, and a window is sent only after the previous one was fully
// acknowledged. Inside a window the publishes are asynchronous, so if one of them
// fails while later ones are stored, the retry stores the failed message after those
// later ones. Per item order is still recoverable: consumers that need it order by
// the event's data.sequence.
type Publisher struct {
	js  jetstream.JetStream
	ob  Outbox
	cfg Config
	opt Options
	log *slog.Logger

	// mu is held for a whole pass over the outbox, so passes never overlap.
	mu         sync.Mutex
	needStream bool // EnsureStream before publishing

	// healthMu guards lastErr apart from mu: Healthy must not wait for a pass.
	healthMu sync.Mutex
	lastErr  error // outcome of the last pass
}

// New returns a Publisher of ob's entries to the stream described by c. js should be
// dedicated to this Publisher's asynchronous publishes: after a window whose
// acknowledgements time out, the Publisher resets js's asynchronous publishing state
// (CleanupPublisher) so that abandoned acknowledgements do not accumulate. log may be
// nil.
func New(js jetstream.JetStream, ob Outbox, c Config, opt Options, log *slog.Logger) *Publisher {
	if opt.Batch <= 0 {
		opt.Batch = DefaultBatch
	}
	if opt.AckTimeout <= 0 {
		opt.AckTimeout = DefaultAckTimeout
	}
	if opt.Idle <= 0 {
		opt.Idle = DefaultIdle
	}
	if opt.Observer == nil {
		opt.Observer = nopObserver{}
	}
	return &Publisher{js: js, ob: ob, cfg: c, opt: opt, log: orDiscard(log), needStream: true}
}

// Run publishes the outbox until ctx is cancelled, and then returns ctx.Err(). It
// first creates or updates the stream (EnsureStream), then drains the outbox whenever
// it changes and at least every Options.Idle. After any failure (NATS away, the
// stream missing, a PubAck timeout, an outbox error) it retries from the first
// unacknowledged entry with exponential backoff and jitter capped at 30s, forever,
// and at once when the connection is re-established. Failures are logged, and
// reported by Healthy, never returned.
func (p *Publisher) Run(ctx context.Context) error {
	nc := p.js.Conn()
	up := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(up)

	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = retryMin
	bo.MaxInterval = retryMax
	bo.MaxElapsedTime = 0 // never give up
	bo.Reset()

	idle := time.NewTimer(p.opt.Idle)
	defer idle.Stop()
	failing := false
	for {
		err := p.pass(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			wait := bo.NextBackOff()
			if !failing {
				p.log.Warn("Publishing to NATS failed; the outbox keeps the events, retrying", "err", err, "retry_in", wait.String())
			} else {
				p.log.Debug("Publishing to NATS failed again", "err", err, "retry_in", wait.String())
			}
			failing = true
			retry := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				retry.Stop()
				return ctx.Err()
			case <-retry.C:
			case <-up:
				retry.Stop()
			}
			continue
		}
		if failing {
			p.log.Info("Publishing to NATS resumed")
			failing = false
		}
		bo.Reset()
		idle.Reset(p.opt.Idle)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.ob.Changed():
		case <-idle.C:
		}
	}
}

// Drain publishes everything in the outbox, in Seq order, deleting each entry once
// its PubAck arrived (a PubAck for a duplicate counts). It returns nil once the outbox
// is empty, or the first error it meets without retrying: NATS not connected, the
// stream missing, a window not acknowledged within Options.AckTimeout, an outbox
// error, or ctx.Err() (returned as is) when ctx ends first. Entries not acknowledged
// stay in the outbox. Before publishing it creates the stream if it was never ensured
// or has gone missing. It is meant for shutdown, with a ctx of a few seconds.
func (p *Publisher) Drain(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	err := p.drain(ctx)
	p.setLastErr(err)
	p.observe(ctx, err)
	return err
}

// observe reports the end of a pass to the Observer; p.mu is held.
func (p *Publisher) observe(ctx context.Context, err error) {
	obs := p.opt.Observer
	if err != nil && ctx.Err() == nil {
		obs.PublishFailed(reason(err))
	}
	if st, ok := p.ob.(outboxStats); ok {
		if n, oldest, err := st.OutboxStats(); err == nil {
			obs.Outbox(n, oldest)
		}
	}
}

// failure tags an error with its Observer reason; it reads as the error it wraps.
type failure struct {
	reason string
	err    error
}

func (f *failure) Error() string { return f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

func failed(reason string, err error) error { return &failure{reason: reason, err: err} }

// reason classifies an error of a pass.
func reason(err error) string {
	var f *failure
	switch {
	case errors.As(err, &f):
		return f.reason
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrConnectionDraining):
		return ReasonNotConnected
	case errors.Is(err, jetstream.ErrNoStreamResponse):
		return ReasonNoStream
	case errors.Is(err, jetstream.ErrAsyncPublishTimeout):
		return ReasonAckTimeout
	default:
		return ReasonRejected
	}
}

func (p *Publisher) setLastErr(err error) {
	p.healthMu.Lock()
	p.lastErr = err
	p.healthMu.Unlock()
}

// Healthy returns nil when the NATS connection is up and the last pass over the
// outbox succeeded (or found nothing to do), else an error naming NATS and the cause.
func (p *Publisher) Healthy() error {
	if err := connected(p.js.Conn()); err != nil {
		return err
	}
	p.healthMu.Lock()
	defer p.healthMu.Unlock()
	if p.lastErr != nil {
		return fmt.Errorf("nats: last publish failed: %w", p.lastErr)
	}
	return nil
}

// pass is one of Run's passes: the stream is ensured even when there is nothing to
// publish, so that consumers can bind to it from the start.
func (p *Publisher) pass(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	err := p.ensure(ctx)
	if err == nil {
		err = p.drain(ctx)
	}
	p.setLastErr(err)
	p.observe(ctx, err)
	return err
}

// ensure runs EnsureStream when the stream may be missing; p.mu is held.
func (p *Publisher) ensure(ctx context.Context) error {
	if !p.needStream {
		return nil
	}
	if err := connected(p.js.Conn()); err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, p.opt.AckTimeout)
	defer cancel()
	if _, err := EnsureStream(sctx, p.js, p.cfg); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return failed(ReasonStream, err)
	}
	p.needStream = false
	return nil
}

// drain publishes the outbox window by window until it is empty; p.mu is held.
func (p *Publisher) drain(ctx context.Context) error {
	var after uint64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		entries, err := p.ob.Pending(after, p.opt.Batch)
		if err != nil {
			return failed(ReasonOutbox, fmt.Errorf("outbox: read after %d: %w", after, err))
		}
		if len(entries) == 0 {
			return nil
		}
		// Publishing while disconnected would only fill nats.go's reconnect buffer
		// and then time out.
		if err := connected(p.js.Conn()); err != nil {
			return err
		}
		if err := p.ensure(ctx); err != nil {
			return err
		}
		if err := p.window(ctx, entries); err != nil {
			if errors.Is(err, jetstream.ErrNoStreamResponse) {
				// Nothing answered for the subject: the stream is gone (NATS restarted
				// without its store) or not there yet. Create it before the retry.
				p.needStream = true
			}
			return err
		}
		after = entries[len(entries)-1].Seq
	}
}

// window publishes entries asynchronously, waits for their acknowledgements (bounded
// by AckTimeout and ctx) and deletes exactly the acknowledged ones. It returns nil when
// all were acknowledged and deleted.
func (p *Publisher) window(ctx context.Context, entries []state.OutboxEntry) error {
	futures := make([]jetstream.PubAckFuture, 0, len(entries))
	var sendErr error
	for _, e := range entries {
		m := &nats.Msg{
			Subject: e.Msg.Subject,
			Data:    e.Msg.Body,
			Header:  nats.Header{"Content-Type": []string{event.ContentType}},
		}
		f, err := p.js.PublishMsgAsync(m, jetstream.WithMsgID(e.Msg.ID))
		if err != nil {
			sendErr = fmt.Errorf("publish %s to %s: %w", e.Msg.ID, e.Msg.Subject, err)
			break
		}
		futures = append(futures, f)
	}

	timer := time.NewTimer(p.opt.AckTimeout)
	defer timer.Stop()
	acked := make([]uint64, 0, len(futures))
	var ackErr error
	timedOut := false
	for i, f := range futures {
		e := entries[i]
		select {
		case <-f.Ok():
			acked = append(acked, e.Seq)
			p.opt.Observer.Published(time.Since(e.Enqueued))
			continue
		case err := <-f.Err():
			if ackErr == nil {
				ackErr = fmt.Errorf("publish %s to %s: %w", e.Msg.ID, e.Msg.Subject, err)
			}
			continue
		case <-timer.C:
			timedOut = true
			ackErr = cmp.Or(ackErr, fmt.Errorf("publish %s to %s: %w after %s", e.Msg.ID, e.Msg.Subject, jetstream.ErrAsyncPublishTimeout, p.opt.AckTimeout))
		case <-ctx.Done():
		}
		// Out of time: keep what has already been acknowledged, leave the rest.
		for j := i; j < len(futures); j++ {
			select {
			case <-futures[j].Ok():
				acked = append(acked, entries[j].Seq)
				p.opt.Observer.Published(time.Since(entries[j].Enqueued))
			default:
			}
		}
		break
	}
	if timedOut {
		p.js.CleanupPublisher()
	}

	if len(acked) > 0 {
		if err := p.ob.Delete(acked); err != nil {
			return failed(ReasonOutbox, fmt.Errorf("outbox: delete %d acknowledged entries: %w", len(acked), err))
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return cmp.Or(ackErr, sendErr)
}

// connected returns nil when nc is connected, else an error with its status and last
// error.
func connected(nc *nats.Conn) error {
	if nc.IsConnected() {
		return nil
	}
	if err := nc.LastError(); err != nil {
		return failed(ReasonNotConnected, fmt.Errorf("nats: not connected (%s): %w", nc.Status(), err))
	}
	return failed(ReasonNotConnected, fmt.Errorf("nats: not connected (%s)", nc.Status()))
}
