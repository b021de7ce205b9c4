package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payments-watcher/watcher/config"
	"github.com/payments-watcher/watcher/metrics"
	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/publish"
	"github.com/payments-watcher/watcher/state/bbolt"
	"github.com/payments-watcher/watcher/stateapi"
)

// runSingle runs the daemon on a bbolt state file: this process runs every source
// and the publisher. It builds every poller before starting any.
func runSingle(ctx context.Context, cfg *config.Config, log *slog.Logger, opt Options) error {
	store, err := bbolt.Open(cfg.State.Path, bbolt.Options{})
	if err != nil {
		return err
	}
	defer store.Close()
	for _, w := range store.Warnings() {
		log.Warn("state file warning", "warning", w)
	}
	d, err := newDaemon(cfg, log, opt, stateapi.Bolt(store))
	if err != nil {
		return err
	}
	if err := metrics.RegisterStateFile(d.reg, store.FileStats); err != nil {
		return err
	}
	nc, stopNATS, err := connectSingle(cfg, log)
	if err != nil {
		return err
	}
	defer stopNATS()
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	pub := publish.New(js, store, cfg.NATS, publish.Options{Observer: d.met}, log.With("component", "publisher"))
	d.ready.nats = pub.Healthy

	pollers := make(map[string]*poller.Poller, len(cfg.Sources))
	for _, s := range cfg.Sources {
		p, err := buildPoller(cfg, s, d.rec.Store(store), nil, opt.Version, log)
		if err != nil {
			return err
		}
		p.Observe(d.observer())
		pollers[s.Name] = p
		d.restoreSource(ctx, s.Name)
	}
	if err := d.restoreOutbox(ctx); err != nil {
		return err
	}
	started := time.Now()
	for _, s := range cfg.Sources {
		d.running.add(s.Name, s.Interval, pollers[s.Name], started)
	}
	view := stateapi.NewView(d.state, d.running.order).WithRebaseline(d.requestRebaseline)
	stopServing, err := d.serveAll(view, d.statusPage(nc))
	if err != nil {
		return err
	}
	defer stopServing()

	pubCtx, stopPub := context.WithCancel(context.WithoutCancel(ctx))
	var pubDone sync.WaitGroup
	pubDone.Go(func() {
		if err := pub.Run(pubCtx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("publisher stopped", "err", err)
		}
	})
	var polling sync.WaitGroup
	for _, s := range cfg.Sources {
		polling.Go(func() {
			_ = pollers[s.Name].Run(ctx)
			d.running.remove(s.Name)
		})
	}
	log.Info("watcher running", "sources", len(cfg.Sources), "state", store.Path(), "stream", cfg.NATS.Stream)

	<-ctx.Done()
	log.Info("shutting down: finishing pages in hand")
	polling.Wait()
	stopPub()
	pubDone.Wait()
	d.flush(pub)
	log.Info("stopped")
	return nil
}

// requestRebaseline asks the running poller of source for a silent baseline at its
// next cycle: the poller writes the request with its own commits, so no write here
// races with them.
func (d *daemon) requestRebaseline(_ context.Context, source string) error {
	p := d.running.poller(source)
	if p == nil {
		return fmt.Errorf("source %s is not running in this watcher", source)
	}
	p.RequestRebaseline()
	return nil
}

// connectSingle connects to nats.url, or starts the embedded server when it is
// empty; the function returned stops that server (a no-op otherwise).
func connectSingle(cfg *config.Config, log *slog.Logger) (*nats.Conn, func(), error) {
	stop := func() {}
	url := cfg.NATS.URL
	if url == "" {
		srv, err := publish.StartEmbedded(cfg.NATS.Embedded, log.With("component", "nats"))
		if err != nil {
			return nil, nil, err
		}
		stop = func() { srv.Shutdown(); srv.WaitForShutdown() }
		url = srv.ClientURL()
		log.Info("embedded NATS server with JetStream started", "url", url, "store_dir", cfg.NATS.Embedded.StoreDir)
	}
	nc, err := publish.Connect(url, cfg.NATS, log.With("component", "nats"))
	if err != nil {
		stop()
		return nil, nil, err
	}
	return nc, stop, nil
}
