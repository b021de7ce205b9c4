package stateapi

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/state"
	"github.com/payments-watcher/watcher/state/bbolt"
	"github.com/payments-watcher/watcher/state/natskv"
)

// Stats summarises one source of a store.
type Stats struct {
	// Items counts the stored records, Open the entries of the open index, Stalled
	// the records marked stalled.
	Items, Open, Stalled int
	Meta                 state.Meta
}

// Store is what a View reads (and, for a rebaseline, writes): a state back end.
type Store interface {
	// Sources lists the sources the store holds state of; nil when the back end
	// cannot list them (then a View knows only the configured ones).
	Sources(ctx context.Context) ([]string, error)
	// Stats returns the counts and metadata of source; zero for a source without state.
	Stats(ctx context.Context, source string) (Stats, error)
	Load(ctx context.Context, source string, ids []string) (map[string]*diff.Record, error)
	OpenItems(ctx context.Context, source string) ([]state.OpenItem, error)
	// Each calls fn with every record of source in id order; an error from fn stops
	// the walk and is returned.
	Each(ctx context.Context, source string, fn func(*diff.Record) error) error
	Pending(ctx context.Context, after uint64, max int) ([]state.OutboxEntry, error)
	// OutboxStats returns the number of pending events and the oldest one's
	// enqueueing time.
	OutboxStats(ctx context.Context) (int, time.Time, error)
	// Rebaseline sets Meta.Rebaseline of source.
	Rebaseline(ctx context.Context, source string) error
}

// page is how many records or outbox entries are read at a time.
const page = 500

// Bolt returns the Store of a bbolt state file.
func Bolt(s *bbolt.Store) Store { return boltStore{s} }

type boltStore struct{ s *bbolt.Store }

func (b boltStore) Sources(context.Context) ([]string, error) { return b.s.Sources() }

func (b boltStore) Stats(_ context.Context, source string) (Stats, error) {
	st, err := b.s.Stats(source)
	return Stats{Items: st.Items, Open: st.Open, Stalled: st.Stalled, Meta: st.Meta}, err
}

func (b boltStore) Load(ctx context.Context, source string, ids []string) (map[string]*diff.Record, error) {
	return b.s.Load(ctx, source, ids)
}

func (b boltStore) OpenItems(ctx context.Context, source string) ([]state.OpenItem, error) {
	return b.s.OpenItems(ctx, source)
}

// Each reads a page per short read transaction, so that a slow reader never holds
// one open.
func (b boltStore) Each(_ context.Context, source string, fn func(*diff.Record) error) error {
	after := ""
	for {
		recs, err := b.s.Records(source, after, page)
		if err != nil {
			return err
		}
		for i := range recs {
			if err := fn(&recs[i]); err != nil {
				return err
			}
		}
		if len(recs) < page {
			return nil
		}
		after = recs[len(recs)-1].ID
	}
}

func (b boltStore) Pending(ctx context.Context, after uint64, max int) ([]state.OutboxEntry, error) {
	return b.s.Pending(ctx, after, max)
}

func (b boltStore) OutboxStats(ctx context.Context) (int, time.Time, error) {
	return b.s.OutboxStats(ctx)
}

// Rebaseline writes the file's metadata; only while no daemon holds the file, which
// its lock ensures (a running daemon is asked through its poller instead).
func (b boltStore) Rebaseline(ctx context.Context, source string) error {
	meta, err := b.s.Meta(ctx, source)
	if err != nil {
		return err
	}
	meta.Rebaseline = true
	return b.s.Commit(ctx, source, state.Batch{Meta: &meta})
}

// KV returns the Store of the NATS KV back end. s must be a Store of its own, not
// the one the pollers commit through: reads remember revisions (see package
// natskv), and a View's reads must not move a poller's.
func KV(s *natskv.Store) Store { return kvStore{s} }

type kvStore struct{ s *natskv.Store }

// Sources returns nil: the buckets are not listed; the configured sources are known.
func (k kvStore) Sources(context.Context) ([]string, error) { return nil, nil }

func (k kvStore) Stats(ctx context.Context, source string) (Stats, error) {
	var st Stats
	var err error
	if st.Meta, err = k.s.Meta(ctx, source); err != nil {
		return Stats{}, err
	}
	open, err := k.s.OpenItems(ctx, source)
	if err != nil {
		return Stats{}, err
	}
	st.Open = len(open)
	err = k.s.ForEach(ctx, source, func(r diff.Record) error {
		st.Items++
		if r.Stalled {
			st.Stalled++
		}
		return nil
	})
	return st, err
}

func (k kvStore) Load(ctx context.Context, source string, ids []string) (map[string]*diff.Record, error) {
	return k.s.Load(ctx, source, ids)
}

func (k kvStore) OpenItems(ctx context.Context, source string) ([]state.OpenItem, error) {
	return k.s.OpenItems(ctx, source)
}

func (k kvStore) Each(ctx context.Context, source string, fn func(*diff.Record) error) error {
	return k.s.ForEach(ctx, source, func(r diff.Record) error { return fn(&r) })
}

func (k kvStore) Pending(ctx context.Context, after uint64, max int) ([]state.OutboxEntry, error) {
	return k.s.Pending(ctx, after, max)
}

func (k kvStore) OutboxStats(ctx context.Context) (int, time.Time, error) {
	return k.s.OutboxStats(ctx)
}

// kvRebaselineTries bounds the read-modify-write of a source's metadata against the
// poller's own commits.
const kvRebaselineTries = 5

// Rebaseline writes the shared metadata at the revision it read, again when the
// source's poller wrote it meanwhile. A poller that then commits metadata it read
// before fails its revision check and reads this one at its next cycle, so the
// request is not lost and needs no lease.
func (k kvStore) Rebaseline(ctx context.Context, source string) error {
	var err error
	for try := range kvRebaselineTries {
		if try > 0 { // the poller's commit in progress ends within milliseconds
			t := time.NewTimer(time.Duration(try) * 50 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
		var meta state.Meta
		if meta, err = k.s.Meta(ctx, source); err != nil {
			return err
		}
		meta.Rebaseline = true
		if err = k.s.Commit(ctx, source, state.Batch{Meta: &meta}); !errors.Is(err, natskv.ErrConflict) {
			return err
		}
	}
	return err
}

// View answers the Reader calls from a Store.
type View struct {
	store Store
	// configured are the configured source names in configuration order; nil when
	// there is no configuration.
	configured []string
	// rebaseline, when set, replaces the store's Rebaseline (a running daemon asks
	// its poller).
	rebaseline func(ctx context.Context, source string) error
}

// NewView returns a View of store; configured are the configured source names (nil
// without a configuration: then the store's sources are all there is).
func NewView(store Store, configured []string) *View {
	return &View{store: store, configured: configured}
}

// WithRebaseline returns a copy of v whose Rebaseline calls fn (after checking the
// source) instead of writing the store.
func (v *View) WithRebaseline(fn func(ctx context.Context, source string) error) *View {
	c := *v
	c.rebaseline = fn
	return &c
}

// names returns the configured sources, then those only the store holds.
func (v *View) names(ctx context.Context) ([]string, error) {
	stored, err := v.store.Sources(ctx)
	if err != nil {
		return nil, err
	}
	out := slices.Clone(v.configured)
	for _, s := range stored {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out, nil
}

// check returns an error listing the known sources when source is not one of them.
func (v *View) check(ctx context.Context, source string) error {
	names, err := v.names(ctx)
	if err != nil {
		return err
	}
	if !slices.Contains(names, source) {
		return UnknownSource(source, names)
	}
	return nil
}

// Sources returns every known source with its counts, configured ones first.
func (v *View) Sources(ctx context.Context) ([]SourceInfo, error) {
	names, err := v.names(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]SourceInfo, 0, len(names))
	for _, n := range names {
		st, err := v.store.Stats(ctx, n)
		if err != nil {
			return nil, err
		}
		out = append(out, SourceInfo{
			Name: n, Configured: v.configured == nil || slices.Contains(v.configured, n),
			Items: st.Items, Open: st.Open, Stalled: st.Stalled,
			HighWater: timePtr(st.Meta.HighWater), LastPoll: timePtr(st.Meta.LastPoll),
			BaselineDone: st.Meta.BaselineDone, Rebaseline: st.Meta.Rebaseline,
		})
	}
	return out, nil
}

// Record returns the stored record of id.
func (v *View) Record(ctx context.Context, source, id string) (Record, error) {
	if err := v.check(ctx, source); err != nil {
		return Record{}, err
	}
	recs, err := v.store.Load(ctx, source, []string{id})
	if err != nil {
		return Record{}, err
	}
	r, ok := recs[id]
	if !ok {
		return Record{}, fmt.Errorf("source %s: item %q %w", source, id, ErrNotFound)
	}
	return RecordOf(source, r), nil
}

// Open returns the open items of source, oldest first.
func (v *View) Open(ctx context.Context, source string) ([]OpenItem, error) {
	if err := v.check(ctx, source); err != nil {
		return nil, err
	}
	items, err := v.store.OpenItems(ctx, source)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(items))
	for i, o := range items {
		ids[i] = o.ID
	}
	recs, err := v.store.Load(ctx, source, ids)
	if err != nil {
		return nil, err
	}
	out := make([]OpenItem, 0, len(items))
	for _, o := range items {
		j := OpenItem{ID: o.ID, CreatedAt: o.CreatedAt, State: string(o.State), LastRead: timePtr(o.LastRead.UTC())}
		if r, ok := recs[o.ID]; ok { // committed since OpenItems otherwise; the index entry is enough
			j.Kind, j.Status = r.Kind, r.Status.Raw
		}
		out = append(out, j)
	}
	return out, nil
}

// Export calls fn with every record of source in id order.
func (v *View) Export(ctx context.Context, source string, fn func(Record) error) error {
	if err := v.check(ctx, source); err != nil {
		return err
	}
	return v.store.Each(ctx, source, func(r *diff.Record) error { return fn(RecordOf(source, r)) })
}

// Outbox calls fn with the pending events in order, at most limit (0: all).
func (v *View) Outbox(ctx context.Context, limit int, fn func(OutboxEntry) error) error {
	var after uint64
	n := 0
	for {
		size := page
		if limit > 0 {
			size = min(size, limit-n)
		}
		if size <= 0 {
			return nil
		}
		es, err := v.store.Pending(ctx, after, size)
		if err != nil {
			return err
		}
		for _, e := range es {
			if err := fn(OutboxEntry{Seq: e.Seq, Enqueued: e.Enqueued, Subject: e.Msg.Subject, ID: e.Msg.ID}); err != nil {
				return err
			}
		}
		n += len(es)
		if len(es) < size {
			return nil
		}
		after = es[len(es)-1].Seq
	}
}

// Rebaseline makes the next cycle of source a silent baseline. source must be
// configured, or without a configuration one the store holds.
func (v *View) Rebaseline(ctx context.Context, source string) error {
	if v.configured != nil && !slices.Contains(v.configured, source) {
		return UnknownSource(source, v.configured)
	}
	if err := v.check(ctx, source); err != nil {
		return err
	}
	if v.rebaseline != nil {
		return v.rebaseline(ctx, source)
	}
	return v.store.Rebaseline(ctx, source)
}
