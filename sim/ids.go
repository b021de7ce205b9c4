package sim

import (
	"encoding/hex"
	"strings"
)

// Identifiers are not stored: an item's id is a keyed bijection of its position in its
// provider's creation order (its sequence number), so an id decodes back to the
// sequence number without an index, and every derived field of an item (references,
// addresses, amounts) is a hash of the same sequence number.

// The splitmix64 finalizer is a bijection on uint64; unmix64 is its inverse.
const (
	mixC1  = 0xbf58476d1ce4e5b9
	mixC2  = 0x94d049bb133111eb
	golden = 0x9e3779b97f4a7c15
)

var mixC1Inv, mixC2Inv = modInverse(mixC1), modInverse(mixC2)

// modInverse returns the inverse of the odd number c modulo 2^64 (Newton's iteration
// doubles the number of correct low bits each round).
func modInverse(c uint64) uint64 {
	x := c
	for range 6 {
		x *= 2 - c*x
	}
	return x
}

func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= mixC1
	x ^= x >> 27
	x *= mixC2
	x ^= x >> 31
	return x
}

func unmix64(x uint64) uint64 {
	x ^= x>>31 ^ x>>62
	x *= mixC2Inv
	x ^= x>>27 ^ x>>54
	x *= mixC1Inv
	x ^= x>>30 ^ x>>60
	return x
}

// uuidCodec maps sequence numbers to version-4-shaped UUIDs and back, under a key.
// 64 bits of the UUID carry mix64(seq+key); the remaining free bits are a check hash
// of those, so a UUID that was not produced by the codec (or by another key) is
// rejected.
type uuidCodec struct {
	key, check uint64
}

func (c uuidCodec) bytes(n uint64) [16]byte {
	v := mix64(n + c.key)
	h := mix64(v ^ c.check)
	var b [16]byte
	for i := range 6 {
		b[i] = byte(v >> (56 - 8*i))
	}
	b[6] = 0x40 | byte(h&0x0f)
	b[7] = byte(h >> 8)
	b[8] = 0x80 | byte(h>>16)&0x3f
	b[9] = byte(h >> 24)
	b[10] = byte(v >> 8)
	b[11] = byte(v)
	for i := range 4 {
		b[12+i] = byte(h >> (32 + 8*i))
	}
	return b
}

// encode returns the canonical lower-case text of n's UUID.
func (c uuidCodec) encode(n uint64) string {
	return formatUUID(c.bytes(n))
}

// decode returns the number whose UUID is s, or false when s is not one.
func (c uuidCodec) decode(s string) (uint64, bool) {
	b, ok := parseUUID(s)
	if !ok {
		return 0, false
	}
	var v uint64
	for i := range 6 {
		v |= uint64(b[i]) << (56 - 8*i)
	}
	v |= uint64(b[10])<<8 | uint64(b[11])
	n := unmix64(v) - c.key
	if c.bytes(n) != b {
		return 0, false
	}
	return n, true
}

func formatUUID(b [16]byte) string {
	var buf [36]byte
	hex.Encode(buf[0:8], b[0:4])
	buf[8] = '-'
	hex.Encode(buf[9:13], b[4:6])
	buf[13] = '-'
	hex.Encode(buf[14:18], b[6:8])
	buf[18] = '-'
	hex.Encode(buf[19:23], b[8:10])
	buf[23] = '-'
	hex.Encode(buf[24:36], b[10:16])
	return string(buf[:])
}

// parseUUID accepts the 8-4-4-4-12 hex form in either case.
func parseUUID(s string) ([16]byte, bool) {
	var b [16]byte
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return b, false
	}
	h := strings.ToLower(s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36])
	if _, err := hex.Decode(b[:], []byte(h)); err != nil {
		return b, false
	}
	return b, true
}

// base62 digits in ASCII order, so that fixed-width base-62 numbers sort as text.
const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// Stripe ids look like Stripe's own ("cos_1NamBL2eZvKYlo2CP38sZVEW": a "1", then a
// part that grows with time, then random characters). Here the growing part is the
// sequence number plus a seed-dependent offset in 7 base-62 digits, so ids sort as
// text in creation order, which is the list's tie-break for equal `created` seconds.
const (
	stripeSeqDigits  = 7
	stripeRandDigits = 16
	stripeSeqSpace   = 62 * 62 * 62 * 62 * 62 * 62 * 62 // 62^7
)

type stripeCodec struct {
	offset, key uint64
}

func newStripeCodec(seed uint64) stripeCodec {
	return stripeCodec{offset: mix64(seed^0x5717) % (stripeSeqSpace / 2), key: mix64(seed ^ 0xc05)}
}

func (c stripeCodec) encode(prefix string, n uint64) string {
	var b strings.Builder
	b.Grow(len(prefix) + 1 + stripeSeqDigits + stripeRandDigits)
	b.WriteString(prefix)
	b.WriteByte('1')
	v := n + c.offset
	var digits [stripeSeqDigits]byte
	for i := stripeSeqDigits - 1; i >= 0; i-- {
		digits[i] = base62[v%62]
		v /= 62
	}
	b.Write(digits[:])
	d := deriver{x: mix64(n ^ c.key)}
	for range stripeRandDigits {
		b.WriteByte(base62[d.next()%62])
	}
	return b.String()
}

func (c stripeCodec) decode(prefix, s string) (uint64, bool) {
	if len(s) != len(prefix)+1+stripeSeqDigits+stripeRandDigits || !strings.HasPrefix(s, prefix) || s[len(prefix)] != '1' {
		return 0, false
	}
	var v uint64
	for _, ch := range []byte(s[len(prefix)+1 : len(prefix)+1+stripeSeqDigits]) {
		i := strings.IndexByte(base62, ch)
		if i < 0 {
			return 0, false
		}
		v = v*62 + uint64(i)
	}
	if v < c.offset {
		return 0, false
	}
	n := v - c.offset
	if c.encode(prefix, n) != s {
		return 0, false
	}
	return n, true
}

// deriver is a splitmix64 stream: the source of every field of an item that never
// changes once the item exists. Seeded from (sim seed, provider, sequence number, salt),
// it needs no storage and costs nothing until a field is rendered.
type deriver struct {
	x uint64
}

func (d *deriver) next() uint64 {
	d.x += golden
	return mix64(d.x)
}

// intn returns a number in [0, n); n must be positive.
func (d *deriver) intn(n int) int {
	return int(d.next() % uint64(n))
}

// between returns a number in [lo, hi].
func (d *deriver) between(lo, hi int64) int64 {
	return lo + int64(d.next()%uint64(hi-lo+1))
}

func (d *deriver) pick(s []string) string {
	return s[d.intn(len(s))]
}

func (d *deriver) hex(n int) string {
	const digits = "0123456789abcdef"
	b := make([]byte, n)
	for i := range b {
		b[i] = digits[d.next()&15]
	}
	return string(b)
}

// base58 uses Bitcoin's alphabet (Solana addresses and signatures).
func (d *deriver) base58(n int) string {
	const digits = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
	b := make([]byte, n)
	for i := range b {
		b[i] = digits[d.next()%58]
	}
	return string(b)
}

func (d *deriver) alnum(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = base62[d.next()%62]
	}
	return string(b)
}

func (d *deriver) uuid() string {
	var b [16]byte
	for i := 0; i < 16; i += 8 {
		v := d.next()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	b[6] = 0x40 | b[6]&0x0f
	b[8] = 0x80 | b[8]&0x3f
	return formatUUID(b)
}
