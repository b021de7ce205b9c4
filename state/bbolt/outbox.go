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
		var freed int64
		for _, seq := range seqs {
			if err := outbox.Delete(seqKey(seq)); err != nil {
				return fmt.Errorf("entry %d: %w", seq, err)
			}
			if acked == nil {
				continue
			}
			if v := acked.Get(seqKey(seq)); v != nil {
				freed += state.RetainedSize(v)
			}
			if err := acked.Delete(seqKey(seq)); err != nil {
				return fmt.Errorf("entry %d: %w", seq, err)
			}
		}
		if freed == 0 {
			return nil
		}
		return addRetainedBytes(tx, -freed)
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
//	acked/<8-byte big-endian seq>  retained value (state.EncodeAcked: the acknowledgement, then the entry compressed)
//	meta/acked_bytes               8-byte big-endian sum of the retained values' state.RetainedSize
//
// The bucket is created by the first Ack; a file without it retains nothing. The sum
// is kept up to date by every transaction that changes the bucket, so that a limit on
// it costs no scan; a file written before it existed has it computed once, by the
// first transaction that needs it.
var (
	ackedBucket      = []byte("acked")
	retainedBytesKey = []byte("acked_bytes")
)

// Ack records acknowledgements, in one transaction. A pending entry moves, with its
// message and Seq, to the retained entries (it is no longer Pending), its entry
// compressed. A retained entry acknowledged again after it was re-published takes the
// new acknowledgement, unless that one is a duplicate: the stream then still holds
// the copy the first one stored. Seqs in neither are ignored.
//
// When limit is positive, the same transaction then deletes retained entries, lowest
// Seq (oldest) first, until the retained entries' size (the sum of their
// state.RetainedSize) is at most limit, and reports how many in Retention.Capped. The
// returned Retention.Bytes is the size left.
func (s *Store) Ack(_ context.Context, acks []state.Ack, limit int64) (state.Retention, error) {
	var r state.Retention
	if len(acks) == 0 {
		return s.retention()
	}
	err := s.update(func(tx *bolt.Tx) error {
		r = state.Retention{} // run again after a failed shared transaction
		outbox := tx.Bucket(outboxBucket)
		acked, err := tx.CreateBucketIfNotExists(ackedBucket)
		if err != nil {
			return err
		}
		acked.FillPercent = 0.9 // mostly appended in key order
		if r.Bytes, err = retainedBytes(tx); err != nil {
			return err
		}
		for _, a := range acks {
			if err := ackOne(outbox, acked, a, &r.Bytes); err != nil {
				return fmt.Errorf("entry %d: %w", a.Seq, err)
			}
		}
		if r.Capped, err = capRetained(acked, limit, &r.Bytes); err != nil {
			return err
		}
		return setRetainedBytes(tx, r.Bytes)
	})
	if err != nil {
		return state.Retention{}, fmt.Errorf("state file %s: record acknowledgements: %w", s.path, err)
	}
	return r, nil
}

// ackOne records acknowledgement a (see Ack) and keeps *size, the retained entries'
// size, up to date.
func ackOne(outbox, acked *bolt.Bucket, a state.Ack, size *int64) error {
	key := seqKey(a.Seq)
	var (
		v   []byte
		err error
	)
	if entry := outbox.Get(key); entry != nil {
		v, err = state.EncodeAcked(a, entry)
	} else if old := acked.Get(key); old != nil && !a.Duplicate {
		*size -= state.RetainedSize(old)
		v, err = state.RestampAcked(a, old)
	} else {
		return nil
	}
	if err != nil {
		return err
	}
	if err := acked.Put(key, v); err != nil {
		return err
	}
	*size += state.RetainedSize(v)
	return outbox.Delete(key)
}

// capRetained deletes retained entries, lowest Seq first, until *size is at most
// limit (nothing when limit is not positive), and returns how many it deleted.
func capRetained(acked *bolt.Bucket, limit int64, size *int64) (int, error) {
	if limit <= 0 || *size <= limit {
		return 0, nil
	}
	var old [][]byte
	c := acked.Cursor()
	for k, v := c.First(); k != nil && *size > limit; k, v = c.Next() {
		old = append(old, slices.Clone(k))
		*size -= state.RetainedSize(v)
	}
	for _, k := range old {
		if err := acked.Delete(k); err != nil {
			return 0, err
		}
	}
	return len(old), nil
}

// retainedBytes returns the retained entries' size recorded in the meta bucket, or
// computes it from the entries when the file has none recorded.
func retainedBytes(tx *bolt.Tx) (int64, error) {
	if v := tx.Bucket(metaBucket).Get(retainedBytesKey); v != nil {
		if len(v) != 8 {
			return 0, fmt.Errorf("meta %s: %d bytes, not 8", retainedBytesKey, len(v))
		}
		return int64(binary.BigEndian.Uint64(v)), nil
	}
	var n int64
	if acked := tx.Bucket(ackedBucket); acked != nil {
		err := acked.ForEach(func(_, v []byte) error {
			n += state.RetainedSize(v)
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	return n, nil
}

// setRetainedBytes records the retained entries' size in the meta bucket.
func setRetainedBytes(tx *bolt.Tx, n int64) error {
	if n < 0 {
		return fmt.Errorf("meta %s: size %d is negative", retainedBytesKey, n)
	}
	return tx.Bucket(metaBucket).Put(retainedBytesKey, binary.BigEndian.AppendUint64(nil, uint64(n)))
}

// addRetainedBytes records the retained entries' size after deletions that freed d
// bytes (d negative) in tx: the recorded size plus d, or, in a file with none recorded,
// the size of the entries left.
func addRetainedBytes(tx *bolt.Tx, d int64) error {
	recorded := tx.Bucket(metaBucket).Get(retainedBytesKey) != nil
	n, err := retainedBytes(tx)
	if err != nil {
		return err
	}
	if recorded {
		n += d
	}
	return setRetainedBytes(tx, n)
}

// retention returns the retained entries' size, Capped 0.
func (s *Store) retention() (state.Retention, error) {
	var r state.Retention
	err := s.db.View(func(tx *bolt.Tx) (err error) {
		r.Bytes, err = retainedBytes(tx)
		return err
	})
	if err != nil {
		return state.Retention{}, fmt.Errorf("state file %s: retained entries' size: %w", s.path, err)
	}
	return r, nil
}

// RetainedBytes returns the size of the retained entries (the sum of their
// state.RetainedSize), as limited by Ack.
func (s *Store) RetainedBytes(_ context.Context) (int64, error) {
	r, err := s.retention()
	return r.Bytes, err
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
		var (
			old   [][]byte
			freed int64
		)
		err := acked.ForEach(func(k, v []byte) error {
			e, err := state.AckedHeader(v)
			if err != nil {
				return fmt.Errorf("retained entry %x: %w", k, err)
			}
			switch {
			case e.Acked.Before(cutoff):
				old = append(old, slices.Clone(k))
				freed += state.RetainedSize(v)
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
		if pruned == 0 {
			return nil
		}
		return addRetainedBytes(tx, -freed)
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
			e, err := state.AckedHeader(v)
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
