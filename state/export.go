package state

import (
	"errors"
	"fmt"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/event"
)

// The functions below expose the value encodings of this package (codec.go) to other
// back ends that keep the same data elsewhere (package state/natskv), so that every
// back end stores byte-identical values and a change of format lands in one place.

// CheckRecord returns the error Commit gives for a record it cannot store: an empty
// ID or a Sequence of 0.
func CheckRecord(r *diff.Record) error {
	if r.ID == "" {
		return errors.New("empty id")
	}
	if r.Sequence == 0 {
		return errors.New("sequence 0")
	}
	return nil
}

// EncodeRecord returns the stored encoding of r, without its ID.
func EncodeRecord(r *diff.Record) ([]byte, error) { return encodeRecord(nil, r) }

// DecodeRecord decodes a value written by EncodeRecord; id is the record's ID.
func DecodeRecord(id string, b []byte) (diff.Record, error) { return decodeRecord(id, b) }

// EncodeMeta returns the stored encoding of m.
func EncodeMeta(m *Meta) ([]byte, error) { return encodeMeta(m) }

// DecodeMeta decodes a value written by EncodeMeta.
func DecodeMeta(b []byte) (Meta, error) { return decodeMeta(b) }

// EncodeEntry returns the stored encoding of an outbox entry holding m, enqueued at
// enqueued.
func EncodeEntry(enqueued time.Time, m *event.Message) ([]byte, error) {
	return encodeEntry(enqueued, m)
}

// DecodeEntry decodes a value written by EncodeEntry into the entry with sequence seq.
func DecodeEntry(seq uint64, b []byte) (OutboxEntry, error) { return decodeEntry(seq, b) }

// EncodeOpen returns the open index value of r: whether r belongs in the open index
// as of now (open and not stalled), and the value to store if it does.
func EncodeOpen(r *diff.Record, now time.Time) (bool, []byte, error) {
	if !r.Open(now) || r.Stalled {
		return false, nil, nil
	}
	v, err := encodeOpen(r.CreatedAt, r.OpenState())
	return true, v, err
}

// DecodeOpen decodes an open index value of the item id.
func DecodeOpen(id string, b []byte) (OpenItem, error) {
	t, st, err := decodeOpen(b)
	if err != nil {
		return OpenItem{}, err
	}
	return OpenItem{ID: id, CreatedAt: t, State: st}, nil
}

// EncodeAcked returns the stored encoding of a retained entry: acknowledgement a of
// the outbox entry whose encoding (EncodeEntry) is entry.
func EncodeAcked(a Ack, entry []byte) ([]byte, error) { return encodeAcked(a, entry) }

// DecodeAcked decodes a value written by EncodeAcked into the retained entry with
// sequence seq.
func DecodeAcked(seq uint64, v []byte) (AckedEntry, error) {
	e, entry, err := splitAcked(v)
	if err == nil {
		e.OutboxEntry, err = decodeEntry(seq, entry)
	}
	if err != nil {
		return AckedEntry{}, fmt.Errorf("retained entry %d: %w", seq, err)
	}
	return e, nil
}

// SplitAcked returns the acknowledgement of a retained value and the outbox entry's
// encoding that follows it (sharing memory with v).
func SplitAcked(v []byte) (AckedEntry, []byte, error) { return splitAcked(v) }
