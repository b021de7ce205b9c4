// Package state defines what watcher remembers between cycles, independently of where
// it is kept: the types a poller commits and a publisher drains (Batch, Meta, OpenItem,
// OutboxEntry, Ack, AckedEntry) and the binary encoding of every stored value. Both
// back ends, a local bbolt file (package state/bbolt) and NATS JetStream key-value
// buckets (package state/natskv), store these types with these encodings, so they hold
// byte-identical values and a change of format lands in one place.
//
// The back ends' common contract: a Batch is one page of observations, and an event
// exists in the outbox exactly when the record that produced it is stored, so a crash
// neither loses nor duplicates an event (the bbolt back end commits a Batch in one
// transaction; natskv orders its writes to the same effect).
package state

import (
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/event"
)

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
	// Reads are open items read without their record changing, with when each was
	// read: an id whose open index entry exists gets that entry's LastRead set (never
	// moved back); an id not in the open index is ignored (the item closed or stalled
	// meanwhile), and a read time never brings an entry back. A record in Records was
	// read at Now: its open index entry carries LastRead = Now without being listed here.
	// Read times are advisory: a back end without transactions (natskv) sets them after
	// the rest of the batch and skips one whose entry another commit changes meanwhile.
	Reads map[string]time.Time
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
	// LastRead is when the item was last read (by a walk or by id), kept so that a
	// restarted poller resumes each item's re-read schedule; zero when unknown (an
	// entry written before read times were kept).
	LastRead time.Time
}

// OutboxEntry is one message waiting for its JetStream acknowledgement.
type OutboxEntry struct {
	// Seq orders the outbox: entries are published in increasing Seq.
	Seq      uint64
	Enqueued time.Time
	Msg      event.Message
}

// Ack is the acknowledgement of one outbox entry by JetStream.
type Ack struct {
	Seq uint64
	// At is when the acknowledgement arrived.
	At time.Time
	// StreamSeq is the stream sequence the acknowledgement named; 0 if unknown.
	StreamSeq uint64
	// Duplicate is set when the stream already held the message: it was stored at
	// some earlier, unknown time.
	Duplicate bool
}

// AckedEntry is an outbox entry that JetStream acknowledged, retained until Prune.
type AckedEntry struct {
	OutboxEntry
	// Acked is when the acknowledgement that stored the message arrived.
	Acked time.Time
	// StreamSeq is the stream sequence of that acknowledgement; 0 if unknown.
	StreamSeq uint64
	// Duplicate is set when that acknowledgement was for a duplicate, so the message
	// was stored at some unknown time before Acked.
	Duplicate bool
}
