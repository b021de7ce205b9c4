package bbolt

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/state"
	"github.com/payments-watcher/watcher/state/codectest"
)

const testLockTimeout = 200 * time.Millisecond

func openStore(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(path, Options{LockTimeout: testLockTimeout, NoSync: true})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func commit(t *testing.T, s *Store, source string, b state.Batch) {
	t.Helper()
	if err := s.Commit(t.Context(), source, b); err != nil {
		t.Fatalf("commit: %v", err)
	}
}

func msg(i int) event.Message {
	return event.Message{
		ID:      fmt.Sprintf("evt-%d", i),
		Subject: "payments.cpn.payment.pending",
		Body:    fmt.Appendf(nil, `{"specversion":"1.0","id":"evt-%d"}`, i),
	}
}

func TestOpenCreatesFileAndDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", "sub", "watcher.db")
	s := openStore(t, path)
	if s.Path() != path {
		t.Errorf("Path() = %q, want %q", s.Path(), path)
	}
	fi, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm&^0o750 != 0 {
		t.Errorf("directory mode %o grants more than 0750", perm)
	}
	if srcs, err := s.Sources(); err != nil || len(srcs) != 0 {
		t.Errorf("Sources() of a new file = %v, %v; want none", srcs, err)
	}
	if m, err := s.Meta(t.Context(), "cpn"); err != nil || m != (state.Meta{}) {
		t.Errorf("Meta of an unknown source = %+v, %v; want zero", m, err)
	}
	if got, err := s.Load(t.Context(), "cpn", []string{"a"}); err != nil || len(got) != 0 {
		t.Errorf("Load from an unknown source = %v, %v; want empty", got, err)
	}
	if n, oldest, err := s.OutboxStats(t.Context()); err != nil || n != 0 || !oldest.IsZero() {
		t.Errorf("OutboxStats() of a new file = %d, %v, %v", n, oldest, err)
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	path := filepath.Join(t.TempDir(), "watcher.db")
	s, err := Open(path, Options{LockTimeout: testLockTimeout})
	if err != nil {
		t.Fatal(err)
	}
	rich := codectest.Rich()
	rich.Stalled = false
	records := []diff.Record{
		rich, // final but settling until t0+24h: open
		codectest.Plain("p1", t0.Add(-time.Hour), "CREATED", diff.Pending, false),
		codectest.Plain("p2", t0.Add(-2*time.Hour), "COMPLETED", diff.Completed, true),
	}
	meta := state.Meta{BaselineDone: true, HighWater: t0.Add(-time.Minute), LastPoll: t0}
	commit(t, s, "cpn", state.Batch{Now: t0, Records: records, Messages: []event.Message{msg(1), msg(2), msg(3)}, Meta: &meta})
	commit(t, s, "stripe", state.Batch{Now: t0, Records: []diff.Record{codectest.Plain("cos_1", t0, "initialized", diff.Pending, false)}})
	if err := s.Delete(t.Context(), []uint64{1}); err != nil {
		t.Fatal(err)
	}
	wantOpen, err := s.OpenItems(t.Context(), "cpn")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, path)
	got, err := s.Load(t.Context(), "cpn", []string{rich.ID, "p1", "p2"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range records {
		if !reflect.DeepEqual(got[r.ID], &r) {
			t.Errorf("record %q after reopen:\n got %+v\nwant %+v", r.ID, got[r.ID], r)
		}
	}
	if open, err := s.OpenItems(t.Context(), "cpn"); err != nil || !reflect.DeepEqual(open, wantOpen) || len(open) != 2 {
		t.Errorf("open items after reopen = %v, %v; want %v", open, err, wantOpen)
	}
	if m, err := s.Meta(t.Context(), "cpn"); err != nil || m != meta {
		t.Errorf("meta after reopen = %+v, %v; want %+v", m, err, meta)
	}
	if srcs, err := s.Sources(); err != nil || !reflect.DeepEqual(srcs, []string{"cpn", "stripe"}) {
		t.Errorf("sources after reopen = %v, %v", srcs, err)
	}

	// The outbox keeps its order, and sequence numbers continue, even once emptied.
	if seqs := pendingSeqs(t, s); !reflect.DeepEqual(seqs, []uint64{2, 3}) {
		t.Fatalf("outbox after reopen = %v, want [2 3]", seqs)
	}
	if err := s.Delete(t.Context(), []uint64{2, 3}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, path)
	commit(t, s, "cpn", state.Batch{Now: t0, Messages: []event.Message{msg(4), msg(5)}})
	entries, err := s.Pending(t.Context(), 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || entries[0].Seq != 4 || entries[1].Seq != 5 || entries[0].Msg.ID != "evt-4" {
		t.Errorf("outbox after emptying and reopening = %+v, want evt-4 and evt-5 as 4 and 5", entries)
	}
}

func pendingSeqs(t *testing.T, s *Store) []uint64 {
	t.Helper()
	entries, err := s.Pending(t.Context(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, e := range entries {
		seqs = append(seqs, e.Seq)
	}
	return seqs
}

func TestSecondOpenFailsFast(t *testing.T) {
	path := filepath.Join(t.TempDir(), "watcher.db")
	s := openStore(t, path)

	start := time.Now()
	second, err := Open(path, Options{LockTimeout: testLockTimeout})
	elapsed := time.Since(start)
	if err == nil {
		second.Close()
		t.Fatal("second Open of a held file succeeded")
	}
	want := "state file " + path + " is locked by another process (is another watcher running?)"
	if !errors.Is(err, ErrLocked) || err.Error() != want {
		t.Errorf("second Open: %v\nwant %s", err, want)
	}
	if elapsed > 5*time.Second {
		t.Errorf("second Open took %v with a lock timeout of %v", elapsed, testLockTimeout)
	}

	// The first store is unaffected.
	commit(t, s, "cpn", state.Batch{Now: t0, Records: []diff.Record{codectest.Plain("a", t0, "CREATED", diff.Pending, false)}})
	if got, err := s.Load(t.Context(), "cpn", []string{"a"}); err != nil || got["a"] == nil {
		t.Errorf("first store after the second Open: %v, %v", got, err)
	}
}

// helperEnv names the file that TestHelperProcess opens when the test binary runs as
// a second process.
const helperEnv = "WATCHER_STATE_HELPER_OPEN"

// TestHelperProcess is the second process of TestSecondProcessFails: it does nothing
// unless helperEnv is set.
func TestHelperProcess(t *testing.T) {
	path := os.Getenv(helperEnv)
	if path == "" {
		return
	}
	s, err := Open(path, Options{LockTimeout: testLockTimeout})
	if err != nil {
		fmt.Println("open failed:", err)
		os.Exit(0)
	}
	if err := s.Close(); err != nil {
		fmt.Println("close failed:", err)
		os.Exit(0)
	}
	fmt.Println("opened")
	os.Exit(0)
}

func openInOtherProcess(t *testing.T, path string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"="+path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("second process: %v\n%s", err, out)
	}
	return string(out)
}

func TestSecondProcessFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "watcher.db")
	s := openStore(t, path)

	out := openInOtherProcess(t, path)
	want := "open failed: state file " + path + " is locked by another process (is another watcher running?)"
	if !strings.Contains(out, want) {
		t.Errorf("second process printed:\n%s\nwant a line %q", out, want)
	}

	// Closing releases the lock.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if out := openInOtherProcess(t, path); !strings.Contains(out, "opened") {
		t.Errorf("second process after Close printed:\n%s\nwant opened", out)
	}
}

// writeFullFile writes a valid state file several pages long and returns its bytes.
func writeFullFile(t *testing.T, path string) []byte {
	t.Helper()
	s, err := Open(path, Options{LockTimeout: testLockTimeout, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	for page := range 20 {
		b := state.Batch{Now: t0}
		for i := range 100 {
			id := fmt.Sprintf("%08d-4d52-bdbf-2e74a2d803d5", page*100+i)
			b.Records = append(b.Records, codectest.Plain(id, t0.Add(-time.Duration(i)*time.Minute), "CREATED", diff.Pending, false))
			b.Messages = append(b.Messages, msg(page*100+i))
		}
		if err := s.Commit(t.Context(), "cpn", b); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) < 20*os.Getpagesize() {
		t.Fatalf("test file has only %d bytes", len(data))
	}
	return data
}

func TestOpenRejectsDamagedFiles(t *testing.T) {
	dir := t.TempDir()
	valid := writeFullFile(t, filepath.Join(dir, "valid.db"))
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	page := os.Getpagesize()
	garbage := append(valid[:2*page:2*page], random(len(valid)-2*page)...)

	cases := []struct {
		name string
		data []byte
		want string // in the error, besides the path and the advice
	}{
		{"random bytes", random(64 << 10), "invalid database"},
		{"a few bytes", []byte("not a database"), ""},
		{"truncated to half", valid[:len(valid)/2], "truncated"},
		{"truncated to three pages", valid[:3*page], "truncated"},
		{"garbage after the meta pages", garbage, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".db")
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(path, Options{LockTimeout: testLockTimeout})
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			msg := err.Error()
			if !errors.Is(err, ErrCorrupt) || !strings.HasPrefix(msg, "state file "+path+" is damaged") || !strings.Contains(msg, tc.want) {
				t.Errorf("Open: %v", err)
			}
		})
	}
}

func TestOpenRejectsOtherSchemaVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "watcher.db")
	s := openStore(t, path)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error { return tx.Bucket(metaBucket).Put(schemaKey, []byte("99")) })
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	_, err = Open(path, Options{LockTimeout: testLockTimeout})
	if err == nil {
		t.Fatal("Open of a file with schema version 99 succeeded")
	}
	want := "state file " + path + " has schema version 99, but this watcher reads version 1"
	if !strings.Contains(err.Error(), want) {
		t.Errorf("Open: %v\nwant it to contain %q", err, want)
	}
}

func TestOpenRejectsForeignBoltFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "other.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket([]byte("widgets"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = Open(path, Options{LockTimeout: testLockTimeout})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `bucket "widgets" but no schema version`) {
		t.Errorf("Open of another program's bbolt file: %v", err)
	}
}
