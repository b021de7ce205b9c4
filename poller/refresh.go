package poller

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller/provider"
	"github.com/payments-watcher/watcher/state"
)

// Settling is the open_refresh_by_state key of final items kept open by their settle
// window (they may still gain nested items).
const Settling diff.State = "settling"

// refreshShare is the share of a cycle's request budget (rate_limit x interval) that
// refresh may spend; the rest is left to discovery, which is never starved.
const refreshShare = 0.8

// period returns how often an open item in state st is re-read: open_refresh_by_state
// when it names st, else DefaultPeriod.
func (p *Poller) period(st diff.State) time.Duration {
	if st == "" {
		st = Settling
	}
	if d, ok := p.cfg.OpenRefreshByState[st]; ok {
		return d
	}
	return DefaultPeriod(st, p.cfg.OpenRefresh)
}

// DefaultPeriod is the re-read period of an open item in state st when
// open_refresh_by_state does not name it: openRefresh, halved for processing items
// (they are about to finish), six times longer for settling items (they are final, and
// only a late nested item can change them).
func DefaultPeriod(st diff.State, openRefresh time.Duration) time.Duration {
	switch st {
	case diff.Processing:
		return openRefresh / 2
	case Settling:
		return openRefresh * 6
	default:
		return openRefresh
	}
}

// refreshBudget is how many requests refresh may make in a cycle whose discovery made
// discoveryRequests: at least one, so that open items always progress.
func (p *Poller) refreshBudget(discoveryRequests int) int {
	total := int(p.cfg.RateLimit * p.cfg.Interval.Seconds() * refreshShare)
	return max(1, total-discoveryRequests)
}

// dueItem is an open item whose refresh is due.
type dueItem struct {
	state.OpenItem
	dueAt time.Time
}

// refresh re-reads the open items that discovery did not see and whose period has
// passed, most overdue first, within budget requests. It chooses per cycle the cheaper
// of a single-item read per due item and one list of the creation window that holds
// them all; a due item missing from that window is read by id once before anything is
// concluded. Open items older than open_max_age are marked stalled instead.
func (p *Poller) refresh(ctx context.Context, c *cycle, budget int) error {
	now := p.now()
	seen := c.seen
	open, err := p.store.OpenItems(ctx, p.cfg.Name)
	if err != nil {
		return err
	}
	live := make(map[string]time.Time, len(open))
	var due []dueItem
	var stalled []state.OpenItem
	var oldest time.Time
	for _, o := range open {
		if _, ok := seen[o.ID]; ok {
			live[o.ID] = now
		} else if p.cfg.OpenMaxAge > 0 && o.CreatedAt.Before(now.Add(-p.cfg.OpenMaxAge)) {
			stalled = append(stalled, o)
			continue
		} else {
			last := p.refreshed[o.ID]
			live[o.ID] = last
			// Due one interval early: cycles come every interval, so waiting for the
			// exact moment would add up to an interval to every re-read.
			if at := last.Add(p.period(o.State)); !now.Add(p.cfg.Interval).Before(at) {
				due = append(due, dueItem{o, at})
			}
		}
		if oldest.IsZero() || o.CreatedAt.Before(oldest) {
			oldest = o.CreatedAt
		}
	}
	p.refreshed = live
	p.obs.Open(p.cfg.Name, len(open)-len(stalled), len(stalled), oldest)
	if err := p.stall(ctx, stalled, now); err != nil {
		return err
	}
	if len(due) == 0 {
		return nil
	}
	// Most overdue first; among equals (never read since start) the oldest first.
	slices.SortFunc(due, func(a, b dueItem) int {
		return cmp.Or(a.dueAt.Compare(b.dueAt), a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
	})

	g, canGet := p.src.(provider.Getter)
	windowFrom := due[0].CreatedAt
	for _, d := range due {
		if d.CreatedAt.Before(windowFrom) {
			windowFrom = d.CreatedAt
		}
	}
	windowCost, err := p.windowCost(ctx, windowFrom)
	if err != nil {
		return err
	}
	switch {
	case canGet && (len(due) <= windowCost || windowCost > budget):
		return p.refreshByID(ctx, c, g, due[:min(len(due), budget)])
	default:
		return p.refreshByWindow(ctx, c, g, canGet, windowFrom, due)
	}
}

// windowCost estimates the pages of a list from `from` to now.
func (p *Poller) windowCost(ctx context.Context, from time.Time) (int, error) {
	if err := p.ages.load(ctx, p.store, p.cfg.Name); err != nil {
		return 0, err
	}
	size := max(1, p.cfg.PageSize)
	return p.ages.since(from)/size + 1, nil
}

func (p *Poller) refreshByWindow(ctx context.Context, c *cycle, g provider.Getter, canGet bool, from time.Time, due []dueItem) error {
	seen := c.seen
	// The walk's start is when its items count as read: an item read late in a long walk
	// falls due a little early rather than a walk's length late.
	now := p.now()
	if _, err := p.walk(ctx, PurposeRefresh, from, seen, false, time.Time{}, func() error { return p.rediscover(ctx, c) }, nil); err != nil {
		return err
	}
	// Every open item the window held was read now, due or not: counting that keeps
	// the open items' due times together, so that one window a period serves them all
	// instead of a window every cycle for the few that fall due in it.
	for id := range p.refreshed {
		if _, ok := seen[id]; ok {
			p.refreshed[id] = now
		}
	}
	var missing []dueItem
	for _, d := range due {
		if _, ok := seen[d.ID]; !ok {
			missing = append(missing, d)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if !canGet {
		for _, d := range missing {
			p.log.Warn("open item missing from its creation window; looking again next cycle", "id", d.ID, "created_at", d.CreatedAt)
		}
		return nil
	}
	// Never conclude from an absence: read each missing item by id once.
	return p.refreshByID(ctx, c, g, missing)
}

const refreshBatch = 50

func (p *Poller) refreshByID(ctx context.Context, c *cycle, g provider.Getter, due []dueItem) error {
	batch := make([]diff.Item, 0, refreshBatch)
	flush := func() error {
		err := p.apply(ctx, batch, false)
		batch = batch[:0]
		return err
	}
	for _, d := range due {
		if ctx.Err() != nil {
			break
		}
		// Discovery comes round every interval however long the reads take; what was
		// read before it is applied first, so that every item is applied in read order.
		if p.cfg.Interval > 0 && time.Since(c.discovered) >= p.cfg.Interval {
			if err := flush(); err != nil {
				return err
			}
			if err := p.rediscover(ctx, c); err != nil {
				return err
			}
		}
		if _, read := c.seen[d.ID]; read {
			continue // discovery read it this cycle
		}
		// Hinted items are read between requests; what was read before is applied
		// first, so that every item is applied in read order.
		if p.hints.pending() {
			if err := flush(); err != nil {
				return err
			}
			if err := p.readHints(ctx); err != nil {
				return err
			}
		}
		var it diff.Item
		err := p.call(ctx, PurposeRefresh, func(ctx context.Context) error {
			var err error
			it, err = g.Get(ctx, d.ID)
			return err
		})
		switch {
		case errors.Is(err, provider.ErrNotFound):
			p.log.Warn("open item not found by id; keeping its record and trying again later", "id", d.ID)
			p.refreshed[d.ID] = p.now()
			continue
		case err != nil:
			if ferr := flush(); ferr != nil {
				return ferr
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("refresh %s: %w", d.ID, err)
		}
		p.obs.Items(p.cfg.Name, 1)
		p.refreshed[d.ID] = p.now()
		batch = append(batch, it)
		if len(batch) == refreshBatch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	return ctx.Err()
}

// stall marks open items past open_max_age as stalled: they leave the open index and
// are no longer re-read, unless discovery sees them move.
func (p *Poller) stall(ctx context.Context, items []state.OpenItem, now time.Time) error {
	if len(items) == 0 {
		return nil
	}
	ids := make([]string, len(items))
	for i, o := range items {
		ids[i] = o.ID
	}
	recs, err := p.store.Load(ctx, p.cfg.Name, ids)
	if err != nil {
		return err
	}
	var out []diff.Record
	for _, id := range ids {
		r, ok := recs[id]
		if !ok || r.Stalled {
			continue
		}
		r.Stalled = true
		out = append(out, *r)
		p.log.Warn("open item exceeded open_max_age; no longer re-read", "id", id, "status", r.Status.Raw, "created_at", r.CreatedAt)
		delete(p.refreshed, id)
	}
	if len(out) == 0 {
		return nil
	}
	return p.store.Commit(ctx, p.cfg.Name, state.Batch{Now: now, Records: out})
}

// ageIndex counts tracked items by creation hour, to estimate what a window list
// costs. It is loaded from the store once, then kept up to date as items are first
// seen.
type ageIndex struct {
	loaded bool
	hours  map[int64]int
}

func (a *ageIndex) load(ctx context.Context, s Store, source string) error {
	if a.loaded {
		return nil
	}
	a.hours = map[int64]int{}
	if err := s.ForEach(ctx, source, func(r diff.Record) error {
		a.hours[r.CreatedAt.Unix()/3600]++
		return nil
	}); err != nil {
		return err
	}
	a.loaded = true
	return nil
}

// add counts an item first seen; before load it is a no-op (load counts it then).
func (a *ageIndex) add(t time.Time) {
	if a.loaded {
		a.hours[t.Unix()/3600]++
	}
}

// since returns how many tracked items were created in the hour of t or later.
func (a *ageIndex) since(t time.Time) int {
	from := t.Unix() / 3600
	n := 0
	for h, c := range a.hours {
		if h >= from {
			n += c
		}
	}
	return n
}
