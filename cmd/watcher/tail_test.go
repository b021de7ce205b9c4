package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/shopspring/decimal"

	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/internal/logtest"
	"github.com/payments-watcher/watcher/internal/natstest"
	"github.com/payments-watcher/watcher/publish"
)

// lineWriter signals every complete line written to it.
type lineWriter struct {
	logtest.Buffer
	lines chan string
}

func (l *lineWriter) Write(p []byte) (int, error) {
	n, err := l.Buffer.Write(p)
	for _, line := range strings.SplitAfter(string(p), "\n") {
		if strings.HasSuffix(line, "\n") {
			l.lines <- strings.TrimSuffix(line, "\n")
		}
	}
	return n, err
}

// ensurePaymentEvents makes the stream PAYMENT_EVENTS of subjects payments.>.
func ensurePaymentEvents(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	cfg := publish.Config{Stream: "PAYMENT_EVENTS", SubjectPrefix: "payments", DuplicateWindow: time.Minute, Replicas: 1}
	if _, err := publish.EnsureStream(t.Context(), js, cfg); err != nil {
		t.Fatal(err)
	}
}

func TestTailFilters(t *testing.T) {
	ns := natstest.JetStream(t)
	js := natstest.Connect(t, ns.ClientURL())
	ensurePaymentEvents(t, js)
	observed := time.Date(2026, 11, 22, 10, 0, 3, 0, time.UTC)
	for i, st := range []string{"pending", "failed", "completed", "failed"} {
		raw := map[string]string{"pending": "CREATED", "failed": "FAILED", "completed": "COMPLETED"}[st]
		e := event.Event{SpecVersion: event.SpecVersion, Type: event.Type, ID: string(rune('a' + i)), Time: observed,
			Data: event.Data{Source: "cpn", Kind: "payment", ID: "p" + string(rune('0'+i)), Current: event.Status{Status: raw, State: st},
				Amount: &event.Money{Value: decimal.RequireFromString("110.270000"), Currency: "USDC"}}}
		body, _ := json.Marshal(e)
		if _, err := js.Publish(t.Context(), event.Subject("payments", "cpn", "payment", st), body); err != nil {
			t.Fatal(err)
		}
	}
	out := &lineWriter{lines: make(chan string, 16)}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"tail", "--nats", ns.ClientURL(), "--all", "--state", "failed"}, out, out)
	}()
	var got []string
	for len(got) < 2 {
		select {
		case l := <-out.lines:
			got = append(got, l)
		case <-time.After(10 * time.Second):
			t.Fatalf("tail printed %q", got)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, l := range got {
		if !strings.Contains(l, "(new) -> FAILED  failed  110.270000 USDC") || !strings.HasPrefix(l, "2026-11-22T10:00:03Z  cpn") {
			t.Errorf("line %q", l)
		}
	}
	if !strings.Contains(got[0], "p1") || !strings.Contains(got[1], "p3") {
		t.Errorf("lines %q, want p1 then p3", got)
	}
	if out.String() != strings.Join(got, "\n")+"\n" {
		t.Errorf("tail printed more than the failures:\n%s", out.String())
	}
}
