// Package config reads watcher's YAML configuration file: strict keys, ${VAR}
// expansion from the environment in any value, *_file twins for secrets, defaults,
// and validation that reports every problem at once, each naming its key path and
// the offending value.
package config

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/poller/provider"
	"github.com/payments-watcher/watcher/publish"
)

// Config is the effective configuration: defaults applied, secrets resolved.
type Config struct {
	State   State
	NATS    publish.Config
	HTTP    HTTP
	Admin   Admin
	Sources []Source
	// Cluster is in force when State.Backend is "nats_kv".
	Cluster Cluster
	// Webhooks is the webhook listener (webhooks.go).
	Webhooks Webhooks
	// Warnings are problems that do not stop watcher but should be fixed, each naming
	// its key: a secret file other users can read, plain http to another host.
	Warnings []string

	secretFiles []secretFile // the *_file secrets Parse read, for Load's mode check
}

// State is the `state:` section.
type State struct {
	Backend string // "bbolt" or "nats_kv"
	Path    string // the bbolt file
	NATSKV  NATSKV // the nats_kv back end's buckets
}

// HTTP is the `http:` section.
type HTTP struct {
	// Listen is the address of /metrics, /healthz and /readyz; "" disables them.
	Listen string
}

// Admin is the `admin:` section: the private listener of the /state/ endpoints
// (inspection and rebaseline), kept apart from http.listen, which monitoring reaches.
type Admin struct {
	// Listen is a host:port address, or "unix:" and the absolute path of a unix
	// socket; "" disables the admin endpoints. A TCP address that is not loopback
	// requires a token.
	Listen string
	// Token is the bearer token the admin endpoints require (admin.token or
	// admin.token_file); "" when none is set.
	Token string
}

// adminSocketPrefix marks an admin.listen value naming a unix socket.
const adminSocketPrefix = "unix:"

// Socket returns the unix socket path of Listen, and whether it names one.
func (a Admin) Socket() (string, bool) {
	return strings.CutPrefix(a.Listen, adminSocketPrefix)
}

// IsLoopback reports whether the host of a host:port address can only be reached
// from this machine: "localhost" or a loopback IP. An empty host (every interface)
// or any other name is not.
func IsLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Source is one entry of `sources:`.
type Source struct {
	poller.Config
	// Settings are what the provider adapter is built from (secrets included).
	Settings provider.Settings
	// Provider is the descriptor of Config.Provider.
	Provider provider.Provider
	// RequestTimeout bounds one provider request.
	RequestTimeout time.Duration
	// CAFile is the source's ca_file, "" when it has none; RootCAs holds its
	// certificates, which replace the system's roots for this source (nil: the
	// system's roots).
	CAFile  string
	RootCAs *x509.CertPool
}

// Load reads and validates the file at path, expanding ${VAR} from the process
// environment and reading *_file secrets relative to the working directory. A secret
// file that users other than its owner may read adds a warning (see Config.Warnings).
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := Parse(data, os.LookupEnv, os.ReadFile)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	files := cfg.secretFiles
	n := cfg.NATS
	for _, f := range []secretFile{{"nats.creds_file", n.CredsFile}, {"nats.nkey_file", n.NKeyFile}, {"nats.tls.key", n.TLS.Key}} {
		if f.path != "" {
			files = append(files, f)
		}
	}
	for _, f := range files {
		if w := exposedFile(f, os.Stat); w != "" {
			cfg.Warnings = append(cfg.Warnings, w)
		}
	}
	return cfg, nil
}

// secretFile is a file holding a secret, and the key that names it.
type secretFile struct {
	key, path string
}

// exposedFile returns a warning when the secret file f grants any permission to its
// group or to other users; "" when it does not, when it cannot be stat'ed (reading it
// reports that), or on Windows, whose permissions are not mode bits.
func exposedFile(f secretFile, stat func(string) (fs.FileInfo, error)) string {
	if runtime.GOOS == "windows" {
		return ""
	}
	fi, err := stat(f.path)
	if err != nil || fi.Mode().Perm()&0o077 == 0 {
		return ""
	}
	return fmt.Sprintf("%s: %q holds a secret but has mode %04o, so other users may read it; chmod 600 it",
		f.key, f.path, fi.Mode().Perm())
}

// Defaults of the keys a file may leave out.
const (
	DefaultStatePath       = "data/watcher.db"
	DefaultListen          = "127.0.0.1:4222"
	DefaultStoreDir        = "data/nats"
	DefaultStream          = "PAYMENT_EVENTS"
	DefaultSubjectPrefix   = "payments"
	DefaultDuplicateWindow = 10 * time.Minute
	DefaultHTTPListen      = "127.0.0.1:9464"
	DefaultAdminListen     = "127.0.0.1:9465"
	DefaultMaxOutbox       = 1_000_000
	DefaultOutboxPace      = 10_000
	DefaultRetainAcked     = 5 * time.Minute
)

// Source defaults.
var sourceDefaults = rawSource{
	Interval:         "15s",
	DiscoveryOverlap: "10m",
	Lookback:         "720h",
	OpenRefresh:      "5m",
	OpenRefreshMax:   "1h",
	OpenMaxAge:       "720h",
	SettleWindow:     "24h",
	RequestTimeout:   "30s",
	Baseline:         "silent",
	RateLimit:        5,
	MaxPages:         10000,
}

var sourceName = regexp.MustCompile(`^[a-z0-9_-]+$`)

// Parse validates a configuration document. env looks up ${VAR}s and readFile reads
// *_file secrets; both are parameters so that tests need no process state.
func Parse(data []byte, env func(string) (string, bool), readFile func(string) ([]byte, error)) (*Config, error) {
	var raw rawFile
	unset, err := decodeStrict(data, &raw, env, acceptProviderKey)
	if err != nil {
		return nil, err
	}
	v := &validator{readFile: readFile}
	cfg := &Config{}

	v.stateAndCluster(&raw, cfg, osHostname)
	cfg.State.Path = or(raw.State.Path, DefaultStatePath)

	n := raw.NATS
	cfg.NATS = publish.Config{
		URL:                 n.URL,
		Embedded:            publish.Embedded{Listen: or(n.Embedded.Listen, DefaultListen), StoreDir: or(n.Embedded.StoreDir, DefaultStoreDir)},
		Stream:              or(n.Stream, DefaultStream),
		SubjectPrefix:       or(n.SubjectPrefix, DefaultSubjectPrefix),
		DuplicateWindow:     v.duration("nats.duplicate_window", n.DuplicateWindow, DefaultDuplicateWindow),
		RetainAcked:         v.duration("nats.retain_acked", n.RetainAcked, DefaultRetainAcked),
		RetainAckedMaxBytes: v.sizeOr("nats.retain_acked_max_bytes", n.RetainAckedMaxBytes, DefaultRetainAckedMaxBytes),
		StreamStorage:       or(n.StreamStorage, publish.StorageFile),
		StreamMaxAge:        v.duration("nats.stream_max_age", n.StreamMaxAge, 0),
		StreamMaxBytes:      v.size("nats.stream_max_bytes", n.StreamMaxBytes),
		CredsFile:           n.CredsFile,
		User:                n.User,
		NKeyFile:            n.NKeyFile,
		Replicas:            n.Replicas,
		MaxOutbox:           n.MaxOutbox,
	}
	cfg.NATS.Token = v.secret("nats.token", n.Token, n.TokenFile)
	cfg.NATS.Password = v.secret("nats.password", n.Password, n.PasswordFile)
	cfg.NATS.TLS.CA, cfg.NATS.TLS.Cert, cfg.NATS.TLS.Key = n.TLS.CA, n.TLS.Cert, n.TLS.Key
	cfg.NATS.Embedded.SyncInterval = v.syncInterval("nats.embedded.sync_interval", n.Embedded.SyncInterval)
	v.unboundedRetention(cfg.NATS)
	if cfg.NATS.Replicas == 0 {
		cfg.NATS.Replicas = 1
	}
	if cfg.NATS.MaxOutbox == 0 {
		cfg.NATS.MaxOutbox = DefaultMaxOutbox
	}
	cfg.NATS.OutboxPace = v.outboxPace(n.OutboxPace, cfg.NATS.MaxOutbox)
	v.errs = append(v.errs, cfg.NATS.Validate()...)

	cfg.HTTP.Listen = DefaultHTTPListen
	if raw.HTTP.Listen != nil {
		cfg.HTTP.Listen = *raw.HTTP.Listen
	}
	if cfg.HTTP.Listen != "" {
		if _, _, err := net.SplitHostPort(cfg.HTTP.Listen); err != nil {
			v.addf("http.listen", "%q is not a host:port address", cfg.HTTP.Listen)
		}
	}

	cfg.Admin = v.admin(raw.Admin)
	cfg.Webhooks = v.webhooks(raw.Webhooks)

	if len(raw.Sources) == 0 {
		v.addf("sources", "at least one source is required")
	}
	names := map[string]int{}
	for i, rs := range raw.Sources {
		key := fmt.Sprintf("sources[%d]", i)
		if j, dup := names[rs.Name]; dup && rs.Name != "" {
			v.addf(key+".name", "%q is already used by sources[%d]", rs.Name, j)
		}
		names[rs.Name] = i
		if s, ok := v.source(key, rs); ok {
			cfg.Sources = append(cfg.Sources, s)
		}
	}
	if err := unset.with(v.errs); err != nil {
		return nil, err
	}
	cfg.Warnings = v.warnings
	cfg.secretFiles = v.files
	return cfg, nil
}

func (v *validator) source(key string, rs rawSource) (Source, bool) {
	before := len(v.errs)
	var s Source
	s.Name = rs.Name
	switch {
	case rs.Name == "":
		v.addf(key+".name", "is required")
	case !sourceName.MatchString(rs.Name):
		v.addf(key+".name", "%q must match [a-z0-9_-]+", rs.Name)
	}
	p, known := poller.Providers[rs.Provider]
	switch {
	case rs.Provider == "":
		v.addf(key+".provider", "is required (one of %s)", strings.Join(poller.ProviderIDs(), ", "))
	case !known:
		v.addf(key+".provider", "unknown provider %q (want one of %s)", rs.Provider, strings.Join(poller.ProviderIDs(), ", "))
	}
	s.Provider = p
	s.Config.Provider = rs.Provider
	s.Kind = p.Kind

	d := func(name, val, def string) time.Duration {
		dd, _ := time.ParseDuration(def)
		return v.duration(key+"."+name, val, dd)
	}
	s.Interval = d("interval", rs.Interval, sourceDefaults.Interval)
	s.DiscoveryOverlap = d("discovery_overlap", rs.DiscoveryOverlap, sourceDefaults.DiscoveryOverlap)
	s.Lookback = d("lookback", rs.Lookback, sourceDefaults.Lookback)
	s.OpenRefresh = d("open_refresh", rs.OpenRefresh, sourceDefaults.OpenRefresh)
	s.OpenRefreshMax = d("open_refresh_max", rs.OpenRefreshMax, sourceDefaults.OpenRefreshMax)
	s.OpenMaxAge = d("open_max_age", rs.OpenMaxAge, sourceDefaults.OpenMaxAge)
	s.SettleWindow = d("settle_window", rs.SettleWindow, sourceDefaults.SettleWindow)
	s.RequestTimeout = d("request_timeout", rs.RequestTimeout, sourceDefaults.RequestTimeout)
	for _, c := range []struct {
		name string
		val  time.Duration
		raw  string
	}{{"interval", s.Interval, rs.Interval}, {"lookback", s.Lookback, rs.Lookback}, {"open_refresh", s.OpenRefresh, rs.OpenRefresh},
		{"open_max_age", s.OpenMaxAge, rs.OpenMaxAge}, {"request_timeout", s.RequestTimeout, rs.RequestTimeout}} {
		if c.val <= 0 && c.raw != "" && len(v.errs) == before {
			v.addf(key+"."+c.name, "%q must be positive", c.raw)
		}
	}
	if s.DiscoveryOverlap < 0 {
		v.addf(key+".discovery_overlap", "%q must not be negative", rs.DiscoveryOverlap)
	}
	if s.SettleWindow < 0 {
		v.addf(key+".settle_window", "%q must not be negative", rs.SettleWindow)
	}
	if s.OpenRefreshMax < 0 {
		v.addf(key+".open_refresh_max", "%q must not be negative (0 turns the growth of periods with age off)", rs.OpenRefreshMax)
	}
	if len(rs.OpenRefreshByState) > 0 {
		s.OpenRefreshByState = map[diff.State]time.Duration{}
		for _, name := range slices.Sorted(maps.Keys(rs.OpenRefreshByState)) {
			val, k, st := rs.OpenRefreshByState[name], key+".open_refresh_by_state."+name, diff.State(name)
			dd, err := time.ParseDuration(val)
			switch {
			case !slices.Contains(openStates, st):
				v.addf(k, "%q is not a state an open item is re-read in (want one of %s)", name, strings.Join(openStateNames(), ", "))
			case err != nil:
				v.addf(k, "%q is not a duration (e.g. 15s, 10m, 720h)", val)
			case dd <= 0:
				v.addf(k, "%q must be positive", val)
			default:
				s.OpenRefreshByState[st] = dd
			}
		}
	}
	s.RateLimit = sourceDefaults.RateLimit
	if rs.RateLimit != 0 {
		s.RateLimit = rs.RateLimit
	}
	if !(s.RateLimit > 0) || math.IsInf(s.RateLimit, 1) {
		v.addf(key+".rate_limit", "%v must be a positive number of requests per second", rs.RateLimit)
	}
	s.MaxPages = sourceDefaults.MaxPages
	if rs.MaxPages != 0 {
		s.MaxPages = rs.MaxPages
	}
	if s.MaxPages < 1 {
		v.addf(key+".max_pages", "%d must be at least 1", rs.MaxPages)
	}
	s.Baseline = or(rs.Baseline, sourceDefaults.Baseline)
	if s.Baseline != "silent" && s.Baseline != "emit" {
		v.addf(key+".baseline", "%q must be silent or emit", rs.Baseline)
	}

	st := provider.Settings{
		Name:             rs.Name,
		BaseURL:          strings.TrimRight(or(rs.BaseURL, p.DefaultBaseURL), "/"),
		PageSize:         rs.PageSize,
		TerminalStatuses: rs.TerminalStatuses,
	}
	if known {
		st.Values = v.providerValues(key, rs, p)
		if st.PageSize == 0 {
			st.PageSize = p.DefaultPageSize
		}
		if st.PageSize < 1 || st.PageSize > p.MaxPageSize {
			v.addf(key+".page_size", "%d is outside 1..%d for %s", rs.PageSize, p.MaxPageSize, rs.Provider)
		}
		u, err := url.Parse(st.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.addf(key+".base_url", "%q is not an absolute http(s) URL", rs.BaseURL)
		} else {
			s.CAFile, s.RootCAs = v.caFile(key, rs.CAFile, u)
			if u.Scheme == "http" && !loopback(u.Hostname()) {
				v.warnings = append(v.warnings, fmt.Sprintf("%s.base_url: %q is plain http to another host: the source's credentials and data travel unencrypted", key, u.Redacted()))
			}
		}
		if len(st.TerminalStatuses) > 0 && !p.TerminalOverride {
			v.addf(key+".terminal_statuses", "%s statuses are documented; terminal_statuses applies only to providers whose statuses are not", rs.Provider)
		}
		v.requireCredentials(key, rs.Provider, p, st.Values)
		if len(v.errs) == before {
			// The adapter checks what is specific to it; its message names the key.
			if _, err := p.New(st, &provider.Client{}); err != nil {
				v.addf(key, "%v", err)
			}
		}
	}
	s.Settings = st
	s.PageSize = st.PageSize
	return s, len(v.errs) == before
}

// openStates are the keys of open_refresh_by_state: the states an open item can be
// re-read in.
var openStates = []diff.State{diff.Pending, diff.ActionRequired, diff.Processing, diff.Unknown, poller.Settling}

func openStateNames() []string {
	out := make([]string, len(openStates))
	for i, s := range openStates {
		out[i] = string(s)
	}
	return out
}

type validator struct {
	errs     []error
	warnings []string
	files    []secretFile // the *_file secrets read
	readFile func(string) ([]byte, error)
}

// caFile reads a source's ca_file: a PEM bundle of one or more certificates, nothing
// else, for an https base_url u.
func (v *validator) caFile(key, file string, u *url.URL) (string, *x509.CertPool) {
	if file == "" {
		return "", nil
	}
	key += ".ca_file"
	if u.Scheme != "https" {
		v.addf(key, "applies only to an https base_url, not %q", u.Redacted())
		return "", nil
	}
	data, err := v.readFile(file)
	if err != nil {
		v.addf(key, "%q cannot be read: %v", file, pathErr(err))
		return "", nil
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		n++
		if b.Type != "CERTIFICATE" {
			v.addf(key, "%q: PEM block %d has type %s; a ca_file holds certificates only", file, n, b.Type)
			return "", nil
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			v.addf(key, "%q: PEM block %d is not a valid certificate: %v", file, n, err)
			return "", nil
		}
		pool.AddCert(cert)
	}
	if n == 0 {
		v.addf(key, "%q holds no PEM certificate", file)
		return "", nil
	}
	return file, pool
}

// loopback reports whether host names this machine.
func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (v *validator) addf(key, format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
}

func (v *validator) has(key string) bool {
	return slices.ContainsFunc(v.errs, func(e error) bool {
		return strings.HasPrefix(e.Error(), key+":") || strings.HasPrefix(e.Error(), key+"_file:")
	})
}

func (v *validator) duration(key, val string, def time.Duration) time.Duration {
	if val == "" {
		return def
	}
	d, err := time.ParseDuration(val)
	if err != nil {
		v.addf(key, "%q is not a duration (e.g. 15s, 10m, 720h)", val)
		return def
	}
	return d
}

// secret returns the inline value or the trimmed content of the file; both set is an
// error. The value itself never appears in an error.
func (v *validator) secret(key, inline, file string) string {
	if inline != "" && file != "" {
		v.addf(key, "set either %s or %s_file, not both", lastKey(key), lastKey(key))
		return ""
	}
	if file == "" {
		return inline
	}
	b, err := v.readFile(file)
	if err != nil {
		v.addf(key+"_file", "%q cannot be read: %v", file, pathErr(err))
		return ""
	}
	v.files = append(v.files, secretFile{key + "_file", file})
	s := strings.TrimSpace(string(b))
	if s == "" {
		v.addf(key+"_file", "%q is empty", file)
	}
	return s
}

// admin reads the admin section: the listener defaults to DefaultAdminListen; a socket
// path must be absolute; a TCP listener other hosts can reach needs a token.
func (v *validator) admin(raw rawAdmin) Admin {
	a := Admin{Listen: DefaultAdminListen, Token: v.secret("admin.token", raw.Token, raw.TokenFile)}
	if raw.Listen != nil {
		a.Listen = *raw.Listen
	}
	if a.Listen == "" {
		return a
	}
	if path, ok := a.Socket(); ok {
		if !filepath.IsAbs(path) {
			v.addf("admin.listen", "%q: the socket path must be absolute (unix:/run/watcher/admin.sock)", a.Listen)
		}
		return a
	}
	if _, _, err := net.SplitHostPort(a.Listen); err != nil {
		v.addf("admin.listen", "%q is not a host:port address or unix:/absolute/path", a.Listen)
		return a
	}
	if !IsLoopback(a.Listen) && a.Token == "" {
		v.addf("admin.listen", "%q can be reached from other hosts, but admin.token_file is not set: the admin endpoints change state, "+
			"so set admin.token_file to a file holding a bearer token, or listen on loopback (%s) or a unix socket (unix:/run/watcher/admin.sock)",
			a.Listen, DefaultAdminListen)
	}
	return a
}

func lastKey(key string) string {
	if i := strings.LastIndexByte(key, '.'); i >= 0 {
		return key[i+1:]
	}
	return key
}

func pathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
