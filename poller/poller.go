// Package poller runs one loop per configured source: it walks the provider's list
// newest first down to what it has already seen, re-reads items that are still open,
// compares every observed item with its stored record (package diff) and commits the
// new records together with the resulting events (package state), page by page.
//
// Provider adapters live in sub-packages and are chosen from Providers.
package poller

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"golang.org/x/time/rate"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/poller/provider"
	"github.com/payments-watcher/watcher/state"
)

// Config is one source's polling behaviour (DESIGN §4).
type Config struct {
	Name     string // source name: subjects, state buckets, logs
	Provider string // provider id
	Kind     string // top-level kind
	// Interval is the discovery period; each wait is jittered by ±10%.
	Interval time.Duration
	// DiscoveryOverlap re-reads this far below the high-water mark.
	DiscoveryOverlap time.Duration
	// Lookback is the oldest creation time any walk reaches.
	Lookback time.Duration
	// OpenRefresh is how often an open item is re-read; OpenRefreshByState overrides it
	// per state (key Settling for final items kept open by their settle window).
	OpenRefresh        time.Duration
	OpenRefreshByState map[diff.State]time.Duration
	// OpenRefreshMax bounds how far an item's period grows with its age (AgedPeriod);
	// 0 turns growth off.
	OpenRefreshMax time.Duration
	// PageSize is the source's page size, for estimating what a window list costs.
	PageSize int
	// OpenMaxAge: open items created longer ago are no longer re-read (stalled).
	OpenMaxAge time.Duration
	// SettleWindow keeps final items that may still gain nested items open.
	SettleWindow time.Duration
	// RateLimit is the source's request budget per second.
	RateLimit float64
	// Baseline is "silent" (first walk records only) or "emit".
	Baseline string
	// MaxPages bounds one walk.
	MaxPages int
	// RequestTimeout bounds one provider request; RetryFor bounds the retries of one
	// request before the cycle is given up (0: 2 minutes).
	RequestTimeout, RetryFor time.Duration
	// MaxOutbox pauses polling while the outbox holds this many events or more (NATS
	// is away); 0 means no limit. Nothing is dropped: the cycle is only put off.
	MaxOutbox int
	// PaceOutbox makes a walk wait between pages while the outbox holds this many
	// events or more and NATS is taking them, until fewer than half remain (see pace);
	// 0 turns pacing off.
	PaceOutbox int
	// Lease, when not nil (cluster mode), is the replica and lease this poller runs
	// under; every event carries it as data.poller.
	Lease *event.Poller
	// HintQueue bounds the ids waiting to be read after a webhook (Hint); 0 is
	// DefaultHintQueue.
	HintQueue int
}

// Store is what the poller needs of a state back end (package state/bbolt or
// state/natskv). Every method takes the context of the cycle that calls it: a back end
// that does network calls (natskv) abandons them when it ends and returns an error
// wrapping ctx.Err(), and may then have made part of a Commit, which its write order
// makes safe; a local one (bbolt) may ignore it and finish the call.
type Store interface {
	// Load returns the stored records of the given ids of source; ids not stored are
	// absent from the map.
	Load(ctx context.Context, source string, ids []string) (map[string]*diff.Record, error)
	// Commit stores b for source: its records, its messages in the outbox and its
	// metadata, so that a message is in the outbox exactly when its record is stored.
	Commit(ctx context.Context, source string, b state.Batch) error
	// Meta returns the metadata of source; the zero Meta for a source without any.
	Meta(ctx context.Context, source string) (state.Meta, error)
	// OpenItems returns the open index of source, oldest CreatedAt first, then by ID.
	OpenItems(ctx context.Context, source string) ([]state.OpenItem, error)
	// OutboxStats returns the number of events waiting for NATS and when the oldest
	// was enqueued.
	OutboxStats(ctx context.Context) (n int, oldest time.Time, err error)
	// ForEach calls fn with every record of source, in id order; an error from fn
	// stops the walk and is returned as is.
	ForEach(ctx context.Context, source string, fn func(diff.Record) error) error
	// Forget removes the records of the given ids of source and their open index
	// entries; ids not stored are ignored. A later Commit of one of them stores it anew.
	Forget(ctx context.Context, source string, ids []string) error
}

// ErrOutboxFull means a cycle was put off because the outbox reached nats.max_outbox.
var ErrOutboxFull = errors.New("outbox full; polling paused until NATS accepts events again")

// Health is a source's condition as the last cycles left it.
type Health struct {
	LastSuccess time.Time
	LastAttempt time.Time
	// Err is the last cycle's error; nil after a successful cycle.
	Err error
	// Failures counts consecutive failed cycles.
	Failures int
}

// Poller polls one source.
type Poller struct {
	cfg     Config
	src     provider.Source
	store   Store
	prefix  string
	log     *slog.Logger
	limiter *rate.Limiter
	now     func() time.Time

	refreshed map[string]time.Time // open item id -> last re-read; owned by the Run goroutine
	// unsaved holds the read times of refreshed not yet committed to the store
	// (state.Batch.Reads); owned by the Run goroutine.
	unsaved map[string]time.Time
	// moved holds when each open item was last seen to change after its first sight:
	// its re-read period grows from then rather than from its creation (see period).
	// Kept in memory only; owned by the Run goroutine.
	moved  map[string]time.Time
	ages   ageIndex // creation times of tracked items; owned by the Run goroutine
	obs    Observer
	rebase atomic.Bool // a rebaseline was requested

	// unordered records that the provider's list was seen out of newest-first order:
	// walks then read every page down to the list's end instead of stopping at their
	// lower bound. Owned by the Run goroutine.
	unordered bool
	// anomalyLogged holds the anomaly kinds already logged (once per source);
	// anomalyCycle those already counted in the current cycle. Owned by the Run goroutine.
	anomalyLogged map[string]bool
	anomalyCycle  map[string]bool
	// failureCause is the cause (see advise) of the last failure logged at ERROR; ""
	// after a successful cycle. Owned by the Run goroutine.
	failureCause string
	// hints are the ids webhooks named (Hint), read between requests by the Run
	// goroutine once the source's baseline is done (baselined, owned by it).
	hints     *hintQueue
	baselined bool
	// paced is the pacing state of walks (pace); owned by the Run goroutine.
	paced pacer
	// lastForget is when forget last swept the snapshot (the poller's clock); zero
	// before the first pass. Owned by the Run goroutine.
	lastForget time.Time

	mu     sync.Mutex
	health Health
}

// Observe makes o receive what the poller does; call it before Run.
func (p *Poller) Observe(o Observer) {
	if o == nil {
		o = nopObserver{}
	}
	p.obs = o
}

// RequestRebaseline makes the next cycle a silent baseline (see state.Meta.Rebaseline).
// It is safe to call from any goroutine.
func (p *Poller) RequestRebaseline() { p.rebase.Store(true) }

// New returns a poller of src that commits to store and addresses its events under
// subject prefix.
func New(cfg Config, src provider.Source, store Store, prefix string, log *slog.Logger) *Poller {
	if cfg.RetryFor <= 0 {
		cfg.RetryFor = 2 * time.Minute
	}
	if cfg.MaxPages <= 0 {
		cfg.MaxPages = 10000
	}
	burst := max(1, int(cfg.RateLimit))
	return &Poller{
		cfg:       cfg,
		src:       src,
		store:     store,
		prefix:    prefix,
		log:       log,
		limiter:   rate.NewLimiter(rate.Limit(cfg.RateLimit), burst),
		now:       func() time.Time { return time.Now().UTC() },
		refreshed: map[string]time.Time{},
		unsaved:   map[string]time.Time{},
		moved:     map[string]time.Time{},
		obs:       nopObserver{},
		hints:     newHintQueue(cmp.Or(cfg.HintQueue, DefaultHintQueue)),

		anomalyLogged: map[string]bool{},
		anomalyCycle:  map[string]bool{},
	}
}

// Name returns the source name.
func (p *Poller) Name() string { return p.cfg.Name }

// Health returns the source's current health.
func (p *Poller) Health() Health {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.health
}

// Run polls at once, then every Interval (±10%) until ctx is cancelled; it returns
// nil then. A failed cycle is logged and retried at the next interval, or after the
// provider's Retry-After when that is longer. A request in flight at cancellation is
// abandoned (nothing of it was stored). The page in hand is committed with ctx: a
// store that ignores cancellation (bbolt) stores it whole, one that honours it
// (natskv) may stop part way, which is safe; either way the next cycle reads the page
// again and finds what is missing.
func (p *Poller) Run(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-p.hints.wake:
			_ = p.readHints(ctx)
			continue
		case <-timer.C:
		}
		err := p.Poll(ctx)
		if ctx.Err() != nil {
			return nil
		}
		wait := jitter(p.cfg.Interval)
		if err != nil {
			p.logFailure(err)
			var se *provider.StatusError
			if errors.As(err, &se) && se.RetryAfter > wait {
				wait = se.RetryAfter
			}
		} else {
			p.logSuccess()
		}
		timer.Reset(wait)
	}
}

// logFailure logs a failed cycle. A refusal advise explains (a 401, a 403, a cause an
// adapter identified) is logged at ERROR with its advice when its cause differs from
// the last one logged, else at DEBUG, until a cycle succeeds (logSuccess). Other
// failures are logged at WARN every time and forget the cause, so a recurrence is
// logged again. Metrics and /readyz report every failed cycle regardless.
func (p *Poller) logFailure(err error) {
	msg, cause := advise(err, p.cfg.Provider, Providers[p.cfg.Provider].Credentials())
	switch {
	case cause == "":
		p.failureCause = ""
		p.log.Warn("poll failed; state unchanged for the failed page, retrying next interval", "err", err)
	case cause == p.failureCause:
		p.log.Debug(msg, "cause", cause, "err", err)
	default:
		p.failureCause = cause
		p.log.Error(msg, "provider", p.cfg.Provider, "cause", cause, "err", err)
	}
}

// jitter spreads d by ±10%.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	span := int64(d) / 5
	if span <= 0 {
		return d
	}
	return d - time.Duration(span/2) + time.Duration(rand.Int64N(span+1))
}

// Poll runs one cycle: discovery, then the re-reading of due open items. A failed
// page ends the cycle with an error; the pages committed before it stay committed,
// which is safe because a later cycle reads them again and finds nothing new.
func (p *Poller) Poll(ctx context.Context) (err error) {
	start := p.now()
	began := time.Now()
	defer func() {
		p.obs.Poll(p.cfg.Name, result(ctx, err), time.Since(began))
		p.mu.Lock()
		defer p.mu.Unlock()
		p.health.LastAttempt = start
		p.health.Err = err
		if err == nil {
			p.health.LastSuccess = p.now()
			p.health.Failures = 0
			p.obs.Success(p.cfg.Name, p.health.LastSuccess)
		} else if ctx.Err() == nil {
			p.health.Failures++
		}
	}()
	if p.cfg.MaxOutbox > 0 {
		n, _, err := p.store.OutboxStats(ctx)
		if err != nil {
			return err
		}
		if n >= p.cfg.MaxOutbox {
			return fmt.Errorf("%w: %d events wait for NATS (nats.max_outbox %d)", ErrOutboxFull, n, p.cfg.MaxOutbox)
		}
	}
	clear(p.anomalyCycle)
	meta, err := p.store.Meta(ctx, p.cfg.Name)
	if err != nil {
		return err
	}
	c := &cycle{meta: &meta, seen: map[string]struct{}{}, start: start}
	pages, err := p.discover(ctx, &meta, c.seen)
	if err != nil {
		return err
	}
	c.discovered = time.Now()
	if err := p.refresh(ctx, c, p.refreshBudget(pages)); err != nil {
		return err
	}
	meta.LastPoll = p.now()
	// The cycle's read times go with its last commit; a failed one leaves them for the
	// next cycle's.
	var reads map[string]time.Time
	if len(p.unsaved) > 0 {
		reads = p.unsaved
	}
	if err := p.store.Commit(ctx, p.cfg.Name, state.Batch{Now: meta.LastPoll, Meta: &meta, Reads: reads}); err != nil {
		return err
	}
	clear(p.unsaved)
	p.forget(ctx, &meta)
	return nil
}

// markRead records that open item id was read at t, for the schedule (refreshed) and
// for the store (unsaved, committed with the cycle's end). A record committed by apply
// needs no call: the store counts it read at its batch's time.
func (p *Poller) markRead(id string, t time.Time) {
	p.refreshed[id] = t
	p.unsaved[id] = t
}

// cycle is what one Poll's discovery and refresh share.
type cycle struct {
	meta *state.Meta
	// seen holds the ids read this cycle: an item is applied once per walk.
	seen map[string]struct{}
	// discovered is when discovery last ended (wall clock).
	discovered time.Time
	// start is when the cycle began (the poller's clock).
	start time.Time
}

// rediscover runs discovery again when an interval has passed since it last ended, so
// that a long refresh (a window list of many pages, many reads by id) delays new items
// by no more than an interval. Pages are applied in the order they are read, so the
// two interleave safely.
func (p *Poller) rediscover(ctx context.Context, c *cycle) error {
	if p.cfg.Interval <= 0 || time.Since(c.discovered) < p.cfg.Interval {
		return nil
	}
	fresh := map[string]struct{}{}
	_, err := p.discover(ctx, c.meta, fresh)
	// The next round is an interval after this one ended: a discovery walk longer than
	// an interval must not leave refresh one request between walks.
	c.discovered = time.Now()
	now := p.now()
	for id := range fresh {
		c.seen[id] = struct{}{}
		if _, open := p.refreshed[id]; open {
			p.markRead(id, now)
		}
	}
	return err
}

// discover walks the list newest first down to the high-water mark minus the overlap
// (the whole lookback on the first walk), committing page by page, then records the
// new high-water mark.
func (p *Poller) discover(ctx context.Context, meta *state.Meta, seen map[string]struct{}) (int, error) {
	start := p.now()
	floor := start.Add(-p.cfg.Lookback)
	if p.rebase.Swap(false) && !meta.Rebaseline {
		meta.Rebaseline = true
		if err := p.store.Commit(ctx, p.cfg.Name, state.Batch{Now: start, Meta: meta}); err != nil {
			p.rebase.Store(true)
			return 0, err
		}
	}
	baseline := !meta.BaselineDone || meta.Rebaseline
	if baseline {
		p.baselined = false // a hinted read must not publish what the baseline records silently
	}
	if !baseline && !meta.HighWater.IsZero() {
		if hw := meta.HighWater.Add(-p.cfg.DiscoveryOverlap); hw.After(floor) {
			floor = hw
		}
	}
	silent := baseline && (meta.Rebaseline || p.cfg.Baseline != "emit")
	high := meta.HighWater
	listed := 0
	var newest time.Time
	if !baseline && meta.HighWater.Before(start) {
		newest = meta.HighWater
	}
	n, err := p.walk(ctx, PurposeDiscovery, floor, seen, silent, newest, nil, func(it *diff.Item) {
		listed++
		if it.CreatedAt.After(high) {
			high = it.CreatedAt
		}
	})
	if err != nil {
		return n, err
	}
	// The newest item already tracked lies within this walk's bounds, and lists do not
	// drop items: a walk that found nothing at all read the date filter differently
	// from the provider (a wrong format can filter out everything), and stopping here
	// silently would miss every new item from now on.
	if !baseline && listed == 0 && !meta.HighWater.IsZero() && !meta.HighWater.Before(floor) && meta.HighWater.Before(start) {
		return n, fmt.Errorf("discovery walk: the list returned no item created since %s although item(s) up to %s were listed before; "+
			"the provider may read the date filter differently from this source's settings; nothing was changed",
			floor.Format(time.RFC3339), meta.HighWater.Format(time.RFC3339))
	}
	if baseline {
		p.log.Info("baseline walk complete", "pages", n, "items", len(seen), "silent", silent)
	}
	meta.BaselineDone = true
	meta.Rebaseline = false
	meta.HighWater = high
	if err := p.store.Commit(ctx, p.cfg.Name, state.Batch{Now: p.now(), Meta: meta}); err != nil {
		return n, err
	}
	p.baselined = true
	return n, nil
}

// walk pages newest first from the first page down to floor and applies every item
// not in seen (adding it). between, if not nil, runs before every page but the first.
// newest, when not zero, is the creation time of the newest item listed before: lists
// keep their items, so a newest-first list starts at or above it. It returns the number
// of pages read.
//
// The walk trusts no undocumented order, page size or date filter:
//   - Creation times are checked on every page and across pages. Once they go up (the
//     list is not newest first) the source reads every page down to the list's end
//     from then on, the lower bound filtering items instead of ending the walk; the
//     page that showed it is applied like any other, since its items are real.
//   - An item created before the date filter is reported (the provider ignored the
//     filter) and changes nothing: such items are not applied, and in a newest-first
//     list the first one ends the walk as its lower bound.
//   - A page shorter than asked ends nothing by itself: the adapter decides with the
//     provider's own end signal (Next ""); a short page followed by a non-empty one
//     is reported.
func (p *Poller) walk(ctx context.Context, purpose string, floor time.Time, seen map[string]struct{}, silent bool, newest time.Time, between func() error, each func(*diff.Item)) (int, error) {
	cursor := ""
	cursors := map[string]struct{}{}
	order := orderCheck{newest: newest}
	filterFloor := floor.Truncate(time.Second) // adapters may round the bound down to the second
	shortBefore := false
	for pages := 0; ; pages++ {
		if pages >= p.cfg.MaxPages {
			return pages, fmt.Errorf("%s walk: stopped after %d pages (max_pages); raise max_pages or shorten lookback", purpose, pages)
		}
		if pages > 0 && ctx.Err() != nil {
			return pages, ctx.Err()
		}
		if pages > 0 {
			if err := p.readHints(ctx); err != nil {
				return pages, err
			}
			p.pace(ctx)
		}
		if pages > 0 && between != nil {
			if err := between(); err != nil {
				return pages, err
			}
		}
		var page provider.Page
		err := p.call(ctx, purpose, func(ctx context.Context) error {
			var err error
			page, err = p.src.Page(ctx, provider.Request{Cursor: cursor, From: floor})
			return err
		})
		if err != nil {
			if ctx.Err() != nil {
				return pages, ctx.Err()
			}
			return pages, fmt.Errorf("%s page %d: %w", purpose, pages+1, err)
		}
		p.obs.Items(p.cfg.Name, len(page.Items))
		for _, s := range page.Skipped {
			p.obs.Skipped(p.cfg.Name)
			p.log.Warn("skipped malformed item", "id", s.ID, "reason", s.Reason)
		}
		held := len(page.Items) + len(page.Skipped)
		// Repeats do not count: items created during a walk shift offset pages, so the
		// page after the list's short last page can repeat its end.
		if shortBefore && anyUnseen(page.Items, seen) {
			p.anomaly(AnomalyShortPage, "a page held fewer items than asked for and was not the last; the provider caps pages below page_size",
				"page_size", p.cfg.PageSize, "page", pages+1)
		}
		shortBefore = p.cfg.PageSize > 0 && held < p.cfg.PageSize && page.Next != ""
		if o, ok := order.check(page.Items, seen, pages+1); !ok && !p.unordered {
			p.unordered = true
			p.anomaly(AnomalyUnordered, "the list is not newest first; every walk now reads every page down to the list's end",
				"purpose", purpose, "newer_id", o.newerID, "newer_created_at", o.newer, "older_id", o.olderID, "older_created_at", o.older,
				"page", o.page, "across_pages", o.acrossPages)
		}
		reached := false
		items := page.Items[:0:0]
		for i := range page.Items {
			it := &page.Items[i]
			if it.CreatedAt.Before(floor) {
				if it.CreatedAt.Before(filterFloor) && !floor.IsZero() {
					p.anomaly(AnomalyDateFilterIgnored, "the provider returned an item created before the date filter; such items are left out",
						"purpose", purpose, "from", floor, "id", it.ID, "created_at", it.CreatedAt)
				}
				if !p.unordered {
					reached = true
				}
				continue
			}
			if _, dup := seen[it.ID]; dup {
				continue // offset paging shifts items onto the next page; one reading per cycle
			}
			seen[it.ID] = struct{}{}
			if each != nil {
				each(it)
			}
			items = append(items, *it)
		}
		if err := p.apply(ctx, items, silent); err != nil {
			return pages + 1, err
		}
		if reached || page.Next == "" {
			return pages + 1, nil
		}
		if _, again := cursors[page.Next]; again || page.Next == cursor {
			return pages + 1, fmt.Errorf("%s walk: the provider repeated cursor %q; stopping the walk", purpose, page.Next)
		}
		cursors[page.Next] = struct{}{}
		cursor = page.Next
	}
}

// anyUnseen reports whether items holds one whose id is not in seen.
func anyUnseen(items []diff.Item, seen map[string]struct{}) bool {
	for i := range items {
		if _, ok := seen[items[i].ID]; !ok {
			return true
		}
	}
	return false
}

// orderCheck follows the creation times of one walk's items in the order they are
// listed: newest first means they never go up (equal times are allowed).
type orderCheck struct {
	last    time.Time
	lastID  string
	started bool
	// newest, when not zero, is a creation time the walk's first item must reach: that
	// of the newest item an earlier walk listed. It shows an oldest-first list even
	// when pages hold one item.
	newest time.Time
}

// disorder describes the first pair of items out of newest-first order.
type disorder struct {
	olderID, newerID string
	older, newer     time.Time
	page             int
	acrossPages      bool
}

// check follows one page's items; ok is false when their times went up within the
// page or from the previous page's last item, with the first such pair in o. Items
// already read in the walk (in seen) are passed over: offset pages repeat the end of
// the previous page when items arrive during a walk, and a repeat is not out of order.
func (c *orderCheck) check(items []diff.Item, seen map[string]struct{}, page int) (o disorder, ok bool) {
	ok = true
	first := true
	for i := range items {
		it := &items[i]
		if _, again := seen[it.ID]; again {
			continue
		}
		if !c.started && !c.newest.IsZero() && it.CreatedAt.Before(c.newest) {
			o = disorder{olderID: it.ID, older: it.CreatedAt, newerID: "(listed before)", newer: c.newest, page: page}
			ok = false
		}
		if c.started && it.CreatedAt.After(c.last) && ok {
			o = disorder{olderID: c.lastID, older: c.last, newerID: it.ID, newer: it.CreatedAt, page: page, acrossPages: first}
			ok = false
		}
		c.last, c.lastID, c.started, first = it.CreatedAt, it.ID, true, false
	}
	return o, ok
}

// anomaly reports provider behaviour the documents do not show: counted once per
// cycle, logged once per source.
func (p *Poller) anomaly(kind, msg string, attrs ...any) {
	if !p.anomalyCycle[kind] {
		p.anomalyCycle[kind] = true
		p.obs.Anomaly(p.cfg.Name, kind)
	}
	if !p.anomalyLogged[kind] {
		p.anomalyLogged[kind] = true
		p.log.Warn(msg, append([]any{"anomaly", kind, "provider", p.cfg.Provider}, attrs...)...)
	}
}

// apply compares items with their records and commits the changed records and the
// events in one transaction; silent records without events (baseline).
func (p *Poller) apply(ctx context.Context, items []diff.Item, silent bool) error {
	if len(items) == 0 {
		return nil
	}
	now := p.now()
	ids := make([]string, len(items))
	for i := range items {
		ids[i] = items[i].ID
	}
	prev, err := p.store.Load(ctx, p.cfg.Name, ids)
	if err != nil {
		return err
	}
	opt := diff.Options{Now: now, SettleWindow: p.cfg.SettleWindow}
	var recs []diff.Record
	var msgs []event.Message
	var moving []string // ids of tracked items that changed
	for i := range items {
		it := &items[i]
		before := prev[it.ID]
		if before == nil {
			p.ages.add(it.CreatedAt)
		}
		rec, trs, changed := diff.Compare(before, it, opt)
		if changed {
			recs = append(recs, rec)
			if before != nil {
				moving = append(moving, it.ID)
			}
		}
		if silent {
			continue
		}
		for j := range trs {
			m, err := p.message(&trs[j], now)
			if err != nil {
				return err
			}
			msgs = append(msgs, m)
			p.obs.Transition(p.cfg.Name, trs[j].Kind, trs[j].Current.State, trs[j].Current.State == diff.Unknown)
			if trs[j].Current.State == diff.Unknown {
				p.log.Warn("status not in the provider's table; published with state unknown",
					"kind", trs[j].Kind, "id", trs[j].ID, "status", trs[j].Current.Raw)
			}
		}
	}
	if len(recs) == 0 && len(msgs) == 0 {
		return nil
	}
	if err := p.store.Commit(ctx, p.cfg.Name, state.Batch{Now: now, Records: recs, Messages: msgs}); err != nil {
		return err
	}
	for _, id := range moving {
		p.moved[id] = now
	}
	return nil
}

// message renders one transition as the event of DESIGN §5.
func (p *Poller) message(tr *diff.Transition, now time.Time) (event.Message, error) {
	return Message(EventSource{Name: p.cfg.Name, Provider: p.cfg.Provider, Prefix: p.prefix, Lease: p.cfg.Lease}, tr, now)
}

// call runs one provider request under the rate limit, retrying temporary failures
// with exponential backoff and jitter for up to RetryFor, and honouring Retry-After.
// A 429 also halves the source's request rate until requests succeed again.
func (p *Poller) call(ctx context.Context, purpose string, req func(context.Context) error) error {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(500*time.Millisecond),
		backoff.WithMaxInterval(30*time.Second),
		backoff.WithMaxElapsedTime(p.cfg.RetryFor),
	)
	for {
		if err := p.limiter.Wait(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		rctx, cancel := ctx, context.CancelFunc(func() {})
		if p.cfg.RequestTimeout > 0 {
			rctx, cancel = context.WithTimeoutCause(ctx, p.cfg.RequestTimeout, errRequestTimeout)
		}
		began := time.Now()
		err := req(rctx)
		p.obs.Request(p.cfg.Name, purpose, statusCode(err), time.Since(began))
		p.drainAnomalies()
		if err != nil && errors.Is(err, context.DeadlineExceeded) && errors.Is(context.Cause(rctx), errRequestTimeout) {
			err = fmt.Errorf("%w after %s", errRequestTimeout, p.cfg.RequestTimeout)
		}
		cancel()
		if err == nil {
			p.recover()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !temporary(err) {
			return err
		}
		wait := b.NextBackOff()
		if wait == backoff.Stop {
			return err
		}
		reason := "backoff"
		var se *provider.StatusError
		if errors.As(err, &se) && se.Code == 429 {
			reason = "rate_limited"
			p.slowDown()
			if ra := min(se.RetryAfter, maxRetryAfter); ra > wait {
				wait = ra
			}
		}
		p.obs.Wait(p.cfg.Name, reason, wait)
		p.log.Debug("provider request failed; retrying", "err", err, "wait", wait.String())
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

var errRequestTimeout = errors.New("provider request timed out")

// maxRetryAfter caps the wait inside one cycle; a longer Retry-After ends the cycle and
// delays the next one instead.
const maxRetryAfter = 2 * time.Minute

// temporary reports whether a failed request may succeed if repeated.
func temporary(err error) bool {
	var ce *provider.CauseError
	if errors.As(err, &ce) {
		return false // a refusal whose cause the adapter identified
	}
	var se *provider.StatusError
	if errors.As(err, &se) {
		return se.Temporary()
	}
	var me *provider.MalformedError
	var ne net.Error
	return errors.As(err, &me) || errors.As(err, &ne) || errors.Is(err, errRequestTimeout) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

// slowDown halves the request rate, down to a sixteenth of the configured one.
func (p *Poller) slowDown() {
	floor := rate.Limit(p.cfg.RateLimit / 16)
	p.limiter.SetLimit(max(p.limiter.Limit()/2, floor))
}

// recover raises a slowed rate by 10% per successful request back to the configured one.
func (p *Poller) recover() {
	if l, want := p.limiter.Limit(), rate.Limit(p.cfg.RateLimit); l < want {
		p.limiter.SetLimit(min(l*1.1, want))
	}
}

// statusCode is the HTTP status a request ended with: 200 for success, 0 when no
// response arrived.
func statusCode(err error) int {
	if err == nil {
		return 200
	}
	var se *provider.StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// result classifies a cycle's outcome for Observer.Poll.
func result(ctx context.Context, err error) string {
	var se *provider.StatusError
	switch {
	case err == nil:
		return ResultOK
	case ctx.Err() != nil:
		return ResultCanceled
	case errors.Is(err, ErrOutboxFull):
		return ResultOutboxFull
	case errors.As(err, &se) && se.Auth():
		return ResultAuthError
	default:
		return ResultError
	}
}
