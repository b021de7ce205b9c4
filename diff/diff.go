package diff

import (
	"time"

	"github.com/shopspring/decimal"
)

// Item is one provider object as observed now, already mapped by its adapter.
type Item struct {
	// Kind names the object type in subjects and events ("payment", "payment_refund").
	Kind string
	// ID is the provider's id, unique per Kind within a source (within its parent for
	// nested items).
	ID     string
	Status Status
	// CreatedAt is the provider's creation time (UTC). Lists are ordered and filtered by it.
	CreatedAt time.Time
	// UpdatedAt is the provider's last-update time; zero when the provider has none.
	UpdatedAt time.Time
	Amount    *Money
	Failure   *Failure
	// Refs are the provider's reference fields worth filtering on (customer_ref_id, …).
	Refs map[string]string
	// Raw is the provider's JSON object with every secret field removed; it becomes the
	// event's data.item.
	Raw []byte
	// Nested are the items inside this one that have statuses of their own (CPN refunds,
	// RFIs and on-chain transactions; settlement details; Coindirect transactions).
	// They have no Nested of their own.
	Nested []Item
	// Settling reports that the provider may still attach nested items to this item even
	// once it and its nested items are final (a FAILED CPN payment gains refunds), so it
	// stays open for the source's settle window.
	Settling bool
}

// Money is an exact amount in a currency.
type Money struct {
	Value    decimal.Decimal
	Currency string
}

// Failure is the provider's explanation of a failed item.
type Failure struct {
	Reason string
	Code   string
}

// Record is what watcher keeps about one top-level item between polls: only what the
// next comparison needs.
type Record struct {
	Kind      string
	ID        string
	Status    Status
	Sequence  uint32 // transitions so far, first sight included; 0 never appears in a stored record
	CreatedAt time.Time
	// SettleUntil is when a final, Settling item stops being open; zero otherwise.
	SettleUntil time.Time
	Nested      []NestedRecord
	// Stalled marks an item that stayed open past the source's open_max_age and is no
	// longer re-read.
	Stalled bool
}

// NestedRecord is the stored state of one nested item.
type NestedRecord struct {
	Kind     string
	ID       string
	Status   Status
	Sequence uint32
}

// Final reports whether the item and every nested item it has are terminal.
func (r *Record) Final() bool {
	if !r.Status.Terminal {
		return false
	}
	for i := range r.Nested {
		if !r.Nested[i].Status.Terminal {
			return false
		}
	}
	return true
}

// OpenState is the state that keeps the item open: its own when it is not terminal,
// else the first non-terminal nested item's; "" when all are terminal.
func (r *Record) OpenState() State {
	if !r.Status.Terminal {
		return r.Status.State
	}
	for i := range r.Nested {
		if !r.Nested[i].Status.Terminal {
			return r.Nested[i].Status.State
		}
	}
	return ""
}

// Open reports whether the item must still be re-read at time now: it or a nested item
// is not final, or it may still gain nested items.
func (r *Record) Open(now time.Time) bool {
	return !r.Final() || now.Before(r.SettleUntil)
}

// Transition is one status change of one item, nested or not.
type Transition struct {
	Kind string
	ID   string
	// ParentID is the top-level item's id for a nested item, "" otherwise.
	ParentID string
	// Previous is nil when the item is seen for the first time.
	Previous *Status
	Current  Status
	// Sequence counts the item's transitions, starting at 1 with first sight.
	Sequence uint32
	// Item is the observed item (the nested one for a nested transition).
	Item *Item
	// Parent is the observed top-level item for a nested transition, nil otherwise.
	Parent *Item
}

// Options are the inputs of a comparison that do not come from the provider.
type Options struct {
	// Now is the observation time.
	Now time.Time
	// SettleWindow is how long a final, Settling item stays open (DESIGN settle_window).
	SettleWindow time.Duration
}

// Compare returns the record to store after observing obs, the transitions from prev to
// obs in order (the top-level item first, then nested items in observed order), and
// whether the returned record differs from prev (false means nothing needs writing).
//
// prev is nil for an item never seen before: every status in obs is then a first
// sight. A nested item that prev has but obs lacks is kept as it was: an absence is not
// a transition. obs is not modified; transitions point into it.
func Compare(prev *Record, obs *Item, opt Options) (Record, []Transition, bool) {
	var out []Transition
	next := Record{Kind: obs.Kind, ID: obs.ID, CreatedAt: obs.CreatedAt, Status: obs.Status}
	changed := prev == nil
	wasFinal := false
	if prev == nil {
		next.Sequence = 1
		out = append(out, Transition{Kind: obs.Kind, ID: obs.ID, Current: obs.Status, Sequence: 1, Item: obs})
	} else {
		wasFinal = prev.Final()
		next.Sequence = prev.Sequence
		next.SettleUntil = prev.SettleUntil
		next.Stalled = prev.Stalled
		if !prev.Status.Same(obs.Status) {
			next.Sequence++
			p := prev.Status
			out = append(out, Transition{Kind: obs.Kind, ID: obs.ID, Previous: &p, Current: obs.Status, Sequence: next.Sequence, Item: obs})
			changed = true
		} else if prev.Status != obs.Status || !prev.CreatedAt.Equal(obs.CreatedAt) {
			changed = true // same raw status, but its mapping or the creation time moved
		}
	}

	if prev != nil && len(prev.Nested) > 0 {
		next.Nested = make([]NestedRecord, len(prev.Nested), len(prev.Nested)+len(obs.Nested))
		copy(next.Nested, prev.Nested)
	} else if len(obs.Nested) > 0 {
		next.Nested = make([]NestedRecord, 0, len(obs.Nested))
	}
	for i := range obs.Nested {
		n := &obs.Nested[i]
		j := findNested(next.Nested, n.Kind, n.ID)
		if j < 0 {
			next.Nested = append(next.Nested, NestedRecord{Kind: n.Kind, ID: n.ID, Status: n.Status, Sequence: 1})
			out = append(out, Transition{Kind: n.Kind, ID: n.ID, ParentID: obs.ID, Current: n.Status, Sequence: 1, Item: n, Parent: obs})
			changed = true
			continue
		}
		rec := &next.Nested[j]
		if !rec.Status.Same(n.Status) {
			p := rec.Status
			rec.Sequence++
			rec.Status = n.Status
			out = append(out, Transition{Kind: n.Kind, ID: n.ID, ParentID: obs.ID, Previous: &p, Current: n.Status, Sequence: rec.Sequence, Item: n, Parent: obs})
			changed = true
		} else if rec.Status != n.Status {
			rec.Status = n.Status
			changed = true
		}
	}

	// Settle window: starts when the item is first seen final, measured from the last
	// moment the provider can have changed it when watcher saw it happen earlier.
	final := next.Final()
	switch {
	case !final || !obs.Settling || opt.SettleWindow <= 0:
		if !next.SettleUntil.IsZero() && (!final || !obs.Settling) {
			next.SettleUntil = time.Time{}
			changed = true
		}
	case prev == nil:
		since := obs.CreatedAt
		if obs.UpdatedAt.After(since) {
			since = obs.UpdatedAt
		}
		next.SettleUntil = since.Add(opt.SettleWindow)
		if !next.SettleUntil.After(opt.Now) {
			next.SettleUntil = time.Time{}
		}
	case !wasFinal:
		next.SettleUntil = opt.Now.Add(opt.SettleWindow)
		changed = true
	}
	if !next.SettleUntil.IsZero() && final && !opt.Now.Before(next.SettleUntil) {
		next.SettleUntil = time.Time{} // the window passed: store it closed, once
		changed = true
	}
	if len(out) > 0 && next.Stalled {
		next.Stalled = false // it moved: re-reading it is worth while again
	}
	return next, out, changed
}

func findNested(ns []NestedRecord, kind, id string) int {
	for i := range ns {
		if ns[i].ID == id && ns[i].Kind == kind {
			return i
		}
	}
	return -1
}
