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
// one record per tracked item, and the file should stay well under 200 bytes per item.
// Every value starts with a format version byte, so that the format can change without
// a new schema; decoders read every version ever written. Integers are varints,
// strings and byte slices are length-prefixed. Decoders check every length against
// what is left, so a damaged value gives an error, never a panic or a huge allocation.
// Values are self-contained: they decode without anything else from the file.
//
// Record (the key is the ID), version 2:
//
//	version=2  flags(terminal=1, stalled=2)  sequence  kind  status  createdAt  settleUntil
//	count, then per nested item: flags  sequence  [kind]  id  status
//
// where
//   - status is raw, a state code (stateCodes; 0 means the state string follows) and
//     the addendum;
//   - kind, raw, addendum and a state string are string references (appendRef): one
//     byte for a string of commonStrings, else the string itself;
//   - times are compact (appendTime2): whole seconds or milliseconds, as providers
//     write them, take 5 or 7 bytes instead of 9;
//   - a nested item's flags are terminal=1, kind as previous=2 (a nested item whose
//     kind equals the previous nested item's, refunds listed together, does not
//     repeat it), and in bits 2-4 the form of its id (idForm): canonical UUIDs and hex
//     strings, such as transaction hashes, are stored as the bytes they spell.
//
// Version 1 (still read) stored every string and the nested ids as they are and every
// time as Unix nanoseconds (0 for the zero time, so that the Unix epoch itself read
// back as the zero time):
//
//	version=1  flags(terminal=1, stalled=2)  sequence  kind  status  createdAt  settleUntil
//	count, then per nested item: flags(terminal=1, kind as previous=2)  sequence  [kind]  id  status

const (
	recordV1 = 1
	recordV2 = 2
	metaV1   = 1
	outboxV1 = 1
)

// Flag bits.
const (
	flagTerminal       = 1
	flagStalled        = 2 // in a record's flags
	flagKindAsPrevious = 2 // in a nested item's flags
	idFormShift        = 2 // a nested item's id form, in its flags' bits 2-4
)

// stateCodes are the one-byte codes of the normalized states. The table is part of the
// file format: append only, never reorder.
var stateCodes = [...]diff.State{
	1: diff.Pending, 2: diff.ActionRequired, 3: diff.Processing, 4: diff.Completed,
	5: diff.Underpaid, 6: diff.Failed, 7: diff.Canceled, 8: diff.Expired, 9: diff.Unknown,
}

// commonStrings are the kinds, raw statuses and addenda of the supported providers,
// which a record refers to by their index instead of storing them. The table is part
// of the file format: append only, never reorder or change an entry. A string not in
// it is stored as it is, so a provider's new status needs no change here.
var commonStrings = [...]string{
	// Kinds.
	"payment", "payment_refund", "payment_rfi", "payment_onchain_transaction", "ramp_session",
	"settlement", "settlement_detail", "onramp_session", "payment_transaction",
	// Circle CPN payments, RFIs, refunds and on-chain transactions.
	"CREATED", "CRYPTO_FUNDS_PENDING", "FIAT_PAYMENT_INITIATED", "COMPLETED", "FAILED",
	"INFORMATION_REQUIRED", "IN_REVIEW", "APPROVED", "PENDING", "BROADCASTED", "IN_MANUAL_REVIEW",
	// Circle ramp sessions and settlements.
	"EXPIRED", "CANCELED", "CANCELLED", "pending", "settled", "complete",
	// Stripe crypto onramp sessions.
	"initialized", "requires_payment", "fulfillment_processing", "fulfillment_complete", "rejected",
	// Coindirect payments and their transactions.
	"PROCESSING", "COMPLETE", "UNDERPAID", "UNCONFIRMED", "CONFIRMED",
	// Common elsewhere.
	"processing", "completed", "failed", "canceled", "cancelled", "expired", "succeeded", "requires_action",
}

// commonIndex maps each of commonStrings to its index; maxCommonLen is the length of
// the longest.
var commonIndex, maxCommonLen = func() (map[string]int, int) {
	m := make(map[string]int, len(commonStrings))
	n := 0
	for i, s := range commonStrings {
		m[s] = i
		n = max(n, len(s))
	}
	return m, n
}()

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

// appendRef appends a string reference: uvarint 2i+1 for commonStrings[i], else
// uvarint 2n followed by the string's n bytes.
func appendRef(b []byte, s string) []byte {
	if s == "" {
		return append(b, 0)
	}
	if len(s) <= maxCommonLen {
		if i, ok := commonIndex[s]; ok {
			return binary.AppendUvarint(b, uint64(2*i+1))
		}
	}
	b = binary.AppendUvarint(b, 2*uint64(len(s)))
	return append(b, s...)
}

func appendStatusV2(b []byte, s diff.Status) []byte {
	b = appendRef(b, s.Raw)
	code := stateCode(s.State)
	b = append(b, byte(code))
	if code == 0 {
		b = appendRef(b, string(s.State))
	}
	return appendRef(b, s.Addendum)
}

func stateCode(st diff.State) int {
	for i, c := range stateCodes {
		if i > 0 && c == st {
			return i
		}
	}
	return 0
}

// Units of appendTime2: the low two bits of its first varint.
const (
	unitSeconds = 1
	unitMillis  = 2
	unitNanos   = 3 // the Unix nanoseconds follow in a second varint
)

// appendTime2 appends t compactly: varint 0 for the zero time, else varint
// (n<<2 | unit) with n the Unix seconds or milliseconds when t is a whole number of
// them, else varint unitNanos followed by varint Unix nanoseconds.
func appendTime2(b []byte, t time.Time) ([]byte, error) {
	if t.IsZero() {
		return binary.AppendVarint(b, 0), nil
	}
	if t.Before(minTime) || t.After(maxTime) {
		return b, fmt.Errorf("time %s is outside the storable range (years 1678 to 2262)", t.Format(time.RFC3339))
	}
	n := t.UnixNano()
	switch {
	case n%1e9 == 0:
		return binary.AppendVarint(b, n/1e9<<2|unitSeconds), nil
	case n%1e6 == 0:
		return binary.AppendVarint(b, n/1e6<<2|unitMillis), nil
	default:
		return binary.AppendVarint(binary.AppendVarint(b, unitNanos), n), nil
	}
}

// Forms of a nested item's id (idForm): how its bytes are stored.
const (
	idLiteral    = iota // the string as it is
	idUUID              // a canonical lower-case UUID: its 16 bytes
	idHexLower          // lower-case hex of even length: uvarint n, then the n bytes
	idHexUpper          // the same in upper case
	idHexLower0x        // idHexLower after "0x"
	idHexUpper0x        // idHexUpper after "0x"
	numIDForms
)

// idForm returns the form id is stored in.
func idForm(id string) int {
	if isUUID(id) {
		return idUUID
	}
	form, hex := idHexLower, id
	if len(hex) > 2 && hex[0] == '0' && hex[1] == 'x' {
		form, hex = idHexLower0x, hex[2:]
	}
	if len(hex) == 0 || len(hex)%2 != 0 {
		return idLiteral
	}
	lower, upper := true, true
	for i := 0; i < len(hex); i++ {
		switch c := hex[i]; {
		case '0' <= c && c <= '9':
		case 'a' <= c && c <= 'f':
			upper = false
		case 'A' <= c && c <= 'F':
			lower = false
		default:
			return idLiteral
		}
	}
	switch {
	case lower:
		return form
	case upper:
		return form + 1 // the upper-case twin
	default:
		return idLiteral
	}
}

// isUUID reports whether s is a canonical lower-case UUID (8-4-4-4-12 hex digits).
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
	}
	return true
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	default:
		return c - 'a' + 10
	}
}

// appendID appends id in form (from idForm).
func appendID(b []byte, id string, form int) []byte {
	switch form {
	case idUUID:
		for i := 0; i < 36; i++ {
			if i == 8 || i == 13 || i == 18 || i == 23 {
				continue
			}
			b = append(b, unhex(id[i])<<4|unhex(id[i+1]))
			i++
		}
		return b
	case idHexLower0x, idHexUpper0x:
		id = id[2:]
		fallthrough
	case idHexLower, idHexUpper:
		b = binary.AppendUvarint(b, uint64(len(id)/2))
		for i := 0; i < len(id); i += 2 {
			b = append(b, unhex(id[i])<<4|unhex(id[i+1]))
		}
		return b
	default:
		return appendString(b, id)
	}
}

// encodeRecord appends the encoding of r (without its ID) to b: always the latest
// version.
func encodeRecord(b []byte, r *diff.Record) ([]byte, error) {
	var flags byte
	if r.Status.Terminal {
		flags |= flagTerminal
	}
	if r.Stalled {
		flags |= flagStalled
	}
	b = append(b, recordV2, flags)
	b = binary.AppendUvarint(b, uint64(r.Sequence))
	b = appendRef(b, r.Kind)
	b = appendStatusV2(b, r.Status)
	var err error
	if b, err = appendTime2(b, r.CreatedAt); err != nil {
		return b, fmt.Errorf("created_at: %w", err)
	}
	if b, err = appendTime2(b, r.SettleUntil); err != nil {
		return b, fmt.Errorf("settle_until: %w", err)
	}
	b = binary.AppendUvarint(b, uint64(len(r.Nested)))
	for i := range r.Nested {
		n := &r.Nested[i]
		form := idForm(n.ID)
		flags = byte(form) << idFormShift
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
			b = appendRef(b, n.Kind)
		}
		b = appendID(b, n.ID, form)
		b = appendStatusV2(b, n.Status)
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
	if n == 0 {
		d.fail(errShort)
		return time.Time{}
	}
	if n < 0 {
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

// ref reads a string reference written by appendRef. A common string is returned
// without a copy.
func (d *decoder) ref() string {
	x := d.uvarint()
	if d.err != nil {
		return ""
	}
	if x&1 == 1 {
		if i := x >> 1; i < uint64(len(commonStrings)) {
			return commonStrings[i]
		}
		d.fail(fmt.Errorf("common string %d does not exist", x>>1))
		return ""
	}
	n := x >> 1
	if n > uint64(len(d.b)) {
		d.fail(fmt.Errorf("length %d exceeds the %d bytes left", n, len(d.b)))
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

// time2 reads a time written by appendTime2.
func (d *decoder) time2() time.Time {
	if d.err != nil {
		return time.Time{}
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(errors.New("bad time varint"))
		return time.Time{}
	}
	d.b = d.b[n:]
	switch {
	case v == 0:
		return time.Time{}
	case v == unitNanos:
		ns, n := binary.Varint(d.b)
		if n <= 0 {
			d.fail(errors.New("bad time varint"))
			return time.Time{}
		}
		d.b = d.b[n:]
		return time.Unix(0, ns).UTC()
	case v&3 == unitSeconds && v>>2 >= math.MinInt64/int64(time.Second) && v>>2 <= math.MaxInt64/int64(time.Second):
		return time.Unix(v>>2, 0).UTC()
	case v&3 == unitMillis && v>>2 >= math.MinInt64/int64(time.Millisecond) && v>>2 <= math.MaxInt64/int64(time.Millisecond):
		return time.UnixMilli(v >> 2).UTC()
	default:
		d.fail(fmt.Errorf("bad time %d", v))
		return time.Time{}
	}
}

const hexDigits = "0123456789abcdef"
const hexDigitsUpper = "0123456789ABCDEF"

// id reads a nested item's id stored in form.
func (d *decoder) id(form int) string {
	if d.err != nil {
		return ""
	}
	var raw []byte
	switch form {
	case idLiteral:
		return d.string()
	case idUUID:
		if len(d.b) < 16 {
			d.fail(errShort)
			return ""
		}
		raw, d.b = d.b[:16], d.b[16:]
	default:
		if raw = d.bytes(); d.err == nil && len(raw) == 0 {
			d.fail(errors.New("empty hex id"))
		}
		if d.err != nil {
			return ""
		}
	}
	digits := hexDigits
	if form == idHexUpper || form == idHexUpper0x {
		digits = hexDigitsUpper
	}
	out := make([]byte, 0, 2+2*len(raw)+4)
	if form == idHexLower0x || form == idHexUpper0x {
		out = append(out, "0x"...)
	}
	for i, c := range raw {
		if form == idUUID && (i == 4 || i == 6 || i == 8 || i == 10) {
			out = append(out, '-')
		}
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

func (d *decoder) statusV2(terminal bool) diff.Status {
	s := diff.Status{Raw: d.ref(), Terminal: terminal}
	code := int(d.byte())
	switch {
	case code == 0:
		s.State = diff.State(d.ref())
	case code < len(stateCodes):
		s.State = stateCodes[code]
	default:
		d.fail(fmt.Errorf("unknown state code %d", code))
	}
	s.Addendum = d.ref()
	return s
}

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

// decodeRecord decodes a value written by encodeRecord, of any version; id is the key.
// The result shares no memory with b.
func decodeRecord(id string, b []byte) (diff.Record, error) {
	if len(b) > 0 && b[0] == recordV1 {
		return decodeRecordV1(id, b)
	}
	d := decoder{b: b}
	d.version(recordV2)
	flags := d.flags(flagTerminal | flagStalled)
	r := diff.Record{ID: id, Stalled: flags&flagStalled != 0}
	r.Sequence = d.uint32()
	r.Kind = d.ref()
	r.Status = d.statusV2(flags&flagTerminal != 0)
	r.CreatedAt = d.time2()
	r.SettleUntil = d.time2()
	count := d.uvarint()
	if d.err == nil && count > uint64(len(d.b)/minNestedLen) {
		d.fail(fmt.Errorf("%d nested items cannot fit in %d bytes", count, len(d.b)))
	}
	if d.err == nil && count > 0 {
		r.Nested = make([]diff.NestedRecord, count)
		for i := range r.Nested {
			n := &r.Nested[i]
			f := d.flags(flagTerminal | flagKindAsPrevious | 7<<idFormShift)
			form := int(f >> idFormShift)
			if d.err == nil && form >= numIDForms {
				d.fail(fmt.Errorf("unknown id form %d", form))
			}
			n.Sequence = d.uint32()
			switch {
			case f&flagKindAsPrevious == 0:
				n.Kind = d.ref()
			case i == 0:
				d.fail(errors.New("first nested item refers to a previous kind"))
			default:
				n.Kind = r.Nested[i-1].Kind
			}
			n.ID = d.id(form)
			n.Status = d.statusV2(f&flagTerminal != 0)
		}
	}
	if err := d.end(); err != nil {
		return diff.Record{}, err
	}
	return r, nil
}

// decodeRecordV1 decodes a version 1 record; id is the key. The result shares no
// memory with b.
func decodeRecordV1(id string, b []byte) (diff.Record, error) {
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
	return appendEntry(make([]byte, 0, 2+binary.MaxVarintLen64+len(m.ID)+len(m.Subject)+len(m.Body)+3*binary.MaxVarintLen32), enqueued, m)
}

// appendEntry appends the encoding of an outbox entry (encodeEntry) to b.
func appendEntry(b []byte, enqueued time.Time, m *event.Message) ([]byte, error) {
	b = append(b, outboxV1)
	var err error
	if b, err = appendTime(b, enqueued); err != nil {
		return b, fmt.Errorf("enqueued: %w", err)
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

// Open index entry (the key is the ID):
//
//	createdAt  [0x00  lastRead]  state
//
// where both times are as appendTime writes them, and state, the state that sets the
// item's re-read schedule, is nothing for "" (a final item that is still settling),
// one byte 0x80|code for a state of stateCodes, else the state string
// (length-prefixed). The 0x00 marker and the read time are written only when the read
// time is known (not zero); a value without them reads with a zero LastRead, so the
// entries of older files are due at once, as they were before read times were kept.
//
// Older forms, all still read: files written before the one-byte state form held the
// state string in every case, length-prefixed (so never a single byte with the high
// bit set), and a settling item's "" then as the single byte 0x00 that ends the value.
// The read time's marker is told apart from that by what follows it: a read time is
// at least one byte, so a 0x00 that ends the value is the old empty state, and a 0x00
// followed by more is the marker. Before the state was kept, the value was the
// creation time alone, which reads as the state "".
const openReadMarker = 0x00

// encodeOpen returns an open index value (see above); lastRead zero writes none.
func encodeOpen(t time.Time, st diff.State, lastRead time.Time) ([]byte, error) {
	return appendOpen(make([]byte, 0, 2*binary.MaxVarintLen64+2), t, st, lastRead)
}

// appendOpen appends an open index value (encodeOpen) to b.
func appendOpen(b []byte, t time.Time, st diff.State, lastRead time.Time) ([]byte, error) {
	b, err := appendTime(b, t)
	if err != nil {
		return b, fmt.Errorf("created_at: %w", err)
	}
	if !lastRead.IsZero() {
		if b, err = appendTime(append(b, openReadMarker), lastRead); err != nil {
			return b, fmt.Errorf("last read: %w", err)
		}
	}
	switch code := stateCode(st); {
	case st == "":
		return b, nil
	case code > 0:
		return append(b, 0x80|byte(code)), nil
	default:
		return appendString(b, string(st)), nil
	}
}

// decodeOpen decodes an open index value of any form: the creation time, the state
// and the read time (zero when the value has none).
func decodeOpen(b []byte) (created time.Time, st diff.State, lastRead time.Time, err error) {
	d := decoder{b: b}
	created = d.time()
	if d.err == nil && len(d.b) > 1 && d.b[0] == openReadMarker {
		d.b = d.b[1:]
		if lastRead = d.time(); d.err != nil {
			d.err = fmt.Errorf("last read: %w", d.err)
		}
	}
	switch {
	case d.err != nil || len(d.b) == 0:
	case len(d.b) == 1 && d.b[0]&0x80 != 0:
		if code := int(d.b[0] &^ 0x80); code > 0 && code < len(stateCodes) {
			st = stateCodes[code]
		} else {
			d.fail(fmt.Errorf("unknown state code %d", code))
		}
		d.b = d.b[1:]
	default:
		st = diff.State(d.string())
	}
	if err := d.end(); err != nil {
		return time.Time{}, "", time.Time{}, err
	}
	return created, st, lastRead, nil
}

// Retained entry (an acknowledged outbox entry kept for re-publishing), version 3:
//
//	version=3  flags(duplicate=1)  acked time  stream seq  zstd frame of the encoded OutboxEntry, compressed with entryDict
//
// Versions 2 (the frame compressed without a dictionary) and 1 (the encoded
// OutboxEntry uncompressed) are still read, and kept as they are when an entry takes a
// new acknowledgement:
//
//	version=1  flags(duplicate=1)  acked time  stream seq  encoded OutboxEntry
const (
	ackedV1       = 1
	ackedV2       = 2
	ackedV3       = 3
	ackDuplicate  = 1 // the acknowledgement said duplicate: the store time is unknown
	ackFlagsValid = ackDuplicate
)

// encodeAcked returns a version 3 retained value: the acknowledgement of a, then
// entry compressed.
func encodeAcked(a Ack, entry []byte) ([]byte, error) {
	b, err := appendAckHeader(make([]byte, 0, 2+2*binary.MaxVarintLen64+len(entry)/4), ackedV3, a)
	if err != nil {
		return nil, err
	}
	return compressEntry(b, entry), nil
}

// appendAckHeader appends the header of a retained value of the given version.
func appendAckHeader(b []byte, version byte, a Ack) ([]byte, error) {
	var flags byte
	if a.Duplicate {
		flags |= ackDuplicate
	}
	b = append(b, version, flags)
	b, err := appendTime(b, a.At)
	if err != nil {
		return nil, fmt.Errorf("acknowledged: %w", err)
	}
	return binary.AppendUvarint(b, a.StreamSeq), nil
}

// ackedHeader decodes the acknowledgement of a retained value of either version and
// returns its version and the payload that follows (sharing memory with v): the
// encoded OutboxEntry, compressed in versions 2 and 3.
func ackedHeader(v []byte) (AckedEntry, byte, []byte, error) {
	var version byte
	if len(v) > 0 {
		version = v[0]
	}
	d := decoder{b: v}
	if version != ackedV2 && version != ackedV3 {
		d.version(ackedV1)
	} else {
		d.b = d.b[1:]
	}
	flags := d.flags(ackFlagsValid)
	e := AckedEntry{Duplicate: flags&ackDuplicate != 0}
	e.Acked = d.time()
	e.StreamSeq = d.uvarint()
	if d.err != nil {
		return AckedEntry{}, 0, nil, d.err
	}
	return e, version, d.b, nil
}

// splitAcked decodes the acknowledgement of a retained value and returns the encoded
// outbox entry that follows it: sharing memory with v in version 1, decompressed into
// memory of its own in versions 2 and 3.
func splitAcked(v []byte) (AckedEntry, []byte, error) {
	e, version, payload, err := ackedHeader(v)
	if err != nil || version == ackedV1 {
		return e, payload, err
	}
	entry, err := decompressEntry(payload, version == ackedV3)
	if err != nil {
		return AckedEntry{}, nil, err
	}
	return e, entry, nil
}

// restampAcked returns retained value v with the acknowledgement of a instead of its
// own, its payload copied as it is (not decompressed) and its version kept.
func restampAcked(a Ack, v []byte) ([]byte, error) {
	_, version, payload, err := ackedHeader(v)
	if err != nil {
		return nil, err
	}
	b, err := appendAckHeader(make([]byte, 0, 2+2*binary.MaxVarintLen64+len(payload)), version, a)
	if err != nil {
		return nil, err
	}
	return append(b, payload...), nil
}
