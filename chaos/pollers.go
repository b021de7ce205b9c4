package main

import (
	"cmp"
	"maps"
	"slices"
	"time"
)

// PollerResult is what the events' data.poller says about who polled each source in
// a cluster run.
type PollerResult struct {
	// Tenures counts the distinct (source, replica, lease revision) that observed the
	// stream's events; Moves the tenures beyond each source's first.
	Tenures, Moves int
	// Unnamed: events without data.poller.
	Unnamed Problems
	// Overlaps: a holder of a source's lease that observed a transition after a later
	// holder (a higher lease revision) had observed one: two replicas polled the
	// source at once. A holder stops its work and its commits within 2/3 of the lease
	// TTL of its last renewal and the next one can only acquire the lease after the
	// TTL, so on one machine's clock every observation of a holder precedes those of
	// the next.
	Overlaps Problems
	// Reordered counts events stored after an event of the same source with a higher
	// lease revision. It is reported, not a failure: a publish retried after a
	// failure lands after later messages of its window.
	Reordered int
}

// OK reports whether every event names its poller and no two holders overlapped.
func (r PollerResult) OK() bool { return r.Unnamed.N == 0 && r.Overlaps.N == 0 }

// tenure is one holder's time with a source's lease, as its events show it.
type tenure struct {
	replica     string
	revision    uint64
	first, last time.Time // earliest and latest observed_at
}

// CheckPollers checks the pollers that msgs (in stream order) name: each message that
// decodes must name one, and no holder of a source's lease may observe anything
// after a later holder of the same source began observing. Messages that do not
// decode are left to Check.
func CheckPollers(msgs []Stored) PollerResult {
	var r PollerResult
	type key struct {
		source, replica string
		revision        uint64
	}
	tenures := map[key]*tenure{}
	highest := map[string]uint64{} // source -> highest lease revision stored so far
	for _, m := range msgs {
		if m.Err != nil {
			continue
		}
		d := m.Event.Data
		if d.Poller == nil {
			r.Unnamed.add("stream seq %d: event %s of %s has no data.poller", m.Seq, m.Event.ID, d.Source)
			continue
		}
		rev := d.Poller.LeaseRevision
		if rev < highest[d.Source] {
			r.Reordered++
		}
		highest[d.Source] = max(highest[d.Source], rev)
		k := key{d.Source, d.Poller.ID, rev}
		t := tenures[k]
		if t == nil {
			t = &tenure{replica: d.Poller.ID, revision: rev, first: d.ObservedAt, last: d.ObservedAt}
			tenures[k] = t
		}
		if d.ObservedAt.Before(t.first) {
			t.first = d.ObservedAt
		}
		if d.ObservedAt.After(t.last) {
			t.last = d.ObservedAt
		}
	}
	bySource := map[string][]*tenure{}
	for k, t := range tenures {
		bySource[k.source] = append(bySource[k.source], t)
	}
	for _, source := range slices.Sorted(maps.Keys(bySource)) {
		list := bySource[source]
		slices.SortFunc(list, func(a, b *tenure) int {
			return cmp.Or(cmp.Compare(a.revision, b.revision), cmp.Compare(a.replica, b.replica))
		})
		r.Tenures += len(list)
		r.Moves += len(list) - 1
		var latest *tenure // the tenure with the latest observation among those before
		for i, t := range list {
			if latest != nil && latest.last.After(t.first) {
				r.Overlaps.add("source %s: %s (lease revision %d) observed at %s, after %s (lease revision %d) began at %s",
					source, latest.replica, latest.revision, latest.last.Format(time.StampMicro),
					t.replica, t.revision, t.first.Format(time.StampMicro))
			}
			if i == 0 || t.last.After(latest.last) {
				latest = t
			}
		}
	}
	return r
}
