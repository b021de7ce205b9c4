package bbolt

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/state"
)

// Commit applies b to source in one write transaction: the outbox entries, the
// snapshot records with their open index entries, the metadata and the read times of
// b.Reads (set after the records, see putReads) are all stored, or (when Commit
// returns an error) none of them is. Commits made at the same time from
// several goroutines may share a transaction (see committer); each is still stored
// whole or not at all. Messages are enqueued at b.Now; b.Now
// must be set when b has records or messages.
//
// A record needs an ID and a Sequence of at least 1, and times between the years 1678
// and 2262. After a commit that appended messages, Changed is signalled.
func (s *Store) Commit(_ context.Context, source string, b state.Batch) error {
	if err := s.commit(source, &b); err != nil {
		return fmt.Errorf("state file %s: commit to source %q: %w", s.path, source, err)
	}
	if len(b.Messages) > 0 {
		select {
		case s.changed <- struct{}{}:
		default:
		}
	}
	return nil
}

func (s *Store) commit(source string, b *state.Batch) error {
	if source == "" {
		return errors.New("empty source name")
	}
	if b.Now.IsZero() && len(b.Records)+len(b.Messages) > 0 {
		return errors.New("batch has records or messages but no Now")
	}
	// The order of the writes does not matter: Update rolls everything back on error.
	return s.update(func(tx *bolt.Tx) error {
		// Keys and values must stay valid until the transaction ends: they are
		// encoded one after the other into one buffer, which a reallocation leaves
		// valid (earlier ones keep the old array), rather than allocated one by one.
		size := 0
		for i := range b.Messages {
			m := &b.Messages[i]
			size += 8 + 1 + 2*binary.MaxVarintLen64 + len(m.ID) + len(m.Subject) + len(m.Body)
		}
		buf := make([]byte, 0, size+len(b.Records)*recordEstimate)

		outbox := tx.Bucket(outboxBucket)
		outbox.FillPercent = 0.9 // keys only ever grow: fill pages before splitting
		for i := range b.Messages {
			m := &b.Messages[i]
			seq, err := outbox.NextSequence()
			if err != nil {
				return fmt.Errorf("outbox: %w", err)
			}
			start := len(buf)
			buf = binary.BigEndian.AppendUint64(buf, seq)
			key := buf[start:len(buf):len(buf)]
			start = len(buf)
			if buf, err = state.AppendEntry(buf, b.Now, m); err != nil {
				return fmt.Errorf("message %q: %w", m.ID, err)
			}
			if err := outbox.Put(key, buf[start:len(buf):len(buf)]); err != nil {
				return fmt.Errorf("message %q: %w", m.ID, err)
			}
		}

		src, err := tx.Bucket(sourcesBucket).CreateBucketIfNotExists([]byte(source))
		if err != nil {
			return err
		}
		items, err := src.CreateBucketIfNotExists(itemsBucket)
		if err != nil {
			return err
		}
		open, err := src.CreateBucketIfNotExists(openBucket)
		if err != nil {
			return err
		}
		for i := range b.Records {
			r := &b.Records[i]
			if buf, err = putRecord(items, open, r, b.Now, buf); err != nil {
				return fmt.Errorf("record %q: %w", r.ID, err)
			}
		}

		if err := putReads(open, b.Reads); err != nil {
			return err
		}

		if b.Meta != nil {
			v, err := state.EncodeMeta(b.Meta)
			if err != nil {
				return fmt.Errorf("meta: %w", err)
			}
			if err := src.Put(metaKey, v); err != nil {
				return fmt.Errorf("meta: %w", err)
			}
		}
		return nil
	})
}

// Forget removes the records of the given ids of source and their open index
// entries, in one write transaction: all of them are removed, or (when Forget returns
// an error) none. Ids not stored, and a source never committed to, are ignored. A
// commit that stores one of the ids again afterwards stores it anew.
func (s *Store) Forget(_ context.Context, source string, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	err := s.update(func(tx *bolt.Tx) error {
		src := tx.Bucket(sourcesBucket).Bucket([]byte(source))
		if src == nil {
			return nil
		}
		items, open := src.Bucket(itemsBucket), src.Bucket(openBucket)
		for _, id := range ids {
			if len(id) == 0 || len(id) > bolt.MaxKeySize {
				continue // never a key
			}
			key := []byte(id)
			if items != nil {
				if err := items.Delete(key); err != nil {
					return fmt.Errorf("record %q: %w", id, err)
				}
			}
			if open != nil {
				if err := open.Delete(key); err != nil {
					return fmt.Errorf("open item %q: %w", id, err)
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("state file %s: forget %d records of source %q: %w", s.path, len(ids), source, err)
	}
	return nil
}

// recordEstimate is about the bytes a record takes in a commit's buffer: its key, its
// value and its open index value.
const recordEstimate = 128

// putRecord stores r and its open index entry as of now (read at now), with their keys
// and values appended to buf (which it returns): they must stay unchanged until the
// transaction ends. An open index entry that already holds the value is not written
// again.
func putRecord(items, open *bolt.Bucket, r *diff.Record, now time.Time, buf []byte) ([]byte, error) {
	if err := state.CheckRecord(r); err != nil {
		return buf, err
	}
	if len(r.ID) > bolt.MaxKeySize {
		return buf, fmt.Errorf("id of %d bytes is longer than %d", len(r.ID), bolt.MaxKeySize)
	}
	start := len(buf)
	buf = append(buf, r.ID...)
	key := buf[start:len(buf):len(buf)]
	start = len(buf)
	buf, err := state.AppendRecord(buf, r)
	if err != nil {
		return buf, err
	}
	if err := items.Put(key, buf[start:len(buf):len(buf)]); err != nil {
		return buf, err
	}
	if !state.InOpenIndex(r, now) {
		return buf, open.Delete(key)
	}
	start = len(buf)
	if buf, err = state.AppendOpen(buf, r, now); err != nil {
		return buf, err
	}
	v := buf[start:len(buf):len(buf)]
	if bytes.Equal(open.Get(key), v) {
		return buf, nil
	}
	return buf, open.Put(key, v)
}

// putReads sets the read times of a batch's Reads in the open index (keyed by id):
// an entry that exists takes the later of its read time and the given one; an id
// without an entry (the item closed, stalled or was never open) is ignored, so a read
// time never brings an entry back. It runs after the batch's records are put, so an
// entry that a record of the same batch removed stays removed.
func putReads(open *bolt.Bucket, reads map[string]time.Time) error {
	for id, at := range reads {
		if len(id) == 0 || len(id) > bolt.MaxKeySize {
			continue // never a key of the index
		}
		key := []byte(id)
		v := open.Get(key)
		if v == nil {
			continue
		}
		nv, changed, err := state.WithLastRead(v, at)
		if err != nil {
			return fmt.Errorf("read time of open item %q: %w", id, err)
		}
		if changed {
			if err := open.Put(key, nv); err != nil {
				return fmt.Errorf("read time of open item %q: %w", id, err)
			}
		}
	}
	return nil
}

// seqKey is the outbox key of seq: big-endian, so that keys sort in append order.
func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq)
}

// sourceBucket returns the named bucket of source (items or open), nil when the source
// has never been committed to.
func sourceBucket(tx *bolt.Tx, source string, name []byte) *bolt.Bucket {
	src := tx.Bucket(sourcesBucket).Bucket([]byte(source))
	if src == nil {
		return nil
	}
	return src.Bucket(name)
}

// Load returns the stored records of the given ids of source. Ids not stored are
// absent from the map. The records are the caller's.
func (s *Store) Load(_ context.Context, source string, ids []string) (map[string]*diff.Record, error) {
	out := make(map[string]*diff.Record, len(ids))
	err := s.db.View(func(tx *bolt.Tx) error {
		items := sourceBucket(tx, source, itemsBucket)
		if items == nil {
			return nil
		}
		for _, id := range ids {
			v := items.Get([]byte(id))
			if v == nil {
				continue
			}
			r, err := state.DecodeRecord(id, v)
			if err != nil {
				return fmt.Errorf("record %q: %w", id, err)
			}
			out[id] = &r
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("state file %s: load from source %q: %w", s.path, source, err)
	}
	return out, nil
}

// ForEach calls fn with every record of source, in id order, inside one read
// transaction: fn must not call Commit or Delete. An error from fn stops the walk and
// is returned as is.
func (s *Store) ForEach(_ context.Context, source string, fn func(diff.Record) error) error {
	var fnErr error
	err := s.db.View(func(tx *bolt.Tx) error {
		items := sourceBucket(tx, source, itemsBucket)
		if items == nil {
			return nil
		}
		c := items.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			r, err := state.DecodeRecord(string(k), v)
			if err != nil {
				return fmt.Errorf("record %q: %w", k, err)
			}
			if fnErr = fn(r); fnErr != nil {
				return fnErr
			}
		}
		return nil
	})
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return fmt.Errorf("state file %s: read source %q: %w", s.path, source, err)
	}
	return nil
}

// Meta returns the metadata of source; the zero Meta for a source without any.
func (s *Store) Meta(_ context.Context, source string) (state.Meta, error) {
	var m state.Meta
	err := s.db.View(func(tx *bolt.Tx) error {
		src := tx.Bucket(sourcesBucket).Bucket([]byte(source))
		if src == nil {
			return nil
		}
		v := src.Get(metaKey)
		if v == nil {
			return nil
		}
		var err error
		m, err = state.DecodeMeta(v)
		return err
	})
	if err != nil {
		return state.Meta{}, fmt.Errorf("state file %s: meta of source %q: %w", s.path, source, err)
	}
	return m, nil
}

// OpenItems returns the open index of source: the items that are open and not
// stalled as of their last commit, oldest CreatedAt first, then by ID.
func (s *Store) OpenItems(_ context.Context, source string) ([]state.OpenItem, error) {
	var out []state.OpenItem
	err := s.db.View(func(tx *bolt.Tx) error {
		open := sourceBucket(tx, source, openBucket)
		if open == nil {
			return nil
		}
		return open.ForEach(func(k, v []byte) error {
			it, err := state.DecodeOpen(string(k), v)
			if err != nil {
				return fmt.Errorf("open item %q: %w", k, err)
			}
			out = append(out, it)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("state file %s: open items of source %q: %w", s.path, source, err)
	}
	slices.SortFunc(out, func(a, b state.OpenItem) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// Counts returns how many items source tracks and how many of them are in the open
// index.
func (s *Store) Counts(source string) (items, open int, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		if b := sourceBucket(tx, source, itemsBucket); b != nil {
			items = b.Stats().KeyN
		}
		if b := sourceBucket(tx, source, openBucket); b != nil {
			open = b.Stats().KeyN
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("state file %s: count source %q: %w", s.path, source, err)
	}
	return items, open, nil
}

// Sources returns the names of the sources committed to, sorted.
func (s *Store) Sources() ([]string, error) {
	var out []string
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(sourcesBucket).ForEachBucket(func(k []byte) error {
			out = append(out, string(k))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("state file %s: list sources: %w", s.path, err)
	}
	return out, nil
}

// committer lets concurrent writers share write transactions (group commit): while
// one transaction runs, the writers that arrive queue up, and the first of them then
// runs all their functions in the next transaction, so that the pollers of several
// sources and the publisher's deletes and acknowledgements pay for one pair of
// fsyncs instead of one each. A writer that finds no transaction running starts one
// at once: grouping never delays a write.
//
// Each function still commits all or nothing: when a shared transaction fails, every
// function of it is run again in a transaction of its own, so that one writer's error
// (a record that cannot be encoded) never fails another's write. Functions must
// therefore change nothing outside the transaction.
type committer struct {
	mu    sync.Mutex
	busy  bool // a writer is running a transaction
	queue []*groupWrite
}

// groupWrite is one writer's function and, once done, its outcome.
type groupWrite struct {
	fn  func(*bolt.Tx) error
	err error
	// wake receives true when the writer is to run the next transaction itself, false
	// when its function was committed (or failed: err).
	wake chan bool
}

// update runs fn in a write transaction, possibly shared with other writers' (see
// committer), and returns fn's error or the transaction's.
func (s *Store) update(fn func(*bolt.Tx) error) error {
	g := &s.group
	w := &groupWrite{fn: fn, wake: make(chan bool, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, w)
	lead := !g.busy
	g.busy = true
	g.mu.Unlock()
	if !lead && !<-w.wake {
		return w.err
	}
	// This writer runs the transaction of everything queued, itself included.
	g.mu.Lock()
	batch := g.queue
	g.queue = nil
	g.mu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			// A function panicked: the others fail rather than wait forever, and the
			// next writer still gets its turn.
			for _, o := range batch {
				o.err = fmt.Errorf("write transaction abandoned: a function of it panicked: %v", r)
			}
			s.handOn(batch, w)
			panic(r)
		}
	}()
	s.runGroup(batch)
	s.handOn(batch, w)
	return w.err
}

// handOn wakes the writer next in the queue to run the next transaction, or marks the
// store idle, then tells the writers of batch but w that their functions are done.
func (s *Store) handOn(batch []*groupWrite, w *groupWrite) {
	g := &s.group
	g.mu.Lock()
	var next *groupWrite
	if len(g.queue) > 0 {
		next = g.queue[0] // hand on: it runs the next transaction
	} else {
		g.busy = false
	}
	g.mu.Unlock()
	if next != nil {
		next.wake <- true
	}
	for _, o := range batch {
		if o != w {
			o.wake <- false
		}
	}
}

// runGroup commits the functions of batch in one transaction, or each in its own when
// that fails, and sets their errors.
func (s *Store) runGroup(batch []*groupWrite) {
	if len(batch) == 1 {
		batch[0].err = s.db.Update(batch[0].fn)
		return
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, w := range batch {
			if err := w.fn(tx); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		return
	}
	for _, w := range batch {
		w.err = s.db.Update(w.fn)
	}
}
