package publish

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Config is the `nats:` section of the configuration file. Durations are already
// parsed: the configuration loader converts "10m" to a time.Duration and applies
// the documented defaults before Validate is called.
type Config struct {
	// URL is the NATS server list (comma separated). "" starts an embedded server
	// (Embedded) and connects to it.
	URL      string   `yaml:"url"`
	Embedded Embedded `yaml:"embedded"`
	// Stream is the JetStream stream created or updated at start.
	Stream string `yaml:"stream"`
	// SubjectPrefix is the first token(s) of every subject; the stream captures
	// SubjectPrefix + ".>".
	SubjectPrefix string `yaml:"subject_prefix"`
	// DuplicateWindow is the stream's de-duplication window. Keep it longer than
	// watcher is expected to stay down: a message re-sent after it is stored twice.
	DuplicateWindow time.Duration `yaml:"duplicate_window"`
	// RetainAcked is how long an outbox entry is kept after its PubAck, to be
	// published again after a reconnect in case the server lost it (JetStream
	// acknowledges before it fsyncs); 0 deletes entries on their PubAck.
	RetainAcked time.Duration `yaml:"retain_acked"`
	// RetainAckedMaxBytes bounds the size of the retained entries (as stored,
	// compressed; state.RetainedSize): past it the oldest are deleted before
	// RetainAcked, and counted (Observer's RetainedPruned). 0 means no bound.
	RetainAckedMaxBytes int64 `yaml:"retain_acked_max_bytes"`

	// StreamStorage is the storage of a stream watcher creates: "file" (also for "")
	// or "memory". An existing stream's storage must match it.
	StreamStorage string `yaml:"stream_storage"`
	// StreamMaxAge and StreamMaxBytes are the limits of a stream watcher creates; 0
	// means none. An existing stream keeps its own.
	StreamMaxAge   time.Duration `yaml:"stream_max_age"`
	StreamMaxBytes int64         `yaml:"stream_max_bytes"`

	// Authentication; all optional. Secret values (Token, Password) are never
	// logged nor put in errors.
	CredsFile string `yaml:"creds_file"` // a .creds file (user JWT and nkey seed)
	Token     string `yaml:"token"`
	User      string `yaml:"user"`
	Password  string `yaml:"password"`
	NKeyFile  string `yaml:"nkey_file"` // a file holding a user nkey seed
	TLS       TLS    `yaml:"tls"`

	// Replicas is the stream's replica count; 0 means 1.
	Replicas int `yaml:"replicas"`
	// MaxOutbox is the outbox size past which the daemon reports not ready. This
	// package does not enforce it; 0 means no limit.
	MaxOutbox int `yaml:"max_outbox"`
	// OutboxPace is the outbox size at which the pollers' walks wait between pages
	// for NATS to take events (poller.Config.PaceOutbox). This package does not use
	// it; 0 turns pacing off.
	OutboxPace int `yaml:"outbox_pace"`
}

// Embedded configures the NATS server started in-process when Config.URL is "".
type Embedded struct {
	// Listen is the client address, host:port; port 0 picks a free port.
	Listen string `yaml:"listen"`
	// StoreDir holds the JetStream store; it is created if missing.
	StoreDir string `yaml:"store_dir"`
	// SyncInterval is how often JetStream fsyncs its store. 0, written "always" in
	// the configuration file, fsyncs every message before acknowledging it.
	SyncInterval time.Duration `yaml:"sync_interval"`
}

// TLS names the PEM files used to connect to NATS over TLS.
type TLS struct {
	CA   string `yaml:"ca"`   // CA bundle to verify the server with
	Cert string `yaml:"cert"` // client certificate; needs Key
	Key  string `yaml:"key"`  // client private key; needs Cert
}

// Values of Config.StreamStorage.
const (
	StorageFile   = "file"
	StorageMemory = "memory"
)

// maxReplicas is JetStream's limit on stream replicas.
const maxReplicas = 5

// Validate reports every problem in c, each naming its key path under `nats.` and the
// bad value (never a secret's value). It returns nil when c is usable.
func (c Config) Validate() []error {
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}

	switch bad := strings.IndexFunc(c.Stream, badStreamRune); {
	case c.Stream == "":
		add("nats.stream: %q is empty", c.Stream)
	case bad >= 0:
		r, _ := utf8.DecodeRuneInString(c.Stream[bad:])
		add("nats.stream: %q contains %q; a stream name cannot contain '.', '*', '>', '/', '\\' or whitespace", c.Stream, r)
	}
	if !validPrefix(c.SubjectPrefix) {
		add("nats.subject_prefix: %q is not a subject prefix: want dot-separated tokens without wildcards or whitespace", c.SubjectPrefix)
	}
	if c.DuplicateWindow <= 0 {
		add("nats.duplicate_window: %s must be positive", c.DuplicateWindow)
	}
	if c.RetainAcked < 0 {
		add("nats.retain_acked: %s must not be negative (0 disables it)", c.RetainAcked)
	}
	switch c.StreamStorage {
	case "", StorageFile, StorageMemory:
	default:
		add("nats.stream_storage: %q is not a storage type (want %s or %s)", c.StreamStorage, StorageFile, StorageMemory)
	}
	switch {
	case c.StreamMaxAge < 0:
		add("nats.stream_max_age: %s must not be negative (0 means no limit)", c.StreamMaxAge)
	case c.StreamMaxAge > 0 && c.StreamMaxAge < c.DuplicateWindow:
		add("nats.stream_max_age: %s is shorter than nats.duplicate_window %s; JetStream refuses a duplicate window longer than the stream's max age",
			c.StreamMaxAge, c.DuplicateWindow)
	case c.StreamMaxAge > 0 && c.StreamMaxAge < c.RetainAcked:
		add("nats.stream_max_age: %s is shorter than nats.retain_acked %s; re-published events could be stored again after the stream aged them out",
			c.StreamMaxAge, c.RetainAcked)
	}
	if c.RetainAckedMaxBytes < 0 {
		add("nats.retain_acked_max_bytes: %d must not be negative (0 means no bound)", c.RetainAckedMaxBytes)
	}
	if c.StreamMaxBytes < 0 {
		add("nats.stream_max_bytes: %d must not be negative (0 means no limit)", c.StreamMaxBytes)
	}
	if c.URL == "" {
		if !validListen(c.Embedded.Listen) {
			add("nats.embedded.listen: %q is not host:port (port 0..65535, 0 picks a free one); it is required when nats.url is empty", c.Embedded.Listen)
		}
		if c.Embedded.StoreDir == "" {
			add("nats.embedded.store_dir: %q is empty; it is required when nats.url is empty", c.Embedded.StoreDir)
		}
		if c.Embedded.SyncInterval < 0 {
			add("nats.embedded.sync_interval: %s must be positive, or always", c.Embedded.SyncInterval)
		}
	}
	switch {
	case c.Replicas < 0 || c.Replicas > maxReplicas:
		add("nats.replicas: %d must be between 1 and %d (0 means 1)", c.Replicas, maxReplicas)
	case c.Replicas > 1 && c.URL == "":
		add("nats.replicas: %d needs a NATS cluster; the embedded server is a single node", c.Replicas)
	}
	if c.MaxOutbox < 0 {
		add("nats.max_outbox: %d must not be negative", c.MaxOutbox)
	}
	if c.Password != "" && c.User == "" {
		add("nats.password: set without nats.user")
	}
	if c.TLS.Cert != "" && c.TLS.Key == "" {
		add("nats.tls.key: %q is empty while nats.tls.cert is set", c.TLS.Key)
	}
	if c.TLS.Key != "" && c.TLS.Cert == "" {
		add("nats.tls.cert: %q is empty while nats.tls.key is set", c.TLS.Cert)
	}
	return errs
}

// badStreamRune reports the characters JetStream refuses in a stream name.
func badStreamRune(r rune) bool {
	switch r {
	case '.', '*', '>', '/', '\\':
		return true
	}
	return unicode.IsSpace(r)
}

// validPrefix reports whether p is one or more non-empty dot-separated tokens with
// no wildcard and no whitespace.
func validPrefix(p string) bool {
	if p == "" {
		return false
	}
	for tok := range strings.SplitSeq(p, ".") {
		if tok == "" || strings.ContainsAny(tok, "*>") || strings.IndexFunc(tok, unicode.IsSpace) >= 0 {
			return false
		}
	}
	return true
}

// validListen reports whether s is host:port with a numeric port in 0..65535. An
// empty host listens on every interface.
func validListen(s string) bool {
	_, port, err := splitListen(s)
	return err == nil && port >= 0
}

// splitListen splits host:port and parses the port.
func splitListen(s string) (host string, port int, err error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	port, err = strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("port %q is not a number in 0..65535", p)
	}
	return host, port, nil
}

// SyncsAlways reports whether c runs the embedded server (no URL) with file storage
// and sync_interval "always": JetStream then fsyncs every message before its PubAck
// (Options.ServerSyncsAlways).
func (c Config) SyncsAlways() bool {
	return c.URL == "" && c.Embedded.SyncInterval <= 0 && c.StreamStorage != StorageMemory
}
