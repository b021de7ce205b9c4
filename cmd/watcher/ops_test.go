package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsserver "github.com/nats-io/nats-server/v2/test"
)

// natsAt runs a JetStream server on port storing in dir; stop it with stopNATS.
func natsAt(t *testing.T, port int, dir string) *server.Server {
	t.Helper()
	opts := natsserver.DefaultTestOptions
	opts.Port, opts.JetStream, opts.StoreDir = port, true, dir
	srv := natsserver.RunServer(&opts)
	t.Cleanup(func() { stopNATS(srv) })
	return srv
}

func stopNATS(srv *server.Server) {
	srv.Shutdown()
	srv.WaitForShutdown()
}

// eventually calls check until it returns "" or 30 seconds pass; check says what it
// still waits for.
func eventually(t *testing.T, check func() string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		waiting := check()
		if waiting == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30s still waiting for %s", waiting)
		}
		// The daemon works on timers and another process (NATS) of its own: ask again
		// shortly.
		<-time.After(20 * time.Millisecond)
	}
}

var (
	addrLine      = regexp.MustCompile(`msg="serving /metrics[^"]*" addr=(\S+)`)
	adminAddrLine = regexp.MustCompile(`msg="serving the admin API[^"]*" addr=(\S+)`)
)

// httpAddr waits for the daemon to log the address it serves /metrics on.
func (d *runningDaemon) httpAddr(t *testing.T) string {
	t.Helper()
	return d.loggedAddr(t, addrLine)
}

// adminAddr waits for the daemon to log the address of its admin listener.
func (d *runningDaemon) adminAddr(t *testing.T) string {
	t.Helper()
	return d.loggedAddr(t, adminAddrLine)
}

func (d *runningDaemon) loggedAddr(t *testing.T, line *regexp.Regexp) string {
	t.Helper()
	var addr string
	eventually(t, func() string {
		if m := line.FindStringSubmatch(d.logs.String()); m != nil {
			addr = m[1]
			return ""
		}
		return "the address in the logs (" + line.String() + "):\n" + d.logs.String()
	})
	return addr
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// sample returns the value of series (name and labels as exposed) in a Prometheus text
// exposition: that of the first line that starts with it. The error names the series
// when no line has it or its value is not a number.
func sample(exposition, series string) (float64, error) {
	for line := range strings.Lines(exposition) {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				return 0, fmt.Errorf("series %s: value %q: %v", series, strings.TrimSpace(rest), err)
			}
			return v, nil
		}
	}
	return 0, fmt.Errorf("series %s is not exposed", series)
}

// awaitSample is a condition for eventually: "" once series is exposed with a value
// that check accepts, else what is awaited and why not yet (the series missing, or its
// value).
func awaitSample(exposition, series, what string, check func(float64) bool) string {
	v, err := sample(exposition, series)
	if err != nil {
		return fmt.Sprintf("%s (%v)", what, err)
	}
	if !check(v) {
		return fmt.Sprintf("%s (%s = %v)", what, series, v)
	}
	return ""
}

func atLeast(n float64) func(float64) bool { return func(v float64) bool { return v >= n } }
func equal(n float64) func(float64) bool   { return func(v float64) bool { return v == n } }

// stateRun runs a state command and returns its stdout and stderr.
func stateRun(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(t.Context(), append([]string{"state"}, args...), &out, &errOut)
	return out.String(), errOut.String(), err
}

// stateOK runs a state command that must succeed and returns its stdout.
func stateOK(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := stateRun(t, args...)
	if err != nil {
		t.Fatalf("state %v: %v\n%s", args, err, errOut)
	}
	return out
}

func TestOperableEndToEnd(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Second)
	cpn := &cpnServer{served: make(chan struct{}, 1)}
	cpn.payments = []map[string]any{
		payment("p-new", "CREATED", now.Add(-1*time.Hour), "10.000000"),
		payment("p-pending", "CRYPTO_FUNDS_PENDING", now.Add(-2*time.Hour), "5.000000"),
		payment("p-done", "COMPLETED", now.Add(-3*time.Hour), "7.500000"),
	}
	prov := httptest.NewServer(cpn)
	defer prov.Close()

	dir := t.TempDir()
	natsDir := filepath.Join(dir, "nats")
	ns := natsAt(t, -1, natsDir)
	natsPort := ns.Addr().(*net.TCPAddr).Port

	cfgPath := filepath.Join(dir, "watcher.yaml")
	t.Setenv("OPS_CPN_KEY", cpnKey)
	cfg := fmt.Sprintf(`
state:
  path: %s/state/watcher.db
nats:
  url: nats://127.0.0.1:%d
http:
  listen: 127.0.0.1:0
admin:
  listen: 127.0.0.1:0
  token_file: %s/admin-token
sources:
  - name: cpn
    provider: circle_cpn_payments
    base_url: %s
    api_key: ${OPS_CPN_KEY}
    interval: 200ms
    open_refresh: 1ms
    open_refresh_max: 0s
    baseline: emit
`, dir, natsPort, dir, prov.URL)
	const token = "ops-admin-token-0123456789"
	if err := os.WriteFile(filepath.Join(dir, "admin-token"), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	d := startDaemon(t, cfgPath)
	base := "http://" + d.httpAddr(t)
	addr := d.adminAddr(t)

	// Ready once NATS, the outbox and the source are fine; the first events published.
	var metrics string
	eventually(t, func() string {
		code, body := get(t, base+"/readyz")
		if code != 200 || body != "ready\n" {
			return fmt.Sprintf("/readyz 200 (got %d %q)", code, body)
		}
		_, metrics = get(t, base+"/metrics")
		if w := awaitSample(metrics, "watcher_published_total", "3 events published", atLeast(3)); w != "" {
			return w
		}
		return awaitSample(metrics, `watcher_polls_total{result="ok",source="cpn"}`, "two successful polls", atLeast(2))
	})
	if code, body := get(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	for series, check := range map[string]func(float64) bool{
		`watcher_transitions_total{kind="payment",source="cpn",state="pending"}`:                   func(v float64) bool { return v == 2 },
		`watcher_transitions_total{kind="payment",source="cpn",state="completed"}`:                 func(v float64) bool { return v == 1 },
		`watcher_provider_requests_total{code="2xx",purpose="discovery",source="cpn"}`:             func(v float64) bool { return v >= 2 },
		`watcher_provider_requests_total{code="5xx",purpose="discovery",source="cpn"}`:             func(v float64) bool { return v == 0 },
		`watcher_provider_request_duration_seconds_count{purpose="discovery",source="cpn"}`:        func(v float64) bool { return v >= 2 },
		`watcher_items_seen_total{source="cpn"}`:                                                   func(v float64) bool { return v >= 3 },
		`watcher_open_items{source="cpn"}`:                                                         func(v float64) bool { return v == 2 },
		`watcher_oldest_open_item_age_seconds{source="cpn"}`:                                       func(v float64) bool { return v >= 7200 && v < 7300 },
		`watcher_last_success_timestamp_seconds{source="cpn"}`:                                     func(v float64) bool { return v >= float64(now.Unix()) },
		`watcher_publish_latency_seconds_count`:                                                    func(v float64) bool { return v >= 3 },
		`watcher_publish_errors_total{reason="not_connected"}`:                                     func(v float64) bool { return v == 0 },
		`watcher_build_info{commit="unknown",goversion="` + runtime.Version() + `",version="dev"}`: func(v float64) bool { return v == 1 },
		`go_goroutines`: func(v float64) bool { return v > 0 },
	} {
		if v, err := sample(metrics, series); err != nil {
			t.Error(err)
		} else if !check(v) {
			t.Errorf("%s = %v", series, v)
		}
	}

	// NATS goes away: not ready, naming NATS; events wait in the outbox meanwhile.
	stopNATS(ns)
	eventually(t, func() string {
		code, body := get(t, base+"/readyz")
		if code != 503 || !strings.HasPrefix(body, "nats: ") {
			return fmt.Sprintf("/readyz 503 naming NATS (got %d %q)", code, body)
		}
		return ""
	})
	cpn.set("p-pending", func(p map[string]any) { p["status"] = "FAILED" })
	eventually(t, func() string {
		_, m := get(t, base+"/metrics")
		if w := awaitSample(m, "watcher_outbox_depth", "an outbox depth of 1", equal(1)); w != "" {
			return w
		}
		if w := awaitSample(m, `watcher_publish_errors_total{reason="not_connected"}`, "a publish error counted as not_connected", atLeast(1)); w != "" {
			return w
		}
		return awaitSample(m, "watcher_outbox_oldest_age_seconds", "a positive outbox age", func(v float64) bool { return v > 0 })
	})

	// Back on the same port and store: ready again, the waiting event published.
	ns = natsAt(t, natsPort, natsDir)
	eventually(t, func() string {
		code, body := get(t, base+"/readyz")
		if code != 200 {
			return fmt.Sprintf("/readyz 200 again (got %d %q)", code, body)
		}
		_, m := get(t, base+"/metrics")
		if w := awaitSample(m, "watcher_outbox_depth", "an empty outbox", equal(0)); w != "" {
			return w
		}
		return awaitSample(m, `watcher_transitions_total{kind="payment",source="cpn",state="failed"}`, "the failed transition counted", equal(1))
	})

	// The metrics port serves no /state/ endpoint.
	if code, _ := get(t, base+"/state/sources"); code != 404 {
		t.Errorf("/state/sources on http.listen: %d, want 404", code)
	}

	// The state commands, asked while the watcher runs (it holds the file).
	type answer struct{ out, err string }
	remote := map[string]answer{}
	for _, args := range [][]string{{"sources"}, {"get", "cpn", "p-pending"}, {"open", "cpn"}, {"export", "cpn"}, {"outbox"}} {
		out, errOut, err := stateRun(t, append(args, "--config", cfgPath, "--addr", addr)...)
		if err != nil {
			t.Fatalf("state %v against the running watcher: %v\n%s", args, err, errOut)
		}
		if !strings.Contains(errOut, "read from the running watcher at "+addr) {
			t.Errorf("state %v did not say it asked the running watcher: %q", args, errOut)
		}
		remote[args[0]] = answer{out, errOut}
	}
	if got := remote["get"].out; !strings.Contains(got, `"id": "p-pending"`) || !strings.Contains(got, `"status": "FAILED"`) || !strings.Contains(got, `"sequence": 2`) {
		t.Errorf("state get:\n%s", got)
	}
	// Oldest first; a failed CPN payment stays open for its settle window (refunds may follow).
	// The last column, when each was last read, is the daemon's and varies: it must be
	// a time after the test started.
	var open []string
	for _, line := range strings.Split(strings.TrimSuffix(remote["open"].out, "\n"), "\n") {
		cols := strings.Split(line, "\t")
		if n := len(cols); n != 5 {
			t.Fatalf("state open: %d columns in %q, want 5", n, line)
		}
		if read, err := time.Parse(time.RFC3339, cols[4]); err != nil || read.Before(now.Truncate(time.Second)) {
			t.Errorf("state open: last read %q of %s is not a time since the test started (%v)", cols[4], cols[0], err)
		}
		open = append(open, strings.Join(cols[:4], "\t"))
	}
	if got := strings.Join(open, "\n"); got != "p-pending\t"+now.Add(-2*time.Hour).Format(time.RFC3339)+"\tFAILED\tsettling\n"+
		"p-new\t"+now.Add(-time.Hour).Format(time.RFC3339)+"\tCREATED\tpending" {
		t.Errorf("state open:\n%q", got)
	}
	if n := strings.Count(remote["export"].out, "\n"); n != 3 {
		t.Errorf("state export: %d lines, want 3:\n%s", n, remote["export"].out)
	}
	if remote["outbox"].out != "" {
		t.Errorf("state outbox with everything published:\n%s", remote["outbox"].out)
	}
	if !regexp.MustCompile(`(?m)^cpn +3 +2 +0 +\S+Z +\S+Z *$`).MatchString(remote["sources"].out) {
		t.Errorf("state sources:\n%s", remote["sources"].out)
	}
	if _, _, err := stateRun(t, "check", "--config", cfgPath); err == nil || !strings.Contains(err.Error(), "needs the watcher stopped") {
		t.Errorf("state check while running: %v", err)
	}
	if _, _, err := stateRun(t, "rebaseline", "paypal", "--config", cfgPath, "--addr", addr); err == nil || err.Error() != `unknown source "paypal" (known: cpn)` {
		t.Errorf("rebaseline of an unknown source: %v", err)
	}
	if _, _, err := stateRun(t, "get", "cpn", "nope", "--config", cfgPath, "--addr", addr); err == nil || err.Error() != `source cpn: item "nope" not found` {
		t.Errorf("get of an unknown item: %v", err)
	}

	// Without the token, or with another, a rebaseline is refused; a form a browser
	// could send from another origin is refused even with it.
	for _, tc := range []struct {
		auth, contentType string
		want              int
	}{
		{"", "application/json", 401},
		{"Bearer not-the-token", "application/json", 401},
		{"Bearer " + token, "text/plain", 400},
	} {
		req, err := http.NewRequest("POST", "http://"+addr+"/state/rebaseline/cpn", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", tc.contentType)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("rebaseline with Authorization %q as %s: %s, want %d", tc.auth, tc.contentType, resp.Status, tc.want)
		}
	}
	// Records are not shown without the token either.
	if code, _ := get(t, "http://"+addr+"/state/export/cpn"); code != 401 {
		t.Errorf("export without the token: %d, want 401", code)
	}

	// A rebaseline asked of the running watcher: its next cycle is a silent baseline.
	baselines := strings.Count(d.logs.String(), "baseline walk complete")
	out, errOut, err := stateRun(t, "rebaseline", "cpn", "--config", cfgPath, "--addr", addr)
	if err != nil || !strings.Contains(out, "source cpn: rebaseline requested") || !strings.Contains(errOut, "asking the running watcher at "+addr) {
		t.Fatalf("rebaseline: %v\n%s%s", err, out, errOut)
	}
	eventually(t, func() string {
		if strings.Count(d.logs.String(), "baseline walk complete") <= baselines {
			return "a second baseline walk"
		}
		return ""
	})
	if !strings.Contains(d.logs.String()[strings.LastIndex(d.logs.String(), "baseline walk complete"):], "silent=true") {
		t.Errorf("the requested baseline was not silent:\n%s", d.logs)
	}
	d.stop(t)

	// Stopped: the same answers straight from the file.
	for _, args := range [][]string{{"get", "cpn", "p-pending"}, {"open", "cpn"}, {"export", "cpn"}, {"outbox"}} {
		out, errOut, err := stateRun(t, append(args, "--config", cfgPath)...)
		if err != nil {
			t.Fatalf("state %v offline: %v", args, err)
		}
		if !strings.Contains(errOut, "read from state file "+filepath.Join(dir, "state", "watcher.db")) {
			t.Errorf("state %v offline did not name the file: %q", args, errOut)
		}
		want := remote[args[0]].out
		if args[0] == "open" { // the daemon went on reading items after the first answer
			out, want = withoutLastRead(out), withoutLastRead(want)
		}
		if out != want {
			t.Errorf("state %v: offline\n%s\nwhile running\n%s", args, out, want)
		}
	}
	if out, _, err := stateRun(t, "check", "--config", cfgPath); err != nil || !strings.HasSuffix(out, "no problems found\n") {
		t.Errorf("state check: %v %q", err, out)
	}

	// A rebaseline written to the file is honoured by the next run.
	if _, _, err := stateRun(t, "rebaseline", "cpn", "--config", cfgPath); err != nil {
		t.Fatal(err)
	}
	if out = stateOK(t, "sources", "--config", cfgPath); !strings.Contains(out, "rebaseline requested") {
		t.Errorf("state sources after rebaseline:\n%s", out)
	}
	d = startDaemon(t, cfgPath)
	eventually(t, func() string {
		if !strings.Contains(d.logs.String(), "baseline walk complete") {
			return "the baseline walk of the restarted watcher"
		}
		return ""
	})
	if !regexp.MustCompile(`baseline walk complete.* silent=true`).MatchString(d.logs.String()) {
		t.Errorf("the baseline after a written rebaseline was not silent:\n%s", d.logs)
	}
	d.stop(t)
	if out = stateOK(t, "sources", "--config", cfgPath); strings.Contains(out, "rebaseline requested") {
		t.Errorf("rebaseline still requested after the baseline:\n%s", out)
	}
}

// withoutLastRead drops the last column (when each item was last read) of `watcher
// state open` output.
func withoutLastRead(out string) string {
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if j := strings.LastIndexByte(l, '\t'); j >= 0 {
			lines[i] = l[:j]
		}
	}
	return strings.Join(lines, "\n")
}
