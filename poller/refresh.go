package poller

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
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

// period returns how often an open item in state st, created age ago, is re-read: its
// state's base period (open_refresh_by_state when it names st, else DefaultPeriod)
// grown with the item's age by AgedPeriod up to open_refresh_max.
func (p *Poller) period(st diff.State, age time.Duration) time.Duration {
	return AgedPeriod(p.basePeriod(st), age, p.cfg.OpenRefreshMax)
}

// openFor is the age that sets o's re-read period: how long it has been in its
// present status, that is since this poller last saw it change, or since its creation
// when it has not (nothing seen since a start: what moved before it is not kept). An
// item seen moving is re-read at its state's period again, however old it is: a
// payment that moved after days often moves on within minutes, and a lost webhook
// for its next step costs a short wait instead of open_refresh_max.
func (p *Poller) openFor(o state.OpenItem, now time.Time) time.Duration {
	since := o.CreatedAt
	// A settling item counts too: a payment that has just become final is when late
	// nested items (refunds, further transactions) come, if they come.
	if m, ok := p.moved[o.ID]; ok && m.After(since) {
		since = m
	}
	return now.Sub(since)
}

// basePeriod returns the re-read period of an open item in state st before its age is
// counted: open_refresh_by_state when it names st, else DefaultPeriod.
func (p *Poller) basePeriod(st diff.State) time.Duration {
	if st == "" {
		st = Settling
	}
	if d, ok := p.cfg.OpenRefreshByState[st]; ok {
		return d
	}
	return DefaultPeriod(st, p.cfg.OpenRefresh)
}

// DefaultPeriod is the re-read period of a young open item in state st when
// open_refresh_by_state does not name it: openRefresh, halved for processing items
// (they are about to finish), six times longer for settling items (they are final, and
// only a late nested item can change them). AgedPeriod grows it with the item's age.
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

// ageDivisor sets how a period grows with age: an item is re-read every twelfth of its
// age once that exceeds its base period.
const ageDivisor = 12

// AgedPeriod is the re-read period of an open item created age ago whose state's
// period is base: min(max(base, age/12), max(base, maxPeriod)). An item is re-read at
// base while young, then every twelfth of its age, never less often than every
// maxPeriod (nor more often than base, when maxPeriod is below it). maxPeriod 0 (or
// negative) turns growth off: base at every age.
func AgedPeriod(base, age, maxPeriod time.Duration) time.Duration {
	if maxPeriod <= 0 {
		return base
	}
	return min(max(base, age/ageDivisor), max(base, maxPeriod))
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

// dueOrder orders due items most overdue first; among equals (never read since start)
// the oldest first.
func dueOrder(a, b dueItem) int {
	return cmp.Or(a.dueAt.Compare(b.dueAt), a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
}

// refresh re-reads the open items that discovery did not see and whose period has
// passed, within budget requests. Per cycle it chooses (planRefresh) how many of the
// newest due items one list of their creation window reads, the others being read by
// id, most overdue first; a due item missing from its window is read by id once before
// anything is concluded. Open items older than open_max_age are marked stalled
// instead. An item not read since this poller started is due by the read time the
// store kept (state.OpenItem.LastRead), at once when there is none.
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
			// A record this cycle committed carries its read time already.
			if o.LastRead.Before(c.start) {
				p.unsaved[o.ID] = now
			}
		} else if p.cfg.OpenMaxAge > 0 && o.CreatedAt.Before(now.Add(-p.cfg.OpenMaxAge)) {
			stalled = append(stalled, o)
			continue
		} else {
			last, ok := p.refreshed[o.ID]
			if !ok {
				last = o.LastRead
			}
			live[o.ID] = last
			// Due one interval early: cycles come every interval, so waiting for the
			// exact moment would add up to an interval to every re-read.
			if at := last.Add(p.period(o.State, p.openFor(o, now))); !now.Add(p.cfg.Interval).Before(at) {
				due = append(due, dueItem{o, at})
			}
		}
		if oldest.IsZero() || o.CreatedAt.Before(oldest) {
			oldest = o.CreatedAt
		}
	}
	p.refreshed = live
	// Read times of items no longer open are of no use to the store: it ignores them.
	for id := range p.unsaved {
		if _, ok := live[id]; !ok {
			delete(p.unsaved, id)
		}
	}
	for id := range p.moved {
		if _, ok := live[id]; !ok {
			delete(p.moved, id)
		}
	}
	p.obs.Open(p.cfg.Name, len(open)-len(stalled), len(stalled), oldest)
	if err := p.stall(ctx, stalled, now); err != nil {
		return err
	}
	if len(due) == 0 {
		return nil
	}
	slices.SortFunc(due, dueOrder)

	g, canGet := p.src.(provider.Getter)
	plan, err := p.planRefresh(ctx, due, budget, canGet)
	if err != nil {
		return err
	}
	if plan.from.IsZero() {
		return p.refreshByID(ctx, c, g, plan.byID[:min(len(plan.byID), budget)])
	}
	return p.refreshByWindow(ctx, c, g, canGet, plan, budget)
}

// refreshPlan is how one cycle reads its due items: a list of the creation window from
// `from` to now holding the due items in window (no list when from is zero), and a read
// by id of each of the others, byID, most overdue first.
type refreshPlan struct {
	from   time.Time
	window []dueItem
	byID   []dueItem
}

// planRefresh chooses how to read due (sorted most overdue first). Plan k lists the
// window of the k newest due items, from the creation time of the k-th newest, and
// reads the other len(due)-k by id; its cost is the window's estimated pages plus those
// reads. The cheapest plan whose window, and one read by id when it leaves any, fits
// budget wins: the most overdue item is always read, so that a window of young items
// never starves the older ones. On a tie plan 0 (every item by id, always allowed) goes
// first, then the longer window, which reads more open items for the same requests. Without a Getter the only plan is the window of them all,
// whatever its cost. So one old due item among many young ones costs one read by id and
// a short window, not a list of everything created since it was.
func (p *Poller) planRefresh(ctx context.Context, due []dueItem, budget int, canGet bool) (refreshPlan, error) {
	newest := slices.Clone(due)
	slices.SortFunc(newest, func(a, b dueItem) int {
		return cmp.Or(b.CreatedAt.Compare(a.CreatedAt), cmp.Compare(a.ID, b.ID))
	})
	if err := p.ages.load(ctx, p.store, p.cfg.Name); err != nil {
		return refreshPlan{}, err
	}
	times := make([]time.Time, len(newest))
	for i := range newest {
		times[i] = newest[i].CreatedAt
	}
	held := p.ages.sinceEach(times)
	size := max(1, p.cfg.PageSize)
	pages := func(k int) int { return held[k-1]/size + 1 } // the window of the k newest
	n := len(newest)
	best := n
	if canGet {
		best = 0
		bestCost := n
		for k := n; k >= 1; k-- {
			if k < n && newest[k].CreatedAt.Equal(newest[k-1].CreatedAt) {
				continue // this window holds the next item too: plan k+1 reads it for free
			}
			// The window and, when it leaves any, the most overdue of the others must fit:
			// then no item waits for ever behind windows of younger ones.
			w := pages(k)
			if w+min(1, n-k) <= budget && w+n-k < bestCost {
				best, bestCost = k, w+n-k
			}
		}
	}
	if best == 0 {
		return refreshPlan{byID: due}, nil
	}
	plan := refreshPlan{from: newest[best-1].CreatedAt, window: newest[:best]}
	for _, d := range due {
		if d.CreatedAt.Before(plan.from) {
			plan.byID = append(plan.byID, d)
		}
	}
	return plan, nil
}

// refreshByWindow lists plan's window, then reads by id the due items the window
// should have held but did not (an absence is never concluded from), and as many of
// plan.byID, most overdue first, as the budget left by the window's pages allows.
func (p *Poller) refreshByWindow(ctx context.Context, c *cycle, g provider.Getter, canGet bool, plan refreshPlan, budget int) error {
	seen := c.seen
	// The walk's start is when its items count as read: an item read late in a long walk
	// falls due a little early rather than a walk's length late.
	now := p.now()
	pages, err := p.walk(ctx, PurposeRefresh, plan.from, seen, false, time.Time{}, func() error { return p.rediscover(ctx, c) }, nil)
	if err != nil {
		return err
	}
	// Every open item the window held was read now, due or not: counting that keeps
	// the open items' due times together, so that one window a period serves them all
	// instead of a window every cycle for the few that fall due in it.
	for id := range p.refreshed {
		if _, ok := seen[id]; ok {
			p.markRead(id, now)
		}
	}
	var missing []dueItem
	for _, d := range plan.window {
		if _, ok := seen[d.ID]; !ok {
			missing = append(missing, d)
		}
	}
	if !canGet {
		for _, d := range missing {
			p.log.Warn("open item missing from its creation window; looking again next cycle", "id", d.ID, "created_at", d.CreatedAt)
		}
		return nil
	}
	// Never conclude from an absence: read each missing item by id once, whatever the
	// budget. The items below the window share what its pages left, and the most
	// overdue of them is read even when the window took more pages than estimated, so
	// that every due item makes progress.
	left := max(min(1, len(plan.byID)), budget-pages-len(missing))
	reads := append(missing, plan.byID[:min(left, len(plan.byID))]...)
	if len(reads) == 0 {
		return nil
	}
	slices.SortFunc(reads, dueOrder)
	return p.refreshByID(ctx, c, g, reads)
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
			p.markRead(d.ID, p.now())
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
		p.markRead(d.ID, p.now())
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
		delete(p.unsaved, id)
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

// sinceEach returns, for each of times (newest first), how many tracked items were
// created in its hour or later, in one pass over the index's hours.
func (a *ageIndex) sinceEach(times []time.Time) []int {
	hours := slices.Sorted(maps.Keys(a.hours))
	out := make([]int, len(times))
	j, n := len(hours)-1, 0
	for i, t := range times {
		from := t.Unix() / 3600
		for ; j >= 0 && hours[j] >= from; j-- {
			n += a.hours[hours[j]]
		}
		out[i] = n
	}
	return out
}
