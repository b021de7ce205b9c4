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

// auditor copies every event of the stream into watcher_events.
//
// Delivery contract: a fetched batch is inserted in one transaction and its
// messages are acknowledged only after the commit; the insert skips event ids
// already stored, so a batch redelivered after a crash, or the same event present
// twice in the stream, leaves exactly one row per event id.
type auditor struct {
	o    options
	pool *pgxpool.Pool
	log  *slog.Logger

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

// store inserts batch and acknowledges it. Messages that are not watcher events, or
// whose content the database refuses, are terminated with a log line. A database
// that is unreachable is retried with a capped exponential backoff until ctx ends.
func (a *auditor) store(ctx context.Context, n int, batch []jetstream.Msg) error {
	rows := make([]row, 0, len(batch))
	keep := make([]jetstream.Msg, 0, len(batch))
	for _, m := range batch {
		e, err := event.Decode(m.Data())
		if err == nil && e.ID == "" {
			err = errors.New("event has no id")
		}
		if err != nil {
			a.terminate(m, err)
			continue
		}
		rows = append(rows, row{e: e, body: m.Data()})
		keep = append(keep, m)
	}
	if len(rows) > 0 {
		stop := keepInProgress(keep, a.o.ackWait)
		err := a.insert(ctx, rows)
		if badData(err) {
			// Find the refused rows one by one so that the others are stored.
			var ok []jetstream.Msg
			err = nil
			for i := range rows {
				rowErr := a.insert(ctx, rows[i:i+1])
				if badData(rowErr) {
					a.terminate(keep[i], rowErr)
					continue
				}
				if rowErr != nil {
					err = rowErr
					break
				}
				ok = append(ok, keep[i])
			}
			keep = ok
		}
		stop()
		if err != nil {
			return err
		}
	}
	if a.beforeAck != nil {
		if err := a.beforeAck(n); err != nil {
			return err
		}
	}
	for _, m := range keep {
		if err := m.Ack(); err != nil {
			a.log.Warn("Ack failed; the event will come again and be skipped", "subject", m.Subject(), "err", err)
		}
	}
	a.log.Debug("Batch stored", "batch", n, "events", len(keep), "messages", len(batch))
	return nil
}

func (a *auditor) terminate(m jetstream.Msg, err error) {
	a.log.Warn("Event not stored; terminated", "subject", m.Subject(), "err", err)
	if err := m.Term(); err != nil {
		a.log.Warn("Term failed", "subject", m.Subject(), "err", err)
	}
}

// insert runs insertRows until it succeeds, the database refuses the data, or ctx
// ends.
func (a *auditor) insert(ctx context.Context, rows []row) error {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(min(200*time.Millisecond, a.o.maxBackoff)),
		backoff.WithMaxInterval(a.o.maxBackoff),
		backoff.WithMaxElapsedTime(0),
	)
	op := func() error {
		err := insertRows(ctx, a.pool, rows)
		if badData(err) {
			return backoff.Permanent(err)
		}
		return err
	}
	notify := func(err error, wait time.Duration) {
		a.log.Warn("Insert failed; retrying", "events", len(rows), "err", err, "retry_in", wait)
	}
	err := backoff.RetryNotify(op, backoff.WithContext(b, ctx), notify)
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// keepInProgress tells JetStream that msgs are being worked on every third of the
// ack wait, so that a slow or retried insert does not get them redelivered, until
// the returned stop is called.
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
