package stateapi

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/state"
	"github.com/payments-watcher/watcher/state/bbolt"
)

// TestOpenLastRead checks that the open items' view carries each item's read time,
// in UTC, and leaves it out when unknown.
func TestOpenLastRead(t *testing.T) {
	s, err := bbolt.Open(filepath.Join(t.TempDir(), "state.db"), bbolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	created := time.Date(2026, 11, 22, 3, 51, 10, 0, time.UTC)
	now := time.Date(2026, 11, 22, 5, 0, 0, 0, time.FixedZone("CET", 3600))
	rec := diff.Record{Kind: "payment", ID: "p1", Sequence: 1, CreatedAt: created,
		Status: diff.Status{Raw: "CRYPTO_FUNDS_PENDING", State: diff.Pending}}
	if err := s.Commit(t.Context(), "cpn", state.Batch{Now: now, Records: []diff.Record{rec}}); err != nil {
		t.Fatal(err)
	}
	later := now.Add(90 * time.Second)
	if err := s.Commit(t.Context(), "cpn", state.Batch{Reads: map[string]time.Time{"p1": later}}); err != nil {
		t.Fatal(err)
	}
	list, err := NewView(Bolt(s), []string{"cpn"}).Open(t.Context(), "cpn")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].LastRead == nil || !list[0].LastRead.Equal(later) || list[0].LastRead.Location() != time.UTC {
		t.Fatalf("Open = %+v, want p1 read at %v in UTC", list, later.UTC())
	}
	b, err := json.Marshal(list[0])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"last_read":"2026-11-22T04:01:30Z"`) {
		t.Errorf("JSON of an open item = %s, want last_read 2026-11-22T04:01:30Z", b)
	}
	if b, _ := json.Marshal(OpenItem{ID: "p2", CreatedAt: created}); strings.Contains(string(b), "last_read") {
		t.Errorf("JSON of an open item without a read time = %s, want no last_read", b)
	}
}
