// Package bbolt is the state back end of a single watcher: everything package state
// defines (per source, the snapshot of every tracked item, the open index and the
// metadata; the outbox of events not yet acknowledged by JetStream) kept in one local
// bbolt file.
//
// A page of observations is committed in one write transaction (snapshot records and
// outbox messages together), so an event exists in the outbox exactly when the record
// that produced it is stored: a crash loses neither and duplicates neither.
//
// # Contexts
//
// The methods the poller and the publisher call (Load, Commit, Meta, OpenItems,
// OutboxStats, ForEach, Pending, Delete, Ack, Retained, Prune) take a context so that
// this Store satisfies the same interfaces as the NATS back end, and ignore it: bbolt
// calls are local and short, and a call once started runs to its end. In particular a
// Commit made after its caller's context was cancelled (the page in hand at shutdown)
// is still stored whole.
package bbolt

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the layout version written to new files; Open refuses a file
// written with another one.
const SchemaVersion = 1

// Options tune Open.
type Options struct {
	// LockTimeout bounds the wait for the file lock held by another process; default 2s.
	LockTimeout time.Duration
	// NoSync disables fsync (benchmarks/tests only).
	NoSync bool
	// MaxSize, when positive, bounds the file's size in bytes: a Commit that would
	// grow it further fails and changes nothing, as when the disk is full.
	MaxSize int
}

// Store is an open state file. It is safe for concurrent use; only one Store (in any
// process) can have a given file open at a time.
type Store struct {
	path     string
	db       guarded
	changed  chan struct{}
	warnings []string
	group    committer // write transactions shared by concurrent writers (snapshot.go)
}

// Errors that Open wraps, for callers that react to them.
var (
	// ErrLocked means another process (or another Store) has the file open.
	ErrLocked = errors.New("locked by another process")
	// ErrCorrupt means the file is damaged or is not a watcher state file.
	ErrCorrupt = errors.New("damaged or not a watcher state file")
)

// Layout, schema version 1:
//
//	meta/schema                     SchemaVersion, in decimal
//	sources/<name>/items/<id>       encoded diff.Record (codec.go)
//	sources/<name>/open/<id>        the open index: the item's CreatedAt, last read time and open state (state.DecodeOpen)
//	sources/<name>/meta             encoded Meta (a key, not a bucket)
//	outbox/<8-byte big-endian seq>  encoded OutboxEntry; seq from NextSequence
//	acked/<8-byte big-endian seq>   acknowledged entries kept for re-publishing (outbox.go)
var (
	metaBucket    = []byte("meta")
	sourcesBucket = []byte("sources")
	outboxBucket  = []byte("outbox")
	itemsBucket   = []byte("items")
	openBucket    = []byte("open")
	metaKey       = []byte("meta")
	schemaKey     = []byte("schema")
)

// layoutDepth is the deepest bucket nesting of the layout (sources/<name>/items).
const layoutDepth = 3

const defaultLockTimeout = 2 * time.Second

// Open opens the state file at path, creating it (mode 0600) and its missing
// directories (mode 0700) if needed. It changes the mode of nothing that exists; an
// existing file that other users may read is noted in Warnings.
//
// It fails with ErrLocked within about opt.LockTimeout when another process holds
// the file, with ErrCorrupt when the file is truncated, damaged or not a watcher state
// file, and with a message naming both versions when the file has another
// SchemaVersion. Every error names the file.
//
// Opening an existing file reads every page of its trees once, which takes time in
// proportion to its size: bbolt itself scans the file on open (its freelist is not
// stored, see NoFreelistSync), and does so where a damaged page would crash the
// process; checking first turns that into an error.
func Open(path string, opt Options) (*Store, error) {
	if path == "" {
		return nil, errors.New("state file: empty path")
	}
	timeout := opt.LockTimeout
	if timeout <= 0 {
		timeout = defaultLockTimeout
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("state file %s: create directory: %w", path, err)
	}
	if err := check(path, timeout); err != nil {
		return nil, err
	}
	db, err := open(path, timeout, opt)
	if err != nil {
		return nil, err
	}
	s := &Store{path: path, db: guarded{db}, changed: make(chan struct{}, 1)}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 && runtime.GOOS != "windows" {
		s.warnings = append(s.warnings, fmt.Sprintf("state file %s has mode %04o, so other users may read the payment data in it; chmod 600 it",
			path, fi.Mode().Perm()))
	}
	return s, nil
}

// Warnings are problems Open noticed that do not stop the Store from working.
func (s *Store) Warnings() []string { return s.warnings }

// Path returns the file's path as given to Open.
func (s *Store) Path() string { return s.path }

// Close closes the file, waiting for running transactions.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("state file %s: close: %w", s.path, err)
	}
	return nil
}

func lockedError(path string) error {
	return fmt.Errorf("state file %s is %w (is another watcher running?)", path, ErrLocked)
}

func corruptError(path string, cause error) error {
	return fmt.Errorf("state file %s is %w: %w", path, ErrCorrupt, cause)
}

// guarded is a Store's bbolt handle. Its View and Update turn a fault on the file's
// memory map (the file was cut short under the Store) and a panic raised by bbolt
// (its assertions on a damaged page) into an ErrCorrupt error, which the Store's
// methods wrap with the file's name: damage done after Open checked the file fails
// the operation, not the process. Any other panic, such as one in a callback, is not
// bbolt's and goes on.
type guarded struct {
	*bolt.DB
}

// View runs fn in a read transaction; see guarded.
func (g guarded) View(fn func(*bolt.Tx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer g.recover(&err)
	return g.DB.View(fn)
}

// Update runs fn in a write transaction; see guarded. bbolt rolls the transaction
// back before the panic reaches here.
func (g guarded) Update(fn func(*bolt.Tx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer g.recover(&err)
	return g.DB.Update(fn)
}

func (g guarded) recover(err *error) {
	r := recover()
	if r == nil {
		return
	}
	if _, fault := r.(interface{ Addr() uintptr }); !fault && !raisedInBolt() {
		panic(r)
	}
	*err = fmt.Errorf("the file is %w: reading it failed: %v", ErrCorrupt, r)
}

// raisedInBolt reports whether the panic being recovered was raised in bbolt's code:
// whether the first frame below the runtime's panic machinery is bbolt's.
func raisedInBolt() bool {
	pcs := make([]uintptr, 64)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(3, pcs)])
	panicking := false
	for {
		f, more := frames.Next()
		switch {
		case f.Function == "runtime.gopanic":
			panicking = true
		case panicking && !strings.HasPrefix(f.Function, "runtime."):
			return strings.HasPrefix(f.Function, "go.etcd.io/bbolt")
		}
		if !more {
			return false
		}
	}
}

// openError classifies an error from bolt.Open.
func openError(path string, err error) error {
	var errno syscall.Errno
	var pathErr *fs.PathError
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return lockedError(path)
	case errors.As(err, &pathErr), errors.As(err, &errno):
		return fmt.Errorf("state file %s: %w", path, err)
	default:
		return corruptError(path, err)
	}
}

// check inspects an existing, non-empty file read-only before bbolt opens it for
// writing: that open walks the file in a goroutine of its own, where bbolt's assertion
// on a damaged page, or a fault on a page past the end of a truncated file, ends the
// process. Here the same pages are read with faults turned into panics, and panics
// into errors.
func check(path string, timeout time.Duration) error {
	if fi, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) || (err == nil && fi.Size() == 0) {
		return nil // bbolt initialises it
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: timeout})
	if err != nil {
		return openError(path, err)
	}
	defer db.Close()
	return verify(path, db)
}

// verify checks that the file is as long as its pages need and that its trees are
// sound (checkPages), then reads every page of db's trees down to layoutDepth through
// bbolt with faults turned into panics and panics into errors. db must hold the file's
// lock.
func verify(path string, db *bolt.DB) (err error) {
	fi, err := os.Stat(path) // again, now that the lock is held
	if err != nil {
		return fmt.Errorf("state file %s: %w", path, err)
	}

	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = corruptError(path, fmt.Errorf("reading it failed: %v", r))
		}
	}()
	err = db.View(func(tx *bolt.Tx) error {
		if tx.Size() > fi.Size() {
			return fmt.Errorf("truncated: it has %d bytes, its pages need %d", fi.Size(), tx.Size())
		}
		if err := checkPages(path, tx); err != nil {
			return err
		}
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			if err := walk(b, 1); err != nil {
				return fmt.Errorf("bucket %q: %w", name, err)
			}
			return nil
		})
	})
	if err != nil {
		return corruptError(path, err)
	}
	return nil
}

// walk visits every key of b and of its buckets down to layoutDepth, which reads every
// page of those trees, and checks that keys are in order.
func walk(b *bolt.Bucket, depth int) error {
	c := b.Cursor()
	var prev []byte
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if prev != nil && bytes.Compare(prev, k) >= 0 {
			return fmt.Errorf("key %x follows key %x", k, prev)
		}
		prev = k
		if v == nil && depth < layoutDepth {
			if child := b.Bucket(k); child != nil {
				if err := walk(child, depth+1); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// open opens path for writing and creates or checks the layout, turning a panic of
// bbolt on a damaged file into an error.
func open(path string, timeout time.Duration, opt Options) (db *bolt.DB, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if db != nil {
				_ = db.Close()
			}
			db, err = nil, corruptError(path, fmt.Errorf("reading it failed: %v", r))
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        timeout,
		NoSync:         opt.NoSync,
		MaxSize:        opt.MaxSize,
		FreelistType:   bolt.FreelistMapType,
		NoFreelistSync: true, // rebuilt by scanning on open; saves a write per commit
	})
	if err != nil {
		return nil, openError(path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return initLayout(path, tx) }); err != nil {
		_ = db.Close()
		return nil, err
	}
	return db, nil
}

// initLayout creates the top-level buckets of a new file, or checks the schema version
// of an existing one.
func initLayout(path string, tx *bolt.Tx) error {
	meta := tx.Bucket(metaBucket)
	if meta == nil {
		if other, _ := tx.Cursor().First(); other != nil {
			return corruptError(path, fmt.Errorf("it has a bucket %q but no schema version", other))
		}
		var err error
		if meta, err = tx.CreateBucket(metaBucket); err != nil {
			return fmt.Errorf("state file %s: create layout: %w", path, err)
		}
		if err := meta.Put(schemaKey, strconv.AppendInt(nil, SchemaVersion, 10)); err != nil {
			return fmt.Errorf("state file %s: create layout: %w", path, err)
		}
	} else if err := checkSchema(path, meta); err != nil {
		return err
	}
	for _, name := range [][]byte{sourcesBucket, outboxBucket} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return corruptError(path, fmt.Errorf("bucket %s: %w", name, err))
		}
	}
	return nil
}

// checkSchema checks the schema version stored in the meta bucket.
func checkSchema(path string, meta *bolt.Bucket) error {
	raw := meta.Get(schemaKey)
	v, err := strconv.Atoi(string(raw))
	if err != nil {
		return corruptError(path, fmt.Errorf("schema version %q is not a number", raw))
	}
	if v != SchemaVersion {
		return fmt.Errorf("state file %s has schema version %d, but this watcher reads version %d: run a watcher release that reads version %d, or move the file away and let each source re-baseline",
			path, v, SchemaVersion, v)
	}
	return nil
}
