package sim

import (
	"slices"
	"strings"
	"testing"
)

func TestMixIsABijection(t *testing.T) {
	for _, x := range []uint64{0, 1, 2, 1 << 63, ^uint64(0), 0xdeadbeef, golden} {
		if got := unmix64(mix64(x)); got != x {
			t.Errorf("unmix64(mix64(%#x)) = %#x", x, got)
		}
	}
}

func TestUUIDCodecRoundTripsAndRejectsForeignIDs(t *testing.T) {
	a := uuidCodec{key: 11, check: 12}
	b := uuidCodec{key: 21, check: 22}
	seen := map[string]bool{}
	for n := range uint64(5000) {
		id := a.encode(n)
		if len(id) != 36 || id[14] != '4' || !strings.ContainsRune("89ab", rune(id[19])) {
			t.Fatalf("encode(%d) = %q is not a version 4 UUID", n, id)
		}
		if seen[id] {
			t.Fatalf("encode(%d) = %q repeats", n, id)
		}
		seen[id] = true
		if got, ok := a.decode(id); !ok || got != n {
			t.Fatalf("decode(%q) = %d, %v; want %d", id, got, ok, n)
		}
		if got, ok := a.decode(strings.ToUpper(id)); !ok || got != n {
			t.Fatalf("decode(upper %q) = %d, %v", id, got, ok)
		}
		if _, ok := b.decode(id); ok {
			t.Fatalf("another key decoded %q", id)
		}
	}
	for _, bad := range []string{"", "not-a-uuid", "c4d1da72-111e-4d52-bdbf-2e74a2d803d5", "c4d1da72111e4d52bdbf2e74a2d803d5xxxx"} {
		if _, ok := a.decode(bad); ok {
			t.Errorf("decode(%q) succeeded", bad)
		}
	}
}

func TestStripeIDsSortInCreationOrder(t *testing.T) {
	c := newStripeCodec(7)
	var ids []string
	for n := range uint64(3000) {
		id := c.encode("cos_", n)
		if !strings.HasPrefix(id, "cos_1") || len(id) != 4+24 {
			t.Fatalf("encode(%d) = %q", n, id)
		}
		if got, ok := c.decode("cos_", id); !ok || got != n {
			t.Fatalf("decode(%q) = %d, %v; want %d", id, got, ok, n)
		}
		ids = append(ids, id)
	}
	if !slices.IsSorted(ids) {
		t.Error("ids do not sort as text in creation order")
	}
	if _, ok := c.decode("cos_", "cos_1NamBL2eZvKYlo2CP38sZVEW"); ok {
		t.Error("decoded an id the codec did not make")
	}
	if _, ok := newStripeCodec(8).decode("cos_", ids[5]); ok {
		t.Error("a codec with another seed decoded the id")
	}
}
