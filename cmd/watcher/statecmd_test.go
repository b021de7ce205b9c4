package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/state"
	"github.com/payments-watcher/watcher/state/bbolt"
	"github.com/payments-watcher/watcher/stateapi"
)

var st0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// writeStateFile writes a state file with two sources and two pending events.
func writeStateFile(t *testing.T, path string) {
	t.Helper()
	s, err := bbolt.Open(path, bbolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	pending := diff.Status{Raw: "CREATED", State: diff.Pending}
	failed := diff.Status{Raw: "FAILED", State: diff.Failed, Terminal: true}
	stalled := diff.Record{Kind: "payment", ID: "p3", Status: pending, Sequence: 1, CreatedAt: st0.Add(-900 * time.Hour), Stalled: true}
	recs := []diff.Record{
		{Kind: "payment", ID: "p1", Status: pending, Sequence: 1, CreatedAt: st0.Add(-time.Hour)},
		{Kind: "payment", ID: "p2", Status: failed, Sequence: 2, CreatedAt: st0.Add(-2 * time.Hour), SettleUntil: st0.Add(time.Hour),
			Nested: []diff.NestedRecord{{Kind: "payment_refund", ID: "r1", Status: diff.Status{Raw: "COMPLETED", State: diff.Completed, Terminal: true}, Sequence: 2}}},
		stalled,
	}
	meta := state.Meta{BaselineDone: true, HighWater: st0.Add(-time.Hour), LastPoll: st0}
	msgs := []event.Message{
		{ID: "e1", Subject: "payments.cpn.payment.pending", Body: []byte(`{}`)},
		{ID: "e2", Subject: "payments.cpn.payment.failed", Body: []byte(`{}`)},
	}
	if err := s.Commit(t.Context(), "cpn", state.Batch{Now: st0, Records: recs, Messages: msgs, Meta: &meta}); err != nil {
		t.Fatal(err)
	}
	ramp := diff.Record{Kind: "ramp_session", ID: "s1", Status: diff.Status{Raw: "PENDING", State: diff.Pending}, Sequence: 1, CreatedAt: st0}
	if err := s.Commit(t.Context(), "ramp", state.Batch{Now: st0, Records: []diff.Record{ramp}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestStateCommandsOffline(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "watcher.db")
	writeStateFile(t, path)

	tests := []struct {
		args []string
		want string
	}{
		{[]string{"sources"}, `SOURCE  ITEMS  OPEN  STALLED  HIGH-WATER            LAST POLL             NOTE
cpn     3      2     1        2026-03-01T11:00:00Z  2026-03-01T12:00:00Z  
ramp    1      1     0        never                 never                 no baseline yet
`},
		{[]string{"open", "cpn"}, "p2\t2026-03-01T10:00:00Z\tFAILED\tsettling\t2026-03-01T12:00:00Z\np1\t2026-03-01T11:00:00Z\tCREATED\tpending\t2026-03-01T12:00:00Z\n"},
		{[]string{"outbox"}, "1\t2026-03-01T12:00:00Z\tpayments.cpn.payment.pending\te1\n2\t2026-03-01T12:00:00Z\tpayments.cpn.payment.failed\te2\n"},
		{[]string{"outbox", "--limit", "1"}, "1\t2026-03-01T12:00:00Z\tpayments.cpn.payment.pending\te1\n"},
		{[]string{"get", "cpn", "p2"}, `{
  "source": "cpn",
  "kind": "payment",
  "id": "p2",
  "current": {
    "status": "FAILED",
    "state": "failed",
    "terminal": true
  },
  "sequence": 2,
  "created_at": "2026-03-01T10:00:00Z",
  "settle_until": "2026-03-01T13:00:00Z",
  "stalled": false,
  "nested": [
    {
      "kind": "payment_refund",
      "id": "r1",
      "current": {
        "status": "COMPLETED",
        "state": "completed",
        "terminal": true
      },
      "sequence": 2
    }
  ]
}
`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			// Flags may come after the arguments.
			out, errOut, err := stateRun(t, append(tt.args, "--state", path)...)
			if err != nil {
				t.Fatalf("%v\n%s", err, errOut)
			}
			if out != tt.want {
				t.Errorf("output:\n%s\nwant:\n%s", out, tt.want)
			}
			if errOut != "watcher state: read from state file "+path+"\n" {
				t.Errorf("stderr %q", errOut)
			}
		})
	}

	out, _, err := stateRun(t, "export", "--state", path, "cpn")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for line := range strings.Lines(out) {
		var r stateapi.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("export line %q: %v", line, err)
		}
		ids = append(ids, r.ID+fmt.Sprint(r.Stalled))
	}
	if fmt.Sprint(ids) != "[p1false p2false p3true]" {
		t.Errorf("export: %v", ids)
	}

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"get", "cpn", "missing"}, `source cpn: item "missing" not found`},
		{[]string{"open", "paypal"}, `unknown source "paypal" (known: cpn, ramp)`},
		{[]string{"export", "paypal"}, `unknown source "paypal" (known: cpn, ramp)`},
		{[]string{"rebaseline", "paypal"}, `unknown source "paypal" (known: cpn, ramp)`},
		{[]string{"get", "cpn"}, "state get: want 2 argument(s), got 1"},
		{[]string{"frobnicate"}, `state: unknown subcommand "frobnicate"`},
		{[]string{"outbox", "--limit", "-1"}, "state outbox: --limit -1 is negative"},
	} {
		_, _, err := stateRun(t, append(tt.args, "--state", path)...)
		if err == nil || err.Error() != tt.want {
			t.Errorf("state %v: %v, want %s", tt.args, err, tt.want)
		}
	}
	if _, _, err := stateRun(t, "sources", "--state", filepath.Join(dir, "missing.db")); err == nil || !strings.Contains(err.Error(), "missing.db: ") {
		t.Errorf("sources of a missing file: %v", err)
	}
	if _, _, err := stateRun(t, "rebaseline", "cpn", "--state", filepath.Join(dir, "missing.db")); err == nil {
		t.Error("rebaseline of a missing file succeeded")
	} else if _, serr := os.Stat(filepath.Join(dir, "missing.db")); serr == nil {
		t.Error("rebaseline created the missing file")
	}

	// Rebaseline writes the flag, which the next watcher run honours.
	if out, _, err := stateRun(t, "rebaseline", "cpn", "--state", path); err != nil || !strings.HasPrefix(out, "source cpn: rebaseline requested") {
		t.Fatalf("rebaseline: %v %q", err, out)
	}
	s, err := bbolt.OpenReadOnly(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.Meta(t.Context(), "cpn")
	s.Close()
	if err != nil || !m.Rebaseline || !m.BaselineDone || !m.LastPoll.Equal(st0) {
		t.Errorf("meta after rebaseline: %+v, %v", m, err)
	}
	if out, _, _ := stateRun(t, "sources", "--state", path); !strings.Contains(out, "rebaseline requested") {
		t.Errorf("sources after rebaseline:\n%s", out)
	}
	if out, _, err := stateRun(t, "check", "--state", path); err != nil || out != "state file "+path+": no problems found\n" {
		t.Errorf("check: %v %q", err, out)
	}
}

func TestStateCommandsWithConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "watcher.db")
	writeStateFile(t, path)
	cfgPath := filepath.Join(dir, "watcher.yaml")
	cfg := fmt.Sprintf("state:\n  path: %s\nhttp:\n  listen: \"\"\nadmin:\n  listen: \"\"\nsources:\n  - name: cpn\n    provider: circle_cpn_payments\n    api_key: k\n  - name: onramp\n    provider: stripe_crypto_onramp_sessions\n    api_key: sk_test_k\n", path)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, err := stateRun(t, "sources", "--config", cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	want := `SOURCE  ITEMS  OPEN  STALLED  HIGH-WATER            LAST POLL             NOTE
cpn     3      2     1        2026-03-01T11:00:00Z  2026-03-01T12:00:00Z  
onramp  0      0     0        never                 never                 no baseline yet
ramp    1      1     0        never                 never                 not configured, no baseline yet
`
	if out != want {
		t.Errorf("sources:\n%s\nwant:\n%s", out, want)
	}
	// Only a configured source can be rebaselined; one the file no longer polls cannot.
	if _, _, err := stateRun(t, "rebaseline", "ramp", "--config", cfgPath); err == nil || err.Error() != `unknown source "ramp" (known: cpn, onramp)` {
		t.Errorf("rebaseline of an unconfigured source: %v", err)
	}

	// While a watcher holds the file and serves no HTTP, the commands say why they stop.
	held, err := bbolt.Open(path, bbolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	// Something else answers at the address given.
	other := httptest.NewServer(http.NotFoundHandler())
	defer other.Close()
	otherAddr := strings.TrimPrefix(other.URL, "http://")
	if _, _, err := stateRun(t, "sources", "--state", path, "--addr", otherAddr); err == nil ||
		err.Error() != "GET http://"+otherAddr+"/state/sources: 404 Not Found: 404 page not found" {
		t.Errorf("sources asked of another server: %v", err)
	}
	for args, want := range map[string]string{
		"sources --config " + cfgPath:        "state file " + path + " is in use by a running watcher, which cannot be asked: admin.listen is empty, so it serves no /state/ endpoints",
		"open cpn --state " + path:           "state file " + path + " is in use by a running watcher, which cannot be asked: its address is unknown: give --config or --addr",
		"rebaseline cpn --config " + cfgPath: "state file " + path + " is in use by a running watcher, which cannot be asked: admin.listen is empty, so it serves no /state/ endpoints",
		"check --state " + path:              "state check needs the watcher stopped: state file " + path + " is in use by a running watcher",
	} {
		_, _, err := stateRun(t, strings.Fields(args)...)
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("state %s: %v\nwant %s", args, err, want)
		}
	}
}

func TestStateCheckDamagedFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "watcher.db")
	writeStateFile(t, path)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	damaged := filepath.Join(dir, "damaged.db")
	if err := os.WriteFile(damaged, data[:3*os.Getpagesize()], 0o600); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"check", "sources"} {
		_, _, err := stateRun(t, cmd, "--state", damaged)
		if !errors.Is(err, bbolt.ErrCorrupt) || !strings.HasPrefix(err.Error(), "state file "+damaged+" is damaged") {
			t.Errorf("state %s of a truncated file: %v", cmd, err)
		}
	}
}
