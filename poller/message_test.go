package poller

import (
	"testing"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/event"
)

func TestMessage(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	created := time.Date(2025, 3, 1, 11, 0, 0, 0, time.FixedZone("x", 3600))
	lease := &event.Poller{ID: "replica-1", LeaseRevision: 7}
	src := EventSource{Name: "cpn", Provider: "circle_cpn_payments", Prefix: "payments", Lease: lease}
	tr := diff.Transition{
		Kind: "payment_refund", ID: "r1", ParentID: "p1", Sequence: 2,
		Previous: &diff.Status{Raw: "PENDING", State: diff.Pending},
		Current:  diff.Status{Raw: "FAILED", State: diff.Failed, Terminal: true, Addendum: "x"},
		Item:     &diff.Item{Kind: "payment_refund", ID: "r1", CreatedAt: created, Failure: &diff.Failure{Code: "c"}},
	}
	m, err := Message(src, &tr, now)
	if err != nil {
		t.Fatal(err)
	}
	wantID := event.ID("cpn", "payment_refund", "p1", "r1", 2,
		&event.Status{Status: "PENDING", Addendum: ""}, event.Status{Status: "FAILED", Addendum: "x"})
	if m.ID != wantID || EventID("cpn", &tr) != wantID {
		t.Errorf("id %s, EventID %s, want %s", m.ID, EventID("cpn", &tr), wantID)
	}
	if m.Subject != "payments.cpn.payment_refund.failed" {
		t.Errorf("subject %q", m.Subject)
	}
	e, err := event.Decode(m.Body)
	if err != nil {
		t.Fatal(err)
	}
	d := e.Data
	if e.ID != m.ID || e.Source != "watcher/cpn" || e.Subject != "r1" || !e.Time.Equal(now) {
		t.Errorf("envelope %+v", e)
	}
	if d.ParentID == nil || *d.ParentID != "p1" || d.Previous == nil || d.Previous.State != "pending" ||
		d.Current != (event.Status{Status: "FAILED", State: "failed", Addendum: "x"}) || !d.Terminal || d.Sequence != 2 {
		t.Errorf("transition %+v", d)
	}
	if d.CreatedAt.Location() != time.UTC || !d.CreatedAt.Equal(created) || d.UpdatedAt != nil || d.Amount != nil ||
		d.Failure == nil || d.Failure.Code != "c" || string(d.Item) != "{}" {
		t.Errorf("item fields %+v", d)
	}
	if d.Poller == nil || *d.Poller != *lease {
		t.Errorf("poller %+v, want %+v", d.Poller, lease)
	}
}
