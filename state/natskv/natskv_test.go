package natskv_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/internal/natstest"
	"github.com/payments-watcher/watcher/state"
	"github.com/payments-watcher/watcher/state/natskv"
	"github.com/payments-watcher/watcher/state/statetest"
)

// jetStream starts a JetStream server for the test and returns a JetStream context
// on a connection to it.
func jetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	return natstest.Connect(t, natstest.JetStream(t).ClientURL())
}

func open(t *testing.T, js jetstream.JetStream, prefix string, fence func(string) error) *natskv.Store {
	t.Helper()
	s, err := natskv.Open(t.Context(), js, natskv.Options{Prefix: prefix, Fence: fence})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSuite(t *testing.T) {
	js := jetStream(t)
	n := 0
	statetest.Run(t, func(t *testing.T) statetest.Backend {
		n++
		return open(t, js, fmt.Sprintf("suite%d", n), nil)
	})
}

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func rec(id string, seq uint32) diff.Record {
	return diff.Record{Kind: "payment", ID: id, Sequence: seq, CreatedAt: t0,
		Status: diff.Status{Raw: "pending", State: diff.Pending}}
}

// Two replicas read the same record; the first to commit wins, the other's commit
// fails with ErrConflict and leaves the winner's record in place.
func TestStaleWriterLoses(t *testing.T) {
	js := jetStream(t)
	a, b := open(t, js, "w", nil), open(t, js, "w", nil)
	if err := a.Commit(t.Context(), "src", state.Batch{Now: t0, Records: []diff.Record{rec("x", 1)}}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*natskv.Store{a, b} {
		if _, err := s.Load(t.Context(), "src", []string{"x"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Commit(t.Context(), "src", state.Batch{Now: t0, Records: []diff.Record{rec("x", 2)}}); err != nil {
		t.Fatal(err)
	}
	err := b.Commit(t.Context(), "src", state.Batch{Now: t0, Records: []diff.Record{rec("x", 3)}})
	if !errors.Is(err, natskv.ErrConflict) {
		t.Fatalf("stale commit: err %v, want ErrConflict", err)
	}
	got, err := b.Load(t.Context(), "src", []string{"x"})
	if err != nil {
		t.Fatal(err)
	}
	if got["x"].Sequence != 2 {
		t.Errorf("record after the stale commit has sequence %d, want the winner's 2", got["x"].Sequence)
	}
	// Having read again, b commits.
	if err := b.Commit(t.Context(), "src", state.Batch{Now: t0, Records: []diff.Record{rec("x", 3)}}); err != nil {
		t.Errorf("commit after a fresh Load: %v", err)
	}

	// The same holds for metadata, and for a key created by another writer meanwhile.
	if _, err := a.Meta(t.Context(), "src"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Meta(t.Context(), "src"); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(t.Context(), "src", state.Batch{Meta: &state.Meta{BaselineDone: true}}); err != nil {
		t.Fatal(err)
	}
	if err := a.Commit(t.Context(), "src", state.Batch{Meta: &state.Meta{}}); !errors.Is(err, natskv.ErrConflict) {
		t.Errorf("stale meta commit: err %v, want ErrConflict", err)
	}
	if m, _ := a.Meta(t.Context(), "src"); !m.BaselineDone {
		t.Error("stale meta commit overwrote the newer metadata")
	}
}

// A refused fence writes nothing, outbox included.
func TestFence(t *testing.T) {
	js := jetStream(t)
	lost := errors.New("lease lost")
	s := open(t, js, "f", func(string) error { return lost })
	err := s.Commit(t.Context(), "src", state.Batch{Now: t0, Records: []diff.Record{rec("x", 1)},
		Messages: []event.Message{{ID: "e1", Subject: "p.src.payment.pending", Body: []byte("{}")}}})
	if !errors.Is(err, natskv.ErrFenced) || !errors.Is(err, lost) {
		t.Fatalf("fenced commit: err %v, want ErrFenced wrapping the fence's error", err)
	}
	other := open(t, js, "f", nil)
	got, _ := other.Load(t.Context(), "src", []string{"x"})
	n, _, _ := other.OutboxStats(t.Context())
	if len(got) != 0 || n != 0 {
		t.Errorf("fenced commit wrote %d records and %d outbox entries", len(got), n)
	}
}

// A commit replayed after a crash (same event ids) does not enqueue its messages
// twice, even when the first copies were already published and deleted.
func TestReplayedCommitDeduplicated(t *testing.T) {
	js := jetStream(t)
	s := open(t, js, "r", nil)
	msgs := []event.Message{{ID: "e1", Subject: "p.src.payment.pending", Body: []byte("{}")},
		{ID: "e2", Subject: "p.src.payment.pending", Body: []byte("{}")}}
	if err := s.Commit(t.Context(), "src", state.Batch{Now: t0, Messages: msgs}); err != nil {
		t.Fatal(err)
	}
	p, err := s.Pending(t.Context(), 0, 10)
	if err != nil || len(p) != 2 {
		t.Fatalf("Pending = %v %v", p, err)
	}
	if err := s.Delete(t.Context(), []uint64{p[0].Seq}); err != nil {
		t.Fatal(err)
	}
	// The crash came after the outbox writes: a new replica replays the page.
	again := open(t, js, "r", nil)
	if err := again.Commit(t.Context(), "src", state.Batch{Now: t0, Records: []diff.Record{rec("x", 1)}, Messages: msgs}); err != nil {
		t.Fatal(err)
	}
	p, err = again.Pending(t.Context(), 0, 10)
	if err != nil || len(p) != 1 || p[0].Msg.ID != "e2" {
		t.Errorf("Pending after the replay = %+v %v, want e2 once", p, err)
	}
}

// Every call honours its context: with one already cancelled, each fails at once with
// an error wrapping context.Canceled, and a commit stores nothing.
func TestCancelledContext(t *testing.T) {
	js := jetStream(t)
	s := open(t, js, "c", nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	calls := map[string]func() error{
		"Commit": func() error {
			return s.Commit(ctx, "src", state.Batch{Now: t0, Records: []diff.Record{rec("x", 1)},
				Messages: []event.Message{{ID: "e1", Subject: "p.src.payment.pending", Body: []byte("{}")}}})
		},
		"Load":        func() error { _, err := s.Load(ctx, "src", []string{"x"}); return err },
		"Meta":        func() error { _, err := s.Meta(ctx, "src"); return err },
		"OpenItems":   func() error { _, err := s.OpenItems(ctx, "src"); return err },
		"ForEach":     func() error { return s.ForEach(ctx, "src", func(diff.Record) error { return nil }) },
		"OutboxStats": func() error { _, _, err := s.OutboxStats(ctx); return err },
		"Pending":     func() error { _, err := s.Pending(ctx, 0, 10); return err },
		"Delete":      func() error { return s.Delete(ctx, []uint64{1}) },
		"Ack":         func() error { _, err := s.Ack(ctx, []state.Ack{{Seq: 1, At: t0}}, 0); return err },
		"Retained":    func() error { _, err := s.Retained(ctx, 0, 10); return err },
		"Prune":       func() error { _, _, err := s.Prune(ctx, t0); return err },
	}
	for name, call := range calls {
		start := time.Now()
		if err := call(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: err %v, want one wrapping context.Canceled", name, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s with a cancelled context took %s", name, d)
		}
	}
	got, err := s.Load(t.Context(), "src", []string{"x"})
	if err != nil || len(got) != 0 {
		t.Errorf("after a cancelled commit, Load = %v, %v; want nothing stored", got, err)
	}
	if n, _, err := s.OutboxStats(t.Context()); err != nil || n != 0 {
		t.Errorf("after a cancelled commit, OutboxStats = %d, %v; want an empty outbox", n, err)
	}
}
