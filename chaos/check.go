package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/sim"
)

// Stored is one message read back from the stream.
type Stored struct {
	// Seq is the stream sequence number: the order in which JetStream stored it.
	Seq     uint64
	Subject string
	// MsgID is the Nats-Msg-Id header.
	MsgID string
	Event event.Event
	// Err is set when the body is not a watcher event.
	Err error
}

// ReadTruth parses the simulator's ground truth (one sim.Transition per line).
func ReadTruth(r io.Reader) ([]sim.Transition, error) {
	var out []sim.Transition
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		var t sim.Transition
		if err := json.Unmarshal(sc.Bytes(), &t); err != nil {
			return nil, fmt.Errorf("truth line %d: %w", line, err)
		}
		out = append(out, t)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("truth: %w", err)
	}
	return out, nil
}

// Problems counts one kind of violation and keeps the first few descriptions.
type Problems struct {
	N       int
	Samples []string
}

const maxSamples = 10

func (p *Problems) add(format string, args ...any) {
	p.N++
	if len(p.Samples) < maxSamples {
		p.Samples = append(p.Samples, fmt.Sprintf(format, args...))
	}
}

// Result is what Check found. Every Problems field must be empty for a run to pass;
// OutOfOrder is reported but allowed (see Check).
type Result struct {
	// Events is the number of messages checked, Items the number of distinct items
	// (top-level and nested) in the truth, Transitions the number of truth lines.
	Events, Items, Transitions int

	// MissingFinal: items whose newest event (by sequence) does not carry the status
	// the truth ends with, or that have no event at all.
	MissingFinal Problems
	// SequenceGaps: items whose sequences, sorted, are not 1..n: an event watcher
	// numbered never reached the stream.
	SequenceGaps Problems
	// DuplicateIDs: event ids stored more than once (each extra copy counts).
	DuplicateIDs Problems
	// DuplicateTransitions: (source, kind, parent id, id, sequence) stored more than once.
	DuplicateTransitions Problems
	// ChainBreaks: an event whose previous status is not its predecessor's current one,
	// a first event with a previous status, or an event that changes nothing.
	ChainBreaks Problems
	// NotInHistory: items whose event statuses, in sequence order, are not a
	// subsequence of the statuses the truth gave them.
	NotInHistory Problems
	// Phantoms: events of items the truth does not know.
	Phantoms Problems
	// Malformed: messages that do not decode, or whose subject, id, Nats-Msg-Id or
	// CloudEvents source and subject disagree with their data.
	Malformed Problems

	// OutOfOrder counts the items whose events the stream holds in another order than
	// their sequence numbers. The delivery guarantee allows it: a publish retried
	// after a failure lands after later messages of its window.
	OutOfOrder int
}

// Lost is the number of items with a missing final status or a sequence gap.
func (r Result) Lost() int { return r.MissingFinal.N + r.SequenceGaps.N }

// Duplicated is the number of extra copies of events and transitions.
func (r Result) Duplicated() int { return r.DuplicateIDs.N + r.DuplicateTransitions.N }

// OK reports whether no check failed.
func (r Result) OK() bool {
	for _, p := range r.problems() {
		if p.p.N > 0 {
			return false
		}
	}
	return true
}

type namedProblems struct {
	name string
	p    Problems
}

func (r Result) problems() []namedProblems {
	return []namedProblems{
		{"missing final status", r.MissingFinal}, {"sequence gap", r.SequenceGaps},
		{"duplicate event id", r.DuplicateIDs}, {"duplicate transition", r.DuplicateTransitions},
		{"chain break", r.ChainBreaks}, {"not in the true history", r.NotInHistory},
		{"phantom item", r.Phantoms}, {"malformed message", r.Malformed},
	}
}

// itemKey names one item, top-level or nested, across providers.
type itemKey struct {
	provider, kind, parent, id string
}

func (k itemKey) String() string {
	if k.parent != "" {
		return k.provider + " " + k.kind + " " + k.parent + "/" + k.id
	}
	return k.provider + " " + k.kind + " " + k.id
}

// status is a raw status with its addendum: what makes a transition.
type status struct {
	raw, addendum string
}

func (s status) String() string {
	if s.addendum != "" {
		return s.raw + "+" + s.addendum
	}
	return s.raw
}

func statusOf(s event.Status) status { return status{s.Status, s.Addendum} }

func eventKey(d event.Data) itemKey {
	parent := ""
	if d.ParentID != nil {
		parent = *d.ParentID
	}
	return itemKey{d.Provider, d.Kind, parent, d.ID}
}

// Check compares the stream with the truth. The stream must hold every message
// published, in stream order; prefix is nats.subject_prefix.
//
// Delivery is checked per item, after sorting its events by data.sequence (stream order
// may differ, see Result.OutOfOrder): the sequences are exactly 1..n, each event's
// previous status is its predecessor's current one, the statuses are a subsequence of
// the item's true history (watcher may miss a status that lasted less than a poll, never
// invent or reorder one), and the last one is the status the truth ends with. No event
// id and no (source, kind, parent id, id, sequence) may be stored twice.
func Check(truth []sim.Transition, stream []Stored, prefix string) Result {
	r := Result{Events: len(stream), Transitions: len(truth)}
	history := map[itemKey][]status{}
	var order []itemKey
	for _, t := range slices.SortedFunc(slices.Values(truth), func(a, b sim.Transition) int { return cmp.Compare(a.Seq, b.Seq) }) {
		k := itemKey{t.Provider, t.Kind, t.ParentID, t.ID}
		if _, ok := history[k]; !ok {
			order = append(order, k)
		}
		history[k] = append(history[k], status{t.To, t.ToAddendum})
	}
	r.Items = len(history)

	ids := map[string]int{}
	type transKey struct {
		source string
		item   itemKey
		seq    uint32
	}
	transitions := map[transKey]int{}
	events := map[itemKey][]Stored{}
	for _, m := range stream {
		if m.Err != nil {
			r.Malformed.add("stream seq %d on %s: %v", m.Seq, m.Subject, m.Err)
			continue
		}
		e, d := m.Event, m.Event.Data
		k := eventKey(d)
		if ids[e.ID]++; ids[e.ID] > 1 {
			r.DuplicateIDs.add("event id %s (%s seq %d) stored again at stream seq %d", e.ID, k, d.Sequence, m.Seq)
		}
		tk := transKey{d.Source, k, d.Sequence}
		if transitions[tk]++; transitions[tk] > 1 {
			r.DuplicateTransitions.add("%s sequence %d stored again at stream seq %d (event id %s)", k, d.Sequence, m.Seq, e.ID)
		}
		if why := malformed(m, prefix); why != "" {
			r.Malformed.add("stream seq %d: %s", m.Seq, why)
		}
		events[k] = append(events[k], m)
	}

	for k, evs := range events {
		if _, ok := history[k]; !ok {
			r.Phantoms.add("%s: %d events, no truth", k, len(evs))
		}
	}
	for _, k := range order {
		checkItem(&r, k, history[k], events[k])
	}
	return r
}

// malformed says what is inconsistent in one decoded message, "" if nothing.
func malformed(m Stored, prefix string) string {
	e, d := m.Event, m.Event.Data
	parent := ""
	if d.ParentID != nil {
		parent = *d.ParentID
	}
	var why []string
	if want := event.ID(d.Source, d.Kind, parent, d.ID, d.Sequence, d.Previous, d.Current); e.ID != want {
		why = append(why, fmt.Sprintf("id %s, want %s", e.ID, want))
	}
	if m.MsgID != e.ID {
		why = append(why, fmt.Sprintf("Nats-Msg-Id %q, id %s", m.MsgID, e.ID))
	}
	if want := event.Subject(prefix, d.Source, d.Kind, d.Current.State); m.Subject != want {
		why = append(why, fmt.Sprintf("subject %s, want %s", m.Subject, want))
	}
	if e.Source != "watcher/"+d.Source || e.Subject != d.ID {
		why = append(why, fmt.Sprintf("CloudEvents source %q subject %q for %s %s", e.Source, e.Subject, d.Source, d.ID))
	}
	if d.Sequence == 0 {
		why = append(why, "sequence 0")
	}
	return strings.Join(why, "; ")
}

// checkItem runs the per-item checks on one item's events, in stream order.
func checkItem(r *Result, k itemKey, hist []status, evs []Stored) {
	if len(evs) == 0 {
		r.MissingFinal.add("%s: no event; truth %v", k, hist)
		return
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].Event.Data.Sequence < evs[i-1].Event.Data.Sequence {
			r.OutOfOrder++
			break
		}
	}
	sorted := slices.SortedStableFunc(slices.Values(evs), func(a, b Stored) int {
		return cmp.Compare(a.Event.Data.Sequence, b.Event.Data.Sequence)
	})
	// Copies of one sequence are counted as duplicates already; keep the first.
	sorted = slices.CompactFunc(sorted, func(a, b Stored) bool { return a.Event.Data.Sequence == b.Event.Data.Sequence })

	var seqs []uint32
	for i, m := range sorted {
		seqs = append(seqs, m.Event.Data.Sequence)
		d := m.Event.Data
		switch {
		case i == 0 && d.Sequence == 1 && d.Previous != nil:
			r.ChainBreaks.add("%s: sequence 1 has previous %s", k, statusOf(*d.Previous))
		case d.Previous != nil && statusOf(*d.Previous) == statusOf(d.Current):
			r.ChainBreaks.add("%s: sequence %d changes nothing (%s)", k, d.Sequence, statusOf(d.Current))
		case i > 0 && sorted[i-1].Event.Data.Sequence == d.Sequence-1:
			prev := statusOf(sorted[i-1].Event.Data.Current)
			if d.Previous == nil || statusOf(*d.Previous) != prev {
				got := "none"
				if d.Previous != nil {
					got = statusOf(*d.Previous).String()
				}
				r.ChainBreaks.add("%s: sequence %d has previous %s, sequence %d was %s", k, d.Sequence, got, d.Sequence-1, prev)
			}
		}
	}
	for i, s := range seqs {
		if s != uint32(i+1) {
			r.SequenceGaps.add("%s: sequences %v", k, seqs)
			break
		}
	}

	j := 0
	var got []status
	for _, m := range sorted {
		st := statusOf(m.Event.Data.Current)
		got = append(got, st)
		for j < len(hist) && hist[j] != st {
			j++
		}
		if j == len(hist) {
			r.NotInHistory.add("%s: events %v, truth %v", k, got, hist)
			break
		}
		j++
	}
	if last := statusOf(sorted[len(sorted)-1].Event.Data.Current); last != hist[len(hist)-1] {
		r.MissingFinal.add("%s: last event %s (sequence %d), truth ends %s; truth %v", k, last,
			sorted[len(sorted)-1].Event.Data.Sequence, hist[len(hist)-1], hist)
	}
}
