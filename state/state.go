// Package state keeps watcher's memory in one bbolt file: per source, the snapshot of
// every tracked item (what diff needs to compare), an index of open items and the
// source's metadata; and one outbox of events not yet acknowledged by JetStream.
//
// A page of observations is committed in one write transaction (snapshot records and
// outbox messages together), so an event exists in the outbox exactly when the record
// that produced it is stored: a crash loses neither and duplicates neither.
package state

import (
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/event"
)

// SchemaVersion is the layout version written to new files; Open refuses a file
// written with another one.
const SchemaVersion = 1

// Batch is everything one page of observations changes, committed atomically.
type Batch struct {
	// Now is the observation time, used to decide whether each record is open.
	Now time.Time
	// Records are upserted into the source's snapshot. A record that is Open(Now) and
	// not Stalled is put in the open index (with its CreatedAt); any other is removed
	// from it.
	Records []diff.Record
	// Messages are appended to the outbox, in order.
	Messages []event.Message
	// Meta, when not nil, replaces the source's metadata.
	Meta *Meta
}

// Meta is per-source metadata.
type Meta struct {
	// BaselineDone is set once the source's first complete walk has been committed.
	BaselineDone bool `json:"baseline_done"`
	// HighWater is the newest creation time seen by a completed walk.
	HighWater time.Time `json:"high_water"`
	// LastPoll is the end of the last successful cycle.
	LastPoll time.Time `json:"last_poll"`
	// Rebaseline asks for the next walk to be a silent baseline: every item is
	// re-recorded as the provider shows it, and no event is published for what changed
	// meanwhile. The poller clears it when that walk completes.
	Rebaseline bool `json:"rebaseline,omitempty"`
}

// OpenItem is one entry of a source's open index.
type OpenItem struct {
	ID        string
	CreatedAt time.Time
	// State is the record's OpenState when it was stored: the state that sets how often
	// the item is re-read; "" for a final item kept open by its settle window.
	State diff.State
}

// OutboxEntry is one message waiting for its JetStream acknowledgement.
type OutboxEntry struct {
	// Seq orders the outbox: entries are published in increasing Seq.
	Seq      uint64
	Enqueued time.Time
	Msg      event.Message
}
