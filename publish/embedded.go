package publish

import (
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// embeddedReadyTimeout bounds how long StartEmbedded waits for the server to accept
// clients (JetStream recovers its store before that).
const embeddedReadyTimeout = 10 * time.Second

// StartEmbedded starts an in-process NATS server with JetStream, storing streams in
// e.StoreDir and accepting clients on e.Listen (host:port; port 0 picks a free port,
// see srv.ClientURL()). JetStream fsyncs every e.SyncInterval, or every message before
// acknowledging it when e.SyncInterval is 0. It installs no signal handlers and logs through log. It returns
// once the server accepts connections, or an error naming the listen address when the
// server cannot start within 10s (a port in use, an unusable store directory); the
// server is shut down in that case. The caller owns the returned server: Shutdown then
// WaitForShutdown.
func StartEmbedded(e Embedded, log *slog.Logger) (*server.Server, error) {
	log = orDiscard(log)
	host, port, err := splitListen(e.Listen)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS server: listen %q: %w", e.Listen, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT // nats-server reads 0 as its default port, 4222
	}
	opts := &server.Options{
		ServerName: "watcher",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   e.StoreDir,
		NoSigs:     true,
	}
	if e.SyncInterval > 0 {
		opts.SyncInterval = e.SyncInterval
	} else {
		opts.SyncAlways = true
		opts.SyncInterval = defaultSyncInterval // the background flush, as "sync: always" sets it
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS server on %s: %w", e.Listen, err)
	}
	sl := &serverLog{log: log.With("component", "nats-server"), fatal: make(chan string, 1)}
	srv.SetLoggerV2(sl, false, false, false)
	go srv.Start()

	deadline := time.Now().Add(embeddedReadyTimeout)
	for !srv.ReadyForConnections(50 * time.Millisecond) {
		select {
		case msg := <-sl.fatal:
			shutdown(srv)
			return nil, fmt.Errorf("embedded NATS server on %s: %s", e.Listen, msg)
		default:
		}
		if time.Now().After(deadline) {
			shutdown(srv)
			return nil, fmt.Errorf("embedded NATS server on %s: not ready for connections after %s", e.Listen, embeddedReadyTimeout)
		}
	}
	sl.running.Store(true)
	select {
	case msg := <-sl.fatal:
		sl.log.Error(msg)
	default:
	}
	log.Info("Embedded NATS server started", "url", srv.ClientURL(), "store_dir", e.StoreDir, "sync_interval", syncName(e.SyncInterval))
	return srv, nil
}

// defaultSyncInterval is nats-server's own JetStream sync interval.
const defaultSyncInterval = 2 * time.Minute

// syncName renders Embedded.SyncInterval as the configuration file writes it.
func syncName(d time.Duration) string {
	if d <= 0 {
		return "always"
	}
	return d.String()
}

func shutdown(srv *server.Server) {
	srv.Shutdown()
	srv.WaitForShutdown()
}

// serverLog adapts nats-server's logger to slog; nats-server's own logger would exit
// the process on a fatal message. Until the server is running, the first fatal message
// goes to fatal, for StartEmbedded to return, instead of the log.
type serverLog struct {
	log     *slog.Logger
	fatal   chan string
	running atomic.Bool
}

func (l *serverLog) Noticef(format string, v ...any) { l.log.Info(fmt.Sprintf(format, v...)) }
func (l *serverLog) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *serverLog) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *serverLog) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *serverLog) Tracef(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }

func (l *serverLog) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if !l.running.Load() {
		select {
		case l.fatal <- msg:
			return
		default:
		}
	}
	l.log.Error(msg)
}

// orDiscard returns log, or a logger that drops everything when log is nil.
func orDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log
}
