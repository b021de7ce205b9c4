package poller

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/event"
)

// EventSource is what an event says of the source it comes from.
type EventSource struct {
	Name     string // the configured source name
	Provider string // the provider id, e.g. circle_cpn_payments
	Prefix   string // the subject prefix
	// Lease is the replica and its lease on the source in cluster mode, nil otherwise.
	Lease *event.Poller
}

// EventID returns the id of the event of tr from the source named source: the same for
// the same transition whoever observes it (see event.ID).
func EventID(source string, tr *diff.Transition) string {
	prev, cur := eventStatuses(tr)
	return event.ID(source, tr.Kind, tr.ParentID, tr.ID, tr.Sequence, prev, cur)
}

// Message renders transition tr, observed at now, as the event watcher publishes for
// it: id EventID, subject {prefix}.{source}.{kind}.{state}, and a CloudEvents body
// carrying tr.Item (an item without a raw body is sent as {}). It fails only if the
// body cannot be encoded.
func Message(src EventSource, tr *diff.Transition, now time.Time) (event.Message, error) {
	prev, cur := eventStatuses(tr)
	id := event.ID(src.Name, tr.Kind, tr.ParentID, tr.ID, tr.Sequence, prev, cur)
	it := tr.Item
	d := event.Data{
		Source: src.Name, Provider: src.Provider, Kind: tr.Kind, ID: tr.ID,
		Previous: prev, Current: cur, Terminal: tr.Current.Terminal, Sequence: tr.Sequence,
		CreatedAt: it.CreatedAt.UTC(), ObservedAt: now, Refs: it.Refs, Item: json.RawMessage(it.Raw),
	}
	if src.Lease != nil {
		l := *src.Lease
		d.Poller = &l
	}
	if tr.ParentID != "" {
		parent := tr.ParentID
		d.ParentID = &parent
	}
	if !it.UpdatedAt.IsZero() {
		u := it.UpdatedAt.UTC()
		d.UpdatedAt = &u
	}
	if it.Amount != nil {
		d.Amount = &event.Money{Value: it.Amount.Value, Currency: it.Amount.Currency}
	}
	if it.Failure != nil {
		d.Failure = &event.Failure{Reason: it.Failure.Reason, Code: it.Failure.Code}
	}
	if len(d.Item) == 0 {
		d.Item = json.RawMessage("{}")
	}
	body, err := json.Marshal(event.Event{
		SpecVersion: event.SpecVersion, ID: id, Source: "watcher/" + src.Name, Type: event.Type,
		Subject: tr.ID, Time: now, DataContentType: "application/json", Data: d,
	})
	if err != nil {
		return event.Message{}, fmt.Errorf("encode event for %s %s: %w", tr.Kind, tr.ID, err)
	}
	return event.Message{ID: id, Subject: event.Subject(src.Prefix, src.Name, tr.Kind, string(tr.Current.State)), Body: body}, nil
}

// eventStatuses returns tr's previous (nil on first sight) and current statuses as an
// event carries them.
func eventStatuses(tr *diff.Transition) (prev *event.Status, cur event.Status) {
	if tr.Previous != nil {
		prev = &event.Status{Status: tr.Previous.Raw, State: string(tr.Previous.State), Addendum: tr.Previous.Addendum}
	}
	return prev, event.Status{Status: tr.Current.Raw, State: string(tr.Current.State), Addendum: tr.Current.Addendum}
}
