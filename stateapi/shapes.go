// Package stateapi is the /state/ API of watcher's state: what `watcher state`
// shows (the JSON shapes below), a View answering it from either state back end
// (a bbolt file or the shared NATS KV buckets), the HTTP handler a running daemon
// serves it with on its private admin listener, and the Client that asks that
// handler. A View and a Client give the same answers; both are a Reader.
//
// # Endpoints
//
//	GET  /state/sources                   []SourceInfo
//	GET  /state/items/{source}/{id}       Record
//	GET  /state/open/{source}             []OpenItem
//	GET  /state/export/{source}           Record lines (JSON Lines)
//	GET  /state/outbox[?limit=N]          OutboxEntry lines (JSON Lines)
//	POST /state/rebaseline/{source}       202, Content-Type application/json
//
// Errors are {"error": "…"} with 400, 401, 404 or 500; a JSON Lines answer that
// fails after its first line ends with such a line.
//
// # Authentication
//
// Over a unix socket the socket's file mode (0600) is the authentication. Over TCP,
// every POST requires "Authorization: Bearer TOKEN", and is refused when no token is
// configured; when a token is configured, every other endpoint requires it too.
// The status page on the same listener (package statuspage) follows these rules,
// and also takes the token as a query parameter (Access.CheckPage).
package stateapi

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/payments-watcher/watcher/diff"
)

// SourceInfo is one line of `watcher state sources`.
type SourceInfo struct {
	Name string `json:"name"`
	// Configured is false for a source the state holds but the configuration no
	// longer names (always true without a configuration).
	Configured   bool       `json:"configured"`
	Items        int        `json:"items"`
	Open         int        `json:"open"`
	Stalled      int        `json:"stalled"`
	HighWater    *time.Time `json:"high_water"`
	LastPoll     *time.Time `json:"last_poll"`
	BaselineDone bool       `json:"baseline_done"`
	Rebaseline   bool       `json:"rebaseline"`
}

// Status is a stored status, named as in events.
type Status struct {
	Status   string `json:"status"`
	State    string `json:"state"`
	Addendum string `json:"addendum,omitempty"`
	Terminal bool   `json:"terminal"`
}

// Record is a stored record as `watcher state get` and `export` print it.
type Record struct {
	Source      string     `json:"source"`
	Kind        string     `json:"kind"`
	ID          string     `json:"id"`
	Status      Status     `json:"current"`
	Sequence    uint32     `json:"sequence"`
	CreatedAt   time.Time  `json:"created_at"`
	SettleUntil *time.Time `json:"settle_until,omitempty"`
	Stalled     bool       `json:"stalled"`
	Nested      []Nested   `json:"nested,omitempty"`
}

// Nested is a nested item of a Record.
type Nested struct {
	Kind     string `json:"kind"`
	ID       string `json:"id"`
	Status   Status `json:"current"`
	Sequence uint32 `json:"sequence"`
}

// OpenItem is one open item.
type OpenItem struct {
	ID        string    `json:"id"`
	CreatedAt time.Time `json:"created_at"`
	Kind      string    `json:"kind"`
	Status    string    `json:"status"`
	// State is the state that keeps the item open (a nested item's when the item is
	// final); "" for a final item kept open by its settle window.
	State string `json:"state"`
	// LastRead is when the item was last read, in UTC; absent when the state does not
	// know (an entry written before read times were kept).
	LastRead *time.Time `json:"last_read,omitempty"`
}

// OutboxEntry is one event waiting for NATS.
type OutboxEntry struct {
	Seq      uint64    `json:"seq"`
	Enqueued time.Time `json:"enqueued"`
	Subject  string    `json:"subject"`
	ID       string    `json:"id"`
}

// streamError is an error answer, and the last line of a JSON Lines answer that
// failed after it started.
type streamError struct {
	Error string `json:"error"`
}

// Reader is what `watcher state` asks: a View on a store, or a Client of a running
// daemon. Errors wrap ErrUnknownSource, ErrNotFound or ErrBadRequest when they fit.
type Reader interface {
	Sources(ctx context.Context) ([]SourceInfo, error)
	Record(ctx context.Context, source, id string) (Record, error)
	Open(ctx context.Context, source string) ([]OpenItem, error)
	// Export calls fn with every record of source in id order.
	Export(ctx context.Context, source string, fn func(Record) error) error
	// Outbox calls fn with the pending events in order, at most limit (0: all).
	Outbox(ctx context.Context, limit int, fn func(OutboxEntry) error) error
	// Rebaseline makes the next cycle of source a silent baseline.
	Rebaseline(ctx context.Context, source string) error
}

var (
	// ErrUnknownSource is wrapped by the errors naming a source neither configured
	// nor in the state.
	ErrUnknownSource = errors.New("unknown source")
	// ErrNotFound is wrapped by the error of a record that is not stored.
	ErrNotFound = errors.New("not found")
	// ErrBadRequest is wrapped by the errors of a malformed request.
	ErrBadRequest = errors.New("bad request")
	// ErrUnauthorized is wrapped by the errors of a request without the token the
	// admin listener requires.
	ErrUnauthorized = errors.New("unauthorized")
)

// UnknownSource returns the error of source, listing the known ones.
func UnknownSource(source string, known []string) error {
	list := strings.Join(known, ", ")
	if list == "" {
		list = "none"
	}
	return fmt.Errorf("%w %q (known: %s)", ErrUnknownSource, source, list)
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func statusOf(s diff.Status) Status {
	return Status{Status: s.Raw, State: string(s.State), Addendum: s.Addendum, Terminal: s.Terminal}
}

// RecordOf returns the Record of r, a record of source.
func RecordOf(source string, r *diff.Record) Record {
	out := Record{
		Source: source, Kind: r.Kind, ID: r.ID, Status: statusOf(r.Status), Sequence: r.Sequence,
		CreatedAt: r.CreatedAt, SettleUntil: timePtr(r.SettleUntil), Stalled: r.Stalled,
	}
	for _, n := range r.Nested {
		out.Nested = append(out.Nested, Nested{Kind: n.Kind, ID: n.ID, Status: statusOf(n.Status), Sequence: n.Sequence})
	}
	return out
}
