package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/internal/natstest"
	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/poller/provider"
	"github.com/payments-watcher/watcher/sim"
)

// oldestOpen walks a source over the simulator with its own adapter and returns the
// oldest item that is not terminal.
func oldestOpen(t *testing.T, s demoSource, baseURL string) diff.Item {
	t.Helper()
	p := poller.Providers[s.provider]
	src, err := p.New(provider.Settings{Name: s.name, BaseURL: baseURL, PageSize: p.MaxPageSize, Values: s.keys}, &provider.Client{})
	if err != nil {
		t.Fatal(err)
	}
	var oldest *diff.Item
	cursor := ""
	for range 1000 {
		page, err := src.Page(t.Context(), provider.Request{Cursor: cursor})
		if err != nil {
			t.Fatalf("%s: %v", s.provider, err)
		}
		for i := range page.Items {
			if !page.Items[i].Status.Terminal {
				oldest = &page.Items[i]
			}
		}
		if cursor = page.Next; cursor == "" {
			break
		}
	}
	if oldest == nil {
		t.Fatalf("%s: no open item in the simulator", s.provider)
	}
	return *oldest
}

// runConfig writes doc as a configuration file in dir and runs the daemon on it until
// the returned stop is called; stop fails the test if the daemon's run failed. Every
// line the daemon logs arrives on the returned writer's channel too.
func runConfig(t *testing.T, dir, doc string) (*lineWriter, func()) {
	t.Helper()
	cfgPath := filepath.Join(dir, "watcher.yaml")
	if err := os.WriteFile(cfgPath, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &lineWriter{lines: make(chan string, 4096)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"run", "--config", cfgPath}, logs, logs) }()
	return logs, func() {
		t.Helper()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}
}

// finalStatus is the terminal status the test forces on each provider's item.
var finalStatus = map[string]struct{ raw, state string }{
	sim.ProviderCPN:         {"FAILED", "failed"},
	sim.ProviderRamp:        {"EXPIRED", "expired"},
	sim.ProviderSettlements: {"settled", "completed"},
	sim.ProviderStripe:      {"rejected", "failed"},
	sim.ProviderCoindirect:  {"CANCELLED", "canceled"},
}

func TestRunAllProvidersAgainstSimulator(t *testing.T) {
	simulator, err := sim.New(sim.Config{Seed: 42, History: 40, HistorySpan: 72 * time.Hour, OpenShare: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	provSrv := httptest.NewServer(simulator.Handler())
	defer provSrv.Close()
	ns := natstest.JetStream(t)

	dir := t.TempDir()
	raw, names := demoConfig(dir, ns.ClientURL(), provSrv.URL, "", "")
	if len(names) != len(demoSources) {
		t.Fatalf("demo configures %v, want all of %d providers", names, len(demoSources))
	}
	doc := strings.ReplaceAll(string(raw), "baseline: emit", "baseline: silent\n    page_size: 5")
	doc = strings.ReplaceAll(doc, "interval: 2s", "interval: 100ms")
	doc = strings.ReplaceAll(doc, "open_refresh: 2s\n    open_refresh_max: 20s", "open_refresh: 1ms\n    open_refresh_max: 0s")
	logs, stop := runConfig(t, dir, doc)
	defer stop()

	baselines := map[string]bool{}
	for len(baselines) < len(names) {
		select {
		case l := <-logs.lines:
			if strings.Contains(l, "baseline walk complete") {
				for _, n := range names {
					if strings.Contains(l, "source="+n+" ") {
						baselines[n] = true
					}
				}
			}
			if strings.Contains(l, "level=ERROR") || strings.Contains(l, "level=WARN") {
				t.Errorf("log: %s", l)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("baselines done: %v\nlogs:\n%s", baselines, logs.String())
		}
	}

	want := map[string]string{} // item id -> subject
	for _, s := range demoSources {
		it := oldestOpen(t, s, provSrv.URL)
		f := finalStatus[s.provider]
		body := fmt.Sprintf(`{"status":%q}`, f.raw)
		resp, err := http.Post(provSrv.URL+"/_sim/items/"+s.provider+"/"+it.ID+"/status", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("forcing %s %s: HTTP %d", s.provider, it.ID, resp.StatusCode)
		}
		want[it.ID] = fmt.Sprintf("payments.%s.%s.%s", s.name, poller.Providers[s.provider].Kind, f.state)
	}

	js := natstest.Connect(t, ns.ClientURL())
	col := newCollector(t, js)
	evs := col.await(len(want))
	got := map[string]string{}
	for i, e := range evs {
		got[e.Data.ID] = col.msgs[i].Subject()
		if !e.Data.Terminal || e.Data.Previous == nil || e.Data.Sequence != 2 {
			t.Errorf("event %+v: want a terminal second transition", e.Data)
		}
		for _, secret := range []string{sim.DefaultStripeSecretKey, sim.DefaultCoindirectHawkKey, "demo-cpn-secret", "client_secret"} {
			if bytes.Contains(col.msgs[i].Data(), []byte(secret)) {
				t.Errorf("event of %s carries %q", e.Data.Source, secret)
			}
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events by item:\n got %v\nwant %v", got, want)
	}
	// Nothing else moved, so nothing else may be published: read a few more cycles' worth.
	if extra, err := col.cons.Fetch(1, jetstream.FetchMaxWait(time.Second)); err == nil {
		for m := range extra.Messages() {
			t.Errorf("unexpected event on %s", m.Subject())
		}
	}
	for _, secret := range []string{sim.DefaultStripeSecretKey, sim.DefaultCoindirectHawkKey, "demo-cpn-secret"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("logs carry %q", secret)
		}
	}
}
