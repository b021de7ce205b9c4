package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	natsserver "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/shopspring/decimal"

	"github.com/payments-watcher/watcher/event"
)

func runNATS(t *testing.T) (string, jetstream.JetStream) {
	t.Helper()
	opts := natsserver.DefaultTestOptions
	opts.Port, opts.JetStream, opts.StoreDir = -1, true, t.TempDir()
	srv := natsserver.RunServer(&opts)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close(); srv.Shutdown(); srv.WaitForShutdown() })
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "PAYMENT_EVENTS", Subjects: []string{"payments.>"}}); err != nil {
		t.Fatal(err)
	}
	return srv.ClientURL(), js
}

// ev builds a watcher event of source cpn; parent is "" for a top-level item.
func ev(kind, parent, id string, seq uint32, prev, status, state string) event.Event {
	observed := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC).Add(time.Duration(seq) * time.Minute)
	d := event.Data{Source: "cpn", Provider: "circle_cpn_payments", Kind: kind, ID: id, Sequence: seq,
		Current: event.Status{Status: status, State: state}, CreatedAt: time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC), ObservedAt: observed,
		Amount: &event.Money{Value: decimal.RequireFromString("110.270000"), Currency: "USDC"}, Item: json.RawMessage(`{"id":"` + id + `"}`)}
	if parent != "" {
		d.ParentID = &parent
	}
	if prev != "" {
		d.Previous = &event.Status{Status: prev, State: "pending"}
	}
	return event.Event{SpecVersion: event.SpecVersion, ID: event.ID("cpn", kind, parent, id, seq, d.Previous, d.Current),
		Source: "watcher/cpn", Type: event.Type, Subject: id, Time: observed, DataContentType: "application/json", Data: d}
}

// publish sends events; withID false leaves out Nats-Msg-Id, so that JetStream keeps
// a repeat as a second message.
func publish(t *testing.T, js jetstream.JetStream, withID bool, events ...event.Event) {
	t.Helper()
	for _, e := range events {
		body, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		var opts []jetstream.PublishOpt
		if withID {
			opts = append(opts, jetstream.WithMsgID(e.ID))
		}
		if _, err := js.Publish(t.Context(), event.Subject("payments", e.Data.Source, e.Data.Kind, e.Data.Current.State), body, opts...); err != nil {
			t.Fatal(err)
		}
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type consumer struct {
	cancel context.CancelFunc
	done   chan error
}

// start runs an auditor with args on top of the test defaults.
func start(t *testing.T, js jetstream.JetStream, dsn string, logs io.Writer, hook func(int) error, args ...string) *consumer {
	t.Helper()
	base := []string{"--dsn", dsn, "--ack-wait", "500ms", "--max-backoff", "50ms", "--linger", "50ms"}
	o, err := parseOptions(append(base, args...), func(string) (string, bool) { return "", false }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := openDB(t.Context(), o.dsn)
	if err != nil {
		t.Fatal(err)
	}
	a := &auditor{o: o, pool: pool, log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), beforeAck: hook}
	ctx, cancel := context.WithCancel(context.Background())
	c := &consumer{cancel: cancel, done: make(chan error, 1)}
	go func() {
		err := a.Run(ctx, js)
		pool.Close()
		c.done <- err
	}()
	return c
}

func (c *consumer) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-c.done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("consumer did not stop")
		return nil
	}
}

func (c *consumer) stop(t *testing.T) {
	t.Helper()
	c.cancel()
	if err := c.wait(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// waitDrained polls the durable consumer until every message of the stream was
// delivered to it and acknowledged or terminated.
func waitDrained(t *testing.T, js jetstream.JetStream, name string) *jetstream.ConsumerInfo {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		cons, err := js.Consumer(t.Context(), "PAYMENT_EVENTS", name)
		if err == nil {
			ci, err := cons.Info(t.Context())
			if err == nil && ci.NumPending == 0 && ci.NumAckPending == 0 && ci.Delivered.Stream > 0 {
				return ci
			}
		} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer %s not drained", name)
		}
		time.Sleep(10 * time.Millisecond) // polling a real server against a deadline
	}
}

func connect(t *testing.T, dsn string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// stored maps each stored event id to its event column.
func stored(t *testing.T, pool *pgxpool.Pool) map[string][]byte {
	t.Helper()
	rows, err := pool.Query(t.Context(), "SELECT event_id, event FROM watcher_events")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[string][]byte{}
	for rows.Next() {
		var id string
		var body []byte
		if err := rows.Scan(&id, &body); err != nil {
			t.Fatal(err)
		}
		got[id] = body
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestStoresEveryEventOnce(t *testing.T) {
	_, js := runNATS(t)
	dsn := newDatabase(t)
	events := []event.Event{
		ev("payment", "", "p1", 1, "", "CREATED", "pending"),
		ev("payment", "", "p1", 2, "CREATED", "CRYPTO_FUNDS_PENDING", "pending"),
		ev("payment_refund", "p1", "r1", 1, "", "CREATED", "pending"),
		ev("payment", "", "p2", 1, "", "CREATED", "pending"),
		ev("payment", "", "p1", 3, "CRYPTO_FUNDS_PENDING", "FAILED", "failed"),
		ev("payment_refund", "p1", "r1", 2, "CREATED", "COMPLETED", "completed"),
		ev("payment", "", "p2", 2, "CREATED", "COMPLETED", "completed"),
		ev("payment", "", "p3", 1, "", "CREATED", "pending"),
	}
	publish(t, js, true, events...)
	publish(t, js, false, events[1], events[4]) // the same events again, as after a duplicate window
	if _, err := js.Publish(t.Context(), "payments.cpn.payment.failed", []byte("not an event")); err != nil {
		t.Fatal(err)
	}
	publish(t, js, true, ev("payment", "", "p4", 1, "", "CREATED", "pending"))
	events = append(events, ev("payment", "", "p4", 1, "", "CREATED", "pending"))

	// The first run stores batches of 3 and crashes after committing the second,
	// before acknowledging it.
	crash := errors.New("crash before ack")
	c := start(t, js, dsn, io.Discard, func(batch int) error {
		if batch == 2 {
			return crash
		}
		return nil
	}, "--batch", "3")
	if err := c.wait(t); !errors.Is(err, crash) {
		t.Fatalf("first run ended with %v, want the crash", err)
	}
	pool := connect(t, dsn)
	if n := len(stored(t, pool)); n != 6 {
		t.Fatalf("%d events stored before the restart, want the 6 of two batches", n)
	}

	// The restart gets the unacknowledged batch again, then the rest.
	logs := &lockedBuffer{}
	c = start(t, js, dsn, logs, nil, "--batch", "3")
	ci := waitDrained(t, js, "audit-trail")
	c.stop(t)
	if ci.Delivered.Stream != 12 {
		t.Errorf("consumer at stream sequence %d, want 12", ci.Delivered.Stream)
	}
	if !strings.Contains(logs.String(), "Event not stored; terminated") {
		t.Errorf("the message that is not an event was not terminated:\n%s", logs)
	}

	// A second consumer replays the whole stream into the same table.
	c = start(t, js, dsn, io.Discard, nil, "--consumer", "audit-replay")
	waitDrained(t, js, "audit-replay")
	c.stop(t)

	got := stored(t, pool)
	if len(got) != len(events) {
		t.Errorf("%d events stored, want %d", len(got), len(events))
	}
	for _, e := range events {
		body, ok := got[e.ID]
		if !ok {
			t.Errorf("event %s (%s %s seq %d) not stored", e.ID, e.Data.Kind, e.Data.ID, e.Data.Sequence)
			continue
		}
		back, err := event.Decode(body)
		if err != nil || back.ID != e.ID || back.Data.Sequence != e.Data.Sequence || back.Data.Amount.Text() != "110.270000" {
			t.Errorf("stored event %s decodes to %+v, %v", e.ID, back, err)
		}
	}
	var parent *string
	var seq int64
	var observed, created time.Time
	err := pool.QueryRow(t.Context(), "SELECT parent_id, sequence, observed_at, created_at FROM watcher_events WHERE event_id = $1", events[5].ID).
		Scan(&parent, &seq, &observed, &created)
	if err != nil {
		t.Fatal(err)
	}
	if parent == nil || *parent != "p1" || seq != 2 || !observed.Equal(events[5].Data.ObservedAt) || !created.Equal(events[5].Data.CreatedAt) {
		t.Errorf("columns of %s: parent %v sequence %d observed %s created %s", events[5].ID, parent, seq, observed, created)
	}
}

func TestHistory(t *testing.T) {
	natsURL, js := runNATS(t)
	dsn := newDatabase(t)
	// Out of order on purpose: the history is by sequence, not by arrival.
	publish(t, js, true,
		ev("payment", "", "p1", 3, "CRYPTO_FUNDS_PENDING", "FAILED", "failed"),
		ev("payment_refund", "p1", "r1", 1, "", "CREATED", "pending"),
		ev("payment", "", "p1", 1, "", "CREATED", "pending"),
		ev("payment", "", "other", 1, "", "CREATED", "pending"),
		ev("payment_refund", "p1", "r1", 2, "CREATED", "COMPLETED", "completed"),
		ev("payment", "", "p1", 2, "CREATED", "CRYPTO_FUNDS_PENDING", "pending"),
	)
	env := map[string]string{"DATABASE_URL": dsn, "NATS_URL": natsURL}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"--linger", "10ms"}, lookup, io.Discard, io.Discard) }()
	waitDrained(t, js, "audit-trail")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}

	var out bytes.Buffer
	if err := run(t.Context(), []string{"--history", "cpn", "p1", "--log-level", "warn"}, lookup, &out, io.Discard); err != nil {
		t.Fatalf("--history: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := [][]string{
		{"OBSERVED_AT", "KIND", "ID", "SEQ", "PREVIOUS", "STATUS", "STATE", "EVENT_ID"},
		{"2026-11-22T10:01:00Z", "payment", "p1", "1", "(new)", "CREATED", "pending"},
		{"2026-11-22T10:02:00Z", "payment", "p1", "2", "CREATED", "CRYPTO_FUNDS_PENDING", "pending"},
		{"2026-11-22T10:03:00Z", "payment", "p1", "3", "CRYPTO_FUNDS_PENDING", "FAILED", "failed"},
		{"2026-11-22T10:01:00Z", "payment_refund", "p1/r1", "1", "(new)", "CREATED", "pending"},
		{"2026-11-22T10:02:00Z", "payment_refund", "p1/r1", "2", "CREATED", "COMPLETED", "completed"},
	}
	if len(lines) != len(want) {
		t.Fatalf("history has %d lines, want %d:\n%s", len(lines), len(want), out.String())
	}
	for i, w := range want {
		fields := strings.Fields(lines[i])
		if len(fields) != 8 || !equalPrefix(fields, w) {
			t.Errorf("line %d = %q, want %q", i, lines[i], strings.Join(w, " "))
		}
	}
	if !strings.Contains(lines[1], ev("payment", "", "p1", 1, "", "CREATED", "pending").ID) {
		t.Errorf("line 1 %q lacks the event id", lines[1])
	}

	err := run(t.Context(), []string{"--history", "cpn", "missing"}, lookup, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "history of cpn missing: no events stored") {
		t.Errorf("history of an unknown item: %v", err)
	}
}

func equalPrefix(got, want []string) bool {
	for i := range want {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

func TestSchemaIsIdempotent(t *testing.T) {
	dsn := newDatabase(t)
	for range 2 {
		pool, err := openDB(t.Context(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		pool.Close()
	}
	pool := connect(t, dsn)
	var indexes []string
	rows, err := pool.Query(t.Context(), "SELECT indexdef FROM pg_indexes WHERE tablename = 'watcher_events' ORDER BY indexname")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var def string
		if err := rows.Scan(&def); err != nil {
			t.Fatal(err)
		}
		indexes = append(indexes, def)
	}
	all := strings.Join(indexes, "\n")
	for _, want := range []string{"(source, item_id, sequence)", "(observed_at)", "UNIQUE INDEX watcher_events_pkey ON public.watcher_events USING btree (event_id)"} {
		if !strings.Contains(all, want) {
			t.Errorf("indexes lack %s:\n%s", want, all)
		}
	}
}

func TestParseOptionsErrors(t *testing.T) {
	none := func(string) (string, bool) { return "", false }
	_, err := parseOptions([]string{"--batch", "0", "--history", "cpn"}, none, io.Discard)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"--dsn (or DATABASE_URL) is required", "--batch 0", "--history cpn: want one item id"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	o, err := parseOptions([]string{"--history", "cpn", "p1", "--dsn", "postgres:///x"}, none, io.Discard)
	if err != nil || o.historySource != "cpn" || o.historyID != "p1" || o.dsn != "postgres:///x" {
		t.Errorf("parseOptions = %+v, %v; want history cpn p1 and the dsn after it", o, err)
	}
}
