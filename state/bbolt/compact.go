package bbolt

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// FileStats returns the size of the state file and the bytes of its free pages:
// pages bbolt keeps for reuse (free or pending release) but never returns to the file
// system. Their sum with the live data is the file; Compact gives the free pages back.
func (s *Store) FileStats() (size, free int64, err error) {
	fi, err := os.Stat(s.path)
	if err != nil {
		return 0, 0, fmt.Errorf("state file %s: %w", s.path, err)
	}
	st := s.db.Stats()
	page := int64(s.db.Info().PageSize)
	return fi.Size(), int64(st.FreePageN+st.PendingPageN) * page, nil
}

// CompactOptions tune Compact; zero values take the defaults.
type CompactOptions struct {
	// LockTimeout bounds the wait for the file's lock; default 2s. A running watcher
	// holds it, so Compact then fails with ErrLocked.
	LockTimeout time.Duration
	// FreeSpace returns the bytes an unprivileged user may still write on the file
	// system holding dir; nil reads it with statfs.
	FreeSpace func(dir string) (int64, error)
	// Check, when not nil, is an extra verification of a new file (path), run after
	// the built-in one, before and after the swap.
	Check func(path string) error
	// KeepBackup keeps the old file as <path>.bak after a successful compaction.
	KeepBackup bool
}

// CompactResult describes a compaction.
type CompactResult struct {
	// Before and After are the file's sizes.
	Before, After int64
	// Live is the size of the data the old file held (its size less its free pages).
	Live int64
	// Keys is the number of keys copied, in every bucket.
	Keys int
	// Backup is the old file's path when it was kept, else "".
	Backup string
}

// compactMargin is what Compact wants free beyond the live data: bbolt grows a new
// file in steps, and the file system needs room for its own blocks.
func compactMargin(live int64) int64 { return max(live/10, 16<<20) }

// compactTxSize is how much Compact copies per write transaction.
const compactTxSize = 64 << 20

// Compact rewrites the state file at path without its free pages. It needs the file to
// itself: it fails with ErrLocked while a watcher runs, and holds the lock throughout
// so that none starts meanwhile. It refuses, naming both figures, when the file
// system has less free space than the live data plus a margin.
//
// It copies every bucket and key into <path>.compact (bbolt's Compact), verifies the
// copy (its pages are sound and it holds the same keys and values: counts and a hash
// in key order equal, then opt.Check), renames the old file to <path>.bak, renames the
// copy to path, syncs the directory, and verifies the file at path again. Only then
// is <path>.bak removed (kept with opt.KeepBackup). A failure before the swap removes
// the copy and leaves the file as it was; a failure after it leaves <path>.bak, which
// the error names.
func Compact(path string, opt CompactOptions) (CompactResult, error) {
	if opt.LockTimeout <= 0 {
		opt.LockTimeout = defaultLockTimeout
	}
	if opt.FreeSpace == nil {
		opt.FreeSpace = freeSpace
	}
	fi, err := os.Stat(path)
	if err != nil {
		return CompactResult{}, fmt.Errorf("state file %s: %w", path, err)
	}
	if err := check(path, opt.LockTimeout); err != nil {
		return CompactResult{}, err
	}
	src, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opt.LockTimeout, FreelistType: bolt.FreelistMapType, NoFreelistSync: true})
	if err != nil {
		return CompactResult{}, openError(path, err)
	}
	defer src.Close()
	r := CompactResult{Before: fi.Size(), Live: liveBytes(src)}
	if err := roomFor(path, r.Live, opt.FreeSpace); err != nil {
		return r, err
	}
	want, err := digest(src)
	if err != nil {
		return r, fmt.Errorf("state file %s: read: %w", path, err)
	}
	r.Keys = want.keys
	tmp, bak := path+".compact", path+".bak"
	if err := copyCompact(src, tmp); err != nil {
		_ = os.Remove(tmp)
		return r, fmt.Errorf("state file %s: compact into %s: %w", path, tmp, err)
	}
	if err := verifyCopy(tmp, want, opt.Check); err != nil {
		_ = os.Remove(tmp)
		return r, fmt.Errorf("state file %s: the compacted copy failed verification, the file is unchanged: %w", path, err)
	}
	if err := swap(path, tmp, bak); err != nil {
		return r, err
	}
	if err := verifyCopy(path, want, opt.Check); err != nil {
		return r, fmt.Errorf("state file %s: the compacted file failed verification after the swap: %w; the old file is %s: stop anything using the state, then move it back (mv %s %s)",
			path, err, bak, bak, path)
	}
	if fi, err := os.Stat(path); err == nil {
		r.After = fi.Size()
	}
	if opt.KeepBackup {
		r.Backup = bak
		return r, nil
	}
	if err := os.Remove(bak); err != nil {
		r.Backup = bak
		return r, fmt.Errorf("state file %s compacted, but removing the old file %s failed: %w", path, bak, err)
	}
	return r, nil
}

// liveBytes is the size of db's data: its pages less the free and pending ones.
func liveBytes(db *bolt.DB) int64 {
	st := db.Stats()
	page := int64(db.Info().PageSize)
	var size int64
	_ = db.View(func(tx *bolt.Tx) error {
		size = tx.Size()
		return nil
	})
	return max(size-int64(st.FreePageN+st.PendingPageN)*page, 0)
}

// roomFor returns an error naming both figures when the file system holding path has
// less free space than live plus compactMargin.
func roomFor(path string, live int64, free func(string) (int64, error)) error {
	avail, err := free(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("state file %s: free space of %s: %w", path, filepath.Dir(path), err)
	}
	if need := live + compactMargin(live); avail < need {
		return fmt.Errorf("state file %s: not compacting: %s has %d bytes free, and the compacted copy needs %d (live data %d plus a margin of %d)",
			path, filepath.Dir(path), avail, need, live, compactMargin(live))
	}
	return nil
}

// copyCompact writes every bucket and key of src into a new file at dst, synced.
func copyCompact(src *bolt.DB, dst string) error {
	if err := os.Remove(dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	db, err := bolt.Open(dst, 0o600, &bolt.Options{FreelistType: bolt.FreelistMapType, NoFreelistSync: true})
	if err != nil {
		return err
	}
	if err := bolt.Compact(db, src, compactTxSize); err != nil {
		_ = db.Close()
		return err
	}
	if err := db.Sync(); err != nil {
		_ = db.Close()
		return err
	}
	return db.Close()
}

// contents summarises a file's data: the number of keys (bucket names included) and
// a hash of every bucket path, key and value in key order.
type contents struct {
	keys int
	hash uint64
}

// digest reads every bucket and key of db.
func digest(db *bolt.DB) (contents, error) {
	var c contents
	h := fnv.New64a()
	err := db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return digestBucket(h, &c, [][]byte{name}, b)
		})
	})
	c.hash = h.Sum64()
	return c, err
}

func digestBucket(h interface{ Write([]byte) (int, error) }, c *contents, path [][]byte, b *bolt.Bucket) error {
	prefix := bytes.Join(path, []byte{0})
	return b.ForEach(func(k, v []byte) error {
		c.keys++
		for _, part := range [][]byte{prefix, k, v} {
			_, _ = h.Write(fmt.Appendf(nil, "%d:", len(part)))
			_, _ = h.Write(part)
		}
		if v != nil {
			return nil
		}
		return digestBucket(h, c, append(path[:len(path):len(path)], k), b.Bucket(k))
	})
}

// verifyCopy opens the file at path, checks its pages and trees, compares its
// contents with want, then runs extra (when not nil).
func verifyCopy(path string, want contents, extra func(string) error) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: defaultLockTimeout})
	if err != nil {
		return openError(path, err)
	}
	defer db.Close()
	if err := verify(path, db); err != nil {
		return err
	}
	got, err := digest(db)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("it holds %d keys (hash %x), the original %d (hash %x)", got.keys, got.hash, want.keys, want.hash)
	}
	if extra != nil {
		return extra(path)
	}
	return nil
}

// swap renames path to bak and tmp to path, then syncs their directory.
func swap(path, tmp, bak string) error {
	if err := os.Rename(path, bak); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("state file %s: keep the old file as %s: %w", path, bak, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		if rerr := os.Rename(bak, path); rerr != nil {
			return fmt.Errorf("state file %s: put the compacted copy %s in place: %w; and moving the old file back from %s failed: %v", path, tmp, err, bak, rerr)
		}
		return fmt.Errorf("state file %s: put the compacted copy %s in place: %w; the old file is back", path, tmp, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("state file %s: sync directory after the swap: %w", path, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
