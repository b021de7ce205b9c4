package publish

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Connect connects to the NATS servers in url (comma separated) as "watcher", with
// the authentication and TLS options of c. The connection reconnects forever, and a
// server that is down at start is retried in the background: Connect then returns a
// connection that is not connected yet, and publishing fails (and is retried by Run)
// until it is. When the server refuses the credentials or the TLS handshake, that is
// logged as an error naming the url (credentials redacted), the cause and the keys to
// check, and nats.go closes the connection for good after repeated authorization
// failures (logged as an error too; Publisher.Healthy reports it). Only unusable
// options (an unreadable credentials, seed or TLS file, a malformed url) are errors.
// Connection events are logged to log; secrets are never logged nor put in errors,
// and credentials in url are redacted.
func Connect(url string, c Config, log *slog.Logger) (*nats.Conn, error) {
	log = orDiscard(log)
	auth, err := ClientOptions(c)
	if err != nil {
		return nil, err
	}
	opts := append([]nats.Option{
		nats.Name("watcher"),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info("NATS connected", "url", RedactURL(nc.ConnectedUrl()))
		}),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if nc.IsClosed() {
				return // Close was called; ClosedHandler logs it
			}
			log.Warn("NATS disconnected; reconnecting", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS reconnected", "url", RedactURL(nc.ConnectedUrl()))
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
	}, auth...)
	// A first attempt without background retries tells a server that refuses watcher
	// from one that is not there, for the log.
	nc, err := nats.Connect(url, append(opts, nats.RetryOnFailedConnect(false))...)
	if err == nil {
		return nc, nil
	}
	first := err
	refused := diagnose(url, c, auth, err)
	nc, err = nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("nats %s: connect: %w", RedactURL(url), err)
	}
	switch {
	case nc.IsConnected():
	case refused != nil:
		log.Error("NATS refused the connection", "err", refused)
	default:
		log.Warn("NATS not reachable yet; retrying in the background", "url", RedactURL(url), "err", first)
	}
	return nc, nil
}

// diagnose returns, when err (the outcome of a first connection attempt to url with
// the options auth of c) means that a server refused the credentials or the TLS
// handshake, an error naming url (credentials redacted), the cause and what to check;
// nil when the server was merely not there.
func diagnose(url string, c Config, auth []nats.Option, err error) error {
	if hint := refusal(err, c, strings.Contains(url, "@")); hint != "" {
		return fmt.Errorf("nats %s: %w; %s", RedactURL(url), err, hint)
	}
	if !closedEarly(err) {
		return nil
	}
	// With TLS 1.3 a server that refuses the client certificate does so after the
	// client's side of the handshake, and its alert can be lost to the connection reset
	// that follows: ask again over TLS 1.2, where the refusal ends the handshake.
	probe, perr := nats.Connect(url, append([]nats.Option{nats.Name("watcher"), nats.RetryOnFailedConnect(false),
		nats.Secure(&tls.Config{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12})}, auth...)...)
	if perr == nil {
		probe.Close()
		return nil
	}
	if hint := refusal(perr, c, false); hint != "" && errors.Is(perr, nats.ErrTLS) {
		return fmt.Errorf("nats %s: %w; %s", RedactURL(url), perr, hint)
	}
	return nil
}

// authOptions returns the authentication and TLS options of c, or an error when a
// file they name cannot be used.
func ClientOptions(c Config) ([]nats.Option, error) {
	var opts []nats.Option
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
	return opts, nil
}

// closedEarly reports whether err is the server closing the connection during the
// connect exchange.
func closedEarly(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// refusal returns, when err means that a server refused the credentials or the TLS
// handshake, what to check in c (urlCreds: the url holds credentials); "" for any
// other error (a server down or unreachable, which is worth retrying).
func refusal(err error, c Config, urlCreds bool) string {
	var (
		op      *net.OpError
		verify  *tls.CertificateVerificationError
		unknown x509.UnknownAuthorityError
		host    x509.HostnameError
		invalid x509.CertificateInvalidError
	)
	switch {
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired),
		errors.Is(err, nats.ErrAuthRevoked), errors.Is(err, nats.ErrAccountAuthExpired):
		var set []string
		for _, k := range []struct {
			key string
			on  bool
		}{{"nats.url", urlCreds}, {"nats.creds_file", c.CredsFile != ""}, {"nats.nkey_file", c.NKeyFile != ""}, {"nats.token", c.Token != ""},
			{"nats.user and nats.password", c.User != ""}, {"nats.tls.cert", c.TLS.Cert != ""}} {
			if k.on {
				set = append(set, k.key)
			}
		}
		if len(set) == 0 {
			return "the server requires credentials and none is configured (nats.creds_file, nats.nkey_file, nats.token, nats.user and nats.password, or a client certificate in nats.tls)"
		}
		return "the server refused the credentials of " + strings.Join(set, ", ")
	case errors.Is(err, nats.ErrSecureConnRequired):
		return "the server requires TLS: use a tls:// url or set nats.tls"
	case errors.Is(err, nats.ErrSecureConnWanted):
		return "nats.tls is set but the server does not offer TLS"
	case errors.As(err, &verify), errors.As(err, &unknown), errors.As(err, &host), errors.As(err, &invalid):
		return "the server's certificate is not trusted: check nats.tls.ca"
	case errors.As(err, &op) && op.Op == "remote error":
		// A TLS alert: the server refused the handshake, most often the client
		// certificate.
		if c.TLS.Cert == "" {
			return "the server refused the TLS handshake; it may require a client certificate (nats.tls.cert and nats.tls.key)"
		}
		return "the server refused the TLS handshake: check nats.tls.cert and nats.tls.key"
	}
	return ""
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
func RedactURL(list string) string {
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
// c.SubjectPrefix + ".>" with the duplicate window c.DuplicateWindow and c.Replicas
// replicas (0 means 1). A stream it creates has c's storage (StreamStorage, file by
// default) and limits (StreamMaxAge, StreamMaxBytes; 0 means none).
//
// An existing stream keeps every other setting an operator gave it (limits,
// retention, extra subjects): only the subjects list (to which the prefix is added if
// missing), the duplicate window and the replica count are changed. Its storage type
// cannot change, so one in other storage than c's is an error, as is one whose max age
// is shorter than c.DuplicateWindow (JetStream refuses that). Limits that differ from
// c's are left alone; the Publisher logs them. Calling it again with the same c
// changes nothing.
func EnsureStream(ctx context.Context, js jetstream.JetStream, c Config) (jetstream.Stream, error) {
	s, _, err := ensureStream(ctx, js, c)
	return s, err
}

// ensureStream is EnsureStream; it also returns the differences between an existing
// stream's limits and c's, one sentence each, that it left alone.
func ensureStream(ctx context.Context, js jetstream.JetStream, c Config) (jetstream.Stream, []string, error) {
	subject := c.SubjectPrefix + ".>"
	storage := jetstream.FileStorage
	if c.StreamStorage == StorageMemory {
		storage = jetstream.MemoryStorage
	}
	want := jetstream.StreamConfig{
		Name:       c.Stream,
		Subjects:   []string{subject},
		Storage:    storage,
		Duplicates: c.DuplicateWindow,
		Replicas:   max(c.Replicas, 1),
		MaxAge:     c.StreamMaxAge,
		MaxBytes:   c.StreamMaxBytes,
	}
	if want.MaxBytes == 0 {
		want.MaxBytes = -1 // JetStream's "no limit"
	}
	s, err := js.Stream(ctx, c.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = js.CreateStream(ctx, want)
		if err == nil {
			return s, nil, nil
		}
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil, nil, fmt.Errorf("nats stream %s: create: %w", c.Stream, err)
		}
		// Created meanwhile by another process: update it like any existing one.
		s, err = js.Stream(ctx, c.Stream)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("nats stream %s: %w", c.Stream, err)
	}

	cfg := s.CachedInfo().Config
	if cfg.Storage != want.Storage {
		return nil, nil, fmt.Errorf("nats stream %s: has %s storage, nats.stream_storage is %s; a stream's storage cannot change: recreate the stream, or set nats.stream_storage to %s",
			c.Stream, cfg.Storage, storageName(want.Storage), storageName(cfg.Storage))
	}
	if cfg.MaxAge > 0 && cfg.MaxAge < want.Duplicates {
		return nil, nil, fmt.Errorf("nats stream %s: its max age %s is shorter than nats.duplicate_window %s, which JetStream refuses: raise the stream's max age or shorten the window",
			c.Stream, cfg.MaxAge, want.Duplicates)
	}
	var notes []string
	if c.StreamMaxAge > 0 && cfg.MaxAge != c.StreamMaxAge {
		notes = append(notes, fmt.Sprintf("nats stream %s: max age is %s, nats.stream_max_age is %s; the stream keeps its own (change it with nats stream edit)",
			c.Stream, limitAge(cfg.MaxAge), c.StreamMaxAge))
	}
	if c.StreamMaxBytes > 0 && cfg.MaxBytes != c.StreamMaxBytes {
		notes = append(notes, fmt.Sprintf("nats stream %s: max bytes is %s, nats.stream_max_bytes is %d; the stream keeps its own (change it with nats stream edit)",
			c.Stream, limitBytes(cfg.MaxBytes), c.StreamMaxBytes))
	}
	if c.RetainAcked > 0 && cfg.MaxAge > 0 && cfg.MaxAge < c.RetainAcked {
		notes = append(notes, fmt.Sprintf("nats stream %s: max age %s is shorter than nats.retain_acked %s; an event re-published after a reconnect can be stored again after the stream aged it out",
			c.Stream, cfg.MaxAge, c.RetainAcked))
	}
	if slices.Contains(cfg.Subjects, subject) && cfg.Duplicates == want.Duplicates && cfg.Replicas == want.Replicas {
		return s, notes, nil
	}
	if !slices.Contains(cfg.Subjects, subject) {
		cfg.Subjects = append(cfg.Subjects, subject)
	}
	cfg.Duplicates = want.Duplicates
	cfg.Replicas = want.Replicas
	s, err = js.UpdateStream(ctx, cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("nats stream %s: update: %w", c.Stream, err)
	}
	return s, notes, nil
}

// storageName is the nats.stream_storage value of a storage type.
func storageName(t jetstream.StorageType) string {
	if t == jetstream.MemoryStorage {
		return StorageMemory
	}
	return StorageFile
}

func limitAge(d time.Duration) string {
	if d <= 0 {
		return "unlimited"
	}
	return d.String()
}

func limitBytes(n int64) string {
	if n <= 0 {
		return "unlimited"
	}
	return fmt.Sprint(n)
}
