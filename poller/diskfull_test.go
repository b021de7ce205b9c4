package poller

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/state"
	"github.com/payments-watcher/watcher/state/bbolt"
)

// swappable forwards to a state file that the test can replace, as an operator
// freeing disk space would make a full one writable again.
type swappable struct {
	mu sync.Mutex
	s  *bbolt.Store
}

func (w *swappable) get() *bbolt.Store {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.s
}

func (w *swappable) set(s *bbolt.Store) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.s = s
}

func (w *swappable) Load(ctx context.Context, source string, ids []string) (map[string]*diff.Record, error) {
	return w.get().Load(ctx, source, ids)
}
func (w *swappable) Commit(ctx context.Context, source string, b state.Batch) error {
	return w.get().Commit(ctx, source, b)
}
func (w *swappable) Meta(ctx context.Context, source string) (state.Meta, error) {
	return w.get().Meta(ctx, source)
}
func (w *swappable) OpenItems(ctx context.Context, source string) ([]state.OpenItem, error) {
	return w.get().OpenItems(ctx, source)
}
func (w *swappable) OutboxStats(ctx context.Context) (int, time.Time, error) {
	return w.get().OutboxStats(ctx)
}
func (w *swappable) ForEach(ctx context.Context, source string, fn func(diff.Record) error) error {
	return w.get().ForEach(ctx, source, fn)
}
func (w *swappable) Forget(ctx context.Context, source string, ids []string) error {
	return w.get().Forget(ctx, source, ids)
}

// TestFullDiskFailsTheCycleAndIsRetried: when the state file cannot grow (bbolt's
// size limit, which fails a commit as a full disk does), the page's commit fails, the
// cycle fails without ending the poller, the poller waits an interval rather than
// retrying at once, and once there is room the next cycle stores every item and
// enqueues each event exactly once.
func TestFullDiskFailsTheCycleAndIsRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const items = 60
		src := &fakeSource{pageSize: 10}
		pad := strings.Repeat("x", 3000) // events carry the item: 60 of them need more than 128 KiB
		for i := range items {
			id := fmt.Sprintf("p%02d", i)
			src.add(id, "NEW", now0.Add(-time.Duration(items-i)*time.Minute))
		}
		for i := range src.items {
			src.items[i].Raw = []byte(`{"id":"` + src.items[i].ID + `","pad":"` + pad + `"}`)
		}
		path := filepath.Join(t.TempDir(), "w.db")
		full, err := bbolt.Open(path, bbolt.Options{NoSync: true, MaxSize: 128 << 10})
		if err != nil {
			t.Fatal(err)
		}
		store := &swappable{s: full}
		cfg := testConfig()
		cfg.Baseline = "emit"
		p := New(cfg, src, store, "payments", slog.New(slog.NewTextHandler(io.Discard, nil)))
		p.now = func() time.Time { return now0.Add(time.Since(now0)) }

		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- p.Run(ctx) }()
		defer func() {
			cancel()
			<-done
		}()
		synctest.Wait()
		h := p.Health()
		if h.Err == nil || !strings.Contains(h.Err.Error(), "state file "+path+": commit to source \"src\"") ||
			!strings.Contains(h.Err.Error(), "maximum size") || h.Failures != 1 {
			t.Fatalf("after the first cycle: %+v; want a failed commit naming the file", h)
		}
		stored, _, err := full.Counts("src")
		if err != nil || stored == 0 || stored >= items {
			t.Fatalf("%d items stored before the disk filled (%v); want some, not all; %v", stored, err, h.Err)
		}
		pages := src.pages.Load()

		// No retry before the interval.
		time.Sleep(cfg.Interval / 2)
		synctest.Wait()
		if n := src.pages.Load(); n != pages {
			t.Fatalf("%d page requests half an interval after the failure, want %d", n, pages)
		}

		// Room again.
		if err := full.Close(); err != nil {
			t.Fatal(err)
		}
		roomy, err := bbolt.Open(path, bbolt.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		defer roomy.Close()
		store.set(roomy)
		time.Sleep(cfg.Interval) // the rest of the interval plus the most jitter adds
		synctest.Wait()
		if h := p.Health(); h.Err != nil || h.LastSuccess.IsZero() {
			t.Fatalf("after room was made: %+v", h)
		}
		if n, _, _ := roomy.Counts("src"); n != items {
			t.Fatalf("%d items stored, want %d", n, items)
		}
		entries, err := roomy.Pending(t.Context(), 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]int{}
		for _, e := range entries {
			seen[e.Msg.ID]++
		}
		if len(entries) != items || len(seen) != items {
			t.Fatalf("outbox holds %d events with %d distinct ids, want %d of each", len(entries), len(seen), items)
		}

		// A further cycle finds nothing new.
		time.Sleep(cfg.Interval + cfg.Interval/5)
		synctest.Wait()
		if n, _, _ := roomy.OutboxStats(t.Context()); n != items {
			t.Fatalf("outbox holds %d after an idle cycle, want %d", n, items)
		}
	})
}
