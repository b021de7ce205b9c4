package main

import (
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/payments-watcher/watcher/config"
	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/sim"
	"github.com/payments-watcher/watcher/webhook"
)

// Webhook modes (-webhooks).
const (
	// hooksOff: polling only, no webhooks.
	hooksOff = "off"
	// hooksHints: watcher's simulator delivers webhooks, with faults, to a listener
	// built as the daemon builds it; a verified one makes the poller read the item.
	hooksHints = "hints"
	// hooksOnly: a control. The same faulty deliveries go to a naive consumer that
	// trusts each body; nothing polls.
	hooksOnly = "only"
)

// hookOptions shape the webhook deliveries of the hints and only modes.
type hookOptions struct {
	// Mode is one of hooksOff, hooksHints, hooksOnly.
	Mode string
	// Faults are the simulator's delivery faults for every provider with webhooks.
	Faults sim.WebhookFaults
	// PollingFigure is the requests per detected transition (run and catch-up) of a
	// polling-only run at the same scale, which the hints run is held to; 0: none given.
	PollingFigure float64
}

// defaultHookOptions: webhooks off; the faults the webhook modes use unless told
// otherwise.
func defaultHookOptions() hookOptions {
	return hookOptions{Mode: hooksOff, Faults: sim.WebhookFaults{
		DropRate:      0.2,
		DuplicateRate: 0.05,
		DelayRate:     0.1,
		MaxDelay:      5 * time.Second,
		Reorder:       4,
		InjectRate:    0.02,
		ReplayRate:    0.02,
		// Beyond webhook.Tolerance, so that a replayed Stripe delivery is stale.
		ReplayAge: 2 * webhook.Tolerance,
	}}
}

// hookSources are the bench's sources whose providers send webhooks in the simulator
// and have a verifier in watcher.
func hookSources() []sim.Source {
	var out []sim.Source
	for _, s := range benchSources {
		if _, ok := webhook.Verifiers[s.Provider]; ok {
			out = append(out, s)
		}
	}
	return out
}

// hookSecrets are the simulator's default webhook secrets by provider; Circle signs
// with a key the verifier fetches, so it has none.
var hookSecrets = map[string]string{
	sim.ProviderStripe:     sim.DefaultStripeWebhookSecret,
	sim.ProviderCoindirect: sim.DefaultCoindirectWebhookSecret,
}

// hookKeyLines are the configuration lines a source of provider needs for webhooks in
// mode: its webhook_secret in the hints mode, nothing otherwise.
func hookKeyLines(mode, provider, indent string) string {
	if secret := hookSecrets[provider]; mode == hooksHints && secret != "" {
		return fmt.Sprintf("%swebhook_secret: %q\n", indent, secret)
	}
	return ""
}

// hookTargets points every provider with webhooks at /webhooks/{source} under
// baseURL, with the faults of o, recording each delivery in rec.
func hookTargets(o hookOptions, baseURL string, rec *hookLog) map[string]sim.WebhookTarget {
	out := map[string]sim.WebhookTarget{}
	for _, s := range hookSources() {
		out[s.Provider] = sim.WebhookTarget{URL: baseURL + "/webhooks/" + s.Name, Faults: o.Faults, Record: rec.add}
	}
	return out
}

// hookLog keeps every delivery the simulator reports. It is safe for concurrent use.
type hookLog struct {
	mu  sync.Mutex
	all []sim.WebhookDelivery
}

func (l *hookLog) add(d sim.WebhookDelivery) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all = append(l.all, d)
}

func (l *hookLog) snapshot() []sim.WebhookDelivery {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.all)
}

// settled reports whether every change the simulator s queued for a delivery has been
// dropped or answered.
func (l *hookLog) settled(s *sim.Sim) bool {
	done := map[string]int64{}
	for _, d := range l.snapshot() {
		if d.Kind == sim.WebhookChange {
			done[d.Provider]++
		}
	}
	for _, src := range hookSources() {
		c, ok := s.WebhookCounts(src.Provider)
		if ok && done[src.Provider] < c.Queued {
			return false
		}
	}
	return true
}

// hookListener is watcher's webhook listener as the daemon builds it (daemon
// serveWebhooks): webhook.Build's verifiers from the sources' settings, a Handler
// whose Target is each source's poller, and the watcher_webhooks_total counters.
type hookListener struct {
	h   *webhook.Handler
	reg *prometheus.Registry
	// Sources are the sources that take webhooks (a verifier was built).
	Sources []string
}

func newHookListener(cfg *config.Config, pollers []*poller.Poller, log *slog.Logger) (*hookListener, error) {
	names := make([]string, len(cfg.Sources))
	for i, s := range cfg.Sources {
		names[i] = s.Name
	}
	l := &hookListener{reg: prometheus.NewRegistry()}
	met, err := webhook.NewMetrics(l.reg, names)
	if err != nil {
		return nil, fmt.Errorf("webhook metrics: %w", err)
	}
	verifiers, err := webhook.Build(cfg.Sources, "bench", log.With("component", "webhooks"))
	if err != nil {
		return nil, err
	}
	for name := range verifiers {
		l.Sources = append(l.Sources, name)
	}
	slices.Sort(l.Sources)
	byName := map[string]*poller.Poller{}
	for _, p := range pollers {
		byName[p.Name()] = p
	}
	l.h = webhook.NewHandler(webhook.Options{
		Verifiers: verifiers,
		Target: func(source string) webhook.Hinter {
			if p := byName[source]; p != nil {
				return p
			}
			return nil
		},
		MaxBody: cfg.Webhooks.MaxBody,
		Metrics: met,
		Log:     log.With("component", "webhooks"),
	})
	return l, nil
}

// results returns the listener's watcher_webhooks_total by source and result, the
// zero series left out.
func (l *hookListener) results() (map[string]map[string]int, error) {
	mfs, err := l.reg.Gather()
	if err != nil {
		return nil, fmt.Errorf("webhook metrics: %w", err)
	}
	out := map[string]map[string]int{}
	for _, mf := range mfs {
		if mf.GetName() != "watcher_webhooks_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var source, result string
			for _, lp := range m.GetLabel() {
				switch lp.GetName() {
				case "source":
					source = lp.GetValue()
				case "result":
					result = lp.GetValue()
				}
			}
			if n := int(m.GetCounter().GetValue()); n > 0 {
				if out[source] == nil {
					out[source] = map[string]int{}
				}
				out[source][result] = n
			}
		}
	}
	return out, nil
}

// lateHandler serves with the handler set by set, and 503 until then.
type lateHandler struct{ h atomic.Pointer[http.Handler] }

func (l *lateHandler) set(h http.Handler) { l.h.Store(&h) }

func (l *lateHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := l.h.Load(); h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	http.Error(w, "not ready", http.StatusServiceUnavailable)
}

// countNotFound counts the single-item reads (GETs of a provider path that is not its
// list path) that h answers 404: reads of ids the simulator never made.
func countNotFound(h http.Handler, n *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !singleItemPath(r.URL.Path) {
			h.ServeHTTP(w, r)
			return
		}
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(sw, r)
		if sw.code == http.StatusNotFound {
			n.Add(1)
		}
	})
}

// singleItemPath reports whether path reads one item of a simulated provider.
func singleItemPath(path string) bool {
	if _, ok := listPaths[path]; ok {
		return false
	}
	for lp := range listPaths {
		if strings.HasPrefix(path, strings.TrimSuffix(lp, "summary")) {
			return true
		}
	}
	return false
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

// hookResult is what the webhook deliveries of a hints run did.
type hookResult struct {
	// Sources had hints (a verifier and a simulator sending webhooks); NoHooks are the
	// others.
	Sources, NoHooks []string
	Faults           sim.WebhookFaults
	// Sent are the simulator's counts by source.
	Sent map[string]sim.WebhookCounts
	// Listener is the listener's watcher_webhooks_total by source and result.
	Listener map[string]map[string]int
	// ByKind counts deliveries by what the simulator sent (deliveryClass) and the
	// listener's answer.
	ByKind map[string]map[string]int
	// Changes counts the truth's transitions of the hinted sources' top-level items;
	// Hinted those a genuine delivery reported that the listener accepted (or
	// coalesced); Unmatched the accepted deliveries whose status no transition of the
	// item had reached by the time the body was rendered (0 unless the simulator's
	// records are wrong).
	Changes, Hinted, Unmatched int
	// TopFinal counts the hinted sources' top-level items whose last status in the
	// truth is final, TopMissed those whose final status no event reported.
	TopFinal, TopMissed int
	// DelayHinted is change -> event for the hinted changes with an event of their
	// own, DelayPrompt and DelayHeld the same split by whether the first accepted
	// delivery was held back (DelayRate); HintToEvent is that delivery's POST -> the
	// event, for the events it preceded; PolledFirst counts the hinted changes whose
	// event came before the hint; NoEvent those with no event of their own (the item
	// moved again before it was read).
	DelayHinted, DelayPrompt, DelayHeld, HintToEvent []time.Duration
	PolledFirst, NoEvent                             int
	// RefusedHinted counts the deliveries the listener should refuse (a signature that
	// does not match, a replay, an old timestamp) that it answered accepted or
	// coalesced: each would have caused a read.
	RefusedHinted int
	// UnknownGets counts single-item reads the simulator answered 404.
	UnknownGets int64
}

// deliveryClass names what a delivery was, for the outcome table.
func deliveryClass(d sim.WebhookDelivery) string {
	switch {
	case d.Kind == sim.WebhookInjected && d.MadeUp:
		return "injected, made-up id"
	case d.Kind == sim.WebhookInjected:
		return "injected, real id, another final status"
	case d.Kind == sim.WebhookReplay && d.Stale:
		return "replay with an old timestamp"
	case d.Forged:
		return d.Kind + ", forged"
	default:
		return d.Kind
	}
}

// hinting reports whether a listener answer made the poller read the item.
func hinting(answer string) bool {
	return answer == webhook.ResultAccepted || answer == webhook.ResultCoalesced
}

// analyzeHooks matches the deliveries with the truth and watcher's events: which
// changes got a hint, how soon their events followed, and what was refused.
func analyzeHooks(ds []sim.WebhookDelivery, ti *truthIndex, v verdict, offset time.Duration) hookResult {
	r := hookResult{ByKind: map[string]map[string]int{}}
	hookProv := map[string]bool{}
	for _, s := range hookSources() {
		hookProv[s.Provider] = true
	}
	for k, c := range ti.chains {
		if !hookProv[k.provider] || k.parent != "" {
			continue
		}
		r.Changes += len(c.states) - 1
		if c.final {
			r.TopFinal++
			if _, seen := v.Changes[changeRef{k, len(c.states) - 1}]; !seen {
				r.TopMissed++
			}
		}
	}
	type hint struct {
		sent  time.Time
		delay time.Duration
	}
	first := map[changeRef]hint{}
	for _, d := range ds {
		if d.Dropped {
			continue
		}
		class := deliveryClass(d)
		if r.ByKind[class] == nil {
			r.ByKind[class] = map[string]int{}
		}
		answer := d.Answer
		if answer == "" {
			answer = fmt.Sprintf("HTTP %d", d.Code)
		}
		r.ByKind[class][answer]++
		genuine := (d.Kind == sim.WebhookChange || d.Kind == sim.WebhookDuplicate) && !d.Forged
		if !genuine {
			if hinting(d.Answer) {
				r.RefusedHinted++
			}
			continue
		}
		if !hinting(d.Answer) {
			continue
		}
		key := itemKey{d.Provider, poller.Providers[d.Provider].Kind, "", d.ID}
		j := renderedIndex(ti.chains[key], status{d.Status, d.Addendum}, d.Rendered)
		if j < 0 {
			r.Unmatched++
			continue
		}
		ref := changeRef{key, j}
		if h, ok := first[ref]; !ok || d.Sent.Before(h.sent) {
			first[ref] = hint{d.Sent, d.Delay}
		}
	}
	r.Hinted = len(first)
	for ref, h := range first {
		d, ok := v.Changes[ref]
		if !ok {
			r.NoEvent++
			continue
		}
		r.DelayHinted = append(r.DelayHinted, d)
		if h.delay > 0 {
			r.DelayHeld = append(r.DelayHeld, d)
		} else {
			r.DelayPrompt = append(r.DelayPrompt, d)
		}
		at := ti.chains[ref.key].at[ref.idx].Add(offset).Add(d)
		if at.Before(h.sent) {
			r.PolledFirst++
		} else {
			r.HintToEvent = append(r.HintToEvent, at.Sub(h.sent))
		}
	}
	return r
}

// renderedIndex returns the index in c of the status st that a body rendered at
// (simulated time) reports: the latest transition to st at or before it; -1 when there
// is none.
func renderedIndex(c *chain, st status, at time.Time) int {
	if c == nil {
		return -1
	}
	for j := len(c.states) - 1; j > 0; j-- {
		if c.states[j] == st && !c.at[j].After(at) {
			return j
		}
	}
	return -1
}

// hookResult gathers what the hints run's deliveries did.
func (b *bench) hookResult(res *result, ti *truthIndex) (*hookResult, error) {
	r := analyzeHooks(b.hookLog.snapshot(), ti, res.Watcher, res.Offset)
	r.Faults = b.o.Hooks.Faults
	r.Sources = b.listener.Sources
	for _, s := range res.Sources {
		if !slices.Contains(r.Sources, s.Name) {
			r.NoHooks = append(r.NoHooks, s.Name)
		}
	}
	r.Sent = map[string]sim.WebhookCounts{}
	for _, s := range hookSources() {
		if c, ok := b.simW.WebhookCounts(s.Provider); ok {
			r.Sent[s.Name] = c
		}
	}
	var err error
	if r.Listener, err = b.listener.results(); err != nil {
		return nil, err
	}
	r.UnknownGets = b.unknownGets.Load()
	return &r, nil
}
