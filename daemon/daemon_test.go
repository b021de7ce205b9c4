package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payments-watcher/watcher/config"
	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/internal/logtest"
	"github.com/payments-watcher/watcher/internal/natstest"
	"github.com/payments-watcher/watcher/publish"
	"github.com/payments-watcher/watcher/state"
	"github.com/payments-watcher/watcher/state/bbolt"
	"github.com/payments-watcher/watcher/state/natskv"
	"github.com/payments-watcher/watcher/stateapi"
)

const cpnKey = "TEST_API_KEY:daemon-id:daemon-secret"

// fakeCPN is a CPN-shaped provider holding a few recent payments (one page, newest
// first); it refuses the key while refuse is set and calls onList after answering a
// list request.
type fakeCPN struct {
	refuse   atomic.Bool
	payments []map[string]any
	mu       sync.Mutex
	onList   func()
}

func newFakeCPN(n int) *fakeCPN {
	f := &fakeCPN{}
	now := time.Now().UTC().Truncate(time.Second)
	for i := range n {
		f.payments = append(f.payments, map[string]any{
			"type": "payment", "id": fmt.Sprintf("p%d", i+1), "status": "CREATED",
			"createDate":   now.Add(-time.Duration(i+1) * time.Minute).Format(time.RFC3339),
			"sourceAmount": map[string]any{"amount": "1.000000", "currency": "USDC"}, "customerRefId": "c",
			"refunds": []any{}, "rfis": []any{}, "onChainTransactions": []any{},
		})
	}
	return f
}

func (f *fakeCPN) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if f.refuse.Load() || r.Header.Get("Authorization") != "Bearer "+cpnKey {
		w.WriteHeader(401)
		fmt.Fprint(w, `{"code":401,"message":"Malformed authorization."}`)
		return
	}
	if id, ok := strings.CutPrefix(r.URL.Path, "/v1/cpn/payments/"); ok {
		for _, p := range f.payments {
			if p["id"] == id {
				json.NewEncoder(w).Encode(map[string]any{"data": p})
				return
			}
		}
		w.WriteHeader(404)
		fmt.Fprint(w, `{"code":404,"message":"Not found."}`)
		return
	}
	list := f.payments
	if r.URL.Query().Get("pageAfter") != "" {
		list = nil
	}
	json.NewEncoder(w).Encode(map[string]any{"data": list})
	if fl, ok := w.(http.Flusher); ok {
		fl.Flush()
	}
	f.mu.Lock()
	fn := f.onList
	f.mu.Unlock()
	if fn != nil {
		fn()
	}
}

// mode is one way of running the daemon: what the configuration says of the state.
type mode struct {
	name  string
	state func(dir string) string
}

var modes = []mode{
	{"bbolt", func(dir string) string { return fmt.Sprintf("state:\n  path: %s/w.db\n", dir) }},
	{"nats_kv", func(string) string {
		return "state:\n  backend: nats_kv\n  nats_kv:\n    replicas: 1\ncluster:\n  replica_id: r1\n  lease_ttl: 1s\n"
	}},
}

// env is what a test of one mode runs against: NATS, the provider, a directory.
type env struct {
	t    *testing.T
	mode mode
	nats *server.Server
	prov *fakeCPN
	url  string
	dir  string
}

func newEnv(t *testing.T, m mode, payments int) *env {
	prov := newFakeCPN(payments)
	srv := httptest.NewServer(prov)
	t.Cleanup(srv.Close)
	return &env{t: t, mode: m, nats: natstest.JetStream(t), prov: prov, url: srv.URL, dir: t.TempDir()}
}

// config returns the configuration of the mode with admin as the admin block.
func (e *env) config(admin string) *config.Config {
	e.t.Helper()
	doc := e.mode.state(e.dir) + fmt.Sprintf(`nats:
  url: %s
http:
  listen: 127.0.0.1:0
%ssources:
  - name: cpn
    provider: circle_cpn_payments
    base_url: %s
    api_key: %s
    interval: 200ms
    open_refresh: 1ms
    baseline: emit
`, e.nats.ClientURL(), admin, e.url, cpnKey)
	cfg, err := config.Parse([]byte(doc), func(string) (string, bool) { return "", false }, os.ReadFile)
	if err != nil {
		e.t.Fatalf("config: %v\n%s", err, doc)
	}
	return cfg
}

// running is a daemon started by a test.
type running struct {
	t      *testing.T
	cancel context.CancelFunc
	done   chan error
	logs   *logtest.Buffer
}

func (e *env) start(cfg *config.Config) *running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{t: e.t, cancel: cancel, done: make(chan error, 1), logs: &logtest.Buffer{}}
	log := slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	go func() { r.done <- Run(ctx, cfg, log, Options{Version: "test", Commit: "test"}) }()
	e.t.Cleanup(func() {
		cancel()
		<-r.done
		if e.t.Failed() {
			e.t.Logf("daemon logs:\n%s", r.logs)
		}
	})
	return r
}

// stop stops the daemon and waits for Run to return nil.
func (r *running) stop() {
	r.t.Helper()
	r.cancel()
	r.wait()
}

// wait waits for Run to return nil.
func (r *running) wait() {
	r.t.Helper()
	select {
	case err := <-r.done:
		r.done <- err
		if err != nil {
			r.t.Fatalf("Run returned %v", err)
		}
	case <-time.After(30 * time.Second):
		r.t.Fatal("Run did not return")
	}
}

// addr waits for the daemon to log the address of what msg names.
func (r *running) addr(msg string) string {
	r.t.Helper()
	re := regexp.MustCompile(`msg="` + regexp.QuoteMeta(msg) + `".*? addr=(\S+)`)
	var addr string
	eventually(r.t, func() string {
		if m := re.FindStringSubmatch(r.logs.String()); m != nil {
			addr = m[1]
			return ""
		}
		return "the address of " + msg + " in the logs"
	})
	return addr
}

func (r *running) count(s string) int { return strings.Count(r.logs.String(), s) }

// eventually calls check until it returns "" or 20 seconds pass.
func eventually(t *testing.T, check func() string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		waiting := check()
		if waiting == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 20s still waiting for %s", waiting)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// sample returns the value of a series in a Prometheus exposition, -1 without it.
func sample(exposition, series string) float64 {
	for line := range strings.Lines(exposition) {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			fmt.Sscan(rest, &v)
			return v
		}
	}
	return -1
}

// readState opens the mode's state, the daemon stopped (bbolt) or not (nats_kv).
func (e *env) readState(cfg *config.Config) stateapi.Store {
	e.t.Helper()
	if e.mode.name == "bbolt" {
		s, err := bbolt.OpenReadOnly(cfg.State.Path, time.Second)
		if err != nil {
			e.t.Fatal(err)
		}
		e.t.Cleanup(func() { s.Close() })
		return stateapi.Bolt(s)
	}
	nc, err := publish.Connect(e.nats.ClientURL(), cfg.NATS, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		e.t.Fatal(err)
	}
	s, err := natskv.Open(e.t.Context(), js, natskv.Options{Prefix: cfg.State.NATSKV.BucketPrefix})
	if err != nil {
		e.t.Fatal(err)
	}
	return stateapi.KV(s)
}

// streamCount returns how many events the stream holds.
func (e *env) streamCount(cfg *config.Config) uint64 {
	e.t.Helper()
	nc, err := publish.Connect(e.nats.ClientURL(), cfg.NATS, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		e.t.Fatal(err)
	}
	st, err := js.Stream(e.t.Context(), cfg.NATS.Stream)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := st.Info(e.t.Context())
	if err != nil {
		e.t.Fatal(err)
	}
	return info.State.Msgs
}

// TestReadinessAndMetrics checks, in both modes, that /readyz names a source with
// no successful cycle for 3 intervals, is ready once it succeeds, and that the last
// success is carried over to the next start before any cycle of it.
func TestReadinessAndMetrics(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			e := newEnv(t, m, 2)
			e.prov.refuse.Store(true)
			cfg := e.config("admin:\n  listen: \"\"\n")
			d := e.start(cfg)
			base := "http://" + d.addr("serving /metrics, /healthz and /readyz")
			eventually(t, func() string {
				code, body := get(t, base+"/readyz")
				if code != 503 || !strings.Contains(body, "source cpn: no successful poll since the start") || !strings.Contains(body, "Malformed authorization") {
					return fmt.Sprintf("/readyz naming the source (got %d %q)", code, body)
				}
				return ""
			})
			e.prov.refuse.Store(false)
			var lastSuccess float64
			eventually(t, func() string {
				code, body := get(t, base+"/readyz")
				if code != 200 || !strings.HasPrefix(body, "ready") {
					return fmt.Sprintf("/readyz 200 (got %d %q)", code, body)
				}
				_, met := get(t, base+"/metrics")
				if lastSuccess = sample(met, `watcher_last_success_timestamp_seconds{source="cpn"}`); lastSuccess <= 0 {
					return "a last success"
				}
				return ""
			})
			if code, _ := get(t, base+"/state/sources"); code != 404 {
				t.Errorf("/state/sources on http.listen: %d, want 404", code)
			}
			d.stop()

			// Restarted with the key refused: the last success is the state's.
			e.prov.refuse.Store(true)
			d = e.start(cfg)
			base = "http://" + d.addr("serving /metrics, /healthz and /readyz")
			eventually(t, func() string {
				_, met := get(t, base+"/metrics")
				// The state holds the end of the last committed cycle, within a cycle of
				// what the gauge last showed.
				if got := sample(met, `watcher_last_success_timestamp_seconds{source="cpn"}`); got < lastSuccess-1 {
					return fmt.Sprintf("the last success carried over (%v, want about %v)", got, lastSuccess)
				}
				return ""
			})
		})
	}
}

// TestShutdownFlush checks, in both modes, that the events of a cycle the stop
// interrupts are all published when Run returns. (TestReplicaFlushesAtShutdown
// checks the flush itself, with events the publisher had not seen.)
func TestShutdownFlush(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			e := newEnv(t, m, 3)
			cfg := e.config("admin:\n  listen: \"\"\n")
			d := e.start(cfg)
			var once sync.Once
			e.prov.mu.Lock()
			// Stopped while the first page is committed, or just after.
			e.prov.onList = func() { once.Do(func() { time.AfterFunc(20*time.Millisecond, d.cancel) }) }
			e.prov.mu.Unlock()
			d.wait()
			if strings.Contains(d.logs.String(), "outbox not fully flushed") {
				t.Error("the outbox was not flushed")
			}
			if n := e.streamCount(cfg); n != 3 {
				t.Errorf("the stream holds %d events, want 3", n)
			}
			if n, _, err := e.readState(cfg).OutboxStats(t.Context()); err != nil || n != 0 {
				t.Errorf("outbox after the stop: %d, %v; want empty", n, err)
			}
		})
	}
}

// TestStateAPI checks, in both modes, the /state/ endpoints on a TCP admin listener
// with a token: nothing without it, and a rebaseline refused without it changes
// nothing.
func TestStateAPI(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			e := newEnv(t, m, 3)
			tokenFile := filepath.Join(e.dir, "admin-token")
			if err := os.WriteFile(tokenFile, []byte("admin-secret\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := e.config(fmt.Sprintf("admin:\n  listen: 127.0.0.1:0\n  token_file: %s\n", tokenFile))
			d := e.start(cfg)
			addr := d.addr("serving the admin API (/state/) and the status page (/)")
			eventually(t, func() string {
				if d.count("baseline walk complete") == 0 {
					return "the baseline walk"
				}
				return ""
			})

			anon, err := stateapi.NewClient(addr, "")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := anon.Sources(t.Context()); !errors.Is(err, stateapi.ErrUnauthorized) {
				t.Errorf("sources without the token: %v", err)
			}
			if err := anon.Export(t.Context(), "cpn", func(stateapi.Record) error { return nil }); !errors.Is(err, stateapi.ErrUnauthorized) {
				t.Errorf("export without the token: %v", err)
			}
			walks := d.count("baseline walk complete")
			if err := anon.Rebaseline(t.Context(), "cpn"); !errors.Is(err, stateapi.ErrUnauthorized) {
				t.Errorf("rebaseline without the token: %v", err)
			}

			c, err := stateapi.NewClient(addr, "admin-secret")
			if err != nil {
				t.Fatal(err)
			}
			list, err := c.Sources(t.Context())
			if err != nil || len(list) != 1 || list[0].Name != "cpn" || list[0].Items != 3 || list[0].Rebaseline {
				t.Fatalf("sources: %+v, %v", list, err)
			}
			time.Sleep(3 * 200 * time.Millisecond) // three intervals: a request let through would have been acted on
			if got := d.count("baseline walk complete"); got != walks {
				t.Errorf("a refused rebaseline started %d baseline walks", got-walks)
			}
			if rec, err := c.Record(t.Context(), "cpn", "p2"); err != nil || rec.ID != "p2" || rec.Status.Status != "CREATED" {
				t.Errorf("record: %+v, %v", rec, err)
			}
			if _, err := c.Record(t.Context(), "cpn", "nope"); !errors.Is(err, stateapi.ErrNotFound) {
				t.Errorf("record of an unknown item: %v", err)
			}
			n := 0
			if err := c.Export(t.Context(), "cpn", func(stateapi.Record) error { n++; return nil }); err != nil || n != 3 {
				t.Errorf("export: %d records, %v", n, err)
			}
			if open, err := c.Open(t.Context(), "cpn"); err != nil || len(open) != 3 {
				t.Errorf("open: %+v, %v", open, err)
			}
			if err := c.Outbox(t.Context(), 0, func(stateapi.OutboxEntry) error { return nil }); err != nil {
				t.Errorf("outbox: %v", err)
			}

			if err := c.Rebaseline(t.Context(), "cpn"); err != nil {
				t.Fatalf("rebaseline with the token: %v", err)
			}
			eventually(t, func() string {
				if d.count("baseline walk complete") <= walks {
					return "the requested baseline walk"
				}
				return ""
			})
			logs := d.logs.String()
			if last := logs[strings.LastIndex(logs, "baseline walk complete"):]; !strings.Contains(last, "silent=true") {
				t.Errorf("the requested baseline was not silent: %s", last)
			}
		})
	}
}

// TestAdminSocket checks that a unix socket admin listener needs no token, and that
// only its owner may use it.
func TestAdminSocket(t *testing.T) {
	e := newEnv(t, modes[0], 1)
	sock := filepath.Join(e.dir, "admin.sock")
	cfg := e.config(fmt.Sprintf("admin:\n  listen: unix:%s\n", sock))
	d := e.start(cfg)
	d.addr("serving the admin API (/state/) and the status page (/)")
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %04o, want 0600", fi.Mode().Perm())
	}
	c, err := stateapi.NewClient("unix:"+sock, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Rebaseline(t.Context(), "cpn"); err != nil {
		t.Errorf("rebaseline over the socket: %v", err)
	}
	if list, err := c.Sources(t.Context()); err != nil || len(list) != 1 {
		t.Errorf("sources over the socket: %+v, %v", list, err)
	}
	d.stop()
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after the stop: %v", err)
	}
}

// TestReplicaFlushesAtShutdown checks that the replica holding the publisher lease
// flushes the outbox when the daemon stops, and does not when only the lease ends.
func TestReplicaFlushesAtShutdown(t *testing.T) {
	for _, tc := range []struct {
		name     string
		shutdown bool
		want     uint64
	}{
		{"lease lost", false, 0},
		{"shutdown", true, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, modes[1], 0)
			cfg := e.config("admin:\n  listen: \"\"\n")
			nc, err := publish.Connect(e.nats.ClientURL(), cfg.NATS, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			store, err := natskv.Open(t.Context(), js, natskv.Options{Prefix: cfg.State.NATSKV.BucketPrefix})
			if err != nil {
				t.Fatal(err)
			}
			var msgs []event.Message
			for i := range 3 {
				msgs = append(msgs, event.Message{ID: fmt.Sprintf("e%d", i), Subject: "payments.cpn.payment.pending", Body: []byte(`{}`)})
			}
			if err := store.Commit(t.Context(), "cpn", state.Batch{Now: time.Now(), Messages: msgs}); err != nil {
				t.Fatal(err)
			}

			d, err := newDaemon(cfg, slog.New(slog.DiscardHandler), Options{Redact: strings.NewReplacer(),
				Kinds: func(s config.Source) []string { return []string{s.Provider.Kind} }}, stateapi.KV(store))
			if err != nil {
				t.Fatal(err)
			}
			root, stop := context.WithCancel(t.Context())
			defer stop()
			r := &replica{daemon: d, ctx: root, store: store}
			r.pub = publish.New(js, store, cfg.NATS, publish.Options{Observer: d.met}, slog.New(slog.DiscardHandler))
			lease, end := context.WithCancel(root)
			end() // the task's context has ended before the publisher ran a pass
			if tc.shutdown {
				stop()
			}
			r.publish(lease)
			n, _, err := store.OutboxStats(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if uint64(3-n) != tc.want {
				t.Errorf("%d events published, want %d", 3-n, tc.want)
			}
		})
	}
}
