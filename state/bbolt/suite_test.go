package bbolt_test

import (
	"path/filepath"
	"testing"

	"github.com/payments-watcher/watcher/state/bbolt"
	"github.com/payments-watcher/watcher/state/statetest"
)

// TestSuite runs the behaviour every state back end must have on a fresh file.
func TestSuite(t *testing.T) {
	statetest.Run(t, func(t *testing.T) statetest.Backend {
		s, err := bbolt.Open(filepath.Join(t.TempDir(), "state.db"), bbolt.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}
