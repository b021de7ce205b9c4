package publish

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsserver "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/state"
	"github.com/payments-watcher/watcher/state/bbolt"
)

func testConfig() Config {
	// A URL, as for any server but the embedded one (Config.SyncsAlways is false); the
	// tests connect to the URL of the server they start.
	return Config{URL: "nats://127.0.0.1:4222", Stream: "EVENTS", SubjectPrefix: "payments", DuplicateWindow: 10 * time.Minute}
}

// runServer starts a JetStream server on port (-1: a free one) storing in dir.
func runServer(t testing.TB, port int, dir string) *server.Server {
	t.Helper()
	opts := natsserver.DefaultTestOptions
	opts.Port = port
	opts.JetStream = true
	opts.StoreDir = dir
	srv := natsserver.RunServer(&opts)
	t.Cleanup(func() { stopServer(srv) })
	return srv
}

func stopServer(srv *server.Server) {
	srv.Shutdown()
	srv.WaitForShutdown()
}

// freePort returns a TCP port nothing listens on at the time of the call.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return port
}

// connect connects with Connect and returns a JetStream context on the connection.
func connect(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := Connect(url, testConfig(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// testLogger logs to t until the test's cleanups have run; nats.go calls its handlers
// asynchronously, sometimes after that.
func testLogger(t testing.TB) *slog.Logger {
	w := &tWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *tWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(b), "\n"))
	}
	return len(b), nil
}

// messages returns n messages with ids evt-<from>...evt-<from+n-1> on a few
// different subjects under the "payments" prefix.
func messages(from, n int) []event.Message {
	states := []string{"pending", "processing", "completed", "failed"}
	ms := make([]event.Message, n)
	for i := range ms {
		k := from + i
		id := fmt.Sprintf("evt-%06d", k)
		ms[i] = event.Message{
			ID:      id,
			Subject: event.Subject("payments", "src"+strconv.Itoa(k%3), "payment", states[k%len(states)]),
			Body:    fmt.Appendf(nil, `{"id":%q}`, id),
		}
	}
	return ms
}

func ids(ms []event.Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

// testOutbox is the outbox the tests fill and inspect.
type testOutbox interface {
	Outbox
	add(t testing.TB, ms ...event.Message)
	pendingIDs(t testing.TB) []string
}

// storeOutbox is a real state file.
type storeOutbox struct{ *bbolt.Store }

func newOutbox(t testing.TB) testOutbox {
	t.Helper()
	s, err := bbolt.Open(filepath.Join(t.TempDir(), "w.db"), bbolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return storeOutbox{s}
}

func (o storeOutbox) add(t testing.TB, ms ...event.Message) {
	t.Helper()
	if err := o.Commit(t.Context(), "test", state.Batch{Now: time.Now().UTC(), Messages: ms}); err != nil {
		t.Fatal(err)
	}
}

func (o storeOutbox) pendingIDs(t testing.TB) []string {
	t.Helper()
	var out []string
	var after uint64
	for {
		es, err := o.Pending(t.Context(), after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) == 0 {
			return out
		}
		for _, e := range es {
			out = append(out, e.Msg.ID)
		}
		after = es[len(es)-1].Seq
	}
}

// watchedOutbox reports on channels when the outbox has had at least some entries
// deleted, and when it is empty.
type watchedOutbox struct {
	testOutbox
	t        testing.TB
	mu       sync.Mutex
	deleted  int
	some     int
	reached  chan struct{} // closed once deleted >= some
	empty    chan struct{} // signalled when a Delete leaves the outbox empty
	reachedC bool
	// hold, when set, keeps the Delete that reaches some from returning until it is
	// closed, so that the test can act while the publisher is mid-drain.
	hold chan struct{}
}

func watch(t testing.TB, ob testOutbox, some int) *watchedOutbox {
	return &watchedOutbox{testOutbox: ob, t: t, some: some, reached: make(chan struct{}), empty: make(chan struct{}, 1)}
}

func (w *watchedOutbox) Delete(ctx context.Context, seqs []uint64) error {
	if err := w.testOutbox.Delete(ctx, seqs); err != nil {
		return err
	}
	left, err := w.testOutbox.Pending(ctx, 0, 1)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.deleted += len(seqs)
	if w.deleted >= w.some && !w.reachedC {
		w.reachedC = true
		close(w.reached)
		if w.hold != nil {
			<-w.hold
		}
	}
	if len(left) == 0 {
		select {
		case w.empty <- struct{}{}:
		default:
		}
	}
	return nil
}

// await fails the test when ch is neither closed nor signalled within d.
func await(t testing.TB, ch <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("timed out after %s waiting for %s", d, what)
	}
}

// streamMsgs reads the whole stream in order with an ordered consumer.
func streamMsgs(t testing.TB, js jetstream.JetStream, stream string) []jetstream.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	total := int(info.State.Msgs)
	if total == 0 {
		return nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	for len(out) < total {
		batch, err := cons.Fetch(total-len(out), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			out = append(out, m)
		}
		if err := batch.Error(); err != nil {
			t.Fatalf("fetch: %v", err)
		}
	}
	return out
}

// msgIDs returns the Nats-Msg-Id of each message.
func msgIDs(ms []jetstream.Msg) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Headers().Get(event.HeaderMsgID)
	}
	return out
}

// runPublisher starts p.Run and returns a function that stops it and checks that it
// returned the context's error.
func runPublisher(t testing.TB, p *Publisher) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != context.Canceled {
					t.Errorf("Run returned %v, want context.Canceled", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Run did not return within 10s of cancellation")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}
