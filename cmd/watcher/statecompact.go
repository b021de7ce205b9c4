package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/payments-watcher/watcher/state/bbolt"
)

// stateCompact runs `watcher state compact`: it rewrites the bbolt state file without
// its free pages (bbolt.Compact), which needs the watcher stopped.
func stateCompact(o *stateOptions, stdout io.Writer) error {
	if o.path == "" {
		return errors.New("state compact: state.backend nats_kv has no state file; JetStream compacts its own store")
	}
	r, err := bbolt.Compact(o.path, bbolt.CompactOptions{LockTimeout: stateLockTimeout})
	if errors.Is(err, bbolt.ErrLocked) {
		return fmt.Errorf("state compact needs the watcher stopped: state file %s is in use by a running watcher; stop it, then run the compaction again", o.path)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "state file %s: compacted from %s to %s (live data %s, %d keys)\n",
		o.path, mib(r.Before), mib(r.After), mib(r.Live), r.Keys)
	return nil
}

// mib renders a byte count in MiB.
func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
