package bbolt

import (
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/state"
	"github.com/payments-watcher/watcher/state/codectest"
)

func newStore(t *testing.T) *Store {
	return openStore(t, filepath.Join(t.TempDir(), "watcher.db"))
}

func TestCommitLoadRoundTrip(t *testing.T) {
	s := newStore(t)
	records := codectest.Samples()
	commit(t, s, "cpn", state.Batch{Now: t0, Records: records})

	ids := []string{"missing", "", "zero"}
	for _, r := range records {
		ids = append(ids, r.ID)
	}
	got, err := s.Load(t.Context(), "cpn", ids)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(records) {
		t.Errorf("Load returned %d records, want %d (missing ids absent)", len(got), len(records))
	}
	for _, r := range records {
		if !reflect.DeepEqual(got[r.ID], &r) {
			t.Errorf("record %q:\n got %+v\nwant %+v", r.ID, got[r.ID], r)
		}
	}
	if other, err := s.Load(t.Context(), "stripe", ids); err != nil || len(other) != 0 {
		t.Errorf("Load from another source = %v, %v; want nothing", other, err)
	}

	// An upsert replaces the record, nested items included.
	upd := codectest.Rich()
	upd.Sequence++
	upd.Nested = upd.Nested[:1]
	commit(t, s, "cpn", state.Batch{Now: t0, Records: []diff.Record{upd}})
	got, err = s.Load(t.Context(), "cpn", []string{upd.ID})
	if err != nil || !reflect.DeepEqual(got[upd.ID], &upd) {
		t.Errorf("after upsert: %+v, %v\nwant %+v", got[upd.ID], err, upd)
	}

	var seen []string
	err = s.ForEach(t.Context(), "cpn", func(r diff.Record) error {
		seen = append(seen, r.ID)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"c4d1da72-111e-4d52-bdbf-2e74a2d803d5", "cos_1", "forms", "p1", "zero"}; !reflect.DeepEqual(seen, want) {
		t.Errorf("ForEach visited %v, want %v", seen, want)
	}
	stop := errors.New("stop")
	calls := 0
	err = s.ForEach(t.Context(), "cpn", func(diff.Record) error { calls++; return stop })
	if err != stop || calls != 1 {
		t.Errorf("ForEach with a failing fn: %v after %d calls, want fn's error after 1", err, calls)
	}
}

// snapshot is everything a source and the outbox hold.
type snapshot struct {
	records map[string]*diff.Record
	open    []state.OpenItem
	meta    state.Meta
	outbox  []state.OutboxEntry
	sources []string
}

func take(t *testing.T, s *Store, ids []string) snapshot {
	t.Helper()
	var sn snapshot
	var err error
	if sn.records, err = s.Load(t.Context(), "cpn", ids); err != nil {
		t.Fatal(err)
	}
	if sn.open, err = s.OpenItems(t.Context(), "cpn"); err != nil {
		t.Fatal(err)
	}
	if sn.meta, err = s.Meta(t.Context(), "cpn"); err != nil {
		t.Fatal(err)
	}
	if sn.outbox, err = s.Pending(t.Context(), 0, 1000); err != nil {
		t.Fatal(err)
	}
	if sn.sources, err = s.Sources(); err != nil {
		t.Fatal(err)
	}
	return sn
}

func TestFailedCommitWritesNothing(t *testing.T) {
	s := newStore(t)
	first := codectest.Plain("a", t0.Add(-time.Hour), "CREATED", diff.Pending, false)
	meta := state.Meta{HighWater: t0.Add(-time.Hour), LastPoll: t0}
	commit(t, s, "cpn", state.Batch{Now: t0, Records: []diff.Record{first}, Messages: []event.Message{msg(1)}, Meta: &meta})
	<-s.Changed()
	ids := []string{"a", "b", "c"}
	before := take(t, s, ids)

	later := t0.Add(time.Minute)
	done := first
	done.Status, done.Sequence = diff.Status{Raw: "COMPLETED", State: diff.Completed, Terminal: true}, 2
	fresh := codectest.Plain("b", later, "CREATED", diff.Pending, false)
	newMeta := state.Meta{BaselineDone: true, HighWater: later, LastPoll: later}
	unstorable := codectest.Plain("c", time.Date(2400, 1, 1, 0, 0, 0, 0, time.UTC), "CREATED", diff.Pending, false)
	noSeq := codectest.Plain("c", later, "CREATED", diff.Pending, false)
	noSeq.Sequence = 0

	cases := []struct {
		name   string
		source string
		bad    []diff.Record // appended after valid records
		meta   *state.Meta
		want   string
	}{
		{"record without id", "cpn", []diff.Record{{Kind: "payment", Sequence: 1}}, &newMeta, `record "": empty id`},
		{"unstorable time", "cpn", []diff.Record{unstorable}, &newMeta, `record "c": created_at: time 2400-01-01T00:00:00Z is outside`},
		{"sequence 0", "cpn", []diff.Record{noSeq}, &newMeta, `record "c": sequence 0`},
		{"unstorable meta", "cpn", nil, &state.Meta{LastPoll: time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC)}, "meta: last_poll"},
		{"empty source", "", nil, &newMeta, "empty source name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := state.Batch{
				Now:      later,
				Records:  append([]diff.Record{done, fresh}, tc.bad...),
				Messages: []event.Message{msg(2), msg(3)},
				Meta:     tc.meta,
			}
			err := s.Commit(t.Context(), tc.source, b)
			if err == nil {
				t.Fatal("Commit succeeded")
			}
			if !strings.Contains(err.Error(), "state file "+s.Path()) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Commit: %v\nwant it to name the file and contain %q", err, tc.want)
			}
			if after := take(t, s, ids); !reflect.DeepEqual(after, before) {
				t.Errorf("a failed commit changed the store:\n got %+v\nwant %+v", after, before)
			}
			select {
			case <-s.Changed():
				t.Error("a failed commit signalled Changed")
			default:
			}
		})
	}

	// The same batch without the bad record is stored whole, and the outbox sequence
	// continues where the last successful commit left it.
	commit(t, s, "cpn", state.Batch{Now: later, Records: []diff.Record{done, fresh}, Messages: []event.Message{msg(2), msg(3)}, Meta: &newMeta})
	after := take(t, s, ids)
	if !reflect.DeepEqual(after.records, map[string]*diff.Record{"a": &done, "b": &fresh}) || after.meta != newMeta {
		t.Errorf("after a good commit: records %+v, meta %+v", after.records, after.meta)
	}
	if seqs := pendingSeqs(t, s); !reflect.DeepEqual(seqs, []uint64{1, 2, 3}) {
		t.Errorf("outbox sequence after failed commits = %v, want [1 2 3]", seqs)
	}
}

// TestCommitIsVisibleWhole reads records and outbox in single read transactions while
// commits run: every read sees both halves of a commit or neither.
func TestCommitIsVisibleWhole(t *testing.T) {
	s := newStore(t)
	const commits = 100
	done := make(chan error, 1)
	go func() {
		for i := range commits {
			b := state.Batch{Now: t0}
			for j := range 3 {
				n := i*3 + j
				b.Records = append(b.Records, codectest.Plain(fmt.Sprint(n), t0, "CREATED", diff.Pending, false))
				b.Messages = append(b.Messages, msg(n))
			}
			if err := s.Commit(t.Context(), "cpn", b); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()

	reads := 0
	for {
		var items, entries int
		err := s.db.View(func(tx *bolt.Tx) error {
			if b := sourceBucket(tx, "cpn", itemsBucket); b != nil {
				items = b.Stats().KeyN
			}
			entries = tx.Bucket(outboxBucket).Stats().KeyN
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		reads++
		if items != entries || items%3 != 0 {
			t.Fatalf("a read saw %d records and %d outbox entries", items, entries)
		}
		if items == commits*3 {
			break
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d consistent reads", reads)
}

func TestOpenIndex(t *testing.T) {
	s := newStore(t)
	pending := func(id string, age time.Duration) diff.Record {
		return codectest.Plain(id, t0.Add(-age), "CREATED", diff.Pending, false)
	}
	final := func(r diff.Record) diff.Record {
		r.Status = diff.Status{Raw: "COMPLETED", State: diff.Completed, Terminal: true}
		r.Sequence++
		return r
	}

	oldest := pending("oldest", 5*time.Hour)
	tieB, tieA := pending("tie-b", 4*time.Hour), pending("tie-a", 4*time.Hour)
	toFinish := pending("to-finish", 3*time.Hour)
	toStall := pending("to-stall", 2*time.Hour)
	// Final itself, but a nested refund is not: open.
	withOpenRefund := final(pending("open-refund", time.Hour))
	withOpenRefund.Nested = []diff.NestedRecord{{Kind: "payment_refund", ID: "r", Status: diff.Status{Raw: "CREATED", State: diff.Pending}, Sequence: 1}}
	// Final and settling: open until SettleUntil.
	settling := final(pending("settling", 30*time.Minute))
	settling.SettleUntil = t0.Add(time.Hour)
	settled := final(pending("settled", 20*time.Minute))
	settled.SettleUntil = t0.Add(-time.Minute)
	finished := final(pending("finished", 10*time.Minute))

	commit(t, s, "cpn", state.Batch{Now: t0, Records: []diff.Record{
		finished, settling, withOpenRefund, toStall, toFinish, tieB, tieA, oldest, settled,
	}})
	want := []string{"oldest", "tie-a", "tie-b", "to-finish", "to-stall", "open-refund", "settling"}
	checkOpen(t, s, want, 9)

	// Finishing removes from the index, so does stalling.
	stalled := toStall
	stalled.Stalled = true
	commit(t, s, "cpn", state.Batch{Now: t0, Records: []diff.Record{final(toFinish), stalled}})
	checkOpen(t, s, []string{"oldest", "tie-a", "tie-b", "open-refund", "settling"}, 9)

	// The settle window is judged at the batch's Now.
	commit(t, s, "cpn", state.Batch{Now: t0.Add(59 * time.Minute), Records: []diff.Record{settling}})
	checkOpen(t, s, []string{"oldest", "tie-a", "tie-b", "open-refund", "settling"}, 9)
	commit(t, s, "cpn", state.Batch{Now: t0.Add(time.Hour), Records: []diff.Record{settling}})
	checkOpen(t, s, []string{"oldest", "tie-a", "tie-b", "open-refund"}, 9)

	// A stalled item that moves again is re-indexed.
	stalled.Stalled = false
	stalled.Sequence++
	commit(t, s, "cpn", state.Batch{Now: t0.Add(time.Hour), Records: []diff.Record{stalled}})
	checkOpen(t, s, []string{"oldest", "tie-a", "tie-b", "to-stall", "open-refund"}, 9)

	// Sources are independent.
	if items, open, err := s.Counts("stripe"); err != nil || items != 0 || open != 0 {
		t.Errorf("Counts of an unknown source = %d, %d, %v", items, open, err)
	}
	if open, err := s.OpenItems(t.Context(), "stripe"); err != nil || len(open) != 0 {
		t.Errorf("OpenItems of an unknown source = %v, %v", open, err)
	}
}

func checkOpen(t *testing.T, s *Store, want []string, items int) {
	t.Helper()
	open, err := s.OpenItems(t.Context(), "cpn")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, o := range open {
		ids = append(ids, o.ID)
	}
	if !reflect.DeepEqual(ids, want) {
		t.Errorf("open items = %v, want %v", ids, want)
	}
	recs, err := s.Load(t.Context(), "cpn", ids)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range open {
		if r := recs[o.ID]; r == nil || !r.CreatedAt.Equal(o.CreatedAt) {
			t.Errorf("open item %s has CreatedAt %v, its record %+v", o.ID, o.CreatedAt, r)
		}
	}
	n, o, err := s.Counts("cpn")
	if err != nil || n != items || o != len(want) {
		t.Errorf("Counts = %d, %d, %v; want %d, %d", n, o, err, items, len(want))
	}
}

// TestConcurrentCommitsShareTransactions holds one write transaction open while other
// writers queue up: they are then committed together in one transaction, and one
// writer's failure there fails neither the others nor their writes.
func TestConcurrentCommitsShareTransactions(t *testing.T) {
	s := newStore(t)
	release := holdWriter(t, s)

	const writers = 6
	errs := make(chan error, writers)
	for i := range writers {
		go func() {
			if i == writers-1 {
				// A bad record: this writer's commit fails, alone.
				errs <- s.Commit(t.Context(), "cpn", state.Batch{Now: t0, Records: []diff.Record{{Kind: "payment", Sequence: 1}}})
				return
			}
			errs <- s.update(func(tx *bolt.Tx) error {
				src, err := tx.Bucket(sourcesBucket).CreateBucketIfNotExists([]byte(fmt.Sprintf("src%d", i)))
				if err != nil {
					return err
				}
				v, err := state.EncodeMeta(&state.Meta{})
				if err != nil {
					return err
				}
				return src.Put(metaKey, v)
			})
		}()
	}
	waitQueued(t, s, "every writer to queue", writers)
	if err := release(); err != nil {
		t.Fatal(err)
	}
	failed := 0
	for range writers {
		if err := <-errs; err != nil {
			failed++
			if !strings.Contains(err.Error(), "empty id") {
				t.Errorf("unexpected failure: %v", err)
			}
		}
	}
	if failed != 1 {
		t.Errorf("%d writers failed, want the one with a bad record", failed)
	}
	sources, err := s.Sources()
	if err != nil {
		t.Fatal(err)
	}
	if len(sources) != writers-1 {
		t.Errorf("sources after the group: %v, want src0..src%d", sources, writers-2)
	}
}

// TestConcurrentCommitsGroup checks that writers queued behind a running transaction
// share the next one when none of them fails.
func TestConcurrentCommitsGroup(t *testing.T) {
	s := newStore(t)
	release := holdWriter(t, s)
	const writers = 5
	errs := make(chan error, writers)
	var txIDs [writers]int
	for i := range writers {
		go func() {
			errs <- s.update(func(tx *bolt.Tx) error {
				txIDs[i] = tx.ID()
				return nil
			})
		}()
	}
	waitQueued(t, s, "every writer to queue", writers)
	if err := release(); err != nil {
		t.Fatal(err)
	}
	for range writers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for i := range writers {
		if txIDs[i] != txIDs[0] {
			t.Fatalf("queued writers ran in transactions %v, want one shared transaction", txIDs)
		}
	}
}

// holdWriter starts a writer whose transaction lasts until release is called, and
// waits until that transaction runs: the writers that come next queue behind it.
// release returns what the writer's update returned.
func holdWriter(t *testing.T, s *Store) (release func() error) {
	t.Helper()
	hold := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.update(func(tx *bolt.Tx) error {
			<-hold
			return nil
		})
	}()
	waitQueued(t, s, "the first writer to start", 0)
	return func() error {
		close(hold)
		return <-done
	}
}

// waitQueued waits until a transaction runs with n writers queued behind it.
func waitQueued(t *testing.T, s *Store, what string, n int) {
	t.Helper()
	waitFor(t, what, func() bool {
		s.group.mu.Lock()
		defer s.group.mu.Unlock()
		return s.group.busy && len(s.group.queue) == n
	})
}

// waitFor polls cond until it holds, failing the test after 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestPanickingWriterReleasesTheQueue checks that a write function that panics fails
// the writers queued with it instead of leaving them, and every later writer,
// waiting.
func TestPanickingWriterReleasesTheQueue(t *testing.T) {
	s := newStore(t)
	release := make(chan struct{})
	first := make(chan any, 1)
	go func() {
		defer func() { first <- recover() }()
		_ = s.update(func(tx *bolt.Tx) error {
			<-release
			return nil
		})
	}()
	waitQueued(t, s, "the first writer to start", 0)
	panicked := make(chan any, 1)
	other := make(chan error, 1)
	go func() {
		defer func() { panicked <- recover() }()
		_ = s.update(func(*bolt.Tx) error { panic("boom") })
	}()
	waitQueued(t, s, "the panicking writer to queue", 1)
	go func() { other <- s.update(func(*bolt.Tx) error { return nil }) }()
	waitQueued(t, s, "the second writer to queue", 2)
	close(release)
	if r := <-first; r != nil {
		t.Fatalf("first writer panicked: %v", r)
	}
	if r := <-panicked; r != "boom" {
		t.Errorf("the panic did not reach its writer: %v", r)
	}
	if err := <-other; err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Errorf("writer queued with the panicking one: %v", err)
	}
	commit(t, s, "cpn", state.Batch{Now: t0, Records: []diff.Record{codectest.Plain("after", t0, "CREATED", diff.Pending, false)}})
}
