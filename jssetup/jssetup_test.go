package jssetup

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestRetryUntilSuccess(t *testing.T) {
	calls := 0
	v, err := Retry(context.Background(), func(context.Context) (int, error) {
		calls++
		if calls < 3 {
			return 0, errors.New("no meta leader")
		}
		return 42, nil
	})
	if err != nil || v != 42 || calls != 3 {
		t.Fatalf("Retry = %d, %v after %d calls; want 42, nil after 3", v, err, calls)
	}
}

func TestRetryStopsWhenContextEnds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	fail := errors.New("no meta leader")
	start := time.Now()
	_, err := Retry(ctx, func(context.Context) (int, error) { return 0, fail })
	if !errors.Is(err, fail) {
		t.Fatalf("Retry error = %v; want the last attempt's error", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Retry returned %s after its context ended", d)
	}
}

func TestRetryAttemptSeesCancellation(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	_, err := Retry(ctx, func(actx context.Context) (int, error) {
		cancel()
		<-actx.Done()
		return 0, actx.Err()
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Retry error = %v; want context.Canceled", err)
	}
}
