package pipeline

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/publish"
)

// SoakOptions configure RunSoak.
type SoakOptions struct {
	// Dir holds the run's state file, NATS store, soak.csv and soak.svg.
	Dir string
	// Duration is how long the load runs.
	Duration time.Duration
	// Items is the number of tracked items; Rate how many of them change each second
	// (each change an event).
	Items, Rate int
	// PageSize is the number of items per page.
	PageSize int
	// Every is the interval between samples.
	Every time.Duration
	// Seed makes the items reproducible.
	Seed uint64
	// Progress receives a line per sample; nil discards them.
	Progress io.Writer
}

// SoakSample is the process and its state file at one moment of a soak run.
type SoakSample struct {
	At time.Duration // since the start
	// RSSAnon and RSSFile are the resident anonymous and file-backed memory (the
	// mapped state file among it), from /proc/self/status.
	RSSAnon, RSSFile uint64
	Heap             uint64 // Go heap in use (runtime.MemStats.HeapInuse)
	Goroutines       int
	FDs              int // open file descriptors
	// File and Free are the state file's size and free pages; Retained the size of
	// the retained acknowledged events.
	File, Free, Retained int64
	Events               int64 // acknowledged so far
}

// SoakReport is what RunSoak measured.
type SoakReport struct {
	Machine Machine
	NATS    publish.Config
	Options SoakOptions
	Samples []SoakSample
	// CSV and SVG are the files written.
	CSV, SVG string
}

// RunSoak runs the pipeline (poller, state file, publisher, embedded NATS server with
// the daemon's default settings) under a steady load of o.Rate events a second for
// o.Duration, sampling the process and the state file every o.Every, then writes the
// samples to soak.csv and a chart to soak.svg in o.Dir.
func RunSoak(ctx context.Context, o SoakOptions) (*SoakReport, error) {
	if o.Dir == "" || o.Duration <= 0 || o.Items < 1 || o.Rate < 1 || o.Rate > o.Items || o.PageSize < 1 || o.Every <= 0 {
		return nil, fmt.Errorf("soak options: dir %q, duration %s, items %d, rate %d (at most items), page size %d and sample interval %s must be set",
			o.Dir, o.Duration, o.Items, o.Rate, o.PageSize, o.Every)
	}
	log := slog.New(slog.DiscardHandler)
	ncfg, err := daemonNATS()
	if err != nil {
		return nil, err
	}
	ncfg = withStream(ncfg, "SOAK", "soak")
	r := &SoakReport{Machine: machine(), NATS: ncfg, Options: o}
	_, js, stop, err := startNATS(ncfg, filepath.Join(o.Dir, "nats"), log)
	if err != nil {
		return nil, err
	}
	defer stop()
	f, err := startFlow(ctx, filepath.Join(o.Dir, "soak.db"), js, ncfg, o.PageSize, log)
	if err != nil {
		return nil, err
	}
	defer f.close()
	if err := r.load(ctx, f, o); err != nil {
		return nil, err
	}
	r.CSV, r.SVG = filepath.Join(o.Dir, "soak.csv"), filepath.Join(o.Dir, "soak.svg")
	if err := os.WriteFile(r.CSV, r.csv(), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(r.SVG, r.svg(), 0o644); err != nil {
		return nil, err
	}
	return r, nil
}

// load runs a cycle a second, each changing o.Rate items, and samples every o.Every.
func (r *SoakReport) load(ctx context.Context, f *flow, o SoakOptions) error {
	set := newItemSet(o.Seed, o.Items, time.Now())
	if _, err := f.cycle(ctx, set.round(o.PageSize, func(i int) diff.Status { return set.status[i] }), 0); err != nil {
		return fmt.Errorf("soak: baseline: %w", err)
	}
	every := max(o.Items/o.Rate, 1)
	start := time.Now()
	next := start
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for round := 0; time.Since(start) < o.Duration; round++ {
		pages, changed := set.next(o.PageSize, every, round)
		if _, err := f.cycle(ctx, pages, changed); err != nil {
			return fmt.Errorf("soak: cycle %d: %w", round, err)
		}
		if !time.Now().Before(next) {
			if err := r.sample(ctx, f, start, o.Progress); err != nil {
				return err
			}
			next = next.Add(o.Every)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return r.sample(ctx, f, start, o.Progress)
}

// sample appends a sample of the process and the state file.
func (r *SoakReport) sample(ctx context.Context, f *flow, start time.Time, progress io.Writer) error {
	s := SoakSample{At: time.Since(start).Round(time.Second), Goroutines: runtime.NumGoroutine(), Events: f.acks.acked.Load()}
	s.RSSAnon, s.RSSFile = rss()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s.Heap = ms.HeapInuse
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		s.FDs = len(fds)
	}
	var err error
	if s.File, s.Free, err = f.store.FileStats(); err != nil {
		return err
	}
	if s.Retained, err = f.store.RetainedBytes(ctx); err != nil {
		return err
	}
	r.Samples = append(r.Samples, s)
	if progress != nil {
		fmt.Fprintf(progress, "%s  soak %s: rss anon %s file %s, heap %s, %d goroutines, %d fds, state file %s (free %s), retained %s, %d events\n",
			time.Now().UTC().Format("15:04:05"), s.At, mibs(int64(s.RSSAnon)), mibs(int64(s.RSSFile)), mibs(int64(s.Heap)), s.Goroutines, s.FDs,
			mibs(s.File), mibs(s.Free), mibs(s.Retained), s.Events)
	}
	return nil
}

// rss returns RssAnon and RssFile of /proc/self/status, in bytes; zeros elsewhere.
func rss() (anon, file uint64) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 {
			continue
		}
		n, _ := strconv.ParseUint(f[0], 10, 64)
		switch k {
		case "RssAnon":
			anon = n * 1024
		case "RssFile":
			file = n * 1024
		}
	}
	return anon, file
}

// soakColumns are the CSV's columns and the chart's series.
var soakColumns = []string{"seconds", "rss_anon_bytes", "rss_file_bytes", "heap_inuse_bytes", "goroutines", "open_fds",
	"state_file_bytes", "state_free_pages_bytes", "retained_bytes", "events"}

func (s SoakSample) values() []float64 {
	return []float64{s.At.Seconds(), float64(s.RSSAnon), float64(s.RSSFile), float64(s.Heap), float64(s.Goroutines), float64(s.FDs),
		float64(s.File), float64(s.Free), float64(s.Retained), float64(s.Events)}
}

func (r *SoakReport) csv() []byte {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	_ = w.Write(soakColumns)
	for _, s := range r.Samples {
		row := make([]string, 0, len(soakColumns))
		for _, v := range s.values() {
			row = append(row, strconv.FormatFloat(v, 'f', -1, 64))
		}
		_ = w.Write(row)
	}
	w.Flush()
	return b.Bytes()
}

// soakPanels group the series of the chart: a title, a unit divisor and the columns.
var soakPanels = []struct {
	title string
	unit  float64
	cols  []int
}{
	{"RSS, MiB (anon, file)", 1 << 20, []int{1, 2}},
	{"Go heap in use, MiB", 1 << 20, []int{3}},
	{"goroutines, open fds", 1, []int{4, 5}},
	{"state file, free pages, MiB", 1 << 20, []int{6, 7}},
	{"retained events, MiB", 1 << 20, []int{8}},
}

var soakColors = []string{"#1f77b4", "#d62728"}

// svg renders each panel's series over time, each panel scaled from 0 to its
// largest value.
func (r *SoakReport) svg() []byte {
	const w, h, left, top = 900, 140, 60, 30
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n",
		w+left+20, len(soakPanels)*(h+top)+20)
	end := 1.0
	if n := len(r.Samples); n > 0 {
		end = max(r.Samples[n-1].At.Seconds(), 1)
	}
	for i, p := range soakPanels {
		y0 := i*(h+top) + top
		peak := 0.0
		for _, s := range r.Samples {
			for _, c := range p.cols {
				peak = max(peak, s.values()[c]/p.unit)
			}
		}
		peak = max(peak, 1)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s (peak %.1f; %s)</text>`+"\n", left, y0-8, p.title, peak, time.Duration(end)*time.Second)
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>`+"\n", left, y0, w, h)
		for j, c := range p.cols {
			var pts []string
			for _, s := range r.Samples {
				x := float64(left) + s.At.Seconds()/end*w
				y := float64(y0+h) - s.values()[c]/p.unit/peak*h
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
			}
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`+"\n", soakColors[j%len(soakColors)], strings.Join(pts, " "))
		}
	}
	b.WriteString("</svg>\n")
	return []byte(b.String())
}

// Markdown renders the report: the run, then the first, middle and last samples.
func (r *SoakReport) Markdown(command string) string {
	var b strings.Builder
	m, o := r.Machine, r.Options
	fmt.Fprintf(&b, "Command: `%s`. Machine: %d CPUs (%s), %.1f GiB RAM, %s, %s.\n\n", command, m.CPUs, m.Model, float64(m.RAM)/(1<<30), m.Go, m.Arch)
	fmt.Fprintf(&b, "%d tracked items, %d of them changing each second (an event each), for %s; the daemon's default `nats:` settings (`retain_acked` %s, `retain_acked_max_bytes` %s). The process includes the embedded NATS server. Samples in %s and %s.\n\n",
		o.Items, o.Rate, o.Duration, r.NATS.RetainAcked, mibs(r.NATS.RetainAckedMaxBytes), filepath.Base(r.CSV), filepath.Base(r.SVG))
	b.WriteString("| at | RSS anon | RSS file | heap | goroutines | fds | state file | free pages | retained | events |\n|---|---|---|---|---|---|---|---|---|---|\n")
	n := len(r.Samples)
	last := -1
	for _, i := range []int{0, n / 4, n / 2, 3 * n / 4, n - 1} {
		if i <= last || i >= n {
			continue
		}
		last = i
		s := r.Samples[i]
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %d | %d | %s | %s | %s | %d |\n", s.At, mibs(int64(s.RSSAnon)), mibs(int64(s.RSSFile)), mibs(int64(s.Heap)),
			s.Goroutines, s.FDs, mibs(s.File), mibs(s.Free), mibs(s.Retained), s.Events)
	}
	return b.String()
}
