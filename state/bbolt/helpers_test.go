package bbolt

import "github.com/payments-watcher/watcher/state/codectest"

// t0 is the time codectest's records are built around: those of package state's
// codec tests, stored and read back through a file here.
var t0 = codectest.T0
