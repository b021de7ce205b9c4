package bbolt

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/payments-watcher/watcher/state"
)

// Pending returns up to max pending outbox entries (not acknowledged yet) with Seq
// greater than after, in increasing Seq order: the order in which they were committed,
// across restarts too. Pass 0 to start from the oldest entry and the last Seq returned
// to page on. max must be positive.
func (s *Store) Pending(_ context.Context, after uint64, max int) ([]state.OutboxEntry, error) {
	if max <= 0 {
		return nil, fmt.Errorf("state file %s: pending outbox entries: max %d is not positive", s.path, max)
	}
	if after == math.MaxUint64 {
		return nil, nil
	}
	var out []state.OutboxEntry
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

func decodeOutbox(k, v []byte) (state.OutboxEntry, error) {
	if len(k) != 8 {
		return state.OutboxEntry{}, fmt.Errorf("outbox key %x is not 8 bytes", k)
	}
	seq := binary.BigEndian.Uint64(k)
	e, err := state.DecodeEntry(seq, v)
	if err != nil {
		return state.OutboxEntry{}, fmt.Errorf("outbox entry %d: %w", seq, err)
	}
	return e, nil
}

// Delete removes the entries with the given Seqs, pending or retained, in one
// transaction; Seqs in neither are ignored.
func (s *Store) Delete(_ context.Context, seqs []uint64) error {
	if len(seqs) == 0 {
		return nil
	}
	err := s.update(func(tx *bolt.Tx) error {
		outbox, acked := tx.Bucket(outboxBucket), tx.Bucket(ackedBucket)
		for _, seq := range seqs {
			if err := outbox.Delete(seqKey(seq)); err != nil {
				return fmt.Errorf("entry %d: %w", seq, err)
			}
			if acked == nil {
				continue
			}
			if err := acked.Delete(seqKey(seq)); err != nil {
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

// OutboxStats returns the number of pending outbox entries (retained acknowledged
// entries are not counted) and the Enqueued time of the oldest; the zero time when
// none is pending.
func (s *Store) OutboxStats(_ context.Context) (n int, oldest time.Time, err error) {
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

// Acknowledged entries may be retained after their PubAck (the publisher's
// nats.retain_acked) so that they can be published again should the NATS server lose
// them. They live in a bucket of their own, so that Pending, OutboxStats and the outbox
// limit only ever see what still waits for NATS:
//
//	acked/<8-byte big-endian seq>  version  flags(duplicate=1)  acked time  stream seq  encoded OutboxEntry
//
// The bucket is created by the first Ack; a file without it retains nothing.
var ackedBucket = []byte("acked")

// Ack records acknowledgements, in one transaction. A pending entry moves, with its
// message and Seq, to the retained entries (it is no longer Pending). A retained entry
// acknowledged again after it was re-published takes the new acknowledgement, unless
// that one is a duplicate: the stream then still holds the copy the first one stored.
// Seqs in neither are ignored.
func (s *Store) Ack(_ context.Context, acks []state.Ack) error {
	if len(acks) == 0 {
		return nil
	}
	err := s.update(func(tx *bolt.Tx) error {
		outbox := tx.Bucket(outboxBucket)
		acked, err := tx.CreateBucketIfNotExists(ackedBucket)
		if err != nil {
			return err
		}
		acked.FillPercent = 0.9 // mostly appended in key order
		for _, a := range acks {
			key := seqKey(a.Seq)
			var entry []byte
			if v := outbox.Get(key); v != nil {
				entry = v
			} else if v := acked.Get(key); v != nil && !a.Duplicate {
				if _, entry, err = state.SplitAcked(v); err != nil {
					return fmt.Errorf("entry %d: %w", a.Seq, err)
				}
			} else {
				continue
			}
			v, err := state.EncodeAcked(a, entry)
			if err != nil {
				return fmt.Errorf("entry %d: %w", a.Seq, err)
			}
			if err := acked.Put(key, v); err != nil {
				return fmt.Errorf("entry %d: %w", a.Seq, err)
			}
			if err := outbox.Delete(key); err != nil {
				return fmt.Errorf("entry %d: %w", a.Seq, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("state file %s: record acknowledgements: %w", s.path, err)
	}
	return nil
}

func decodeAcked(k, v []byte) (state.AckedEntry, error) {
	if len(k) != 8 {
		return state.AckedEntry{}, fmt.Errorf("retained key %x is not 8 bytes", k)
	}
	seq := binary.BigEndian.Uint64(k)
	e, entry, err := state.SplitAcked(v)
	if err == nil {
		e.OutboxEntry, err = state.DecodeEntry(seq, entry)
	}
	if err != nil {
		return state.AckedEntry{}, fmt.Errorf("retained entry %d: %w", seq, err)
	}
	return e, nil
}

// Retained returns up to max retained acknowledged entries with Seq greater than
// after, in increasing Seq order; page on like Pending. max must be positive.
func (s *Store) Retained(_ context.Context, after uint64, max int) ([]state.AckedEntry, error) {
	if max <= 0 {
		return nil, fmt.Errorf("state file %s: retained outbox entries: max %d is not positive", s.path, max)
	}
	if after == math.MaxUint64 {
		return nil, nil
	}
	var out []state.AckedEntry
	err := s.db.View(func(tx *bolt.Tx) error {
		acked := tx.Bucket(ackedBucket)
		if acked == nil {
			return nil
		}
		c := acked.Cursor()
		for k, v := c.Seek(seqKey(after + 1)); k != nil && len(out) < max; k, v = c.Next() {
			e, err := decodeAcked(k, v)
			if err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("state file %s: retained outbox entries: %w", s.path, err)
	}
	return out, nil
}

// Prune deletes the retained entries acknowledged before cutoff, in one transaction,
// and returns how many it deleted and the earliest acknowledgement time of those left
// (the zero time when none is left). It reads every retained entry's header.
func (s *Store) Prune(_ context.Context, cutoff time.Time) (pruned int, next time.Time, err error) {
	err = s.update(func(tx *bolt.Tx) error {
		pruned, next = 0, time.Time{} // run again after a failed shared transaction
		acked := tx.Bucket(ackedBucket)
		if acked == nil {
			return nil
		}
		var old [][]byte
		err := acked.ForEach(func(k, v []byte) error {
			e, _, err := state.SplitAcked(v)
			if err != nil {
				return fmt.Errorf("retained entry %x: %w", k, err)
			}
			switch {
			case e.Acked.Before(cutoff):
				old = append(old, slices.Clone(k))
			case next.IsZero() || e.Acked.Before(next):
				next = e.Acked
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range old {
			if err := acked.Delete(k); err != nil {
				return err
			}
		}
		pruned = len(old)
		return nil
	})
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("state file %s: prune retained outbox entries: %w", s.path, err)
	}
	return pruned, next, nil
}

// RetainedStats returns the number of retained acknowledged entries and the earliest
// acknowledgement time among them; the zero time when none is retained. It reads every
// retained entry's header.
func (s *Store) RetainedStats() (n int, oldest time.Time, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		acked := tx.Bucket(ackedBucket)
		if acked == nil {
			return nil
		}
		return acked.ForEach(func(k, v []byte) error {
			e, _, err := state.SplitAcked(v)
			if err != nil {
				return fmt.Errorf("retained entry %x: %w", k, err)
			}
			n++
			if oldest.IsZero() || e.Acked.Before(oldest) {
				oldest = e.Acked
			}
			return nil
		})
	})
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("state file %s: retained outbox stats: %w", s.path, err)
	}
	return n, oldest, nil
}
