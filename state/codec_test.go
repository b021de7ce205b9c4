package state

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/state/codectest"
)

// t0 is the time codectest's records are built around.
var t0 = codectest.T0

// encodeRecordV1 is the version 1 encoder, which files written before version 2
// hold records of.
func encodeRecordV1(b []byte, r *diff.Record) ([]byte, error) {
	status := func(b []byte, s diff.Status) []byte {
		b = appendString(b, s.Raw)
		code := stateCode(s.State)
		b = append(b, byte(code))
		if code == 0 {
			b = appendString(b, string(s.State))
		}
		return appendString(b, s.Addendum)
	}
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
	b = status(b, r.Status)
	var err error
	if b, err = appendTime(b, r.CreatedAt); err != nil {
		return b, err
	}
	if b, err = appendTime(b, r.SettleUntil); err != nil {
		return b, err
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
		b = status(b, n.Status)
	}
	return b, nil
}

// TestVersion1RecordsDecode reads records as version 1 wrote them: a file written
// before version 2 keeps working, and its records are rewritten in version 2 as they
// change.
func TestVersion1RecordsDecode(t *testing.T) {
	// richRecord as the first release wrote it.
	golden, err := hex.DecodeString("010307077061796d656e74064641494c45440610494e5f4d414e55414c5f52455649455780c8e6f8e4f196b62e80b08d9cb390d2ea" +
		"310500010e7061796d656e745f726566756e642462383632376165382d373332622d346432352d623934372d31646638663430303761323907435245" +
		"415445440100030202723209434f4d504c45544544040000ffffffff0f1b7061796d656e745f6f6e636861696e5f7472616e73616374696f6e0630" +
		"78346132620b42524f4144434153544544030000010b7061796d656e745f7266690000000b6e6f742d612d7374617465017801010e7061796d656e" +
		"745f726566756e64027233064641494c45440600")
	if err != nil {
		t.Fatal(err)
	}
	rich := codectest.Rich()
	if got, err := decodeRecord(rich.ID, golden); err != nil || !reflect.DeepEqual(got, rich) {
		t.Errorf("first release's record: %v\n got %+v\nwant %+v", err, got, rich)
	}
	if b, _ := encodeRecordV1(nil, &rich); !bytes.Equal(b, golden) {
		t.Fatalf("encodeRecordV1 does not write what the first release wrote:\n%x", b)
	}
	for _, r := range codectest.Samples() {
		b, err := encodeRecordV1(nil, &r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeRecord(r.ID, b)
		if err != nil {
			t.Fatalf("decode version 1 %q: %v", r.ID, err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Errorf("version 1 %q:\n got %+v\nwant %+v", r.ID, got, r)
		}
	}
}

func mustEncode(t testing.TB, r *diff.Record) []byte {
	t.Helper()
	b, err := encodeRecord(nil, r)
	if err != nil {
		t.Fatalf("encode %q: %v", r.ID, err)
	}
	return b
}

func TestRecordRoundTrip(t *testing.T) {
	for _, r := range codectest.Samples() {
		b := mustEncode(t, &r)
		got, err := decodeRecord(r.ID, b)
		if err != nil {
			t.Fatalf("decode %q: %v", r.ID, err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Errorf("round trip of %q:\n got %+v\nwant %+v", r.ID, got, r)
		}
	}
}

func TestRecordEncodingIsCompact(t *testing.T) {
	r := codectest.Plain("c4d1da72-111e-4d52-bdbf-2e74a2d803d5", t0.Truncate(time.Second), "FIAT_PAYMENT_INITIATED", diff.Processing, false)
	r.Nested = []diff.NestedRecord{{Kind: "payment_refund", ID: "b8627ae8-732b-4d25-b947-1df8f4007a29",
		Status: diff.Status{Raw: "COMPLETED", State: diff.Completed, Terminal: true}, Sequence: 1}}
	b := mustEncode(t, &r)
	// version, flags, sequence, kind, raw, state code, addendum, created at in whole
	// seconds (5), settle until (zero), nested count; the refund's flags, sequence, kind,
	// 16 bytes of UUID, raw, state code, addendum.
	if max := 7 + 5 + 2 + 3 + 16 + 3; len(b) > max {
		t.Errorf("typical record encodes to %d bytes, want at most %d", len(b), max)
	}
	if v1, _ := encodeRecordV1(nil, &r); len(b)*3 > len(v1) {
		t.Errorf("version 2 takes %d bytes, version 1 %d: want a third or less", len(b), len(v1))
	}
	// Times take the precision they have.
	for _, tc := range []struct {
		t    time.Time
		size int
	}{
		{time.Time{}, 1},
		{time.Unix(0, 0), 1},
		{time.Date(2026, 11, 22, 10, 0, 3, 0, time.UTC), 5},
		{time.Date(2026, 11, 22, 10, 0, 3, 120_000_000, time.UTC), 7},
		{time.Date(2026, 11, 22, 10, 0, 3, 120_000_001, time.UTC), 10},
	} {
		if b, err := appendTime2(nil, tc.t); err != nil || len(b) != tc.size {
			t.Errorf("time %s takes %d bytes (%v), want %d", tc.t, len(b), err, tc.size)
		}
	}
	// A nested item repeating its predecessor's kind does not store it again.
	rich := codectest.Rich()
	withRepeat := len(mustEncode(t, &rich))
	rich.Nested[1].Kind = "payment_refunX"
	if withoutRepeat := len(mustEncode(t, &rich)); withoutRepeat-withRepeat != 1+len("payment_refunX") {
		t.Errorf("repeated kind saved %d bytes, want %d", withoutRepeat-withRepeat, 1+len("payment_refunX"))
	}
}

func TestEncodeRecordRejectsUnstorableTime(t *testing.T) {
	r := codectest.Plain("p", time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC), "CREATED", diff.Pending, false)
	if _, err := encodeRecord(nil, &r); err == nil || !strings.Contains(err.Error(), "created_at") {
		t.Errorf("created_at in 2300: err = %v, want an error naming created_at", err)
	}
	r.CreatedAt, r.SettleUntil = t0, time.Date(1500, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := encodeRecord(nil, &r); err == nil || !strings.Contains(err.Error(), "settle_until") {
		t.Errorf("settle_until in 1500: err = %v, want an error naming settle_until", err)
	}
}

func TestDecodeRecordRejectsDamage(t *testing.T) {
	r := codectest.Rich()
	good := mustEncode(t, &r)
	for n := range len(good) {
		if _, err := decodeRecord("x", good[:n]); err == nil {
			t.Errorf("decoding the first %d of %d bytes succeeded", n, len(good))
		}
	}

	huge := binary.AppendUvarint(nil, 1<<62)
	cases := map[string][]byte{
		"empty":             nil,
		"unknown version":   append([]byte{9}, good[1:]...),
		"unknown flags":     append([]byte{recordV1, 0x80}, good[2:]...),
		"trailing bytes":    append(bytes.Clone(good), 0),
		"huge kind length":  append([]byte{recordV1, 0, 1}, huge...),
		"sequence overflow": append(append([]byte{recordV1, 0}, binary.AppendUvarint(nil, 1<<32)...), good[3:]...),
		"bad varint":        append([]byte{recordV1, 0}, bytes.Repeat([]byte{0xff}, 11)...),
		// kind "", raw "", state code 200
		"unknown state code": {recordV1, 0, 1, 0, 0, 200, 0, 0, 0, 0},
		// kind "", raw "", pending, addendum "", zero times, then a huge nested count
		"huge nested count": append([]byte{recordV1, 0, 1, 0, 0, 1, 0, 0, 0}, huge...),
		// one nested item that claims the kind of a predecessor it does not have
		"kind of no predecessor": {recordV1, 0, 1, 0, 0, 1, 0, 0, 0, 1, flagKindAsPrevious, 1, 0, 0, 1, 0},
		"unknown nested flags":   {recordV1, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0x40, 1, 0, 0, 0, 1, 0},
	}
	for name, b := range cases {
		if _, err := decodeRecord("x", b); err == nil {
			t.Errorf("%s: decoding succeeded", name)
		}
	}
	// The hand-built prefix above is itself valid, so the cases fail for their reason.
	if _, err := decodeRecord("x", []byte{recordV1, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0}); err != nil {
		t.Fatalf("valid hand-built record: %v", err)
	}

	// Version 2: a valid hand-built record (kind "payment", raw "CREATED", pending, no
	// addendum, created at second 1 (varint 1<<2|unitSeconds), no settle window, one nested item of kind
	// "payment", a UUID id of zeros, raw "", pending, no addendum), then damage.
	valid2 := []byte{recordV2, 0, 1, 1, 19, 1, 0, 10, 0, 1, idUUID << idFormShift, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0}
	if r, err := decodeRecord("x", valid2); err != nil || r.Nested[0].ID != "00000000-0000-0000-0000-000000000000" || r.Status.Raw != "CREATED" || !r.CreatedAt.Equal(time.Unix(1, 0)) {
		t.Fatalf("valid hand-built version 2 record: %+v, %v", r, err)
	}
	with := func(i int, v ...byte) []byte { return append(append(bytes.Clone(valid2[:i]), v...), valid2[i+1:]...) }
	cases2 := map[string][]byte{
		"unknown common string": with(3, byte(2*len(commonStrings)+1)),
		"literal past the end":  with(3, 200),
		"time of unknown unit":  with(7, 4<<1), // varint 4: unit 0, but not the zero time
		"seconds out of range":  with(7, binary.AppendVarint(nil, (math.MaxInt64/int64(time.Second)+1)<<2|unitSeconds)...),
		"unknown id form":       with(10, numIDForms<<idFormShift),
		"unknown nested flag":   with(10, 0x80|idUUID<<idFormShift),
		"short uuid":            valid2[:20],
		"empty hex id":          append(with(10, idHexLower<<idFormShift)[:13], 0, 1, 0, 0),
		"nanoseconds cut short": append(with(7, unitNanos<<1)[:8], 0x80),
	}
	for name, b := range cases2 {
		if _, err := decodeRecord("x", b); err == nil {
			t.Errorf("version 2, %s: decoding succeeded", name)
		}
	}
}

func TestDecodedRecordSharesNoMemory(t *testing.T) {
	r := codectest.Rich()
	b := mustEncode(t, &r)
	got, err := decodeRecord(r.ID, b)
	if err != nil {
		t.Fatal(err)
	}
	clear(b) // what bbolt may do to a value's memory once the transaction ends
	if !reflect.DeepEqual(got, r) {
		t.Errorf("decoded record changed with its input: %+v", got)
	}
}

func TestMetaRoundTrip(t *testing.T) {
	for _, m := range []Meta{{}, {BaselineDone: true, HighWater: t0.Add(-time.Hour), LastPoll: t0},
		{BaselineDone: true, Rebaseline: true, HighWater: t0, LastPoll: t0}, {Rebaseline: true}} {
		b, err := encodeMeta(&m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeMeta(b)
		if err != nil || got != m {
			t.Errorf("round trip of %+v: got %+v, %v", m, got, err)
		}
	}
	if _, err := decodeMeta([]byte{metaV1, 4, 0, 0}); err == nil {
		t.Error("meta with unknown flags decoded")
	}
}

func TestEntryRoundTrip(t *testing.T) {
	msgs := []event.Message{
		{ID: "9f2c", Subject: "payments.cpn.payment.failed", Body: []byte(`{"specversion":"1.0"}`)},
		{ID: "bin", Subject: "s", Body: []byte{0, 1, 0xff, 0}},
		{},
	}
	for _, m := range msgs {
		b, err := encodeEntry(t0, &m)
		if err != nil {
			t.Fatal(err)
		}
		e, err := decodeEntry(42, b)
		if err != nil {
			t.Fatal(err)
		}
		if e.Seq != 42 || !e.Enqueued.Equal(t0) || e.Msg.ID != m.ID || e.Msg.Subject != m.Subject || !bytes.Equal(e.Msg.Body, m.Body) {
			t.Errorf("round trip of %+v: got %+v", m, e)
		}
		if _, err := decodeEntry(42, b[:len(b)-1]); err == nil {
			t.Errorf("truncated entry %q decoded", m.ID)
		}
	}
}

// FuzzDecodeRecord checks that decoding never panics and that whatever decodes
// survives a round trip unchanged, with a deterministic encoding.
func FuzzDecodeRecord(f *testing.F) {
	for _, r := range codectest.Samples() {
		f.Add(mustEncode(f, &r))
		v1, err := encodeRecordV1(nil, &r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(v1)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecord("id", b)
		if err != nil {
			return
		}
		enc, err := encodeRecord(nil, &r)
		if err != nil {
			t.Fatalf("decoded record does not encode: %v\n%+v", err, r)
		}
		again, err := decodeRecord("id", enc)
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if !reflect.DeepEqual(again, r) {
			t.Fatalf("round trip changed the record:\n got %+v\nwant %+v", again, r)
		}
		if enc2 := mustEncode(t, &again); !bytes.Equal(enc2, enc) {
			t.Fatalf("encoding is not deterministic: %x then %x", enc, enc2)
		}
	})
}

func TestOpenIndexValues(t *testing.T) {
	read := t0.Add(90*time.Minute + 123456789)
	for _, st := range append(slices.Clone(diff.States), "", "settling-ish") {
		for _, lastRead := range []time.Time{{}, read} {
			v, err := encodeOpen(t0, st, lastRead)
			if err != nil {
				t.Fatal(err)
			}
			gt, gst, gread, err := decodeOpen(v)
			if err != nil || !gt.Equal(t0) || gst != st || !gread.Equal(lastRead) {
				t.Errorf("open value of %q read at %v: %s, %q, %v, %v", st, lastRead, gt, gst, gread, err)
			}
			max := binary.MaxVarintLen64 + 1
			if !lastRead.IsZero() {
				max += 1 + binary.MaxVarintLen64
			}
			if stateCode(st) > 0 && len(v) > max {
				t.Errorf("open value of %q read at %v takes %d bytes", st, lastRead, len(v))
			}
			// Without a read time the value is as before read times were kept.
			if lastRead.IsZero() && bytes.IndexByte(v[len(binary.AppendVarint(nil, t0.UnixNano())):], openReadMarker) == 0 {
				t.Errorf("open value of %q without a read time has the marker: %x", st, v)
			}
			it, err := DecodeOpen("id", v)
			if err != nil || it != (OpenItem{ID: "id", CreatedAt: gt, State: st, LastRead: gread}) {
				t.Errorf("DecodeOpen of %q read at %v = %+v, %v", st, lastRead, it, err)
			}
		}
	}
	// Values as earlier releases wrote them: the time, then the state string (in the
	// first release, "" too, as the single byte 0); the time, then the state's code;
	// the time alone.
	for hexValue, want := range map[string]diff.State{
		"80b09587a1ebaaea310a70726f63657373696e67": diff.Processing,
		"80b09587a1ebaaea3100":                     "",
		"80b09587a1ebaaea3183":                     diff.Processing,
		"80b09587a1ebaaea31":                       "",
	} {
		v, _ := hex.DecodeString(hexValue)
		gt, gst, gread, err := decodeOpen(v)
		if err != nil || !gt.Equal(t0) || gst != want || !gread.IsZero() {
			t.Errorf("earlier release's open value %s: %s, %q, %v, %v; want %s, %q and no read time", hexValue, gt, gst, gread, err, t0, want)
		}
	}
	for _, bad := range [][]byte{{0x02, 0x80}, {0x02, 0x8a}, {0x02, 0x81, 0x81}, {0x02, 0x05, 'a'}} {
		if _, _, _, err := decodeOpen(bad); err == nil {
			t.Errorf("open value %x decoded", bad)
		}
	}
	// A value cut short within a time fails, naming what was cut.
	v, err := encodeOpen(t0, diff.Processing, read)
	if err != nil {
		t.Fatal(err)
	}
	created := len(binary.AppendVarint(nil, t0.UnixNano()))
	for _, c := range []struct {
		n    int
		want string
	}{{created - 1, "truncated value"}, {created + 3, "last read: truncated value"}, {len(v) - 2, "last read: truncated value"}} {
		_, _, _, err := decodeOpen(v[:c.n])
		if err == nil || err.Error() != c.want {
			t.Errorf("open value %x cut to %d bytes: %v, want error %q", v, c.n, err, c.want)
		}
	}
	if _, err := DecodeOpen("id", v[:created+3]); err == nil {
		t.Error("DecodeOpen of a truncated value succeeded")
	}
}

func TestWithLastRead(t *testing.T) {
	r := codectest.Plain("p", t0, "PROCESSING", diff.Processing, false)
	v, err := AppendOpen(nil, &r, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	t1 := t0.Add(time.Minute)
	v1, changed, err := WithLastRead(v, t1)
	if err != nil || !changed {
		t.Fatalf("WithLastRead of a value without a read time: %v, %v", changed, err)
	}
	if it, err := DecodeOpen("p", v1); err != nil || it != (OpenItem{ID: "p", CreatedAt: t0, State: diff.Processing, LastRead: t1}) {
		t.Errorf("after WithLastRead: %+v, %v", it, err)
	}
	for _, at := range []time.Time{t0, t1, {}} {
		if out, changed, err := WithLastRead(v1, at); err != nil || changed || out != nil {
			t.Errorf("WithLastRead(%v) of a value read at %v: %x, %v, %v; want it left as it is", at, t1, out, changed, err)
		}
	}
	v2, changed, err := WithLastRead(v1, t1.Add(time.Nanosecond))
	if it, _ := DecodeOpen("p", v2); err != nil || !changed || !it.LastRead.Equal(t1.Add(time.Nanosecond)) {
		t.Errorf("WithLastRead of a later time: %+v, %v, %v", it, changed, err)
	}
	if _, _, err := WithLastRead(v1[:len(v1)-2], t1.Add(time.Hour)); err == nil {
		t.Error("WithLastRead of a truncated value succeeded")
	}
}

func FuzzDecodeOpen(f *testing.F) {
	for _, st := range []diff.State{"", diff.Pending, "odd"} {
		for _, read := range []time.Time{{}, t0.Add(time.Hour)} {
			v, err := encodeOpen(t0, st, read)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(v)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		created, st, read, err := decodeOpen(b)
		if err != nil {
			return
		}
		enc, err := encodeOpen(created, st, read)
		if err != nil {
			t.Fatalf("decoded open value does not encode: %v", err)
		}
		c2, st2, r2, err := decodeOpen(enc)
		if err != nil || !c2.Equal(created) || st2 != st || !r2.Equal(read) {
			t.Fatalf("round trip of %x changed it: %v %q %v, %v; want %v %q %v", b, c2, st2, r2, err, created, st, read)
		}
	})
}

func BenchmarkDecodeRecord(b *testing.B) {
	r := codectest.IDForms()
	enc := mustEncode(b, &r)
	b.ReportAllocs()
	b.SetBytes(int64(len(enc)))
	for b.Loop() {
		if _, err := decodeRecord(r.ID, enc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeRecord(b *testing.B) {
	r := codectest.Rich()
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = encodeRecord(buf[:0], &r); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(buf)))
}
