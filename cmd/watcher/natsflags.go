package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/payments-watcher/watcher/config"
	"github.com/payments-watcher/watcher/publish"
)

// natsFlags are the command-line flags that say which NATS server a command reads
// and how it authenticates: the settings of the daemon's nats: block, or that block
// itself with --config.
type natsFlags struct {
	url, config                  string
	creds, nkey                  string
	token, tokenFile             string
	user, password, passwordFile string
	tlsCA, tlsCert, tlsKey       string
}

// register defines the flags on fs.
func (f *natsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.url, "nats", "", "NATS server `url`s, comma separated (default: the configuration's, else $NATS_URL, else "+nats.DefaultURL+")")
	fs.StringVar(&f.config, "config", "", "the daemon's configuration `file`: connect as its nats: block says")
	fs.StringVar(&f.creds, "creds", "", "NATS credentials `file` (user JWT and nkey seed), as nats.creds_file")
	fs.StringVar(&f.nkey, "nkey", "", "`file` holding a user nkey seed, as nats.nkey_file")
	fs.StringVar(&f.tokenFile, "token-file", "", "`file` holding the NATS token, as nats.token_file")
	fs.StringVar(&f.token, "token", "", "NATS `token`; other users may see it in the process list: prefer --token-file")
	fs.StringVar(&f.user, "user", "", "NATS user `name`, with --password-file")
	fs.StringVar(&f.passwordFile, "password-file", "", "`file` holding the NATS password, as nats.password_file")
	fs.StringVar(&f.password, "password", "", "NATS `password`; other users may see it in the process list: prefer --password-file")
	fs.StringVar(&f.tlsCA, "tls-ca", "", "CA bundle `file` to verify the server with, as nats.tls.ca")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "client certificate `file`, with --tls-key, as nats.tls.cert")
	fs.StringVar(&f.tlsKey, "tls-key", "", "client private key `file`, with --tls-cert, as nats.tls.key")
}

// natsTarget is a resolved NATS connection: the server list and the daemon's
// connection settings (credentials, TLS, stream and subject prefix) to use.
type natsTarget struct {
	url  string
	nats publish.Config
	// credentials names where each credential in nats comes from ("--token-file",
	// "nats.token in watcher.yaml"), for a refusal to tell what to check.
	credentials []string
}

// resolve returns where and how to connect. With --config, the configuration file
// gives the server list (nats.url, or nats.embedded.listen when it is empty) and
// every setting; each flag set (set holds their names) replaces the setting it names.
// The server list is --nats, else the file's, else getenv("NATS_URL"), else
// nats.DefaultURL. Secret files are read here; errors name the flag or key and the
// file, never a secret.
func (f natsFlags) resolve(set map[string]bool, getenv func(string) string) (natsTarget, error) {
	var t natsTarget
	fileURL := ""
	if f.config != "" {
		cfg, err := config.Load(f.config)
		if err != nil {
			return t, err
		}
		t.nats = cfg.NATS
		if fileURL, err = daemonURL(cfg.NATS); err != nil {
			return t, fmt.Errorf("config %s: %w", f.config, err)
		}
	}
	t.url = firstNonEmpty(f.url, fileURL, getenv("NATS_URL"), nats.DefaultURL)
	if err := f.override(&t.nats, set); err != nil {
		return t, err
	}
	t.credentials = f.credentialOrigins(t.nats, set)
	return t, validateAuth(t.nats, f.config)
}

// override replaces the settings in c that flags set.
func (f natsFlags) override(c *publish.Config, set map[string]bool) error {
	for _, s := range []struct {
		flag string
		dst  *string
		val  string
	}{
		{"creds", &c.CredsFile, f.creds}, {"nkey", &c.NKeyFile, f.nkey}, {"user", &c.User, f.user},
		{"tls-ca", &c.TLS.CA, f.tlsCA}, {"tls-cert", &c.TLS.Cert, f.tlsCert}, {"tls-key", &c.TLS.Key, f.tlsKey},
	} {
		if set[s.flag] {
			*s.dst = s.val
		}
	}
	for _, s := range []struct {
		inline, file string
		dst          *string
		val, path    string
	}{{"token", "token-file", &c.Token, f.token, f.tokenFile}, {"password", "password-file", &c.Password, f.password, f.passwordFile}} {
		switch {
		case set[s.inline] && set[s.file]:
			return fmt.Errorf("give --%s or --%s, not both", s.inline, s.file)
		case set[s.inline]:
			*s.dst = s.val
		case set[s.file]:
			v, err := readSecretFile("--"+s.file, s.path)
			if err != nil {
				return err
			}
			*s.dst = v
		}
	}
	for _, s := range []struct{ flag, path string }{{"creds", c.CredsFile}, {"nkey", c.NKeyFile}, {"tls-ca", c.TLS.CA}, {"tls-cert", c.TLS.Cert}, {"tls-key", c.TLS.Key}} {
		if set[s.flag] && s.path != "" {
			if err := readable(s.path); err != nil {
				return fmt.Errorf("--%s: %w", s.flag, err)
			}
		}
	}
	return nil
}

// readSecretFile returns the content of the secret file path without surrounding
// whitespace, as the configuration reads nats.token_file; an error names what (the
// flag) and path, never the content.
func readSecretFile(what, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("%s: %s is empty", what, path)
	}
	return v, nil
}

// readable reports why path cannot be opened for reading, or nil.
func readable(path string) error {
	fh, err := os.Open(path)
	if err != nil {
		return err
	}
	return fh.Close()
}

// credentialOrigins names where each credential in c comes from: the flag that set it
// or its key in the configuration file.
func (f natsFlags) credentialOrigins(c publish.Config, set map[string]bool) []string {
	var origins []string
	for _, k := range []struct {
		on         bool
		flags      []string
		configKeys string
	}{
		{c.CredsFile != "", []string{"creds"}, "nats.creds_file"},
		{c.NKeyFile != "", []string{"nkey"}, "nats.nkey_file"},
		{c.Token != "", []string{"token", "token-file"}, "nats.token"},
		{c.User != "", []string{"user", "password", "password-file"}, "nats.user and nats.password"},
		{c.TLS.Cert != "", []string{"tls-cert", "tls-key"}, "nats.tls.cert"},
	} {
		if !k.on {
			continue
		}
		var given []string
		for _, name := range k.flags {
			if set[name] {
				given = append(given, "--"+name)
			}
		}
		if len(given) == 0 {
			given = []string{k.configKeys + " in " + f.config}
		}
		origins = append(origins, strings.Join(given, " and "))
	}
	return origins
}

// validateAuth reports settings that cannot work together: a password without a user,
// a client certificate without its key or the other way round.
func validateAuth(c publish.Config, configFile string) error {
	orFile := ""
	if configFile != "" {
		orFile = " (nor nats.user in " + configFile + ")"
	}
	switch {
	case c.Password != "" && c.User == "":
		return fmt.Errorf("a NATS password is given without a user: give --user%s", orFile)
	case c.TLS.Cert != "" && c.TLS.Key == "":
		return fmt.Errorf("--tls-cert %s needs --tls-key", c.TLS.Cert)
	case c.TLS.Key != "" && c.TLS.Cert == "":
		return fmt.Errorf("--tls-key %s needs --tls-cert", c.TLS.Key)
	}
	return nil
}

// daemonURL is the server list the daemon with nats settings c connects to: c.URL, or
// for an embedded server the address it listens on, seen from this machine.
func daemonURL(c publish.Config) (string, error) {
	if c.URL != "" {
		return c.URL, nil
	}
	host, port, err := net.SplitHostPort(c.Embedded.Listen)
	if err != nil {
		return "", fmt.Errorf("nats.embedded.listen %q: %w", c.Embedded.Listen, err)
	}
	if port == "0" {
		return "", fmt.Errorf("nats.embedded.listen %q takes a free port at each start, so its URL is unknown here: give --nats", c.Embedded.Listen)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "nats://" + net.JoinHostPort(host, port), nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// connect connects to t.url as name, with the daemon's credential and TLS options
// (publish.ClientOptions), reconnecting forever once connected. A server that is not
// there or refuses the connection is an error naming the url (its credentials
// redacted), the cause and what to check; no secret appears in it.
func (t natsTarget) connect(name string) (*nats.Conn, error) {
	opts, err := publish.ClientOptions(t.nats)
	if err != nil {
		return nil, t.redact(err.Error(), err)
	}
	nc, err := nats.Connect(t.url, append(opts, nats.Name(name), nats.MaxReconnects(-1))...)
	if err != nil {
		msg := fmt.Sprintf("connect to NATS at %s: %v", publish.RedactURL(t.url), err)
		if hint := t.refusalHint(err); hint != "" {
			msg += "; " + hint
		}
		return nil, t.redact(msg, err)
	}
	return nc, nil
}

// refusalHint tells what to check when err means that the server refused the
// credentials or the TLS handshake; "" for other errors.
func (t natsTarget) refusalHint(err error) string {
	var (
		verify  *tls.CertificateVerificationError
		unknown x509.UnknownAuthorityError
		host    x509.HostnameError
	)
	switch {
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked):
		if len(t.credentials) == 0 && !strings.Contains(t.url, "@") {
			return "the server requires credentials: give --creds, --nkey, --token-file, --user with --password-file, or --config"
		}
		given := t.credentials
		if strings.Contains(t.url, "@") {
			given = append([]string{"the url"}, given...)
		}
		return "the server refused the credentials of " + strings.Join(given, ", ")
	case errors.Is(err, nats.ErrSecureConnRequired):
		return "the server requires TLS: give --tls-ca (or use a tls:// url)"
	case errors.Is(err, nats.ErrSecureConnWanted):
		return "TLS is asked for but the server does not offer it"
	case errors.As(err, &verify), errors.As(err, &unknown), errors.As(err, &host):
		return "the server's certificate is not trusted: give its CA with --tls-ca"
	}
	return ""
}

// redact returns an error with message msg, in which every secret of t (token,
// password, credentials in the url) is replaced, and that unwraps to cause.
func (t natsTarget) redact(msg string, cause error) error {
	var pairs []string
	add := func(secret string) {
		if secret != "" {
			pairs = append(pairs, secret, "[redacted]")
		}
	}
	for _, u := range strings.Split(t.url, ",") {
		at := strings.LastIndex(u, "@")
		if at < 0 {
			continue
		}
		info := u[:at]
		if i := strings.Index(info, "://"); i >= 0 {
			info = info[i+3:]
		}
		add(info) // user:password, or a token
		if dec, err := url.PathUnescape(info); err == nil && dec != info {
			add(dec)
		}
		if _, password, ok := strings.Cut(info, ":"); ok {
			add(password)
		}
	}
	add(t.nats.Token)
	add(t.nats.Password)
	return redactedError{msg: strings.NewReplacer(pairs...).Replace(msg), cause: cause}
}

// redactedError is an error whose message has had secrets removed; it unwraps to its
// cause for errors.Is and errors.As.
type redactedError struct {
	msg   string
	cause error
}

func (e redactedError) Error() string { return e.msg }
func (e redactedError) Unwrap() error { return e.cause }
