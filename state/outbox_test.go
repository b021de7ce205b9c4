package state

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/event"
)

func TestOutbox(t *testing.T) {
	s := newStore(t)
	var sent []event.Message
	nows := []time.Time{t0, t0.Add(time.Minute), t0.Add(2 * time.Minute)}
	for i, n := range []int{5, 3, 2} {
		var b Batch
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
	var got []OutboxEntry
	for page := 0; ; page++ {
		entries, err := s.Pending(after, 4)
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
	if _, err := s.Pending(0, 0); err == nil || !strings.Contains(err.Error(), "max 0") {
		t.Errorf("Pending with max 0: %v", err)
	}
	if e, err := s.Pending(^uint64(0), 10); err != nil || len(e) != 0 {
		t.Errorf("Pending after the largest seq = %v, %v", e, err)
	}

	checkStats := func(wantN int, wantOldest time.Time) {
		t.Helper()
		n, oldest, err := s.OutboxStats()
		if err != nil || n != wantN || !oldest.Equal(wantOldest) {
			t.Errorf("OutboxStats = %d, %v, %v; want %d, %v", n, oldest, err, wantN, wantOldest)
		}
	}
	checkStats(10, nows[0])

	// Deleting acknowledged entries, with unknown seqs ignored.
	if err := s.Delete([]uint64{1, 2, 3, 999}); err != nil {
		t.Fatal(err)
	}
	checkStats(7, nows[0])
	if e, err := s.Pending(0, 1); err != nil || len(e) != 1 || e[0].Seq != 4 {
		t.Errorf("first pending after deleting 1-3 = %+v, %v; want seq 4", e, err)
	}
	if err := s.Delete([]uint64{5, 4}); err != nil {
		t.Fatal(err)
	}
	checkStats(5, nows[1])
	if err := s.Delete([]uint64{6, 7, 8, 9, 10}); err != nil {
		t.Fatal(err)
	}
	checkStats(0, time.Time{})
	if err := s.Delete(nil); err != nil {
		t.Errorf("Delete(nil): %v", err)
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

	commit(t, s, "cpn", Batch{Now: t0, Records: []diff.Record{plainRecord("a", t0, "CREATED", diff.Pending, false)}})
	if signalled() {
		t.Error("Changed signalled by a commit without messages")
	}

	commit(t, s, "cpn", Batch{Now: t0, Messages: []event.Message{msg(1)}})
	if !signalled() {
		t.Error("Changed not signalled by a commit with a message")
	}

	// Nobody reading: commits do not block, and one signal is kept.
	for i := range 3 {
		commit(t, s, "cpn", Batch{Now: t0, Messages: []event.Message{msg(2 + i)}})
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
				batch := Batch{Now: t0}
				for i := range 100 {
					n := page*100 + i
					id := fmt.Sprintf("%08x-111e-4d52-bdbf-2e74a2d803d5", n*2654435761%(1<<32)) // spread, as uuids are
					batch.Records = append(batch.Records, plainRecord(id, t0.Add(-time.Duration(n)*time.Second), "CREATED", diff.Pending, false))
					batch.Messages = append(batch.Messages, event.Message{ID: id, Subject: "payments.cpn.payment.pending", Body: body})
				}
				if err := s.Commit("cpn", batch); err != nil {
					b.Fatal(err)
				}
				page++
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(page*100), "µs/record")
		})
	}
}
