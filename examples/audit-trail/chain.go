package main

import (
	"crypto/sha256"
	"encoding/binary"
	"time"
)

const hashSize = sha256.Size

// rowHash is the hash of a row of audit_events:
//
//	SHA-256(prev || uint64 big-endian stream_seq || int64 big-endian received_at in
//	        microseconds since the Unix epoch || body)
//
// where prev is the hash of the previous row of the same source (32 zero bytes for
// the first) and body the message exactly as received. Changing, removing or
// reordering any row of a source, or its body, stream sequence or receive time,
// breaks the chain from that row on.
func rowHash(prev []byte, streamSeq uint64, receivedAt time.Time, body []byte) []byte {
	h := sha256.New()
	h.Write(prev)
	var buf [16]byte
	binary.BigEndian.PutUint64(buf[:8], streamSeq)
	binary.BigEndian.PutUint64(buf[8:], uint64(receivedAt.UnixMicro()))
	h.Write(buf[:])
	h.Write(body)
	return h.Sum(nil)
}
