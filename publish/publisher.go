// Package publish drains watcher's outbox to a NATS JetStream stream, and can start
// an embedded NATS server for single-machine deployments.
//
// Delivery is effectively once into the stream: every message is published with the
// header Nats-Msg-Id set to its event id, an outbox entry leaves the outbox only after
// its PubAck arrived, and anything not acknowledged is sent again later. The stream's
// duplicate window drops the copies it already holds, so re-sending is always safe.
//
// JetStream acknowledges a message before it fsyncs it (unless the server syncs
// always), so a NATS node whose operating system crashes can lose acknowledged
// messages. With Config.RetainAcked set, acknowledged entries are kept that long (and
// within Config.RetainAckedMaxBytes), and whenever the connection comes back (and at
// start) the Publisher compares them with the stream's state and publishes again,
// with the same ids, those the server may have lost (see republish).
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
	// ones); used instead of Delete when Config.RetainAcked is set. When limit is
	// positive it then deletes the oldest retained entries (lowest Seq first) until
	// their size (the sum of state.RetainedSize) is at most limit. It returns that
	// size and how many entries the limit deleted.
	Ack(ctx context.Context, acks []state.Ack, limit int64) (state.Retention, error)
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
	// ServerSyncsAlways tells that the NATS server fsyncs every message before its
	// PubAck (a server configured with "sync: always"): an acknowledged message cannot
	// be lost, so retained entries are never published again. New sets it when
	// Config.SyncsAlways (the embedded server syncing always).
	ServerSyncsAlways bool
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

// RetentionObserver is the optional part of an Observer that receives what happens
// to the retained acknowledged entries (Config.RetainAcked). The same rules apply.
type RetentionObserver interface {
	// RetainedBytes reports the size of the retained entries (the sum of their
	// state.RetainedSize) after each pass, when the Outbox can tell it.
	RetainedBytes(n int64)
	// RetainedPruned reports n retained entries deleted by Config.RetainAckedMaxBytes
	// before Config.RetainAcked had passed.
	RetainedPruned(n int)
	// Republished reports, after each (re)connect whose retained entries were checked,
	// how many of them were published again.
	Republished(n int)
}

type nopObserver struct{}

func (nopObserver) Published(time.Duration) {}
func (nopObserver) PublishFailed(string)    {}
func (nopObserver) Outbox(int, time.Time)   {}

// outboxStats is the optional part of an Outbox that Observer.Outbox reports.
type outboxStats interface {
	OutboxStats(ctx context.Context) (n int, oldest time.Time, err error)
}

// retainedSize is the optional part of an Outbox that RetentionObserver.RetainedBytes
// reports.
type retainedSize interface {
	RetainedBytes(ctx context.Context) (int64, error)
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
	capped    bool // Config.RetainAckedMaxBytes has deleted entries (logged once)

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
	opt.ServerSyncsAlways = opt.ServerSyncsAlways || c.SyncsAlways()
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
// publish again, before the unacknowledged ones, the retained entries the server may
// have lost (see republish), and passes prune
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
	ro, ok := obs.(RetentionObserver)
	if st, has := p.ob.(retainedSize); ok && has {
		if n, err := st.RetainedBytes(ctx); err == nil {
			ro.RetainedBytes(n)
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
	r, err := p.ob.Ack(ctx, acks, p.cfg.RetainAckedMaxBytes)
	if err != nil {
		return failed(ReasonOutbox, fmt.Errorf("outbox: retain %d acknowledged entries: %w", len(acks), err))
	}
	p.noteCapped(r)
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

// noteCapped reports the retained entries the size limit deleted; p.mu is held.
func (p *Publisher) noteCapped(r state.Retention) {
	if r.Capped == 0 {
		return
	}
	if ro, ok := p.opt.Observer.(RetentionObserver); ok {
		ro.RetainedPruned(r.Capped)
	}
	if !p.capped {
		p.capped = true
		p.log.Warn("The retained acknowledged events reached nats.retain_acked_max_bytes: the oldest are deleted before nats.retain_acked has passed",
			"retain_acked_max_bytes", p.cfg.RetainAckedMaxBytes, "retain_acked", p.cfg.RetainAcked.String(), "deleted", r.Capped)
	}
}

// republish publishes again, in Seq order, the retained entries the server may have
// lost, when the connection came back since they were last checked (or the Publisher
// has just started); p.mu is held. With Options.ServerSyncsAlways it publishes none.
// Otherwise it reads the stream's state once and decides each entry by the stream
// sequence its acknowledgement named (lossCheck). It logs and reports
// (RetentionObserver.Republished) how many it published again.
func (p *Publisher) republish(ctx context.Context) error {
	if p.cfg.RetainAcked <= 0 {
		return nil
	}
	p.noteReconnects()
	if !p.replay {
		return nil
	}
	if p.opt.ServerSyncsAlways {
		p.replay = false
		p.reportRepublished(0, nil)
		return nil
	}
	if err := connected(p.js.Conn(), p.cfg); err != nil {
		return err
	}
	if err := p.ensure(ctx); err != nil {
		return err
	}
	lc, err := p.newLossCheck(ctx)
	if err != nil {
		return err
	}
	var after uint64
	sent := 0
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
		again, err := lc.lost(ctx, entries)
		if err != nil {
			return err
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
	p.reportRepublished(sent, lc)
	return nil
}

// reportRepublished logs and reports the outcome of a republish; lc is nil when no
// check was needed.
func (p *Publisher) reportRepublished(sent int, lc *lossCheck) {
	if ro, ok := p.opt.Observer.(RetentionObserver); ok {
		ro.Republished(sent)
	}
	if lc == nil {
		p.log.Debug("Not checking the retained events after a (re)connect: the NATS server syncs every message before acknowledging it")
		return
	}
	if lc.checked == 0 {
		return
	}
	p.log.Info("Checked the retained acknowledged events against the NATS stream after a (re)connect",
		"retained", lc.checked, "published_again", sent, "lookups", lc.lookups,
		"stream_first_seq", lc.first, "stream_last_seq", lc.last)
}

// maxDeletedDetails bounds the interior deletes a lossCheck lists; past it, each
// entry is looked up in the stream instead.
const maxDeletedDetails = 100_000

// lossCheck decides which retained entries the stream may have lost, from the stream's
// state read once after a (re)connect. A retained entry records the stream sequence s
// of the acknowledgement that stored its message. JetStream assigns sequences in
// order, and a server that crashes before syncing loses the newest messages it held,
// so its sequence goes back below what it acknowledged (or, in a recreated stream,
// starts again); it may also lose messages inside its range, which then show as
// deleted. An entry is published again when:
//
//   - s is 0 (unknown: acknowledged by another stream, a mirror);
//   - s is past the stream's last sequence: the stream went back;
//   - s is in the stream's range and listed as deleted (limits retention only);
//   - s is in the stream's range and the message at s does not carry the entry's id
//     (Nats-Msg-Id), as when a stream that went back has been filled again by other
//     publishers. Of each page of entries, only the one with the highest s is looked
//     up; when it is there, so are the others (a lost range is a tail), and the others
//     are looked up one by one only when it is not.
//
// An entry with s before the stream's first sequence is not published again: the
// stream removed it by its own limits (age, size, count) or, in a work-queue or
// interest stream, its consumers did; storing it again would bring back what the
// stream dropped. In such streams a message missing inside the range may have been
// consumed, so it is not published again either.
type lossCheck struct {
	p           *Publisher
	stream      jetstream.Stream
	first, last uint64
	limits      bool                // limits retention: a missing message was lost, not consumed
	deleted     map[uint64]struct{} // interior deletes (limits retention)
	lookAll     bool                // too many interior deletes to list: look every entry up
	checked     int                 // entries decided
	lookups     int                 // messages looked up in the stream
}

// newLossCheck reads the stream's state; p.mu is held.
func (p *Publisher) newLossCheck(ctx context.Context) (*lossCheck, error) {
	s, err := p.stream(ctx)
	if err != nil {
		return nil, err
	}
	info := s.CachedInfo()
	lc := &lossCheck{p: p, stream: s, first: info.State.FirstSeq, last: info.State.LastSeq,
		limits: info.Config.Retention == jetstream.LimitsPolicy}
	if !lc.limits || info.State.NumDeleted == 0 {
		return lc, nil
	}
	if info.State.NumDeleted > maxDeletedDetails {
		lc.lookAll = true
		return lc, nil
	}
	sctx, cancel := context.WithTimeout(ctx, p.opt.AckTimeout)
	defer cancel()
	full, err := s.Info(sctx, jetstream.WithDeletedDetails(true))
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, failed(ReasonStream, fmt.Errorf("nats stream %s: read its deleted sequences: %w", p.cfg.Stream, err))
	}
	lc.deleted = make(map[uint64]struct{}, len(full.State.Deleted))
	for _, seq := range full.State.Deleted {
		lc.deleted[seq] = struct{}{}
	}
	return lc, nil
}

// lost returns, in Seq order, the entries of one page of retained entries that the
// stream may have lost (see lossCheck).
func (lc *lossCheck) lost(ctx context.Context, entries []state.AckedEntry) ([]state.OutboxEntry, error) {
	lc.checked += len(entries)
	gone := make(map[uint64]bool)
	var inRange []state.AckedEntry
	for _, e := range entries {
		s := e.StreamSeq
		switch _, deleted := lc.deleted[s]; {
		case s == 0 || s > lc.last:
			gone[e.Seq] = true
		case s < lc.first:
		case deleted:
			gone[e.Seq] = true
		default:
			inRange = append(inRange, e)
		}
	}
	if err := lc.lookUp(ctx, inRange, gone); err != nil {
		return nil, err
	}
	var again []state.OutboxEntry
	for _, e := range entries {
		if gone[e.Seq] {
			again = append(again, e.OutboxEntry)
		}
	}
	return again, nil
}

// lookUp marks in gone the entries of inRange (entries whose message should be in the
// stream's range) that the stream does not hold: first the one with the highest
// stream sequence, then, unless the stream holds that one, each of them.
func (lc *lossCheck) lookUp(ctx context.Context, inRange []state.AckedEntry, gone map[uint64]bool) error {
	if len(inRange) == 0 {
		return nil
	}
	if !lc.lookAll {
		top := slices.MaxFunc(inRange, func(a, b state.AckedEntry) int { return cmp.Compare(a.StreamSeq, b.StreamSeq) })
		lc.lookups++
		held, err := lc.p.holds(ctx, lc.stream, top)
		if err != nil || held {
			return err
		}
	}
	for _, e := range inRange {
		lc.lookups++
		held, err := lc.p.holds(ctx, lc.stream, e)
		if err != nil {
			return err
		}
		gone[e.Seq] = !held
	}
	return nil
}

// stream looks up the configured stream, with its current state; p.mu is held.
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

// holds reports whether the stream holds e's message at the sequence its
// acknowledgement named (the message there carries e's id), or, in a stream whose
// consumers delete messages, may have held it (nothing is there).
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
