package main

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/sim"
)

// history builds truth transitions for one item from its statuses.
func history(provider, kind, parent, id string, statuses ...string) []sim.Transition {
	var out []sim.Transition
	from := ""
	for _, s := range statuses {
		out = append(out, sim.Transition{Provider: provider, Kind: kind, ParentID: parent, ID: id, From: from, To: s})
		from = s
	}
	return out
}

// events builds the consistent events of one item that saw statuses, sequence 1 first.
func events(source, provider, kind, parent, id string, statuses ...string) []Stored {
	var out []Stored
	var prev *event.Status
	for i, s := range statuses {
		cur := event.Status{Status: s, State: strings.ToLower(s)}
		d := event.Data{Source: source, Provider: provider, Kind: kind, ID: id, Previous: prev, Current: cur, Sequence: uint32(i + 1)}
		if parent != "" {
			d.ParentID = &parent
		}
		e := event.Event{ID: event.ID(source, kind, parent, id, d.Sequence, prev, cur), Source: "watcher/" + source, Subject: id, Data: d}
		out = append(out, Stored{Subject: event.Subject(subjectPrefix, source, kind, cur.State), MsgID: e.ID, Event: e})
		prev = &cur
	}
	return out
}

// numbered gives messages their stream sequence numbers in order.
func numbered(msgs ...[]Stored) []Stored {
	var out []Stored
	for _, m := range msgs {
		out = append(out, m...)
	}
	for i := range out {
		out[i].Seq = uint64(i + 1)
	}
	return out
}

func truthOf(parts ...[]sim.Transition) []sim.Transition {
	var out []sim.Transition
	for _, p := range parts {
		out = append(out, p...)
	}
	for i := range out {
		out[i].Seq = uint64(i + 1)
	}
	return out
}

var checkTruth = truthOf(
	history(sim.ProviderCPN, "payment", "", "p1", "CREATED", "CRYPTO_FUNDS_PENDING", "FIAT_PAYMENT_INITIATED", "COMPLETED"),
	history(sim.ProviderCPN, "payment_refund", "p1", "r1", "CREATED", "COMPLETED"),
	history(sim.ProviderCoindirect, "payment", "", "c1", "PENDING", "EXPIRED"),
)

// cleanStream saw every item's final status, skipping p1's CRYPTO_FUNDS_PENDING.
func cleanStream() [][]Stored {
	return [][]Stored{
		events("cpn", sim.ProviderCPN, "payment", "", "p1", "CREATED", "FIAT_PAYMENT_INITIATED", "COMPLETED"),
		events("cpn", sim.ProviderCPN, "payment_refund", "p1", "r1", "CREATED", "COMPLETED"),
		events("coindirect", sim.ProviderCoindirect, "payment", "", "c1", "EXPIRED"),
	}
}

func TestCheckPassesAConsistentStream(t *testing.T) {
	r := Check(checkTruth, numbered(cleanStream()...), subjectPrefix)
	if !r.OK() || r.Lost() != 0 || r.Duplicated() != 0 || r.OutOfOrder != 0 {
		t.Fatalf("clean stream: %+v", r)
	}
	if r.Events != 6 || r.Items != 3 || r.Transitions != 8 {
		t.Errorf("counted %d events, %d items, %d transitions; want 6, 3, 8", r.Events, r.Items, r.Transitions)
	}
}

func TestCheckAllowsStreamOrderOtherThanSequenceOrder(t *testing.T) {
	s := cleanStream()
	s[0][1], s[0][2] = s[0][2], s[0][1]
	r := Check(checkTruth, numbered(s...), subjectPrefix)
	if !r.OK() || r.OutOfOrder != 1 {
		t.Fatalf("reordered stream: OK %v, out of order %d; want OK with 1", r.OK(), r.OutOfOrder)
	}
}

func TestCheckFindsEachViolation(t *testing.T) {
	for _, c := range []struct {
		name  string
		edit  func(s [][]Stored) [][]Stored
		field func(r Result) Problems
		lost  int
		dup   int
	}{
		{"final status missing", func(s [][]Stored) [][]Stored { s[0] = s[0][:2]; return s },
			func(r Result) Problems { return r.MissingFinal }, 1, 0},
		{"item without events", func(s [][]Stored) [][]Stored { s[2] = nil; return s },
			func(r Result) Problems { return r.MissingFinal }, 1, 0},
		{"sequence gap", func(s [][]Stored) [][]Stored { s[0] = slices.Delete(s[0], 1, 2); return s },
			func(r Result) Problems { return r.SequenceGaps }, 1, 0},
		{"event stored twice", func(s [][]Stored) [][]Stored { return append(s, s[1][:1]) },
			func(r Result) Problems { return r.DuplicateIDs }, 0, 2},
		{"transition stored twice under another id", func(s [][]Stored) [][]Stored {
			again := events("cpn", sim.ProviderCPN, "payment_refund", "p1", "r1", "COMPLETED")
			again[0].Event.ID, again[0].MsgID = "another", "another"
			return append(s, again)
		}, func(r Result) Problems { return r.DuplicateTransitions }, 0, 1},
		{"status the item never had", func(s [][]Stored) [][]Stored {
			s[2] = events("coindirect", sim.ProviderCoindirect, "payment", "", "c1", "PENDING", "CANCELLED", "EXPIRED")
			return s
		}, func(r Result) Problems { return r.NotInHistory }, 0, 0},
		{"statuses out of their true order", func(s [][]Stored) [][]Stored {
			s[0] = events("cpn", sim.ProviderCPN, "payment", "", "p1", "FIAT_PAYMENT_INITIATED", "CREATED", "COMPLETED")
			return s
		}, func(r Result) Problems { return r.NotInHistory }, 0, 0},
		{"previous is not the predecessor's current", func(s [][]Stored) [][]Stored {
			p := event.Status{Status: "CRYPTO_FUNDS_PENDING"}
			s[0][2].Event.Data.Previous = &p
			d := s[0][2].Event.Data
			s[0][2].Event.ID = event.ID(d.Source, d.Kind, "", d.ID, d.Sequence, d.Previous, d.Current)
			s[0][2].MsgID = s[0][2].Event.ID
			return s
		}, func(r Result) Problems { return r.ChainBreaks }, 0, 0},
		{"item the truth does not know", func(s [][]Stored) [][]Stored {
			return append(s, events("onramp", sim.ProviderStripe, "onramp_session", "", "cos_1", "initialized"))
		}, func(r Result) Problems { return r.Phantoms }, 0, 0},
		{"subject disagrees with the data", func(s [][]Stored) [][]Stored { s[1][0].Subject = "payments.cpn.payment_refund.failed"; return s },
			func(r Result) Problems { return r.Malformed }, 0, 0},
		{"Nats-Msg-Id is not the event id", func(s [][]Stored) [][]Stored { s[1][0].MsgID = "x"; return s },
			func(r Result) Problems { return r.Malformed }, 0, 0},
		{"body is not an event", func(s [][]Stored) [][]Stored {
			return append(s, []Stored{{Subject: "payments.cpn.payment.pending", Err: errors.New("decode event: EOF")}})
		}, func(r Result) Problems { return r.Malformed }, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := Check(checkTruth, numbered(c.edit(cleanStream())...), subjectPrefix)
			if p := c.field(r); p.N == 0 || len(p.Samples) == 0 {
				t.Errorf("not found: %+v", r)
			}
			if r.OK() || r.Lost() != c.lost || r.Duplicated() != c.dup {
				t.Errorf("OK %v, lost %d, duplicated %d; want not OK, %d, %d", r.OK(), r.Lost(), r.Duplicated(), c.lost, c.dup)
			}
		})
	}
}

func TestReadTruth(t *testing.T) {
	in := `{"seq":1,"provider":"coindirect_payments","kind":"payment","id":"c1","parent_id":"","from":"","to":"PENDING","at":"2026-11-22T10:00:00Z"}
{"seq":2,"provider":"coindirect_payments","kind":"payment","id":"c1","parent_id":"","from":"PENDING","to":"EXPIRED","at":"2026-11-22T10:00:01Z"}
`
	got, err := ReadTruth(strings.NewReader(in))
	if err != nil || len(got) != 2 || got[1].To != "EXPIRED" || got[1].Seq != 2 {
		t.Fatalf("ReadTruth: %+v, %v", got, err)
	}
	if _, err := ReadTruth(strings.NewReader("{\"seq\":1}\nnot json\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("bad line: %v", err)
	}
}
