package natskv_test

import (
	"encoding/base64"
	"errors"
	"slices"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/state"
	"github.com/payments-watcher/watcher/state/natskv"
)

func msg(id string) event.Message {
	return event.Message{ID: id, Subject: "payments.src.payment.pending", Body: []byte(`{"id":"` + id + `"}`)}
}

// pendingIDs returns the event ids waiting in s's outbox.
func pendingIDs(t *testing.T, s *natskv.Store) []string {
	t.Helper()
	entries, err := s.Pending(t.Context(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range entries {
		ids = append(ids, e.Msg.ID)
	}
	return ids
}

// A writer whose view is stale loses before it writes anything: its events never
// reach the outbox beside the winner's for the same item and sequence.
func TestStaleWriterWritesNoEvent(t *testing.T) {
	js := jetStream(t)
	a, b := open(t, js, "w", nil), open(t, js, "w", nil)
	for _, s := range []*natskv.Store{a, b} {
		if _, err := s.Load(t.Context(), "src", []string{"x"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Commit(t.Context(), "src", state.Batch{Now: t0, Records: []diff.Record{rec("x", 1)},
		Messages: []event.Message{msg("winner")}}); err != nil {
		t.Fatal(err)
	}
	err := b.Commit(t.Context(), "src", state.Batch{Now: t0, Records: []diff.Record{rec("x", 1)},
		Messages: []event.Message{msg("stale")}})
	if !errors.Is(err, natskv.ErrConflict) {
		t.Fatalf("stale commit: %v, want ErrConflict", err)
	}
	if got := pendingIDs(t, a); !slices.Equal(got, []string{"winner"}) {
		t.Errorf("outbox %v, want only the winner's event", got)
	}
}

// A commit cut short after it took effect (here: a record another process wrote
// behind the Store's back makes its application fail part way) is completed by the
// next view of the source, on any replica, before that view reads a record: the
// event already in the outbox and the record it belongs to agree, so the next
// transition of the item gets the next sequence, not the same one again.
func TestCommitCutShortIsCompletedByTheNextView(t *testing.T) {
	js := jetStream(t)
	a := open(t, js, "w", nil)
	if _, err := a.Meta(t.Context(), "src"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Load(t.Context(), "src", []string{"x", "y"}); err != nil {
		t.Fatal(err)
	}
	// y appears behind a's back: a's revision-checked creation of y fails, after the
	// outbox entries and x are written.
	putBehind(t, js, "w", "src", rec("y", 7))
	err := a.Commit(t.Context(), "src", state.Batch{Now: t0, Records: []diff.Record{rec("x", 1), rec("y", 1)},
		Messages: []event.Message{msg("x1"), msg("y1")}, Meta: &state.Meta{BaselineDone: true}})
	if !errors.Is(err, natskv.ErrConflict) {
		t.Fatalf("commit over a record written behind its back: %v, want ErrConflict", err)
	}

	// Another replica's view begins: the pending commit is completed first.
	c := open(t, js, "w", nil)
	meta, err := c.Meta(t.Context(), "src")
	if err != nil {
		t.Fatal(err)
	}
	if !meta.BaselineDone {
		t.Errorf("meta after recovery %+v, want the pending commit's", meta)
	}
	got, err := c.Load(t.Context(), "src", []string{"x", "y"})
	if err != nil {
		t.Fatal(err)
	}
	if got["x"] == nil || got["x"].Sequence != 1 || got["y"] == nil || got["y"].Sequence != 1 {
		t.Fatalf("records after recovery: x %+v, y %+v; want both at the pending commit's sequence 1", got["x"], got["y"])
	}
	if ids := pendingIDs(t, c); !slices.Equal(ids, []string{"x1", "y1"}) {
		t.Errorf("outbox %v, want x1 y1 once each", ids)
	}
	// The new view commits on top of it; the old one's stale view loses.
	if err := c.Commit(t.Context(), "src", state.Batch{Now: t0, Records: []diff.Record{rec("x", 2)},
		Messages: []event.Message{msg("x2")}}); err != nil {
		t.Fatal(err)
	}
	if err := a.Commit(t.Context(), "src", state.Batch{Now: t0, Records: []diff.Record{rec("x", 2)},
		Messages: []event.Message{msg("x2-stale")}}); !errors.Is(err, natskv.ErrConflict) {
		t.Fatalf("commit of the old view: %v, want ErrConflict", err)
	}
	if ids := pendingIDs(t, c); !slices.Equal(ids, []string{"x1", "y1", "x2"}) {
		t.Errorf("outbox %v, want x1 y1 x2", ids)
	}
}

// putBehind writes r into the records bucket of prefix directly, as a writer that
// bypasses the Store would.
func putBehind(t *testing.T, js jetstream.JetStream, prefix, source string, r diff.Record) {
	t.Helper()
	records, err := js.KeyValue(t.Context(), prefix+"_records")
	if err != nil {
		t.Fatal(err)
	}
	key := base64.RawURLEncoding.EncodeToString([]byte(source)) + "." + base64.RawURLEncoding.EncodeToString([]byte(r.ID))
	v, err := state.EncodeRecord(&r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := records.Put(t.Context(), key, v); err != nil {
		t.Fatal(err)
	}
}

// A Reader (the state API, `watcher state`) never completes a poller's pending
// commit: its reads see the source as it stands, and its own commit waits its turn.
func TestReaderLeavesAPendingCommitToThePoller(t *testing.T) {
	js := jetStream(t)
	a := open(t, js, "w", nil)
	if _, err := a.Load(t.Context(), "src", []string{"y"}); err != nil {
		t.Fatal(err)
	}
	putBehind(t, js, "w", "src", rec("y", 7))
	if err := a.Commit(t.Context(), "src", state.Batch{Now: t0, Records: []diff.Record{rec("y", 1)},
		Messages: []event.Message{msg("y1")}, Meta: &state.Meta{BaselineDone: true}}); !errors.Is(err, natskv.ErrConflict) {
		t.Fatalf("commit left pending: %v", err)
	}

	r, err := natskv.Open(t.Context(), js, natskv.Options{Prefix: "w", Reader: true})
	if err != nil {
		t.Fatal(err)
	}
	meta, err := r.Meta(t.Context(), "src")
	if err != nil || meta.BaselineDone {
		t.Fatalf("reader's Meta = %+v, %v; want the metadata before the pending commit", meta, err)
	}
	if got, err := r.Load(t.Context(), "src", []string{"y"}); err != nil || got["y"].Sequence != 7 {
		t.Fatalf("reader's Load = %+v, %v; want the record as it stands", got["y"], err)
	}
	if err := r.Commit(t.Context(), "src", state.Batch{Meta: &state.Meta{Rebaseline: true}}); !errors.Is(err, natskv.ErrConflict) {
		t.Fatalf("reader's commit while one is pending: %v, want ErrConflict", err)
	}
	// The poller's next view completes it; the reader then commits.
	if _, err := open(t, js, "w", nil).Meta(t.Context(), "src"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Meta(t.Context(), "src"); err != nil {
		t.Fatal(err)
	}
	if err := r.Commit(t.Context(), "src", state.Batch{Meta: &state.Meta{BaselineDone: true, Rebaseline: true}}); err != nil {
		t.Fatalf("reader's commit after the poller's: %v", err)
	}
}
