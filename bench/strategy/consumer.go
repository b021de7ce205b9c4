package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/sim"
	"github.com/payments-watcher/watcher/webhook"
)

// naiveConsumer is the only mode's control: a webhook consumer as one is often
// written. It checks that a body has its provider's format (JSON, the event type, an
// item id and a status), never the signature, and trusts it: whenever the status a
// body carries differs from the last one it saw for the item (kept in memory), it
// emits an event. It makes no provider request. It answers each POST with
// "event N" (the N-th event, from 0), "same" or "malformed", so that the simulator's
// delivery records tell which delivery caused which event.
type naiveConsumer struct {
	provider map[string]string // source name -> provider id

	mu        sync.Mutex
	last      map[itemKey]status
	events    []consumerEvent
	malformed int
}

// consumerEvent is one event the naive consumer emitted.
type consumerEvent struct {
	key  itemKey
	prev *status // nil on first sight
	cur  status
	at   time.Time // when it was emitted (wall clock, UTC)
}

func newNaiveConsumer() *naiveConsumer {
	c := &naiveConsumer{provider: map[string]string{}, last: map[itemKey]status{}}
	for _, s := range hookSources() {
		c.provider[s.Name] = s.Provider
	}
	return c
}

func (c *naiveConsumer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	prov, ok := c.provider[strings.TrimPrefix(r.URL.Path, "/webhooks/")]
	if r.Method != http.MethodPost || !ok {
		http.Error(w, "no such source", http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, webhook.DefaultMaxBody))
	id, st, ok := parseHook(prov, body)
	if err != nil || !ok {
		c.mu.Lock()
		c.malformed++
		c.mu.Unlock()
		http.Error(w, "malformed", http.StatusBadRequest)
		return
	}
	key := itemKey{prov, poller.Providers[prov].Kind, "", id}
	c.mu.Lock()
	prev, seen := c.last[key]
	if seen && prev == st {
		c.mu.Unlock()
		_, _ = io.WriteString(w, "same\n")
		return
	}
	c.last[key] = st
	e := consumerEvent{key: key, cur: st, at: time.Now().UTC()}
	if seen {
		e.prev = &prev
	}
	n := len(c.events)
	c.events = append(c.events, e)
	c.mu.Unlock()
	fmt.Fprintf(w, "event %d\n", n)
}

// parseHook reads the item id and status of a provider's webhook body; false when the
// body does not have the provider's format or names no item.
func parseHook(provider string, body []byte) (string, status, bool) {
	switch provider {
	case sim.ProviderStripe:
		var v struct {
			Type string `json:"type"`
			Data struct {
				Object struct {
					ID     string `json:"id"`
					Status string `json:"status"`
				} `json:"object"`
			} `json:"data"`
		}
		if json.Unmarshal(body, &v) != nil || v.Type != "crypto.onramp_session_updated" {
			return "", status{}, false
		}
		o := v.Data.Object
		return o.ID, status{raw: o.Status}, o.ID != "" && o.Status != ""
	case sim.ProviderCoindirect:
		var v struct {
			Source string `json:"source"`
			Data   struct {
				UUID   string `json:"uuid"`
				Status string `json:"status"`
			} `json:"data"`
		}
		if json.Unmarshal(body, &v) != nil || v.Source != "payment" {
			return "", status{}, false
		}
		return v.Data.UUID, status{raw: v.Data.Status}, v.Data.UUID != "" && v.Data.Status != ""
	case sim.ProviderCPN:
		var v struct {
			NotificationType string `json:"notificationType"`
			Notification     struct {
				ID             string `json:"id"`
				Status         string `json:"status"`
				StatusAddendum string `json:"statusAddendum"`
			} `json:"notification"`
		}
		if json.Unmarshal(body, &v) != nil || !strings.HasPrefix(v.NotificationType, "cpn.payment.") {
			return "", status{}, false
		}
		n := v.Notification
		return n.ID, status{n.Status, n.StatusAddendum}, n.ID != "" && n.Status != ""
	}
	return "", status{}, false
}

// snapshot returns the events and each item's last status.
func (c *naiveConsumer) snapshot() ([]consumerEvent, map[itemKey]status, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	last := make(map[itemKey]status, len(c.last))
	for k, v := range c.last {
		last[k] = v
	}
	return slices.Clone(c.events), last, c.malformed
}

// consumerResult is how the naive consumer's events compare with the truth, over the
// top-level items of the providers that send webhooks (the only ones a webhook can
// report).
type consumerResult struct {
	Sources []string
	Faults  sim.WebhookFaults
	// Sent are the simulator's counts by source; Deliveries the POSTs the consumer
	// received, Malformed those it refused.
	Sent                  map[string]sim.WebhookCounts
	Deliveries, Malformed int
	// Settled reports that every delivery was made before CatchUp ran out.
	Settled bool
	// Events emitted, by the delivery that caused them: forged ones (injected, naming
	// a made-up item or a real item with another final status), replays, and genuine
	// deliveries (a change or its duplicate).
	Events, FromMadeUp, FromForgedStatus, FromReplay, FromGenuine int
	// Of the genuine ones: InOrder follow the item's truth; OutOfOrder report a status
	// the truth had before one already reported, for the first time; Repeated report
	// a status already reported (a transition reported twice).
	InOrder, OutOfOrder, Repeated int
	// NotInTruth counts the events (any cause) that are not a subsequence of their
	// item's truth: an item the truth never changed, a status it never had, a status
	// it had before one already reported, or one it had not reached yet.
	NotInTruth int
	// Truth: transitions of those items (Creations of them, for which providers send
	// no webhook), items, and items whose last status is final.
	TruthChanges, Creations, TruthItems, TruthFinal int
	// MissedFinal counts items whose final status is not the consumer's last status
	// for them: never delivered (every delivery of it dropped) or Overwritten by a
	// later delivery (a replay, a forged one, or an earlier status arriving late).
	MissedFinal, NeverDelivered, Overwritten int
	// WrongLast counts the items (final or not) whose last status in the consumer
	// differs from the truth's; FalseFinal those it holds a final status for that
	// the truth's item does not end in (made-up items included).
	WrongLast, FalseFinal int
	// Unreported counts the transitions (creations aside) no genuine in-order event
	// reports.
	Unreported int
	// DelayNew and DelayOld are change -> event for the genuine in-order events.
	DelayNew, DelayOld []time.Duration
	Examples           []string
	// Took is the wall time of the engine run and of the wait for the last deliveries.
	Took [2]time.Duration
}

func (r *consumerResult) example(format string, args ...any) {
	if len(r.Examples) < maxExamples {
		r.Examples = append(r.Examples, fmt.Sprintf(format, args...))
	}
}

// runConsumer is the only mode: one simulator delivers its webhooks, with the faults,
// to the naive consumer while its engine runs; nothing polls.
func runConsumer(ctx context.Context, o options) (*result, error) {
	progress := func(format string, args ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "%s  "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05")}, args...)...)
		}
	}
	res := &result{Opts: o, Started: time.Now().UTC(), SameScenario: true}
	clock := &simClock{start: time.Now().UTC().Truncate(time.Second)}
	cons := newNaiveConsumer()
	srv := httptest.NewServer(cons)
	defer srv.Close()
	log := &hookLog{}
	cfg := simConfig(o, clock.Now)
	cfg.Webhooks = hookTargets(o.Hooks, srv.URL, log)
	s, err := sim.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("simulator: %w", err)
	}
	defer s.Close()

	progress("run: engine running for %s; its webhooks go to the naive consumer, nothing polls", o.Duration)
	res.Offset = clock.release()
	began := time.Now()
	simCtx, stopSim := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = s.Run(simCtx); close(done) }()
	err = wait(ctx, o.Duration)
	stopSim()
	<-done
	if err != nil {
		return nil, err
	}
	s.Step(clock.Now())
	truth := s.Truth()
	res.Truth = len(truth)
	quiet := time.Now()
	cr := &consumerResult{Faults: o.Hooks.Faults, Sent: map[string]sim.WebhookCounts{}}
	cr.Took[0] = quiet.Sub(began)

	progress("deliveries: engine stopped after %d transitions; waiting up to %s for the last (delayed) deliveries", len(truth), o.CatchUp)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for deadline := quiet.Add(o.CatchUp); !cr.Settled && time.Now().Before(deadline); {
		if cr.Settled = log.settled(s); cr.Settled {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
	cr.Took[1] = time.Since(quiet)
	s.Close()

	ti, err := indexTruth(truth)
	if err != nil {
		return nil, err
	}
	events, last, malformed := cons.snapshot()
	ds := log.snapshot()
	checkConsumer(cr, events, last, ds, ti, res.Offset)
	cr.Malformed = malformed
	for _, d := range ds {
		if d.Code != 0 {
			cr.Deliveries++
		}
	}
	for _, src := range hookSources() {
		cr.Sources = append(cr.Sources, src.Name)
		if c, ok := s.WebhookCounts(src.Provider); ok {
			cr.Sent[src.Name] = c
		}
	}
	slices.Sort(cr.Sources)
	res.Consumer = cr
	return res, nil
}

// checkConsumer compares the consumer's events and last statuses with the truth of
// the webhook providers' top-level items; ds are the simulator's delivery records,
// whose answers name the events they caused.
func checkConsumer(r *consumerResult, events []consumerEvent, last map[itemKey]status, ds []sim.WebhookDelivery, ti *truthIndex, offset time.Duration) {
	hookProv := map[string]bool{}
	for _, s := range hookSources() {
		hookProv[s.Provider] = true
	}
	chains := map[itemKey]*chain{}
	for k, c := range ti.chains {
		if hookProv[k.provider] && k.parent == "" {
			chains[k] = c
			r.TruthItems++
			r.TruthChanges += len(c.states) - 1
			if c.states[0].raw == "" {
				r.Creations++
			}
			if c.final {
				r.TruthFinal++
			}
		}
	}
	cause := make([]sim.WebhookDelivery, len(events))
	for _, d := range ds {
		if n, ok := strings.CutPrefix(d.Answer, "event "); ok {
			if i, err := strconv.Atoi(n); err == nil && i >= 0 && i < len(events) {
				cause[i] = d
			}
		}
	}

	r.Events = len(events)
	type itemState struct {
		pos      int // index in the chain of the last genuine in-order status
		reported map[status]bool
		reached  map[int]bool // chain indexes reported in order
		final    bool         // a genuine event reported the final status
	}
	items := map[itemKey]*itemState{}
	for i, e := range events {
		c := chains[e.key]
		st := items[e.key]
		if st == nil {
			st = &itemState{reported: map[status]bool{}, reached: map[int]bool{}}
			items[e.key] = st
		}
		d := cause[i]
		switch {
		case d.Kind == sim.WebhookInjected && d.MadeUp:
			r.FromMadeUp++
		case d.Kind == sim.WebhookInjected:
			r.FromForgedStatus++
		case d.Kind == sim.WebhookReplay:
			r.FromReplay++
		default:
			r.FromGenuine++
		}
		genuine := d.Kind != sim.WebhookInjected && d.Kind != sim.WebhookReplay
		if c == nil {
			r.NotInTruth++
			r.example("%s: event %s -> %s (%s delivery) for an item the truth never changed", e.key, prevText(e.prev), e.cur, deliveryClass(d))
			st.reported[e.cur] = true
			continue
		}
		j := matchCur(c, st.pos, e.cur, e.at.Add(-offset))
		if j >= 0 && c.at[j].Add(offset).After(e.at) {
			r.NotInTruth++ // a status the item reached only later
			r.example("%s: event %s -> %s (%s delivery) before the item reached it (truth %v)", e.key, prevText(e.prev), e.cur, deliveryClass(d), c.states)
			if genuine {
				r.OutOfOrder++
			}
			st.reported[e.cur] = true
			continue
		}
		switch {
		case j >= 0 && genuine:
			r.InOrder++
			st.pos, st.reached[j] = j, true
			if j == len(c.states)-1 && c.final {
				st.final = true
			}
			if ti.isNew(e.key) {
				r.DelayNew = append(r.DelayNew, e.at.Sub(c.at[j].Add(offset)))
			} else {
				r.DelayOld = append(r.DelayOld, e.at.Sub(c.at[j].Add(offset)))
			}
		case j >= 0:
			// A replay or forged delivery that happens to continue the truth.
		default:
			r.NotInTruth++
			if genuine && st.reported[e.cur] {
				r.Repeated++
			} else if genuine {
				r.OutOfOrder++
			}
			r.example("%s: event %s -> %s (%s delivery) not in the truth after %s (truth %v)", e.key, prevText(e.prev), e.cur, deliveryClass(d), c.states[st.pos], c.states)
		}
		st.reported[e.cur] = true
	}

	for k, c := range chains {
		for j := 1; j < len(c.states); j++ {
			if j == 1 && c.states[0].raw == "" {
				continue // a creation: no webhook is sent for it
			}
			if st := items[k]; st == nil || !st.reached[j] {
				r.Unreported++
			}
		}
		got, seen := last[k]
		if seen && got == c.lastState() {
			continue
		}
		r.WrongLast++
		if c.final {
			r.MissedFinal++
			if st := items[k]; st != nil && st.final {
				r.Overwritten++
				r.example("%s: final status %s overwritten; the consumer ends at %s", k, c.lastState(), got)
			} else {
				r.NeverDelivered++
			}
		}
		if seen {
			if fin, _ := terminal(k.provider, k.kind, got.raw); fin {
				r.FalseFinal++
			}
		}
	}
	for k, got := range last {
		if chains[k] != nil {
			continue
		}
		r.WrongLast++ // the truth never changed it: the consumer holds what a forged delivery said
		if fin, _ := terminal(k.provider, k.kind, got.raw); fin {
			r.FalseFinal++
		}
	}
}
