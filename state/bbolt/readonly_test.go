package bbolt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/state"
	"github.com/payments-watcher/watcher/state/codectest"
)

func openReadOnly(t *testing.T, path string) *Store {
	t.Helper()
	s, err := OpenReadOnly(path, testLockTimeout)
	if err != nil {
		t.Fatalf("OpenReadOnly: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestOpenReadOnlyWaitsForTheWriter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "watcher.db")
	w := openStore(t, path)
	meta := state.Meta{BaselineDone: true, HighWater: t0, LastPoll: t0, Rebaseline: true}
	commit(t, w, "cpn", state.Batch{Now: t0, Records: []diff.Record{codectest.Plain("a", t0, "CREATED", diff.Pending, false)}, Meta: &meta})

	start := time.Now()
	_, err := OpenReadOnly(path, testLockTimeout)
	want := "state file " + path + " is locked by another process (is another watcher running?)"
	if !errors.Is(err, ErrLocked) || err.Error() != want {
		t.Fatalf("OpenReadOnly while a Store holds the file: %v\nwant %s", err, want)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("OpenReadOnly took %s with a lock timeout of %s", d, testLockTimeout)
	}

	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r := openReadOnly(t, path)
	// Readers share the file, but a writer cannot join them.
	r2 := openReadOnly(t, path)
	if _, err := Open(path, Options{LockTimeout: testLockTimeout}); !errors.Is(err, ErrLocked) {
		t.Errorf("Open while read-only Stores hold the file: %v, want ErrLocked", err)
	}
	if got, err := r2.Meta(t.Context(), "cpn"); err != nil || got != meta {
		t.Errorf("Meta = %+v, %v; want %+v (rebaseline kept)", got, err, meta)
	}
	if got, err := r.Load(t.Context(), "cpn", []string{"a"}); err != nil || got["a"] == nil || got["a"].Status.Raw != "CREATED" {
		t.Errorf("Load = %v, %v", got, err)
	}

	err = r.Commit(t.Context(), "cpn", state.Batch{Now: t0, Meta: &state.Meta{}})
	if err == nil || !strings.Contains(err.Error(), "state file "+path) {
		t.Errorf("Commit on a read-only Store: %v, want an error naming the file", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r2.Close(); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("reading the file read-only changed it")
	}
}

func TestOpenReadOnlyMissingOrEmpty(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "sub", "missing.db")
	_, err := OpenReadOnly(missing, testLockTimeout)
	if !errors.Is(err, fs.ErrNotExist) || !strings.HasPrefix(err.Error(), "state file "+missing+": ") {
		t.Errorf("OpenReadOnly of a missing file: %v", err)
	}
	if _, err := os.Stat(filepath.Dir(missing)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OpenReadOnly created the directory: %v", err)
	}

	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = OpenReadOnly(empty, testLockTimeout)
	if err == nil || err.Error() != "state file "+empty+" is empty: no watcher has written it yet" {
		t.Errorf("OpenReadOnly of an empty file: %v", err)
	}
	if fi, err := os.Stat(empty); err != nil || fi.Size() != 0 {
		t.Errorf("the empty file was changed: %v, %v", fi, err)
	}
}

func TestOpenReadOnlyRejectsDamagedFiles(t *testing.T) {
	dir := t.TempDir()
	valid := writeFullFile(t, filepath.Join(dir, "valid.db"))
	page := os.Getpagesize()
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"truncated to half", valid[:len(valid)/2], "truncated"},
		{"truncated to three pages", valid[:3*page], "truncated"},
		{"not a database", bytes.Repeat([]byte("not a database "), 1000), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".db")
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := OpenReadOnly(path, testLockTimeout)
			if err == nil {
				s.Close()
				t.Fatal("OpenReadOnly succeeded")
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "state file "+path) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("OpenReadOnly: %v", err)
			}
		})
	}
}

func TestOpenReadOnlyRejectsOtherSchemaVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "watcher.db")
	s := openStore(t, path)
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(metaBucket).Put(schemaKey, []byte("7")) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := OpenReadOnly(path, testLockTimeout)
	want := "state file " + path + " has schema version 7, but this watcher reads version 1"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("OpenReadOnly: %v\nwant it to contain %q", err, want)
	}
}

func TestStats(t *testing.T) {
	s := newStore(t)
	if st, err := s.Stats("cpn"); err != nil || !reflect.DeepEqual(st, SourceStats{}) {
		t.Errorf("Stats of an unknown source = %+v, %v; want zero", st, err)
	}
	stalled := codectest.Plain("c", t0.Add(-2*time.Hour), "CREATED", diff.Pending, false)
	stalled.Stalled = true
	meta := state.Meta{BaselineDone: true, HighWater: t0, LastPoll: t0}
	commit(t, s, "cpn", state.Batch{Now: t0, Meta: &meta, Records: []diff.Record{
		codectest.Plain("a", t0, "CREATED", diff.Pending, false),
		codectest.Plain("b", t0.Add(-time.Hour), "COMPLETED", diff.Completed, true),
		stalled,
	}})
	commit(t, s, "ramp", state.Batch{Now: t0, Records: []diff.Record{codectest.Plain("x", t0, "PENDING", diff.Pending, false)}})

	st, err := s.Stats("cpn")
	if err != nil {
		t.Fatal(err)
	}
	if want := (SourceStats{Items: 3, Open: 1, Stalled: 1, Meta: meta}); !reflect.DeepEqual(st, want) {
		t.Errorf("Stats = %+v, want %+v", st, want)
	}
}

func TestRecordsPages(t *testing.T) {
	s := newStore(t)
	var want []diff.Record
	for i := range 7 {
		r := codectest.Plain(fmt.Sprintf("id-%02d", i), t0.Add(-time.Duration(i)*time.Minute), "CREATED", diff.Pending, false)
		want = append(want, r)
	}
	commit(t, s, "cpn", state.Batch{Now: t0, Records: want})

	var got []diff.Record
	var sizes []int
	after := ""
	for {
		page, err := s.Records("cpn", after, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		sizes = append(sizes, len(page))
		got = append(got, page...)
		after = page[len(page)-1].ID
	}
	if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(sizes, []int{3, 3, 1}) {
		t.Errorf("paged records %v in pages %v, want %v", got, sizes, want)
	}
	// An after that is not a stored id starts at the next one.
	if page, err := s.Records("cpn", "id-03x", 10); err != nil || len(page) != 3 || page[0].ID != "id-04" {
		t.Errorf("Records after id-03x = %v, %v", page, err)
	}
	if page, err := s.Records("none", "", 10); err != nil || len(page) != 0 {
		t.Errorf("Records of an unknown source = %v, %v", page, err)
	}
	if _, err := s.Records("cpn", "", 0); err == nil {
		t.Error("Records with max 0 succeeded")
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "valid.db")
	writeFullFile(t, path)
	if err := openReadOnly(t, path).Check(); err != nil {
		t.Fatalf("Check of a valid file: %v", err)
	}

	// A file written with bbolt's freelist on disk whose freelist claims a page in use:
	// every tree is sound, so it opens, and only bbolt's consistency check sees it.
	damaged := filepath.Join(dir, "freelist.db")
	writeFreelistFile(t, damaged)
	err := openReadOnly(t, damaged).Check()
	if !errors.Is(err, ErrCorrupt) || !strings.HasPrefix(err.Error(), "state file "+damaged+" is damaged") ||
		!strings.Contains(err.Error(), "reachable freed") {
		t.Errorf("Check of a file whose freelist holds a used page: %v", err)
	}
}

func TestOpenRejectsUnsoundTree(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "valid.db")
	data := writeFullFile(t, path)
	// Raise a key of a branch page above the first key of the child it points to: every
	// page still reads and every bucket still lists its keys in order, but the tree no
	// longer finds them, and bbolt would rebuild its freelist from it with a checker that
	// panics while another of its goroutines still reads the file.
	damaged := filepath.Join(dir, "damaged.db")
	if err := os.WriteFile(damaged, raiseBranchKey(t, path, data), 0o600); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the first attempt leaves the file unlocked
		s, err := Open(damaged, Options{LockTimeout: testLockTimeout})
		if err == nil {
			s.Close()
			t.Fatal("Open of a file with an unsound tree succeeded")
		}
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "state file "+damaged) ||
			!strings.Contains(err.Error(), "keys out of order: below") {
			t.Fatalf("Open: %v", err)
		}
	}
	if _, err := OpenReadOnly(damaged, testLockTimeout); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "keys out of order") {
		t.Errorf("OpenReadOnly: %v", err)
	}
}

// TestCheckPagesAcceptsWrittenFiles runs the tree check on files shaped by many
// commits and deletions: overflow pages (large events), inline buckets (sources with
// a record or two), split and merged pages. A false alarm here would refuse a good file.
func TestCheckPagesAcceptsWrittenFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "churn.db")
	s := openStore(t, path)
	rng := rand.New(rand.NewPCG(3, 4))
	big := bytes.Repeat([]byte("x"), 3*os.Getpagesize())
	n := 0
	for round := range 30 {
		var b state.Batch
		b.Now = t0
		for range rng.IntN(200) {
			n++
			b.Records = append(b.Records, codectest.Plain(fmt.Sprintf("%x", rng.Uint64()), t0.Add(-time.Duration(n)*time.Second), "CREATED", diff.Pending, n%3 == 0))
			m := msg(n)
			if n%17 == 0 {
				m.Body = big
			}
			b.Messages = append(b.Messages, m)
		}
		commit(t, s, fmt.Sprintf("src-%d", round%4), b)
		commit(t, s, fmt.Sprintf("tiny-%d", round), state.Batch{Now: t0, Records: []diff.Record{codectest.Plain("only", t0, "CREATED", diff.Pending, false)}})
		if pending, err := s.Pending(t.Context(), 0, 1+rng.IntN(300)); err != nil {
			t.Fatal(err)
		} else {
			var seqs []uint64
			for _, e := range pending {
				if rng.IntN(3) > 0 {
					seqs = append(seqs, e.Seq)
				}
			}
			if err := s.Delete(t.Context(), seqs); err != nil {
				t.Fatal(err)
			}
		}
	}
	err := s.db.View(func(tx *bolt.Tx) error { return checkPages(path, tx) })
	if err != nil {
		t.Fatalf("checkPages of a file in use: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	r := openReadOnly(t, path)
	if err := r.Check(); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	openStore(t, path)
}

// writeFreelistFile writes a state file with bbolt's freelist kept on disk, then makes
// that freelist list the root page of the outbox, which is in use.
func writeFreelistFile(t *testing.T, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		err := db.Update(func(tx *bolt.Tx) error {
			if i == 0 {
				meta, err := tx.CreateBucket(metaBucket)
				if err != nil {
					return err
				}
				if err := meta.Put(schemaKey, []byte("1")); err != nil {
					return err
				}
				if _, err := tx.CreateBucket(sourcesBucket); err != nil {
					return err
				}
				if _, err := tx.CreateBucket(outboxBucket); err != nil {
					return err
				}
			}
			for j := range 50 {
				if err := tx.Bucket(outboxBucket).Put(seqKey(uint64(i*50+j+1)), bytes.Repeat([]byte{byte(j)}, 100)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	var outboxRoot uint64
	db.View(func(tx *bolt.Tx) error {
		outboxRoot = uint64(tx.Bucket(outboxBucket).Root())
		return nil
	})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The meta page in use is the one with the larger transaction id; its freelist page
	// id is at byte 48 of the page, the transaction id at byte 64.
	page := os.Getpagesize()
	meta := 0
	if binary.NativeEndian.Uint64(data[page+64:]) > binary.NativeEndian.Uint64(data[64:]) {
		meta = page
	}
	fl := int(binary.NativeEndian.Uint64(data[meta+48:])) * page
	binary.NativeEndian.PutUint16(data[fl+10:], 1)
	binary.NativeEndian.PutUint64(data[fl+16:], outboxRoot)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// raiseBranchKey returns a copy of the bbolt file at path, whose bytes are data, with
// the last byte of the second key of the root page of source cpn's items set to 0xff.
func raiseBranchKey(t *testing.T, path string, data []byte) []byte {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var root uint64
	err = db.View(func(tx *bolt.Tx) error {
		root = uint64(tx.Bucket(sourcesBucket).Bucket([]byte("cpn")).Bucket(itemsBucket).Root())
		return nil
	})
	if err := errors.Join(err, db.Close()); err != nil {
		t.Fatal(err)
	}
	out := bytes.Clone(data)
	const branchFlag, header, elemSize = 0x01, 16, 16
	off := int(root) * os.Getpagesize()
	if flags, count := binary.LittleEndian.Uint16(out[off+8:]), binary.LittleEndian.Uint16(out[off+10:]); flags != branchFlag || count < 3 {
		t.Fatalf("root page %d of the items has flags %#x and %d keys; want a branch page with 3 or more", root, flags, count)
	}
	elem := off + header + elemSize
	pos := int(binary.LittleEndian.Uint32(out[elem:]))
	ksize := int(binary.LittleEndian.Uint32(out[elem+4:]))
	out[elem+pos+ksize-1] = 0xff
	return out
}
