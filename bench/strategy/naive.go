package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/poller/provider"
)

// naivePoller is the strategy watcher is measured against: every cycle it walks the
// source's whole lookback with the same adapter and compares every item with the
// previous walk's, in memory.
type naivePoller struct {
	name, provider string
	src            provider.Source
	lookback       time.Duration
	settle         time.Duration
	maxPages       int
	t              *tally
	rec            *recorder

	recs map[string]diff.Record // owned by the goroutine running cycles

	mu     sync.Mutex
	cycles []naiveCycle
}

// naiveCycle is one completed walk.
type naiveCycle struct {
	start, end time.Time
	phase      phase
	pages      int
	err        error
}

// cycle walks the whole lookback once. silent records without reporting transitions
// (the baseline).
func (n *naivePoller) cycle(ctx context.Context, silent bool) error {
	start := time.Now().UTC()
	ph := n.t.phase()
	pages, err := n.walk(ctx, start, silent)
	if err != nil && ctx.Err() == nil {
		n.t.add(n.provider, cntNaiveErr, 1)
	}
	if ctx.Err() == nil {
		n.mu.Lock()
		n.cycles = append(n.cycles, naiveCycle{start: start, end: time.Now().UTC(), phase: ph, pages: pages, err: err})
		n.mu.Unlock()
	}
	return err
}

func (n *naivePoller) walk(ctx context.Context, start time.Time, silent bool) (int, error) {
	floor := start.Add(-n.lookback)
	seen := make(map[string]struct{}, len(n.recs))
	cursor := ""
	for pages := 0; ; pages++ {
		if pages >= n.maxPages {
			return pages, fmt.Errorf("naive %s: stopped after %d pages", n.name, pages)
		}
		page, err := n.src.Page(ctx, provider.Request{Cursor: cursor, From: floor})
		if ctx.Err() != nil {
			return pages, ctx.Err()
		}
		n.t.add(n.provider, cntNaiveReq, 1)
		if err != nil {
			return pages + 1, fmt.Errorf("naive %s page %d: %w", n.name, pages+1, err)
		}
		now := time.Now().UTC()
		reached := false
		for i := range page.Items {
			it := &page.Items[i]
			if it.CreatedAt.Before(floor) {
				reached = true
				continue
			}
			if _, dup := seen[it.ID]; dup {
				continue
			}
			seen[it.ID] = struct{}{}
			var prev *diff.Record
			if r, ok := n.recs[it.ID]; ok {
				prev = &r
			}
			rec, trs, changed := diff.Compare(prev, it, diff.Options{Now: now, SettleWindow: n.settle})
			if changed {
				n.recs[it.ID] = rec
			}
			if silent {
				continue
			}
			for _, tr := range trs {
				n.report(&tr, now)
			}
		}
		if reached || page.Next == "" {
			return pages + 1, nil
		}
		cursor = page.Next
	}
}

func (n *naivePoller) report(tr *diff.Transition, now time.Time) {
	n.t.add(n.provider, cntNaiveTr, 1)
	var p *status
	if tr.Previous != nil {
		p = &status{tr.Previous.Raw, tr.Previous.Addendum}
	}
	n.rec.add(observation{
		key:     itemKey{n.provider, tr.Kind, tr.ParentID, tr.ID},
		eventID: poller.EventID(n.name, tr),
		prev:    p,
		cur:     status{tr.Current.Raw, tr.Current.Addendum},
		seq:     tr.Sequence,
		at:      now,
	})
}

// run walks every interval (at once again when a walk took longer) until ctx ends.
func (n *naivePoller) run(ctx context.Context, interval time.Duration) {
	for ctx.Err() == nil {
		began := time.Now()
		_ = n.cycle(ctx, false) // counted; the next cycle starts over
		t := time.NewTimer(max(0, interval-time.Since(began)))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// doneSince reports whether a walk that started at or after t has completed.
func (n *naivePoller) doneSince(t time.Time) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i := len(n.cycles) - 1; i >= 0; i-- {
		if !n.cycles[i].start.Before(t) && n.cycles[i].err == nil {
			return true
		}
	}
	return false
}

// walks returns the completed walks of phase p and their mean duration.
func (n *naivePoller) walks(p phase) (count int, mean time.Duration, pages int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var sum time.Duration
	for _, c := range n.cycles {
		if c.phase == p && c.err == nil {
			count++
			sum += c.end.Sub(c.start)
			pages = c.pages
		}
	}
	if count > 0 {
		mean = sum / time.Duration(count)
	}
	return count, mean, pages
}
