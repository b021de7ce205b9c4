package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
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
	f := WebhookFaults{DropRate: 0.2, DuplicateRate: 0.1, ForgeRate: 0.15, ReplayRate: 0.05, MaxDelay: time.Millisecond, DelayRate: 0.1, InjectRate: 0.02}
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
	h.delayed.Wait()
	c := h.countsNow()
	if got := received.Load(); got != c.Posts || c.Posts != n-c.Dropped+c.Duplicated+c.Replayed+c.Injected || c.Failed != 0 {
		t.Fatalf("received %d, counts %+v", got, c)
	}
	sent := float64(n - c.Dropped)
	for name, r := range map[string]struct{ got, want float64 }{
		"injected":   {float64(c.Injected) / n, f.InjectRate},
		"delayed":    {float64(c.Delayed) / sent, f.DelayRate},
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
	h2.delayed.Wait()
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

// A delayed delivery is posted from its own goroutine: the deliveries after it are not
// held back, and Close's cancellation ends it unsent. Without DelayRate every delivery
// is delayed.
func TestWebhookDelayHoldsNothingBack(t *testing.T) {
	got := make(chan string, 4)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b bytes.Buffer
		b.ReadFrom(r.Body)
		got <- b.String()
	}))
	defer recv.Close()
	s, err := New(Config{Seed: 5, Providers: []string{ProviderCoindirect},
		Webhooks: map[string]WebhookTarget{ProviderCoindirect: {URL: recv.URL}}})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	h := s.byID[ProviderCoindirect].hook
	ctx, cancel := context.WithCancel(context.Background())
	h.deliver(ctx, &hookDelivery{body: []byte("held")}, WebhookFaults{MaxDelay: time.Hour, DelayRate: 1})
	h.deliver(ctx, &hookDelivery{body: []byte("next")}, WebhookFaults{MaxDelay: time.Hour, DelayRate: 1e-9})
	if first := <-got; first != "next" {
		t.Fatalf("first delivery received %q, want the undelayed one", first)
	}
	cancel()
	h.delayed.Wait()
	if c := h.countsNow(); c.Delayed != 1 || c.Posts != 1 || len(got) != 0 {
		t.Fatalf("counts %+v, %d more received; want the delayed delivery unsent", c, len(got))
	}

	for range 50 {
		h.deliver(ctx, &hookDelivery{body: []byte("x")}, WebhookFaults{MaxDelay: time.Hour})
	}
	h.delayed.Wait()
	if c := h.countsNow(); c.Delayed != 51 {
		t.Fatalf("delayed %d of 50 more deliveries with no delay_rate, want every one", c.Delayed-1)
	}
}

// Record reports every delivery with the item and status it carries, which match the
// truth's transition; watcher's listener accepts the changes, refuses the injected
// deliveries as bad signatures, a duplicate as a replay, and a replay presented as old
// as stale (Stripe) or as a replay (Coindirect, Circle); only the changes are hinted.
func TestWebhookRecords(t *testing.T) {
	cases := []struct{ provider, initial, first, final, idField, replayAnswer string }{
		{ProviderStripe, "initialized", "requires_payment", "fulfillment_complete", "id", webhook.ResultStale},
		{ProviderCoindirect, "PENDING", "PROCESSING", "COMPLETE", "uuid", webhook.ResultReplayed},
		{ProviderCPN, "CREATED", "CRYPTO_FUNDS_PENDING", "COMPLETED", "id", webhook.ResultReplayed},
	}
	for _, c := range cases {
		t.Run(c.provider, func(t *testing.T) {
			records := make(chan WebhookDelivery, 64)
			rec := &hintRecorder{}
			var simURL string
			var handler http.Handler
			var once sync.Once
			recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				once.Do(func() {
					v, err := webhook.Verifiers[c.provider](provider.Settings{Name: "src", BaseURL: simURL, Values: map[string]string{
						"webhook_secret": map[string]string{ProviderStripe: DefaultStripeWebhookSecret, ProviderCoindirect: DefaultCoindirectWebhookSecret}[c.provider],
						"api_key":        DefaultCircleCPNKey}}, &provider.Client{BaseURL: simURL})
					if err != nil {
						t.Error(err)
					}
					handler = webhook.NewHandler(webhook.Options{Verifiers: map[string]webhook.Verifier{"src": v},
						Target: func(string) webhook.Hinter { return rec }})
				})
				handler.ServeHTTP(w, r)
			}))
			defer recv.Close()
			f := WebhookFaults{InjectRate: 1, DuplicateRate: 1, ReplayRate: 1, ReplayAge: 10 * time.Minute}
			s, err := New(Config{Seed: 9, Providers: []string{c.provider}, TruthLimit: 100,
				Webhooks: map[string]WebhookTarget{c.provider: {URL: recv.URL + "/webhooks/src", Faults: f,
					Record: func(d WebhookDelivery) { records <- d }}}})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			srv := httptest.NewServer(s.Handler())
			defer srv.Close()
			simURL = srv.URL
			item := adminPost(t, srv.URL+"/_sim/items/"+c.provider, `{"status":"`+c.initial+`"}`)
			id, _ := item[c.idField].(string)
			// Each change: injected, change, duplicate; the second also a replay of the first.
			var got []WebhookDelivery
			for i, st := range []string{c.first, c.final} {
				adminPost(t, srv.URL+"/_sim/items/"+c.provider+"/"+id+"/status", `{"status":"`+st+`"}`)
				for range 3 + i {
					select {
					case d := <-records:
						got = append(got, d)
					case <-time.After(10 * time.Second):
						t.Fatalf("after change %d: %d records: %+v", i+1, len(got), got)
					}
				}
			}
			truth := s.Truth()
			kinds := map[string]int{}
			for _, d := range got {
				kinds[d.Kind]++
				if d.Provider != c.provider || d.Dropped || d.Sent.IsZero() {
					t.Errorf("record %+v", d)
				}
				switch d.Kind {
				case WebhookChange, WebhookDuplicate:
					want := map[string]string{WebhookChange: webhook.ResultAccepted, WebhookDuplicate: webhook.ResultReplayed}[d.Kind]
					if d.ID != id || d.Forged || d.Answer != want {
						t.Errorf("%s record %+v: want item %s, answer %s", d.Kind, d, id, want)
					}
					if !slices.ContainsFunc(truth, func(tr Transition) bool {
						return tr.ID == id && tr.ParentID == "" && !tr.At.After(d.Rendered) && tr.To == d.Status && tr.ToAddendum == d.Addendum
					}) {
						t.Errorf("%s record carries %s+%s, which no transition of the truth by %s reached: %+v", d.Kind, d.Status, d.Addendum, d.Rendered, truth)
					}
				case WebhookReplay:
					if d.ID != id || d.Status != c.first || d.Answer != c.replayAnswer || d.Stale != (c.provider == ProviderStripe) {
						t.Errorf("replay record %+v: want the first change's delivery, answer %s", d, c.replayAnswer)
					}
				case WebhookInjected:
					if !d.Forged || d.Answer != webhook.ResultBadSignature {
						t.Errorf("injected record %+v: want forged, answer %s", d, webhook.ResultBadSignature)
					}
					if d.MadeUp == (d.ID == id) {
						t.Errorf("injected record %+v names item %s: made up %v", d, d.ID, d.MadeUp)
					}
					if !d.MadeUp && (d.Status == c.first || !slices.Contains(simulatedProviders[s.byID[c.provider].idx].final, d.Status)) {
						t.Errorf("injected record %+v on the real item claims %s, want another final status", d, d.Status)
					}
					if d.MadeUp {
						s.mu.RLock()
						_, exists := s.byID[c.provider].lookup(d.ID)
						s.mu.RUnlock()
						if exists {
							t.Errorf("made-up id %s names an item", d.ID)
						}
					}
				}
			}
			var changed []string
			for _, d := range got {
				if d.Kind == WebhookChange {
					changed = append(changed, d.Status)
				}
			}
			if fmt.Sprint(changed) != fmt.Sprint([]string{c.first, c.final}) {
				t.Errorf("changes delivered %v, want [%s %s]", changed, c.first, c.final)
			}
			if kinds[WebhookChange] != 2 || kinds[WebhookDuplicate] != 2 || kinds[WebhookReplay] != 1 || kinds[WebhookInjected] != 2 {
				t.Errorf("records by kind %v", kinds)
			}
			if h := rec.got(); len(h) != 2 || h[0] != id || h[1] != id {
				t.Errorf("hints %v, want the two changes of %s", h, id)
			}
		})
	}
}
