package bbolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/state"
	"github.com/payments-watcher/watcher/state/codectest"
)

// bloated returns the path of a closed state file that holds some records and a few
// outbox entries, and many free pages: the pages of 20 MB of outbox entries since
// deleted.
func bloated(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "watcher.db")
	s, err := Open(path, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Commit(ctx, "src", state.Batch{Now: t0, Records: codectest.Samples()}); err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte("x"), 2000)
	for i := range 100 {
		msgs := make([]event.Message, 100)
		for j := range msgs {
			msgs[j] = event.Message{ID: fmt.Sprintf("e%d-%d", i, j), Subject: "payments.src.payment", Body: body}
		}
		if err := s.Commit(ctx, "src", state.Batch{Now: t0, Messages: msgs}); err != nil {
			t.Fatal(err)
		}
	}
	for {
		p, err := s.Pending(ctx, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(p) <= 3 {
			break
		}
		seqs := make([]uint64, 0, len(p))
		for _, e := range p {
			seqs = append(seqs, e.Seq)
		}
		if err := s.Delete(ctx, seqs[:len(seqs)-3]); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// contentsOf returns the keys and hash of the file at path.
func contentsOf(t *testing.T, path string) contents {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	c, err := digest(db)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func plenty(string) (int64, error) { return 1 << 40, nil }

func TestCompactShrinks(t *testing.T) {
	path := bloated(t)
	want := contentsOf(t, path)
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	size, free, err := s.FileStats()
	if err != nil || size < 20<<20 || free < size/2 {
		t.Fatalf("FileStats of the bloated file = %d, %d, %v; want 20 MB or more, half of it free", size, free, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	r, err := Compact(path, CompactOptions{FreeSpace: plenty})
	if err != nil {
		t.Fatal(err)
	}
	if r.After >= r.Before/10 || r.Live > r.After || r.Keys != want.keys || r.Backup != "" {
		t.Errorf("Compact = %+v; want a file under a tenth of %d, holding %d keys, no backup kept", r, r.Before, want.keys)
	}
	if got := contentsOf(t, path); got != want {
		t.Errorf("compacted file holds %+v, the original %+v", got, want)
	}
	for _, leftover := range []string{path + ".bak", path + ".compact"} {
		if _, err := os.Stat(leftover); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is left: %v", leftover, err)
		}
	}
	// The compacted file opens as a state file, with its records and outbox.
	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if p, err := s.Pending(context.Background(), 0, 10); err != nil || len(p) != 3 {
		t.Errorf("Pending after compacting = %d entries, %v; want 3", len(p), err)
	}
}

func TestCompactRefusesWhileLocked(t *testing.T) {
	path := bloated(t)
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = Compact(path, CompactOptions{FreeSpace: plenty, LockTimeout: 100e6})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("Compact of a file in use = %v, want ErrLocked", err)
	}
}

func TestCompactRefusesWithoutSpace(t *testing.T) {
	path := bloated(t)
	want := contentsOf(t, path)
	_, err := Compact(path, CompactOptions{FreeSpace: func(string) (int64, error) { return 1 << 20, nil }})
	if err == nil || !strings.Contains(err.Error(), "has 1048576 bytes free") || !strings.Contains(err.Error(), "live data") {
		t.Fatalf("Compact without space = %v, want a refusal naming the free space and the live data", err)
	}
	if got := contentsOf(t, path); got != want {
		t.Error("the refused compaction changed the file")
	}
}

func TestCompactFailedVerification(t *testing.T) {
	t.Run("before the swap", func(t *testing.T) {
		path := bloated(t)
		before, _ := os.ReadFile(path)
		_, err := Compact(path, CompactOptions{FreeSpace: plenty, Check: func(string) error { return errors.New("injected") }})
		if err == nil || !strings.Contains(err.Error(), "injected") || !strings.Contains(err.Error(), "unchanged") {
			t.Fatalf("Compact = %v, want the injected failure", err)
		}
		after, _ := os.ReadFile(path)
		if !bytes.Equal(before, after) {
			t.Error("the file changed")
		}
		for _, leftover := range []string{path + ".bak", path + ".compact"} {
			if _, err := os.Stat(leftover); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s is left: %v", leftover, err)
			}
		}
	})
	t.Run("after the swap", func(t *testing.T) {
		path := bloated(t)
		before, _ := os.ReadFile(path)
		check := func(p string) error {
			if p == path {
				return errors.New("injected")
			}
			return nil
		}
		_, err := Compact(path, CompactOptions{FreeSpace: plenty, Check: check})
		if err == nil || !strings.Contains(err.Error(), "injected") || !strings.Contains(err.Error(), path+".bak") {
			t.Fatalf("Compact = %v, want the injected failure naming the backup", err)
		}
		kept, err := os.ReadFile(path + ".bak")
		if err != nil || !bytes.Equal(kept, before) {
			t.Errorf("the backup is not the old file: %v", err)
		}
	})
}

func TestCompactMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none.db")
	if _, err := Compact(path, CompactOptions{FreeSpace: plenty}); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Compact of a missing file = %v, want not exist", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Compact created %s", path)
	}
}
