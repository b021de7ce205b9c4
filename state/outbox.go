package state

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Pending returns up to max outbox entries with Seq greater than after, in increasing
// Seq order: the order in which they were committed, across restarts too. Pass 0 to
// start from the oldest entry and the last Seq returned to page on. max must be
// positive.
func (s *Store) Pending(after uint64, max int) ([]OutboxEntry, error) {
	if max <= 0 {
		return nil, fmt.Errorf("state file %s: pending outbox entries: max %d is not positive", s.path, max)
	}
	if after == math.MaxUint64 {
		return nil, nil
	}
	var out []OutboxEntry
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(outboxBucket).Cursor()
		for k, v := c.Seek(seqKey(after + 1)); k != nil && len(out) < max; k, v = c.Next() {
			e, err := decodeOutbox(k, v)
			if err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("state file %s: pending outbox entries: %w", s.path, err)
	}
	return out, nil
}

func decodeOutbox(k, v []byte) (OutboxEntry, error) {
	if len(k) != 8 {
		return OutboxEntry{}, fmt.Errorf("outbox key %x is not 8 bytes", k)
	}
	seq := binary.BigEndian.Uint64(k)
	e, err := decodeEntry(seq, v)
	if err != nil {
		return OutboxEntry{}, fmt.Errorf("outbox entry %d: %w", seq, err)
	}
	return e, nil
}

// Delete removes the outbox entries with the given Seqs, in one transaction; Seqs not
// in the outbox are ignored.
func (s *Store) Delete(seqs []uint64) error {
	if len(seqs) == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		outbox := tx.Bucket(outboxBucket)
		for _, seq := range seqs {
			if err := outbox.Delete(seqKey(seq)); err != nil {
				return fmt.Errorf("entry %d: %w", seq, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("state file %s: delete outbox entries: %w", s.path, err)
	}
	return nil
}

// OutboxStats returns the number of outbox entries and the Enqueued time of the
// oldest; the zero time when the outbox is empty.
func (s *Store) OutboxStats() (n int, oldest time.Time, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		outbox := tx.Bucket(outboxBucket)
		k, v := outbox.Cursor().First()
		if k == nil {
			return nil
		}
		e, err := decodeOutbox(k, v)
		if err != nil {
			return err
		}
		n, oldest = outbox.Stats().KeyN, e.Enqueued
		return nil
	})
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("state file %s: outbox stats: %w", s.path, err)
	}
	return n, oldest, nil
}

// Changed receives a value after a Commit that appended messages. Its buffer holds one
// value and Commit never waits for a reader, so a publisher that drains the outbox
// after every receive misses nothing.
func (s *Store) Changed() <-chan struct{} { return s.changed }
