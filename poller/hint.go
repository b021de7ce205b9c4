package poller

import (
	"context"
	"errors"
	"sync"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller/provider"
)

// Outcomes of Poller.Hint.
const (
	// HintQueued: the id was queued and will be read by id.
	HintQueued = "queued"
	// HintCoalesced: the id was already waiting in the queue; one read serves both.
	HintCoalesced = "coalesced"
	// HintDropped: the queue was full; polling reads the item in its own time.
	HintDropped = "dropped"
	// HintUnsupported: the source cannot read an item by id (no provider.Getter).
	HintUnsupported = "unsupported"
)

// DefaultHintQueue is the number of distinct ids a source's hint queue holds.
const DefaultHintQueue = 1024

// hintQueue is a bounded FIFO of distinct item ids, safe for concurrent use. Push is
// called by webhook handlers, take by the poller's goroutine.
type hintQueue struct {
	mu   sync.Mutex
	ids  []string
	set  map[string]struct{}
	max  int
	wake chan struct{} // holds a token while the queue may be non-empty
}

func newHintQueue(max int) *hintQueue {
	return &hintQueue{set: map[string]struct{}{}, max: max, wake: make(chan struct{}, 1)}
}

// push queues id unless it is queued already or the queue is full.
func (q *hintQueue) push(id string) string {
	q.mu.Lock()
	defer q.mu.Unlock()
	if _, ok := q.set[id]; ok {
		return HintCoalesced
	}
	if len(q.ids) >= q.max {
		return HintDropped
	}
	q.ids = append(q.ids, id)
	q.set[id] = struct{}{}
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return HintQueued
}

// pending reports whether an id is queued.
func (q *hintQueue) pending() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.ids) > 0
}

// take removes and returns every queued id, oldest first.
func (q *hintQueue) take() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	ids := q.ids
	q.ids = nil
	clear(q.set)
	return ids
}

// Hint asks the poller to read item id by id as soon as its goroutine is between two
// requests, instead of waiting for the item's refresh period or the next discovery.
// The read goes through the source's rate limit and retries like any other, and is
// applied exactly as a refresh read: a hint changes when an item is read, never what
// is published. It never blocks; it returns one of the Hint* outcomes. Safe for
// concurrent use.
func (p *Poller) Hint(id string) string {
	if _, ok := p.src.(provider.Getter); !ok {
		return HintUnsupported
	}
	return p.hints.push(id)
}

// readHints reads by id every item hinted so far and applies what it read, in hint
// order. A failed read is logged and forgotten (polling reads the item in its own
// time); only the end of ctx is returned. Before the source's baseline is done (or
// while a rebaseline is asked for) hints are discarded: the baseline records items
// silently, and a hinted read must not publish what it would not. An item the source
// does not track and that was created before lookback is left alone, as polling
// would leave it.
func (p *Poller) readHints(ctx context.Context) error {
	ids := p.hints.take()
	if len(ids) == 0 {
		return nil
	}
	if !p.baselined || p.rebase.Load() {
		p.log.Debug("hints discarded before the baseline is done", "ids", len(ids))
		return nil
	}
	g, ok := p.src.(provider.Getter)
	if !ok {
		return nil
	}
	for _, id := range ids {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var it diff.Item
		err := p.call(ctx, PurposeRefresh, func(ctx context.Context) error {
			var err error
			it, err = g.Get(ctx, id)
			return err
		})
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, provider.ErrNotFound):
			p.log.Warn("hinted item not found by id; ignoring the hint", "id", id)
			continue
		case err != nil:
			p.log.Warn("hinted item not read; polling reads it in its own time", "id", id, "err", err)
			continue
		}
		p.obs.Items(p.cfg.Name, 1)
		if old, err := p.beyondLookback(ctx, &it); err != nil || old {
			continue
		}
		if err := p.apply(ctx, []diff.Item{it}, false); err != nil {
			p.log.Warn("hinted item not stored; polling reads it again", "id", id, "err", err)
			continue
		}
		p.markRead(it.ID, p.now())
	}
	return ctx.Err()
}

// beyondLookback reports whether it was created before lookback and is not tracked:
// polling never lists it, so a hint must not record it either.
func (p *Poller) beyondLookback(ctx context.Context, it *diff.Item) (bool, error) {
	if p.cfg.Lookback <= 0 || !it.CreatedAt.Before(p.now().Add(-p.cfg.Lookback)) {
		return false, nil
	}
	recs, err := p.store.Load(ctx, p.cfg.Name, []string{it.ID})
	if err != nil {
		return false, err
	}
	return recs[it.ID] == nil, nil
}
