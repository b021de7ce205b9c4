package sim

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"
)

// Transition is one status change the simulator made: the ground truth that a poller's
// events can be checked against.
type Transition struct {
	// Seq numbers the transitions of one simulator from 1, in the order they were made.
	Seq      uint64 `json:"seq"`
	Provider string `json:"provider"`
	// Kind is the item kind as watcher names it: "payment", "payment_refund",
	// "payment_rfi", "payment_onchain_transaction", "ramp_session", "settlement",
	// "settlement_detail", "onramp_session", "payment_transaction".
	Kind string `json:"kind"`
	// ID is the item's id (a Coindirect transaction's is its hash).
	ID string `json:"id"`
	// ParentID is the top-level item's id for a nested item, "" otherwise.
	ParentID string `json:"parent_id"`
	// From is "" when the item appears; To is the raw status it has afterwards. Coindirect
	// transactions have no status field: the simulator names their two states UNCONFIRMED
	// (dateConfirmed null) and CONFIRMED.
	From string `json:"from"`
	To   string `json:"to"`
	// FromAddendum and ToAddendum are the CPN statusAddendum before and after; a
	// transition can change only them.
	FromAddendum string `json:"from_addendum,omitempty"`
	ToAddendum   string `json:"to_addendum,omitempty"`
	// At is when the change took effect in simulated time (UTC, millisecond precision).
	At time.Time `json:"at"`
}

// truthLog keeps the newest transitions in a ring and streams every one to an optional
// JSONL writer.
type truthLog struct {
	mu     sync.Mutex
	seq    uint64
	ring   []Transition
	start  int // index of the oldest entry in ring once it is full
	limit  int
	w      io.Writer
	werr   error
	onWErr func(error)
}

func (l *truthLog) add(t Transition) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	t.Seq = l.seq
	if l.limit > 0 {
		if len(l.ring) < l.limit {
			l.ring = append(l.ring, t)
		} else {
			l.ring[l.start] = t
			l.start = (l.start + 1) % l.limit
		}
	}
	if l.w != nil && l.werr == nil {
		b, err := json.Marshal(t)
		if err == nil {
			_, err = l.w.Write(append(b, '\n'))
		}
		if err != nil {
			l.werr = fmt.Errorf("truth writer: transition %d: %w", t.Seq, err)
			if l.onWErr != nil {
				l.onWErr(l.werr)
			}
		}
	}
}

// since returns the retained transitions with Seq > after, oldest first.
func (l *truthLog) since(after uint64) []Transition {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Transition, 0, len(l.ring))
	for i := range l.ring {
		t := l.ring[(l.start+i)%len(l.ring)]
		if t.Seq > after {
			out = append(out, t)
		}
	}
	return out
}
