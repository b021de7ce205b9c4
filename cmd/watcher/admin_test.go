package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/internal/logtest"
	"github.com/payments-watcher/watcher/internal/natstest"
	"github.com/payments-watcher/watcher/publish"
	"github.com/payments-watcher/watcher/state"
	"github.com/payments-watcher/watcher/state/natskv"
)

// An admin listener other hosts can reach, without a token, stops the start.
func TestRunRefusesAnOpenAdminListener(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "watcher.yaml")
	writeFile(t, cfgPath, "state:\n  path: "+dir+"/w.db\nhttp:\n  listen: \"\"\nadmin:\n  listen: 0.0.0.0:9465\nsources:\n"+
		"  - name: cpn\n    provider: circle_cpn_payments\n    api_key: k\n")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var out logtest.Buffer
	err := run(ctx, []string{"run", "--config", cfgPath}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), `admin.listen: "0.0.0.0:9465" can be reached from other hosts, but admin.token_file is not set`) {
		t.Fatalf("run with an open admin listener: %v", err)
	}
	if _, serr := os.Stat(filepath.Join(dir, "w.db")); serr == nil {
		t.Error("the state file was created before the configuration was refused")
	}
}

// The state commands read nats_kv state straight from NATS KV, and ask a running
// replica over its admin socket with --addr.
func TestStateCommandsNATSKV(t *testing.T) {
	ns := natstest.JetStream(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "admin.sock")
	prov := httptest.NewServer(&cpnServer{served: make(chan struct{}, 1)})
	defer prov.Close()
	cfgPath := filepath.Join(dir, "watcher.yaml")
	t.Setenv("KV_CPN_KEY", cpnKey)
	writeFile(t, cfgPath, fmt.Sprintf(`state:
  backend: nats_kv
  nats_kv:
    replicas: 1
    bucket_prefix: kvtest
nats:
  url: %s
http:
  listen: ""
admin:
  listen: unix:%s
cluster:
  replica_id: r1
  lease_ttl: 1s
sources:
  - name: cpn
    provider: circle_cpn_payments
    base_url: %s
    api_key: ${KV_CPN_KEY}
    interval: 1h
`, ns.ClientURL(), sock, prov.URL))

	// Two records and their events, as a replica commits them.
	nc, err := publish.Connect(ns.ClientURL(), publish.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	store, err := natskv.Open(t.Context(), js, natskv.Options{Prefix: "kvtest"})
	if err != nil {
		t.Fatal(err)
	}
	pending := diff.Status{Raw: "CREATED", State: diff.Pending}
	recs := []diff.Record{
		{Kind: "payment", ID: "p1", Status: pending, Sequence: 1, CreatedAt: st0.Add(-time.Hour)},
		{Kind: "payment", ID: "p2", Status: pending, Sequence: 1, CreatedAt: st0.Add(-2 * time.Hour)},
	}
	meta := state.Meta{BaselineDone: true, HighWater: st0.Add(-time.Hour), LastPoll: st0}
	if err := store.Commit(t.Context(), "cpn", state.Batch{Now: st0, Records: recs, Meta: &meta}); err != nil {
		t.Fatal(err)
	}

	out, errOut, err := stateRun(t, "sources", "--config", cfgPath)
	if err != nil {
		t.Fatalf("sources: %v\n%s", err, errOut)
	}
	if !strings.Contains(errOut, "read from the NATS KV state (bucket prefix kvtest)") {
		t.Errorf("sources did not say it read NATS KV: %q", errOut)
	}
	if !regexp.MustCompile(`(?m)^cpn +2 +2 +0 +2026-03-01T11:00:00Z +2026-03-01T12:00:00Z *$`).MatchString(out) {
		t.Errorf("sources:\n%s", out)
	}
	if out, _, err := stateRun(t, "get", "cpn", "p2", "--config", cfgPath); err != nil || !strings.Contains(out, `"id": "p2"`) {
		t.Errorf("get: %v\n%s", err, out)
	}
	if _, _, err := stateRun(t, "check", "--config", cfgPath); err == nil || !strings.Contains(err.Error(), "state check reads a bbolt state file") {
		t.Errorf("check of nats_kv state: %v", err)
	}
	if _, _, err := stateRun(t, "rebaseline", "cpn", "--config", cfgPath); err != nil {
		t.Fatal(err)
	}
	if out := stateOK(t, "sources", "--config", cfgPath); !strings.Contains(out, "rebaseline requested") {
		t.Errorf("sources after rebaseline:\n%s", out)
	}

	// A running replica, asked over its socket.
	d := startDaemon(t, cfgPath)
	defer d.stop(t)
	eventually(t, func() string {
		if !strings.Contains(d.logs.String(), "serving the admin API") {
			return "the admin socket"
		}
		return ""
	})
	out, errOut, err = stateRun(t, "open", "cpn", "--config", cfgPath, "--addr", "unix:"+sock)
	if err != nil {
		t.Fatalf("open asked of the replica: %v\n%s", err, errOut)
	}
	if !strings.Contains(errOut, "read from the running watcher at unix:"+sock) || strings.Count(out, "\n") != 2 {
		t.Errorf("open asked of the replica:\n%s%s", out, errOut)
	}
}
