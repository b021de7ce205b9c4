package bbolt

import (
	"bytes"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/state"
	"github.com/payments-watcher/watcher/state/codectest"
)

func TestOutbox(t *testing.T) {
	s := newStore(t)
	var sent []event.Message
	nows := []time.Time{t0, t0.Add(time.Minute), t0.Add(2 * time.Minute)}
	for i, n := range []int{5, 3, 2} {
		var b state.Batch
		b.Now = nows[i]
		for range n {
			m := msg(len(sent) + 1)
			if len(sent) == 6 {
				m.Body = []byte{0, 0xff, '\n', 0} // bodies are kept byte for byte
			}
			sent = append(sent, m)
			b.Messages = append(b.Messages, m)
		}
		commit(t, s, fmt.Sprint("source", i), b)
	}
	enqueued := func(seq uint64) time.Time {
		switch {
		case seq <= 5:
			return nows[0]
		case seq <= 8:
			return nows[1]
		}
		return nows[2]
	}

	// Pages of 4 from the start.
	var after uint64
	var got []state.OutboxEntry
	for page := 0; ; page++ {
		entries, err := s.Pending(t.Context(), after, 4)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) == 0 {
			break
		}
		if len(entries) > 4 || page > 3 {
			t.Fatalf("page %d has %d entries", page, len(entries))
		}
		got = append(got, entries...)
		after = entries[len(entries)-1].Seq
	}
	if len(got) != len(sent) {
		t.Fatalf("paged through %d entries, want %d", len(got), len(sent))
	}
	for i, e := range got {
		m := sent[i]
		if e.Seq != uint64(i+1) || !e.Enqueued.Equal(enqueued(e.Seq)) || e.Msg.ID != m.ID ||
			e.Msg.Subject != m.Subject || !bytes.Equal(e.Msg.Body, m.Body) {
			t.Errorf("entry %d = %+v, want seq %d enqueued %v message %+v", i, e, i+1, enqueued(e.Seq), m)
		}
	}
	if _, err := s.Pending(t.Context(), 0, 0); err == nil || !strings.Contains(err.Error(), "max 0") {
		t.Errorf("Pending with max 0: %v", err)
	}
	if e, err := s.Pending(t.Context(), ^uint64(0), 10); err != nil || len(e) != 0 {
		t.Errorf("Pending after the largest seq = %v, %v", e, err)
	}

	checkStats := func(wantN int, wantOldest time.Time) {
		t.Helper()
		n, oldest, err := s.OutboxStats(t.Context())
		if err != nil || n != wantN || !oldest.Equal(wantOldest) {
			t.Errorf("OutboxStats = %d, %v, %v; want %d, %v", n, oldest, err, wantN, wantOldest)
		}
	}
	checkStats(10, nows[0])

	// Deleting acknowledged entries, with unknown seqs ignored.
	if err := s.Delete(t.Context(), []uint64{1, 2, 3, 999}); err != nil {
		t.Fatal(err)
	}
	checkStats(7, nows[0])
	if e, err := s.Pending(t.Context(), 0, 1); err != nil || len(e) != 1 || e[0].Seq != 4 {
		t.Errorf("first pending after deleting 1-3 = %+v, %v; want seq 4", e, err)
	}
	if err := s.Delete(t.Context(), []uint64{5, 4}); err != nil {
		t.Fatal(err)
	}
	checkStats(5, nows[1])
	if err := s.Delete(t.Context(), []uint64{6, 7, 8, 9, 10}); err != nil {
		t.Fatal(err)
	}
	checkStats(0, time.Time{})
	if err := s.Delete(t.Context(), nil); err != nil {
		t.Errorf("Delete(nil): %v", err)
	}
}

func TestOutboxRetainsAcknowledged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "watcher.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var sent []event.Message
	for i := range 6 {
		sent = append(sent, msg(i+1))
	}
	commit(t, s, "cpn", state.Batch{Now: t0, Messages: sent})

	// A file that never retained anything.
	if r, err := s.Retained(t.Context(), 0, 10); err != nil || len(r) != 0 {
		t.Fatalf("Retained before any Ack = %v, %v", r, err)
	}
	if n, oldest, err := s.RetainedStats(); err != nil || n != 0 || !oldest.IsZero() {
		t.Fatalf("RetainedStats before any Ack = %d, %v, %v", n, oldest, err)
	}
	if n, next, err := s.Prune(t.Context(), t0.Add(time.Hour)); err != nil || n != 0 || !next.IsZero() {
		t.Fatalf("Prune before any Ack = %d, %v, %v", n, next, err)
	}

	at1, at2 := t0.Add(time.Second), t0.Add(2*time.Second)
	_, err = s.Ack(t.Context(), []state.Ack{
		{Seq: 1, At: at1, StreamSeq: 101},
		{Seq: 2, At: at1, StreamSeq: 102, Duplicate: true},
		{Seq: 4, At: at2, StreamSeq: 104},
		{Seq: 999, At: at2, StreamSeq: 1}, // unknown: ignored
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := pendingSeqs(t, s); !slices.Equal(got, []uint64{3, 5, 6}) {
		t.Errorf("pending after Ack = %v, want [3 5 6]", got)
	}
	if n, oldest, err := s.OutboxStats(t.Context()); err != nil || n != 3 || !oldest.Equal(t0) {
		t.Errorf("OutboxStats after Ack = %d, %v, %v; want 3 pending, retained ones not counted", n, oldest, err)
	}
	checkRetained := func(want ...state.AckedEntry) {
		t.Helper()
		var got []state.AckedEntry
		var after uint64
		for {
			page, err := s.Retained(t.Context(), after, 2)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			got = append(got, page...)
			after = page[len(page)-1].Seq
		}
		if len(got) != len(want) {
			t.Fatalf("Retained = %+v, want %+v", got, want)
		}
		for i, g := range got {
			w := want[i]
			m := sent[w.Seq-1]
			if g.Seq != w.Seq || !g.Acked.Equal(w.Acked) || g.StreamSeq != w.StreamSeq || g.Duplicate != w.Duplicate ||
				!g.Enqueued.Equal(t0) || g.Msg.ID != m.ID || g.Msg.Subject != m.Subject || !bytes.Equal(g.Msg.Body, m.Body) {
				t.Errorf("retained %d = %+v, want %+v with message %+v", i, g, w, m)
			}
		}
	}
	retained := func(seq uint64, at time.Time, streamSeq uint64, dup bool) state.AckedEntry {
		return state.AckedEntry{OutboxEntry: state.OutboxEntry{Seq: seq}, Acked: at, StreamSeq: streamSeq, Duplicate: dup}
	}
	checkRetained(retained(1, at1, 101, false), retained(2, at1, 102, true), retained(4, at2, 104, false))

	// Re-published: a fresh store takes the new acknowledgement, a duplicate keeps the
	// old one. A pending entry acknowledged as a duplicate is retained as such.
	at3 := t0.Add(3 * time.Second)
	_, err = s.Ack(t.Context(), []state.Ack{{Seq: 1, At: at3, StreamSeq: 201}, {Seq: 2, At: at3, StreamSeq: 102}, {Seq: 4, At: at3, StreamSeq: 104, Duplicate: true},
		{Seq: 3, At: at3, StreamSeq: 103, Duplicate: true}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkRetained(retained(1, at3, 201, false), retained(2, at3, 102, false), retained(3, at3, 103, true), retained(4, at2, 104, false))
	if n, oldest, err := s.RetainedStats(); err != nil || n != 4 || !oldest.Equal(at2) {
		t.Errorf("RetainedStats = %d, %v, %v; want 4, %v", n, oldest, err, at2)
	}

	// Survives a reopen, read-only too.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ro, err := OpenReadOnly(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	if n, _, err := ro.RetainedStats(); err != nil || n != 4 {
		t.Errorf("read-only RetainedStats = %d, %v; want 4", n, err)
	}
	if err := ro.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(path, Options{}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	// Prune deletes what was acknowledged before the cutoff, and tells the next due.
	if n, next, err := s.Prune(t.Context(), at2); err != nil || n != 0 || !next.Equal(at2) {
		t.Errorf("Prune(at2) = %d, %v, %v; want 0, %v", n, next, err, at2)
	}
	if n, next, err := s.Prune(t.Context(), at3); err != nil || n != 1 || !next.Equal(at3) {
		t.Errorf("Prune(at3) = %d, %v, %v; want 1, %v", n, next, err, at3)
	}
	checkRetained(retained(1, at3, 201, false), retained(2, at3, 102, false), retained(3, at3, 103, true))

	// Delete removes retained entries as well as pending ones.
	if err := s.Delete(t.Context(), []uint64{2, 5}); err != nil {
		t.Fatal(err)
	}
	checkRetained(retained(1, at3, 201, false), retained(3, at3, 103, true))
	if got := pendingSeqs(t, s); !slices.Equal(got, []uint64{6}) {
		t.Errorf("pending after Delete = %v, want [6]", got)
	}
	if n, next, err := s.Prune(t.Context(), at3.Add(time.Nanosecond)); err != nil || n != 2 || !next.IsZero() {
		t.Errorf("Prune of everything = %d, %v, %v; want 2 and the zero time", n, next, err)
	}
	checkRetained()
	if err := s.Check(); err != nil {
		t.Errorf("Check: %v", err)
	}

	if _, err := s.Retained(t.Context(), 0, 0); err == nil || !strings.Contains(err.Error(), "max 0") {
		t.Errorf("Retained with max 0: %v", err)
	}

	// A damaged value (version 1, no flags, a truncated time) is an error naming the
	// file and the entry, never a panic.
	err = s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(ackedBucket).Put(seqKey(7), []byte{1, 0, 0x80})
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Retained(t.Context(), 0, 10); err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "retained entry 7") {
		t.Errorf("Retained of a damaged entry: %v", err)
	}
	if _, _, err := s.Prune(t.Context(), at3); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("Prune of a damaged entry: %v", err)
	}
}

func TestChangedSignalsCommitsWithMessages(t *testing.T) {
	s := newStore(t)
	signalled := func() bool {
		select {
		case <-s.Changed():
			return true
		default:
			return false
		}
	}
	if signalled() {
		t.Fatal("Changed signalled before any commit")
	}

	commit(t, s, "cpn", state.Batch{Now: t0, Records: []diff.Record{codectest.Plain("a", t0, "CREATED", diff.Pending, false)}})
	if signalled() {
		t.Error("Changed signalled by a commit without messages")
	}

	commit(t, s, "cpn", state.Batch{Now: t0, Messages: []event.Message{msg(1)}})
	if !signalled() {
		t.Error("Changed not signalled by a commit with a message")
	}

	// Nobody reading: commits do not block, and one signal is kept.
	for i := range 3 {
		commit(t, s, "cpn", state.Batch{Now: t0, Messages: []event.Message{msg(2 + i)}})
	}
	if !signalled() {
		t.Error("Changed not signalled after unread commits")
	}
	if signalled() {
		t.Error("Changed holds more than one signal")
	}
}

func BenchmarkCommitPage(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 900) // about the size of an event document
	for _, noSync := range []bool{true, false} {
		b.Run(fmt.Sprintf("NoSync=%t", noSync), func(b *testing.B) {
			s, err := Open(filepath.Join(b.TempDir(), "watcher.db"), Options{NoSync: noSync})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			page := 0
			for b.Loop() {
				batch := state.Batch{Now: t0}
				for i := range 100 {
					n := page*100 + i
					id := fmt.Sprintf("%08x-111e-4d52-bdbf-2e74a2d803d5", n*2654435761%(1<<32)) // spread, as uuids are
					batch.Records = append(batch.Records, codectest.Plain(id, t0.Add(-time.Duration(n)*time.Second), "CREATED", diff.Pending, false))
					batch.Messages = append(batch.Messages, event.Message{ID: id, Subject: "payments.cpn.payment.pending", Body: body})
				}
				if err := s.Commit(b.Context(), "cpn", batch); err != nil {
					b.Fatal(err)
				}
				page++
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(page*100), "µs/record")
		})
	}
}

// TestRetainedBytesWithoutRecordedSize: a file whose retained entries were written
// before their size was recorded has it computed from them, and kept from then on.
func TestRetainedBytesWithoutRecordedSize(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "watcher.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	commit(t, s, "cpn", state.Batch{Now: t0, Messages: []event.Message{msg(1), msg(2), msg(3)}})
	r, err := s.Ack(t.Context(), []state.Ack{{Seq: 1, At: t0}, {Seq: 2, At: t0}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(metaBucket).Delete(retainedBytesKey) })
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s.RetainedBytes(t.Context()); err != nil || n != r.Bytes {
		t.Fatalf("RetainedBytes without a recorded size = %d, %v; want %d", n, err, r.Bytes)
	}
	if err := s.Delete(t.Context(), []uint64{1}); err != nil {
		t.Fatal(err)
	}
	r2, err := s.Ack(t.Context(), []state.Ack{{Seq: 3, At: t0}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if r2.Bytes != r.Bytes { // one entry deleted, one of the same size added
		t.Errorf("after a delete and an Ack: %d bytes, want %d", r2.Bytes, r.Bytes)
	}
}
