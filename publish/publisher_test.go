package publish

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/internal/logtest"
)

func TestEnsureStream(t *testing.T) {
	srv := runServer(t, -1, t.TempDir())
	_, js := connect(t, srv.ClientURL())
	ctx := t.Context()
	c := testConfig()

	s, err := EnsureStream(ctx, js, c)
	if err != nil {
		t.Fatal(err)
	}
	got := s.CachedInfo().Config
	if !slices.Equal(got.Subjects, []string{"payments.>"}) || got.Storage != jetstream.FileStorage ||
		got.Duplicates != 10*time.Minute || got.Replicas != 1 || got.Name != "EVENTS" {
		t.Fatalf("stream config: name %s subjects %v storage %s duplicates %s replicas %d; want EVENTS [payments.>] File 10m0s 1",
			got.Name, got.Subjects, got.Storage, got.Duplicates, got.Replicas)
	}

	// Idempotent, and an operator's own settings survive an update.
	got.MaxAge = 48 * time.Hour
	if _, err := js.UpdateStream(ctx, got); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureStream(ctx, js, c); err != nil {
		t.Fatalf("second EnsureStream: %v", err)
	}
	c.DuplicateWindow = 20 * time.Minute
	s, err = EnsureStream(ctx, js, c)
	if err != nil {
		t.Fatalf("EnsureStream with a new duplicate window: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Duplicates != 20*time.Minute || info.Config.MaxAge != 48*time.Hour {
		t.Fatalf("after update: duplicates %s max age %s, want 20m0s and 48h0m0s", info.Config.Duplicates, info.Config.MaxAge)
	}
}

func TestEnsureStreamStorageMustMatch(t *testing.T) {
	srv := runServer(t, -1, t.TempDir())
	_, js := connect(t, srv.ClientURL())
	_, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"payments.>"}, Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	_, err = EnsureStream(t.Context(), js, testConfig())
	want := "nats stream EVENTS: has Memory storage, nats.stream_storage is file; a stream's storage cannot change: recreate the stream, or set nats.stream_storage to memory"
	if err == nil || err.Error() != want {
		t.Fatalf("EnsureStream of file storage on a memory stream: %v\nwant %s", err, want)
	}
	c := testConfig()
	c.StreamStorage = StorageMemory
	if _, err := EnsureStream(t.Context(), js, c); err != nil {
		t.Fatalf("EnsureStream of memory storage on a memory stream: %v", err)
	}
	c.Stream, c.SubjectPrefix = "OTHER", "other"
	c.StreamStorage = StorageFile
	if _, err := EnsureStream(t.Context(), js, c); err != nil {
		t.Fatal(err)
	}
	c.StreamStorage = StorageMemory
	_, err = EnsureStream(t.Context(), js, c)
	want = "nats stream OTHER: has File storage, nats.stream_storage is memory; a stream's storage cannot change: recreate the stream, or set nats.stream_storage to file"
	if err == nil || err.Error() != want {
		t.Fatalf("EnsureStream of memory storage on a file stream: %v\nwant %s", err, want)
	}
}

func TestEnsureStreamLimits(t *testing.T) {
	srv := runServer(t, -1, t.TempDir())
	_, js := connect(t, srv.ClientURL())
	ctx := t.Context()

	// A new stream takes the configured storage and limits.
	c := testConfig()
	c.StreamStorage, c.StreamMaxAge, c.StreamMaxBytes = StorageMemory, 72*time.Hour, 1<<30
	s, notes, err := ensureStream(ctx, js, c)
	if err != nil {
		t.Fatal(err)
	}
	got := s.CachedInfo().Config
	if got.Storage != jetstream.MemoryStorage || got.MaxAge != 72*time.Hour || got.MaxBytes != 1<<30 || len(notes) != 0 {
		t.Fatalf("created: storage %s max age %s max bytes %d, notes %q; want Memory 72h 1GiB and none", got.Storage, got.MaxAge, got.MaxBytes, notes)
	}
	// Without limits: none.
	c = testConfig()
	c.Stream, c.SubjectPrefix = "UNLIMITED", "unlimited"
	if s, err = EnsureStream(ctx, js, c); err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config; got.Storage != jetstream.FileStorage || got.MaxAge != 0 || got.MaxBytes != -1 {
		t.Fatalf("created without limits: storage %s max age %s max bytes %d", got.Storage, got.MaxAge, got.MaxBytes)
	}

	// An existing stream keeps its limits; the differences are told.
	c = testConfig()
	c.StreamStorage, c.StreamMaxAge, c.StreamMaxBytes, c.RetainAcked = StorageMemory, 24*time.Hour, 2<<30, 5*time.Minute
	if s, notes, err = ensureStream(ctx, js, c); err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config; got.MaxAge != 72*time.Hour || got.MaxBytes != 1<<30 {
		t.Fatalf("existing stream's limits changed to max age %s max bytes %d", got.MaxAge, got.MaxBytes)
	}
	want := []string{
		"nats stream EVENTS: max age is 72h0m0s, nats.stream_max_age is 24h0m0s; the stream keeps its own (change it with nats stream edit)",
		"nats stream EVENTS: max bytes is 1073741824, nats.stream_max_bytes is 2147483648; the stream keeps its own (change it with nats stream edit)",
	}
	if !slices.Equal(notes, want) {
		t.Fatalf("notes:\n%q\nwant\n%q", notes, want)
	}

	// A max age the duplicate window does not fit in is an error; so is one shorter
	// than the retention of acknowledged entries, only told.
	got = s.CachedInfo().Config
	got.MaxAge, got.Duplicates = 3*time.Minute, 2*time.Minute
	if _, err := js.UpdateStream(ctx, got); err != nil {
		t.Fatal(err)
	}
	_, err = EnsureStream(ctx, js, c)
	wantErr := "nats stream EVENTS: its max age 3m0s is shorter than nats.duplicate_window 10m0s, which JetStream refuses: raise the stream's max age or shorten the window"
	if err == nil || err.Error() != wantErr {
		t.Fatalf("EnsureStream: %v\nwant %s", err, wantErr)
	}
	c.DuplicateWindow, c.StreamMaxAge, c.StreamMaxBytes = time.Minute, 0, 0
	if _, notes, err = ensureStream(ctx, js, c); err != nil {
		t.Fatal(err)
	}
	want = []string{"nats stream EVENTS: max age 3m0s is shorter than nats.retain_acked 5m0s; an event re-published after a reconnect can be stored again after the stream aged it out"}
	if !slices.Equal(notes, want) {
		t.Fatalf("notes:\n%q\nwant\n%q", notes, want)
	}

	// The Publisher logs them, once.
	var logs logtest.Buffer
	p := New(js, newOutbox(t), c, Options{}, slog.New(slog.NewTextHandler(&logs, nil)))
	for range 2 {
		p.needStream = true
		if err := p.pass(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(logs.String(), "nats.retain_acked 5m0s"); n != 1 {
		t.Fatalf("the difference was logged %d times, want once:\n%s", n, logs.String())
	}
}

func TestDrainPublishesOnceWithHeaders(t *testing.T) {
	srv := runServer(t, -1, t.TempDir())
	_, js := connect(t, srv.ClientURL())
	ms := messages(0, 40)

	// The same messages in two outboxes, as after a crash between ack and delete.
	for round := range 2 {
		ob := newOutbox(t)
		ob.add(t, ms...)
		p := New(js, ob, testConfig(), Options{Batch: 16}, testLogger(t))
		if err := p.Drain(t.Context()); err != nil {
			t.Fatalf("round %d: Drain: %v", round, err)
		}
		if left := ob.pendingIDs(t); len(left) != 0 {
			t.Fatalf("round %d: outbox still holds %v", round, left)
		}
		if err := p.Healthy(); err != nil {
			t.Fatalf("round %d: Healthy: %v", round, err)
		}
	}

	got := streamMsgs(t, js, "EVENTS")
	if len(got) != len(ms) {
		t.Fatalf("stream holds %d messages, want %d", len(got), len(ms))
	}
	for i, m := range got {
		want := ms[i]
		if id := m.Headers().Get(event.HeaderMsgID); id != want.ID {
			t.Errorf("message %d: Nats-Msg-Id %q, want %q", i, id, want.ID)
		}
		if ct := m.Headers().Get("Content-Type"); ct != event.ContentType {
			t.Errorf("message %d: Content-Type %q, want %q", i, ct, event.ContentType)
		}
		if m.Subject() != want.Subject || string(m.Data()) != string(want.Body) {
			t.Errorf("message %d: %s %s, want %s %s", i, m.Subject(), m.Data(), want.Subject, want.Body)
		}
	}
}

func TestDrainKeepsSeqOrder(t *testing.T) {
	srv := runServer(t, -1, t.TempDir())
	_, js := connect(t, srv.ClientURL())
	ms := messages(0, 1000)
	ob := newOutbox(t)
	ob.add(t, ms...)

	p := New(js, ob, testConfig(), Options{Batch: 64}, testLogger(t))
	if err := p.Drain(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := msgIDs(streamMsgs(t, js, "EVENTS")); !slices.Equal(got, ids(ms)) {
		t.Fatalf("stream order differs from outbox order:\n got %v\nwant %v", got, ids(ms))
	}
}

func TestDrainRecreatesMissingStream(t *testing.T) {
	srv := runServer(t, -1, t.TempDir())
	_, js := connect(t, srv.ClientURL())
	ob := newOutbox(t)
	p := New(js, ob, testConfig(), Options{}, testLogger(t))
	ob.add(t, messages(0, 5)...)
	if err := p.Drain(t.Context()); err != nil {
		t.Fatal(err)
	}

	// The stream disappears, as when NATS restarts without its store.
	if err := js.DeleteStream(t.Context(), "EVENTS"); err != nil {
		t.Fatal(err)
	}
	ob.add(t, messages(5, 5)...)
	err := p.Drain(t.Context())
	if !errors.Is(err, jetstream.ErrNoStreamResponse) {
		t.Fatalf("Drain without the stream: %v, want ErrNoStreamResponse", err)
	}
	if got := ob.pendingIDs(t); !slices.Equal(got, ids(messages(5, 5))) {
		t.Fatalf("outbox after a failed Drain: %v, want every unacknowledged entry", got)
	}
	if err := p.Healthy(); err == nil || !strings.HasPrefix(err.Error(), "nats: ") {
		t.Fatalf("Healthy after a failed Drain: %v, want an error naming nats", err)
	}

	if err := p.Drain(t.Context()); err != nil {
		t.Fatalf("Drain after the stream vanished: %v", err)
	}
	if got := msgIDs(streamMsgs(t, js, "EVENTS")); !slices.Equal(got, ids(messages(5, 5))) {
		t.Fatalf("recreated stream holds %v", got)
	}
	if err := p.Healthy(); err != nil {
		t.Fatalf("Healthy: %v", err)
	}
}

func TestDrainExpiredContext(t *testing.T) {
	srv := runServer(t, -1, t.TempDir())
	nc, js := connect(t, srv.ClientURL())
	ob := newOutbox(t)
	ms := messages(0, 10)
	ob.add(t, ms...)
	p := New(js, ob, testConfig(), Options{AckTimeout: time.Minute}, testLogger(t))

	ctx, cancel := context.WithTimeout(t.Context(), -time.Second)
	defer cancel()
	if err := p.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain with an expired context: %v, want context.DeadlineExceeded", err)
	}
	if got := ob.pendingIDs(t); !slices.Equal(got, ids(ms)) {
		t.Fatalf("outbox after Drain with an expired context: %v, want it untouched", got)
	}

	// The context ends while acknowledgements are missing: messages on a subject a plain
	// subscriber takes (and never answers) sit between messages the stream stores.
	sink, err := nc.SubscribeSync("sink.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	unacked := []event.Message{{ID: "lost-1", Subject: "sink.a", Body: []byte("{}")}, {ID: "lost-2", Subject: "sink.b", Body: []byte("{}")}}
	ob.add(t, unacked...)
	ob.add(t, messages(10, 3)...)

	ctx, cancel = context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = p.Drain(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain: %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Drain returned %s after its context ended", d)
	}
	if got := ob.pendingIDs(t); !slices.Equal(got, ids(unacked)) {
		t.Fatalf("outbox holds %v, want exactly the unacknowledged %v", got, ids(unacked))
	}
	for _, want := range unacked {
		m, err := sink.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("the unacknowledged message %s was not sent: %v", want.ID, err)
		}
		if m.Header.Get(event.HeaderMsgID) != want.ID {
			t.Fatalf("sink got %s, want %s", m.Header.Get(event.HeaderMsgID), want.ID)
		}
	}
	want := append(ids(ms), ids(messages(10, 3))...)
	if got := msgIDs(streamMsgs(t, js, "EVENTS")); !slices.Equal(got, want) {
		t.Fatalf("stream holds %v, want %v", got, want)
	}
}

func TestRunSurvivesNATSRestart(t *testing.T) {
	port, dir := freePort(t), t.TempDir()
	srv := runServer(t, port, dir)
	nc, js := connect(t, srv.ClientURL())

	const n = 5000
	ms := messages(0, n)
	ob := watch(t, newOutbox(t), n/5)
	ob.hold = make(chan struct{})
	ob.add(t, ms...)
	p := New(js, ob, testConfig(), Options{Batch: 50, AckTimeout: 2 * time.Second}, testLogger(t))
	down := nc.StatusChanged(nats.RECONNECTING)
	stop := runPublisher(t, p)

	// The publisher is held in a Delete after a fifth of the messages: stop NATS.
	await(t, ob.reached, 30*time.Second, "the first deletes")
	stopServer(srv)
	close(ob.hold)
	select {
	case <-down:
	case <-time.After(10 * time.Second):
		t.Fatal("the client did not notice the server going away")
	}
	if err := p.Healthy(); err == nil || !strings.Contains(err.Error(), "not connected") {
		t.Fatalf("Healthy while NATS is down: %v, want a not-connected error", err)
	}
	// No ack can arrive now: the outbox holds exactly what was not deleted before.
	ob.mu.Lock()
	deleted := ob.deleted
	ob.mu.Unlock()
	if left := ob.pendingIDs(t); deleted >= n || !slices.Equal(left, ids(ms[deleted:])) {
		t.Fatalf("outbox holds %d entries while NATS is down after %d deletes, want the last %d", len(left), deleted, n-deleted)
	}

	runServer(t, port, dir)
	await(t, ob.empty, 60*time.Second, "the outbox to drain after the restart")
	stop()

	got := msgIDs(streamMsgs(t, js, "EVENTS"))
	if len(got) != n {
		t.Fatalf("stream holds %d messages, want %d", len(got), n)
	}
	slices.Sort(got)
	if want := ids(ms); !slices.Equal(got, want) {
		t.Fatalf("stream ids differ from the outbox's: %d messages, first %v", len(got), got[:5])
	}
}

func TestRunWaitsForNATS(t *testing.T) {
	port := freePort(t)
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	_, js := connect(t, url)

	ms := messages(0, 300)
	ob := watch(t, newOutbox(t), len(ms))
	ob.add(t, ms...)
	p := New(js, ob, testConfig(), Options{}, testLogger(t))
	runPublisher(t, p)
	if err := p.Healthy(); err == nil || !strings.Contains(err.Error(), "not connected") {
		t.Fatalf("Healthy before NATS is up: %v, want a not-connected error", err)
	}

	runServer(t, port, t.TempDir())
	await(t, ob.empty, 30*time.Second, "the outbox to drain once NATS is up")
	if got := msgIDs(streamMsgs(t, js, "EVENTS")); !slices.Equal(got, ids(ms)) {
		t.Fatalf("stream holds %d messages %v..., want %d in order", len(got), got[:min(5, len(got))], len(ms))
	}
}

func TestRunPublishesOnChange(t *testing.T) {
	srv := runServer(t, -1, t.TempDir())
	_, js := connect(t, srv.ClientURL())
	ob := watch(t, newOutbox(t), 0)
	// Idle is long: only the Changed signal can make the later batches go out in time.
	p := New(js, ob, testConfig(), Options{Idle: time.Hour}, testLogger(t))
	runPublisher(t, p)

	for round := range 3 {
		ob.add(t, messages(round*10, 10)...)
		await(t, ob.empty, 20*time.Second, "the outbox to drain after a change")
	}
	if got := msgIDs(streamMsgs(t, js, "EVENTS")); !slices.Equal(got, ids(messages(0, 30))) {
		t.Fatalf("stream holds %v", got)
	}
}

func BenchmarkDrain(b *testing.B) {
	srv := runServer(b, -1, b.TempDir())
	_, js := connect(b, srv.ClientURL())
	ob := newOutbox(b)
	p := New(js, ob, testConfig(), Options{}, nil)
	const n = 10000
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		ob.add(b, messages(i*n, n)...)
		b.StartTimer()
		if err := p.Drain(b.Context()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "msgs/s")
}
