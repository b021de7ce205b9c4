package main

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/event"
)

// polled is a stored event of source observed by replica under the lease acquired at
// revision, at second at of the run.
func polled(seq uint64, source, replica string, revision uint64, at int) Stored {
	e := event.Event{ID: fmt.Sprint("e", seq), Data: event.Data{Source: source,
		ObservedAt: time.Unix(1_000_000+int64(at), 0)}}
	if replica != "" {
		e.Data.Poller = &event.Poller{ID: replica, LeaseRevision: revision}
	}
	return Stored{Seq: seq, Event: e}
}

func TestCheckPollers(t *testing.T) {
	for _, tc := range []struct {
		name                     string
		msgs                     []Stored
		tenures, moves, overlaps int
		unnamed, reordered       int
	}{
		{name: "handovers in turn", msgs: []Stored{
			polled(1, "cpn", "r1", 5, 1), polled(2, "cpn", "r1", 5, 3), polled(3, "ramp", "r2", 6, 2),
			polled(4, "cpn", "r2", 9, 4), polled(5, "cpn", "r1", 12, 8), polled(6, "ramp", "r3", 13, 9),
		}, tenures: 5, moves: 3},
		{name: "an old holder observes after the next began", msgs: []Stored{
			polled(1, "cpn", "r1", 5, 1), polled(2, "cpn", "r2", 9, 4), polled(3, "cpn", "r1", 5, 6),
		}, tenures: 2, moves: 1, overlaps: 1, reordered: 1},
		{name: "a holder two leases back overlaps the newest", msgs: []Stored{
			polled(1, "cpn", "r1", 5, 10), polled(2, "cpn", "r2", 9, 2), polled(3, "cpn", "r3", 12, 7),
		}, tenures: 3, moves: 2, overlaps: 2},
		{name: "a retried publish stored late, observed in turn", msgs: []Stored{
			polled(1, "cpn", "r2", 9, 4), polled(2, "cpn", "r1", 5, 1),
		}, tenures: 2, moves: 1, reordered: 1},
		{name: "an event without poller", msgs: []Stored{
			polled(1, "cpn", "r1", 5, 1), polled(2, "cpn", "", 0, 2),
		}, tenures: 1, unnamed: 1},
		{name: "undecodable messages are Check's", msgs: []Stored{{Seq: 1, Err: errors.New("decode event: EOF")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := CheckPollers(tc.msgs)
			if r.Tenures != tc.tenures || r.Moves != tc.moves || r.Overlaps.N != tc.overlaps ||
				r.Unnamed.N != tc.unnamed || r.Reordered != tc.reordered {
				t.Errorf("got %d tenures, %d moves, %d overlaps %q, %d unnamed, %d reordered; want %d, %d, %d, %d, %d",
					r.Tenures, r.Moves, r.Overlaps.N, r.Overlaps.Samples, r.Unnamed.N, r.Reordered,
					tc.tenures, tc.moves, tc.overlaps, tc.unnamed, tc.reordered)
			}
			if r.OK() != (tc.overlaps == 0 && tc.unnamed == 0) {
				t.Errorf("OK() = %v", r.OK())
			}
		})
	}
}
