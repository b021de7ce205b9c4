package bbolt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"unicode"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
)

// checkPages reads the B+trees of the file behind tx page by page, from its own file
// handle rather than through bbolt, and checks what bbolt trusts without checking
// when it opens a file: that every page is referenced once, lies below the high-water
// mark, identifies itself and is a branch or leaf page, that its elements lie inside
// it, and that the keys of each page are in order and inside the range their parent's
// branch keys give them. bbolt rebuilds its freelist on open by walking the trees with
// a checker that, on the first such problem, panics while another goroutine of its own
// still reads the file; a file that passes here never makes it do that.
//
// It returns the first problem found.
func checkPages(path string, tx *bolt.Tx) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	pageSize := tx.DB().Info().PageSize
	c := &pageChecker{
		r:        f,
		pageSize: pageSize,
		hwm:      uint64(tx.Size()) / uint64(pageSize),
	}
	c.seen = make([]uint64, c.hwm/64+1)
	// Pages 0 and 1 are the meta pages.
	c.seen[0] |= 3
	_, err = c.tree(uint64(tx.Cursor().Bucket().Root()), nil, nil, 0)
	return err
}

// Page layout (bbolt, native byte order): a 16-byte header (id uint64, flags uint16,
// count uint16, overflow uint32), then count 16-byte elements. A branch element is
// (pos uint32, ksize uint32, pgid uint64), a leaf element (flags uint32, pos uint32,
// ksize uint32, vsize uint32); pos is relative to the element. A leaf element whose
// flags have bit 1 is a bucket: its value starts with the bucket's root page id and
// sequence, and a root of 0 means that the bucket's single leaf page follows inline.
const (
	pageHeaderSize   = 16
	pageElementSize  = 16
	bucketHeaderSize = 16
	branchPageFlag   = 0x01
	leafPageFlag     = 0x02
	bucketLeafFlag   = 0x01
	// maxTreeDepth bounds the recursion: B+tree levels of nested buckets.
	maxTreeDepth = 64
)

type pageChecker struct {
	r        io.ReaderAt
	pageSize int
	hwm      uint64
	seen     []uint64 // bit set of referenced pages
	bufs     [][]byte // one read buffer per depth
}

var byteOrder = binary.NativeEndian

// read returns page id with its overflow pages, marking them referenced.
func (c *pageChecker) read(id uint64, depth int) ([]byte, error) {
	if id < 2 || id >= c.hwm {
		return nil, fmt.Errorf("page %d: out of bounds (high-water mark %d)", id, c.hwm)
	}
	for len(c.bufs) <= depth {
		c.bufs = append(c.bufs, make([]byte, c.pageSize))
	}
	buf := c.bufs[depth][:c.pageSize]
	if _, err := c.r.ReadAt(buf, int64(id)*int64(c.pageSize)); err != nil {
		return nil, fmt.Errorf("page %d: %w", id, err)
	}
	if got := byteOrder.Uint64(buf); got != id {
		return nil, fmt.Errorf("page %d: identifies itself as page %d", id, got)
	}
	overflow := uint64(byteOrder.Uint32(buf[12:]))
	if overflow >= c.hwm-id {
		return nil, fmt.Errorf("page %d: %d overflow pages run past the high-water mark %d", id, overflow, c.hwm)
	}
	for p := id; p <= id+overflow; p++ {
		if c.seen[p/64]&(1<<(p%64)) != 0 {
			return nil, fmt.Errorf("page %d: referenced more than once", p)
		}
		c.seen[p/64] |= 1 << (p % 64)
	}
	if overflow > 0 {
		size := int(overflow+1) * c.pageSize
		if cap(c.bufs[depth]) < size {
			c.bufs[depth] = make([]byte, size)
		}
		buf = c.bufs[depth][:size]
		if _, err := c.r.ReadAt(buf, int64(id)*int64(c.pageSize)); err != nil {
			return nil, fmt.Errorf("page %d: %w", id, err)
		}
	}
	return buf, nil
}

// tree checks the tree rooted at page id, whose keys must be >= min (when not nil) and
// < max (when not nil), and returns its largest key (a copy).
func (c *pageChecker) tree(id uint64, min, max []byte, depth int) ([]byte, error) {
	if depth >= maxTreeDepth {
		return nil, fmt.Errorf("page %d: trees nested deeper than %d levels", id, maxTreeDepth)
	}
	p, err := c.read(id, depth)
	if err != nil {
		return nil, err
	}
	flags := byteOrder.Uint16(p[8:])
	count := int(byteOrder.Uint16(p[10:]))
	if pageHeaderSize+count*pageElementSize > len(p) {
		return nil, fmt.Errorf("page %d: %d elements do not fit in it", id, count)
	}
	switch flags {
	case branchPageFlag:
		return c.branch(id, p, count, min, max, depth)
	case leafPageFlag:
		return c.leaf(id, p, count, min, max, depth)
	default:
		return nil, fmt.Errorf("page %d: flags %#x: not a branch or leaf page", id, flags)
	}
}

func (c *pageChecker) branch(id uint64, p []byte, count int, min, max []byte, depth int) ([]byte, error) {
	if count == 0 {
		return nil, fmt.Errorf("page %d: branch page without elements", id)
	}
	running := min
	var last []byte
	for i := range count {
		e := pageHeaderSize + i*pageElementSize
		key, err := element(p, e, byteOrder.Uint32(p[e:]), byteOrder.Uint32(p[e+4:]), 0)
		if err != nil {
			return nil, fmt.Errorf("page %d: element %d: %w", id, i, err)
		}
		if err := keyInRange(key, running, max, i > 0); err != nil {
			return nil, fmt.Errorf("page %d: branch key %d %s: %w", id, i, keyString(key), err)
		}
		next := max
		if i+1 < count {
			ne := e + pageElementSize
			if next, err = element(p, ne, byteOrder.Uint32(p[ne:]), byteOrder.Uint32(p[ne+4:]), 0); err != nil {
				return nil, fmt.Errorf("page %d: element %d: %w", id, i+1, err)
			}
		}
		if last, err = c.tree(byteOrder.Uint64(p[e+8:]), key, next, depth+1); err != nil {
			return nil, err
		}
		running = last
	}
	return last, nil
}

func (c *pageChecker) leaf(id uint64, p []byte, count int, min, max []byte, depth int) ([]byte, error) {
	running := min
	for i := range count {
		e := pageHeaderSize + i*pageElementSize
		eflags := byteOrder.Uint32(p[e:])
		ksize := byteOrder.Uint32(p[e+8:])
		kv, err := element(p, e, byteOrder.Uint32(p[e+4:]), ksize, byteOrder.Uint32(p[e+12:]))
		if err != nil {
			return nil, fmt.Errorf("page %d: element %d: %w", id, i, err)
		}
		key, value := kv[:ksize], kv[ksize:]
		if err := keyInRange(key, running, max, i > 0); err != nil {
			return nil, fmt.Errorf("page %d: key %d %s: %w", id, i, keyString(key), err)
		}
		running = key
		if eflags&bucketLeafFlag == 0 {
			continue
		}
		if len(value) < bucketHeaderSize {
			return nil, fmt.Errorf("page %d: bucket %s: value of %d bytes is shorter than a bucket header", id, keyString(key), len(value))
		}
		if root := byteOrder.Uint64(value); root != 0 {
			if _, err := c.tree(root, nil, nil, depth+1); err != nil {
				return nil, fmt.Errorf("bucket %s: %w", keyString(key), err)
			}
		} else if err := inline(value[bucketHeaderSize:]); err != nil {
			return nil, fmt.Errorf("page %d: inline bucket %s: %w", id, keyString(key), err)
		}
	}
	if count == 0 {
		return nil, nil
	}
	return bytes.Clone(running), nil
}

// inline checks the leaf page held in the value of an inline bucket.
func inline(p []byte) error {
	if len(p) < pageHeaderSize {
		return fmt.Errorf("page of %d bytes", len(p))
	}
	if flags := byteOrder.Uint16(p[8:]); flags != leafPageFlag {
		return fmt.Errorf("flags %#x: not a leaf page", flags)
	}
	count := int(byteOrder.Uint16(p[10:]))
	if pageHeaderSize+count*pageElementSize > len(p) {
		return fmt.Errorf("%d elements do not fit in it", count)
	}
	var prev []byte
	for i := range count {
		e := pageHeaderSize + i*pageElementSize
		if byteOrder.Uint32(p[e:])&bucketLeafFlag != 0 {
			return fmt.Errorf("element %d: a bucket inside an inline bucket", i)
		}
		ksize := byteOrder.Uint32(p[e+8:])
		kv, err := element(p, e, byteOrder.Uint32(p[e+4:]), ksize, byteOrder.Uint32(p[e+12:]))
		if err != nil {
			return fmt.Errorf("element %d: %w", i, err)
		}
		if err := keyInRange(kv[:ksize], prev, nil, i > 0); err != nil {
			return fmt.Errorf("key %d %s: %w", i, keyString(kv[:ksize]), err)
		}
		prev = kv[:ksize]
	}
	return nil
}

// element returns the ksize+vsize bytes at pos from the element at offset e of p.
func element(p []byte, e int, pos, ksize, vsize uint32) ([]byte, error) {
	start := uint64(e) + uint64(pos)
	end := start + uint64(ksize) + uint64(vsize)
	if end > uint64(len(p)) {
		return nil, fmt.Errorf("bytes %d..%d lie outside its page of %d bytes", start, end, len(p))
	}
	return p[start:end], nil
}

var errKeyOrder = errors.New("keys out of order")

// keyInRange checks that key is >= min (> min when strict) and < max; nil bounds are
// open.
func keyInRange(key, min, max []byte, strict bool) error {
	if min != nil {
		switch cmp := bytes.Compare(key, min); {
		case cmp < 0:
			return fmt.Errorf("%w: below %s", errKeyOrder, keyString(min))
		case cmp == 0 && strict:
			return fmt.Errorf("%w: repeats %s", errKeyOrder, keyString(min))
		}
	}
	if max != nil && bytes.Compare(key, max) >= 0 {
		return fmt.Errorf("%w: not below the next branch key %s", errKeyOrder, keyString(max))
	}
	return nil
}

// keyString quotes a key of printable text and writes any other in hex.
func keyString(k []byte) string {
	for _, r := range string(k) {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return fmt.Sprintf("%x", k)
		}
	}
	return strconv.Quote(string(k))
}
