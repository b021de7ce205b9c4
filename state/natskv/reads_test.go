package natskv_test

import (
	"errors"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/state"
	"github.com/payments-watcher/watcher/state/natskv"
)

// lastRead returns the read time of id in the open index of source, and whether it
// has an entry.
func lastRead(t *testing.T, s *natskv.Store, source, id string) (time.Time, bool) {
	t.Helper()
	open, err := s.OpenItems(t.Context(), source)
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range open {
		if it.ID == id {
			return it.LastRead, true
		}
	}
	return time.Time{}, false
}

// Read times are not part of the journal: a batch of Reads alone neither takes the
// source's journal turn (a stale view or a Reader sets them, and the poller's next
// commit still goes through) nor waits for a pending commit.
func TestReadsLeaveTheJournalAlone(t *testing.T) {
	js := jetStream(t)
	a, b := open(t, js, "w", nil), open(t, js, "w", nil)
	if _, err := b.Meta(t.Context(), "src"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Meta(t.Context(), "src"); err != nil {
		t.Fatal(err)
	}
	if err := a.Commit(t.Context(), "src", state.Batch{Now: t0, Records: []diff.Record{rec("x", 1)}}); err != nil {
		t.Fatal(err)
	}
	// b's view is stale; its read time is still set.
	t1 := t0.Add(time.Minute)
	if err := b.Commit(t.Context(), "src", state.Batch{Reads: map[string]time.Time{"x": t1}}); err != nil {
		t.Fatalf("Reads of a stale view: %v", err)
	}
	r, err := natskv.Open(t.Context(), js, natskv.Options{Prefix: "w", Reader: true})
	if err != nil {
		t.Fatal(err)
	}
	t2 := t0.Add(2 * time.Minute)
	if err := r.Commit(t.Context(), "src", state.Batch{Reads: map[string]time.Time{"x": t2}}); err != nil {
		t.Fatalf("Reads of a Reader: %v", err)
	}
	if got, ok := lastRead(t, a, "src", "x"); !ok || !got.Equal(t2) {
		t.Errorf("read time of x = %v (entry %v), want %v", got, ok, t2)
	}
	// a's view is still current: neither batch of Reads wrote the journal.
	if err := a.Commit(t.Context(), "src", state.Batch{Now: t2, Records: []diff.Record{rec("x", 2)}}); err != nil {
		t.Fatalf("commit after others' Reads: %v", err)
	}
	// A stale view's Reads never move a time back, and fenced ones write nothing.
	if err := b.Commit(t.Context(), "src", state.Batch{Reads: map[string]time.Time{"x": t1}}); err != nil {
		t.Fatal(err)
	}
	lost := errors.New("lease lost")
	f := open(t, js, "w", func(string) error { return lost })
	if err := f.Commit(t.Context(), "src", state.Batch{Reads: map[string]time.Time{"x": t2.Add(time.Hour)}}); !errors.Is(err, natskv.ErrFenced) {
		t.Errorf("fenced Reads: %v, want ErrFenced", err)
	}
	if got, _ := lastRead(t, a, "src", "x"); !got.Equal(t2) {
		t.Errorf("read time of x = %v, want %v", got, t2)
	}
}

// An open index entry that another commit removes or rewrites between the read of it
// and the update of its read time keeps that commit's write: the read time is
// skipped, the entry never brought back, and the batch still commits.
func TestReadOfAnEntryChangedMeanwhile(t *testing.T) {
	js := jetStream(t)
	a, c := open(t, js, "w", nil), open(t, js, "w", nil)
	if err := a.Commit(t.Context(), "src", state.Batch{Now: t0, Records: []diff.Record{rec("gone", 1), rec("moved", 1)}}); err != nil {
		t.Fatal(err)
	}
	t1, t2 := t0.Add(time.Minute), t0.Add(2*time.Minute)
	closed := rec("gone", 2)
	closed.Status = diff.Status{Raw: "complete", State: diff.Completed, Terminal: true}
	natskv.SetReadHook(t.Cleanup, func(id string) {
		// Another writer commits the item before the read time lands.
		if _, err := c.Meta(t.Context(), "src"); err != nil {
			t.Error(err)
		}
		if _, err := c.Load(t.Context(), "src", []string{id}); err != nil {
			t.Error(err)
		}
		r := rec("moved", 2)
		if id == "gone" {
			r = closed
		}
		if err := c.Commit(t.Context(), "src", state.Batch{Now: t1, Records: []diff.Record{r}}); err != nil {
			t.Error(err)
		}
	})
	if err := a.Commit(t.Context(), "src", state.Batch{Reads: map[string]time.Time{"gone": t2, "moved": t2}}); err != nil {
		t.Fatalf("Reads of entries changed meanwhile: %v", err)
	}
	if _, ok := lastRead(t, a, "src", "gone"); ok {
		t.Error("a read time brought back the entry of an item closed meanwhile")
	}
	if got, ok := lastRead(t, a, "src", "moved"); !ok || !got.Equal(t1) {
		t.Errorf("read time of an entry rewritten meanwhile = %v (entry %v), want the rewrite's %v", got, ok, t1)
	}
}
