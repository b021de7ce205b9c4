// Package natskv keeps watcher's state in NATS JetStream instead of a local file, so
// that several watcher replicas can share it: per source, the snapshot records, the
// open index and the metadata live in JetStream key-value buckets, and the outbox is
// a stream. Values use the encodings of package state, as the bbolt back end's do
// (package state/bbolt).
//
// # Layout
//
//	<prefix>_records   key <source>.<id>  encoded diff.Record
//	<prefix>_open      key <source>.<id>  open index entry (creation time, read time, open state)
//	<prefix>_meta      key <source>       encoded state.Meta
//	<prefix>_acked     key <seq>          retained acknowledged outbox entries
//	<prefix>_journal   key <source>       the page a Commit is applying, or nothing
//	<prefix>_outbox    stream on subject watcher_state.<prefix>.outbox: one message per
//	                   outbox entry, its stream sequence is the entry's Seq, its
//	                   Nats-Msg-Id the event id
//
// Source names and item ids are written base64url (unpadded) in keys, so any id fits
// the key alphabet and a source's keys are exactly those under "<source>.".
//
// # Stale writers
//
// Records and metadata are written with revision checks: Load and Meta remember the
// revision they read, and Commit updates a key only if it still has that revision
// (creates it only if it is still absent). A replica whose view is stale, because
// another replica committed to the source since it read, gets an error wrapping
// ErrConflict and changes none of the keys it checked; the poller gives up the cycle,
// and the next cycle reads afresh. Options.Fence, when set, is asked before anything
// is written: in cluster mode it fails once the replica no longer holds the source's
// lease, and Commit then fails with an error wrapping ErrFenced and writes nothing.
//
// # Commit without transactions
//
// JetStream has no multi-key transaction, so each source has a journal key
// (<prefix>_journal, key <source>) and a Commit first writes its whole page there,
// compressed: that write is where the Commit takes effect. It is revision-checked
// against the journal revision read when the Store's view of the source began (Meta,
// which the poller calls at the start of every cycle, or the first Load), so the
// commits of a source are serialised, and a writer whose view is stale (another
// replica committed since) gets ErrConflict before it has written anything, events
// included. The page is then applied:
//
//  1. outbox messages, each published with Nats-Msg-Id = event id, so the stream's
//     duplicate window drops a message it already holds;
//  2. open index entries of records that are open;
//  3. records, revision-checked;
//  4. removals from the open index of records that are no longer open;
//  5. metadata, revision-checked;
//
// and the journal is cleared. The read times of the batch's Reads are not part of the
// page: they are advisory and written last, after the journal is cleared, each as a
// revision-checked update of the open index entry as just read, skipped when the
// entry is absent or changed meanwhile (see putReads); a batch of Reads alone (no
// records, messages or metadata) does not write the journal, so a Reader's goes
// through while a poller's commit is pending.
//
// A page whose application was cut short (a crash, a lost connection, a cancelled
// ctx) stays in the journal, and the next Meta of the source, on this replica or on
// the one that takes the source over, applies it before the source is read: an event
// in the outbox is never left without the record it came from, so the item's next
// change gets the next sequence rather than the same one again. Re-applied messages are dropped by the outbox's duplicate window (and, if
// they were published meanwhile, by the event stream's), which must therefore be
// longer than the time a source takes to move to another replica plus one cycle. A
// page must fit one journal value once compressed (960 KiB); a larger one fails its
// Commit with a message naming page_size.
//
// # Cancellation
//
// Every method that reaches JetStream takes a context and honours it: once ctx ends,
// the request in flight is abandoned and the method returns an error wrapping
// ctx.Err(). Each call is also bounded by Options.Timeout per round of requests, so a
// server that stops answering cannot hold a caller whose ctx has no deadline. A Commit
// cut short after its journal write is completed by the next view of the source, as
// after a crash.
//
// # Outbox
//
// The outbox is shared by every replica; run one publisher over it (cluster mode
// runs it under a lease of its own). Seq is the outbox stream's sequence, so entries
// are Pending in commit order across replicas.
package natskv

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/jssetup"
	"github.com/payments-watcher/watcher/state"
)

// Errors Commit wraps.
var (
	// ErrConflict means a key changed since this store read it: another replica
	// committed to the source. Nothing the batch would have replaced was overwritten.
	ErrConflict = errors.New("changed by another writer since it was read")
	// ErrFenced means Options.Fence refused the commit (the lease is lost).
	ErrFenced = errors.New("not allowed to write this source")
)

// Options configure a Store.
type Options struct {
	// Prefix names the buckets and the outbox stream; default "watcher". Letters,
	// digits, '-' and '_' only.
	Prefix string
	// Replicas is the number of copies JetStream keeps of each bucket and of the
	// outbox stream (1 to 5); default 1.
	Replicas int
	// DuplicateWindow is the outbox stream's duplicate window; default 10 minutes.
	DuplicateWindow time.Duration
	// Timeout bounds each JetStream request; default 5s.
	Timeout time.Duration
	// Fence, when not nil, is called with the source before a Commit writes anything;
	// an error makes Commit fail with ErrFenced and write nothing.
	Fence func(source string) error
	// Reader marks a Store that does not poll (the state API, `watcher state`): its Meta
	// and Load read without completing a commit left pending in a source's journal,
	// which belongs to the source's poller, and its Commit fails with ErrConflict while
	// one is pending.
	Reader bool
}

// Store is the JetStream back end. It is safe for concurrent use.
type Store struct {
	js      jetstream.JetStream
	opt     Options
	records jetstream.KeyValue
	open    jetstream.KeyValue
	meta    jetstream.KeyValue
	acked   jetstream.KeyValue
	journal jetstream.KeyValue
	outbox  jetstream.Stream
	subject string
	changed chan struct{}

	mu   sync.Mutex
	revs map[string]uint64 // records and meta keys -> revision last read or written
	// journals holds, per source, the journal revision this Store's view of the
	// source began at or last wrote (journal.go); absent until read.
	journals map[string]uint64

	// sizesMu guards sizes: the state.RetainedSize of each retained entry this Store
	// knows of, by Seq; nil until read from the bucket (sizeIndex). Every full read of
	// the retained entries (Retained, Prune) replaces it, so entries another process
	// wrote are counted from then on.
	sizesMu    sync.Mutex
	sizes      map[uint64]int64
	sizesTotal int64 // the sum of sizes
}

// Names returns the bucket and stream names Open uses for prefix: records, open, meta,
// acked buckets and the outbox stream.
func Names(prefix string) (records, open, meta, acked, outbox string) {
	return prefix + "_records", prefix + "_open", prefix + "_meta", prefix + "_acked", prefix + "_outbox"
}

// Open creates (or updates to opt) the buckets and the outbox stream and returns a
// Store on them.
func Open(ctx context.Context, js jetstream.JetStream, opt Options) (*Store, error) {
	opt.Prefix = cmp.Or(opt.Prefix, "watcher")
	if opt.Replicas == 0 {
		opt.Replicas = 1
	}
	if opt.DuplicateWindow <= 0 {
		opt.DuplicateWindow = 10 * time.Minute
	}
	if opt.Timeout <= 0 {
		opt.Timeout = 5 * time.Second
	}
	if !validName(opt.Prefix) {
		return nil, fmt.Errorf("state nats_kv: prefix %q: use letters, digits, '-' and '_' only", opt.Prefix)
	}
	if opt.Replicas < 1 || opt.Replicas > 5 {
		return nil, fmt.Errorf("state nats_kv: replicas %d is not between 1 and 5", opt.Replicas)
	}
	s := &Store{js: js, opt: opt, changed: make(chan struct{}, 1), revs: map[string]uint64{},
		journals: map[string]uint64{}, subject: "watcher_state." + opt.Prefix + ".outbox"}
	rec, open, meta, acked, outbox := Names(opt.Prefix)
	for _, b := range []struct {
		name string
		kv   *jetstream.KeyValue
	}{{rec, &s.records}, {open, &s.open}, {meta, &s.meta}, {acked, &s.acked}, {opt.Prefix + "_journal", &s.journal}} {
		kv, err := jssetup.Retry(ctx, func(ctx context.Context) (jetstream.KeyValue, error) {
			// Use a bucket that exists as it is: replicas starting together would
			// otherwise all update it at once.
			if kv, err := js.KeyValue(ctx, b.name); err == nil {
				return kv, nil
			}
			return js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
				Bucket: b.name, History: 1, Replicas: opt.Replicas, Storage: jetstream.FileStorage,
			})
		})
		if err != nil {
			return nil, fmt.Errorf("state nats_kv: bucket %s: %w", b.name, err)
		}
		*b.kv = kv
	}
	st, err := jssetup.Retry(ctx, func(ctx context.Context) (jetstream.Stream, error) {
		if st, err := js.Stream(ctx, outbox); err == nil {
			return st, nil
		}
		return js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name: outbox, Subjects: []string{s.subject}, Storage: jetstream.FileStorage,
			Replicas: opt.Replicas, Duplicates: opt.DuplicateWindow, Retention: jetstream.LimitsPolicy,
			Discard: jetstream.DiscardOld,
		})
	})
	if err != nil {
		return nil, fmt.Errorf("state nats_kv: outbox stream %s: %w", outbox, err)
	}
	s.outbox = st
	return s, nil
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Close releases nothing: the connection is the caller's. It exists so that the
// Store can stand where a closable store is expected.
func (s *Store) Close() error { return nil }

// bound returns ctx bounded to n times Options.Timeout: the most a call making about
// n rounds of JetStream requests may take, whatever its caller allows.
func (s *Store) bound(ctx context.Context, n int) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.opt.Timeout*time.Duration(n))
}

var enc = base64.RawURLEncoding

func sourceKey(source string) string { return enc.EncodeToString([]byte(source)) }

func itemKey(source, id string) string {
	return sourceKey(source) + "." + enc.EncodeToString([]byte(id))
}

func itemID(key string) (string, error) {
	i := strings.LastIndexByte(key, '.')
	b, err := enc.DecodeString(key[i+1:])
	if err != nil {
		return "", fmt.Errorf("key %q: %w", key, err)
	}
	return string(b), nil
}

func (s *Store) remember(key string, rev uint64) {
	s.mu.Lock()
	s.revs[key] = rev
	s.mu.Unlock()
}

func (s *Store) revision(key string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.revs[key]
}

// Commit writes b to source in the order the package doc describes. It fails with
// ErrFenced before writing anything when Options.Fence refuses, and with ErrConflict
// when a record or the metadata changed since this Store read it; the writes before
// the failing one stay, which is safe (see the package doc). Cancelling ctx stops it
// between two writes or abandons the write in flight, with the same outcome. After a
// commit that appended messages, Changed is signalled.
func (s *Store) Commit(ctx context.Context, source string, b state.Batch) error {
	if err := s.commit(ctx, source, &b); err != nil {
		return fmt.Errorf("state nats_kv: commit to source %q: %w", source, err)
	}
	if len(b.Messages) > 0 {
		select {
		case s.changed <- struct{}{}:
		default:
		}
	}
	return nil
}

type encoded struct {
	key      string
	value    []byte
	open     bool
	openItem []byte
}

func (s *Store) commit(ctx context.Context, source string, b *state.Batch) error {
	if source == "" {
		return errors.New("empty source name")
	}
	if b.Now.IsZero() && len(b.Records)+len(b.Messages) > 0 {
		return errors.New("batch has records or messages but no Now")
	}
	// Encode everything first: a value that cannot be stored writes nothing.
	entries := make([][]byte, len(b.Messages))
	for i := range b.Messages {
		v, err := state.EncodeEntry(b.Now, &b.Messages[i])
		if err != nil {
			return fmt.Errorf("message %q: %w", b.Messages[i].ID, err)
		}
		entries[i] = v
	}
	recs := make([]encoded, len(b.Records))
	for i := range b.Records {
		r := &b.Records[i]
		if err := state.CheckRecord(r); err != nil {
			return fmt.Errorf("record %q: %w", r.ID, err)
		}
		v, err := state.EncodeRecord(r)
		if err != nil {
			return fmt.Errorf("record %q: %w", r.ID, err)
		}
		recs[i] = encoded{key: itemKey(source, r.ID), value: v, open: state.InOpenIndex(r, b.Now)}
		if recs[i].open {
			if recs[i].openItem, err = state.AppendOpen(nil, r, b.Now); err != nil {
				return fmt.Errorf("record %q: %w", r.ID, err)
			}
		}
	}
	var meta []byte
	if b.Meta != nil {
		var err error
		if meta, err = state.EncodeMeta(b.Meta); err != nil {
			return fmt.Errorf("meta: %w", err)
		}
	}
	if s.opt.Fence != nil {
		if err := s.opt.Fence(source); err != nil {
			return fmt.Errorf("%w: %w", ErrFenced, err)
		}
	}
	ctx, cancel := s.bound(ctx, 3+len(entries)/64+len(recs)/64+len(b.Reads)/32)
	defer cancel()

	// A batch of read times alone has nothing for the journal: read times are not
	// part of it (see putReads), so it neither takes the source's journal turn nor
	// waits for a pending commit.
	if len(recs)+len(entries) > 0 || meta != nil || len(b.Reads) == 0 {
		bt := &batch{entries: entries, recs: recs, meta: meta, metaKey: sourceKey(source)}
		for i := range b.Messages {
			bt.ids = append(bt.ids, b.Messages[i].ID)
		}
		rev, err := s.writeJournal(ctx, source, bt)
		if err != nil {
			return err
		}
		if err := s.apply(ctx, bt, true); err != nil {
			return err
		}
		if err := s.clearJournal(ctx, source, rev); err != nil {
			return err
		}
	}
	return s.putReads(ctx, source, b.Reads)
}

// Forget removes the records of the given ids of source and their open index
// entries; ids not stored are ignored. It fails with ErrFenced before deleting
// anything when Options.Fence refuses. Each id's open index entry is deleted before its
// record, so an entry never outlives its record; cancelling ctx stops it between two
// deletions, the ids done so far staying forgotten and the others stored as they were.
// The buckets keep one small deletion marker per forgotten key.
//
// A deletion does not go through the journal, which keeps an event in the outbox from
// being left without the record it came from so that the item's next change gets the
// next sequence. A Forget writes no outbox message, and the poller forgets only items
// that no walk reads again: they have no next change for a record to serve. A commit
// that overlaps a Forget of the same record ends one of two ways, both safe. The commit
// writes the record after the deletion: a write checked against the revision another
// Store read before the deletion fails with ErrConflict (the deletion changed the key's
// revision) and its cycle is retried from a fresh read; any other write (this Store's,
// whose remembered revision Forget drops, or a page replayed unchecked from the
// journal) stores the record again with the state its own events carry, tracked as it
// was before the Forget until a later pass forgets it. Or the deletion comes last and
// the record is forgotten. No event is lost or published twice either way.
func (s *Store) Forget(ctx context.Context, source string, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	if s.opt.Fence != nil {
		if err := s.opt.Fence(source); err != nil {
			return fmt.Errorf("state nats_kv: forget records of source %q: %w: %w", source, ErrFenced, err)
		}
	}
	ctx, cancel := s.bound(ctx, 1+len(ids)/32)
	defer cancel()
	for _, id := range ids {
		if id == "" {
			continue // never an id of the buckets
		}
		key := itemKey(source, id)
		if err := s.open.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("state nats_kv: forget open item %q of source %q: %w", id, source, err)
		}
		if err := s.records.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("state nats_kv: forget record %q of source %q: %w", id, source, err)
		}
		// The record's next commit creates it anew (after a Load, which reads it as
		// absent); nothing of it stays in memory.
		s.mu.Lock()
		delete(s.revs, "r:"+key)
		s.mu.Unlock()
	}
	return nil
}

// testHookRead, when set (by tests), is called between the read of an open index
// entry and the update of its read time.
var testHookRead func(id string)

// putReads sets the read times of a batch's Reads in the open index, once the batch's
// own writes have taken effect. Read times are advisory and not part of the journal
// (a batch replayed from the journal carries its records' read time, its Now, and no
// other): each is a revision-checked update of an entry as it was just read. An
// entry that is absent (the item closed, stalled or was never open) is skipped, so a
// read time never brings an entry back; one that holds that read time or a later one
// is left alone; one that changed between the read and the update (another commit
// rewrote or removed it) is skipped too: a read time never undoes another commit's
// write. Cancelling ctx stops it between two ids, with the batch itself committed.
func (s *Store) putReads(ctx context.Context, source string, reads map[string]time.Time) error {
	for id, at := range reads {
		if at.IsZero() || id == "" { // nothing to set; never an id of the index
			continue
		}
		key := itemKey(source, id)
		e, err := s.open.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read time of open item %q: %w", id, err)
		}
		v, changed, err := state.WithLastRead(e.Value(), at)
		if err != nil {
			return fmt.Errorf("read time of open item %q: %w", id, err)
		}
		if !changed {
			continue
		}
		if testHookRead != nil {
			testHookRead(id)
		}
		if _, err := s.open.Update(ctx, key, v, e.Revision()); err != nil {
			if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				continue // changed meanwhile
			}
			return fmt.Errorf("read time of open item %q: %w", id, err)
		}
	}
	return nil
}

// apply writes a batch that the source's journal holds: outbox messages, open index
// entries, records, open index removals, metadata. checked makes the records and the
// metadata revision-checked (a Commit); a replay of a pending journal writes them as
// they are.
func (s *Store) apply(ctx context.Context, b *batch, checked bool) error {
	// 1. Outbox, idempotent by event id.
	for i, v := range b.entries {
		if _, err := s.js.Publish(ctx, s.subject, v, jetstream.WithMsgID(b.ids[i])); err != nil {
			return fmt.Errorf("outbox: message %q: %w", b.ids[i], err)
		}
	}
	// 2. Open index entries of open records.
	for _, r := range b.recs {
		if r.open {
			if _, err := s.open.Put(ctx, r.key, r.openItem); err != nil {
				return fmt.Errorf("open index: %w", err)
			}
		}
	}
	// 3. Records.
	for _, r := range b.recs {
		rev, err := s.write(ctx, s.records, r.key, r.value, checked)
		if err != nil {
			return fmt.Errorf("record %q: %w", r.key, err)
		}
		s.remember("r:"+r.key, rev)
	}
	// 4. Open index removals.
	for _, r := range b.recs {
		if !r.open {
			if err := s.open.Delete(ctx, r.key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
				return fmt.Errorf("open index: %w", err)
			}
		}
	}
	// 5. Metadata.
	if b.meta != nil {
		key := b.metaKey
		rev, err := s.write(ctx, s.meta, key, b.meta, checked)
		if err != nil {
			return fmt.Errorf("meta: %w", err)
		}
		s.remember("m:"+key, rev)
	}
	return nil
}

// write puts v at key: revision-checked (see put) when checked, else as it is.
func (s *Store) write(ctx context.Context, kv jetstream.KeyValue, key string, v []byte, checked bool) (uint64, error) {
	if checked {
		return s.put(ctx, kv, key, v)
	}
	return kv.Put(ctx, key, v)
}

// put writes key if it still has the revision this Store last saw (is still absent
// when it saw none).
func (s *Store) put(ctx context.Context, kv jetstream.KeyValue, key string, v []byte) (uint64, error) {
	tag := "r:"
	if kv == s.meta {
		tag = "m:"
	}
	want := s.revision(tag + key)
	var rev uint64
	var err error
	if want == 0 {
		rev, err = kv.Create(ctx, key, v)
	} else {
		rev, err = kv.Update(ctx, key, v, want)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return 0, fmt.Errorf("%w (expected revision %d)", ErrConflict, want)
	}
	return rev, err
}

// Load returns the stored records of the given ids of source, and remembers their
// revisions (none for an absent id) for the revision checks of Commit. Cancelling ctx
// makes it fail; the revisions read before stay remembered.
func (s *Store) Load(ctx context.Context, source string, ids []string) (map[string]*diff.Record, error) {
	ctx, cancel := s.bound(ctx, 1+len(ids)/64)
	defer cancel()
	if _, known := s.journalRev(source); !known && !s.opt.Reader {
		if err := s.recoverSource(ctx, source); err != nil {
			return nil, fmt.Errorf("state nats_kv: load from source %q: %w", source, err)
		}
	}
	out := make(map[string]*diff.Record, len(ids))
	for _, id := range ids {
		key := itemKey(source, id)
		e, err := s.records.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			s.remember("r:"+key, 0)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("state nats_kv: load from source %q: record %q: %w", source, id, err)
		}
		r, err := state.DecodeRecord(id, e.Value())
		if err != nil {
			return nil, fmt.Errorf("state nats_kv: load from source %q: record %q: %w", source, id, err)
		}
		s.remember("r:"+key, e.Revision())
		out[id] = &r
	}
	return out, nil
}

// each calls fn with every live entry of kv under source, in no particular order.
func each(ctx context.Context, kv jetstream.KeyValue, source string, fn func(jetstream.KeyValueEntry) error) error {
	w, err := kv.Watch(ctx, sourceKey(source)+".>", jetstream.IgnoreDeletes())
	if err != nil {
		return err
	}
	defer w.Stop()
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch closed before the initial values were read")
			}
			if e == nil {
				return nil
			}
			if err := fn(e); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// ForEach calls fn with every record of source, in id order. An error from fn stops
// the walk and is returned as is. The records are all read before fn is first called;
// cancelling ctx while they are read makes ForEach fail without calling fn.
func (s *Store) ForEach(ctx context.Context, source string, fn func(diff.Record) error) error {
	ctx, cancel := s.bound(ctx, 10)
	defer cancel()
	var recs []diff.Record
	err := each(ctx, s.records, source, func(e jetstream.KeyValueEntry) error {
		id, err := itemID(e.Key())
		if err != nil {
			return err
		}
		r, err := state.DecodeRecord(id, e.Value())
		if err != nil {
			return fmt.Errorf("record %q: %w", id, err)
		}
		recs = append(recs, r)
		return nil
	})
	if err != nil {
		return fmt.Errorf("state nats_kv: read source %q: %w", source, err)
	}
	slices.SortFunc(recs, func(a, b diff.Record) int { return cmp.Compare(a.ID, b.ID) })
	for _, r := range recs {
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

// Meta returns the metadata of source, the zero Meta for a source without any, and
// remembers its revision for the revision check of Commit. Cancelling ctx makes it
// fail.
func (s *Store) Meta(ctx context.Context, source string) (state.Meta, error) {
	ctx, cancel := s.bound(ctx, 4)
	defer cancel()
	// A poller's view of the source begins here: a commit left pending by a crash is
	// applied first, and the journal revision read is the one this view's commits check.
	if !s.opt.Reader {
		if err := s.recoverSource(ctx, source); err != nil {
			return state.Meta{}, fmt.Errorf("state nats_kv: meta of source %q: %w", source, err)
		}
	}
	key := sourceKey(source)
	e, err := s.meta.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		s.remember("m:"+key, 0)
		return state.Meta{}, nil
	}
	if err != nil {
		return state.Meta{}, fmt.Errorf("state nats_kv: meta of source %q: %w", source, err)
	}
	m, err := state.DecodeMeta(e.Value())
	if err != nil {
		return state.Meta{}, fmt.Errorf("state nats_kv: meta of source %q: %w", source, err)
	}
	s.remember("m:"+key, e.Revision())
	return m, nil
}

// OpenItems returns the open index of source, oldest CreatedAt first, then by ID.
// Cancelling ctx makes it fail.
func (s *Store) OpenItems(ctx context.Context, source string) ([]state.OpenItem, error) {
	ctx, cancel := s.bound(ctx, 10)
	defer cancel()
	var out []state.OpenItem
	err := each(ctx, s.open, source, func(e jetstream.KeyValueEntry) error {
		id, err := itemID(e.Key())
		if err != nil {
			return err
		}
		it, err := state.DecodeOpen(id, e.Value())
		if err != nil {
			return fmt.Errorf("open item %q: %w", id, err)
		}
		out = append(out, it)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("state nats_kv: open items of source %q: %w", source, err)
	}
	slices.SortFunc(out, func(a, b state.OpenItem) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// Changed receives a value after a Commit through this Store that appended messages.
// Commits by other replicas do not signal it: a publisher also looks at the outbox
// periodically.
func (s *Store) Changed() <-chan struct{} { return s.changed }

// Pending returns up to max outbox entries with Seq greater than after, in increasing
// Seq order. max must be positive. Cancelling ctx makes it fail.
func (s *Store) Pending(ctx context.Context, after uint64, max int) ([]state.OutboxEntry, error) {
	if max <= 0 {
		return nil, fmt.Errorf("state nats_kv: pending outbox entries: max %d is not positive", max)
	}
	if after == math.MaxUint64 {
		return nil, nil
	}
	ctx, cancel := s.bound(ctx, 1+max/64)
	defer cancel()
	var out []state.OutboxEntry
	for seq := after + 1; len(out) < max; {
		m, err := s.outbox.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(s.subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("state nats_kv: pending outbox entries: %w", err)
		}
		e, err := state.DecodeEntry(m.Sequence, m.Data)
		if err != nil {
			return nil, fmt.Errorf("state nats_kv: outbox entry %d: %w", m.Sequence, err)
		}
		out = append(out, e)
		seq = m.Sequence + 1
	}
	return out, nil
}

// OutboxStats returns the number of pending outbox entries and the Enqueued time of
// the oldest; the zero time when none is pending. Cancelling ctx makes it fail.
func (s *Store) OutboxStats(ctx context.Context) (int, time.Time, error) {
	ctx, cancel := s.bound(ctx, 1)
	defer cancel()
	info, err := s.outbox.Info(ctx)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("state nats_kv: outbox stats: %w", err)
	}
	if info.State.Msgs == 0 {
		return 0, time.Time{}, nil
	}
	first, err := s.Pending(ctx, info.State.FirstSeq-1, 1)
	if err != nil || len(first) == 0 {
		return int(info.State.Msgs), time.Time{}, err
	}
	return int(info.State.Msgs), first[0].Enqueued, nil
}

func ackedKey(seq uint64) string { return fmt.Sprintf("%020d", seq) }

// Delete removes the entries with the given Seqs, pending or retained; Seqs in
// neither are ignored. Cancelling ctx stops it part way: the entries deleted before
// stay deleted, the others stay where they were.
func (s *Store) Delete(ctx context.Context, seqs []uint64) error {
	ctx, cancel := s.bound(ctx, 1+len(seqs)/64)
	defer cancel()
	for _, seq := range seqs {
		if err := s.outbox.DeleteMsg(ctx, seq); err != nil && !notFound(err) {
			return fmt.Errorf("state nats_kv: delete outbox entry %d: %w", seq, err)
		}
		// Look first: a purge leaves a marker, and most entries were never retained.
		if _, err := s.acked.Get(ctx, ackedKey(seq)); errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err := s.acked.Purge(ctx, ackedKey(seq)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("state nats_kv: delete retained entry %d: %w", seq, err)
		}
		s.setSize(seq, 0)
	}
	return nil
}

// notFound reports whether err says a stream message does not exist (deleted by
// another publisher, or never there).
func notFound(err error) bool {
	var apiErr *jetstream.APIError
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return true
	}
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeMessageNotFound || apiErr.Code == 404) {
		return true
	}
	// The deletion of a missing message fails with error code 10057 in the text only.
	msg := err.Error()
	return strings.Contains(msg, "err_code=10057") &&
		(strings.Contains(msg, "no message found") || strings.Contains(msg, "stream store EOF"))
}

// Ack records acknowledgements as the bbolt back end's Store.Ack does: a pending entry
// moves to the retained ones, its entry compressed; a retained entry takes a new
// acknowledgement unless it is a duplicate. Seqs in neither are ignored. Cancelling
// ctx stops it part way: an entry whose acknowledgement was not recorded stays pending
// and is published again, which the event stream drops as a duplicate.
//
// When limit is positive it then purges retained entries, lowest Seq first, until
// their size (the sum of their state.RetainedSize) is at most limit, as the bbolt
// back end does, and reports how many in Retention.Capped. The size is tracked in
// memory, read from the bucket by the first call that needs it.
func (s *Store) Ack(ctx context.Context, acks []state.Ack, limit int64) (state.Retention, error) {
	ctx, cancel := s.bound(ctx, 1+len(acks)/32)
	defer cancel()
	if err := s.sizeIndex(ctx); err != nil {
		return state.Retention{}, fmt.Errorf("state nats_kv: retained entries' size: %w", err)
	}
	for _, a := range acks {
		if err := s.ackOne(ctx, a); err != nil {
			return state.Retention{}, err
		}
	}
	capped, err := s.capRetained(ctx, limit)
	return state.Retention{Bytes: s.totalSize(), Capped: capped}, err
}

// ackOne records acknowledgement a (see Ack).
func (s *Store) ackOne(ctx context.Context, a state.Ack) error {
	var v []byte
	m, err := s.outbox.GetMsg(ctx, a.Seq)
	pending := err == nil
	switch {
	case pending:
		v, err = state.EncodeAcked(a, m.Data)
	case !notFound(err):
		return fmt.Errorf("state nats_kv: acknowledge entry %d: %w", a.Seq, err)
	default:
		var e jetstream.KeyValueEntry
		e, err = s.acked.Get(ctx, ackedKey(a.Seq))
		if errors.Is(err, jetstream.ErrKeyNotFound) || (err == nil && a.Duplicate) {
			return nil
		}
		if err == nil {
			v, err = state.RestampAcked(a, e.Value())
		}
	}
	if err != nil {
		return fmt.Errorf("state nats_kv: acknowledge entry %d: %w", a.Seq, err)
	}
	if _, err := s.acked.Put(ctx, ackedKey(a.Seq), v); err != nil {
		return fmt.Errorf("state nats_kv: acknowledge entry %d: %w", a.Seq, err)
	}
	s.setSize(a.Seq, state.RetainedSize(v))
	if pending {
		if err := s.outbox.DeleteMsg(ctx, a.Seq); err != nil && !notFound(err) {
			return fmt.Errorf("state nats_kv: acknowledge entry %d: %w", a.Seq, err)
		}
	}
	return nil
}

// capRetained purges retained entries, lowest Seq first, until their size is at most
// limit (nothing when limit is not positive), and returns how many it purged.
func (s *Store) capRetained(ctx context.Context, limit int64) (int, error) {
	if limit <= 0 {
		return 0, nil
	}
	s.sizesMu.Lock()
	total := s.sizesTotal
	var old []uint64
	if total > limit {
		seqs := slices.Sorted(maps.Keys(s.sizes))
		for _, seq := range seqs {
			if total <= limit {
				break
			}
			old = append(old, seq)
			total -= s.sizes[seq]
		}
	}
	s.sizesMu.Unlock()
	for i, seq := range old {
		if err := s.acked.Purge(ctx, ackedKey(seq)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return i, fmt.Errorf("state nats_kv: purge retained entry %d over the size limit: %w", seq, err)
		}
		s.setSize(seq, 0)
	}
	return len(old), nil
}

// sizeIndex reads the retained entries' sizes from the bucket unless known.
func (s *Store) sizeIndex(ctx context.Context) error {
	s.sizesMu.Lock()
	known := s.sizes != nil
	s.sizesMu.Unlock()
	if known {
		return nil
	}
	seqs, vals, err := s.retained(ctx)
	if err != nil {
		return err
	}
	s.indexSizes(seqs, vals)
	return nil
}

// indexSizes replaces the size index with the sizes of these retained entries.
func (s *Store) indexSizes(seqs []uint64, vals [][]byte) {
	sizes := make(map[uint64]int64, len(seqs))
	var total int64
	for i, seq := range seqs {
		sizes[seq] = state.RetainedSize(vals[i])
		total += sizes[seq]
	}
	s.sizesMu.Lock()
	s.sizes, s.sizesTotal = sizes, total
	s.sizesMu.Unlock()
}

// setSize records the size of retained entry seq; 0 removes it. It does nothing
// before the index was read.
func (s *Store) setSize(seq uint64, n int64) {
	s.sizesMu.Lock()
	defer s.sizesMu.Unlock()
	if s.sizes == nil {
		return
	}
	s.sizesTotal += n - s.sizes[seq]
	if n == 0 {
		delete(s.sizes, seq)
	} else {
		s.sizes[seq] = n
	}
}

// totalSize returns the size of the retained entries in the index.
func (s *Store) totalSize() int64 {
	s.sizesMu.Lock()
	defer s.sizesMu.Unlock()
	return s.sizesTotal
}

// RetainedBytes returns the size of the retained entries (the sum of their
// state.RetainedSize), reading them from the bucket the first time.
func (s *Store) RetainedBytes(ctx context.Context) (int64, error) {
	ctx, cancel := s.bound(ctx, 10)
	defer cancel()
	if err := s.sizeIndex(ctx); err != nil {
		return 0, fmt.Errorf("state nats_kv: retained entries' size: %w", err)
	}
	return s.totalSize(), nil
}

// retained returns every retained entry's key and value, in Seq order.
func (s *Store) retained(ctx context.Context) ([]uint64, [][]byte, error) {
	w, err := s.acked.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, nil, err
	}
	defer w.Stop()
	type kv struct {
		seq uint64
		v   []byte
	}
	var all []kv
	// The watch ends its initial values with a nil entry; a watch whose consumer was
	// lost (a NATS node went away) may never send it, so the context bounds the wait.
read:
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, nil, errors.New("watch of retained entries closed before the initial values were read")
			}
			if e == nil {
				break read
			}
			seq, err := strconv.ParseUint(e.Key(), 10, 64)
			if err != nil {
				return nil, nil, fmt.Errorf("retained key %q is not a sequence", e.Key())
			}
			all = append(all, kv{seq, e.Value()})
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
	slices.SortFunc(all, func(a, b kv) int { return cmp.Compare(a.seq, b.seq) })
	seqs, vals := make([]uint64, len(all)), make([][]byte, len(all))
	for i, e := range all {
		seqs[i], vals[i] = e.seq, e.v
	}
	return seqs, vals, nil
}

// Retained returns up to max retained entries with Seq greater than after, in
// increasing Seq order. It reads every retained entry. max must be positive.
// Cancelling ctx makes it fail.
func (s *Store) Retained(ctx context.Context, after uint64, max int) ([]state.AckedEntry, error) {
	if max <= 0 {
		return nil, fmt.Errorf("state nats_kv: retained outbox entries: max %d is not positive", max)
	}
	ctx, cancel := s.bound(ctx, 10)
	defer cancel()
	seqs, vals, err := s.retained(ctx)
	if err != nil {
		return nil, fmt.Errorf("state nats_kv: retained outbox entries: %w", err)
	}
	s.indexSizes(seqs, vals)
	var out []state.AckedEntry
	for i, seq := range seqs {
		if seq <= after {
			continue
		}
		if len(out) == max {
			break
		}
		e, err := state.DecodeAcked(seq, vals[i])
		if err != nil {
			return nil, fmt.Errorf("state nats_kv: %w", err)
		}
		out = append(out, e)
	}
	return out, nil
}

// Prune deletes the retained entries acknowledged before cutoff and returns how many
// it deleted and the earliest acknowledgement time of those left (zero when none).
// Cancelling ctx stops it part way: what was pruned before stays pruned.
func (s *Store) Prune(ctx context.Context, cutoff time.Time) (pruned int, next time.Time, err error) {
	ctx, cancel := s.bound(ctx, 10)
	defer cancel()
	seqs, vals, err := s.retained(ctx)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("state nats_kv: prune retained outbox entries: %w", err)
	}
	s.indexSizes(seqs, vals)
	for i, seq := range seqs {
		e, err := state.AckedHeader(vals[i])
		if err != nil {
			return pruned, time.Time{}, fmt.Errorf("state nats_kv: retained entry %d: %w", seq, err)
		}
		if !e.Acked.Before(cutoff) {
			if next.IsZero() || e.Acked.Before(next) {
				next = e.Acked
			}
			continue
		}
		if err := s.acked.Purge(ctx, ackedKey(seq)); err != nil {
			return pruned, time.Time{}, fmt.Errorf("state nats_kv: prune retained entry %d: %w", seq, err)
		}
		s.setSize(seq, 0)
		pruned++
	}
	if pruned > 0 {
		// Drop the purge markers older than the library's default threshold.
		if err := s.acked.PurgeDeletes(ctx); err != nil {
			return pruned, next, fmt.Errorf("state nats_kv: prune retained entries' markers: %w", err)
		}
	}
	return pruned, next, nil
}
