package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/poller/provider"
	"github.com/payments-watcher/watcher/webhook"
)

// hintRecorder is a source's poller as the webhook handler sees it.
type hintRecorder struct {
	mu  sync.Mutex
	ids []string
}

func (h *hintRecorder) Hint(id string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ids = append(h.ids, id)
	return poller.HintQueued
}

func (h *hintRecorder) got() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.ids...)
}

// Each provider's delivery of a forced status change verifies with watcher's verifier
// and names the item; a forged one is refused.
func TestWebhookDeliveriesVerify(t *testing.T) {
	cases := []struct{ provider, status, idField string }{
		{ProviderStripe, "rejected", "id"},
		{ProviderCoindirect, "CANCELLED", "uuid"},
		{ProviderCPN, "FAILED", "id"},
	}
	for _, c := range cases {
		t.Run(c.provider, func(t *testing.T) {
			for _, forge := range []bool{false, true} {
				rec := &hintRecorder{}
				var results sync.Map
				var simURL string
				recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					factory := webhook.Verifiers[c.provider]
					v, err := factory(provider.Settings{Name: "src", BaseURL: simURL, Values: map[string]string{
						"webhook_secret": map[string]string{ProviderStripe: DefaultStripeWebhookSecret, ProviderCoindirect: DefaultCoindirectWebhookSecret}[c.provider],
						"api_key":        DefaultCircleCPNKey}}, &provider.Client{BaseURL: simURL})
					if err != nil {
						t.Error(err)
						return
					}
					h := webhook.NewHandler(webhook.Options{Verifiers: map[string]webhook.Verifier{"src": v},
						Target: func(string) webhook.Hinter { return rec }})
					rw := httptest.NewRecorder()
					h.ServeHTTP(rw, r)
					results.Store(rw.Code, true)
					w.WriteHeader(rw.Code)
				}))
				defer recv.Close()
				f := WebhookFaults{}
				if forge {
					f.ForgeRate = 1
				}
				s, err := New(Config{Seed: 7, Providers: []string{c.provider},
					Webhooks: map[string]WebhookTarget{c.provider: {URL: recv.URL + "/webhooks/src", Faults: f}}})
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				srv := httptest.NewServer(s.Handler())
				defer srv.Close()
				simURL = srv.URL
				item := adminPost(t, srv.URL+"/_sim/items/"+c.provider, "")
				id, _ := item[c.idField].(string)
				adminPost(t, srv.URL+"/_sim/items/"+c.provider+"/"+id+"/status", `{"status":"`+c.status+`"}`)
				deadline := time.Now().Add(10 * time.Second)
				for {
					n, _ := s.WebhookCounts(c.provider)
					if n.Posts == 1 && n.Posts == n.Queued {
						if _, ok := results.Load(http.StatusAccepted); ok || n.Failed == 1 {
							break
						}
					}
					if time.Now().After(deadline) {
						t.Fatalf("forge=%v: counts %+v", forge, n)
					}
					time.Sleep(10 * time.Millisecond)
				}
				got := rec.got()
				if forge {
					if len(got) != 0 {
						t.Fatalf("forged delivery hinted %v", got)
					}
					if _, ok := results.Load(http.StatusUnauthorized); !ok {
						t.Fatal("forged delivery not refused with 401")
					}
				} else if len(got) != 1 || got[0] != id {
					t.Fatalf("hints %v, want [%s]", got, id)
				}
			}
		})
	}
}

func adminPost(t *testing.T, url, body string) map[string]any {
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

// Each delivery fault happens at about its rate, and the POSTs made are exactly the
// deliveries not dropped plus the duplicates and replays.
func TestWebhookFaultRates(t *testing.T) {
	var received atomic.Int64
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		received.Add(1)
		w.WriteHeader(http.StatusAccepted)
	}))
	defer recv.Close()
	f := WebhookFaults{DropRate: 0.2, DuplicateRate: 0.1, ForgeRate: 0.15, ReplayRate: 0.05, MaxDelay: time.Millisecond}
	s, err := New(Config{Seed: 11, Providers: []string{ProviderCoindirect},
		Webhooks: map[string]WebhookTarget{ProviderCoindirect: {URL: recv.URL + "/webhooks/coindirect", Faults: f}}})
	if err != nil {
		t.Fatal(err)
	}
	s.Close() // the test drives the sender itself
	h := s.byID[ProviderCoindirect].hook
	const n = 2000
	for i := range n {
		h.deliver(context.Background(), &hookDelivery{body: fmt.Appendf(nil, `{"n":%d}`, i)}, f)
	}
	c := h.countsNow()
	if got := received.Load(); got != c.Posts || c.Posts != n-c.Dropped+c.Duplicated+c.Replayed || c.Failed != 0 {
		t.Fatalf("received %d, counts %+v", got, c)
	}
	if c.Delayed != n-c.Dropped {
		t.Fatalf("delayed %d, want every delivery not dropped (%d)", c.Delayed, n-c.Dropped)
	}
	sent := float64(n - c.Dropped)
	for name, r := range map[string]struct{ got, want float64 }{
		"dropped":    {float64(c.Dropped) / n, f.DropRate},
		"duplicated": {float64(c.Duplicated) / sent, f.DuplicateRate},
		"forged":     {float64(c.Forged) / sent, f.ForgeRate},
		"replayed":   {float64(c.Replayed) / sent, f.ReplayRate},
	} {
		if r.got < r.want*0.75 || r.got > r.want*1.25 {
			t.Errorf("%s rate %.3f, want about %.3f", name, r.got, r.want)
		}
	}
	// The same seed makes the same faults.
	s2, _ := New(Config{Seed: 11, Providers: []string{ProviderCoindirect},
		Webhooks: map[string]WebhookTarget{ProviderCoindirect: {URL: recv.URL + "/webhooks/coindirect", Faults: f}}})
	s2.Close()
	h2 := s2.byID[ProviderCoindirect].hook
	for i := range n {
		h2.deliver(context.Background(), &hookDelivery{body: fmt.Appendf(nil, `{"n":%d}`, i)}, f)
	}
	if c2 := h2.countsNow(); c2 != c {
		t.Fatalf("same seed: %+v, then %+v", c, c2)
	}
}

// Reorder sends a batch of queued deliveries shuffled.
func TestWebhookReorder(t *testing.T) {
	var mu sync.Mutex
	var order []string
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b bytes.Buffer
		b.ReadFrom(r.Body)
		mu.Lock()
		order = append(order, b.String())
		mu.Unlock()
	}))
	defer recv.Close()
	s, err := New(Config{Seed: 3, Providers: []string{ProviderStripe},
		Webhooks: map[string]WebhookTarget{ProviderStripe: {URL: recv.URL, Faults: WebhookFaults{Reorder: 8}}}})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	h := s.byID[ProviderStripe].hook
	for i := range 8 {
		h.q <- &hookDelivery{body: fmt.Appendf(nil, "%d", i)}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.run(ctx); close(done) }()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		mu.Lock()
		k := len(order)
		mu.Unlock()
		if k == 8 || time.Now().After(deadline) {
			break
		}
	}
	cancel()
	<-done
	if c := h.countsNow(); c.Reordered != 1 || len(order) != 8 {
		t.Fatalf("counts %+v, order %v", c, order)
	}
	if fmt.Sprint(order) == "[0 1 2 3 4 5 6 7]" {
		t.Fatalf("batch sent in order")
	}
}

func TestWebhookConfigValidated(t *testing.T) {
	_, err := New(Config{Webhooks: map[string]WebhookTarget{
		ProviderRamp:   {URL: "http://x"},
		ProviderStripe: {URL: "ftp://x", Faults: WebhookFaults{DropRate: 2, MaxDelay: -1}},
	}})
	if err == nil {
		t.Fatal("invalid webhooks accepted")
	}
	for _, want := range []string{"sends no webhooks", "not an http(s) URL", "drop_rate", "max_delay"} {
		if !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}
