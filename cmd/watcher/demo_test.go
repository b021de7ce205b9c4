package main

import (
	"context"
	"github.com/payments-watcher/watcher/internal/logtest"
	"os"
	"strings"
	"testing"
	"time"
)

// The demo shows every kind of every provider, and leaves nothing behind.
func TestDemoShowsEveryKind(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	kinds := map[string]bool{}
	for _, k := range []string{"cpn payment", "cpn payment_refund", "cpn payment_rfi", "cpn payment_onchain_transaction",
		"ramp ramp_session", "settlements settlement", "settlements settlement_detail", "onramp onramp_session",
		"coindirect payment", "coindirect payment_transaction"} {
		kinds[k] = false
	}
	out := &lineWriter{lines: make(chan string, 4096)}
	errOut := &logtest.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"demo", "--seed", "3", "--rate", "2", "--nats-listen", "127.0.0.1:0", "--http-listen", "", "--admin-listen", "", "--color", "never"}, out, errOut)
	}()
	missing := func() []string {
		var m []string
		for k, seen := range kinds {
			if !seen {
				m = append(m, k)
			}
		}
		return m
	}
	deadline := time.After(90 * time.Second)
	for len(missing()) > 0 {
		select {
		case l := <-out.lines:
			f := strings.Fields(l)
			if len(f) < 3 {
				t.Fatalf("line %q", l)
			}
			if _, ok := kinds[f[1]+" "+f[2]]; !ok {
				t.Fatalf("unexpected source and kind in %q", l)
			}
			kinds[f[1]+" "+f[2]] = true
		case err := <-done:
			t.Fatalf("demo stopped: %v\n%s", err, errOut.String())
		case <-deadline:
			t.Fatalf("no event of %v\nstderr:\n%s", missing(), errOut.String())
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Fatalf("demo left %d entries in its temporary directory's parent", len(left))
	}
}
