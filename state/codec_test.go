package state

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/event"
)

var t0 = time.Date(2026, 11, 22, 10, 0, 3, 120_000_000, time.UTC)

// richRecord has every field set, nested items of several kinds and a state outside
// the normalized set.
func richRecord() diff.Record {
	return diff.Record{
		Kind:        "payment",
		ID:          "c4d1da72-111e-4d52-bdbf-2e74a2d803d5",
		Status:      diff.Status{Raw: "FAILED", State: diff.Failed, Addendum: "IN_MANUAL_REVIEW", Terminal: true},
		Sequence:    7,
		CreatedAt:   time.Date(2023, 1, 1, 12, 4, 5, 0, time.UTC),
		SettleUntil: t0.Add(24 * time.Hour),
		Stalled:     true,
		Nested: []diff.NestedRecord{
			{Kind: "payment_refund", ID: "b8627ae8-732b-4d25-b947-1df8f4007a29", Status: diff.Status{Raw: "CREATED", State: diff.Pending}, Sequence: 1},
			{Kind: "payment_refund", ID: "r2", Status: diff.Status{Raw: "COMPLETED", State: diff.Completed, Terminal: true}, Sequence: 2},
			{Kind: "payment_onchain_transaction", ID: "0x4a2b", Status: diff.Status{Raw: "BROADCASTED", State: diff.Processing}, Sequence: 4294967295},
			{Kind: "payment_rfi", ID: "", Status: diff.Status{Raw: "", State: "not-a-state", Addendum: "x"}, Sequence: 1},
			{Kind: "payment_refund", ID: "r3", Status: diff.Status{Raw: "FAILED", State: diff.Failed, Terminal: true}, Sequence: 1},
		},
	}
}

// plainRecord is a typical top-level item without nested items.
func plainRecord(id string, created time.Time, raw string, state diff.State, terminal bool) diff.Record {
	return diff.Record{
		Kind: "payment", ID: id, Sequence: 1, CreatedAt: created,
		Status: diff.Status{Raw: raw, State: state, Terminal: terminal},
	}
}

func sampleRecords() []diff.Record {
	return []diff.Record{
		richRecord(),
		plainRecord("p1", t0, "CREATED", diff.Pending, false),
		{ID: "zero", Sequence: 1}, // every other field zero: empty strings, zero times, no nested items
		{Kind: "onramp_session", ID: "cos_1", Status: diff.Status{Raw: "weird", State: diff.Unknown}, Sequence: 2,
			CreatedAt: time.Date(1960, 5, 1, 0, 0, 0, 1, time.UTC)}, // before the Unix epoch
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
	for _, r := range sampleRecords() {
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
	r := plainRecord("c4d1da72-111e-4d52-bdbf-2e74a2d803d5", t0, "FIAT_PAYMENT_INITIATED", diff.Processing, false)
	b := mustEncode(t, &r)
	// version, flags, sequence, kind 1+7, raw 1+22, state code, addendum 1, two times of
	// at most 10 bytes, nested count.
	if max := 2 + 1 + 8 + 23 + 1 + 1 + 10 + 1 + 1; len(b) > max {
		t.Errorf("typical record encodes to %d bytes, want at most %d", len(b), max)
	}
	// A nested item repeating its predecessor's kind does not store it again.
	rich := richRecord()
	withRepeat := len(mustEncode(t, &rich))
	rich.Nested[1].Kind = "payment_refunX"
	if withoutRepeat := len(mustEncode(t, &rich)); withoutRepeat-withRepeat != 1+len("payment_refunX") {
		t.Errorf("repeated kind saved %d bytes, want %d", withoutRepeat-withRepeat, 1+len("payment_refunX"))
	}
}

func TestEncodeRecordRejectsUnstorableTime(t *testing.T) {
	r := plainRecord("p", time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC), "CREATED", diff.Pending, false)
	if _, err := encodeRecord(nil, &r); err == nil || !strings.Contains(err.Error(), "created_at") {
		t.Errorf("created_at in 2300: err = %v, want an error naming created_at", err)
	}
	r.CreatedAt, r.SettleUntil = t0, time.Date(1500, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := encodeRecord(nil, &r); err == nil || !strings.Contains(err.Error(), "settle_until") {
		t.Errorf("settle_until in 1500: err = %v, want an error naming settle_until", err)
	}
}

func TestDecodeRecordRejectsDamage(t *testing.T) {
	r := richRecord()
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
}

func TestDecodedRecordSharesNoMemory(t *testing.T) {
	r := richRecord()
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
	for _, r := range sampleRecords() {
		f.Add(mustEncode(f, &r))
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

func BenchmarkEncodeRecord(b *testing.B) {
	r := richRecord()
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
