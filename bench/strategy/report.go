package main

import (
	"bufio"
	"cmp"
	"fmt"
	"maps"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller"
)

// machine describes the host: CPUs, CPU model, memory and Go version.
func machine() string {
	model := "unknown CPU"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	mem := "unknown memory"
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var kb int64
			if _, err := fmt.Sscanf(sc.Text(), "MemTotal: %d kB", &kb); err == nil {
				mem = fmt.Sprintf("%.1f GiB RAM", float64(kb)/(1<<20))
				break
			}
		}
		f.Close()
	}
	return fmt.Sprintf("%d CPUs (nproc), %s, %s, %s %s/%s", runtime.NumCPU(), model, mem, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// figures are the headline numbers of a run, derived from its result.
type figures struct {
	// Requests and transitions of the run phase, and of run + catch-up.
	WatchReq, WatchTr, NaiveReq, NaiveTr             int
	WatchReqAll, WatchTrAll, NaiveReqAll, NaiveTrAll int
	// Delays: new items; history items (all, then split into items still open and
	// late changes to items already final).
	New, Old, OldOpen, OldFinal                     quantiles
	NaiveNew, NaiveOld, NaiveOldOpen, NaiveOldFinal quantiles
}

func perTransition(req, tr int) float64 {
	if tr == 0 {
		return 0
	}
	return float64(req) / float64(tr)
}

func (r *result) figures() figures {
	var f figures
	for _, s := range r.Sources {
		f.WatchReq += s.Discovery[phaseRun] + s.Refresh[phaseRun]
		f.WatchTr += s.Events[phaseRun]
		f.NaiveReq += s.NaiveRequests[phaseRun]
		f.NaiveTr += s.NaiveTransitions[phaseRun]
		for _, ph := range []phase{phaseRun, phaseCatchUp} {
			f.WatchReqAll += s.Discovery[ph] + s.Refresh[ph]
			f.WatchTrAll += s.Events[ph]
			f.NaiveReqAll += s.NaiveRequests[ph]
			f.NaiveTrAll += s.NaiveTransitions[ph]
		}
	}
	o := r.Opts
	open, settling := o.longestPeriod(diff.Pending), o.longestPeriod(poller.Settling)
	f.New = summarize(r.Watcher.DelayNew, o.Interval)
	f.Old = summarize(slices.Concat(r.Watcher.DelayOld, r.Watcher.DelayFinal), open)
	f.OldOpen = summarize(r.Watcher.DelayOld, open)
	f.OldFinal = summarize(r.Watcher.DelayFinal, settling)
	f.NaiveNew = summarize(r.Naive.DelayNew, o.Interval)
	f.NaiveOld = summarize(slices.Concat(r.Naive.DelayOld, r.Naive.DelayFinal), open)
	f.NaiveOldOpen = summarize(r.Naive.DelayOld, open)
	f.NaiveOldFinal = summarize(r.Naive.DelayFinal, settling)
	return f
}

// longestPeriod is the longest re-read period of an open item in state st: its
// state's period grown with age up to open_refresh_max (poller.AgedPeriod).
func (o options) longestPeriod(st diff.State) time.Duration {
	return poller.AgedPeriod(poller.DefaultPeriod(st, o.OpenRefresh), time.Duration(math.MaxInt64), o.OpenRefreshMax)
}

// requestTarget is the most requests per detected transition (run and catch-up) the
// polling runs aim at, beside 20x fewer than the naive poller.
const requestTarget = 0.3

func dur(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	default:
		return d.Round(10 * time.Millisecond).String()
	}
}

func mark(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

// within reports whether the median and the p99 of q are within target.
func within(q quantiles, target time.Duration) bool {
	return q.N > 0 && q.Median <= target && q.P99 <= target
}

// markdown renders the run as the BENCHMARKS.md section.
func (r *result) markdown(command string) string {
	if r.Consumer != nil {
		return r.consumerMarkdown(command)
	}
	settling := r.Opts.longestPeriod(poller.Settling)
	longest := r.Opts.longestPeriod(diff.Pending)
	o := r.Opts
	f := r.figures()
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	naive := func(format string, args ...any) string {
		if !o.Naive {
			return "-"
		}
		return fmt.Sprintf(format, args...)
	}

	w("Run %s on %s.\n\n", r.Started.Format("2006-01-02 15:04 MST"), machine())
	w("```sh\n%s\n```\n\n", command)
	w("Scenario: %d providers x %d history items = %d items created evenly over %s, %.0f%% of them left open "+
		"(each moves on at a random moment within %s of the engine's start); %.2g new items/s per provider while the engine runs; "+
		"delays between steps %s..%s..%s (min, mean, max); failure rate %.2g; seed %d. "+
		"The engine ran %s; then it stopped and the pollers had up to %s to catch up; then %d idle cycles of watcher alone.\n\n",
		len(r.Sources), o.History, o.History*len(r.Sources), o.HistorySpan, o.OpenShare*100, cmp.Or(o.OpenResume, o.Duration), o.Rate,
		o.Delays.Min, o.Delays.Mean, o.Delays.Max, o.FailureRate, o.Seed, o.Duration, o.CatchUp, o.IdleCycles)
	w("watcher, every source: `interval: %s`, `open_refresh: %s` (so processing %s, settling %s), `open_refresh_max: %s`, `discovery_overlap: 10m`, "+
		"`lookback: %s`, `open_max_age: %s`, `settle_window: 24h`, `rate_limit: %g` (refresh budget %d requests per cycle), "+
		"`baseline: silent`, `page_size` at the adapter's maximum; state in bbolt with NoSync; the outbox is read and emptied in-process (no NATS). ",
		o.Interval, o.OpenRefresh, poller.DefaultPeriod(diff.Processing, o.OpenRefresh), poller.DefaultPeriod(poller.Settling, o.OpenRefresh), o.OpenRefreshMax, o.Lookback, o.OpenMaxAge, o.RateLimit,
		int(o.RateLimit*o.Interval.Seconds()*0.8))
	if o.Naive {
		w("The naive poller walks the whole lookback with the same adapters every %s (at once again when a walk takes longer) "+
			"and compares in memory, against a second simulator with the same seed (same truth: %s, %d transitions).\n\n",
			o.Interval, yesNo(r.SameScenario), r.Truth)
	} else {
		w("No naive poller in this run: watcher has the machine to itself (%d transitions in the truth).\n\n", r.Truth)
	}

	// An idle cycle proper has nothing new and no open item due: it makes no refresh
	// request. Cycles in which open items fell due are reported apart (1b).
	idleOK, quietAll := true, 0
	var idle, idleRef, naiveIdle []string
	for _, s := range r.Sources {
		var quiet, quietReq, busy, busyDisc, busyRef int
		for _, c := range s.Idle {
			if c.refresh == 0 {
				quiet++
				quietReq += c.discovery
				idleOK = idleOK && c.discovery == 1
			} else {
				busy++
				busyDisc += c.discovery
				busyRef += c.refresh
			}
		}
		quietAll += quiet
		if quiet > 0 {
			idle = append(idle, fmt.Sprintf("%s %.3g (%d cycles)", s.Name, float64(quietReq)/float64(quiet), quiet))
		} else {
			idle = append(idle, fmt.Sprintf("%s - (0 cycles)", s.Name))
		}
		if busy > 0 {
			idleRef = append(idleRef, fmt.Sprintf("%s %.3g + %.3g (%d cycles)", s.Name, float64(busyDisc)/float64(busy), float64(busyRef)/float64(busy), busy))
		} else {
			idleRef = append(idleRef, fmt.Sprintf("%s - (0 cycles)", s.Name))
		}
		naiveIdle = append(naiveIdle, fmt.Sprintf("%s %d", s.Name, s.NaivePages))
	}
	idleOK = idleOK && quietAll > 0
	wpt, npt := perTransition(f.WatchReq, f.WatchTr), perTransition(f.NaiveReq, f.NaiveTr)
	wptAll, nptAll := perTransition(f.WatchReqAll, f.WatchTrAll), perTransition(f.NaiveReqAll, f.NaiveTrAll)
	factor, factorAll := 0.0, 0.0
	if wpt > 0 {
		factor = npt / wpt
	}
	if wptAll > 0 {
		factorAll = nptAll / wptAll
	}
	w("| figure | target | watcher | naive | |\n|---|---|---|---|---|\n")
	w("| 1. requests per idle cycle (nothing new, no open item due) | exactly 1 per source | %s | %s | %s |\n",
		strings.Join(idle, ", "), naive("%s (its whole walk)", strings.Join(naiveIdle, ", ")), mark(idleOK))
	w("| 1b. idle-phase cycles in which open or settling items fell due: discovery + refresh requests per cycle (discovery runs again when a refresh outlasts an interval) | - | %s | - | |\n", strings.Join(idleRef, ", "))
	// The target is held over the run and its catch-up: an old item's change is read
	// at its grown period, often after the engine stopped, so the engine's run alone
	// holds requests whose transitions are detected later.
	reqOK := wptAll <= requestTarget && (!o.Naive || factorAll >= 20)
	w("| 2. requests per detected transition, run + catch-up (until every last status is seen, or the catch-up's end) | watcher <= %.2g, and >= 20x fewer than naive | %.3f (%d / %d) | %s | %s%s |\n",
		requestTarget, wptAll, f.WatchReqAll, f.WatchTrAll, naive("%.3f (%d / %d)", nptAll, f.NaiveReqAll, f.NaiveTrAll), naive("%.1fx, ", factorAll), mark(reqOK))
	w("| 2b. requests per detected transition, engine running only | - | %.3f (%d / %d) | %s | %s |\n",
		wpt, f.WatchReq, f.WatchTr, naive("%.3f (%d / %d)", npt, f.NaiveReq, f.NaiveTr), naive("%.1fx", factor))
	var wBase, nBase int
	for _, s := range r.Sources {
		wBase += s.Discovery[phaseBaseline] + s.Refresh[phaseBaseline]
		nBase += s.NaiveRequests[phaseBaseline]
	}
	w("| 2c. silent baseline walk requests (not counted above) | - | %d | %s | |\n", wBase, naive("%d", nBase))
	w("| 3. missed final statuses after catch-up | 0 | %d of %d | %s | %s |\n",
		r.Watcher.MissedFinal, r.Watcher.TruthFinal, naive("%d of %d", r.Naive.MissedFinal, r.Naive.TruthFinal), mark(r.Watcher.MissedFinal == 0))
	w("| 3b. last non-final status not seen after catch-up | 0 | %d | %s | |\n", r.Watcher.BehindOpen, naive("%d", r.Naive.BehindOpen))
	w("| 3c. engine stop -> every item's last status seen | - | %s | %s | |\n",
		convergedText(r.Converged, r.ConvergedIn), naive("%s", convergedText(r.NaiveConverged, r.NaiveConvergedIn)))
	w("| 3d. events not a subsequence of the item's truth | 0 | %d of %d | %s | %s |\n",
		r.Watcher.NotSubsequence, r.Watcher.Observed, naive("%d of %d", r.Naive.NotSubsequence, r.Naive.Observed), mark(r.Watcher.NotSubsequence == 0))
	w("| 3e. duplicates (same event id / same item and sequence) | 0 | %d / %d | %s | %s |\n",
		r.Watcher.DupIDs, r.Watcher.DupSeqs, naive("%d / %d", r.Naive.DupIDs, r.Naive.DupSeqs), mark(r.Watcher.DupIDs+r.Watcher.DupSeqs == 0))
	w("| 3f. events committed while idle | 0 | %d | - | %s |\n", r.IdleEvents, mark(r.IdleEvents == 0))
	w("| 3g. truth transitions no event reports (moved twice between two reads) | - | %d of %d | %s | |\n",
		r.Watcher.Collapsed, r.Truth, naive("%d of %d", r.Naive.Collapsed, r.Truth))
	w("| 4. delay change -> event, new items: median / p99 / max (n) | <= interval (%s) | %s | %s | %s |\n",
		o.Interval, qText(f.New), naive("%s", qText(f.NaiveNew)), mark(within(f.New, o.Interval)))
	w("| 4b. delay change -> event, old (history) items: median / p99 / max (n) | <= the item's period: %s | %s | %s | %s |\n",
		periodsText(o), qText(f.Old), naive("%s", qText(f.NaiveOld)), mark(within(f.Old, longest)))
	w("| 4c. of which: changes to items still open | <= %s | %s | %s | %s |\n",
		longest, qText(f.OldOpen), naive("%s", qText(f.NaiveOldOpen)), mark(within(f.OldOpen, longest)))
	w("| 4d. of which: nested items added to or changed in an item whose own status was already final (re-read at the settling period) | <= %s | %s | %s | %s |\n\n",
		settling, qText(f.OldFinal), naive("%s", qText(f.NaiveOldFinal)), mark(f.OldFinal.N == 0 || within(f.OldFinal, settling)))
	w("Delays within target: new items %d of %d within the interval; old items %d of %d within the longest period %s (items still open %d of %d; already-final items %d of %d within %s).\n\n",
		f.New.WithinN, f.New.N, f.Old.WithinN, f.Old.N, longest, f.OldOpen.WithinN, f.OldOpen.N, f.OldFinal.WithinN, f.OldFinal.N, settling)
	b.WriteString(r.hooksMarkdown())

	w("Per source (run phase unless noted; GETs and window pages are counted by the simulator; \"records written\" are snapshot records committed to bbolt):\n\n")
	w("| source | page | items / open (settling) after | baseline req (watcher / naive) | discovery req | refresh req (GETs + window pages) | events | records written | watcher cycle mean / max | naive req | naive transitions | naive walks, mean walk | other |\n")
	w("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range r.Sources {
		c := s.Cycle[phaseRun]
		mean := time.Duration(0)
		if c.n > 0 {
			mean = c.sum / time.Duration(c.n)
		}
		window := s.ServerList[phaseRun] - s.Discovery[phaseRun]
		other := s.Other
		if s.Failures > 0 {
			other = append(other, fmt.Sprintf("failed cycles %d", s.Failures))
		}
		if s.NaiveErrors > 0 {
			other = append(other, fmt.Sprintf("naive errors %d", s.NaiveErrors))
		}
		w("| %s | %d | %d / %d (%d) | %d / %s | %d | %d (%d + %d) | %d | %d | %s / %s | %s | %s | %s | %s |\n",
			s.Name, s.PageSize, s.Items, s.Open, s.Settling, s.Discovery[phaseBaseline]+s.Refresh[phaseBaseline], naive("%d", s.NaiveRequests[phaseBaseline]),
			s.Discovery[phaseRun], s.Refresh[phaseRun], s.ServerGet[phaseRun], window, s.Events[phaseRun], s.Records[phaseRun],
			dur(mean), dur(c.most), naive("%d", s.NaiveRequests[phaseRun]), naive("%d", s.NaiveTransitions[phaseRun]),
			naive("%d, %s", s.NaiveWalks[phaseRun], dur(s.NaiveWalkMean[phaseRun])), strings.Join(other, ", "))
	}

	w("\nThe run phase by %s slice (all sources; watcher requests are discovery + refresh):\n\n", o.Slice)
	w("| slice | watcher req (disc + refresh) | watcher events | watcher req/event | naive req | naive transitions | naive req/transition | factor |\n")
	w("|---|---|---|---|---|---|---|---|\n")
	rows := slices.Clone(r.Timeline)
	// The last moments of the run (after its last whole slice) join that slice.
	if whole := int(o.Duration / o.Slice); whole > 0 && len(rows) > whole {
		last := slices.Clone(rows[whole-1])
		for _, row := range rows[whole:] {
			for j := range last {
				last[j] += row[j]
			}
		}
		rows = append(rows[:whole-1], last)
	}
	for i, row := range rows {
		wreq, wev, nreq, ntr := row[0]+row[1], row[2], row[3], row[4]
		wr, nr := perTransition(wreq, wev), perTransition(nreq, ntr)
		fac := "-"
		if wr > 0 && nr > 0 {
			fac = fmt.Sprintf("%.1fx", nr/wr)
		}
		w("| %s-%s | %d (%d + %d) | %d | %.3f | %s | %s | %s | %s |\n", time.Duration(i)*o.Slice, time.Duration(i+1)*o.Slice,
			wreq, row[0], row[1], wev, wr, naive("%d", nreq), naive("%d", ntr), naive("%.3f", nr), fac)
	}

	w("\nPhases (wall / process CPU on %d CPUs): baseline %s / %s, run %s / %s, catch-up %s / %s, idle %s / %s. "+
		"The simulated clock stood still during the baseline, so afterwards it ran %s behind the wall clock; delays are measured on one clock, "+
		"from the simulated change (visible at the engine's next %s step) to the event's observed_at.\n",
		runtime.NumCPU(), dur(r.Took[phaseBaseline]), dur(r.CPU[phaseBaseline]), dur(r.Took[phaseRun]), dur(r.CPU[phaseRun]),
		dur(r.Took[phaseCatchUp]), dur(r.CPU[phaseCatchUp]), dur(r.Took[phaseIdle]), dur(r.CPU[phaseIdle]), dur(r.Offset), simTick)
	if len(r.Logs) > 0 {
		w("\nwatcher logged:\n\n")
		for _, k := range slices.Sorted(maps.Keys(r.Logs)) {
			w("- %d x %s (e.g. %s)\n", r.Logs[k], k, strings.Join(r.LogLines[k], "; "))
		}
	}
	for _, v := range []struct {
		who string
		v   verdict
	}{{"watcher", r.Watcher}, {"naive", r.Naive}} {
		if len(v.v.Examples) > 0 {
			w("\n%s problems (first %d):\n\n", v.who, len(v.v.Examples))
			for _, e := range v.v.Examples {
				w("- %s\n", e)
			}
		}
	}
	return b.String()
}

// periodsText describes the re-read periods of open items that bound an old item's
// delay.
func periodsText(o options) string {
	young := fmt.Sprintf("open_refresh %s (processing %s) while young", o.OpenRefresh, poller.DefaultPeriod(diff.Processing, o.OpenRefresh))
	if o.OpenRefreshMax <= 0 {
		return young + " (no growth with age)"
	}
	return fmt.Sprintf("%s, then a twelfth of its age, up to %s (open_refresh_max)", young, o.longestPeriod(diff.Pending))
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func convergedText(ok bool, d time.Duration) string {
	if !ok {
		return "not within catch-up"
	}
	return dur(d)
}

func qText(q quantiles) string {
	if q.N == 0 {
		return "none"
	}
	return fmt.Sprintf("%s / %s / %s (%d)", dur(q.Median), dur(q.P99), dur(q.Max), q.N)
}
