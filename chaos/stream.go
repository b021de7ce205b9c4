package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payments-watcher/watcher/event"
)

// streamReader reads a stream from its start with an ordered consumer, keeping every
// message in stream order.
type streamReader struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	stream string
	cons   jetstream.Consumer
	msgs   []Stored
	last   uint64 // stream sequence of the last message read
}

func newStreamReader(url, stream string) (*streamReader, error) {
	nc, err := nats.Connect(url, nats.Name("watcher chaos checker"), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &streamReader{nc: nc, js: js, stream: stream}, nil
}

func (r *streamReader) close() { r.nc.Close() }

// poll reads every message stored up to now.
func (r *streamReader) poll(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	s, err := r.js.Stream(ctx, r.stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil // watcher has not created it yet
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", r.stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("stream %s: %w", r.stream, err)
	}
	if r.cons == nil {
		if r.cons, err = s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}); err != nil {
			return fmt.Errorf("stream %s: ordered consumer: %w", r.stream, err)
		}
	}
	for r.last < info.State.LastSeq {
		batch, err := r.cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return fmt.Errorf("stream %s: fetch: %w", r.stream, err)
		}
		for m := range batch.Messages() {
			meta, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("stream %s: message metadata: %w", r.stream, err)
			}
			st := Stored{Seq: meta.Sequence.Stream, Subject: m.Subject(), MsgID: m.Headers().Get(jetstream.MsgIDHeader)}
			st.Event, st.Err = event.Decode(m.Data())
			r.msgs = append(r.msgs, st)
			r.last = st.Seq
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return fmt.Errorf("stream %s: fetch: %w", r.stream, err)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("stream %s: read %d of %d messages: %w", r.stream, r.last, info.State.LastSeq, ctx.Err())
		}
	}
	return nil
}
