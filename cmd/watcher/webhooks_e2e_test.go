package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/internal/natstest"
	"github.com/payments-watcher/watcher/sim"
)

// hookAddrs returns two free loopback addresses: the webhook listener's and the
// metrics listener's.
func hookAddrs(t *testing.T) (hooks, metrics string) {
	t.Helper()
	var err error
	if hooks, err = freeLoopback("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if metrics, err = freeLoopback("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	return hooks, metrics
}

// With webhooks from the simulator, a forced status change reaches the stream through
// the hint although neither the interval nor the refresh period (1h) comes round; a
// forged delivery is refused and counted.
func TestWebhookHintReachesStream(t *testing.T) {
	hooksAddr, httpAddr := hookAddrs(t)
	hooks := demoWebhooks(hooksAddr, sim.WebhookFaults{})
	simulator, err := sim.New(sim.Config{Seed: 5, History: 10, HistorySpan: time.Hour, OpenShare: 1,
		Providers: []string{sim.ProviderStripe}, Webhooks: map[string]sim.WebhookTarget{sim.ProviderStripe: hooks[sim.ProviderStripe]}})
	if err != nil {
		t.Fatal(err)
	}
	defer simulator.Close()
	provSrv := httptest.NewServer(simulator.Handler())
	defer provSrv.Close()
	ns := natstest.JetStream(t)

	dir := t.TempDir()
	raw, _ := demoConfigHooks(dir, ns.ClientURL(), provSrv.URL, httpAddr, "", hooksAddr)
	doc := string(raw)
	// Only the Stripe source, polled once an hour.
	start := strings.Index(doc, "  - name: ")
	var keep []string
	for _, block := range strings.Split(doc[start:], "  - name: ")[1:] {
		if strings.Contains(block, "provider: "+sim.ProviderStripe+"\n") {
			keep = append(keep, "  - name: "+block)
		}
	}
	doc = doc[:start] + strings.Join(keep, "")
	doc = strings.ReplaceAll(doc, "interval: 2s", "interval: 1h")
	doc = strings.ReplaceAll(doc, "open_refresh: 2s", "open_refresh: 1h")
	doc = strings.ReplaceAll(doc, "baseline: emit", "baseline: silent")
	logs, stop := runConfig(t, dir, doc)
	defer stop()
	waitLog(t, logs, "baseline walk complete")

	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	events := make(chan event.Event, 64)
	sub, err := nc.Subscribe("payments.>", func(m *nats.Msg) {
		if e, err := event.Decode(m.Data); err == nil {
			events <- e
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	created := simPost(t, provSrv.URL+"/_sim/items/"+sim.ProviderStripe, `{"status":"initialized"}`)
	id := created["id"].(string)
	// The new item is found only by a walk (an hour away) or a hint: the hint comes
	// with its first change.
	simPost(t, provSrv.URL+"/_sim/items/"+sim.ProviderStripe+"/"+id+"/status", `{"status":"rejected"}`)
	deadline := time.After(30 * time.Second)
	for found := false; !found; {
		select {
		case e := <-events:
			found = strings.Contains(string(mustJSON(t, e)), id)
		case <-deadline:
			t.Fatalf("no event for %s within 30s, with the refresh period at 1h", id)
		}
	}

	// A forged delivery is refused and counted, and reads nothing.
	if err := simulator.SetWebhookFaults(sim.ProviderStripe, sim.WebhookFaults{ForgeRate: 1}); err != nil {
		t.Fatal(err)
	}
	created = simPost(t, provSrv.URL+"/_sim/items/"+sim.ProviderStripe, `{"status":"initialized"}`)
	simPost(t, provSrv.URL+"/_sim/items/"+sim.ProviderStripe+"/"+created["id"].(string)+"/status", `{"status":"rejected"}`)
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		m := metricsText(t, "http://"+httpAddr+"/metrics")
		if strings.Contains(m, `watcher_webhooks_total{result="bad_signature",source="onramp"} 1`) {
			if !strings.Contains(m, `watcher_webhooks_total{result="accepted",source="onramp"} 1`) {
				t.Fatalf("accepted deliveries:\n%s", grepLines(m, "watcher_webhooks_total"))
			}
			break
		}
		if time.Now().After(end) {
			t.Fatalf("forged delivery not counted:\n%s", grepLines(m, "watcher_webhooks_total"))
		}
	}
}

func waitLog(t *testing.T, logs *lineWriter, want string) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		select {
		case l := <-logs.lines:
			if strings.Contains(l, want) {
				return
			}
		case <-deadline:
			t.Fatalf("no log line with %q", want)
		}
	}
}

func simPost(t *testing.T, url, body string) map[string]any {
	t.Helper()
	resp, err := http.Post(url, "application/json", bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode/100 != 2 {
		t.Fatalf("POST %s: %d %v", url, resp.StatusCode, err)
	}
	return out
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func metricsText(t *testing.T, url string) string {
	resp, err := http.Get(url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
