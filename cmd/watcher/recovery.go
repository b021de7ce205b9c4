package main

import (
	"errors"
	"fmt"

	"github.com/payments-watcher/watcher/state/bbolt"
)

// withRecovery adds the way out to an error that says the state file at path is
// damaged (bbolt.ErrCorrupt); other errors are returned as they are. checking is set
// for the error of `watcher state check` itself, which need not suggest running it.
func withRecovery(err error, path string, checking bool) error {
	if !errors.Is(err, bbolt.ErrCorrupt) {
		return err
	}
	steps := ""
	if !checking {
		steps = fmt.Sprintf("  watcher state check --state %s   shows what is damaged.\n", path)
	}
	return fmt.Errorf(`%w
To recover, with watcher stopped:
%s  Restore %s from a backup, then run
    watcher state rebaseline --state %s SOURCE
  for each source, so that what changed since the backup is recorded without events;
  or move %s aside: the next start creates a new file and baselines every source
  again (without events, unless the source sets baseline: emit).
  Events still waiting in the damaged file's outbox are not sent (a restored backup
  sends those it holds).`, err, steps, path, path, path)
}
