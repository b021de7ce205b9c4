// Package event defines the messages watcher publishes: one CloudEvents 1.0 JSON
// document per status transition, on subject {prefix}.{source}.{kind}.{state}.
//
// Consumers in Go can import this package to decode events; it depends on nothing of
// watcher's own.
package event

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/shopspring/decimal"
)

// Envelope constants.
const (
	SpecVersion = "1.0"
	// Type is the CloudEvents type of every event watcher publishes.
	Type = "watcher.status_changed"
	// ContentType is the NATS Content-Type header of every message.
	ContentType = "application/cloudevents+json"
	// HeaderMsgID is the JetStream de-duplication header; its value is the event id.
	HeaderMsgID = "Nats-Msg-Id"
)

// Event is the CloudEvents envelope.
type Event struct {
	SpecVersion     string    `json:"specversion"`
	ID              string    `json:"id"`
	Source          string    `json:"source"`  // "watcher/{source}"
	Type            string    `json:"type"`    // Type
	Subject         string    `json:"subject"` // the item id
	Time            time.Time `json:"time"`    // when watcher observed the transition (UTC)
	DataContentType string    `json:"datacontenttype"`
	Data            Data      `json:"data"`
}

// Data is the transition itself.
type Data struct {
	Source   string `json:"source"`   // configured source name
	Provider string `json:"provider"` // provider id, e.g. circle_cpn_payments
	Kind     string `json:"kind"`
	ID       string `json:"id"`
	// ParentID is the top-level item's id for a nested kind, null otherwise.
	ParentID *string `json:"parent_id"`
	// Previous is null when the item is seen for the first time.
	Previous   *Status           `json:"previous"`
	Current    Status            `json:"current"`
	Terminal   bool              `json:"terminal"`
	Sequence   uint32            `json:"sequence"` // per item, starts at 1
	CreatedAt  time.Time         `json:"created_at"`
	UpdatedAt  *time.Time        `json:"updated_at"`
	ObservedAt time.Time         `json:"observed_at"`
	Amount     *Money            `json:"amount"`
	Failure    *Failure          `json:"failure"`
	Refs       map[string]string `json:"refs"`
	// Item is the provider's object with secrets removed.
	Item json.RawMessage `json:"item"`
	// Poller names the replica that observed the transition and its lease on the
	// source; set only when several replicas share the sources (cluster mode).
	Poller *Poller `json:"poller,omitempty"`
}

// Poller is the replica that observed a transition in cluster mode.
type Poller struct {
	// ID is the replica's id (cluster.replica_id).
	ID string `json:"id"`
	// LeaseRevision is the revision at which the replica acquired the source's lease:
	// it grows with every new holder, so it orders the holders of a source.
	LeaseRevision uint64 `json:"lease_revision"`
}

// Status is one side of a transition.
type Status struct {
	Status   string `json:"status"` // the provider's raw value
	State    string `json:"state"`  // the normalized state
	Addendum string `json:"addendum,omitempty"`
}

// Money is an exact amount. Value is encoded as a decimal string with the scale the
// provider sent ("110.270000" stays so; "1E+4" becomes "10000").
type Money struct {
	Value    decimal.Decimal `json:"value"`
	Currency string          `json:"currency"`
}

// Text renders Value with the provider's scale.
func (m Money) Text() string {
	if exp := m.Value.Exponent(); exp < 0 {
		return m.Value.StringFixed(-exp)
	}
	return m.Value.String()
}

// MarshalJSON keeps the provider's scale: trailing zeros are significant in amounts
// whose currency has a fixed number of decimals.
func (m Money) MarshalJSON() ([]byte, error) {
	v := m.Text()
	cur, err := json.Marshal(m.Currency)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(v)+len(cur)+24)
	out = append(out, `{"value":"`...)
	out = append(out, v...)
	out = append(out, `","currency":`...)
	out = append(out, cur...)
	return append(out, '}'), nil
}

// Failure is the provider's reason for a failure.
type Failure struct {
	Reason string `json:"reason,omitempty"`
	Code   string `json:"code,omitempty"`
}

// Message is an event ready for the wire.
type Message struct {
	ID      string // event id, sent as Nats-Msg-Id
	Subject string
	Body    []byte // the JSON-encoded Event
}

// ID returns the deterministic id of a transition: the same transition observed twice,
// by the same or another process, gets the same id, so JetStream's duplicate window and
// consumers can drop repeats. parentID is "" for a top-level item; prev is nil on first
// sight.
func ID(source, kind, parentID, id string, sequence uint32, prev *Status, cur Status) string {
	h := sha256.New()
	var buf [10]byte
	for _, s := range []string{source, kind, parentID, id, strconv.FormatUint(uint64(sequence), 10)} {
		h.Write([]byte(s))
		h.Write(buf[:1]) // NUL separator: no field can contain it ambiguously
	}
	if prev != nil {
		h.Write([]byte{'p'})
		h.Write([]byte(prev.Status))
		h.Write(buf[:1])
		h.Write([]byte(prev.Addendum))
		h.Write(buf[:1])
	}
	h.Write([]byte{'c'})
	h.Write([]byte(cur.Status))
	h.Write(buf[:1])
	h.Write([]byte(cur.Addendum))
	sum := h.Sum(nil)
	return hex.EncodeToString(sum[:16])
}

// Subject returns {prefix}.{source}.{kind}.{state}.
func Subject(prefix, source, kind, state string) string {
	return prefix + "." + source + "." + kind + "." + state
}

// SplitSubject is the inverse of Subject for a prefix without dots.
func SplitSubject(subject string) (prefix, source, kind, state string, err error) {
	parts := strings.Split(subject, ".")
	if len(parts) < 4 {
		return "", "", "", "", fmt.Errorf("subject %q: want prefix.source.kind.state", subject)
	}
	n := len(parts)
	return strings.Join(parts[:n-3], "."), parts[n-3], parts[n-2], parts[n-1], nil
}

// Decode parses a message body.
func Decode(body []byte) (Event, error) {
	var e Event
	if err := json.Unmarshal(body, &e); err != nil {
		return Event{}, fmt.Errorf("decode event: %w", err)
	}
	if e.SpecVersion != SpecVersion || e.Type != Type {
		return Event{}, fmt.Errorf("decode event: specversion %q type %q is not a watcher event", e.SpecVersion, e.Type)
	}
	return e, nil
}
