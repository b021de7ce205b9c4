package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payments-watcher/watcher/bench/pipeline"
	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/sim"
)

// Columns of footprint.csv: seconds since the daemon first answered /metrics, then
// what each sample measures. A value the daemon does not export is blank.
var columns = []string{"seconds", "rss_anon_bytes", "rss_file_bytes", "heap_inuse_bytes", "goroutines", "open_fds",
	"state_file_bytes", "state_free_pages_bytes", "retained_bytes", "stream_bytes", "stream_messages", "cpu_seconds"}

const (
	colSeconds = iota
	colRSSAnon
	colRSSFile
	colHeap
	colGoroutines
	colFDs
	colStateFile
	colFree
	colRetained
	colStreamBytes
	colStreamMsgs
	colCPU
)

// panels are the charts of footprint.svg.
var panels = []pipeline.Panel{
	{Title: "daemon RSS, MiB (anon, file)", Unit: 1 << 20, Cols: []int{colRSSAnon, colRSSFile}},
	{Title: "Go heap in use, MiB", Unit: 1 << 20, Cols: []int{colHeap}},
	{Title: "goroutines, open fds", Unit: 1, Cols: []int{colGoroutines, colFDs}},
	{Title: "state file, free pages, retained events, MiB", Unit: 1 << 20, Cols: []int{colStateFile, colFree, colRetained}},
	{Title: "JetStream stream, MiB", Unit: 1 << 20, Cols: []int{colStreamBytes}},
	{Title: "JetStream stream, thousands of messages", Unit: 1000, Cols: []int{colStreamMsgs}},
	{Title: "daemon CPU time, seconds", Unit: 1, Cols: []int{colCPU}},
}

// Settings of every run: the sources are polled as `watcher demo` polls them, so
// that there is steady work, and the simulator's items move on within seconds to
// minutes, so that a steady set of items is open.
const (
	pollInterval = "2s"
	openRefresh  = "2s"
	rateLimit    = 20
	stopGrace    = 30 * time.Second
	startTimeout = 60 * time.Second
	// boundedOverlap and boundedSettle are discovery_overlap and settle_window with
	// -lookback.
	boundedOverlap = "1m"
	boundedSettle  = "2m"
	scenarioExtra  = "history_span: 1h\nopen_share: 0.6\nopen_resume_within: 10m\nfailure_rate: 0.3\ndelays: {min: 1s, mean: 10s, max: 2m}\n"
)

// report is what a run measured.
type report struct {
	Options options
	Machine pipeline.Machine
	// Version is the daemon binary's version line; Config the configuration it ran
	// with, and AdminListen whether it sets admin.listen (releases that know it).
	Version string
	// Tree is `git describe --always --dirty` of the tree the daemon was built from,
	// when the harness built it.
	Tree        string
	Config      string
	AdminListen bool
	// RetainAcked is nats.retain_acked as the daemon's `config check` shows it.
	RetainAcked string
	// Stream is the JetStream stream the daemon publishes to.
	Stream string
	// PIDs are the processes the run started, by name (watcher, simulator,
	// nats-server); all have ended when run returns.
	PIDs   map[string]int
	Series pipeline.Series
	// CSV and SVG are the files written.
	CSV, SVG string
}

// run starts nats-server, the simulator and the daemon, samples them every o.Every
// for o.Soak and stops them, the daemon first. It returns the samples taken even when
// it fails or ctx ends the run early; no process it started outlives it.
func run(ctx context.Context, o options) (r *report, err error) {
	r = &report{Options: o, Machine: pipeline.ThisMachine(), Series: pipeline.Series{Label: o.Label, Columns: columns}, PIDs: map[string]int{}}
	progress := o.Progress
	if progress == nil {
		progress = io.Discard
	}
	bin := filepath.Join(o.Dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return nil, err
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return nil, err
	}
	// The simulator is the current tree's whatever the daemon measured is.
	simBin := filepath.Join(bin, "watcher")
	fmt.Fprintf(progress, "footprint: building %s\n", simBin)
	if err := build(ctx, root, simBin, "./cmd/watcher"); err != nil {
		return nil, err
	}
	daemonBin := simBin
	if o.Watcher != "" {
		if daemonBin, err = filepath.Abs(o.Watcher); err != nil {
			return nil, err
		}
	}
	natsBin := o.NATSServer
	if natsBin == "" {
		natsBin = filepath.Join(bin, "nats-server")
		fmt.Fprintf(progress, "footprint: building %s\n", natsBin)
		if err := build(ctx, root, natsBin, "github.com/nats-io/nats-server/v2"); err != nil {
			return nil, err
		}
	}
	v, err := exec.CommandContext(ctx, daemonBin, "version").Output()
	if err != nil {
		return nil, fmt.Errorf("%s version: %w", daemonBin, err)
	}
	r.Version = strings.TrimSpace(string(v))
	if o.Watcher == "" {
		if d, err := exec.CommandContext(ctx, "git", "-C", root, "describe", "--always", "--dirty").Output(); err == nil {
			r.Tree = strings.TrimSpace(string(d))
		}
	}

	var procs []*proc
	defer func() {
		for i := len(procs) - 1; i >= 0; i-- {
			if serr := procs[i].stop(stopGrace); serr != nil && err == nil {
				err = serr
			}
		}
	}()

	natsAddr, err := freePort()
	if err != nil {
		return r, err
	}
	_, natsPort, _ := strings.Cut(natsAddr, ":")
	ns, err := start("nats-server", natsBin, []string{"-js", "-sd", filepath.Join(o.Dir, "nats"), "-a", "127.0.0.1", "-p", natsPort},
		filepath.Join(o.Dir, "nats-server.log"))
	if err != nil {
		return r, err
	}
	procs = append(procs, ns)
	r.PIDs[ns.name] = ns.pid()
	natsURL := "nats://" + natsAddr
	var js jetstream.JetStream
	if err := ns.await(ctx, startTimeout, "JetStream", func() error {
		nc, err := nats.Connect(natsURL, nats.Name("footprint"), nats.MaxReconnects(-1))
		if err != nil {
			return err
		}
		if js, err = jetstream.New(nc); err == nil {
			_, err = js.AccountInfo(ctx)
		}
		if err != nil {
			nc.Close()
		}
		return err
	}); err != nil {
		return r, err
	}
	defer js.Conn().Close()

	simAddr, err := freePort()
	if err != nil {
		return r, err
	}
	scenario := filepath.Join(o.Dir, "scenario.yaml")
	if err := os.WriteFile(scenario, fmt.Appendf(nil, "seed: %d\nrate: %g\nhistory: %d\n%s", o.Seed, o.Rate, o.History, scenarioExtra), 0o644); err != nil {
		return r, err
	}
	sp, err := start("simulator", simBin, []string{"sim", "--listen", simAddr, "--scenario", scenario, "--log-level", "warn"},
		filepath.Join(o.Dir, "sim.log"))
	if err != nil {
		return r, err
	}
	procs = append(procs, sp)
	r.PIDs[sp.name] = sp.pid()
	if err := sp.await(ctx, startTimeout, "listener "+simAddr, func() error { return dialable(simAddr) }); err != nil {
		return r, err
	}

	httpAddr, err := freePort()
	if err != nil {
		return r, err
	}
	statePath := filepath.Join(o.Dir, "watcher.db")
	cfgPath := filepath.Join(o.Dir, "watcher.yaml")
	if err := r.configure(ctx, daemonBin, cfgPath, statePath, natsURL, "http://"+simAddr, httpAddr); err != nil {
		return r, err
	}
	dp, err := start("watcher", daemonBin, []string{"run", "--config", cfgPath, "--log-level", "warn"}, filepath.Join(o.Dir, "watcher.log"))
	if err != nil {
		return r, err
	}
	procs = append(procs, dp)
	r.PIDs[dp.name] = dp.pid()
	metricsURL := "http://" + httpAddr + "/metrics"
	if err := dp.await(ctx, startTimeout, metricsURL, func() error { _, err := scrape(ctx, metricsURL); return err }); err != nil {
		return r, err
	}
	fmt.Fprintf(progress, "footprint: %s (%s, pid %d) polls the simulator on %s and publishes to %s; %s of samples every %s in %s\n",
		o.Label, r.Version, dp.pid(), simAddr, natsURL, o.Soak, o.Every, o.Dir)

	began := time.Now()
	tick := time.NewTicker(o.Every)
	defer tick.Stop()
	for {
		if dp.exited() {
			return r, dp.exitError()
		}
		row, err := r.sample(ctx, dp.pid(), metricsURL, statePath, js, time.Since(began))
		if err != nil {
			return r, err
		}
		r.Series.Rows = append(r.Series.Rows, row)
		fmt.Fprintln(progress, progressLine(o.Label, row))
		// The files are current after every sample, to be watched while the run goes
		// and kept if the harness itself is killed.
		if err := r.write(); err != nil {
			return r, err
		}
		if time.Since(began) >= o.Soak {
			break
		}
		select {
		case <-ctx.Done():
			return r, fmt.Errorf("stopped after %s of %s: %w", time.Since(began).Round(time.Second), o.Soak, ctx.Err())
		case <-tick.C:
		}
	}
	// Stop the daemon first, so that its exit status is the run's.
	if err := dp.stop(stopGrace); err != nil {
		return r, err
	}
	return r, nil
}

// configure writes the daemon's configuration to path: every simulated provider
// with an adapter, as `watcher demo` configures them, the state file, NATS and the
// public listener, and nothing else, so that every release accepts it. Releases that
// have the admin listener (on a fixed default port) get it on a free port instead, so
// that two runs side by side do not collide; `config check` tells them apart.
func (r *report) configure(ctx context.Context, bin, path, statePath, natsURL, simURL, httpAddr string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "state:\n  path: %q\nnats:\n  url: %q\nhttp:\n  listen: %q\nsources:\n", statePath, natsURL, httpAddr)
	for _, s := range sim.Sources() {
		if _, ok := poller.Providers[s.Provider]; !ok {
			continue
		}
		fmt.Fprintf(&b, "  - name: %s\n    provider: %s\n    base_url: %q\n", s.Name, s.Provider, simURL)
		fmt.Fprintf(&b, "    interval: %s\n    open_refresh: %s\n    rate_limit: %d\n    baseline: emit\n", pollInterval, openRefresh, rateLimit)
		if lb := r.Options.Lookback; lb > 0 {
			fmt.Fprintf(&b, "    lookback: %s\n    open_max_age: %s\n    discovery_overlap: %s\n    settle_window: %s\n", lb, lb, boundedOverlap, boundedSettle)
		}
		b.WriteString(s.KeyLines("    "))
	}
	common := b.String()
	adminAddr, err := freePort()
	if err != nil {
		return err
	}
	withAdmin := common + fmt.Sprintf("admin:\n  listen: %q\n", adminAddr)
	check := func(cfg string) (string, error) {
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			return "", err
		}
		out, err := exec.CommandContext(ctx, bin, "config", "check", "--config", path).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("%s config check --config %s: %w\n%s", bin, path, err, out)
		}
		return string(out), nil
	}
	out, err := check(withAdmin)
	r.Config, r.AdminListen = withAdmin, true
	if err != nil {
		if out, err = check(common); err != nil {
			return err
		}
		r.Config, r.AdminListen = common, false
	}
	r.RetainAcked = "default"
	for line := range strings.Lines(out) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && k == "retain_acked" {
			r.RetainAcked = strings.TrimSpace(v)
		}
	}
	return nil
}

// sample measures the daemon (pid), its state file and the stream once.
func (r *report) sample(ctx context.Context, pid int, metricsURL, statePath string, js jetstream.JetStream, at time.Duration) ([]float64, error) {
	row := make([]float64, len(columns))
	for i := range row {
		row[i] = math.NaN()
	}
	row[colSeconds] = math.Round(at.Seconds())
	anon, file, err := pipeline.ProcRSS(pid)
	if err != nil {
		return nil, fmt.Errorf("daemon (pid %d) memory: %w", pid, err)
	}
	row[colRSSAnon], row[colRSSFile] = float64(anon), float64(file)
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil, fmt.Errorf("daemon (pid %d) open files: %w", pid, err)
	}
	row[colFDs] = float64(len(fds))
	if row[colCPU], err = cpuSeconds(pid); err != nil {
		return nil, err
	}
	if fi, err := os.Stat(statePath); err == nil {
		row[colStateFile] = float64(fi.Size())
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("state file: %w", err)
	}
	m, err := scrape(ctx, metricsURL)
	if err != nil {
		return nil, err
	}
	for col, name := range map[int]string{colHeap: "go_memstats_heap_inuse_bytes", colGoroutines: "go_goroutines",
		colFree: "watcher_state_free_pages_bytes", colRetained: "watcher_retained_bytes"} {
		if v, ok := m[name]; ok {
			row[col] = v
		}
	}
	if r.Stream == "" {
		names := js.StreamNames(ctx)
		for n := range names.Name() {
			r.Stream = n
			break
		}
	}
	if r.Stream != "" {
		s, err := js.Stream(ctx, r.Stream)
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", r.Stream, err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("stream %s info: %w", r.Stream, err)
		}
		row[colStreamBytes], row[colStreamMsgs] = float64(info.State.Bytes), float64(info.State.Msgs)
	}
	return row, nil
}

// cpuSeconds returns the user and system CPU time process pid has used, from
// /proc/PID/stat (in clock ticks of 1/100 s, as on every Linux platform Go supports).
func cpuSeconds(pid int) (float64, error) {
	path := fmt.Sprintf("/proc/%d/stat", pid)
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("daemon CPU time: %w", err)
	}
	// The command name, in parentheses, may hold spaces; fields count from after it.
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0, fmt.Errorf("daemon CPU time: %s: %d fields after the command, want at least 13", path, len(f))
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("daemon CPU time: %s: %w", path, err)
	}
	return float64(utime+stime) / 100, nil
}

// scrape reads the unlabelled series of a Prometheus text exposition at url.
func scrape(ctx context.Context, url string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok || strings.ContainsRune(name, '{') {
			continue
		}
		if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			m[name] = f
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return m, nil
}

// progressLine describes one sample for the terminal.
func progressLine(label string, row []float64) string {
	return fmt.Sprintf("%s  %s %s: rss anon %s file %s, heap %s, %s goroutines, %s fds, state file %s (free %s, retained %s), stream %s, %s messages",
		time.Now().UTC().Format("15:04:05"), label, time.Duration(row[colSeconds])*time.Second,
		mib(row[colRSSAnon]), mib(row[colRSSFile]), mib(row[colHeap]), count(row[colGoroutines]), count(row[colFDs]),
		mib(row[colStateFile]), mib(row[colFree]), mib(row[colRetained]), mib(row[colStreamBytes]), count(row[colStreamMsgs])) +
		fmt.Sprintf(", cpu %.0fs", row[colCPU])
}

// mib renders bytes in MiB; "–" for a value not measured.
func mib(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.1f MiB", v/(1<<20))
}

// count renders a whole number; "–" for a value not measured.
func count(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}
