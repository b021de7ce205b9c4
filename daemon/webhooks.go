package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/payments-watcher/watcher/webhook"
)

// serveWebhooks starts the webhook listener (webhooks.listen; "" disables it): a
// verified delivery makes the poller of its source read the item it names, when this
// process runs that source. In cluster mode a replica that does not hold the source's
// lease reads nothing and acknowledges the delivery (the holder's polling catches
// up). The function returned stops the listener.
func (d *daemon) serveWebhooks() (func(), error) {
	wc := d.cfg.Webhooks
	if wc.Listen == "" {
		return func() {}, nil
	}
	names := make([]string, len(d.cfg.Sources))
	for i, s := range d.cfg.Sources {
		names[i] = s.Name
	}
	met, err := webhook.NewMetrics(d.reg, names)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	verifiers, err := webhook.Build(d.cfg.Sources, d.opt.Version, d.log.With("component", "webhooks"))
	if err != nil {
		return nil, err
	}
	h := webhook.NewHandler(webhook.Options{
		Verifiers: verifiers,
		Target: func(source string) webhook.Hinter {
			if p := d.running.poller(source); p != nil {
				return p
			}
			return nil
		},
		MaxBody: wc.MaxBody,
		Metrics: met,
		Log:     d.log.With("component", "webhooks"),
	})
	ln, err := net.Listen("tcp", wc.Listen)
	if err != nil {
		return nil, fmt.Errorf("webhooks.listen %s: %w", wc.Listen, err)
	}
	if wc.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(wc.TLSCert, wc.TLSKey)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("webhooks.tls: %w", err)
		}
		ln = tls.NewListener(ln, &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}})
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("http server stopped", "listen", "webhooks.listen", "err", err)
		}
	}()
	d.log.Info("serving provider webhooks (POST /webhooks/{source})", "addr", ln.Addr().String(), "sources", len(verifiers))
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}
