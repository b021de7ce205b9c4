package bbolt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/state"
	"github.com/payments-watcher/watcher/state/codectest"
)

func TestOpenFileModes(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("file modes are not permissions on Windows")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "new", "watcher.db")
	s := openStore(t, path)
	if w := s.Warnings(); len(w) != 0 {
		t.Errorf("warnings on a new file: %q", w)
	}
	for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		// The umask may take bits away, never add them.
		if perm := fi.Mode().Perm(); perm&^want != 0 {
			t.Errorf("%s: mode %04o grants more than %04o", p, perm, want)
		}
	}
	s.Close()

	// A directory and a file the operator made are used as they are; a file others can
	// read is reported, not changed.
	own := filepath.Join(dir, "own")
	if err := os.Mkdir(own, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(own, 0o755); err != nil {
		t.Fatal(err)
	}
	shared := filepath.Join(own, "watcher.db")
	if err := os.Rename(path, shared); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shared, 0o644); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, shared)
	want := "state file " + shared + " has mode 0644, so other users may read the payment data in it; chmod 600 it"
	if w := s.Warnings(); len(w) != 1 || w[0] != want {
		t.Errorf("warnings = %q, want %q", w, want)
	}
	for p, mode := range map[string]os.FileMode{own: 0o755, shared: 0o644} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: mode changed to %v (%v)", p, fi.Mode().Perm(), err)
		}
	}
}

// hwmBytes is how many bytes of the file at path its pages need.
func hwmBytes(t *testing.T, path string) int {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int64
	db.View(func(tx *bolt.Tx) error { n = tx.Size(); return nil })
	return int(n)
}

func TestTruncatedFileIsCorrupt(t *testing.T) {
	dir := t.TempDir()
	valid := writeFullFile(t, filepath.Join(dir, "valid.db"))
	page := os.Getpagesize()
	need := hwmBytes(t, filepath.Join(dir, "valid.db"))
	for _, cut := range []struct {
		name string
		at   int
	}{
		{"mid first meta page", 100},
		{"mid second meta page", page + 100},
		{"after the meta pages", 2 * page},
		{"mid first data page", 2*page + page/2},
		{"half", need / 2},
		{"mid last page", need - page/2},
		{"one byte short", need - 1},
	} {
		t.Run(cut.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(cut.name, " ", "-")+".db")
			if err := os.WriteFile(path, valid[:cut.at], 0o600); err != nil {
				t.Fatal(err)
			}
			for name, open := range map[string]func() (*Store, error){
				"Open":         func() (*Store, error) { return Open(path, Options{LockTimeout: testLockTimeout}) },
				"OpenReadOnly": func() (*Store, error) { return OpenReadOnly(path, testLockTimeout) },
			} {
				s, err := open()
				if err == nil {
					s.Close()
					t.Fatalf("%s of a file cut at byte %d of %d succeeded", name, cut.at, need)
				}
				if !errors.Is(err, ErrCorrupt) || !strings.HasPrefix(err.Error(), "state file "+path+" is damaged") {
					t.Errorf("%s: %v", name, err)
				}
			}
			// Nothing was written to the damaged file.
			if got, err := os.ReadFile(path); err != nil || len(got) != cut.at {
				t.Errorf("the file now has %d bytes (%v), want %d", len(got), err, cut.at)
			}
		})
	}
}

// exercise runs every operation of s and returns the errors; none may panic.
func exercise(s *Store) []error {
	var errs []error
	try := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	srcs, err := s.Sources()
	try(err)
	srcs = append(srcs, "cpn")
	for _, src := range srcs {
		_, err := s.Stats(src)
		try(err)
		_, err = s.Records(src, "", 50)
		try(err)
		try(s.ForEach(context.Background(), src, func(diff.Record) error { return nil }))
		_, err = s.OpenItems(context.Background(), src)
		try(err)
		_, err = s.Meta(context.Background(), src)
		try(err)
		_, _, err = s.Counts(src)
		try(err)
		_, err = s.Load(context.Background(), src, []string{"00000000-4d52-bdbf-2e74a2d803d5", "00001999-4d52-bdbf-2e74a2d803d5"})
		try(err)
	}
	_, err = s.Pending(context.Background(), 0, 100)
	try(err)
	_, _, err = s.OutboxStats(context.Background())
	try(err)
	try(s.Check())
	return errs
}

// TestRandomDamageNeverPanics damages the pages of a valid file at random (fixed
// seeds): Open either refuses the file with ErrCorrupt, or opens it, and then every
// operation, a commit included, returns or fails with an error naming the file.
func TestRandomDamageNeverPanics(t *testing.T) {
	dir := t.TempDir()
	valid := writeFullFile(t, filepath.Join(dir, "valid.db"))
	page := os.Getpagesize()
	need := hwmBytes(t, filepath.Join(dir, "valid.db"))
	refused, opened := 0, 0
	for seed := range uint64(120) {
		rng := rand.New(rand.NewPCG(seed, 7))
		data := append([]byte(nil), valid...)
		switch seed % 4 {
		case 0: // a few bytes anywhere past the meta pages
			for range 1 + rng.IntN(8) {
				data[2*page+rng.IntN(need-2*page)] = byte(rng.Uint32())
			}
		case 1: // a page header
			p := 2 + rng.IntN(need/page-2)
			for i := range 16 {
				data[p*page+i] = byte(rng.Uint32())
			}
		case 2: // a run of garbage inside a page
			off := 2*page + rng.IntN(need-2*page-256)
			for i := range 1 + rng.IntN(256) {
				data[off+i] = byte(rng.Uint32())
			}
		case 3: // one meta page and a data page
			data[rng.IntN(2)*page+16+rng.IntN(64)] ^= 0xff
			data[2*page+rng.IntN(need-2*page)] ^= 1 << rng.IntN(8)
		}
		path := filepath.Join(dir, "damaged-"+strconv.FormatUint(seed, 10)+".db")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(path, Options{LockTimeout: testLockTimeout, NoSync: true})
		if err != nil {
			refused++
			if !errors.Is(err, ErrCorrupt) || !strings.HasPrefix(err.Error(), "state file "+path+" ") {
				t.Errorf("seed %d: Open: %v; want ErrCorrupt naming the file", seed, err)
			}
			continue
		}
		opened++
		errs := exercise(s)
		errs = append(errs, s.Commit(t.Context(), "cpn", state.Batch{Now: t0, Records: []diff.Record{codectest.Plain("new", t0, "CREATED", diff.Pending, false)}, Messages: []event.Message{msg(9999)}}))
		for _, err := range errs {
			if err != nil && !strings.Contains(err.Error(), "state file "+path) {
				t.Errorf("seed %d: error does not name the file: %v", seed, err)
			}
		}
		if err := s.Close(); err != nil && !strings.Contains(err.Error(), path) {
			t.Errorf("seed %d: Close: %v", seed, err)
		}
	}
	t.Logf("%d damaged files refused, %d opened", refused, opened)
	if refused == 0 {
		t.Error("no damaged file was refused")
	}
}

// TestDamageUnderAnOpenStore damages the file while a Store has it open (another
// program, a failing disk): operations fail with ErrCorrupt naming the file, and the
// process goes on.
func TestDamageUnderAnOpenStore(t *testing.T) {
	dir := t.TempDir()
	valid := writeFullFile(t, filepath.Join(dir, "valid.db"))
	page := os.Getpagesize()

	t.Run("cut short", func(t *testing.T) {
		path := filepath.Join(dir, "cut.db")
		if err := os.WriteFile(path, valid, 0o600); err != nil {
			t.Fatal(err)
		}
		s := openStore(t, path)
		if err := os.Truncate(path, int64(2*page)); err != nil {
			t.Fatal(err)
		}
		errs := exercise(s)
		if len(errs) == 0 {
			t.Fatal("every operation succeeded on a file cut to its meta pages")
		}
		t.Logf("%d operations failed, the first with: %v", len(errs), errs[0])
		for _, err := range errs {
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "state file "+path) {
				t.Errorf("%v; want ErrCorrupt naming the file", err)
			}
		}
	})

	t.Run("pages overwritten", func(t *testing.T) {
		path := filepath.Join(dir, "overwritten.db")
		if err := os.WriteFile(path, valid, 0o600); err != nil {
			t.Fatal(err)
		}
		s := openStore(t, path)
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(3, 4))
		garbage := make([]byte, 8*page)
		for i := range garbage {
			garbage[i] = byte(rng.Uint32())
		}
		if _, err := f.WriteAt(garbage, int64(2*page)); err != nil {
			t.Fatal(err)
		}
		f.Close()
		errs := exercise(s)
		if len(errs) == 0 {
			t.Fatal("every operation succeeded on a file with garbage pages")
		}
		t.Logf("%d operations failed, the first with: %v", len(errs), errs[0])
		for _, err := range errs {
			if !strings.Contains(err.Error(), "state file "+path) {
				t.Errorf("%v; want an error naming the file", err)
			}
		}
	})
}

func TestPanicInCallbackIsNotCorruption(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "watcher.db"))
	commit(t, s, "cpn", state.Batch{Now: t0, Records: []diff.Record{codectest.Plain("a", t0, "CREATED", diff.Pending, false)}})
	defer func() {
		if r := recover(); r != "callback bug" {
			t.Fatalf("recovered %v; want the callback's own panic", r)
		}
	}()
	_ = s.ForEach(t.Context(), "cpn", func(diff.Record) error { panic("callback bug") })
	t.Fatal("ForEach returned")
}

// TestCommitFailsWhenFull: a commit that needs more room than the file may take fails
// with an error naming the file and changes nothing; the Store goes on serving reads,
// and the same batch commits once there is room.
func TestCommitFailsWhenFull(t *testing.T) {
	path := filepath.Join(t.TempDir(), "watcher.db")
	s, err := Open(path, Options{LockTimeout: testLockTimeout, NoSync: true, MaxSize: 128 << 10})
	if err != nil {
		t.Fatal(err)
	}
	batch := func(n int) state.Batch {
		b := state.Batch{Now: t0}
		for i := range 10 {
			id := fmt.Sprintf("%03d-%02d-%s", n, i, strings.Repeat("x", 100))
			b.Records = append(b.Records, codectest.Plain(id, t0, "CREATED", diff.Pending, false))
			b.Messages = append(b.Messages, msg(n*100+i))
		}
		return b
	}
	var failed state.Batch
	committed := 0
	for n := 0; ; n++ {
		if n == 100 {
			t.Fatal("100 batches fit in 128 KiB")
		}
		b := batch(n)
		err := s.Commit(t.Context(), "cpn", b)
		if err == nil {
			committed++
			continue
		}
		if !errors.Is(err, berrors.ErrMaxSizeReached) || !strings.HasPrefix(err.Error(), "state file "+path+": commit to source \"cpn\": ") {
			t.Fatalf("commit %d: %v", n, err)
		}
		failed = b
		break
	}
	if committed == 0 {
		t.Fatal("not even one batch fit")
	}
	// Nothing of the failed batch is stored; what was committed is intact.
	if got, err := s.Load(t.Context(), "cpn", []string{failed.Records[0].ID}); err != nil || len(got) != 0 {
		t.Fatalf("after the failed commit: %v, %v", got, err)
	}
	if n, _, err := s.OutboxStats(t.Context()); err != nil || n != committed*10 {
		t.Fatalf("outbox holds %d (%v), want %d", n, err, committed*10)
	}
	if err := s.Commit(t.Context(), "cpn", failed); err == nil {
		t.Fatal("the retried commit succeeded without room")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Room again: the same batch commits, once.
	s = openStore(t, path)
	commit(t, s, "cpn", failed)
	if n, _, err := s.OutboxStats(t.Context()); err != nil || n != (committed+1)*10 {
		t.Fatalf("outbox holds %d (%v), want %d", n, err, (committed+1)*10)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

// fsizeEnv makes TestHelperWriteUntilFull run, on the file it names.
const fsizeEnv = "WATCHER_STATE_HELPER_FSIZE"

type fsizeResult struct {
	Committed int    `json:"committed"`
	Err       string `json:"err"`
	Retry     string `json:"retry"`
}

// TestHelperWriteUntilFull is the second process of TestWriteErrorFailsTheCommit: with
// the process's file size limit at the file's size, so that the kernel refuses to
// grow it (EFBIG, as ENOSPC on a full disk), it commits until a commit fails, retries
// that commit once, and prints what happened.
func TestHelperWriteUntilFull(t *testing.T) {
	path := os.Getenv(fsizeEnv)
	if path == "" {
		return
	}
	signal.Ignore(syscall.SIGXFSZ) // a write past the limit then fails instead of killing
	s, err := Open(path, Options{LockTimeout: testLockTimeout})
	if err != nil {
		fmt.Println("open failed:", err)
		os.Exit(0)
	}
	fi, err := os.Stat(path)
	if err != nil {
		fmt.Println(err)
		os.Exit(0)
	}
	lim := syscall.Rlimit{Cur: uint64(fi.Size()), Max: uint64(fi.Size())}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		fmt.Println("setrlimit:", err)
		os.Exit(0)
	}
	var res fsizeResult
	for n := range 1000 {
		b := state.Batch{Now: t0}
		for i := range 20 {
			b.Records = append(b.Records, codectest.Plain(fmt.Sprintf("full-%04d-%02d", n, i), t0, "CREATED", diff.Pending, false))
			b.Messages = append(b.Messages, msg(100000+n*100+i))
		}
		if err := s.Commit(t.Context(), "cpn", b); err != nil {
			res.Err = err.Error()
			if err := s.Commit(t.Context(), "cpn", b); err != nil {
				res.Retry = err.Error()
			}
			break
		}
		res.Committed++
	}
	if err := s.Close(); err != nil {
		res.Retry += "; close: " + err.Error()
	}
	out, _ := json.Marshal(res)
	fmt.Printf("result %s\n", out)
	os.Exit(0)
}

// TestWriteErrorFailsTheCommit fills the disk for real (a file size limit) under a
// second process: its commits fail with the kernel's error, the process goes on, and
// the file stays sound with every commit that succeeded and nothing of those that
// failed.
func TestWriteErrorFailsTheCommit(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("RLIMIT_FSIZE and SIGXFSZ as on Linux")
	}
	path := filepath.Join(t.TempDir(), "watcher.db")
	writeFullFile(t, path)
	before := 2000 // writeFullFile's records and messages

	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestHelperWriteUntilFull$")
	cmd.Env = append(os.Environ(), fsizeEnv+"="+path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("second process: %v\n%s", err, out)
	}
	_, line, ok := strings.Cut(string(out), "result ")
	if !ok {
		t.Fatalf("second process printed:\n%s", out)
	}
	var res fsizeResult
	if err := json.Unmarshal([]byte(strings.SplitN(line, "\n", 2)[0]), &res); err != nil {
		t.Fatal(err)
	}
	if res.Err == "" || !strings.HasPrefix(res.Err, "state file "+path+": commit to source \"cpn\": ") || res.Retry == "" {
		t.Fatalf("second process: %+v; want a failed commit naming the file, and its retry failing too", res)
	}
	t.Logf("%d commits fit; then: %s", res.Committed, res.Err)

	s := openStore(t, path)
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	items, _, err := s.Counts("cpn")
	if err != nil || items != before+res.Committed*20 {
		t.Fatalf("%d records (%v), want %d", items, err, before+res.Committed*20)
	}
	if n, _, err := s.OutboxStats(t.Context()); err != nil || n != before+res.Committed*20 {
		t.Fatalf("outbox holds %d (%v), want %d", n, err, before+res.Committed*20)
	}
	got, err := s.Load(t.Context(), "cpn", []string{fmt.Sprintf("full-%04d-00", res.Committed)})
	if err != nil || len(got) != 0 {
		t.Fatalf("the failed batch is stored: %v, %v", got, err)
	}
}
