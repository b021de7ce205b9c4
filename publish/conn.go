package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Connect connects to the NATS servers in url (comma separated) as "watcher", with
// the authentication and TLS options of c. The connection reconnects forever, and a
// server that is down at start is retried in the background: Connect then returns a
// connection that is not connected yet, and publishing fails (and is retried by Run)
// until it is. The one exception is nats.go's: it closes the connection for good after
// repeated authorization failures (logged as an error; Healthy reports it). Only
// unusable options (an unreadable credentials, seed or TLS file, a
// malformed url) are errors. Connection events are logged to log; secrets are never
// logged nor put in errors, and credentials in url are redacted.
func Connect(url string, c Config, log *slog.Logger) (*nats.Conn, error) {
	log = orDiscard(log)
	opts := []nats.Option{
		nats.Name("watcher"),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info("NATS connected", "url", redactURL(nc.ConnectedUrl()))
		}),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if nc.IsClosed() {
				return // Close was called; ClosedHandler logs it
			}
			log.Warn("NATS disconnected; reconnecting", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS reconnected", "url", redactURL(nc.ConnectedUrl()))
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Debug("NATS reconnect attempt failed", "err", err)
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			if err := nc.LastError(); err != nil {
				// nats.go gives up on repeated authentication failures.
				log.Error("NATS connection closed; publishing stopped", "err", err)
				return
			}
			log.Info("NATS connection closed")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if sub != nil {
				log.Error("NATS asynchronous error", "subject", sub.Subject, "err", err)
				return
			}
			log.Error("NATS asynchronous error", "err", err)
		}),
	}
	if c.CredsFile != "" {
		// nats.go reads the file at each (re)connect; fail now rather than retry forever.
		if err := readable(c.CredsFile); err != nil {
			return nil, fmt.Errorf("nats.creds_file: %w", err)
		}
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	}
	if c.NKeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(c.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("nats.nkey_file %s: %w", c.NKeyFile, err)
		}
		opts = append(opts, o)
	}
	if c.Token != "" {
		opts = append(opts, nats.Token(c.Token))
	}
	if c.User != "" {
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	}
	if c.TLS.CA != "" {
		opts = append(opts, nats.RootCAs(c.TLS.CA))
	}
	if c.TLS.Cert != "" || c.TLS.Key != "" {
		opts = append(opts, nats.ClientCert(c.TLS.Cert, c.TLS.Key))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("nats %s: connect: %w", redactURL(url), err)
	}
	if !nc.IsConnected() {
		log.Warn("NATS not reachable yet; retrying in the background", "url", redactURL(url), "err", nc.LastError())
	}
	return nc, nil
}

func readable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return f.Close()
}

// redactURL hides the user information (user, password or token) of every URL in a
// comma-separated server list.
func redactURL(list string) string {
	urls := strings.Split(list, ",")
	for i, u := range urls {
		at := strings.LastIndex(u, "@")
		if at < 0 {
			continue
		}
		scheme := ""
		if s := strings.Index(u, "://"); s >= 0 && s < at {
			scheme = u[:s+3]
		}
		urls[i] = scheme + "redacted@" + u[at+1:]
	}
	return strings.Join(urls, ",")
}

// EnsureStream creates the stream c.Stream, or updates it, so that it captures
// c.SubjectPrefix + ".>" in file storage with the duplicate window c.DuplicateWindow
// and c.Replicas replicas (0 means 1).
//
// An existing stream keeps every other setting an operator gave it (limits,
// retention, extra subjects): only the subjects list (to which the prefix is added if
// missing), the duplicate window and the replica count are changed. A stream in memory
// storage is refused, since it would lose acknowledged events on a restart. Calling it
// again with the same c changes nothing.
func EnsureStream(ctx context.Context, js jetstream.JetStream, c Config) (jetstream.Stream, error) {
	subject := c.SubjectPrefix + ".>"
	want := jetstream.StreamConfig{
		Name:       c.Stream,
		Subjects:   []string{subject},
		Storage:    jetstream.FileStorage,
		Duplicates: c.DuplicateWindow,
		Replicas:   max(c.Replicas, 1),
	}
	s, err := js.Stream(ctx, c.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = js.CreateStream(ctx, want)
		if err == nil {
			return s, nil
		}
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil, fmt.Errorf("nats stream %s: create: %w", c.Stream, err)
		}
		// Created meanwhile by another process: update it like any existing one.
		s, err = js.Stream(ctx, c.Stream)
	}
	if err != nil {
		return nil, fmt.Errorf("nats stream %s: %w", c.Stream, err)
	}

	cfg := s.CachedInfo().Config
	if cfg.Storage != jetstream.FileStorage {
		return nil, fmt.Errorf("nats stream %s: has %s storage; watcher needs file storage (recreate the stream)", c.Stream, cfg.Storage)
	}
	if slices.Contains(cfg.Subjects, subject) && cfg.Duplicates == want.Duplicates && cfg.Replicas == want.Replicas {
		return s, nil
	}
	if !slices.Contains(cfg.Subjects, subject) {
		cfg.Subjects = append(cfg.Subjects, subject)
	}
	cfg.Duplicates = want.Duplicates
	cfg.Replicas = want.Replicas
	s, err = js.UpdateStream(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("nats stream %s: update: %w", c.Stream, err)
	}
	return s, nil
}
