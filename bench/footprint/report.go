package main

import (
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"time"
)

// settleIntervals is how many sample intervals beyond nats.retain_acked a series is
// given to level off before the flatness check starts.
const settleIntervals = 3

// flatTolerance is how far (a share of the value at the settle point) a series may
// stray from it for the rest of the run and still count as flat.
const flatTolerance = 0.10

// flatness is one series checked against the target: level off within
// nats.retain_acked plus a few intervals, then stay within flatTolerance.
type flatness struct {
	Name     string
	At       time.Duration // the settle point
	Settled  float64       // the value there
	Min, Max float64       // over the rest of the run
	Held     bool
	// Measured is false when the run ended before the settle point.
	Measured bool
}

// checks returns the flatness of the state file, the daemon's total RSS and its
// goroutines.
func (r *report) checks() []flatness {
	retain, err := time.ParseDuration(r.RetainAcked)
	if err != nil {
		retain = 5 * time.Minute
	}
	settle := retain + settleIntervals*r.Options.Every
	series := []struct {
		name string
		val  func([]float64) float64
	}{
		{"state file", func(row []float64) float64 { return row[colStateFile] }},
		{"RSS (anon + file)", func(row []float64) float64 { return row[colRSSAnon] + row[colRSSFile] }},
		{"goroutines", func(row []float64) float64 { return row[colGoroutines] }},
	}
	var out []flatness
	for _, s := range series {
		f := flatness{Name: s.name, At: settle, Min: math.Inf(1), Max: math.Inf(-1)}
		for _, row := range r.Series.Rows {
			if row[colSeconds] < settle.Seconds() {
				continue
			}
			v := s.val(row)
			if !f.Measured {
				f.Measured, f.Settled = true, v
			}
			f.Min, f.Max = min(f.Min, v), max(f.Max, v)
		}
		f.Held = f.Measured && f.Settled > 0 && f.Min >= f.Settled*(1-flatTolerance) && f.Max <= f.Settled*(1+flatTolerance)
		out = append(out, f)
	}
	return out
}

// Markdown renders the run: the command and machine, the settings, samples at five
// points in time and the flatness checks.
func (r *report) Markdown() string {
	var b strings.Builder
	m, o := r.Machine, r.Options
	built := r.Version
	if r.Tree != "" {
		built += ", built from " + r.Tree
	}
	fmt.Fprintf(&b, "**%s** (`%s`). Command: `%s`. Machine: %d CPUs (%s), %.1f GiB RAM, %s, %s.\n\n",
		o.Label, built, o.Command, m.CPUs, m.Model, float64(m.RAM)/(1<<30), m.Go, m.Arch)
	admin := ""
	if r.AdminListen {
		admin = "; `admin.listen` on a free loopback port, as this release has that listener"
	}
	fmt.Fprintf(&b, "The daemon (`watcher run`) alone in its process; `watcher sim` (seed %d, %g new items/s per provider, %d history items per provider) and nats-server in processes of their own. "+
		"Five sources polled every %s, open items re-read every %s (`open_refresh`), `rate_limit` %d, `baseline: emit`; `nats.retain_acked` at its default (%s)%s. "+
		"Samples every %s in %s and %s.\n\n",
		o.Seed, o.Rate, o.History, pollInterval, openRefresh, rateLimit, r.RetainAcked, admin, o.Every, filepath.Base(r.CSV), filepath.Base(r.SVG))
	if o.Lookback > 0 {
		fmt.Fprintf(&b, "Every source with `lookback` and `open_max_age` %s, `discovery_overlap` %s, `settle_window` %s: open items leave the open set after `settle_window` or stall at `open_max_age`, and the records of items created before `lookback` that are no longer open are forgotten hourly.\n\n",
			o.Lookback, boundedOverlap, boundedSettle)
	}
	if o.Burst > 0 {
		fmt.Fprintf(&b, "A burst: the simulator starts with %d items per provider, each a first sight the daemon publishes at once (`baseline: emit`).\n\n", o.Burst)
	}
	b.WriteString("| at | RSS anon | RSS file | heap | goroutines | fds | state file | free pages | retained | stream | messages |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	n := len(r.Series.Rows)
	last := -1
	for _, i := range []int{0, n / 4, n / 2, 3 * n / 4, n - 1} {
		if i <= last || i >= n {
			continue
		}
		last = i
		row := r.Series.Rows[i]
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", time.Duration(row[colSeconds])*time.Second,
			mib(row[colRSSAnon]), mib(row[colRSSFile]), mib(row[colHeap]), count(row[colGoroutines]), count(row[colFDs]),
			mib(row[colStateFile]), mib(row[colFree]), mib(row[colRetained]), mib(row[colStreamBytes]), count(row[colStreamMsgs]))
	}
	if n > 1 {
		first, end := r.Series.Rows[0], r.Series.Rows[n-1]
		if secs := end[colSeconds] - first[colSeconds]; secs > 0 && !math.IsNaN(end[colStreamMsgs]) {
			fmt.Fprintf(&b, "\n%.0f events a second reached the stream on average; the daemon used %.0f%% of one CPU.\n",
				(end[colStreamMsgs]-nanZero(first[colStreamMsgs]))/secs, (end[colCPU]-first[colCPU])/secs*100)
		}
	}
	if n > 0 {
		var file, rss, heap float64
		for _, row := range r.Series.Rows {
			file, rss, heap = maxMeasured(file, row[colStateFile]), maxMeasured(rss, row[colRSSAnon]+row[colRSSFile]), maxMeasured(heap, row[colHeap])
		}
		fmt.Fprintf(&b, "\nPeaks: state file %s, RSS %s (anon + file), heap %s.\n", mib(file), mib(rss), mib(heap))
	}
	fmt.Fprintf(&b, "\nTarget: level off within `retain_acked` plus %d sample intervals, then stay within %.0f%% of that level.\n\n", settleIntervals, flatTolerance*100)
	b.WriteString("| series | from | level | min | max | held |\n|---|---|---|---|---|---|\n")
	for _, f := range r.checks() {
		if !f.Measured {
			fmt.Fprintf(&b, "| %s | %s | – | – | – | not measured: the run ended before |\n", f.Name, f.At)
			continue
		}
		render := mib
		if f.Name == "goroutines" {
			render = count
		}
		held := "yes"
		if !f.Held {
			held = fmt.Sprintf("**no** (%+.0f%% / %+.0f%%)", (f.Min/f.Settled-1)*100, (f.Max/f.Settled-1)*100)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", f.Name, f.At, render(f.Settled), render(f.Min), render(f.Max), held)
	}
	return b.String()
}

func nanZero(v float64) float64 {
	if math.IsNaN(v) {
		return 0
	}
	return v
}

// maxMeasured is max that ignores a value not measured (NaN) in v.
func maxMeasured(m, v float64) float64 {
	if math.IsNaN(v) {
		return m
	}
	return max(m, v)
}
