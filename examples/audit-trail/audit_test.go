package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/jackc/pgx/v5/pgconn"
	"io"
	"log/slog"
	"strconv"
	"strings"
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

type consumer struct {
	cancel context.CancelFunc
	done   chan error
}

// start runs an auditor connected as the writer dsn, with args on top of the test
// defaults.
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
	if err := checkWriter(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	a := &auditor{o: o, pool: pool, log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), beforeAck: hook, now: time.Now}
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

// stored maps each stored event id to its body.
func stored(t *testing.T, pool *pgxpool.Pool) map[string][]byte {
	t.Helper()
	rows, err := pool.Query(t.Context(), "SELECT event_id, body FROM audit_events")
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

// deadReasons maps each dead letter's stream sequence to its reason.
func deadReasons(t *testing.T, pool *pgxpool.Pool) map[uint64]string {
	t.Helper()
	rows, err := pool.Query(t.Context(), "SELECT stream_seq, reason FROM audit_dead_letters")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[uint64]string{}
	for rows.Next() {
		var seq int64
		var reason string
		if err := rows.Scan(&seq, &reason); err != nil {
			t.Fatal(err)
		}
		got[uint64(seq)] = reason
	}
	return got
}

// runVerifyCmd runs `audit-trail verify` and returns its output and error.
func runVerifyCmd(t *testing.T, natsURL, dsn string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(t.Context(), []string{"verify", "--dsn", dsn, "--nats", natsURL}, func(string) (string, bool) { return "", false }, &out, io.Discard)
	return out.String(), err
}

func TestStoresEveryMessageOnce(t *testing.T) {
	natsURL, js := runNATS(t)
	db := newDatabase(t)
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
	publish(t, js, true, events...)                                                                           // stream sequences 1-8
	publish(t, js, false, events[1], events[4])                                                               // 9, 10: the same events again, as after a duplicate window
	if _, err := js.Publish(t.Context(), "payments.cpn.payment.failed", []byte("not an event")); err != nil { // 11
		t.Fatal(err)
	}
	p4 := ev("payment", "", "p4", 1, "", "CREATED", "pending")
	publish(t, js, true, p4) // 12
	events = append(events, p4)

	// The first run stores batches of 3 and crashes after committing the second,
	// before acknowledging it.
	crash := errors.New("crash before ack")
	c := start(t, js, db.writer, io.Discard, func(batch int) error {
		if batch == 2 {
			return crash
		}
		return nil
	}, "--batch", "3")
	if err := c.wait(t); !errors.Is(err, crash) {
		t.Fatalf("first run ended with %v, want the crash", err)
	}
	pool := connect(t, db.owner)
	if n := len(stored(t, pool)); n != 6 {
		t.Fatalf("%d events stored before the restart, want the 6 of two batches", n)
	}

	// The restart gets the unacknowledged batch again, then the rest; a second
	// consumer replays the whole stream into the same tables.
	c = start(t, js, db.writer, io.Discard, nil, "--batch", "3")
	ci := waitDrained(t, js, "audit-trail")
	c.stop(t)
	if ci.Delivered.Stream != 12 {
		t.Errorf("consumer at stream sequence %d, want 12", ci.Delivered.Stream)
	}
	c = start(t, js, db.writer, io.Discard, nil, "--consumer", "audit-replay")
	waitDrained(t, js, "audit-replay")
	c.stop(t)

	got := stored(t, pool)
	if len(got) != len(events) {
		t.Errorf("%d events stored, want %d", len(got), len(events))
	}
	for _, e := range events {
		back, err := event.Decode(got[e.ID])
		if err != nil || back.ID != e.ID || back.Data.Sequence != e.Data.Sequence || back.Data.Amount.Text() != "110.270000" {
			t.Errorf("stored event %s (%s %s seq %d) decodes to %+v, %v", e.ID, e.Data.Kind, e.Data.ID, e.Data.Sequence, back, err)
		}
	}
	dead := deadReasons(t, pool)
	if len(dead) != 3 || !strings.HasPrefix(dead[9], "duplicate of the event stored at stream sequence 2") ||
		!strings.HasPrefix(dead[10], "duplicate of the event stored at stream sequence 5") || !strings.HasPrefix(dead[11], "not a watcher event") {
		t.Errorf("dead letters %v, want the two repeats and the message that is not an event", dead)
	}
	var seq, pos int64
	var parent *string
	var received time.Time
	err := pool.QueryRow(t.Context(), "SELECT stream_seq, chain_pos, parent_id, received_at FROM audit_events WHERE event_id = $1", events[5].ID).
		Scan(&seq, &pos, &parent, &received)
	if err != nil {
		t.Fatal(err)
	}
	if seq != 6 || pos != 6 || parent == nil || *parent != "p1" || time.Since(received) > time.Minute {
		t.Errorf("row of %s: stream_seq %d chain_pos %d parent %v received %s", events[5].ID, seq, pos, parent, received)
	}

	out, err := runVerifyCmd(t, natsURL, db.writer)
	if err != nil || !strings.Contains(out, "ok: 9 events in 1 chains, 3 dead letters; stream sequences 1-12") {
		t.Errorf("verify: %v\n%s", err, out)
	}
}

func TestTrailIsAppendOnly(t *testing.T) {
	_, js := runNATS(t)
	db := newDatabase(t)
	publish(t, js, true, ev("payment", "", "p1", 1, "", "CREATED", "pending"))
	if _, err := js.Publish(t.Context(), "payments.cpn.payment.failed", []byte("not an event")); err != nil {
		t.Fatal(err)
	}
	c := start(t, js, db.writer, io.Discard, nil)
	waitDrained(t, js, "audit-trail")
	c.stop(t)

	writer, owner := connect(t, db.writer), connect(t, db.owner)
	for _, table := range tables {
		for _, q := range []string{"UPDATE " + table + " SET received_at = now()", "DELETE FROM " + table, "TRUNCATE " + table} {
			if _, err := writer.Exec(t.Context(), q); !isCode(err, "42501") || !strings.Contains(err.Error(), "permission denied") {
				t.Errorf("writer %q: %v, want permission denied", q, err)
			}
			if _, err := owner.Exec(t.Context(), q); !isCode(err, "42501") || !strings.Contains(err.Error(), "append-only") {
				t.Errorf("owner %q: %v, want the append-only trigger's refusal", q, err)
			}
		}
	}
	var n int
	if err := owner.QueryRow(t.Context(), "SELECT (SELECT count(*) FROM audit_events) + (SELECT count(*) FROM audit_dead_letters)").Scan(&n); err != nil || n != 2 {
		t.Errorf("%d rows left, %v; want both", n, err)
	}
	// audit-trail refuses to store events as a role that could rewrite them.
	pool, err := openDB(t.Context(), db.owner)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := checkWriter(t.Context(), pool); err == nil || !strings.Contains(err.Error(), "may UPDATE audit_events") {
		t.Errorf("checkWriter as the owner: %v", err)
	}
}

func isCode(err error, code string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == code
}

// tamper runs q as the owner with the append-only trigger of table disabled, as
// someone holding the owner's credentials could.
func tamper(t *testing.T, owner *pgxpool.Pool, table, q string, args ...any) {
	t.Helper()
	trigger := table + "_append_only"
	for _, stmt := range []string{"ALTER TABLE " + table + " DISABLE TRIGGER " + trigger, q, "ALTER TABLE " + table + " ENABLE TRIGGER " + trigger} {
		var a []any
		if stmt == q {
			a = args
		}
		if tag, err := owner.Exec(t.Context(), stmt, a...); err != nil || (stmt == q && tag.RowsAffected() != 1) {
			t.Fatalf("%s: %v %v", stmt, tag, err)
		}
	}
}

func TestVerifyNamesTamperedRows(t *testing.T) {
	natsURL, js := runNATS(t)
	db := newDatabase(t)
	var events []event.Event
	for i := range 4 {
		id := fmt.Sprintf("p%d", i)
		events = append(events, ev("payment", "", id, 1, "", "CREATED", "pending"),
			ev("payment", "", id, 2, "CREATED", "CRYPTO_FUNDS_PENDING", "pending"),
			ev("payment", "", id, 3, "CRYPTO_FUNDS_PENDING", "COMPLETED", "completed"))
	}
	publish(t, js, true, events...) // p0 at stream sequences 1-3, p1 at 4-6, p2 at 7-9, p3 at 10-12
	c := start(t, js, db.writer, io.Discard, nil)
	waitDrained(t, js, "audit-trail")
	c.stop(t)
	if out, err := runVerifyCmd(t, natsURL, db.writer); err != nil {
		t.Fatalf("verify before tampering: %v\n%s", err, out)
	}

	owner := connect(t, db.owner)
	// A column changed: the row no longer agrees with its hashed body.
	tamper(t, owner, "audit_events", "UPDATE audit_events SET state = 'failed', status = 'FAILED' WHERE stream_seq = 5")
	// A body rewritten with a hash recomputed to match: the next row's link breaks.
	forged := bytes.Replace(mustBody(t, owner, 8), []byte(`"110.270000"`), []byte(`"1.000000"`), 1)
	var prev []byte
	var received time.Time
	if err := owner.QueryRow(t.Context(), "SELECT prev_hash, received_at FROM audit_events WHERE stream_seq = 8").Scan(&prev, &received); err != nil {
		t.Fatal(err)
	}
	tamper(t, owner, "audit_events", "UPDATE audit_events SET body = $1, event = $2::jsonb, hash = $3 WHERE stream_seq = 8",
		forged, string(forged), rowHash(prev, 8, received, forged))
	// A row deleted: p3's second transition.
	tamper(t, owner, "audit_events", "DELETE FROM audit_events WHERE stream_seq = 11")

	out, err := runVerifyCmd(t, natsURL, db.writer)
	if err == nil || !strings.Contains(err.Error(), "problems") {
		t.Fatalf("verify after tampering: %v, want problems\n%s", err, out)
	}
	for _, want := range []string{
		`FAIL audit_events source cpn stream sequence 5: column state is "failed" but the hashed body says "pending"`,
		`FAIL audit_events source cpn stream sequence 5: column status is "FAILED" but the hashed body says "CRYPTO_FUNDS_PENDING"`,
		"FAIL audit_events source cpn stream sequence 9: prev_hash does not match the hash of chain position 8",
		"FAIL audit_events source cpn stream sequence 12: chain position 12 follows 10",
		"FAIL audit_events stream sequence 11: stream sequence 11 is missing from the trail",
		"FAIL audit_events source cpn stream sequence 12: payment p3: item sequences 2-2 are missing before sequence 3",
		"FAIL audit_events source cpn stream sequence 12: prev_hash does not match the hash of chain position 10",
		"7 problems: 11 events in 1 chains",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("verify output lacks %q:\n%s", want, out)
		}
	}
	for _, untouched := range []string{"stream sequence 4:", "stream sequence 8:", "stream sequence 10:"} {
		if strings.Contains(out, untouched) {
			t.Errorf("verify blames an untouched row (%s):\n%s", untouched, out)
		}
	}
}

func mustBody(t *testing.T, pool *pgxpool.Pool, seq int) []byte {
	t.Helper()
	var body []byte
	if err := pool.QueryRow(t.Context(), "SELECT body FROM audit_events WHERE stream_seq = $1", seq).Scan(&body); err != nil {
		t.Fatal(err)
	}
	return body
}

func TestRefusedEventsAreDeadLettered(t *testing.T) {
	natsURL, js := runNATS(t)
	db := newDatabase(t)
	nul := ev("payment", "", "p1", 2, "CREATED", "FAILED", "failed")
	nul.Data.Item = json.RawMessage(`{"id":"p1","note":"a\u0000b"}`)
	noItem := ev("payment", "", "p2", 1, "", "CREATED", "pending")
	noItem.Data.ID, noItem.ID = "", "no-item-id"
	publish(t, js, true,
		ev("payment", "", "p1", 1, "", "CREATED", "pending"), // 1
		nul,    // 2: jsonb refuses \u0000
		noItem, // 3: item_id is NOT NULL
		ev("payment", "", "p1", 3, "FAILED", "FAILED", "failed"), // 4
	)
	c := start(t, js, db.writer, io.Discard, nil, "--batch", "10")
	waitDrained(t, js, "audit-trail")
	c.stop(t)
	pool := connect(t, db.owner)
	dead := deadReasons(t, pool)
	if len(dead) != 2 || !strings.Contains(dead[2], "refused by the database") || !strings.Contains(dead[2], "22P05") ||
		!strings.Contains(dead[3], "refused by the database") || !strings.Contains(dead[3], "item_id") {
		t.Errorf("dead letters %v, want the NUL and the missing item id with their reasons", dead)
	}
	var body []byte
	if err := pool.QueryRow(t.Context(), "SELECT body FROM audit_dead_letters WHERE stream_seq = 2").Scan(&body); err != nil || !bytes.Contains(body, []byte(`\u0000`)) {
		t.Errorf("dead letter body %s, %v; want the message as received", body, err)
	}
	if n := len(stored(t, pool)); n != 2 {
		t.Errorf("%d events stored, want 2", n)
	}
	out, err := runVerifyCmd(t, natsURL, db.writer)
	if err != nil || !strings.Contains(out, "ok: 2 events in 1 chains, 2 dead letters") || !strings.Contains(out, "(kept in audit_dead_letters)") {
		t.Errorf("verify: %v\n%s", err, out)
	}
}

// TestChaosFeedVerifies feeds interleaved events of several sources, some published
// twice, to a consumer that crashes mid-stream between a commit and its acks; it is
// restarted next to a second consumer on the same durable, with an ack wait short
// enough to cause redeliveries. The trail must still verify.
func TestChaosFeedVerifies(t *testing.T) {
	natsURL, js := runNATS(t)
	db := newDatabase(t)
	var feed []event.Event
	for step := uint32(1); step <= 3; step++ {
		for _, source := range []string{"cpn", "ramp", "coindirect"} {
			for i := range 12 {
				e := ev("payment", "", fmt.Sprintf("%s-%d", source, i), step, "", "CREATED", "pending")
				if step > 1 {
					e = ev("payment", "", fmt.Sprintf("%s-%d", source, i), step, "S"+strconv.Itoa(int(step)-1), "S"+strconv.Itoa(int(step)), "pending")
				}
				e.Data.Source, e.Source = source, "watcher/"+source
				e.ID = event.ID(source, "payment", "", e.Data.ID, step, e.Data.Previous, e.Data.Current)
				feed = append(feed, e)
			}
		}
	}
	crash := errors.New("crash before ack")
	c1 := start(t, js, db.writer, io.Discard, func(batch int) error {
		if batch == 3 {
			return crash
		}
		return nil
	}, "--batch", "7", "--ack-wait", "300ms")
	var c2 *consumer
	for i, e := range feed {
		publish(t, js, true, e)
		if i%9 == 0 {
			publish(t, js, false, e) // a repeat the duplicate window did not catch
		}
		if i == len(feed)/2 {
			if err := c1.wait(t); !errors.Is(err, crash) {
				t.Fatalf("first consumer ended with %v, want the crash", err)
			}
			// The restarted consumer and a second one share the durable from here on.
			c1 = start(t, js, db.writer, io.Discard, nil, "--batch", "7", "--ack-wait", "300ms")
			c2 = start(t, js, db.writer, io.Discard, nil, "--batch", "5", "--ack-wait", "300ms")
		}
	}
	waitDrained(t, js, "audit-trail")
	c1.stop(t)
	c2.stop(t)

	out, err := runVerifyCmd(t, natsURL, db.writer)
	repeats := (len(feed) + 8) / 9
	want := fmt.Sprintf("ok: %d events in 3 chains, %d dead letters; stream sequences 1-%d", len(feed), repeats, len(feed)+repeats)
	if err != nil || !strings.Contains(out, want) {
		t.Errorf("verify: %v, want %q\n%s", err, want, out)
	}
}

func TestHistory(t *testing.T) {
	natsURL, js := runNATS(t)
	db := newDatabase(t)
	// Out of order on purpose: the history is by sequence, not by arrival.
	publish(t, js, true,
		ev("payment", "", "p1", 3, "CRYPTO_FUNDS_PENDING", "FAILED", "failed"),
		ev("payment_refund", "p1", "r1", 1, "", "CREATED", "pending"),
		ev("payment", "", "p1", 1, "", "CREATED", "pending"),
		ev("payment", "", "other", 1, "", "CREATED", "pending"),
		ev("payment_refund", "p1", "r1", 2, "CREATED", "COMPLETED", "completed"),
		ev("payment", "", "p1", 2, "CREATED", "CRYPTO_FUNDS_PENDING", "pending"),
	)
	env := map[string]string{"DATABASE_URL": db.writer, "NATS_URL": natsURL}
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

func TestSetupIsIdempotentAndRefusesWithoutIt(t *testing.T) {
	db := newDatabase(t)
	var out bytes.Buffer
	none := func(string) (string, bool) { return "", false }
	if err := run(t.Context(), []string{"setup", "--dsn", db.owner, "--writer", db.writerRole}, none, &out, io.Discard); err != nil {
		t.Fatalf("second setup: %v", err)
	}
	if !strings.Contains(out.String(), db.writerRole+" may INSERT and SELECT only") {
		t.Errorf("setup printed %q", out.String())
	}
	owner := connect(t, db.owner)
	if _, err := owner.Exec(t.Context(), "DROP TABLE audit_dead_letters"); err != nil {
		t.Fatal(err)
	}
	pool := connect(t, db.writer)
	if err := checkWriter(t.Context(), pool); err == nil || !strings.Contains(err.Error(), "audit_dead_letters does not exist: run `audit-trail setup") {
		t.Errorf("checkWriter without the tables: %v", err)
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
	if _, err := parseOptions([]string{"setup", "--dsn", "postgres:///x"}, none, io.Discard); err == nil || !strings.Contains(err.Error(), "--writer is required by setup") {
		t.Errorf("setup without --writer: %v", err)
	}
	o, err := parseOptions([]string{"--history", "cpn", "p1", "--dsn", "postgres:///x"}, none, io.Discard)
	if err != nil || o.historySource != "cpn" || o.historyID != "p1" || o.dsn != "postgres:///x" {
		t.Errorf("parseOptions = %+v, %v; want history cpn p1 and the dsn after it", o, err)
	}
	o, err = parseOptions([]string{"verify", "--dsn", "postgres:///x"}, none, io.Discard)
	if err != nil || o.command != "verify" {
		t.Errorf("parseOptions(verify) = %+v, %v", o, err)
	}
}
