package poller

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/state"
)

// forgetEvery is how often a source's snapshot is swept for records no walk can reach.
const forgetEvery = time.Hour

// forgetBatch is the most ids one Store.Forget call removes.
const forgetBatch = 1000

// forget removes from the store the records that nothing reads again: those of items
// that are not in the open index (final, or stalled) and were created before the
// cutoff, now − Lookback − DiscoveryOverlap or the creation time of the oldest item in
// the open index, whichever is earlier. Such an item is below the floor of every walk:
// discovery starts at now − Lookback or later, a refresh window at the creation time
// of an open item (which can be older than Lookback when OpenMaxAge is longer), and a
// walk leaves out an item created before its floor even when the provider returns it.
// It is not re-read by id (it is not open), and a webhook hint for it is ignored once
// it is untracked (beyondLookback). So a forgotten item is never taken for a new one
// and published again. Keeping its record serves nothing and grows the state for as
// long as watcher runs.
//
// It runs at the end of a successful cycle once the baseline is done: at the first
// such cycle after the poller starts, then when forgetEvery has passed since the last
// pass. Lookback 0 or less disables it. An error is logged and the pass is tried
// again forgetEvery later; the cycle itself has succeeded.
func (p *Poller) forget(ctx context.Context, meta *state.Meta) {
	now := p.now()
	if p.cfg.Lookback <= 0 || !meta.BaselineDone || meta.Rebaseline {
		return
	}
	if !p.lastForget.IsZero() && now.Sub(p.lastForget) < forgetEvery {
		return
	}
	p.lastForget = now
	cutoff := now.Add(-p.cfg.Lookback - p.cfg.DiscoveryOverlap)
	n := 0
	open, err := p.store.OpenItems(ctx, p.cfg.Name)
	if err == nil {
		if len(open) > 0 && open[0].CreatedAt.Before(cutoff) {
			cutoff = open[0].CreatedAt // a refresh window may list from there
		}
		n, err = p.forgetBefore(ctx, cutoff, now)
	}
	if n > 0 {
		p.obs.Forgotten(p.cfg.Name, n)
		p.log.Info("forgot the records of items created before lookback that are no longer open",
			"records", n, "created_before", cutoff)
	}
	if err != nil && ctx.Err() == nil {
		p.log.Warn("forgetting records of items created before lookback failed; tried again in an hour",
			"forgotten", n, "err", err)
	}
}

// forgetScan is the most candidates one walk over the records collects: a pass over
// a large backlog (the first after an upgrade) forgets them a share at a time, in
// bounded memory, walking the records again for each share, at most forgetShares
// times; what is left waits for the next pass. A variable for tests.
var forgetScan = 100_000

const forgetShares = 1000

// errScanFull stops a walk over the records once it holds forgetScan candidates.
var errScanFull = errors.New("forget: candidates enough for one share")

// forgetBefore removes the records of items created before cutoff that are not in the
// open index as of now, forgetBatch at a time, and returns how many it removed.
func (p *Poller) forgetBefore(ctx context.Context, cutoff, now time.Time) (int, error) {
	type candidate struct {
		id      string
		created time.Time
	}
	done := 0
	ids := make([]string, 0, forgetBatch)
	for share := 1; ; share++ {
		var old []candidate
		err := p.store.ForEach(ctx, p.cfg.Name, func(r diff.Record) error {
			if r.CreatedAt.Before(cutoff) && !state.InOpenIndex(&r, now) {
				old = append(old, candidate{r.ID, r.CreatedAt})
				if len(old) >= forgetScan {
					return errScanFull
				}
			}
			return nil
		})
		full := errors.Is(err, errScanFull)
		if err != nil && !full {
			return done, fmt.Errorf("source %q: find records created before %s: %w", p.cfg.Name, cutoff.Format(time.RFC3339), err)
		}
		for len(old) > 0 {
			if err := ctx.Err(); err != nil {
				return done, err
			}
			batch := old[:min(len(old), forgetBatch)]
			old = old[len(batch):]
			ids = ids[:0]
			for _, c := range batch {
				ids = append(ids, c.id)
			}
			if err := p.store.Forget(ctx, p.cfg.Name, ids); err != nil {
				return done, fmt.Errorf("source %q: forget %d records: %w", p.cfg.Name, len(ids), err)
			}
			done += len(batch)
			// Only items outside the open index are forgotten; the poller's maps of
			// open items (refreshed, unsaved, moved) drop such ids at the next refresh.
			for _, c := range batch {
				p.ages.remove(c.created)
			}
		}
		if !full || share >= forgetShares {
			return done, nil
		}
	}
}

// remove uncounts a tracked item that was forgotten; before load it is a no-op (load
// counts what the store holds then).
func (a *ageIndex) remove(t time.Time) {
	if !a.loaded {
		return
	}
	h := t.Unix() / 3600
	if a.hours[h] <= 1 {
		delete(a.hours, h)
		return
	}
	a.hours[h]--
}
