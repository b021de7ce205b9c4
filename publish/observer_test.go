package publish

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payments-watcher/watcher/state"
)

// recorder is an Observer that keeps every call.
type recorder struct {
	mu        sync.Mutex
	latencies []time.Duration
	failures  []string
	depths    []int
	oldest    []time.Time
}

func (r *recorder) Published(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.latencies = append(r.latencies, d)
}

func (r *recorder) PublishFailed(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures = append(r.failures, reason)
}

func (r *recorder) Outbox(depth int, oldest time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.depths = append(r.depths, depth)
	r.oldest = append(r.oldest, oldest)
}

func TestObserverSeesPublishes(t *testing.T) {
	srv := runServer(t, -1, t.TempDir())
	_, js := connect(t, srv.ClientURL())
	ob := newOutbox(t)
	// Enqueued a minute ago: the latency runs from the enqueueing, not the publish.
	enqueued := time.Now().UTC().Add(-time.Minute)
	if err := ob.(storeOutbox).Commit(t.Context(), "test", state.Batch{Now: enqueued, Messages: messages(0, 10)}); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	p := New(js, ob, testConfig(), Options{Batch: 4, Observer: rec}, testLogger(t))
	if err := p.Drain(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(rec.latencies) != 10 {
		t.Fatalf("Published called %d times, want 10", len(rec.latencies))
	}
	for _, d := range rec.latencies {
		if d < time.Minute || d > 2*time.Minute {
			t.Errorf("latency %s, want a little over a minute", d)
		}
	}
	if len(rec.failures) != 0 {
		t.Errorf("failures %v after a successful drain", rec.failures)
	}
	if !slices.Equal(rec.depths, []int{0}) || !rec.oldest[0].IsZero() {
		t.Errorf("Outbox reported %v %v, want one report of an empty outbox", rec.depths, rec.oldest)
	}
}

func TestObserverSeesFailures(t *testing.T) {
	t.Run("stream refused", func(t *testing.T) {
		srv := runServer(t, -1, t.TempDir())
		_, js := connect(t, srv.ClientURL())
		if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"payments.>"}, Storage: jetstream.MemoryStorage}); err != nil {
			t.Fatal(err)
		}
		ob := newOutbox(t)
		ob.add(t, messages(0, 3)...)
		rec := &recorder{}
		p := New(js, ob, testConfig(), Options{Observer: rec}, testLogger(t))
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		if err := p.pass(ctx); err == nil {
			t.Fatal("pass succeeded on a memory stream")
		}
		if !slices.Equal(rec.failures, []string{ReasonStream}) || !slices.Equal(rec.depths, []int{3}) {
			t.Errorf("failures %v depths %v, want [stream] [3]", rec.failures, rec.depths)
		}
	})
	t.Run("not connected", func(t *testing.T) {
		srv := runServer(t, -1, t.TempDir())
		nc, js := connect(t, srv.ClientURL())
		ob := newOutbox(t)
		before := time.Now().UTC()
		ob.add(t, messages(0, 2)...)
		rec := &recorder{}
		p := New(js, ob, testConfig(), Options{Observer: rec}, testLogger(t))
		stopServer(srv)
		// nats.go notices the closed socket on a goroutine of its own.
		deadline := time.Now().Add(10 * time.Second)
		for nc.IsConnected() {
			if time.Now().After(deadline) {
				t.Fatal("the connection still reports connected 10s after the server stopped")
			}
			<-time.After(10 * time.Millisecond)
		}
		err := p.Drain(t.Context())
		if err == nil || !strings.HasPrefix(err.Error(), "nats: not connected") {
			t.Fatalf("Drain without NATS: %v", err)
		}
		if !slices.Equal(rec.failures, []string{ReasonNotConnected}) || !slices.Equal(rec.depths, []int{2}) ||
			rec.oldest[0].Before(before.Truncate(time.Second)) {
			t.Errorf("failures %v depths %v oldest %v, want [not_connected] [2] at or after %v", rec.failures, rec.depths, rec.oldest, before)
		}
		if len(rec.latencies) != 0 {
			t.Errorf("Published called %d times without NATS", len(rec.latencies))
		}
	})
}

func TestReasonOfErrors(t *testing.T) {
	for err, want := range map[error]string{
		failed(ReasonOutbox, errors.New("disk")): ReasonOutbox,
		jetstream.ErrNoStreamResponse:            ReasonNoStream,
		jetstream.ErrAsyncPublishTimeout:         ReasonAckTimeout,
		errors.New("maximum messages exceeded"):  ReasonRejected,
	} {
		if got := reason(err); got != want {
			t.Errorf("reason(%v) = %q, want %q", err, got, want)
		}
		if !slices.Contains(Reasons, want) {
			t.Errorf("Reasons lacks %q", want)
		}
	}
	// A tagged error reads as the error it wraps.
	inner := errors.New("nats: not connected (RECONNECTING)")
	if err := failed(ReasonNotConnected, inner); err.Error() != inner.Error() || !errors.Is(err, inner) {
		t.Errorf("tagged error %q does not read as %q", err, inner)
	}
}
