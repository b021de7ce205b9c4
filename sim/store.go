package sim

import (
	"slices"
	"sort"
)

// item is the mutable part of one top-level provider object; everything else about it
// is derived from its sequence number (its index in store.items) when it is rendered.
// 32 bytes, so a million items take about 32 MB plus their nested items.
type item struct {
	created int64 // unix ms, already truncated to the provider's precision; never decreases along store.items
	updated int64 // unix ms of the last change
	due     int64 // unix ms of the next scheduled step; 0 when none (a heap entry with another due is stale)
	kidOff  uint32
	status  uint8
	flags   uint8 // machine-specific bits (CPN statusAddendum, ...)
	fail    uint8 // machine-specific failure reason index; 0 = none
	kidN    uint8
}

// kid is one nested object (a CPN refund, RFI or on-chain transaction, a settlement
// detail, a Coindirect transaction). Its id is derived from its parent's sequence number
// and its index among the parent's kids, which never changes.
type kid struct {
	created int64
	updated int64 // unix ms of the last change (Coindirect: dateConfirmed, 0 while unconfirmed)
	amount  uint16
	kind    uint8
	status  uint8
}

// store holds one provider's items in creation order, which is also the list order
// (newest last): created never decreases with the index, and equal created values are
// ordered by index. Nested objects live in one arena so that most items cost no
// separate allocation.
type store struct {
	items []item
	kids  []kid
}

func (s *store) kidsOf(it *item) []kid {
	return s.kids[it.kidOff : it.kidOff+uint32(it.kidN)]
}

// addKid appends k to it's nested objects and returns its index among them. The arena
// only grows: an item whose kids are not at the arena's end has them copied there.
func (s *store) addKid(it *item, k kid) int {
	if it.kidN == 255 {
		return -1
	}
	end := it.kidOff + uint32(it.kidN)
	if it.kidN == 0 || int(end) != len(s.kids) {
		off := uint32(len(s.kids))
		s.kids = append(s.kids, s.kids[it.kidOff:end]...)
		it.kidOff = off
	}
	s.kids = append(s.kids, k)
	it.kidN++
	return int(it.kidN) - 1
}

// span returns the index range [lo, hi) of the items created within [from, to] (unix ms,
// inclusive).
func (s *store) span(from, to int64) (lo, hi int) {
	lo = sort.Search(len(s.items), func(i int) bool { return s.items[i].created >= from })
	hi = sort.Search(len(s.items), func(i int) bool { return s.items[i].created > to })
	if hi < lo {
		hi = lo
	}
	return lo, hi
}

// olderThan returns the indexes of up to n items that match, below index start
// (exclusive) and at or above lo, newest first.
func olderThan(start, lo, n int, match func(int) bool) []int {
	var out []int
	for i := start - 1; i >= lo && len(out) < n; i-- {
		if match(i) {
			out = append(out, i)
		}
	}
	return out
}

// newerThan returns the indexes of up to n matching items closest above index start
// (exclusive) and below hi, newest first.
func newerThan(start, hi, n int, match func(int) bool) []int {
	var out []int
	for i := start + 1; i < hi && len(out) < n; i++ {
		if match(i) {
			out = append(out, i)
		}
	}
	for a, b := 0, len(out)-1; a < b; a, b = a+1, b-1 {
		out[a], out[b] = out[b], out[a]
	}
	return out
}

// anyIn reports whether some index in [lo, hi) matches.
func anyIn(lo, hi int, match func(int) bool) bool {
	for i := lo; i < hi; i++ {
		if match(i) {
			return true
		}
	}
	return false
}

// window is the part of a store a list reads: the matching indexes in [lo, hi), in
// list order, which is newest first unless oldestFirst. "Follows" and "precedes" below
// are in that order. match must not be nil.
type window struct {
	lo, hi      int
	match       func(int) bool
	oldestFirst bool
}

// first returns up to n matching indexes from the start of the list, in list order.
func (w window) first(n int) []int {
	if w.oldestFirst {
		return w.following(w.lo-1, n)
	}
	return w.following(w.hi, n)
}

// following returns up to n matching indexes that follow index cur (exclusive; cur
// may lie outside the window), in list order.
func (w window) following(cur, n int) []int {
	if w.oldestFirst {
		return reversed(newerThan(max(cur, w.lo-1), w.hi, n, w.match))
	}
	return olderThan(min(cur, w.hi), w.lo, n, w.match)
}

// preceding returns up to n matching indexes closest before index cur (exclusive), in
// list order.
func (w window) preceding(cur, n int) []int {
	if w.oldestFirst {
		return reversed(olderThan(min(cur, w.hi), w.lo, n, w.match))
	}
	return newerThan(max(cur, w.lo-1), w.hi, n, w.match)
}

// anyFollowing reports whether a matching index follows index i.
func (w window) anyFollowing(i int) bool {
	if w.oldestFirst {
		return anyIn(i+1, w.hi, w.match)
	}
	return anyIn(w.lo, i, w.match)
}

// anyPreceding reports whether a matching index precedes index i.
func (w window) anyPreceding(i int) bool {
	if w.oldestFirst {
		return anyIn(w.lo, i, w.match)
	}
	return anyIn(i+1, w.hi, w.match)
}

func reversed(s []int) []int {
	slices.Reverse(s)
	return s
}
