package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payments-watcher/watcher/config"
	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/poller/provider"
	"github.com/payments-watcher/watcher/publish"
	"github.com/payments-watcher/watcher/state"
)

// shutdownFlush bounds the outbox flush at shutdown.
const shutdownFlush = 5 * time.Second

// serve runs the daemon until ctx is cancelled: it opens the state file, starts or
// connects to NATS, builds every poller before starting any, and on cancellation
// lets each poller finish the page in hand, flushes the outbox for a few seconds and
// returns nil. What the flush leaves is sent at the next start.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	store, err := state.Open(cfg.State.Path, state.Options{})
	if err != nil {
		return err
	}
	defer store.Close()

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
	pub := publish.New(js, store, cfg.NATS, publish.Options{}, log.With("component", "publisher"))

	pollers, err := buildPollers(cfg, store, log)
	if err != nil {
		return err
	}

	stopHTTP, err := serveHTTP(cfg.HTTP.Listen, readiness(pub, store, cfg.NATS.MaxOutbox, pollers), log)
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
	for _, p := range pollers {
		polling.Go(func() { _ = p.Run(ctx) })
	}
	log.Info("watcher running", "sources", len(pollers), "state", store.Path(), "stream", cfg.NATS.Stream)

	<-ctx.Done()
	log.Info("shutting down: finishing pages in hand")
	polling.Wait()
	stopPub()
	pubDone.Wait()
	flushCtx, cancel := context.WithTimeout(context.Background(), shutdownFlush)
	defer cancel()
	if err := pub.Drain(flushCtx); err != nil {
		n, _, _ := store.OutboxStats()
		log.Warn("outbox not fully flushed; the rest is sent at the next start", "pending", n, "err", err)
	}
	log.Info("stopped")
	return nil
}

func buildPollers(cfg *config.Config, store *state.Store, log *slog.Logger) ([]*poller.Poller, error) {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 4
	var out []*poller.Poller
	for _, s := range cfg.Sources {
		client := &provider.Client{
			HTTP:      &http.Client{Transport: transport},
			UserAgent: "watcher/" + version,
		}
		src, err := s.Provider.New(s.Settings, client)
		if err != nil {
			return nil, fmt.Errorf("source %s: %w", s.Name, err)
		}
		pc := s.Config
		pc.RequestTimeout = s.RequestTimeout
		pc.MaxOutbox = cfg.NATS.MaxOutbox
		out = append(out, poller.New(pc, src, store, cfg.NATS.SubjectPrefix, log.With("source", s.Name)))
	}
	return out, nil
}

// readiness lists what keeps the daemon from being ready; empty when it is.
func readiness(pub *publish.Publisher, store *state.Store, maxOutbox int, pollers []*poller.Poller) func() []string {
	return func() []string {
		var failing []string
		if err := pub.Healthy(); err != nil {
			failing = append(failing, "nats: "+err.Error())
		}
		if n, oldest, err := store.OutboxStats(); err != nil {
			failing = append(failing, "outbox: "+err.Error())
		} else if maxOutbox > 0 && n >= maxOutbox {
			failing = append(failing, fmt.Sprintf("outbox: %d events waiting since %s (limit %d)", n, oldest.Format(time.RFC3339), maxOutbox))
		}
		for _, p := range pollers {
			if h := p.Health(); h.Err != nil && h.Failures >= 3 {
				failing = append(failing, fmt.Sprintf("source %s: %d failed polls: %v", p.Name(), h.Failures, h.Err))
			}
		}
		return failing
	}
}

// serveHTTP serves /healthz and /readyz on listen ("" disables it).
func serveHTTP(listen string, notReady func() []string, log *slog.Logger) (func(), error) {
	if listen == "" {
		return func() {}, nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if failing := notReady(); len(failing) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			for _, f := range failing {
				fmt.Fprintln(w, f)
			}
			return
		}
		fmt.Fprintln(w, "ready")
	})
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("http.listen %s: %w", listen, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", "err", err)
		}
	}()
	log.Info("serving health checks", "addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}
