package main

import "testing"

// An item whose last status in the truth is the one it had when the run started (it
// went away and came back between two reads) is not behind; one that ended elsewhere
// without being observed is.
func TestBehindCountsOnlyUnseenLastStatuses(t *testing.T) {
	created, review := status{raw: "CREATED"}, status{raw: "IN_MANUAL_REVIEW"}
	completed := status{raw: "COMPLETED"}
	ti := &truthIndex{chains: map[itemKey]*chain{
		{id: "round-trip"}: {states: []status{created, review, created}},
		{id: "moved"}:      {states: []status{created, review}},
		{id: "finished"}:   {states: []status{created, completed}, final: true},
		{id: "new"}:        {states: []status{{}, created}},
	}}
	final, other := newRecorder().behind(ti)
	if final != 1 || other != 2 {
		t.Errorf("behind = %d final, %d other; want 1 final (finished) and 2 others (moved, new)", final, other)
	}
}
