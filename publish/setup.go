package publish

import (
	"context"
	"time"
)

// SetupWait bounds RetrySetup: a JetStream cluster that has just started, or several
// watcher replicas creating the same buckets or stream at once, can make the first
// attempts time out.
const SetupWait = time.Minute

// RetrySetup calls fn (creating or looking up a stream or bucket) until it succeeds,
// ctx ends or SetupWait passes, each attempt bounded to 10s, with a pause growing from
// 100ms to 2s between attempts; it returns the last result and error.
func RetrySetup[T any](ctx context.Context, fn func(context.Context) (T, error)) (T, error) {
	deadline := time.Now().Add(SetupWait)
	pause := 100 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
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
