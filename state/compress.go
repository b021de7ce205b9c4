package state

import (
	"fmt"

	"github.com/klauspost/compress/zstd"
)

// maxEntryBytes bounds what decompressing one retained entry may produce, so that a
// damaged value gives an error rather than a huge allocation. An outbox entry holds
// one event of a few kilobytes.
const maxEntryBytes = 16 << 20

// The encoder and decoder are shared: EncodeAll and DecodeAll are safe for concurrent
// use. Entries are compressed one by one (each value must decode on its own), without
// a checksum: the state file and the NATS key-value store check their own data.
var (
	zEncoder = mustZstd(zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault),
		zstd.WithEncoderCRC(false), zstd.WithLowerEncoderMem(true)))
	zDecoder = mustZstd(zstd.NewReader(nil, zstd.WithDecoderConcurrency(0),
		zstd.WithDecoderMaxMemory(maxEntryBytes)))
)

func mustZstd[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprintf("zstd: %v", err))
	}
	return v
}

// compressEntry appends the zstd frame of entry to b.
func compressEntry(b, entry []byte) []byte { return zEncoder.EncodeAll(entry, b) }

// decompressEntry returns the content of the zstd frame b, in memory of its own.
func decompressEntry(b []byte) ([]byte, error) {
	out, err := zDecoder.DecodeAll(b, make([]byte, 0, 4*len(b)))
	if err != nil {
		return nil, fmt.Errorf("compressed entry: %w", err)
	}
	return out, nil
}
