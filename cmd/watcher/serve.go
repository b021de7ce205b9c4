package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/payments-watcher/watcher/config"
	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/metrics"
	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/poller/provider"
	"github.com/payments-watcher/watcher/publish"
	"github.com/payments-watcher/watcher/state/bbolt"
)

// shutdownFlush bounds the outbox flush at shutdown.
const shutdownFlush = 5 * time.Second

// staleIntervals is how many intervals a source may go without a successful cycle
// before /readyz reports it.
const staleIntervals = 3

// serve runs the daemon until ctx is cancelled: it opens the state file, starts or
// connects to NATS, builds every poller before starting any, and on cancellation
// lets each poller finish the page in hand, flushes the outbox for a few seconds and
// returns nil. What the flush leaves is sent at the next start.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	secrets := secretsOf(cfg)
	log = slog.New(redactingHandler{next: log.Handler(), r: secrets})
	if cfg.State.Backend == "nats_kv" {
		return serveCluster(ctx, cfg, log)
	}
	store, err := bbolt.Open(cfg.State.Path, bbolt.Options{})
	if err != nil {
		return withRecovery(err, cfg.State.Path, false)
	}
	defer store.Close()
	for _, w := range store.Warnings() {
		log.Warn("state file warning", "warning", w)
	}
	reg, met, err := newMetrics(ctx, cfg, store)
	if err != nil {
		return err
	}

	url := cfg.NATS.URL
	if url == "" {
		srv, err := publish.StartEmbedded(cfg.NATS.Embedded, log.With("component", "nats"))
		if err != nil {
			return err
		}
		defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
		url = srv.ClientURL()
		log.Info("embedded NATS server with JetStream started", "url", url, "store_dir", cfg.NATS.Embedded.StoreDir)
	}
	nc, err := publish.Connect(url, cfg.NATS, log.With("component", "nats"))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	pub := publish.New(js, store, cfg.NATS, publish.Options{Observer: met}, log.With("component", "publisher"))

	sources, err := buildPollers(cfg, store, log)
	if err != nil {
		return err
	}
	for _, s := range sources {
		s.p.Observe(met)
	}
	api := &endpoints{store: store, pub: pub, sources: sources, maxOutbox: cfg.NATS.MaxOutbox,
		started: time.Now(), now: time.Now, redact: secrets}
	stopHTTP, err := serveHTTP(cfg.HTTP.Listen, api.handler(reg), log)
	if err != nil {
		return err
	}
	defer stopHTTP()

	pubCtx, stopPub := context.WithCancel(context.WithoutCancel(ctx))
	var pubDone sync.WaitGroup
	pubDone.Go(func() {
		if err := pub.Run(pubCtx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("publisher stopped", "err", err)
		}
	})
	var polling sync.WaitGroup
	for _, s := range sources {
		polling.Go(func() { _ = s.p.Run(ctx) })
	}
	log.Info("watcher running", "sources", len(sources), "state", store.Path(), "stream", cfg.NATS.Stream)

	<-ctx.Done()
	log.Info("shutting down: finishing pages in hand")
	polling.Wait()
	stopPub()
	pubDone.Wait()
	flushCtx, cancel := context.WithTimeout(context.Background(), shutdownFlush)
	defer cancel()
	if err := pub.Drain(flushCtx); err != nil {
		n, _, _ := store.OutboxStats(flushCtx)
		log.Warn("outbox not fully flushed; the rest is sent at the next start", "pending", n, "err", err)
	}
	log.Info("stopped")
	return nil
}

// newMetrics registers watcher's series on a registry of its own and sets what the
// state file carries over: each source's stalled records and last successful cycle,
// and the outbox.
func newMetrics(ctx context.Context, cfg *config.Config, store *bbolt.Store) (*prometheus.Registry, *metrics.Metrics, error) {
	reg := prometheus.NewRegistry()
	names := make([]string, len(cfg.Sources))
	for i, s := range cfg.Sources {
		names[i] = s.Name
	}
	met := metrics.New(reg, names)
	for _, s := range cfg.Sources {
		met.Kinds(s.Name, sourceKinds(s))
	}
	if err := metrics.RegisterBuildInfo(reg, version, buildCommit()); err != nil {
		return nil, nil, fmt.Errorf("metrics: %w", err)
	}
	for _, n := range names {
		st, err := store.Stats(n)
		if err != nil {
			return nil, nil, err
		}
		met.Restore(n, st.Stalled, st.Meta.LastPoll)
	}
	n, oldest, err := store.OutboxStats(ctx)
	if err != nil {
		return nil, nil, err
	}
	met.Outbox(n, oldest)
	return reg, met, nil
}

// buildCommit is the commit the binary was built from: the one -ldflags
// "-X main.commit=…" set, else Go's VCS stamp, else "unknown".
func buildCommit() string {
	if commit != "" {
		return commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

// watchedSource is one configured source and its poller.
type watchedSource struct {
	name     string
	interval time.Duration
	p        *poller.Poller
}

func buildPollers(cfg *config.Config, store *bbolt.Store, log *slog.Logger) ([]watchedSource, error) {
	var out []watchedSource
	for _, s := range cfg.Sources {
		p, err := buildPoller(cfg, s, store, nil, log)
		if err != nil {
			return nil, err
		}
		out = append(out, watchedSource{name: s.Name, interval: s.Interval, p: p})
	}
	return out, nil
}

// buildPoller builds the poller of source s on store; lease is set in cluster mode.
func buildPoller(cfg *config.Config, s config.Source, store poller.Store, lease *event.Poller, log *slog.Logger) (*poller.Poller, error) {
	client := provider.NewClient(provider.ClientOptions{
		BaseURL:   s.Settings.BaseURL,
		RootCAs:   s.RootCAs,
		UserAgent: "watcher/" + version,
	})
	src, err := s.Provider.New(s.Settings, client)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", s.Name, err)
	}
	pc := s.Config
	pc.RequestTimeout = s.RequestTimeout
	pc.MaxOutbox = cfg.NATS.MaxOutbox
	pc.Lease = lease
	return poller.New(pc, src, store, cfg.NATS.SubjectPrefix, log.With("source", s.Name)), nil
}

// secretsOf returns a replacer of every secret value of cfg; readiness messages carry
// provider error texts, which must never show one.
func secretsOf(cfg *config.Config) *strings.Replacer {
	var pairs []string
	add := func(key, v string) {
		if v == "" {
			return
		}
		pairs = append(pairs, v, "["+key+"]")
		// Basic authentication carries "key:" in base64 (Stripe's form), which a
		// provider's error may echo.
		for _, enc := range []string{base64.StdEncoding.EncodeToString([]byte(v + ":")), base64.StdEncoding.EncodeToString([]byte(v))} {
			pairs = append(pairs, strings.TrimRight(enc, "="), "["+key+"]")
		}
		// A Circle W3S key is PREFIX:ID:SECRET; the secret part alone is one too.
		if i := strings.LastIndexByte(v, ':'); i >= 0 && len(v)-i-1 >= 8 {
			pairs = append(pairs, v[i+1:], "["+key+"]")
		}
	}
	for _, s := range cfg.Secrets() {
		add(s.Key, s.Value)
	}
	return strings.NewReplacer(pairs...)
}

// redactingHandler replaces every configured secret in log records before the next
// handler sees them. No component logs a secret on purpose, but provider error
// messages are the providers' text, and one may echo a credential in a form its
// adapter does not recognise.
type redactingHandler struct {
	next slog.Handler
	r    *strings.Replacer
}

func (h redactingHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h redactingHandler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, h.r.Replace(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h redactingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		red[i] = h.attr(a)
	}
	return redactingHandler{next: h.next.WithAttrs(red), r: h.r}
}

func (h redactingHandler) WithGroup(name string) slog.Handler {
	return redactingHandler{next: h.next.WithGroup(name), r: h.r}
}

// attr redacts a string, an error or anything printed as text; other kinds (numbers,
// times, durations) cannot hold a secret.
func (h redactingHandler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, h.r.Replace(v.String()))
	case slog.KindGroup:
		group := v.Group()
		red := make([]any, len(group))
		for i, g := range group {
			red[i] = h.attr(g)
		}
		return slog.Group(a.Key, red...)
	case slog.KindAny:
		var text string
		if err, ok := v.Any().(error); ok {
			text = err.Error()
		} else {
			text = fmt.Sprint(v.Any())
		}
		if red := h.r.Replace(text); red != text {
			return slog.String(a.Key, red)
		}
		return slog.Attr{Key: a.Key, Value: v}
	default:
		return slog.Attr{Key: a.Key, Value: v}
	}
}

// endpoints serves the HTTP endpoints of a running daemon.
type endpoints struct {
	store     *bbolt.Store
	pub       *publish.Publisher
	sources   []watchedSource
	maxOutbox int
	started   time.Time
	now       func() time.Time
	redact    *strings.Replacer
}

// notReady lists what keeps the daemon from being ready, one line per check, each
// naming the check; empty when it is ready:
//
//   - nats: the connection is down or the last pass over the outbox failed;
//   - outbox: it holds nats.max_outbox events or more (polling is paused);
//   - source NAME: no successful cycle for 3 intervals (counted from the start until
//     the first one), with the last error.
//
// ctx is passed to the outbox read.
func (e *endpoints) notReady(ctx context.Context) []string {
	var failing []string
	if err := e.pub.Healthy(); err != nil {
		msg := err.Error()
		if !strings.HasPrefix(msg, "nats") {
			msg = "nats: " + msg
		}
		failing = append(failing, msg)
	}
	if n, oldest, err := e.store.OutboxStats(ctx); err != nil {
		failing = append(failing, "outbox: "+err.Error())
	} else if e.maxOutbox > 0 && n >= e.maxOutbox {
		failing = append(failing, fmt.Sprintf("outbox: %d events waiting since %s, at or over nats.max_outbox %d; polling is paused until NATS takes them",
			n, oldest.Format(time.RFC3339), e.maxOutbox))
	}
	now := e.now()
	for _, s := range e.sources {
		h := s.p.Health()
		since := h.LastSuccess
		if since.IsZero() {
			since = e.started
		}
		age := now.Sub(since)
		if age <= staleIntervals*s.interval {
			continue
		}
		cause := "a cycle is still running"
		if h.Err != nil {
			cause = h.Err.Error()
		}
		what := "no successful poll for"
		if h.LastSuccess.IsZero() {
			what = "no successful poll since the start"
		}
		failing = append(failing, fmt.Sprintf("source %s: %s %s (interval %s): %s",
			s.name, what, age.Round(time.Second), s.interval, cause))
	}
	for i, f := range failing {
		failing[i] = strings.ReplaceAll(e.redact.Replace(f), "\n", " ")
	}
	return failing
}

// handler serves /metrics from reg, /healthz, /readyz, and the /state/ endpoints
// that the state commands ask while the daemon holds the state file.
func (e *endpoints) handler(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if failing := e.notReady(r.Context()); len(failing) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			for _, f := range failing {
				fmt.Fprintln(w, f)
			}
			return
		}
		fmt.Fprintln(w, "ready")
	})

	names := make([]string, len(e.sources))
	for i, s := range e.sources {
		names[i] = s.name
	}
	v := stateView{store: e.store, configured: names}
	mux.HandleFunc("GET /state/sources", func(w http.ResponseWriter, r *http.Request) {
		list, err := v.sources()
		writeJSON(w, http.StatusOK, list, err)
	})
	mux.HandleFunc("GET /state/items/{source}/{id}", func(w http.ResponseWriter, r *http.Request) {
		rec, err := v.record(r.Context(), r.PathValue("source"), r.PathValue("id"))
		writeJSON(w, http.StatusOK, rec, err)
	})
	mux.HandleFunc("GET /state/open/{source}", func(w http.ResponseWriter, r *http.Request) {
		list, err := v.open(r.Context(), r.PathValue("source"))
		writeJSON(w, http.StatusOK, list, err)
	})
	mux.HandleFunc("GET /state/export/{source}", func(w http.ResponseWriter, r *http.Request) {
		source := r.PathValue("source")
		if err := v.check(source); err != nil {
			writeJSON(w, 0, nil, err)
			return
		}
		writeLines(w, func(fn func(any) error) error {
			return v.export(source, func(rec recordJSON) error { return fn(rec) })
		})
	})
	mux.HandleFunc("GET /state/outbox", func(w http.ResponseWriter, r *http.Request) {
		limit := 0
		if q := r.URL.Query().Get("limit"); q != "" {
			n, err := strconv.Atoi(q)
			if err != nil || n < 0 {
				writeJSON(w, 0, nil, fmt.Errorf("%w: limit %q is not a count", errBadRequest, q))
				return
			}
			limit = n
		}
		writeLines(w, func(fn func(any) error) error {
			return v.outbox(r.Context(), limit, func(o outboxJSON) error { return fn(o) })
		})
	})
	mux.HandleFunc("POST /state/rebaseline/{source}", func(w http.ResponseWriter, r *http.Request) {
		// A browser cannot send this content type to another origin without a CORS
		// preflight, which this server never grants.
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			writeJSON(w, 0, nil, fmt.Errorf("%w: Content-Type %q; send application/json", errBadRequest, ct))
			return
		}
		name := r.PathValue("source")
		i := slices.IndexFunc(e.sources, func(s watchedSource) bool { return s.name == name })
		if i < 0 {
			writeJSON(w, 0, nil, unknownSource(name, names))
			return
		}
		e.sources[i].p.RequestRebaseline()
		writeJSON(w, http.StatusAccepted, map[string]string{"source": name, "rebaseline": "requested"}, nil)
	})
	return mux
}

var errBadRequest = errors.New("bad request")

// writeJSON writes v with status code, or err as {"error": …} with a status that
// fits it.
func writeJSON(w http.ResponseWriter, code int, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		code = http.StatusInternalServerError
		switch {
		case errors.Is(err, errUnknownSource), errors.Is(err, errNotFound):
			code = http.StatusNotFound
		case errors.Is(err, errBadRequest):
			code = http.StatusBadRequest
		}
		v = streamError{Error: err.Error()}
	}
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// writeLines streams JSON Lines from each; an error after the first line ends the
// stream with an {"error": …} line, which the state commands turn back into an error.
func writeLines(w http.ResponseWriter, each func(fn func(any) error) error) {
	w.Header().Set("Content-Type", "application/jsonl")
	enc := json.NewEncoder(w)
	if err := each(enc.Encode); err != nil {
		_ = enc.Encode(streamError{Error: err.Error()})
	}
}

// serveHTTP serves h on listen ("" disables it) and logs the bound address (a port of
// 0 picks a free one) as addr.
func serveHTTP(listen string, h http.Handler, log *slog.Logger) (func(), error) {
	if listen == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("http.listen %s: %w", listen, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", "err", err)
		}
	}()
	log.Info("serving /metrics, /healthz, /readyz and /state/", "addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}
