package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/event"
)

// The functions below are the stored encodings of codec.go, for the back ends. The
// Append forms append to a caller's buffer, for back ends that encode a whole batch
// into one allocation; the Encode forms return a value of its own.

// CheckRecord returns the error a back end gives for a record it cannot store: an
// empty ID or a Sequence of 0.
func CheckRecord(r *diff.Record) error {
	if r.ID == "" {
		return errors.New("empty id")
	}
	if r.Sequence == 0 {
		return errors.New("sequence 0")
	}
	return nil
}

// AppendRecord appends the stored encoding of r, without its ID, to b.
func AppendRecord(b []byte, r *diff.Record) ([]byte, error) { return encodeRecord(b, r) }

// EncodeRecord returns the stored encoding of r, without its ID.
func EncodeRecord(r *diff.Record) ([]byte, error) { return encodeRecord(nil, r) }

// DecodeRecord decodes a value written by EncodeRecord, of any format version; id is
// the record's ID. The result shares no memory with b.
func DecodeRecord(id string, b []byte) (diff.Record, error) { return decodeRecord(id, b) }

// RecordStalled reports whether the record encoded in v is marked stalled, reading
// only its first bytes; an error when v is not a record of a known version.
func RecordStalled(v []byte) (bool, error) {
	if len(v) < 2 || (v[0] != recordV1 && v[0] != recordV2) {
		return false, fmt.Errorf("not a version %d or %d record", recordV1, recordV2)
	}
	return v[1]&flagStalled != 0, nil
}

// EncodeMeta returns the stored encoding of m.
func EncodeMeta(m *Meta) ([]byte, error) { return encodeMeta(m) }

// DecodeMeta decodes a value written by EncodeMeta.
func DecodeMeta(b []byte) (Meta, error) { return decodeMeta(b) }

// AppendEntry appends the stored encoding of an outbox entry holding m, enqueued at
// enqueued, to b. The message body is stored as given.
func AppendEntry(b []byte, enqueued time.Time, m *event.Message) ([]byte, error) {
	return appendEntry(b, enqueued, m)
}

// EncodeEntry returns the stored encoding of an outbox entry holding m, enqueued at
// enqueued.
func EncodeEntry(enqueued time.Time, m *event.Message) ([]byte, error) {
	return encodeEntry(enqueued, m)
}

// DecodeEntry decodes a value written by EncodeEntry into the entry with sequence
// seq. The result shares no memory with b.
func DecodeEntry(seq uint64, b []byte) (OutboxEntry, error) { return decodeEntry(seq, b) }

// InOpenIndex reports whether r belongs in its source's open index as of now: it is
// open and not stalled.
func InOpenIndex(r *diff.Record, now time.Time) bool { return r.Open(now) && !r.Stalled }

// AppendOpen appends the open index value of r to b: its creation time, the state
// that sets how often it is re-read and readAt, when it was last read (none when zero;
// see OpenItem.LastRead).
func AppendOpen(b []byte, r *diff.Record, readAt time.Time) ([]byte, error) {
	return appendOpen(b, r.CreatedAt, r.OpenState(), readAt)
}

// DecodeOpen decodes an open index value of the item id, of any form: LastRead is
// zero for a value written without a read time.
func DecodeOpen(id string, b []byte) (OpenItem, error) {
	t, st, read, err := decodeOpen(b)
	if err != nil {
		return OpenItem{}, err
	}
	return OpenItem{ID: id, CreatedAt: t, State: st, LastRead: read}, nil
}

// WithLastRead returns open index value v with its read time set to at, unless it
// holds that one or a later one already (a read time never moves back); changed is
// false, and out nil, when v is left as it is (always when at is zero).
func WithLastRead(v []byte, at time.Time) (out []byte, changed bool, err error) {
	t, st, read, err := decodeOpen(v)
	if err != nil {
		return nil, false, err
	}
	if !read.Before(at) {
		return nil, false, nil
	}
	out, err = appendOpen(make([]byte, 0, len(v)+binary.MaxVarintLen64+1), t, st, at)
	if err != nil {
		return nil, false, err
	}
	return out, true, nil
}

// EncodeAcked returns the stored encoding of a retained entry: acknowledgement a of
// the outbox entry whose encoding (EncodeEntry) is entry, which it stores compressed.
func EncodeAcked(a Ack, entry []byte) ([]byte, error) { return encodeAcked(a, entry) }

// DecodeAcked decodes a value written by EncodeAcked (or by RestampAcked, of either
// format version) into the retained entry with sequence seq. The result shares no
// memory with v.
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
// encoding that follows it (decompressed when stored compressed), without decoding
// that entry.
func SplitAcked(v []byte) (AckedEntry, []byte, error) { return splitAcked(v) }

// AckedHeader returns the acknowledgement of a retained value (Acked, StreamSeq,
// Duplicate; OutboxEntry left zero) without decompressing the entry that follows it.
func AckedHeader(v []byte) (AckedEntry, error) {
	e, _, _, err := ackedHeader(v)
	return e, err
}

// RestampAcked returns retained value v with the acknowledgement a in place of its
// own; the stored entry is copied as it is.
func RestampAcked(a Ack, v []byte) ([]byte, error) { return restampAcked(a, v) }

// RetainedKeyBytes is what each retained entry counts for its key in RetainedSize,
// whatever the back end's key looks like, so that both back ends apply a size limit
// alike.
const RetainedKeyBytes = 8

// RetainedSize is the size a retained value v counts for against a limit on the
// retained entries (Config.RetainAckedMaxBytes of the publisher): its length plus
// RetainedKeyBytes.
func RetainedSize(v []byte) int64 { return int64(len(v)) + RetainedKeyBytes }

// Retention is the state of the retained entries after a call that changed them.
type Retention struct {
	// Bytes is the size of the retained entries left: the sum of their RetainedSize.
	Bytes int64
	// Capped is how many retained entries the call deleted to keep Bytes within the
	// limit it was given, before their age would have pruned them.
	Capped int
}
