package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payments-watcher/watcher/event"
)

// auditor copies every message of the stream into the audit trail.
//
// Delivery contract: a fetched batch is stored in one transaction and its messages
// are acknowledged only after the commit. Every message ends in exactly one row,
// keyed by its stream sequence: a watcher event in audit_events (linked into its
// source's hash chain), anything else (not an event, refused by the database, a
// second copy of a stored event id) in audit_dead_letters with the reason. A
// message whose stream sequence is stored is skipped, so a batch redelivered after
// a crash adds nothing.
type auditor struct {
	o    options
	pool *pgxpool.Pool
	log  *slog.Logger
	now  func() time.Time

	// beforeAck, when set, runs after a batch is committed and before its acks; an
	// error stops Run with the batch unacknowledged, as a crash there would.
	beforeAck func(batch int) error
}

// Run creates or updates the durable consumer and stores events until ctx ends
// (then it returns nil) or the consumer or the connection fails.
func (a *auditor) Run(ctx context.Context, js jetstream.JetStream) error {
	stream, err := js.Stream(ctx, a.o.stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", a.o.stream, err)
	}
	cfg := jetstream.ConsumerConfig{
		Durable:        a.o.consumer,
		Description:    "audit trail of every event into PostgreSQL",
		FilterSubjects: []string{a.o.prefix + ".>"},
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        a.o.ackWait,
		MaxAckPending:  2 * a.o.batch,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}
	if a.o.deliver == "new" {
		cfg.DeliverPolicy = jetstream.DeliverNewPolicy
	}
	// The start position belongs to the consumer's creation and cannot change later.
	// examples/alert-failed does the same; each example program stands alone.
	if existing, err := stream.Consumer(ctx, a.o.consumer); err == nil {
		info := existing.CachedInfo().Config
		cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = info.DeliverPolicy, info.OptStartSeq, info.OptStartTime
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("consumer %s: %w", a.o.consumer, err)
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("consumer %s: %w", a.o.consumer, err)
	}
	msgs, err := cons.Messages(jetstream.PullMaxMessages(a.o.batch))
	if err != nil {
		return fmt.Errorf("consumer %s: %w", a.o.consumer, err)
	}
	defer msgs.Stop()
	for n := 1; ; n++ {
		batch, err := nextBatch(ctx, msgs, a.o.batch, a.o.linger)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("consumer %s: %w", a.o.consumer, err)
		}
		if err := a.store(ctx, n, batch); err != nil {
			if ctx.Err() != nil {
				return nil // the batch is redelivered after its ack wait
			}
			return err
		}
	}
}

// nextBatch waits for one message, then takes up to max-1 more that arrive within
// linger of each other.
func nextBatch(ctx context.Context, msgs jetstream.MessagesContext, max int, linger time.Duration) ([]jetstream.Msg, error) {
	first, err := msgs.Next(jetstream.NextContext(ctx))
	if err != nil {
		return nil, err
	}
	batch := []jetstream.Msg{first}
	for len(batch) < max {
		m, err := msgs.Next(jetstream.NextMaxWait(linger))
		if errors.Is(err, nats.ErrTimeout) {
			break
		}
		if err != nil {
			for _, m := range batch {
				_ = m.Nak()
			}
			return nil, err
		}
		batch = append(batch, m)
	}
	return batch, nil
}

// store keeps every message of batch, as an event or a dead letter, in one
// transaction, then acknowledges them all. A database that is unreachable is
// retried with a capped exponential backoff until ctx ends.
func (a *auditor) store(ctx context.Context, n int, batch []jetstream.Msg) error {
	now := a.now().UTC().Truncate(time.Microsecond)
	recs := make([]received, 0, len(batch))
	for _, m := range batch {
		recs = append(recs, receive(m, now))
	}
	stop := keepInProgress(batch, a.o.ackWait)
	events, dead, err := a.storeRetrying(ctx, recs)
	stop()
	if err != nil {
		return err
	}
	if a.beforeAck != nil {
		if err := a.beforeAck(n); err != nil {
			return err
		}
	}
	for _, m := range batch {
		if err := m.Ack(); err != nil {
			a.log.Warn("Ack failed; the message will come again and be skipped", "subject", m.Subject(), "err", err)
		}
	}
	if dead > 0 {
		a.log.Warn("Messages kept as dead letters", "batch", n, "dead_letters", dead)
	}
	a.log.Debug("Batch stored", "batch", n, "events", events, "dead_letters", dead, "messages", len(batch))
	return nil
}

// receive reads what audit-trail keeps of m: its stream sequence and timestamp, and
// the event it carries, if it is one.
func receive(m jetstream.Msg, at time.Time) received {
	r := received{subject: m.Subject(), at: at, body: m.Data()}
	if md, err := m.Metadata(); err == nil {
		r.seq, r.published = md.Sequence.Stream, md.Timestamp.UTC()
	}
	e, err := event.Decode(m.Data())
	if err == nil && e.ID == "" {
		err = errors.New("event has no id")
	}
	if err != nil {
		r.decodeErr = err
		return r
	}
	r.e = &e
	return r
}

// storeRetrying runs storeBatch until it succeeds or ctx ends.
func (a *auditor) storeRetrying(ctx context.Context, recs []received) (events, dead int, err error) {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(min(200*time.Millisecond, a.o.maxBackoff)),
		backoff.WithMaxInterval(a.o.maxBackoff),
		backoff.WithMaxElapsedTime(0),
	)
	op := func() error {
		events, dead, err = storeBatch(ctx, a.pool, recs)
		return err
	}
	notify := func(err error, wait time.Duration) {
		a.log.Warn("Insert failed; retrying", "messages", len(recs), "err", err, "retry_in", wait)
	}
	err = backoff.RetryNotify(op, backoff.WithContext(b, ctx), notify)
	if err != nil && ctx.Err() != nil {
		return 0, 0, ctx.Err()
	}
	return events, dead, err
}

// keepInProgress tells JetStream that msgs are being worked on every third of the
// ack wait, so that a slow or retried insert does not get them redelivered, until
// the returned stop is called. examples/alert-failed has its own, for one message:
// each example program stands alone.
func keepInProgress(msgs []jetstream.Msg, ackWait time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(ackWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				for _, m := range msgs {
					_ = m.InProgress()
				}
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// validPrefix reports whether p can start a subject filter.
func validPrefix(p string) bool { return p != "" && !strings.ContainsAny(p, "*> \t") }
