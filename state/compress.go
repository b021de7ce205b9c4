package state

import (
	_ "embed"
	"fmt"

	"github.com/klauspost/compress/zstd"
)

// maxEntryBytes bounds what decompressing one retained entry may produce, so that a
// damaged value gives an error rather than a huge allocation. An outbox entry holds
// one event of a few kilobytes.
const maxEntryBytes = 16 << 20

// entryDict is the zstd dictionary of retained entries of version 3: the encoded
// outbox entries of twenty events of the supported providers (two of each source and
// kind, as the simulator renders them), used as raw content. Events share most of
// their field names and many values, which a single event, compressed alone, cannot
// exploit: with it the simulator's events (outbox entries of 1.55 KB on average) take
// about 360 bytes each, against about 800 without.
// It is part of the file format: never change it (TestEntryDictFrozen); a new one
// needs a new version and a new id.
//
//go:embed retained.dict
var entryDict []byte

// entryDictID is the dictionary id written in each version 3 frame.
const entryDictID = 1

// The encoder and decoders are shared: EncodeAll and DecodeAll are safe for concurrent
// use. Entries are compressed one by one (each value must decode on its own), without
// a checksum: the state file and the NATS key-value store check their own data.
//
// The encoder is one (concurrent callers take turns: acknowledgements are retained a
// batch at a time) with a 64 KiB window, far above an event's size: it holds 2.7 MiB
// where one encoder per CPU with the default window held 10.7 MiB per CPU, and
// compresses events to the same size.
var (
	zEncoder = mustZstd(zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault),
		zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(64<<10),
		zstd.WithEncoderCRC(false), zstd.WithLowerEncoderMem(true), zstd.WithEncoderDictRaw(entryDictID, entryDict)))
	zDecoder = mustZstd(zstd.NewReader(nil, zstd.WithDecoderConcurrency(0),
		zstd.WithDecoderMaxMemory(maxEntryBytes)))
	zDictDecoder = mustZstd(zstd.NewReader(nil, zstd.WithDecoderConcurrency(0),
		zstd.WithDecoderMaxMemory(maxEntryBytes), zstd.WithDecoderDictRaw(entryDictID, entryDict)))
)

func mustZstd[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprintf("zstd: %v", err))
	}
	return v
}

// compressEntry appends the zstd frame of entry, compressed with entryDict, to b.
func compressEntry(b, entry []byte) []byte { return zEncoder.EncodeAll(entry, b) }

// decompressEntry returns the content of the zstd frame b, in memory of its own;
// withDict tells that b was compressed with entryDict (version 3).
func decompressEntry(b []byte, withDict bool) ([]byte, error) {
	d := zDecoder
	if withDict {
		d = zDictDecoder
	}
	out, err := d.DecodeAll(b, make([]byte, 0, 8*len(b)))
	if err != nil {
		return nil, fmt.Errorf("compressed entry: %w", err)
	}
	return out, nil
}
