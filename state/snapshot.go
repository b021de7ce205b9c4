package state

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/payments-watcher/watcher/diff"
)

// Commit applies b to source in one write transaction: the outbox entries, the
// snapshot records with their open index entries and the metadata are all stored, or
// (when Commit returns an error) none of them is. Messages are enqueued at b.Now; b.Now
// must be set when b has records or messages.
//
// A record needs an ID and a Sequence of at least 1, and times between the years 1678
// and 2262. After a commit that appended messages, Changed is signalled.
func (s *Store) Commit(source string, b Batch) error {
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

func (s *Store) commit(source string, b *Batch) error {
	if source == "" {
		return errors.New("empty source name")
	}
	if b.Now.IsZero() && len(b.Records)+len(b.Messages) > 0 {
		return errors.New("batch has records or messages but no Now")
	}
	// The order of the writes does not matter: Update rolls everything back on error.
	return s.db.Update(func(tx *bolt.Tx) error {
		outbox := tx.Bucket(outboxBucket)
		outbox.FillPercent = 0.9 // keys only ever grow: fill pages before splitting
		for i := range b.Messages {
			m := &b.Messages[i]
			v, err := encodeEntry(b.Now, m)
			if err != nil {
				return fmt.Errorf("message %q: %w", m.ID, err)
			}
			seq, err := outbox.NextSequence()
			if err != nil {
				return fmt.Errorf("outbox: %w", err)
			}
			if err := outbox.Put(seqKey(seq), v); err != nil {
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
			if err := putRecord(items, open, r, b); err != nil {
				return fmt.Errorf("record %q: %w", r.ID, err)
			}
		}

		if b.Meta != nil {
			v, err := encodeMeta(b.Meta)
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

func putRecord(items, open *bolt.Bucket, r *diff.Record, b *Batch) error {
	if r.ID == "" {
		return errors.New("empty id")
	}
	if len(r.ID) > bolt.MaxKeySize {
		return fmt.Errorf("id of %d bytes is longer than %d", len(r.ID), bolt.MaxKeySize)
	}
	if r.Sequence == 0 {
		return errors.New("sequence 0")
	}
	v, err := encodeRecord(nil, r)
	if err != nil {
		return err
	}
	key := []byte(r.ID)
	if err := items.Put(key, v); err != nil {
		return err
	}
	if !r.Open(b.Now) || r.Stalled {
		return open.Delete(key)
	}
	v, err = encodeOpen(r.CreatedAt, r.OpenState())
	if err != nil {
		return err
	}
	return open.Put(key, v)
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
func (s *Store) Load(source string, ids []string) (map[string]*diff.Record, error) {
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
			r, err := decodeRecord(id, v)
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
func (s *Store) ForEach(source string, fn func(diff.Record) error) error {
	var fnErr error
	err := s.db.View(func(tx *bolt.Tx) error {
		items := sourceBucket(tx, source, itemsBucket)
		if items == nil {
			return nil
		}
		c := items.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			r, err := decodeRecord(string(k), v)
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
func (s *Store) Meta(source string) (Meta, error) {
	var m Meta
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
		m, err = decodeMeta(v)
		return err
	})
	if err != nil {
		return Meta{}, fmt.Errorf("state file %s: meta of source %q: %w", s.path, source, err)
	}
	return m, nil
}

// OpenItems returns the open index of source: the items that are open and not
// stalled as of their last commit, oldest CreatedAt first, then by ID.
func (s *Store) OpenItems(source string) ([]OpenItem, error) {
	var out []OpenItem
	err := s.db.View(func(tx *bolt.Tx) error {
		open := sourceBucket(tx, source, openBucket)
		if open == nil {
			return nil
		}
		return open.ForEach(func(k, v []byte) error {
			t, st, err := decodeOpen(v)
			if err != nil {
				return fmt.Errorf("open item %q: %w", k, err)
			}
			out = append(out, OpenItem{ID: string(k), CreatedAt: t, State: st})
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("state file %s: open items of source %q: %w", s.path, source, err)
	}
	slices.SortFunc(out, func(a, b OpenItem) int {
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
