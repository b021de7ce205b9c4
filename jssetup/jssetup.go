// Package jssetup retries the calls that set up JetStream resources: creating or
// looking up a stream or a key-value bucket. A JetStream cluster that has just
// started (no meta leader elected yet), or several watcher replicas creating the same
// resources at once, make the first attempts fail or time out, and every component
// that owns resources on the server needs the same patient start.
//
// It is a package of its own, below every such component, so that the state back end
// (state/natskv) and the lease manager (cluster) share one retry policy without
// depending on the event publisher (publish) or on each other.
package jssetup

import (
	"context"
	"time"
)

// MaxWait bounds Retry: how long a setup call is tried again before its last error
// is returned.
const MaxWait = time.Minute

// attemptTimeout bounds each attempt of Retry.
const attemptTimeout = 10 * time.Second

// Retry calls fn (creating or looking up a stream or bucket) until it succeeds, ctx
// ends or MaxWait passes, each attempt bounded to 10s, with a pause growing from
// 100ms to 2s between attempts; it returns the last result and error. When ctx is
// cancelled, the attempt in flight is cancelled with it and Retry returns at once.
func Retry[T any](ctx context.Context, fn func(context.Context) (T, error)) (T, error) {
	deadline := time.Now().Add(MaxWait)
	pause := 100 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		v, err := fn(actx)
		cancel()
		if err == nil || ctx.Err() != nil || time.Now().After(deadline) {
			return v, err
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return v, err
		case <-t.C:
		}
		pause = min(2*pause, 2*time.Second)
	}
}
