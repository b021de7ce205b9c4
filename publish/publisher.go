// Package publish drains watcher's outbox to a NATS JetStream stream, and can start
// an embedded NATS server for single-machine deployments.
//
// Delivery is effectively once into the stream: every message is published with the
// header Nats-Msg-Id set to its event id, an outbox entry leaves the outbox only after
// its PubAck arrived, and anything not acknowledged is sent again later. The stream's
// duplicate window drops the copies it already holds, so re-sending is always safe.
//
// JetStream acknowledges a message before it fsyncs it, so a NATS node whose
// operating system crashes can lose acknowledged messages. With Config.RetainAcked
// set, acknowledged entries are kept that long and published again, with the same
// ids, whenever the connection comes back (and at start): what the server kept is
// dropped as a duplicate, what it lost is stored again.
package publish

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/state"
)

// Outbox is the part of a state back end (package state/bbolt or state/natskv) the
// Publisher consumes. Every method but Changed takes the context of the pass that
// calls it: a back end that does network calls (natskv) abandons them when it ends and
// returns an error wrapping ctx.Err(); a local one (bbolt) may ignore it. An
// acknowledgement a cancelled Delete or Ack did not record leaves its entry pending,
// so it is published again later and the stream drops it as a duplicate.
type Outbox interface {
	// Pending returns at most max unacknowledged entries with Seq > after, in
	// increasing Seq.
	Pending(ctx context.Context, after uint64, max int) ([]state.OutboxEntry, error)
	// Delete removes the entries with these sequence numbers.
	Delete(ctx context.Context, seqs []uint64) error
	// Ack moves acknowledged entries from Pending to Retained (or updates retained
	// ones); used instead of Delete when Config.RetainAcked is set.
	Ack(ctx context.Context, acks []state.Ack) error
	// Retained returns at most max retained entries with Seq > after, in increasing
	// Seq.
	Retained(ctx context.Context, after uint64, max int) ([]state.AckedEntry, error)
	// Prune deletes the retained entries acknowledged before cutoff and returns how
	// many, and the earliest acknowledgement time of those left (zero if none).
	Prune(ctx context.Context, cutoff time.Time) (int, time.Time, error)
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
	// Now is the clock of acknowledgement times and of their retention
	// (Config.RetainAcked); nil means time.Now.
	Now func() time.Time
}

// Observer receives what a Publisher does, for metrics. Implementations must be safe
// for concurrent use and must not block.
type Observer interface {
	// Published reports one message acknowledged by JetStream (a duplicate the stream
	// dropped included); latency runs from its enqueueing (OutboxEntry.Enqueued) to
	// the acknowledgement. Retained entries published again are not reported.
	Published(latency time.Duration)
	// PublishFailed reports a pass over the outbox (Run's or Drain's) that ended in an
	// error; reason is one of the Reason* constants.
	PublishFailed(reason string)
	// Outbox reports, after each pass, the unacknowledged entries left in the outbox
	// (retained ones are not counted) and the Enqueued time of the oldest (zero when
	// none), as of the end of the pass; it is not called when the Outbox has no
	// OutboxStats(ctx) method (both state back ends have one) or when that fails, as
	// it does with a network back end once the pass's context has ended.
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
	OutboxStats(ctx context.Context) (n int, oldest time.Time, err error)
}

// Defaults of Options.
const (
	DefaultBatch      = 256
	DefaultAckTimeout = 5 * time.Second
	DefaultIdle       = time.Second
)

// farFuture is after every acknowledgement time.
var farFuture = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// pruneShare sets how often retained entries are pruned: at most once per
// Config.RetainAcked / pruneShare, so an entry is kept up to 10% longer than asked.
const pruneShare = 10

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
// the event's data.sequence. Retained entries published again after a reconnect go
// first, in Seq order, then the unacknowledged ones.
type Publisher struct {
	js  jetstream.JetStream
	ob  Outbox
	cfg Config
	opt Options
	log *slog.Logger

	// mu is held for a whole pass over the outbox, so passes never overlap; it
	// guards the fields below.
	mu         sync.Mutex
	needStream bool     // EnsureStream before publishing
	notes      []string // the stream differences last logged
	// reconnects is the connection's reconnect count last seen; replay is set when
	// the retained entries are to be published again (at start, after a reconnect).
	reconnects uint64
	replay     bool
	// pruneAt is when the earliest retained entry becomes due for pruning (it is
	// pruned after that; zero: unknown, far future: none retained); lastPrune is when
	// pruning last ran.
	pruneAt   time.Time
	lastPrune time.Time
	cleared   bool // retention off: what an earlier run retained was pruned

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
	if opt.Now == nil {
		opt.Now = time.Now
	}
	return &Publisher{js: js, ob: ob, cfg: c, opt: opt, log: orDiscard(log), needStream: true,
		reconnects: js.Conn().Stats().Reconnects, replay: c.RetainAcked > 0}
}

// Run publishes the outbox until ctx is cancelled, and then returns ctx.Err(); the
// outbox calls in flight are made with ctx and end with it. It first creates or updates the stream (EnsureStream), then drains the outbox whenever
// it changes and at least every Options.Idle. After any failure (NATS away, the
// stream missing, a PubAck timeout, an outbox error) it retries from the first
// unacknowledged entry with exponential backoff and jitter capped at 30s, forever,
// and at once when the connection is re-established. Failures are logged, and
// reported by Healthy, never returned.
//
// With Config.RetainAcked set, its first pass and the first pass after each reconnect
// publish the retained entries again before the unacknowledged ones, and passes prune
// retained entries once they are RetainAcked old and the server that acknowledged them
// has been reachable since without a reconnect.
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
		case <-up: // a reconnect: republish the retained entries now
		}
	}
}

// Drain publishes every unacknowledged entry of the outbox, in Seq order, deleting
// (or, with Config.RetainAcked, retaining) each once its PubAck arrived (a PubAck for
// a duplicate counts). It returns nil once none is left, or the first error it meets
// without retrying: NATS not connected, the stream missing, a window not acknowledged
// within Options.AckTimeout, an outbox error, or ctx.Err() (returned as is) when ctx
// ends first. Entries not acknowledged stay in the outbox. Before publishing it
// creates the stream if it was never ensured or has gone missing, and publishes the
// retained entries again if they are due (see Run); after, it prunes the retained
// entries that are due, as Run does. It is meant for shutdown, with a ctx of a few
// seconds, of its own: ctx bounds the publishing and every outbox call, so the
// context of a Run that has just been cancelled would end it at once.
func (p *Publisher) Drain(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	err := p.drain(ctx)
	if err == nil {
		err = p.prune(ctx)
	}
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
		if n, oldest, err := st.OutboxStats(ctx); err == nil {
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
	if err := connected(p.js.Conn(), p.cfg); err != nil {
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
		err = p.republish(ctx)
	}
	if err == nil {
		err = p.drain(ctx)
	}
	if err == nil {
		err = p.prune(ctx)
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
	if err := connected(p.js.Conn(), p.cfg); err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, p.opt.AckTimeout)
	defer cancel()
	_, notes, err := ensureStream(sctx, p.js, p.cfg)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return failed(ReasonStream, err)
	}
	if !slices.Equal(notes, p.notes) {
		for _, n := range notes {
			p.log.Warn("The NATS stream differs from the configuration", "difference", n)
		}
		p.notes = notes
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
		entries, err := p.ob.Pending(ctx, after, p.opt.Batch)
		if err != nil {
			return failed(ReasonOutbox, fmt.Errorf("outbox: read after %d: %w", after, err))
		}
		if len(entries) == 0 {
			return nil
		}
		// Publishing while disconnected would only fill nats.go's reconnect buffer
		// and then time out.
		if err := connected(p.js.Conn(), p.cfg); err != nil {
			return err
		}
		if err := p.ensure(ctx); err != nil {
			return err
		}
		// Retained entries due to be published again go first, even when the
		// connection came back in the middle of this drain.
		if err := p.republish(ctx); err != nil {
			return err
		}
		if err := p.window(ctx, entries, false); err != nil {
			return err
		}
		after = entries[len(entries)-1].Seq
	}
}

// window publishes entries asynchronously, waits for their acknowledgements (bounded
// by AckTimeout and ctx) and deletes exactly the acknowledged ones, or records them
// as retained when Config.RetainAcked is set. again tells that entries are retained
// ones published again, which are not reported to the Observer. It returns nil when
// all were acknowledged and recorded. The acknowledgements that arrived before ctx
// ended are recorded with ctx too: a back end that honours it may leave them
// unrecorded, and their entries are then sent again by a later pass.
func (p *Publisher) window(ctx context.Context, entries []state.OutboxEntry, again bool) error {
	err := p.send(ctx, entries, again)
	if errors.Is(err, jetstream.ErrNoStreamResponse) {
		// Nothing answered for the subject: the stream is gone (NATS restarted without
		// its store) or not there yet. Create it before the retry.
		p.needStream = true
	}
	return err
}

// send is window without its reaction to a missing stream.
func (p *Publisher) send(ctx context.Context, entries []state.OutboxEntry, again bool) error {
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
	acked := make([]state.Ack, 0, len(futures))
	ack := func(e state.OutboxEntry, pa *jetstream.PubAck) {
		a := state.Ack{Seq: e.Seq, At: p.opt.Now(), Duplicate: pa.Duplicate}
		if pa.Stream == p.cfg.Stream {
			a.StreamSeq = pa.Sequence
		}
		acked = append(acked, a)
		if !again {
			p.opt.Observer.Published(time.Since(e.Enqueued))
		}
	}
	var ackErr error
	timedOut := false
	for i, f := range futures {
		e := entries[i]
		select {
		case pa := <-f.Ok():
			ack(e, pa)
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
			case pa := <-futures[j].Ok():
				ack(entries[j], pa)
			default:
			}
		}
		break
	}
	if timedOut {
		p.js.CleanupPublisher()
	}
	if err := p.record(ctx, acked); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return cmp.Or(ackErr, sendErr)
}

// record deletes the acknowledged entries, or retains them when Config.RetainAcked is
// set, within ctx; p.mu is held.
func (p *Publisher) record(ctx context.Context, acks []state.Ack) error {
	if len(acks) == 0 {
		return nil
	}
	if p.cfg.RetainAcked <= 0 {
		seqs := make([]uint64, len(acks))
		for i, a := range acks {
			seqs[i] = a.Seq
		}
		if err := p.ob.Delete(ctx, seqs); err != nil {
			return failed(ReasonOutbox, fmt.Errorf("outbox: delete %d acknowledged entries: %w", len(seqs), err))
		}
		return nil
	}
	if err := p.ob.Ack(ctx, acks); err != nil {
		return failed(ReasonOutbox, fmt.Errorf("outbox: retain %d acknowledged entries: %w", len(acks), err))
	}
	if due := acks[0].At.Add(p.cfg.RetainAcked); !p.pruneAt.IsZero() && due.Before(p.pruneAt) {
		p.pruneAt = due
	}
	return nil
}

// noteReconnects sets p.replay when the connection was re-established since the last
// look; p.mu is held.
func (p *Publisher) noteReconnects() {
	if n := p.js.Conn().Stats().Reconnects; n != p.reconnects {
		p.reconnects = n
		p.replay = p.cfg.RetainAcked > 0
	}
}

// republish publishes the retained entries again, in Seq order, when the connection
// came back since they were last published (or the Publisher has just started); p.mu
// is held. The stream drops, as duplicates, the messages it still holds and stores
// the ones its server lost.
//
// The duplicate window only remembers messages stored less than
// Config.DuplicateWindow ago, by the server's clock. An entry acknowledged more than
// half that window ago, or acknowledged as a duplicate (stored at an unknown earlier
// time), is looked up in the stream by the sequence its acknowledgement named
// instead, and published again only when the stream no longer holds it there. In a
// stream that deletes what its consumers acknowledged (work-queue or interest
// retention), a message missing from the stream may have been consumed rather than
// lost, so such an entry is not published again.
func (p *Publisher) republish(ctx context.Context) error {
	if p.cfg.RetainAcked <= 0 {
		return nil
	}
	p.noteReconnects()
	if !p.replay {
		return nil
	}
	lookBefore := p.opt.Now().Add(-p.cfg.DuplicateWindow / 2)
	var (
		after      uint64
		sent, held int
		stream     jetstream.Stream
	)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		entries, err := p.ob.Retained(ctx, after, p.opt.Batch)
		if err != nil {
			return failed(ReasonOutbox, fmt.Errorf("outbox: read retained entries after %d: %w", after, err))
		}
		if len(entries) == 0 {
			break
		}
		after = entries[len(entries)-1].Seq
		if err := connected(p.js.Conn(), p.cfg); err != nil {
			return err
		}
		if err := p.ensure(ctx); err != nil {
			return err
		}
		again := make([]state.OutboxEntry, 0, len(entries))
		for _, e := range entries {
			if e.StreamSeq != 0 && (e.Duplicate || e.Acked.Before(lookBefore)) {
				if stream == nil {
					if stream, err = p.stream(ctx); err != nil {
						return err
					}
				}
				keep, err := p.holds(ctx, stream, e)
				if err != nil {
					return err
				}
				if keep {
					held++
					continue
				}
			}
			again = append(again, e.OutboxEntry)
		}
		if len(again) == 0 {
			continue
		}
		if err := p.window(ctx, again, true); err != nil {
			return err
		}
		sent += len(again)
	}
	p.replay = false
	if sent+held > 0 {
		p.log.Info("Published the retained acknowledged events again after a (re)connect", "sent", sent, "skipped", held)
	}
	return nil
}

// stream looks up the configured stream; p.mu is held.
func (p *Publisher) stream(ctx context.Context) (jetstream.Stream, error) {
	sctx, cancel := context.WithTimeout(ctx, p.opt.AckTimeout)
	defer cancel()
	s, err := p.js.Stream(sctx, p.cfg.Stream)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			p.needStream = true
		}
		return nil, failed(ReasonStream, fmt.Errorf("nats stream %s: %w", p.cfg.Stream, err))
	}
	return s, nil
}

// holds reports whether e need not be published again: the stream holds its message
// at the sequence its acknowledgement named, or (in a stream whose consumers delete
// messages) may have held it.
func (p *Publisher) holds(ctx context.Context, s jetstream.Stream, e state.AckedEntry) (bool, error) {
	sctx, cancel := context.WithTimeout(ctx, p.opt.AckTimeout)
	defer cancel()
	m, err := s.GetMsg(sctx, e.StreamSeq)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return s.CachedInfo().Config.Retention != jetstream.LimitsPolicy, nil
	case err != nil:
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		return false, failed(ReasonStream, fmt.Errorf("nats stream %s: read message %d (%s): %w", p.cfg.Stream, e.StreamSeq, e.Msg.ID, err))
	}
	return m.Header.Get(jetstream.MsgIDHeader) == e.Msg.ID, nil
}

// prune deletes the retained entries acknowledged Config.RetainAcked ago or more; p.mu
// is held. It runs at most once per RetainAcked/10, never while the retained entries
// are due to be published again, and only after a round trip to the server: the entries
// must have been acknowledged by a server that has been reachable for RetainAcked since
// (time for it to have synced them to disk) without a reconnect in between. A failed
// round trip skips pruning without an error. With retention off, it prunes whatever an
// earlier configuration retained, once.
func (p *Publisher) prune(ctx context.Context) error {
	retain := p.cfg.RetainAcked
	if retain <= 0 {
		if p.cleared {
			return nil
		}
		n, _, err := p.ob.Prune(ctx, farFuture)
		if err != nil {
			return failed(ReasonOutbox, fmt.Errorf("outbox: prune retained entries: %w", err))
		}
		if n > 0 {
			p.log.Info("Deleted the acknowledged events an earlier run retained; nats.retain_acked is 0", "deleted", n)
		}
		p.cleared = true
		return nil
	}
	now := p.opt.Now()
	if p.replay || !now.After(p.pruneAt) || now.Before(p.lastPrune.Add(retain/pruneShare)) {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	nc := p.js.Conn()
	if !nc.IsConnected() {
		return nil
	}
	if err := nc.FlushTimeout(p.opt.AckTimeout); err != nil {
		p.log.Debug("Not pruning retained events: no round trip to NATS", "err", err)
		return nil
	}
	p.noteReconnects()
	if p.replay {
		return nil
	}
	n, next, err := p.ob.Prune(ctx, now.Add(-retain))
	if err != nil {
		return failed(ReasonOutbox, fmt.Errorf("outbox: prune retained entries: %w", err))
	}
	p.lastPrune = now
	p.pruneAt = next.Add(retain)
	if next.IsZero() {
		p.pruneAt = farFuture
	}
	if n > 0 {
		p.log.Debug("Pruned retained acknowledged events", "pruned", n)
	}
	return nil
}

// connected returns nil when nc is connected, else an error with its status and, when
// it has one, its last error, the servers (credentials redacted) and what to check in
// c when that error is a refusal of the credentials or of the TLS handshake.
func connected(nc *nats.Conn, c Config) error {
	if nc.IsConnected() {
		return nil
	}
	servers := nc.Opts.Url
	if len(nc.Opts.Servers) > 0 {
		servers = strings.Join(nc.Opts.Servers, ",")
	}
	err := nc.LastError()
	if err == nil {
		return failed(ReasonNotConnected, fmt.Errorf("nats: not connected (%s)", nc.Status()))
	}
	err = fmt.Errorf("nats: not connected (%s) to %s: %w", nc.Status(), RedactURL(servers), err)
	if hint := refusal(err, c, strings.Contains(servers, "@")); hint != "" {
		err = fmt.Errorf("%w; %s", err, hint)
	}
	return failed(ReasonNotConnected, err)
}
