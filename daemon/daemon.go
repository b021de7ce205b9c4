// Package daemon runs watcher's daemon: the pollers, the outbox publisher, the
// metrics, the public HTTP endpoints (/metrics, /healthz, /readyz), the private
// admin listener (the /state/ API of package stateapi), logs that hide secrets, and
// the outbox flush at shutdown.
//
// Both state back ends run the same daemon. The configuration's state.backend only
// decides what supplies the state store and which work this process runs:
//
//   - bbolt: one process holds the state file and runs every source and the
//     publisher, from start to stop;
//   - nats_kv: the state lives in NATS KV, shared by replicas; this process runs a
//     source, or the publisher, while it holds that work's lease (package cluster),
//     and gives it up when it loses the lease.
//
// Readiness applies the same rules to whatever this process runs (see notReady),
// metrics carry over what the state holds when a source starts here, the publisher
// flushes the outbox at shutdown, and the /state/ API reads the state store in use.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/payments-watcher/watcher/cluster"
	"github.com/payments-watcher/watcher/config"
	"github.com/payments-watcher/watcher/logredact"
	"github.com/payments-watcher/watcher/metrics"
	"github.com/payments-watcher/watcher/publish"
	"github.com/payments-watcher/watcher/stateapi"
	"github.com/payments-watcher/watcher/statuspage"
)

// shutdownFlush bounds the outbox flush at shutdown, and the wait for this
// process's pollers to finish the page in hand before it.
const shutdownFlush = 5 * time.Second

// Options are what the daemon takes besides the configuration.
type Options struct {
	// Version and Commit are exported in watcher_build_info; Version is also in the
	// providers' User-Agent.
	Version, Commit string
	// Redact replaces every secret of the configuration in logs and readiness
	// messages; nil hides nothing.
	Redact *strings.Replacer
	// Kinds lists the item kinds source s emits, for the metrics to create their
	// series at 0; nil: the provider's top-level kind only.
	Kinds func(s config.Source) []string
	// Hooks let tests watch the daemon; every field may be nil.
	Hooks Hooks
}

// Hooks let tests watch a daemon.
type Hooks struct {
	// Conn receives the NATS connection once it is up (cluster mode).
	Conn func(*nats.Conn)
	// Task is called when the work of a lease starts (stopped false) and when it has
	// returned (stopped true) (cluster mode).
	Task func(l cluster.Lease, stopped bool)
}

// Run runs the daemon until ctx is cancelled, then lets each poller finish the page
// in hand, flushes the outbox for a few seconds (in cluster mode, on the replica
// holding the publisher lease) and returns nil. What the flush leaves is sent at
// the next start. An error is returned when start-up fails; with the bbolt back end
// one opening the state file wraps the bbolt package's errors.
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger, opt Options) error {
	if opt.Redact == nil {
		opt.Redact = strings.NewReplacer()
	}
	if opt.Kinds == nil {
		opt.Kinds = func(s config.Source) []string { return []string{s.Provider.Kind} }
	}
	log = slog.New(logredact.New(log.Handler(), opt.Redact))
	if cfg.State.Backend == "nats_kv" {
		return runReplica(ctx, cfg, log, opt)
	}
	return runSingle(ctx, cfg, log, opt)
}

// daemon is what both modes share once their store is open.
type daemon struct {
	cfg     *config.Config
	log     *slog.Logger
	opt     Options
	reg     *prometheus.Registry
	met     *metrics.Metrics
	state   stateapi.Store // what metrics, readiness and the /state/ API read
	running *sourceSet
	ready   readiness
	// held, when set, says what this replica holds, for the /readyz answer.
	held func() string
	// rec records what the status page charts and lists.
	rec *statuspage.Recorder
	// replicaID is cluster.replica_id in cluster mode, "" otherwise; leases, when
	// set, lists the leases this replica holds.
	replicaID string
	leases    func() []string
}

// newDaemon registers the metrics and sets the readiness rules on st; the caller
// sets ready.nats.
func newDaemon(cfg *config.Config, log *slog.Logger, opt Options, st stateapi.Store) (*daemon, error) {
	d := &daemon{cfg: cfg, log: log, opt: opt, reg: prometheus.NewRegistry(), state: st, running: newSourceSet(cfg)}
	names := make([]string, len(cfg.Sources))
	for i, s := range cfg.Sources {
		names[i] = s.Name
	}
	d.met = metrics.New(d.reg, names)
	d.rec = statuspage.NewRecorder(names, nil)
	for _, s := range cfg.Sources {
		d.met.Kinds(s.Name, opt.Kinds(s))
	}
	if err := metrics.RegisterBuildInfo(d.reg, opt.Version, opt.Commit); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	d.ready = readiness{
		outbox: st.OutboxStats, maxOutbox: cfg.NATS.MaxOutbox,
		sources: d.running.health, now: time.Now, redact: opt.Redact,
	}
	return d, nil
}

// restoreSource sets what source's gauges carry over from the state: the records
// marked stalled and the end of the last successful cycle. A failed read is logged;
// the gauges then start from zero.
func (d *daemon) restoreSource(ctx context.Context, source string) {
	st, err := d.state.Stats(ctx, source)
	if err != nil {
		d.log.Warn("source's stalled count and last success not read from the state", "source", source, "err", err)
		return
	}
	d.met.Restore(source, st.Stalled, st.Meta.LastPoll)
}

// restoreOutbox sets the outbox gauges from the state.
func (d *daemon) restoreOutbox(ctx context.Context) error {
	n, oldest, err := d.state.OutboxStats(ctx)
	if err != nil {
		return err
	}
	d.met.Outbox(n, oldest)
	return nil
}

// flush drains the outbox for at most shutdownFlush.
func (d *daemon) flush(pub *publish.Publisher) {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownFlush)
	defer cancel()
	if err := pub.Drain(ctx); err != nil {
		n, _, _ := d.state.OutboxStats(ctx)
		d.log.Warn("outbox not fully flushed; the rest is sent at the next start", "pending", n, "err", err)
	}
}

// publicHandler serves /metrics, /healthz and /readyz.
func (d *daemon) publicHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if failing := d.ready.notReady(r.Context()); len(failing) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			for _, f := range failing {
				fmt.Fprintln(w, f)
			}
			return
		}
		if d.held != nil {
			fmt.Fprintf(w, "ready; %s\n", d.held())
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// serveAll starts the listeners of serve and serveWebhooks; the function returned
// stops the webhook listener, then the others.
func (d *daemon) serveAll(rd stateapi.Reader, page *statuspage.Page) (func(), error) {
	stopHTTP, err := d.serve(rd, page)
	if err != nil {
		return nil, err
	}
	stopWebhooks, err := d.serveWebhooks()
	if err != nil {
		stopHTTP()
		return nil, err
	}
	return func() {
		stopWebhooks()
		stopHTTP()
	}, nil
}

// serve starts the public listener (http.listen) and the admin listener
// (admin.listen) serving rd and the status page; the function returned stops both.
func (d *daemon) serve(rd stateapi.Reader, page *statuspage.Page) (func(), error) {
	stopPublic, err := serveHTTP("http.listen", d.cfg.HTTP.Listen, d.publicHandler(), "serving /metrics, /healthz and /readyz", d.log)
	if err != nil {
		return nil, err
	}
	path, socket := d.cfg.Admin.Socket()
	access := stateapi.Access{Token: d.cfg.Admin.Token, Socket: socket}
	listen := d.cfg.Admin.Listen
	if socket {
		listen = path
	}
	stopAdmin, err := serveHTTP("admin.listen", listen, d.adminHandler(rd, page, access), "serving the admin API (/state/) and the status page (/)", d.log)
	if err != nil {
		stopPublic()
		return nil, err
	}
	return func() { stopAdmin(); stopPublic() }, nil
}

// serveHTTP serves h on listen ("" disables it): a host:port, or the absolute path of
// a unix socket, which is replaced if it exists as a socket and is made readable and
// writable by its owner only. It logs msg with the bound address (a port of 0 picks a
// free one) as addr; key names the setting in errors.
func serveHTTP(key, listen string, h http.Handler, msg string, log *slog.Logger) (func(), error) {
	if listen == "" {
		return func() {}, nil
	}
	ln, err := listenOn(listen)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", key, listen, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", "listen", key, "err", err)
		}
	}()
	log.Info(msg, "addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// listenOn listens on a TCP address, or on a unix socket at an absolute path.
func listenOn(listen string) (net.Listener, error) {
	if !strings.HasPrefix(listen, "/") {
		return net.Listen("tcp", listen)
	}
	if fi, err := os.Lstat(listen); err == nil && fi.Mode()&os.ModeSocket != 0 {
		// A socket left by a process that ended without closing it.
		_ = os.Remove(listen)
	}
	ln, err := net.Listen("unix", listen)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(listen, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}
