// Package statetest is the behaviour every state back end must have, as a test suite:
// what the poller (poller.Store) and the publisher (publish.Outbox) rely on. Run it
// from a back end's tests with a function that opens a fresh, empty back end.
package statetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/state"
)

// Backend is what the suite exercises: the union of poller.Store and publish.Outbox.
// The suite passes each call the test's context, which is not cancelled while the
// test runs.
type Backend interface {
	Load(ctx context.Context, source string, ids []string) (map[string]*diff.Record, error)
	Commit(ctx context.Context, source string, b state.Batch) error
	Meta(ctx context.Context, source string) (state.Meta, error)
	OpenItems(ctx context.Context, source string) ([]state.OpenItem, error)
	OutboxStats(ctx context.Context) (n int, oldest time.Time, err error)
	ForEach(ctx context.Context, source string, fn func(diff.Record) error) error
	Forget(ctx context.Context, source string, ids []string) error

	Pending(ctx context.Context, after uint64, max int) ([]state.OutboxEntry, error)
	Delete(ctx context.Context, seqs []uint64) error
	Ack(ctx context.Context, acks []state.Ack, limit int64) (state.Retention, error)
	RetainedBytes(ctx context.Context) (int64, error)
	Retained(ctx context.Context, after uint64, max int) ([]state.AckedEntry, error)
	Prune(ctx context.Context, cutoff time.Time) (int, time.Time, error)
	Changed() <-chan struct{}
}

// Run runs the suite; open must return a fresh, empty back end for each subtest.
func Run(t *testing.T, open func(t *testing.T) Backend) {
	t.Run("EmptySource", func(t *testing.T) { emptySource(t, open(t)) })
	t.Run("CommitLoad", func(t *testing.T) { commitLoad(t, open(t)) })
	t.Run("OpenIndex", func(t *testing.T) { openIndex(t, open(t)) })
	t.Run("ReadTimes", func(t *testing.T) { readTimes(t, open(t)) })
	t.Run("Forget", func(t *testing.T) { forget(t, open(t)) })
	t.Run("SourcesApart", func(t *testing.T) { sourcesApart(t, open(t)) })
	t.Run("BadBatch", func(t *testing.T) { badBatch(t, open(t)) })
	t.Run("Outbox", func(t *testing.T) { outbox(t, open(t)) })
	t.Run("AckRetainPrune", func(t *testing.T) { ackRetainPrune(t, open(t)) })
	t.Run("RetainLimit", func(t *testing.T) { retainLimit(t, open(t)) })
}

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// record returns a record of id: open (pending) unless terminal.
func record(id string, seq uint32, terminal bool, created time.Time) diff.Record {
	st := diff.Status{Raw: "pending", State: diff.Pending}
	if terminal {
		st = diff.Status{Raw: "complete", State: diff.Completed, Terminal: true}
	}
	return diff.Record{Kind: "payment", ID: id, Status: st, Sequence: seq, CreatedAt: created}
}

func message(id string) event.Message {
	return event.Message{ID: id, Subject: "payments.src.payment.pending", Body: fmt.Appendf(nil, `{"id":%q}`, id)}
}

// The helpers below make one call each and end the test, naming the call, on an error:
// a back end that fails must not pass for one that returns nothing.

func must(t *testing.T, err error, call string, args ...any) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", fmt.Sprintf(call, args...), err)
	}
}

func load(t *testing.T, b Backend, source string, ids ...string) map[string]*diff.Record {
	t.Helper()
	got, err := b.Load(t.Context(), source, ids)
	must(t, err, "Load(%q, %q)", source, ids)
	return got
}

func commit(t *testing.T, b Backend, source string, batch state.Batch) {
	t.Helper()
	must(t, b.Commit(t.Context(), source, batch), "Commit(%q, %d records, %d messages)", source, len(batch.Records), len(batch.Messages))
}

func meta(t *testing.T, b Backend, source string) state.Meta {
	t.Helper()
	m, err := b.Meta(t.Context(), source)
	must(t, err, "Meta(%q)", source)
	return m
}

func openItems(t *testing.T, b Backend, source string) []state.OpenItem {
	t.Helper()
	open, err := b.OpenItems(t.Context(), source)
	must(t, err, "OpenItems(%q)", source)
	return open
}

func outboxStats(t *testing.T, b Backend) (int, time.Time) {
	t.Helper()
	n, oldest, err := b.OutboxStats(t.Context())
	must(t, err, "OutboxStats()")
	return n, oldest
}

func ids(t *testing.T, b Backend, source string) []string {
	t.Helper()
	var out []string
	err := b.ForEach(t.Context(), source, func(r diff.Record) error {
		out = append(out, r.ID)
		return nil
	})
	must(t, err, "ForEach(%q)", source)
	return out
}

func pending(t *testing.T, b Backend, after uint64, max int) []state.OutboxEntry {
	t.Helper()
	p, err := b.Pending(t.Context(), after, max)
	must(t, err, "Pending(%d, %d)", after, max)
	return p
}

func retained(t *testing.T, b Backend, after uint64, max int) []state.AckedEntry {
	t.Helper()
	r, err := b.Retained(t.Context(), after, max)
	must(t, err, "Retained(%d, %d)", after, max)
	return r
}

func deleteSeqs(t *testing.T, b Backend, seqs ...uint64) {
	t.Helper()
	must(t, b.Delete(t.Context(), seqs), "Delete(%v)", seqs)
}

func ack(t *testing.T, b Backend, acks ...state.Ack) {
	t.Helper()
	_, err := b.Ack(t.Context(), acks, 0)
	must(t, err, "Ack(%+v)", acks)
}

func prune(t *testing.T, b Backend, cutoff time.Time) (int, time.Time) {
	t.Helper()
	n, next, err := b.Prune(t.Context(), cutoff)
	must(t, err, "Prune(%v)", cutoff)
	return n, next
}

func emptySource(t *testing.T, b Backend) {
	if m := meta(t, b, "none"); m != (state.Meta{}) {
		t.Errorf("Meta of a new source = %+v, want zero", m)
	}
	if got := load(t, b, "none", "a", "b"); len(got) != 0 {
		t.Errorf("Load of a new source = %v, want nothing", got)
	}
	if open := openItems(t, b, "none"); len(open) != 0 {
		t.Errorf("OpenItems of a new source = %v, want none", open)
	}
	if got := ids(t, b, "none"); len(got) != 0 {
		t.Errorf("ForEach of a new source visited %v", got)
	}
	if n, oldest := outboxStats(t, b); n != 0 || !oldest.IsZero() {
		t.Errorf("OutboxStats of a new store = %d %v, want 0 and the zero time", n, oldest)
	}
	if p := pending(t, b, 0, 10); len(p) != 0 {
		t.Errorf("Pending of a new store = %v", p)
	}
}

func commitLoad(t *testing.T, b Backend) {
	recs := []diff.Record{record("b", 1, false, t0), record("a", 2, true, t0.Add(time.Second))}
	recs[1].Nested = []diff.NestedRecord{{Kind: "refund", ID: "r1", Sequence: 1,
		Status: diff.Status{Raw: "pending", State: diff.Pending}}}
	want := state.Meta{BaselineDone: true, HighWater: t0.Add(time.Hour), LastPoll: t0.Add(2 * time.Hour)}
	load(t, b, "src", "a", "b", "c")
	meta(t, b, "src")
	commit(t, b, "src", state.Batch{Now: t0, Records: recs, Meta: &want})

	got := load(t, b, "src", "a", "b", "c")
	if len(got) != 2 || !reflect.DeepEqual(*got["a"], recs[1]) || !reflect.DeepEqual(*got["b"], recs[0]) {
		t.Errorf("Load = %+v, want %+v", got, recs)
	}
	if _, ok := got["c"]; ok {
		t.Error("Load returned a record never committed")
	}
	if got := ids(t, b, "src"); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("ForEach visited %v, want [a b] in id order", got)
	}
	if m := meta(t, b, "src"); m != want {
		t.Errorf("Meta = %+v, want %+v", m, want)
	}

	// A second commit replaces a record and the metadata.
	upd := record("b", 2, true, t0)
	want.LastPoll = t0.Add(3 * time.Hour)
	commit(t, b, "src", state.Batch{Now: t0, Records: []diff.Record{upd}, Meta: &want})
	got = load(t, b, "src", "b")
	if got["b"] == nil || !reflect.DeepEqual(*got["b"], upd) {
		t.Errorf("after update Load = %+v, want %+v", got["b"], upd)
	}
	if m := meta(t, b, "src"); m != want {
		t.Errorf("after update Meta = %+v, want %+v", m, want)
	}

	// An error from ForEach's function stops the walk and comes back as is.
	stop := errors.New("stop")
	n := 0
	err := b.ForEach(t.Context(), "src", func(diff.Record) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("ForEach with a failing function: %d calls, err %v; want 1 call and that error", n, err)
	}
}

func openIndex(t *testing.T, b Backend) {
	settling := record("settling", 2, true, t0.Add(-time.Hour))
	settling.SettleUntil = t0.Add(time.Hour)
	stalled := record("stalled", 1, false, t0)
	stalled.Stalled = true
	recs := []diff.Record{
		record("late", 1, false, t0.Add(time.Minute)),
		record("early-b", 1, false, t0),
		record("early-a", 1, false, t0),
		record("done", 2, true, t0),
		settling, stalled,
	}
	commit(t, b, "src", state.Batch{Now: t0, Records: recs})
	open := openItems(t, b, "src")
	want := []state.OpenItem{
		{ID: "settling", CreatedAt: t0.Add(-time.Hour), LastRead: t0},
		{ID: "early-a", CreatedAt: t0, State: diff.Pending, LastRead: t0},
		{ID: "early-b", CreatedAt: t0, State: diff.Pending, LastRead: t0},
		{ID: "late", CreatedAt: t0.Add(time.Minute), State: diff.Pending, LastRead: t0},
	}
	if !reflect.DeepEqual(open, want) {
		t.Errorf("OpenItems = %+v, want %+v (oldest first, then by id; final and stalled left out; read at Now)", open, want)
	}

	// An item that turns final leaves the index; one committed after its settle
	// window leaves it too.
	load(t, b, "src", "late", "settling")
	commit(t, b, "src", state.Batch{Now: t0.Add(2 * time.Hour), Records: []diff.Record{record("late", 2, true, t0.Add(time.Minute)), settling}})
	open = openItems(t, b, "src")
	if len(open) != 2 || open[0].ID != "early-a" || open[1].ID != "early-b" {
		t.Errorf("OpenItems after closing = %+v, want early-a and early-b", open)
	}
}

// forget: Forget removes the given records of the source and their open index
// entries, ignores ids it does not hold, and leaves every other record and other
// sources alone; a forgotten id committed again is stored anew.
func forget(t *testing.T, b Backend) {
	stalled := record("stalled", 1, false, t0)
	stalled.Stalled = true
	commit(t, b, "src", state.Batch{Now: t0, Records: []diff.Record{
		record("open", 1, false, t0),
		record("kept-open", 1, false, t0),
		record("done", 2, true, t0),
		record("kept-done", 2, true, t0),
		stalled,
	}})
	commit(t, b, "other", state.Batch{Now: t0, Records: []diff.Record{record("done", 2, true, t0)}})

	must(t, b.Forget(t.Context(), "src", []string{"open", "done", "stalled", "unknown"}), "Forget(src)")
	if got, want := ids(t, b, "src"), []string{"kept-done", "kept-open"}; !slices.Equal(got, want) {
		t.Errorf("records of src after Forget = %q, want %q", got, want)
	}
	if got := load(t, b, "src", "open", "done", "stalled"); len(got) != 0 {
		t.Errorf("Load of forgotten ids = %v, want none", got)
	}
	if open := openItems(t, b, "src"); len(open) != 1 || open[0].ID != "kept-open" {
		t.Errorf("OpenItems(src) after Forget = %+v, want kept-open alone", open)
	}
	if got := ids(t, b, "other"); !slices.Equal(got, []string{"done"}) {
		t.Errorf("records of other after Forget on src = %q, want [done]", got)
	}
	must(t, b.Forget(t.Context(), "never-committed", []string{"x"}), "Forget(never-committed)")
	must(t, b.Forget(t.Context(), "src", nil), "Forget(src, no ids)")

	// Seen again, a forgotten item is stored as new.
	if got := load(t, b, "src", "open"); len(got) != 0 {
		t.Fatalf("Load(open) = %v, want nothing", got)
	}
	commit(t, b, "src", state.Batch{Now: t0.Add(time.Minute), Records: []diff.Record{record("open", 1, false, t0)}})
	if got := load(t, b, "src", "open"); got["open"] == nil || got["open"].Sequence != 1 {
		t.Errorf("Load(open) after committing it again = %v, want its record", got)
	}
	if open := openItems(t, b, "src"); len(open) != 2 {
		t.Errorf("OpenItems(src) after committing a forgotten item again = %+v, want kept-open and open", open)
	}
}

// lastReads returns the read time of each open item of source.
func lastReads(t *testing.T, b Backend, source string) map[string]time.Time {
	t.Helper()
	out := map[string]time.Time{}
	for _, it := range openItems(t, b, source) {
		out[it.ID] = it.LastRead
	}
	return out
}

// readTimes checks Batch.Reads and the read times of records: a record is read at the
// batch's Now; Reads set the read time of an item in the open index, never move it
// back, and never add an entry (an unknown, final or stalled item) or bring one back.
func readTimes(t *testing.T, b Backend) {
	stalled := record("stalled", 1, false, t0)
	stalled.Stalled = true
	commit(t, b, "src", state.Batch{Now: t0, Records: []diff.Record{
		record("a", 1, false, t0), record("b", 1, false, t0), record("c", 1, false, t0),
		record("done", 2, true, t0), stalled,
	}})
	want := map[string]time.Time{"a": t0, "b": t0, "c": t0}
	if got := lastReads(t, b, "src"); !reflect.DeepEqual(got, want) {
		t.Errorf("read times after committing records at %v = %v, want %v", t0, got, want)
	}

	// Reads alone: a and b are read later; unknown, final and stalled ids are ignored;
	// another source's entry of the same id is not touched.
	commit(t, b, "other", state.Batch{Now: t0, Records: []diff.Record{record("a", 1, false, t0)}})
	t1, t2 := t0.Add(time.Minute), t0.Add(2*time.Minute)
	commit(t, b, "src", state.Batch{Reads: map[string]time.Time{
		"a": t1, "b": t2, "unknown": t2, "done": t2, "stalled": t2, "": t2,
	}})
	want = map[string]time.Time{"a": t1, "b": t2, "c": t0}
	if got := lastReads(t, b, "src"); !reflect.DeepEqual(got, want) {
		t.Errorf("read times after Reads = %v, want %v (unknown, final and stalled ids ignored)", got, want)
	}
	if got := lastReads(t, b, "other"); !reflect.DeepEqual(got, map[string]time.Time{"a": t0}) {
		t.Errorf("read times of another source after Reads = %v, want a at %v", got, t0)
	}
	if got := load(t, b, "src", "unknown"); len(got) != 0 {
		t.Errorf("Reads of an unknown id stored a record: %+v", got)
	}

	// A read time never moves back, and a zero one changes nothing; Reads come with
	// metadata too.
	m := state.Meta{BaselineDone: true, LastPoll: t2}
	meta(t, b, "src")
	commit(t, b, "src", state.Batch{Now: t2, Meta: &m, Reads: map[string]time.Time{"a": t0, "b": t1, "c": {}}})
	if got := lastReads(t, b, "src"); !reflect.DeepEqual(got, want) {
		t.Errorf("read times after earlier Reads = %v, want %v (never moved back)", got, want)
	}
	if got := meta(t, b, "src"); got != m {
		t.Errorf("Meta committed with Reads = %+v, want %+v", got, m)
	}

	// A record in the batch is read at Now; a Read of it in the same batch keeps the
	// later time. A record that closes leaves the index even though Reads name it, in
	// the same batch or a later one.
	t3 := t0.Add(3 * time.Minute)
	load(t, b, "src", "a", "b", "c")
	commit(t, b, "src", state.Batch{Now: t3, Records: []diff.Record{record("a", 2, false, t0), record("c", 2, true, t0)},
		Reads: map[string]time.Time{"a": t3.Add(time.Second), "c": t3}})
	want = map[string]time.Time{"a": t3.Add(time.Second), "b": t2}
	if got := lastReads(t, b, "src"); !reflect.DeepEqual(got, want) {
		t.Errorf("read times after a batch of records and Reads = %v, want %v (c closed)", got, want)
	}
	load(t, b, "src", "b")
	commit(t, b, "src", state.Batch{Now: t3, Records: []diff.Record{record("b", 2, true, t0)}})
	commit(t, b, "src", state.Batch{Reads: map[string]time.Time{"b": t3.Add(time.Hour), "c": t3.Add(time.Hour)}})
	want = map[string]time.Time{"a": t3.Add(time.Second)}
	if got := lastReads(t, b, "src"); !reflect.DeepEqual(got, want) {
		t.Errorf("read times after b closed and Reads named it = %v, want %v (no entry brought back)", got, want)
	}
	// The entry read later keeps its creation time and state.
	if open := openItems(t, b, "src"); len(open) != 1 || open[0].State != diff.Pending || !open[0].CreatedAt.Equal(t0) {
		t.Errorf("OpenItems = %+v, want a, pending, created at %v", open, t0)
	}
}

func sourcesApart(t *testing.T, b Backend) {
	commit(t, b, "one", state.Batch{Now: t0, Records: []diff.Record{record("x", 1, false, t0)}, Meta: &state.Meta{BaselineDone: true}})
	commit(t, b, "two", state.Batch{Now: t0, Records: []diff.Record{record("x", 3, true, t0)}})
	one, two := load(t, b, "one", "x"), load(t, b, "two", "x")
	if one["x"] == nil || two["x"] == nil || one["x"].Sequence != 1 || two["x"].Sequence != 3 {
		t.Errorf("same id in two sources: %+v and %+v", one["x"], two["x"])
	}
	if m := meta(t, b, "two"); m.BaselineDone {
		t.Error("meta of one source shows in another")
	}
	if open := openItems(t, b, "two"); len(open) != 0 {
		t.Errorf("open items of source two = %v, want none", open)
	}
	// Ids with characters outside any key alphabet, and a source whose name prefixes
	// another's, stay apart.
	odd := record("id with spaces/ünï.côdé*>", 1, false, t0)
	commit(t, b, "on", state.Batch{Now: t0, Records: []diff.Record{odd}})
	if got := load(t, b, "on", odd.ID); got[odd.ID] == nil || got[odd.ID].ID != odd.ID {
		t.Errorf("Load of an odd id = %+v", got)
	}
	if got := ids(t, b, "one"); !slices.Equal(got, []string{"x"}) {
		t.Errorf("ForEach of source one visited %v, want [x]", got)
	}
}

func badBatch(t *testing.T, b Backend) {
	cases := []struct {
		name   string
		source string
		batch  state.Batch
	}{
		{"empty source", "", state.Batch{Now: t0, Records: []diff.Record{record("a", 1, false, t0)}}},
		{"no now", "src", state.Batch{Messages: []event.Message{message("e1")}}},
		{"empty id", "src", state.Batch{Now: t0, Records: []diff.Record{record("a", 1, false, t0), record("", 1, false, t0)}, Messages: []event.Message{message("e1")}}},
		{"sequence 0", "src", state.Batch{Now: t0, Records: []diff.Record{record("a", 0, false, t0)}}},
	}
	for _, c := range cases {
		if err := b.Commit(t.Context(), c.source, c.batch); err == nil {
			t.Errorf("%s: Commit succeeded", c.name)
		}
	}
	got := load(t, b, "src", "a")
	if n, _ := outboxStats(t, b); len(got) != 0 || n != 0 {
		t.Errorf("rejected batches left %d records and %d outbox entries", len(got), n)
	}
}

func pendingIDs(t *testing.T, b Backend) ([]string, []uint64) {
	t.Helper()
	var names []string
	var seqs []uint64
	var after uint64
	for {
		p := pending(t, b, after, 2)
		if len(p) == 0 {
			return names, seqs
		}
		if len(p) > 2 {
			t.Fatalf("Pending(%d, 2) returned %d entries", after, len(p))
		}
		for _, e := range p {
			if e.Seq <= after {
				t.Fatalf("Pending(%d, …) returned Seq %d", after, e.Seq)
			}
			names = append(names, e.Msg.ID)
			seqs = append(seqs, e.Seq)
			after = e.Seq
		}
	}
}

func outbox(t *testing.T, b Backend) {
	select { // drain a signal left by an earlier commit
	case <-b.Changed():
	default:
	}
	commit(t, b, "src", state.Batch{Now: t0, Messages: []event.Message{message("e1"), message("e2"), message("e3")}})
	select {
	case <-b.Changed():
	default:
		t.Error("Changed was not signalled after a commit with messages")
	}
	commit(t, b, "other", state.Batch{Now: t0.Add(time.Minute), Messages: []event.Message{message("e4"), message("e5")}})
	names, seqs := pendingIDs(t, b)
	if !slices.Equal(names, []string{"e1", "e2", "e3", "e4", "e5"}) {
		t.Fatalf("Pending in pages of 2 = %v, want e1..e5 in commit order", names)
	}
	if p := pending(t, b, 0, 1); len(p) != 1 {
		t.Errorf("Pending(0, 1) = %+v, want e1", p)
	} else if p[0].Enqueued != t0 || p[0].Msg.Subject != "payments.src.payment.pending" || string(p[0].Msg.Body) != `{"id":"e1"}` {
		t.Errorf("first entry = %+v", p[0])
	}
	if n, oldest := outboxStats(t, b); n != 5 || !oldest.Equal(t0) {
		t.Errorf("OutboxStats = %d %v, want 5 %v", n, oldest, t0)
	}
	if _, err := b.Pending(t.Context(), 0, 0); err == nil {
		t.Error("Pending with max 0 succeeded")
	}

	deleteSeqs(t, b, seqs[0], seqs[2], seqs[4]+1000)
	names, _ = pendingIDs(t, b)
	if !slices.Equal(names, []string{"e2", "e4", "e5"}) {
		t.Errorf("Pending after deleting e1, e3 and an unknown seq = %v", names)
	}
	if n, oldest := outboxStats(t, b); n != 3 || !oldest.Equal(t0) {
		t.Errorf("OutboxStats = %d %v, want 3 %v", n, oldest, t0)
	}
	deleteSeqs(t, b, seqs[1])
	if _, oldest := outboxStats(t, b); !oldest.Equal(t0.Add(time.Minute)) {
		t.Errorf("oldest after deleting src's entries = %v, want %v", oldest, t0.Add(time.Minute))
	}
}

func ackRetainPrune(t *testing.T, b Backend) {
	commit(t, b, "src", state.Batch{Now: t0, Messages: []event.Message{message("e1"), message("e2"), message("e3")}})
	_, seqs := pendingIDs(t, b)
	ack(t, b,
		state.Ack{Seq: seqs[0], At: t0.Add(time.Second), StreamSeq: 7},
		state.Ack{Seq: seqs[1], At: t0.Add(2 * time.Second), Duplicate: true},
		state.Ack{Seq: seqs[2] + 1000, At: t0},
	)
	names, _ := pendingIDs(t, b)
	if !slices.Equal(names, []string{"e3"}) {
		t.Errorf("Pending after acknowledging e1 and e2 = %v, want [e3]", names)
	}
	if n, _ := outboxStats(t, b); n != 1 {
		t.Errorf("OutboxStats counts %d, want 1 (retained entries are not pending)", n)
	}
	r := retained(t, b, 0, 10)
	if len(r) != 2 || r[0].Msg.ID != "e1" || r[0].StreamSeq != 7 || !r[0].Acked.Equal(t0.Add(time.Second)) ||
		r[1].Msg.ID != "e2" || !r[1].Duplicate || r[0].Seq != seqs[0] {
		t.Fatalf("Retained = %+v", r)
	}
	if r := retained(t, b, seqs[0], 10); len(r) != 1 || r[0].Msg.ID != "e2" {
		t.Errorf("Retained after e1 = %+v, want e2", r)
	}

	// Re-published: a new acknowledgement replaces the old, a duplicate one does not.
	ack(t, b,
		state.Ack{Seq: seqs[0], At: t0.Add(time.Hour), StreamSeq: 9, Duplicate: true},
		state.Ack{Seq: seqs[1], At: t0.Add(time.Hour), StreamSeq: 11},
	)
	r = retained(t, b, 0, 10)
	if len(r) != 2 || r[0].StreamSeq != 7 || r[1].StreamSeq != 11 || r[1].Duplicate {
		t.Errorf("Retained after re-acknowledging = %+v", r)
	}

	if pruned, next := prune(t, b, t0.Add(time.Minute)); pruned != 1 || !next.Equal(t0.Add(time.Hour)) {
		t.Errorf("Prune = %d %v, want 1 %v", pruned, next, t0.Add(time.Hour))
	}
	deleteSeqs(t, b, seqs[1])
	if r := retained(t, b, 0, 10); len(r) != 0 {
		t.Errorf("Retained after pruning and deleting = %+v", r)
	}
	if _, err := b.Retained(t.Context(), 0, 0); err == nil {
		t.Error("Retained with max 0 succeeded")
	}
}

// retainLimit checks the size limit of Ack: oldest (lowest Seq) entries go first and
// are counted, the size reported matches the entries left, Delete and Prune keep it
// up to date, and retained (compressed) messages read back as they were committed.
func retainLimit(t *testing.T, b Backend) {
	body := []byte(strings.Repeat(`{"type":"payment.completed","data":{"id":"0b8d3b7c"}}`, 30))
	msgs := make([]event.Message, 10)
	for i := range msgs {
		msgs[i] = event.Message{ID: fmt.Sprintf("e%d", i), Subject: "payments.src.payment", Body: body}
	}
	commit(t, b, "src", state.Batch{Now: t0, Messages: msgs})
	_, seqs := pendingIDs(t, b)
	acks := make([]state.Ack, len(seqs))
	for i, seq := range seqs {
		acks[i] = state.Ack{Seq: seq, At: t0.Add(time.Duration(i) * time.Second), StreamSeq: uint64(100 + i)}
	}
	r, err := b.Ack(t.Context(), acks[:4], 0)
	must(t, err, "Ack without a limit")
	if r.Capped != 0 || r.Bytes <= 0 {
		t.Fatalf("Ack without a limit = %+v", r)
	}
	each := r.Bytes / 4
	if each >= int64(len(body)) {
		t.Errorf("a retained entry takes %d bytes for a body of %d: not compressed", each, len(body))
	}
	got := retained(t, b, 0, 10)
	for i, e := range got {
		if e.Msg.ID != msgs[i].ID || e.Msg.Subject != msgs[i].Subject || !bytes.Equal(e.Msg.Body, body) || e.StreamSeq != uint64(100+i) {
			t.Fatalf("retained entry %d = %+v, want message %+v", i, e, msgs[i])
		}
	}

	// A limit of about 5 entries after 10 acknowledgements keeps the 5 newest.
	r, err = b.Ack(t.Context(), acks[4:], 5*each+each/2)
	must(t, err, "Ack with a limit")
	if r.Capped != 5 || r.Bytes > 5*each+each/2 {
		t.Errorf("Ack with a limit = %+v, want 5 capped and at most %d bytes", r, 5*each+each/2)
	}
	got = retained(t, b, 0, 20)
	if len(got) != 5 || got[0].Msg.ID != "e5" || got[4].Msg.ID != "e9" {
		t.Errorf("retained after the limit = %d entries from %v, want e5..e9", len(got), ackedIDs(got))
	}
	if n, err := b.RetainedBytes(t.Context()); err != nil || n != r.Bytes {
		t.Errorf("RetainedBytes = %d, %v, want %d", n, err, r.Bytes)
	}

	// Delete and Prune keep the size; a limit above it deletes nothing.
	deleteSeqs(t, b, seqs[5])
	prune(t, b, acks[7].At)
	r, err = b.Ack(t.Context(), nil, 1<<20)
	must(t, err, "Ack of nothing")
	if r.Capped != 0 || r.Bytes < 3*each-8 || r.Bytes > 3*each+8 {
		t.Errorf("after deleting e5 and pruning e6: %+v, want about %d bytes (3 entries)", r, 3*each)
	}
	prune(t, b, t0.Add(time.Hour))
	if n, err := b.RetainedBytes(t.Context()); err != nil || n != 0 {
		t.Errorf("RetainedBytes after pruning all = %d, %v, want 0", n, err)
	}
}

func ackedIDs(es []state.AckedEntry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Msg.ID
	}
	return out
}
