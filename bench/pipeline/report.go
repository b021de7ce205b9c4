package pipeline

import (
	"fmt"
	"strings"
	"time"
)

// Targets the report holds the figures to. They are never asserted: timings depend on
// the machine and on what else runs on it.
const (
	// TargetRatio is the least share of the minimal loop's throughput the pipeline
	// should reach: transitions/s with every item changed, items/s with a tenth.
	TargetRatio = 0.8
	// TargetBaselineItems is the size of the baseline held to TargetBaseline and
	// TargetHeap.
	TargetBaselineItems = 1_000_000
	TargetBaseline      = 60 * time.Second
	TargetHeap          = 256 << 20
	// TargetBytesPerItem bounds the state file per tracked item.
	TargetBytesPerItem = 200
	// TargetIdleGrowth bounds the idle cycle's CPU at the largest scale over the
	// smallest: flat, within measurement noise.
	TargetIdleGrowth = 1.5
)

// Ratio returns the pipeline's throughput for mix as a share of the minimal loop's:
// transitions/s with every item changed, items/s otherwise. 0 when either is missing.
func (r *Report) Ratio(mix int) float64 {
	p, m := r.Pipeline[mix], r.Minimal[mix]
	if mix == AllChanged {
		return ratio(p.TransitionsPerSec(), m.TransitionsPerSec())
	}
	return ratio(p.ItemsPerSec(), m.ItemsPerSec())
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// largest returns the scale run of TargetBaselineItems items, or the largest one.
func (r *Report) largest() (Scale, bool) {
	var best Scale
	found := false
	for _, s := range r.Scales {
		if !found || s.Target == TargetBaselineItems || (best.Target != TargetBaselineItems && s.Target > best.Target) {
			best, found = s, true
		}
	}
	return best, found
}

// IdleGrowth returns the idle cycle's CPU time at the largest scale over the
// smallest; 0 with fewer than two scales.
func (r *Report) IdleGrowth() float64 {
	if len(r.Scales) < 2 {
		return 0
	}
	lo, hi := r.Scales[0], r.Scales[0]
	for _, s := range r.Scales {
		if s.Tracked < lo.Tracked {
			lo = s
		}
		if s.Tracked > hi.Tracked {
			hi = s
		}
	}
	return ratio(float64(hi.IdleCPU()), float64(lo.IdleCPU()))
}

func mib(n uint64) string {
	switch {
	case n == 0:
		return "-"
	case n < 10<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	default:
		return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
	}
}

func rate(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", v)
}

func pct(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*v)
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

func dur(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	default:
		return d.Round(10 * time.Microsecond).String()
	}
}

// Markdown renders the report: the machine, command, one table per step and the
// targets, each with what it was measured against.
func (r *Report) Markdown(command string) string {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "Run %s on %d CPUs (nproc), %s, %.1f GiB RAM, %s %s.\n\n", r.Started.Format("2006-01-02 15:04 UTC"),
		m.CPUs, m.Model, float64(m.RAM)/(1<<30), m.Go, m.Arch)
	fmt.Fprintf(&b, "```sh\n%s\n```\n\n", command)
	o := r.Options
	row := func(name string, f Figures, extra ...string) {
		fmt.Fprintf(&b, "| %s | %s | %s | %.3f | %s | %s |", name, rate(f.ItemsPerSec()), rate(f.TransitionsPerSec()),
			f.CPUPer1000(), mib(f.PeakRSS), mib(f.PeakHeap))
		for _, e := range extra {
			fmt.Fprintf(&b, " %s |", e)
		}
		b.WriteString("\n")
	}

	if !o.SkipRaw || !o.SkipPipeline {
		sync := "always (fsync before every acknowledgement)"
		if d := r.NATS.Embedded.SyncInterval; d > 0 {
			sync = d.String()
		}
		retain := "0 (entries deleted on their acknowledgement)"
		if d := r.NATS.RetainAcked; d > 0 {
			retain = d.String() + " (acknowledged entries kept that long)"
		}
		fmt.Fprintf(&b, "NATS as the daemon runs it by default: the embedded server, `sync_interval` %s, `duplicate_window` %s; publisher `retain_acked` %s. Steps 1 and 2: best of %d interleaved runs.\n\n",
			sync, r.NATS.DuplicateWindow, retain, o.Repeat)
	}
	if !o.SkipRaw {
		fmt.Fprintf(&b, "**1. Raw limits.** Events of %d bytes; %d pages of %d items; bbolt with fsync on every commit, as watcher opens its state file.\n\n",
			r.EventBytes, o.Pages, o.PageSize)
		b.WriteString("| measurement | items/s | transitions/s | CPU s / 1,000 items | peak RSS | Go heap in use | commits/s |\n|---|---|---|---|---|---|---|\n")
		row(fmt.Sprintf("JetStream: %d async publishes with Nats-Msg-Id, file storage", o.Messages), r.RawPublish, "-")
		for mix := range numMixes {
			row(fmt.Sprintf("bbolt: a transaction per page, %s (%d snapshot + %d outbox puts)", MixName(mix), o.PageSize/every[mix], o.PageSize/every[mix]),
				r.RawBolt[mix], rate(r.RawBolt[mix].CommitsPerSec()))
		}
		for mix := range numMixes {
			row("minimal loop, "+MixName(mix), r.Minimal[mix], "-")
		}
		b.WriteString("\n")
	}

	if !o.SkipPipeline {
		fmt.Fprintf(&b, "**2. Pipeline** (poller + state + publisher, pre-built items, no HTTP), %d pages of %d items over %d tracked items.\n\n",
			o.Pages, o.PageSize, o.Pages*o.PageSize)
		b.WriteString("| measurement | items/s | transitions/s | CPU s / 1,000 items | peak RSS | Go heap in use | of the minimal loop | of raw bbolt | of raw JetStream | target |\n|---|---|---|---|---|---|---|---|---|---|\n")
		for mix := range numMixes {
			p := r.Pipeline[mix]
			var ofMin, ofBolt, ofJS float64
			what := "transitions/s"
			if mix == AllChanged {
				ofBolt = ratio(p.TransitionsPerSec(), r.RawBolt[mix].TransitionsPerSec())
				ofJS = ratio(p.TransitionsPerSec(), r.RawPublish.TransitionsPerSec())
			} else {
				what = "items/s"
				ofBolt = ratio(p.ItemsPerSec(), r.RawBolt[mix].ItemsPerSec())
			}
			ofMin = r.Ratio(mix)
			target := fmt.Sprintf("%s >= %.0f%% of the minimal loop's: %s", what, 100*TargetRatio, met(ofMin >= TargetRatio))
			if o.SkipRaw {
				target = "-"
			}
			row("pipeline, "+MixName(mix), p, pct(ofMin), pct(ofBolt), pct(ofJS), target)
		}
		b.WriteString("\n")
	}

	if len(r.Scales) > 0 {
		where := "the simulator in a process of its own (its CPU and memory are not counted)"
		if !r.Scales[0].SimProcess {
			where = "the simulator in this process (its CPU and memory are counted)"
		}
		fmt.Fprintf(&b, "**3. Scale**: %s over loopback HTTP, five sources polled at once, state file with fsync; %d open items at every scale (all items when fewer); idle cycles: every source once, nothing changed, nothing due (mean of %d).\n\n",
			where, o.Open, o.IdleCycles)
		b.WriteString("| tracked (open) | baseline | items/s | CPU s / 1,000 items | peak RSS | Go heap in use | state file | bytes / tracked item | idle cycle CPU | idle cycle wall | requests / idle cycle | simulator CPU (whole run) |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, s := range r.Scales {
			f := s.Baseline
			simCPU := "-"
			if s.SimProcess {
				simCPU = dur(s.SimCPU)
			}
			fmt.Fprintf(&b, "| %d (%d) | %s | %s | %.3f | %s | %s | %s | %.0f | %s | %s | %.1f | %s |\n",
				s.Tracked, s.Open, dur(f.Wall), rate(f.ItemsPerSec()), f.CPUPer1000(), mib(f.PeakRSS), mib(f.PeakHeap),
				mib(uint64(s.FileSize)), s.BytesPerItem(), dur(s.IdleCPU()), dur(s.IdleWall()), float64(s.IdleRequests)/float64(max(1, s.IdleCycles)), simCPU)
		}
		b.WriteString("\n")
		if big, ok := r.largest(); ok {
			b.WriteString("| target | figure | |\n|---|---|---|\n")
			fmt.Fprintf(&b, "| baseline of %d items under %s | %s | %s |\n", big.Target, TargetBaseline, dur(big.Baseline.Wall), met(big.Baseline.Wall < TargetBaseline))
			fmt.Fprintf(&b, "| Go heap in use during it under %s | %s | %s |\n", mib(TargetHeap), mib(big.Baseline.PeakHeap), met(big.Baseline.PeakHeap < TargetHeap))
			fmt.Fprintf(&b, "| state file under %d bytes per tracked item | %.0f | %s |\n", TargetBytesPerItem, big.BytesPerItem(), met(big.BytesPerItem() < TargetBytesPerItem))
			if g := r.IdleGrowth(); g > 0 {
				fmt.Fprintf(&b, "| idle cycle CPU flat across scales (largest / smallest within %.1fx) | %.2fx | %s |\n", TargetIdleGrowth, g, met(g <= TargetIdleGrowth))
			}
			b.WriteString("\n")
		}
	}
	b.WriteString("CPU is the whole process's (user + system), the embedded NATS server included. Peak RSS is the process's resident high-water mark during the measurement; Go heap in use is the largest sample (every 5 ms) of the heap's spans in use.\n")
	return b.String()
}
