package main

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/payments-watcher/watcher/sim"
	"github.com/payments-watcher/watcher/webhook"
)

// hintTarget is the hints mode's target for change -> event of a hinted change.
const hintTarget = 2 * time.Second

// faultsText describes the delivery faults.
func faultsText(f sim.WebhookFaults) string {
	held := "every delivery"
	if f.DelayRate > 0 {
		held = fmt.Sprintf("%.3g%%", f.DelayRate*100)
	}
	return fmt.Sprintf("%.3g%% dropped, %s held back by up to %s (each posted on its own, so later ones overtake it), "+
		"%.3g%% posted twice, reordered in batches of up to %d when deliveries queue, %.3g%% preceded by a replay of one of the last 64 "+
		"deliveries (Stripe's presented as captured %s earlier, so with an old timestamp), %.3g%% with a signature that does not match, "+
		"and for %.3g%% of changes an extra forged delivery (half naming a made-up id, half the real item with another final status, "+
		"with a signature that does not match)",
		f.DropRate*100, held, f.MaxDelay, f.DuplicateRate*100, f.Reorder, f.ReplayRate*100, f.ReplayAge, f.ForgeRate*100, f.InjectRate*100)
}

// countsText renders counts by name, largest first.
func countsText(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := slices.SortedFunc(maps.Keys(m), func(a, b string) int { return cmp.Or(cmp.Compare(m[b], m[a]), cmp.Compare(a, b)) })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// refusedResults are the listener results of a refused delivery.
var refusedResults = []string{webhook.ResultReplayed, webhook.ResultStale, webhook.ResultBadSignature, webhook.ResultUnsigned,
	webhook.ResultMalformed, webhook.ResultTooLarge, webhook.ResultKeyUnavailable, webhook.ResultUnsupported}

// hooksMarkdown renders the hints mode's figures; "" in another mode.
func (r *result) hooksMarkdown() string {
	h := r.Hooks
	if h == nil {
		return ""
	}
	f := r.figures()
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("**Webhooks as hints.** The simulator watcher polls also delivers the webhooks of %s to watcher's listener, built as the daemon "+
		"builds it (`webhook.Build`'s verifiers from the sources' `webhook_secret`, Circle's key fetched from the simulator, "+
		"`webhook.NewHandler` whose target is each source's poller, so that a verified delivery calls `Poller.Hint`); %s had no hints "+
		"(their providers document no webhooks). Faults: %s. The naive poller runs as before, on its own simulator, without webhooks.\n\n",
		strings.Join(h.Sources, ", "), strings.Join(h.NoHooks, ", "), faultsText(h.Faults))

	hinted := summarize(h.DelayHinted, hintTarget)
	prompt := summarize(h.DelayPrompt, hintTarget)
	held := summarize(h.DelayHeld, hintTarget)
	toEvent := summarize(h.HintToEvent, hintTarget)
	refusedReached := h.RefusedHinted
	w("| figure | target | watcher with hints | |\n|---|---|---|---|\n")
	w("| 5. changes of those sources' top-level items with a hint delivered (a genuine delivery the listener accepted) | - | %d of %d | |\n",
		h.Hinted, h.Changes)
	// A held-back delivery reaches watcher up to MaxDelay after its change, however fast
	// watcher is: the target is held where watcher's own part can be told apart (5b,
	// and 5d from the delivery on), and 5a shows the whole with the provider's delay.
	w("| 5a. delay change -> event, hinted changes: median / p99 / max (n) | - (includes the provider's hold-back, 5c) | %s | |\n",
		qText(hinted))
	w("| 5b. of which the delivery was not held back | p99 <= %s | %s | %s |\n", hintTarget, qText(prompt), mark(prompt.N > 0 && prompt.P99 <= hintTarget))
	w("| 5c. of which the delivery was held back (by up to %s) | - | %s | |\n", h.Faults.MaxDelay, qText(held))
	w("| 5d. delivery POST -> event, for events that followed their hint | p99 <= %s | %s | %s |\n", hintTarget, qText(toEvent), mark(toEvent.N > 0 && toEvent.P99 <= hintTarget))
	w("| 5e. hinted changes whose event polling made before the hint arrived / with no event of their own (moved again before the read) | - | %d / %d | |\n",
		h.PolledFirst, h.NoEvent)
	w("| 6. missed final statuses after catch-up: every item (as 3) / the hinted sources' top-level items | 0 | %d of %d / %d of %d | %s |\n",
		r.Watcher.MissedFinal, r.Watcher.TruthFinal, h.TopMissed, h.TopFinal, mark(r.Watcher.MissedFinal == 0))
	w("| 6b. events from forged or replayed deliveries: such deliveries the listener accepted (each would cause a read) / events not in the truth | 0 / 0 | %d / %d | %s |\n",
		refusedReached, r.Watcher.NotSubsequence, mark(refusedReached == 0 && r.Watcher.NotSubsequence == 0))
	w("| 6c. single-item reads of ids the simulator never made (answered 404) | 0 | %d | %s |\n", h.UnknownGets, mark(h.UnknownGets == 0))
	wpt := perTransition(f.WatchReqAll, f.WatchTrAll)
	if pf := r.Opts.Hooks.PollingFigure; pf > 0 {
		w("| 7. requests per detected transition, run + catch-up (as 2) | <= polling only (%.3f) | %.3f (%d / %d) | %s |\n",
			pf, wpt, f.WatchReqAll, f.WatchTrAll, mark(wpt <= pf))
	} else {
		w("| 7. requests per detected transition, run + catch-up (as 2) | <= polling only (no figure given: -compare-requests) | %.3f (%d / %d) | - |\n",
			wpt, f.WatchReqAll, f.WatchTrAll)
	}
	if h.Unmatched > 0 {
		w("| 7b. accepted deliveries whose status matched no change of the truth | 0 | %d | **missed** |\n", h.Unmatched)
	}
	w("\nDeliveries by source: the simulator's sender, and the listener's `watcher_webhooks_total` by result:\n\n")
	w("| source | changes queued | dropped | held back | posted twice | replays | forged | injected | reordered batches | queue full | POSTs | listener: accepted / coalesced / dropped | listener: refused |\n")
	w("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range h.Sources {
		c := h.Sent[s]
		l := h.Listener[s]
		refused := map[string]int{}
		for _, res := range refusedResults {
			if l[res] > 0 {
				refused[res] = l[res]
			}
		}
		w("| %s | %d | %d | %d | %d | %d | %d | %d | %d | %d | %d | %d / %d / %d | %s |\n", s, c.Queued, c.Dropped, c.Delayed, c.Duplicated,
			c.Replayed, c.Forged, c.Injected, c.Reordered, c.Overflow, c.Posts, l[webhook.ResultAccepted], l[webhook.ResultCoalesced],
			l[webhook.ResultDropped], countsText(refused))
	}
	w("\nWhat the simulator sent, and what the listener answered:\n\n| delivery | answers |\n|---|---|\n")
	for _, k := range slices.Sorted(maps.Keys(h.ByKind)) {
		w("| %s | %s |\n", k, countsText(h.ByKind[k]))
	}
	w("\n")
	return b.String()
}

// consumerMarkdown renders the only mode's run.
func (r *result) consumerMarkdown(command string) string {
	o := r.Opts
	c := r.Consumer
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("Run %s on %s.\n\n", r.Started.Format("2006-01-02 15:04 MST"), machine())
	w("```sh\n%s\n```\n\n", command)
	w("Scenario: as the polling runs' (%d history items per provider, %.0f%% of them open, %.2g new items/s per provider, "+
		"delays between steps %s..%s..%s, failure rate %.2g, seed %d); the engine ran %s (%d transitions), then the last deliveries "+
		"had up to %s to arrive (%s).\n\n",
		o.History, o.OpenShare*100, o.Rate, o.Delays.Min, o.Delays.Mean, o.Delays.Max, o.FailureRate, o.Seed, o.Duration, r.Truth,
		o.CatchUp, map[bool]string{true: "all arrived in " + dur(c.Took[1]), false: "some had not"}[c.Settled])
	w("No watcher and no naive poller: the simulator delivers the webhooks of %s, with the same faults as the hints run (%s), "+
		"to a naive consumer that checks each body's format (JSON, the event type, an item id and a status) but not its signature, "+
		"and emits an event whenever the status a body carries differs from the last one it saw for the item. It makes no provider "+
		"request. Its events are checked against the truth of those sources' top-level items (%d items, %d transitions, of which %d "+
		"are items appearing, for which the providers send no webhook).\n\n",
		strings.Join(c.Sources, ", "), faultsText(c.Faults), c.TruthItems, c.TruthChanges, c.Creations)
	w("| figure | target | naive webhook consumer | |\n|---|---|---|---|\n")
	w("| provider requests per detected transition | - | 0 (no provider request; %d events from %d deliveries) | |\n", c.Events, c.Deliveries)
	w("| missed final statuses: never delivered (every delivery dropped) / overwritten by a later delivery | 0 | %d of %d: %d / %d | %s |\n",
		c.MissedFinal, c.TruthFinal, c.NeverDelivered, c.Overwritten, mark(c.MissedFinal == 0))
	w("| items whose last status differs from the truth's (items it never heard of, and made-up ones, included) | 0 | %d | %s |\n", c.WrongLast, mark(c.WrongLast == 0))
	w("| items held at a final status the truth's item does not end in | 0 | %d | %s |\n", c.FalseFinal, mark(c.FalseFinal == 0))
	w("| events not a subsequence of their item's truth | 0 | %d of %d | %s |\n", c.NotInTruth, c.Events, mark(c.NotInTruth == 0))
	w("| events from forged deliveries: made-up id / real item with another final status | 0 | %d / %d | %s |\n",
		c.FromMadeUp, c.FromForgedStatus, mark(c.FromMadeUp+c.FromForgedStatus == 0))
	w("| events from replayed deliveries | 0 | %d | %s |\n", c.FromReplay, mark(c.FromReplay == 0))
	w("| duplicates: genuine events repeating a status already reported | 0 | %d | %s |\n", c.Repeated, mark(c.Repeated == 0))
	w("| out of order: genuine events reporting a status the item had before one already reported (or not yet) | 0 | %d | %s |\n",
		c.OutOfOrder, mark(c.OutOfOrder == 0))
	w("| transitions (appearances aside) that no genuine in-order event reports | - | %d of %d | |\n", c.Unreported, c.TruthChanges-c.Creations)
	w("| delay change -> event, genuine in-order events, new items: median / p99 / max (n) | - | %s | |\n", qText(summarize(c.DelayNew, 0)))
	w("| the same, old (history) items | - | %s | |\n\n", qText(summarize(c.DelayOld, 0)))

	w("Deliveries by source (the simulator's sender; the consumer answered %d with malformed):\n\n", c.Malformed)
	w("| source | changes queued | dropped | held back | posted twice | replays | forged | injected | reordered batches | queue full | POSTs |\n")
	w("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range c.Sources {
		n := c.Sent[s]
		w("| %s | %d | %d | %d | %d | %d | %d | %d | %d | %d | %d |\n", s, n.Queued, n.Dropped, n.Delayed, n.Duplicated, n.Replayed,
			n.Forged, n.Injected, n.Reordered, n.Overflow, n.Posts)
	}
	w("\nPhases (wall): engine %s, last deliveries %s.\n", dur(c.Took[0]), dur(c.Took[1]))
	if len(c.Examples) > 0 {
		w("\nnaive consumer problems (first %d):\n\n", len(c.Examples))
		for _, e := range c.Examples {
			w("- %s\n", e)
		}
	}
	return b.String()
}
