package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/event"
)

// Values are stored in a small binary format rather than JSON or gob: a snapshot holds
// one record per tracked item, and the file should stay near 200 bytes per item. Every
// value starts with a format version byte, so that the format can change without a new
// schema. Integers are varints, strings and byte slices are length-prefixed, times are
// Unix nanoseconds (the zero time is 0, so the Unix epoch itself reads back as the zero
// time). Decoders check every length against what is
// left, so a damaged value gives an error, never a panic or a huge allocation.
//
// Record (the key is the ID):
//
//	version=1  flags(terminal=1, stalled=2)  sequence  kind  status  createdAt  settleUntil
//	count, then per nested item: flags(terminal=1, kind as previous=2)  sequence  [kind]  id  status
//
// where status is raw, a state code (stateCodes; 0 means the state string follows) and
// the addendum. A nested item whose kind equals the previous nested item's (refunds
// listed together) does not repeat it.

const (
	recordV1 = 1
	metaV1   = 1
	outboxV1 = 1
)

// Flag bits.
const (
	flagTerminal       = 1
	flagStalled        = 2 // in a record's flags
	flagKindAsPrevious = 2 // in a nested item's flags
)

// stateCodes are the one-byte codes of the normalized states. The table is part of the
// file format: append only, never reorder.
var stateCodes = [...]diff.State{
	1: diff.Pending, 2: diff.ActionRequired, 3: diff.Processing, 4: diff.Completed,
	5: diff.Underpaid, 6: diff.Failed, 7: diff.Canceled, 8: diff.Expired, 9: diff.Unknown,
}

// minNestedLen is the smallest encoding of a nested item: flags, sequence, kind
// reference, id length, raw length, state code and addendum length.
const minNestedLen = 6

var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

func appendTime(b []byte, t time.Time) ([]byte, error) {
	if t.IsZero() {
		return binary.AppendVarint(b, 0), nil
	}
	if t.Before(minTime) || t.After(maxTime) {
		return b, fmt.Errorf("time %s is outside the storable range (years 1678 to 2262)", t.Format(time.RFC3339))
	}
	return binary.AppendVarint(b, t.UnixNano()), nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendStatus(b []byte, s diff.Status) []byte {
	b = appendString(b, s.Raw)
	code := 0
	for i, st := range stateCodes {
		if i > 0 && st == s.State {
			code = i
			break
		}
	}
	b = append(b, byte(code))
	if code == 0 {
		b = appendString(b, string(s.State))
	}
	return appendString(b, s.Addendum)
}

// encodeRecord appends the encoding of r (without its ID) to b.
func encodeRecord(b []byte, r *diff.Record) ([]byte, error) {
	var flags byte
	if r.Status.Terminal {
		flags |= flagTerminal
	}
	if r.Stalled {
		flags |= flagStalled
	}
	b = append(b, recordV1, flags)
	b = binary.AppendUvarint(b, uint64(r.Sequence))
	b = appendString(b, r.Kind)
	b = appendStatus(b, r.Status)
	var err error
	if b, err = appendTime(b, r.CreatedAt); err != nil {
		return b, fmt.Errorf("created_at: %w", err)
	}
	if b, err = appendTime(b, r.SettleUntil); err != nil {
		return b, fmt.Errorf("settle_until: %w", err)
	}
	b = binary.AppendUvarint(b, uint64(len(r.Nested)))
	for i := range r.Nested {
		n := &r.Nested[i]
		flags = 0
		if n.Status.Terminal {
			flags |= flagTerminal
		}
		sameKind := i > 0 && n.Kind == r.Nested[i-1].Kind
		if sameKind {
			flags |= flagKindAsPrevious
		}
		b = append(b, flags)
		b = binary.AppendUvarint(b, uint64(n.Sequence))
		if !sameKind {
			b = appendString(b, n.Kind)
		}
		b = appendString(b, n.ID)
		b = appendStatus(b, n.Status)
	}
	return b, nil
}

var errShort = errors.New("truncated value")

// decoder reads a value front to back; the first error sticks and later reads return
// zero values, so callers check err once at the end.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail(errShort)
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(errors.New("bad varint"))
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uint32() uint32 {
	v := d.uvarint()
	if v > math.MaxUint32 {
		d.fail(fmt.Errorf("sequence %d overflows 32 bits", v))
		return 0
	}
	return uint32(v)
}

func (d *decoder) time() time.Time {
	if d.err != nil {
		return time.Time{}
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(errors.New("bad time varint"))
		return time.Time{}
	}
	d.b = d.b[n:]
	if v == 0 {
		return time.Time{}
	}
	return time.Unix(0, v).UTC()
}

// bytes returns a length-prefixed byte slice, still pointing into the input.
func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail(fmt.Errorf("length %d exceeds the %d bytes left", n, len(d.b)))
		return nil
	}
	s := d.b[:n:n]
	d.b = d.b[n:]
	return s
}

func (d *decoder) string() string { return string(d.bytes()) }

func (d *decoder) status(terminal bool) diff.Status {
	s := diff.Status{Raw: d.string(), Terminal: terminal}
	code := int(d.byte())
	switch {
	case code == 0:
		s.State = diff.State(d.string())
	case code < len(stateCodes):
		s.State = stateCodes[code]
	default:
		d.fail(fmt.Errorf("unknown state code %d", code))
	}
	s.Addendum = d.string()
	return s
}

func (d *decoder) version(want byte) {
	if v := d.byte(); d.err == nil && v != want {
		d.fail(fmt.Errorf("unknown format version %d", v))
	}
}

func (d *decoder) flags(allowed byte) byte {
	f := d.byte()
	if f&^allowed != 0 {
		d.fail(fmt.Errorf("unknown flags %#x", f))
	}
	return f
}

func (d *decoder) end() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Errorf("%d trailing bytes", len(d.b)))
	}
	return d.err
}

// decodeRecord decodes a value written by encodeRecord; id is the key. The result
// shares no memory with b.
func decodeRecord(id string, b []byte) (diff.Record, error) {
	d := decoder{b: b}
	d.version(recordV1)
	flags := d.flags(flagTerminal | flagStalled)
	r := diff.Record{ID: id, Stalled: flags&flagStalled != 0}
	r.Sequence = d.uint32()
	r.Kind = d.string()
	r.Status = d.status(flags&flagTerminal != 0)
	r.CreatedAt = d.time()
	r.SettleUntil = d.time()
	count := d.uvarint()
	if d.err == nil && count > uint64(len(d.b)/minNestedLen) {
		d.fail(fmt.Errorf("%d nested items cannot fit in %d bytes", count, len(d.b)))
	}
	if d.err == nil && count > 0 {
		r.Nested = make([]diff.NestedRecord, count)
		for i := range r.Nested {
			n := &r.Nested[i]
			f := d.flags(flagTerminal | flagKindAsPrevious)
			n.Sequence = d.uint32()
			switch {
			case f&flagKindAsPrevious == 0:
				n.Kind = d.string()
			case i == 0:
				d.fail(errors.New("first nested item refers to a previous kind"))
			default:
				n.Kind = r.Nested[i-1].Kind
			}
			n.ID = d.string()
			n.Status = d.status(f&flagTerminal != 0)
		}
	}
	if err := d.end(); err != nil {
		return diff.Record{}, err
	}
	return r, nil
}

// Meta flag bits.
const (
	metaBaselineDone = 1
	metaRebaseline   = 2
)

// encodeMeta returns the encoding of m: version, flags (baseline done=1, rebaseline
// requested=2), high water, last poll.
func encodeMeta(m *Meta) ([]byte, error) {
	var flags byte
	if m.BaselineDone {
		flags |= metaBaselineDone
	}
	if m.Rebaseline {
		flags |= metaRebaseline
	}
	b := []byte{metaV1, flags}
	var err error
	if b, err = appendTime(b, m.HighWater); err != nil {
		return nil, fmt.Errorf("high_water: %w", err)
	}
	if b, err = appendTime(b, m.LastPoll); err != nil {
		return nil, fmt.Errorf("last_poll: %w", err)
	}
	return b, nil
}

func decodeMeta(b []byte) (Meta, error) {
	d := decoder{b: b}
	d.version(metaV1)
	flags := d.flags(metaBaselineDone | metaRebaseline)
	m := Meta{BaselineDone: flags&metaBaselineDone != 0, Rebaseline: flags&metaRebaseline != 0}
	m.HighWater = d.time()
	m.LastPoll = d.time()
	if err := d.end(); err != nil {
		return Meta{}, err
	}
	return m, nil
}

// encodeEntry returns the encoding of an outbox entry: version, enqueued time, id,
// subject, body. The body is stored as given.
func encodeEntry(enqueued time.Time, m *event.Message) ([]byte, error) {
	b := make([]byte, 0, 2+binary.MaxVarintLen64+len(m.ID)+len(m.Subject)+len(m.Body)+3*binary.MaxVarintLen32)
	b = append(b, outboxV1)
	var err error
	if b, err = appendTime(b, enqueued); err != nil {
		return nil, fmt.Errorf("enqueued: %w", err)
	}
	b = appendString(b, m.ID)
	b = appendString(b, m.Subject)
	b = binary.AppendUvarint(b, uint64(len(m.Body)))
	return append(b, m.Body...), nil
}

// decodeEntry decodes an outbox value; the result shares no memory with b.
func decodeEntry(seq uint64, b []byte) (OutboxEntry, error) {
	d := decoder{b: b}
	d.version(outboxV1)
	e := OutboxEntry{Seq: seq, Enqueued: d.time()}
	e.Msg.ID = d.string()
	e.Msg.Subject = d.string()
	if body := d.bytes(); len(body) > 0 {
		e.Msg.Body = append([]byte(nil), body...)
	}
	if err := d.end(); err != nil {
		return OutboxEntry{}, err
	}
	return e, nil
}

// encodeOpen encodes an open index value: the creation time, then the state that sets
// the item's refresh schedule ("" for a final item that is still settling).
func encodeOpen(t time.Time, st diff.State) ([]byte, error) {
	b, err := appendTime(nil, t)
	if err != nil {
		return nil, err
	}
	return appendString(b, string(st)), nil
}

func decodeOpen(b []byte) (time.Time, diff.State, error) {
	d := decoder{b: b}
	t := d.time()
	var st diff.State
	if d.err == nil && len(d.b) > 0 {
		st = diff.State(d.string())
	}
	return t, st, d.end()
}
