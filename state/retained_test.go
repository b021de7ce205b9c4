package state

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/payments-watcher/watcher/event"
)

// TestAckedCompressed: a retained value stores its entry compressed, decodes to the
// entry it was given, keeps its payload when restamped, and version 1 values still
// decode.
func TestAckedCompressed(t *testing.T) {
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	m := event.Message{ID: "evt-1", Subject: "payments.circle.payment",
		Body: []byte(strings.Repeat(`{"type":"payment.completed","data":{"status":"COMPLETED"}},`, 25))}
	entry, err := EncodeEntry(at, &m)
	if err != nil {
		t.Fatal(err)
	}
	a := Ack{Seq: 3, At: at.Add(time.Second), StreamSeq: 42, Duplicate: true}
	v, err := EncodeAcked(a, entry)
	if err != nil {
		t.Fatal(err)
	}
	if len(v) >= len(entry)/2 {
		t.Errorf("retained value of %d bytes for an entry of %d: not compressed", len(v), len(entry))
	}
	check := func(name string, v []byte, want Ack) {
		t.Helper()
		e, err := DecodeAcked(3, v)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if e.Msg.ID != m.ID || e.Msg.Subject != m.Subject || !bytes.Equal(e.Msg.Body, m.Body) || !e.Enqueued.Equal(at) ||
			e.StreamSeq != want.StreamSeq || e.Duplicate != want.Duplicate || !e.Acked.Equal(want.At) {
			t.Errorf("%s: decoded %+v", name, e)
		}
		h, err := AckedHeader(v)
		if err != nil || h.StreamSeq != want.StreamSeq || !h.Acked.Equal(want.At) {
			t.Errorf("%s: header %+v, %v", name, h, err)
		}
	}
	check("version 3", v, a)

	b := Ack{Seq: 3, At: at.Add(time.Hour), StreamSeq: 77}
	re, err := RestampAcked(b, v)
	if err != nil {
		t.Fatal(err)
	}
	check("restamped", re, b)

	// Version 2: the entry compressed without the dictionary.
	plain, err := zstd.NewWriter(nil, zstd.WithEncoderCRC(false))
	if err != nil {
		t.Fatal(err)
	}
	v2, err := appendAckHeader(nil, ackedV2, a)
	if err != nil {
		t.Fatal(err)
	}
	v2 = plain.EncodeAll(entry, v2)
	check("version 2", v2, a)
	if re2, err := RestampAcked(b, v2); err != nil || re2[0] != ackedV2 {
		t.Fatalf("restamped version 2: %v", err)
	} else {
		check("restamped version 2", re2, b)
	}

	// Version 1: the entry as it is after the header.
	v1, err := appendAckHeader(nil, ackedV1, a)
	if err != nil {
		t.Fatal(err)
	}
	v1 = append(v1, entry...)
	check("version 1", v1, a)
	re1, err := RestampAcked(b, v1)
	if err != nil || re1[0] != ackedV1 {
		t.Fatalf("restamped version 1 = version %d, %v", re1[0], err)
	}
	check("restamped version 1", re1, b)

	// Damage gives an error.
	bad := bytes.Clone(v)
	bad[len(bad)-3] ^= 0xff
	if _, err := DecodeAcked(3, bad[:len(bad)-5]); err == nil {
		t.Error("a truncated compressed value decoded")
	}
	if _, err := DecodeAcked(3, []byte{9, 0}); err == nil {
		t.Error("an unknown version decoded")
	}
}

// TestEntryDictFrozen: version 3 values decode only with the dictionary they were
// written with, so it must never change.
func TestEntryDictFrozen(t *testing.T) {
	const want = "0f35be49d8d64f9b6a2391052be17822e4025e297736577c0fab660fba288dd6"
	sum := sha256.Sum256(entryDict)
	if got := hex.EncodeToString(sum[:]); got != want {
		t.Fatalf("retained.dict has sha256 %s, want %s: it is part of the file format; a new dictionary needs a new retained value version", got, want)
	}
}
