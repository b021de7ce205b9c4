package publish

import (
	"context"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/state"
)

// testClock is a clock the test moves.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *testClock {
	return &testClock{t: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)}
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// retainConfig is testConfig with acknowledged entries retained for retain.
func retainConfig(retain time.Duration) Config {
	c := testConfig()
	c.RetainAcked = retain
	return c
}

// waitFor fails the test when cond does not hold within 30s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// counts returns the pending and the retained entries of ob.
func counts(t testing.TB, ob testOutbox) (pending, retained int) {
	t.Helper()
	s := ob.(storeOutbox).Store
	n, _, err := s.OutboxStats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	r, _, err := s.RetainedStats()
	if err != nil {
		t.Fatal(err)
	}
	return n, r
}

// settled waits until ob has no pending entry and retained ones.
func settled(t testing.TB, ob testOutbox, retained int) {
	t.Helper()
	waitFor(t, strconv.Itoa(retained)+" retained entries and none pending", func() bool {
		p, r := counts(t, ob)
		return p == 0 && r == retained
	})
}

// wiretap subscribes to every subject under "payments" on its own connection: it sees
// every publish, the duplicates the stream drops included.
func wiretap(t testing.TB, url string) <-chan *nats.Msg {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ch := make(chan *nats.Msg, 10000)
	if _, err := nc.ChanSubscribe("payments.>", ch); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return ch
}

// heard returns the Nats-Msg-Id of the next n messages on ch.
func heard(t testing.TB, ch <-chan *nats.Msg, n int) []string {
	t.Helper()
	var out []string
	for len(out) < n {
		select {
		case m := <-ch:
			out = append(out, m.Header.Get(event.HeaderMsgID))
		case <-time.After(30 * time.Second):
			t.Fatalf("heard %d messages %v, want %d", len(out), out, n)
		}
	}
	return out
}

// reconnect makes nc reconnect and waits until it is connected again.
func reconnect(t testing.TB, nc *nats.Conn) {
	t.Helper()
	before := nc.Stats().Reconnects
	if err := nc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reconnect", func() bool { return nc.Stats().Reconnects > before && nc.IsConnected() })
}

// retentionRecorder is a recorder that also receives what happens to the retained
// entries.
type retentionRecorder struct {
	recorder
	bytes       []int64
	pruned      int
	republished []int
}

func (r *retentionRecorder) RetainedBytes(n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bytes = append(r.bytes, n)
}

func (r *retentionRecorder) RetainedPruned(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pruned += n
}

func (r *retentionRecorder) Republished(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.republished = append(r.republished, n)
}

func (r *retentionRecorder) republishes() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.republished)
}

// TestRetainAckedHeldNotRepublished: after a reconnect to a server that kept
// everything, no retained entry goes out again: the stream's state shows them all.
func TestRetainAckedHeldNotRepublished(t *testing.T) {
	srv := runServer(t, -1, t.TempDir())
	nc, js := connect(t, srv.ClientURL())
	tap := wiretap(t, srv.ClientURL())
	ob := newOutbox(t)
	rec := &retentionRecorder{}
	p := New(js, ob, retainConfig(5*time.Minute), Options{Now: newClock().now, Observer: rec}, testLogger(t))
	runPublisher(t, p)

	ms := messages(0, 10)
	ob.add(t, ms...)
	settled(t, ob, 10)
	if got := heard(t, tap, 10); !slices.Equal(got, ids(ms)) {
		t.Fatalf("published %v, want %v", got, ids(ms))
	}
	// Retained entries are not waiting for NATS: the outbox depth says so.
	waitFor(t, "Observer.Outbox to report depth 0 with every entry acknowledged and retained", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.depths) > 0 && rec.depths[len(rec.depths)-1] == 0 && len(rec.bytes) > 0 && rec.bytes[len(rec.bytes)-1] > 0
	})

	reconnect(t, nc)
	later := messages(10, 1)
	ob.add(t, later...)
	if got, want := heard(t, tap, 1), ids(later); !slices.Equal(got, want) {
		t.Fatalf("after the reconnect published %v, want only %v", got, want)
	}
	settled(t, ob, 11)
	waitFor(t, "two checks of the retained entries (start, reconnect), none published again", func() bool {
		return slices.Equal(rec.republishes(), []int{0, 0})
	})
	if got, want := msgIDs(streamMsgs(t, js, "EVENTS")), append(ids(ms), ids(later)...); !slices.Equal(got, want) {
		t.Fatalf("stream holds %v, want %v", got, want)
	}
}

// TestRetainAckedServerSyncsAlways: with a server that syncs every message nothing is
// looked up or published again, even what the stream no longer holds.
func TestRetainAckedServerSyncsAlways(t *testing.T) {
	srv := runServer(t, -1, t.TempDir())
	nc, js := connect(t, srv.ClientURL())
	tap := wiretap(t, srv.ClientURL())
	ob := newOutbox(t)
	rec := &retentionRecorder{}
	p := New(js, ob, retainConfig(5*time.Minute), Options{Now: newClock().now, Observer: rec, ServerSyncsAlways: true}, testLogger(t))
	runPublisher(t, p)
	ob.add(t, messages(0, 5)...)
	settled(t, ob, 5)
	heard(t, tap, 5)
	s, err := js.Stream(t.Context(), "EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMsg(t.Context(), 5); err != nil {
		t.Fatal(err)
	}
	reconnect(t, nc)
	later := messages(5, 1)
	ob.add(t, later...)
	if got := heard(t, tap, 1); !slices.Equal(got, ids(later)) {
		t.Fatalf("after the reconnect published %v, want only %v", got, ids(later))
	}
	waitFor(t, "two checks, none published again", func() bool { return slices.Equal(rec.republishes(), []int{0, 0}) })
}

// TestRetainAckedStreamRefilled: the server went back (its stream was recreated) and
// another publisher filled it past the retained entries' sequences: the lookups find
// other messages there, and exactly the lost entries go out again.
func TestRetainAckedStreamRefilled(t *testing.T) {
	srv := runServer(t, -1, t.TempDir())
	nc, js := connect(t, srv.ClientURL())
	ob := newOutbox(t)
	rec := &retentionRecorder{}
	p := New(js, ob, retainConfig(5*time.Minute), Options{Now: newClock().now, Observer: rec, Batch: 4}, testLogger(t))
	ms := messages(0, 6)
	ob.add(t, ms...)
	if err := p.Drain(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(t.Context(), "EVENTS"); err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureStream(t.Context(), js, testConfig()); err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		m := &nats.Msg{Subject: "payments.other", Data: []byte("x"), Header: nats.Header{event.HeaderMsgID: []string{"other-" + strconv.Itoa(i)}}}
		if _, err := js.PublishMsg(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	tap := wiretap(t, srv.ClientURL())
	reconnect(t, nc)
	later := messages(6, 1)
	ob.add(t, later...)
	if err := p.Drain(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got, want := heard(t, tap, 7), append(ids(ms), ids(later)...); !slices.Equal(got, want) {
		t.Fatalf("after the reconnect published %v, want %v", got, want)
	}
	if got := rec.republishes(); !slices.Equal(got, []int{0, 6}) {
		t.Fatalf("Republished reports %v, want [0 6]", got)
	}
}

// TestRetainAckedMaxBytes: the size limit deletes the oldest retained entries, counts
// them, and the retained size reported stays within it.
func TestRetainAckedMaxBytes(t *testing.T) {
	srv := runServer(t, -1, t.TempDir())
	_, js := connect(t, srv.ClientURL())
	ob := newOutbox(t)
	rec := &retentionRecorder{}
	c := retainConfig(5 * time.Minute)
	c.RetainAckedMaxBytes = 1000
	p := New(js, ob, c, Options{Now: newClock().now, Observer: rec}, testLogger(t))
	ms := messages(0, 100)
	ob.add(t, ms...)
	if err := p.Drain(t.Context()); err != nil {
		t.Fatal(err)
	}
	r, err := ob.(storeOutbox).Retained(t.Context(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(r) == 0 || len(r) >= 100 || r[len(r)-1].Msg.ID != ms[99].ID {
		t.Fatalf("retained %d entries ending with %v, want the newest few", len(r), r[len(r)-1].Msg.ID)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.pruned != 100-len(r) {
		t.Errorf("RetainedPruned counted %d, want %d", rec.pruned, 100-len(r))
	}
	if n := len(rec.bytes); n == 0 || rec.bytes[n-1] > 1000 || rec.bytes[n-1] <= 0 {
		t.Errorf("RetainedBytes reported %v, want a last value in 1..1000", rec.bytes)
	}
}

func TestRetainAckedLooksUpWhatTheWindowForgot(t *testing.T) {
	srv := runServer(t, -1, t.TempDir())
	nc, js := connect(t, srv.ClientURL())
	tap := wiretap(t, srv.ClientURL())

	// A previous run published the first three and crashed before recording it: their
	// acknowledgements now say duplicate, so when they were stored is unknown.
	if _, err := EnsureStream(t.Context(), js, testConfig()); err != nil {
		t.Fatal(err)
	}
	for _, m := range messages(0, 3) {
		if _, err := js.PublishMsg(t.Context(), &nats.Msg{Subject: m.Subject, Data: m.Body, Header: nats.Header{event.HeaderMsgID: []string{m.ID}}}); err != nil {
			t.Fatal(err)
		}
	}
	heard(t, tap, 3)

	clk := newClock()
	ob := newOutbox(t)
	p := New(js, ob, retainConfig(9*time.Minute), Options{Now: clk.now}, testLogger(t))
	runPublisher(t, p)
	ms := messages(0, 10)
	ob.add(t, ms...)
	settled(t, ob, 10)
	if got := heard(t, tap, 10); !slices.Equal(got, ids(ms)) {
		t.Fatalf("published %v, want %v", got, ids(ms))
	}

	// Six minutes on, past half the 10m duplicate window: the stream is asked whether
	// it holds each entry, and only the one it lost goes out again.
	s, err := js.Stream(t.Context(), "EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	lost := ms[5]
	if err := s.DeleteMsg(t.Context(), 6); err != nil {
		t.Fatal(err)
	}
	clk.add(6 * time.Minute)
	reconnect(t, nc)
	later := messages(10, 1)
	ob.add(t, later...)
	if got, want := heard(t, tap, 2), []string{lost.ID, later[0].ID}; !slices.Equal(got, want) {
		t.Fatalf("after the reconnect published %v, want %v", got, want)
	}
	settled(t, ob, 11)
}

func TestRetainAckedRestoresWhatTheServerLost(t *testing.T) {
	for _, retain := range []time.Duration{5 * time.Minute, 0} {
		t.Run("retain_acked="+retain.String(), func(t *testing.T) {
			t.Parallel()
			port, dir := freePort(t), t.TempDir()
			url := "nats://127.0.0.1:" + strconv.Itoa(port)
			srv := runServer(t, port, dir)
			_, js := connect(t, url)
			ob := newOutbox(t)
			p := New(js, ob, retainConfig(retain), Options{Now: newClock().now}, testLogger(t))
			runPublisher(t, p)
			kept := 0
			if retain > 0 {
				kept = 1
			}

			ob.add(t, messages(0, 5)...)
			settled(t, ob, kept*5)

			// A copy of the store holding the first five, as the disk would after the
			// server synced them.
			stopServer(srv)
			synced := t.TempDir()
			if err := os.CopyFS(synced, os.DirFS(dir)); err != nil {
				t.Fatal(err)
			}
			srv = runServer(t, port, dir)
			ob.add(t, messages(5, 5)...)
			settled(t, ob, kept*10)

			// The server's machine crashes before it syncs the next five: it restarts
			// from the synced store, and the acknowledged five are gone.
			stopServer(srv)
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			if err := os.CopyFS(dir, os.DirFS(synced)); err != nil {
				t.Fatal(err)
			}
			runServer(t, port, dir)
			ob.add(t, messages(10, 2)...)
			settled(t, ob, kept*12)

			want := ids(messages(0, 12))
			if retain == 0 {
				want = append(ids(messages(0, 5)), ids(messages(10, 2))...)
			}
			if got := msgIDs(streamMsgs(t, js, "EVENTS")); !slices.Equal(got, want) {
				t.Fatalf("stream holds %v, want %v", got, want)
			}
		})
	}
}

func TestRetainAckedPruned(t *testing.T) {
	port, dir := freePort(t), t.TempDir()
	srv := runServer(t, port, dir)
	nc, js := connect(t, "nats://127.0.0.1:"+strconv.Itoa(port))
	clk := newClock()
	ob := newOutbox(t)
	p := New(js, ob, retainConfig(5*time.Minute), Options{Now: clk.now}, testLogger(t))
	drain := func(wantRetained int, when string) {
		t.Helper()
		if err := p.Drain(t.Context()); err != nil {
			t.Fatalf("%s: Drain: %v", when, err)
		}
		if pending, retained := counts(t, ob); pending != 0 || retained != wantRetained {
			t.Fatalf("%s: %d pending, %d retained; want 0 and %d", when, pending, retained, wantRetained)
		}
	}

	ob.add(t, messages(0, 3)...)
	drain(3, "acknowledged")
	clk.add(4 * time.Minute)
	drain(3, "4m later")
	clk.add(time.Minute)
	drain(3, "5m later")
	clk.add(time.Second)
	drain(0, "5m1s later")

	// Entries due while NATS is away stay until the server took them again after the
	// reconnect.
	ob.add(t, messages(3, 2)...)
	drain(2, "acknowledged")
	stopServer(srv)
	waitFor(t, "the client to notice", func() bool { return !nc.IsConnected() })
	clk.add(6 * time.Minute)
	drain(2, "6m later, NATS away")
	runServer(t, port, dir)
	waitFor(t, "the reconnect", nc.IsConnected)
	drain(2, "6m later, reconnected, not published again yet")

	// Publishing the next entry first checks the retained ones (six minutes old: looked
	// up in the stream, which holds them); then they are pruned.
	ob.add(t, messages(5, 1)...)
	drain(1, "checked again, then pruned")
	r, err := ob.(storeOutbox).Retained(t.Context(), 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(r) != 1 || r[0].Msg.ID != messages(5, 1)[0].ID || !r[0].Acked.Equal(clk.now()) {
		t.Fatalf("retained %+v, want only %s acknowledged at %s", r, messages(5, 1)[0].ID, clk.now())
	}
	if got := msgIDs(streamMsgs(t, js, "EVENTS")); !slices.Equal(got, ids(messages(0, 6))) {
		t.Fatalf("stream holds %v", got)
	}
}

func TestRetainAckedOffDeletesOnAck(t *testing.T) {
	srv := runServer(t, -1, t.TempDir())
	_, js := connect(t, srv.ClientURL())
	ob := newOutbox(t)
	s := ob.(storeOutbox).Store

	// An earlier run retained two entries; with retention off they go at the next pass.
	ob.add(t, messages(0, 3)...)
	if _, err := s.Ack(t.Context(), []state.Ack{{Seq: 1, At: time.Now()}, {Seq: 2, At: time.Now()}}, 0); err != nil {
		t.Fatal(err)
	}
	p := New(js, ob, testConfig(), Options{}, testLogger(t))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := p.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if pending, retained := counts(t, ob); pending != 0 || retained != 0 {
		t.Fatalf("%d pending, %d retained after Drain with retain_acked 0; want none", pending, retained)
	}
}

func TestConfigSyncsAlways(t *testing.T) {
	for _, tt := range []struct {
		c    Config
		want bool
	}{
		{Config{}, true},
		{Config{StreamStorage: StorageFile}, true},
		{Config{Embedded: Embedded{SyncInterval: time.Second}}, false},
		{Config{StreamStorage: StorageMemory}, false},
		{Config{URL: "nats://nats:4222"}, false},
	} {
		if got := tt.c.SyncsAlways(); got != tt.want {
			t.Errorf("%+v.SyncsAlways() = %v, want %v", tt.c, got, tt.want)
		}
	}
}
