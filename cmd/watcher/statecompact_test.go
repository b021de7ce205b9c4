package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/payments-watcher/watcher/state"
	"github.com/payments-watcher/watcher/state/bbolt"
)

func TestStateCompact(t *testing.T) {
	path := filepath.Join(t.TempDir(), "watcher.db")
	s, err := bbolt.Open(path, bbolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(t.Context(), "src", state.Batch{}); err != nil {
		t.Fatal(err)
	}
	// While the file is open (as by a running watcher) the command refuses.
	if _, _, err := stateRun(t, "compact", "--state", path); err == nil || !strings.Contains(err.Error(), "needs the watcher stopped") {
		t.Fatalf("state compact of a file in use: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if out := stateOK(t, "compact", "--state", path); !strings.Contains(out, "compacted from") {
		t.Errorf("state compact printed %q", out)
	}
	if out := stateOK(t, "check", "--state", path); !strings.HasSuffix(out, "no problems found\n") {
		t.Errorf("state check after compact printed %q", out)
	}
}
