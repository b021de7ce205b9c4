// Package diff compares what watcher last recorded about a provider item with what a
// provider returns now, and reports the status transitions between the two.
//
// It is pure: no I/O, no clock (the caller passes the observation time), no globals.
// Provider adapters turn provider JSON into Items; the poller feeds Items and stored
// Records to Compare and persists what it returns.
package diff

// State is the normalized, provider-independent status of an item. Subjects and
// consumers filter on it.
type State string

// The normalized states. Every provider status maps to exactly one of them.
const (
	Pending        State = "pending"
	ActionRequired State = "action_required"
	Processing     State = "processing"
	Completed      State = "completed"
	Underpaid      State = "underpaid"
	Failed         State = "failed"
	Canceled       State = "canceled"
	Expired        State = "expired"
	// Unknown is the state of a raw status that the provider's mapping table does not
	// know. Such statuses are published, never dropped, and counted: they mean the
	// adapter needs updating, not that the provider is down.
	Unknown State = "unknown"
)

// States lists every normalized state, in lifecycle order.
var States = []State{Pending, ActionRequired, Processing, Completed, Underpaid, Failed, Canceled, Expired, Unknown}

// Valid reports whether s is one of the normalized states.
func (s State) Valid() bool {
	for _, v := range States {
		if s == v {
			return true
		}
	}
	return false
}

// Status is what a provider said about an item's progress.
type Status struct {
	// Raw is the provider's own status value, verbatim ("FIAT_PAYMENT_INITIATED").
	Raw string
	// State is Raw mapped through the provider's table.
	State State
	// Addendum is extra progress information that the provider announces without a
	// status change (CPN statusAddendum, e.g. "IN_MANUAL_REVIEW"); "" when none. A change
	// of Addendum alone is a transition.
	Addendum string
	// Terminal reports that the provider will not change Raw again.
	Terminal bool
}

// Same reports whether a and b describe the same observable status: a transition
// happens exactly when Same is false.
func (a Status) Same(b Status) bool {
	return a.Raw == b.Raw && a.Addendum == b.Addendum
}

// Mapped is one row of a provider's status table.
type Mapped struct {
	State    State
	Terminal bool
}

// Mapping is a provider's status table: every documented raw value, nothing else.
type Mapping map[string]Mapped

// Status maps raw through m. A raw value m does not know maps to Unknown and is not
// terminal; known reports whether m knew it.
func (m Mapping) Status(raw, addendum string) (s Status, known bool) {
	row, known := m[raw]
	if !known {
		row = Mapped{State: Unknown}
	}
	return Status{Raw: raw, State: row.State, Addendum: addendum, Terminal: row.Terminal}, known
}

// WithTerminal returns a copy of m in which exactly the raw values in terminal are
// terminal. Values not in m are added with state Unknown, so that an operator can
// declare an undocumented status final.
func (m Mapping) WithTerminal(terminal []string) Mapping {
	out := make(Mapping, len(m)+len(terminal))
	for raw, row := range m {
		row.Terminal = false
		out[raw] = row
	}
	for _, raw := range terminal {
		row, ok := out[raw]
		if !ok {
			row.State = Unknown
		}
		row.Terminal = true
		out[raw] = row
	}
	return out
}
