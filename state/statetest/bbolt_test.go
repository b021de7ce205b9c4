package statetest_test

import (
	"path/filepath"
	"testing"

	"github.com/payments-watcher/watcher/state"
	"github.com/payments-watcher/watcher/state/statetest"
)

func TestBbolt(t *testing.T) {
	statetest.Run(t, func(t *testing.T) statetest.Backend {
		s, err := state.Open(filepath.Join(t.TempDir(), "state.db"), state.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}
