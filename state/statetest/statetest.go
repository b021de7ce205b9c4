// Package statetest is the behaviour every state back end must have, as a test suite:
// what the poller (poller.Store) and the publisher (publish.Outbox) rely on. Run it
// from a back end's tests with a function that opens a fresh, empty back end.
package statetest

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/state"
)

// Backend is what the suite exercises: the union of poller.Store and publish.Outbox.
type Backend interface {
	Load(source string, ids []string) (map[string]*diff.Record, error)
	Commit(source string, b state.Batch) error
	Meta(source string) (state.Meta, error)
	OpenItems(source string) ([]state.OpenItem, error)
	OutboxStats() (n int, oldest time.Time, err error)
	ForEach(source string, fn func(diff.Record) error) error

	Pending(after uint64, max int) ([]state.OutboxEntry, error)
	Delete(seqs []uint64) error
	Ack(acks []state.Ack) error
	Retained(after uint64, max int) ([]state.AckedEntry, error)
	Prune(cutoff time.Time) (int, time.Time, error)
	Changed() <-chan struct{}
}

// Run runs the suite; open must return a fresh, empty back end for each subtest.
func Run(t *testing.T, open func(t *testing.T) Backend) {
	t.Run("EmptySource", func(t *testing.T) { emptySource(t, open(t)) })
	t.Run("CommitLoad", func(t *testing.T) { commitLoad(t, open(t)) })
	t.Run("OpenIndex", func(t *testing.T) { openIndex(t, open(t)) })
	t.Run("SourcesApart", func(t *testing.T) { sourcesApart(t, open(t)) })
	t.Run("BadBatch", func(t *testing.T) { badBatch(t, open(t)) })
	t.Run("Outbox", func(t *testing.T) { outbox(t, open(t)) })
	t.Run("AckRetainPrune", func(t *testing.T) { ackRetainPrune(t, open(t)) })
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

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func ids(b Backend, t *testing.T, source string) []string {
	t.Helper()
	var out []string
	must(t, b.ForEach(source, func(r diff.Record) error {
		out = append(out, r.ID)
		return nil
	}))
	return out
}

func emptySource(t *testing.T, b Backend) {
	m, err := b.Meta("none")
	must(t, err)
	if m != (state.Meta{}) {
		t.Errorf("Meta of a new source = %+v, want zero", m)
	}
	got, err := b.Load("none", []string{"a", "b"})
	must(t, err)
	if len(got) != 0 {
		t.Errorf("Load of a new source = %v, want nothing", got)
	}
	open, err := b.OpenItems("none")
	must(t, err)
	if len(open) != 0 {
		t.Errorf("OpenItems of a new source = %v, want none", open)
	}
	if got := ids(b, t, "none"); len(got) != 0 {
		t.Errorf("ForEach of a new source visited %v", got)
	}
	n, oldest, err := b.OutboxStats()
	must(t, err)
	if n != 0 || !oldest.IsZero() {
		t.Errorf("OutboxStats of a new store = %d %v, want 0 and the zero time", n, oldest)
	}
	p, err := b.Pending(0, 10)
	must(t, err)
	if len(p) != 0 {
		t.Errorf("Pending of a new store = %v", p)
	}
}

func commitLoad(t *testing.T, b Backend) {
	recs := []diff.Record{record("b", 1, false, t0), record("a", 2, true, t0.Add(time.Second))}
	recs[1].Nested = []diff.NestedRecord{{Kind: "refund", ID: "r1", Sequence: 1,
		Status: diff.Status{Raw: "pending", State: diff.Pending}}}
	meta := state.Meta{BaselineDone: true, HighWater: t0.Add(time.Hour), LastPoll: t0.Add(2 * time.Hour)}
	_, err := b.Load("src", []string{"a", "b", "c"})
	must(t, err)
	_, err = b.Meta("src")
	must(t, err)
	must(t, b.Commit("src", state.Batch{Now: t0, Records: recs, Meta: &meta}))

	got, err := b.Load("src", []string{"a", "b", "c"})
	must(t, err)
	if len(got) != 2 || !reflect.DeepEqual(*got["a"], recs[1]) || !reflect.DeepEqual(*got["b"], recs[0]) {
		t.Errorf("Load = %+v, want %+v", got, recs)
	}
	if _, ok := got["c"]; ok {
		t.Error("Load returned a record never committed")
	}
	if got := ids(b, t, "src"); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("ForEach visited %v, want [a b] in id order", got)
	}
	m, err := b.Meta("src")
	must(t, err)
	if m != meta {
		t.Errorf("Meta = %+v, want %+v", m, meta)
	}

	// A second commit replaces a record and the metadata.
	upd := record("b", 2, true, t0)
	meta.LastPoll = t0.Add(3 * time.Hour)
	must(t, b.Commit("src", state.Batch{Now: t0, Records: []diff.Record{upd}, Meta: &meta}))
	got, err = b.Load("src", []string{"b"})
	must(t, err)
	if !reflect.DeepEqual(*got["b"], upd) {
		t.Errorf("after update Load = %+v, want %+v", *got["b"], upd)
	}
	if m, _ := b.Meta("src"); m != meta {
		t.Errorf("after update Meta = %+v, want %+v", m, meta)
	}

	// An error from ForEach's function stops the walk and comes back as is.
	stop := errors.New("stop")
	n := 0
	err = b.ForEach("src", func(diff.Record) error { n++; return stop })
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
	must(t, b.Commit("src", state.Batch{Now: t0, Records: recs}))
	open, err := b.OpenItems("src")
	must(t, err)
	want := []state.OpenItem{
		{ID: "settling", CreatedAt: t0.Add(-time.Hour)},
		{ID: "early-a", CreatedAt: t0, State: diff.Pending},
		{ID: "early-b", CreatedAt: t0, State: diff.Pending},
		{ID: "late", CreatedAt: t0.Add(time.Minute), State: diff.Pending},
	}
	if !reflect.DeepEqual(open, want) {
		t.Errorf("OpenItems = %+v, want %+v (oldest first, then by id; final and stalled left out)", open, want)
	}

	// An item that turns final leaves the index; one committed after its settle
	// window leaves it too.
	_, err = b.Load("src", []string{"late", "settling"})
	must(t, err)
	must(t, b.Commit("src", state.Batch{Now: t0.Add(2 * time.Hour), Records: []diff.Record{record("late", 2, true, t0.Add(time.Minute)), settling}}))
	open, err = b.OpenItems("src")
	must(t, err)
	if len(open) != 2 || open[0].ID != "early-a" || open[1].ID != "early-b" {
		t.Errorf("OpenItems after closing = %+v, want early-a and early-b", open)
	}
}

func sourcesApart(t *testing.T, b Backend) {
	must(t, b.Commit("one", state.Batch{Now: t0, Records: []diff.Record{record("x", 1, false, t0)}, Meta: &state.Meta{BaselineDone: true}}))
	must(t, b.Commit("two", state.Batch{Now: t0, Records: []diff.Record{record("x", 3, true, t0)}}))
	one, err := b.Load("one", []string{"x"})
	must(t, err)
	two, err := b.Load("two", []string{"x"})
	must(t, err)
	if one["x"].Sequence != 1 || two["x"].Sequence != 3 {
		t.Errorf("same id in two sources: %+v and %+v", one["x"], two["x"])
	}
	if m, _ := b.Meta("two"); m.BaselineDone {
		t.Error("meta of one source shows in another")
	}
	if open, _ := b.OpenItems("two"); len(open) != 0 {
		t.Errorf("open items of source two = %v, want none", open)
	}
	// Ids with characters outside any key alphabet, and a source whose name prefixes
	// another's, stay apart.
	odd := record("id with spaces/ünï.côdé*>", 1, false, t0)
	must(t, b.Commit("on", state.Batch{Now: t0, Records: []diff.Record{odd}}))
	got, err := b.Load("on", []string{odd.ID})
	must(t, err)
	if got[odd.ID] == nil || got[odd.ID].ID != odd.ID {
		t.Errorf("Load of an odd id = %+v", got)
	}
	if got := ids(b, t, "one"); !slices.Equal(got, []string{"x"}) {
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
		if err := b.Commit(c.source, c.batch); err == nil {
			t.Errorf("%s: Commit succeeded", c.name)
		}
	}
	got, err := b.Load("src", []string{"a"})
	must(t, err)
	n, _, err := b.OutboxStats()
	must(t, err)
	if len(got) != 0 || n != 0 {
		t.Errorf("rejected batches left %d records and %d outbox entries", len(got), n)
	}
}

func pendingIDs(t *testing.T, b Backend) ([]string, []uint64) {
	t.Helper()
	var names []string
	var seqs []uint64
	var after uint64
	for {
		p, err := b.Pending(after, 2)
		must(t, err)
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
	must(t, b.Commit("src", state.Batch{Now: t0, Messages: []event.Message{message("e1"), message("e2"), message("e3")}}))
	select {
	case <-b.Changed():
	default:
		t.Error("Changed was not signalled after a commit with messages")
	}
	must(t, b.Commit("other", state.Batch{Now: t0.Add(time.Minute), Messages: []event.Message{message("e4"), message("e5")}}))
	names, seqs := pendingIDs(t, b)
	if !slices.Equal(names, []string{"e1", "e2", "e3", "e4", "e5"}) {
		t.Fatalf("Pending in pages of 2 = %v, want e1..e5 in commit order", names)
	}
	p, err := b.Pending(0, 1)
	must(t, err)
	if p[0].Enqueued != t0 || p[0].Msg.Subject != "payments.src.payment.pending" || string(p[0].Msg.Body) != `{"id":"e1"}` {
		t.Errorf("first entry = %+v", p[0])
	}
	n, oldest, err := b.OutboxStats()
	must(t, err)
	if n != 5 || !oldest.Equal(t0) {
		t.Errorf("OutboxStats = %d %v, want 5 %v", n, oldest, t0)
	}
	if _, err := b.Pending(0, 0); err == nil {
		t.Error("Pending with max 0 succeeded")
	}

	must(t, b.Delete([]uint64{seqs[0], seqs[2], seqs[4] + 1000}))
	names, _ = pendingIDs(t, b)
	if !slices.Equal(names, []string{"e2", "e4", "e5"}) {
		t.Errorf("Pending after deleting e1, e3 and an unknown seq = %v", names)
	}
	n, oldest, err = b.OutboxStats()
	must(t, err)
	if n != 3 || !oldest.Equal(t0) {
		t.Errorf("OutboxStats = %d %v, want 3 %v", n, oldest, t0)
	}
	must(t, b.Delete([]uint64{seqs[1]}))
	if _, oldest, _ := b.OutboxStats(); !oldest.Equal(t0.Add(time.Minute)) {
		t.Errorf("oldest after deleting src's entries = %v, want %v", oldest, t0.Add(time.Minute))
	}
}

func ackRetainPrune(t *testing.T, b Backend) {
	must(t, b.Commit("src", state.Batch{Now: t0, Messages: []event.Message{message("e1"), message("e2"), message("e3")}}))
	_, seqs := pendingIDs(t, b)
	must(t, b.Ack([]state.Ack{
		{Seq: seqs[0], At: t0.Add(time.Second), StreamSeq: 7},
		{Seq: seqs[1], At: t0.Add(2 * time.Second), Duplicate: true},
		{Seq: seqs[2] + 1000, At: t0},
	}))
	names, _ := pendingIDs(t, b)
	if !slices.Equal(names, []string{"e3"}) {
		t.Errorf("Pending after acknowledging e1 and e2 = %v, want [e3]", names)
	}
	if n, _, _ := b.OutboxStats(); n != 1 {
		t.Errorf("OutboxStats counts %d, want 1 (retained entries are not pending)", n)
	}
	r, err := b.Retained(0, 10)
	must(t, err)
	if len(r) != 2 || r[0].Msg.ID != "e1" || r[0].StreamSeq != 7 || !r[0].Acked.Equal(t0.Add(time.Second)) ||
		r[1].Msg.ID != "e2" || !r[1].Duplicate || r[0].Seq != seqs[0] {
		t.Fatalf("Retained = %+v", r)
	}
	if r, _ := b.Retained(seqs[0], 10); len(r) != 1 || r[0].Msg.ID != "e2" {
		t.Errorf("Retained after e1 = %+v, want e2", r)
	}

	// Re-published: a new acknowledgement replaces the old, a duplicate one does not.
	must(t, b.Ack([]state.Ack{
		{Seq: seqs[0], At: t0.Add(time.Hour), StreamSeq: 9, Duplicate: true},
		{Seq: seqs[1], At: t0.Add(time.Hour), StreamSeq: 11},
	}))
	r, err = b.Retained(0, 10)
	must(t, err)
	if len(r) != 2 || r[0].StreamSeq != 7 || r[1].StreamSeq != 11 || r[1].Duplicate {
		t.Errorf("Retained after re-acknowledging = %+v", r)
	}

	pruned, next, err := b.Prune(t0.Add(time.Minute))
	must(t, err)
	if pruned != 1 || !next.Equal(t0.Add(time.Hour)) {
		t.Errorf("Prune = %d %v, want 1 %v", pruned, next, t0.Add(time.Hour))
	}
	must(t, b.Delete([]uint64{seqs[1]}))
	if r, _ := b.Retained(0, 10); len(r) != 0 {
		t.Errorf("Retained after pruning and deleting = %+v", r)
	}
	if _, err := b.Retained(0, 0); err == nil {
		t.Error("Retained with max 0 succeeded")
	}
}
