package bbolt

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/state"
)

// OpenReadOnly opens the existing state file at path for reading, for inspection
// while no watcher runs: it never creates, initialises or changes the file, and
// Commit and Delete on the returned Store fail. Several read-only Stores may share a
// file, but none can open it while a Store from Open holds it: OpenReadOnly then fails
// with ErrLocked after timeout (default 2s when 0 or less).
//
// Like Open, it reads every page of the file's trees first, so that a truncated or
// damaged file gives an ErrCorrupt error instead of ending the process, and it refuses
// a file of another SchemaVersion. Every error names the file.
func OpenReadOnly(path string, timeout time.Duration) (*Store, error) {
	if path == "" {
		return nil, errors.New("state file: empty path")
	}
	if timeout <= 0 {
		timeout = defaultLockTimeout
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	if fi.Size() == 0 {
		return nil, fmt.Errorf("state file %s is empty: no watcher has written it yet", path)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: timeout})
	if err != nil {
		return nil, openError(path, err)
	}
	if err := verify(path, db); err != nil {
		_ = db.Close()
		return nil, err
	}
	if err := db.View(func(tx *bolt.Tx) error { return checkLayout(path, tx) }); err != nil {
		_ = db.Close()
		return nil, err
	}
	return &Store{path: path, db: guarded{db}, changed: make(chan struct{}, 1)}, nil
}

// checkLayout checks, without writing, that tx's file has the layout of this schema.
func checkLayout(path string, tx *bolt.Tx) error {
	meta := tx.Bucket(metaBucket)
	if meta == nil {
		if other, _ := tx.Cursor().First(); other != nil {
			return corruptError(path, fmt.Errorf("it has a bucket %q but no schema version", other))
		}
		return fmt.Errorf("state file %s holds no watcher data yet: no watcher has completed its start on it", path)
	}
	if err := checkSchema(path, meta); err != nil {
		return err
	}
	for _, name := range [][]byte{sourcesBucket, outboxBucket} {
		if tx.Bucket(name) == nil {
			return corruptError(path, fmt.Errorf("bucket %s is missing", name))
		}
	}
	return nil
}

// SourceStats summarises one source of a state file.
type SourceStats struct {
	// Items counts the stored records, Open the entries of the open index, Stalled the
	// records marked stalled (open past open_max_age, no longer re-read).
	Items, Open, Stalled int
	Meta                 state.Meta
}

// Stats returns the counts and the metadata of source in one read transaction; the
// zero SourceStats for a source never committed to. It reads every record of the
// source (a flag byte of each), so it takes time in proportion to the source's size.
func (s *Store) Stats(source string) (SourceStats, error) {
	var st SourceStats
	err := s.db.View(func(tx *bolt.Tx) error {
		src := tx.Bucket(sourcesBucket).Bucket([]byte(source))
		if src == nil {
			return nil
		}
		if v := src.Get(metaKey); v != nil {
			m, err := state.DecodeMeta(v)
			if err != nil {
				return fmt.Errorf("meta: %w", err)
			}
			st.Meta = m
		}
		if open := src.Bucket(openBucket); open != nil {
			st.Open = open.Stats().KeyN
		}
		items := src.Bucket(itemsBucket)
		if items == nil {
			return nil
		}
		return items.ForEach(func(k, v []byte) error {
			stalled, err := state.RecordStalled(v)
			if err != nil {
				return fmt.Errorf("record %q: %w", k, err)
			}
			st.Items++
			if stalled {
				st.Stalled++
			}
			return nil
		})
	})
	if err != nil {
		return SourceStats{}, fmt.Errorf("state file %s: stats of source %q: %w", s.path, source, err)
	}
	return st, nil
}

// Records returns up to max records of source whose ids sort after after, in id order,
// in one short read transaction: pass "" to start and the last id returned to page on.
// Unlike ForEach, paging through a large source this way never holds a transaction
// open while the caller works. max must be positive.
func (s *Store) Records(source, after string, max int) ([]diff.Record, error) {
	if max <= 0 {
		return nil, fmt.Errorf("state file %s: records of source %q: max %d is not positive", s.path, source, max)
	}
	var out []diff.Record
	err := s.db.View(func(tx *bolt.Tx) error {
		items := sourceBucket(tx, source, itemsBucket)
		if items == nil {
			return nil
		}
		c := items.Cursor()
		k, v := c.Seek([]byte(after))
		if k != nil && after != "" && string(k) == after {
			k, v = c.Next()
		}
		for ; k != nil && len(out) < max; k, v = c.Next() {
			r, err := state.DecodeRecord(string(k), v)
			if err != nil {
				return fmt.Errorf("record %q: %w", k, err)
			}
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("state file %s: records of source %q: %w", s.path, source, err)
	}
	return out, nil
}

// maxCheckProblems bounds the problems Check lists; a badly damaged file has many.
const maxCheckProblems = 100

// Check checks the whole file: the soundness of its trees as Open checks it, then
// bbolt's consistency check (tx.Check: every page reachable once or free, none both,
// keys in order in every bucket). It returns nil, or an error wrapping ErrCorrupt that
// names the file and lists each problem on a line of its own (at most 100). It reads
// the whole file.
func (s *Store) Check() (err error) {
	var problems []string
	more := 0
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = corruptError(s.path, fmt.Errorf("reading it failed: %v", r))
		}
	}()
	err = s.db.View(func(tx *bolt.Tx) error {
		if err := checkPages(s.path, tx); err != nil {
			// tx.Check could end the process on such a file (see checkPages).
			problems = append(problems, err.Error())
			return nil
		}
		for p := range tx.Check() {
			if len(problems) < maxCheckProblems {
				problems = append(problems, p.Error())
			} else {
				more++
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("state file %s: check: %w", s.path, err)
	}
	if len(problems) == 0 {
		return nil
	}
	total := len(problems) + more
	if more > 0 {
		problems = append(problems, fmt.Sprintf("and %d more", more))
	}
	return fmt.Errorf("state file %s is %w: the consistency check found %d problem(s):\n%s",
		s.path, ErrCorrupt, total, strings.Join(problems, "\n"))
}
