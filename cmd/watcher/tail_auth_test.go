package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsserver "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"

	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/internal/logtest"
	"github.com/payments-watcher/watcher/internal/natstest"
	"github.com/payments-watcher/watcher/internal/testcert"
	"github.com/payments-watcher/watcher/publish"
)

// tailTestToken is the token the TLS-only test server requires.
const tailTestToken = "tok-5150-do-not-print"

// secureNATS is a JetStream server that accepts only TLS connections presenting a
// token, with one event in the stream PAYMENT_EVENTS.
type secureNATS struct {
	srv       *server.Server
	url       string // nats://127.0.0.1:PORT
	caFile    string // the CA that signed the server's certificate
	tokenFile string // holds tailTestToken
	dir       string
}

func startSecureNATS(t *testing.T) *secureNATS {
	t.Helper()
	dir := t.TempDir()
	ca := testcert.NewCA(t, "watcher tail test CA")
	certFile, keyFile := ca.Issue(t, dir, "server", true)
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	opts := natsserver.DefaultTestOptions
	opts.Port, opts.JetStream, opts.StoreDir = -1, true, filepath.Join(dir, "js")
	opts.TLS, opts.TLSConfig, opts.TLSTimeout = true, tc, 5
	opts.Authorization = tailTestToken
	srv := natsserver.RunServer(&opts)
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })

	s := &secureNATS{srv: srv, url: fmt.Sprintf("nats://127.0.0.1:%d", srv.Addr().(*net.TCPAddr).Port),
		caFile: ca.Write(t, dir, "ca.pem"), tokenFile: filepath.Join(dir, "token"), dir: dir}
	if err := os.WriteFile(s.tokenFile, []byte(tailTestToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.publishEvent(t)
	return s
}

// publishEvent stores one failed cpn payment, p7, in PAYMENT_EVENTS.
func (s *secureNATS) publishEvent(t *testing.T) {
	t.Helper()
	js := natstest.Connect(t, s.url, nats.RootCAs(s.caFile), nats.Token(tailTestToken))
	ensurePaymentEvents(t, js)
	e := event.Event{SpecVersion: event.SpecVersion, Type: event.Type, ID: "e7", Time: time.Date(2026, 11, 22, 10, 0, 3, 0, time.UTC),
		Data: event.Data{Source: "cpn", Kind: "payment", ID: "p7", Current: event.Status{Status: "FAILED", State: "failed"}}}
	body, _ := json.Marshal(e)
	if _, err := js.Publish(t.Context(), event.Subject("payments", "cpn", "payment", "failed"), body); err != nil {
		t.Fatal(err)
	}
}

// writeConfig writes a daemon configuration whose nats: block is natsBlock (indented
// under nats:) and returns its path.
func (s *secureNATS) writeConfig(t *testing.T, natsBlock string) string {
	t.Helper()
	path := filepath.Join(s.dir, "watcher.yaml")
	cfg := "nats:\n" + natsBlock + `sources:
  - name: cpn
    provider: circle_cpn_payments
    api_key: sk-unused
`
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// tailFirstLine runs `watcher tail --all` with args and returns the first line it
// prints, then stops it; it fails the test when tail ends first or prints nothing
// within 10s.
func tailFirstLine(t *testing.T, args ...string) string {
	t.Helper()
	out := &lineWriter{lines: make(chan string, 16)}
	var errOut logtest.Buffer
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, append([]string{"tail", "--all"}, args...), out, &errOut) }()
	select {
	case l := <-out.lines:
		cancel()
		if err := <-done; err != nil {
			t.Errorf("tail after being stopped: %v", err)
		}
		return l
	case err := <-done:
		t.Fatalf("tail %q ended: %v; stderr %q", args, err, errOut.String())
	case <-time.After(10 * time.Second):
		t.Fatalf("tail %q printed nothing in 10s; stderr %q", args, errOut.String())
	}
	return ""
}

func checkTailLine(t *testing.T, line string) {
	t.Helper()
	if !strings.HasPrefix(line, "2026-11-22T10:00:03Z  cpn") || !strings.Contains(line, "p7") || !strings.Contains(line, "(new) -> FAILED  failed") {
		t.Errorf("tail printed %q, want the failed payment p7", line)
	}
}

func TestTailTLSAndTokenFlags(t *testing.T) {
	s := startSecureNATS(t)
	checkTailLine(t, tailFirstLine(t, "--nats", s.url, "--tls-ca", s.caFile, "--token-file", s.tokenFile))
	// The token on the command line works too (the help discourages it).
	checkTailLine(t, tailFirstLine(t, "--nats", s.url, "--tls-ca", s.caFile, "--token", tailTestToken))
}

func TestTailConfigConnectsAsTheDaemon(t *testing.T) {
	s := startSecureNATS(t)
	cfg := s.writeConfig(t, fmt.Sprintf("  url: %s\n  token_file: %s\n  tls:\n    ca: %s\n", s.url, s.tokenFile, s.caFile))
	checkTailLine(t, tailFirstLine(t, "--config", cfg))

	// Flags replace the file's settings: a file whose token is wrong, corrected by
	// --token-file.
	wrong := filepath.Join(s.dir, "wrong-token")
	if err := os.WriteFile(wrong, []byte("tok-0000-wrong"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg = s.writeConfig(t, fmt.Sprintf("  url: nats://127.0.0.1:1\n  token_file: %s\n  tls:\n    ca: %s\n", wrong, s.caFile))
	checkTailLine(t, tailFirstLine(t, "--config", cfg, "--nats", s.url, "--token-file", s.tokenFile))
}

func TestTailNATSURLFromEnvironment(t *testing.T) {
	s := startSecureNATS(t)
	t.Setenv("NATS_URL", s.url)
	checkTailLine(t, tailFirstLine(t, "--tls-ca", s.caFile, "--token-file", s.tokenFile))
	// --nats wins over NATS_URL.
	t.Setenv("NATS_URL", "nats://127.0.0.1:1")
	checkTailLine(t, tailFirstLine(t, "--nats", s.url, "--tls-ca", s.caFile, "--token-file", s.tokenFile))
}

func TestTailRefusedTokenNamesTheServerNotTheToken(t *testing.T) {
	s := startSecureNATS(t)
	wrong := filepath.Join(s.dir, "wrong-token")
	if err := os.WriteFile(wrong, []byte("tok-0000-wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := strings.TrimPrefix(s.url, "nats://127.0.0.1:")
	for _, c := range []struct {
		name   string
		args   []string
		says   []string
		secret string
	}{
		{"token file", []string{"--nats", s.url, "--tls-ca", s.caFile, "--token-file", wrong},
			[]string{"connect to NATS at " + s.url + ": ", "Authorization Violation", "the server refused the credentials of --token-file"}, "tok-0000-wrong"},
		{"token flag", []string{"--nats", s.url, "--tls-ca", s.caFile, "--token", "tok-1111-wrong"},
			[]string{"connect to NATS at " + s.url + ": ", "the server refused the credentials of --token"}, "tok-1111-wrong"},
		{"token in the url", []string{"--nats", "nats://tok-2222-wrong@127.0.0.1:" + port, "--tls-ca", s.caFile},
			[]string{"connect to NATS at nats://redacted@127.0.0.1:" + port + ": ", "the server refused the credentials of the url"}, "tok-2222-wrong"},
		{"no token", []string{"--nats", s.url, "--tls-ca", s.caFile},
			[]string{"connect to NATS at " + s.url + ": ", "the server requires credentials: give --creds, --nkey, --token-file"}, tailTestToken},
		// nats.go upgrades to the TLS the server requires, and cannot verify it.
		{"no CA", []string{"--nats", s.url, "--token-file", s.tokenFile},
			[]string{"connect to NATS at " + s.url + ": ", "the server's certificate is not trusted: give its CA with --tls-ca"}, tailTestToken},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, errOut, code := runCLI(t, append([]string{"tail", "--all"}, c.args...)...)
			if code != 1 || out != "" {
				t.Errorf("exit %d, stdout %q; want 1 and nothing", code, out)
			}
			for _, s := range c.says {
				if !strings.Contains(errOut, s) {
					t.Errorf("stderr %q does not say %q", errOut, s)
				}
			}
			if strings.Contains(errOut, c.secret) {
				t.Errorf("stderr shows the token: %q", errOut)
			}
		})
	}
}

func TestTailConnectionSettings(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	tokenFile, empty := write("token", " tok-42 \n"), write("empty", "\n")
	embedded := write("embedded.yaml", "nats:\n  embedded:\n    listen: 0.0.0.0:4333\n  stream: EVENTS\n  subject_prefix: acme.pay\n  user: watcher\n  password: pw-secret\n"+
		"sources:\n  - name: cpn\n    provider: circle_cpn_payments\n    api_key: sk-x\n")
	noEnv := func(string) string { return "" }
	env := func(k string) string {
		if k == "NATS_URL" {
			return "nats://from-env:4222"
		}
		return ""
	}
	for _, c := range []struct {
		name   string
		f      natsFlags
		set    []string
		getenv func(string) string
		url    string
		check  func(publish.Config) bool
		err    string
	}{
		{name: "default", getenv: noEnv, url: nats.DefaultURL},
		{name: "NATS_URL", getenv: env, url: "nats://from-env:4222"},
		{name: "--nats over NATS_URL", f: natsFlags{url: "nats://flag:4222"}, set: []string{"nats"}, getenv: env, url: "nats://flag:4222"},
		{name: "embedded config over NATS_URL", f: natsFlags{config: embedded}, getenv: env, url: "nats://127.0.0.1:4333",
			check: func(c publish.Config) bool {
				return c.Stream == "EVENTS" && c.SubjectPrefix == "acme.pay" && c.User == "watcher" && c.Password == "pw-secret"
			}},
		{name: "token file trimmed", f: natsFlags{tokenFile: tokenFile}, set: []string{"token-file"}, getenv: noEnv, url: nats.DefaultURL,
			check: func(c publish.Config) bool { return c.Token == "tok-42" }},
		{name: "password flag over the file's", f: natsFlags{config: embedded, password: "pw-flag"}, set: []string{"password"}, getenv: noEnv, url: "nats://127.0.0.1:4333",
			check: func(c publish.Config) bool { return c.User == "watcher" && c.Password == "pw-flag" }},
		{name: "token and token file", f: natsFlags{token: "t", tokenFile: tokenFile}, set: []string{"token", "token-file"}, getenv: noEnv,
			err: "give --token or --token-file, not both"},
		{name: "empty token file", f: natsFlags{tokenFile: empty}, set: []string{"token-file"}, getenv: noEnv, err: "--token-file: " + empty + " is empty"},
		{name: "missing token file", f: natsFlags{tokenFile: filepath.Join(dir, "none")}, set: []string{"token-file"}, getenv: noEnv, err: "--token-file: open " + filepath.Join(dir, "none")},
		{name: "missing CA", f: natsFlags{tlsCA: filepath.Join(dir, "ca.pem")}, set: []string{"tls-ca"}, getenv: noEnv, err: "--tls-ca: open " + filepath.Join(dir, "ca.pem")},
		{name: "password without user", f: natsFlags{password: "pw-secret"}, set: []string{"password"}, getenv: noEnv, err: "a NATS password is given without a user"},
		{name: "certificate without key", f: natsFlags{tlsCert: tokenFile}, set: []string{"tls-cert"}, getenv: noEnv, err: "needs --tls-key"},
	} {
		t.Run(c.name, func(t *testing.T) {
			set := map[string]bool{}
			for _, s := range c.set {
				set[s] = true
			}
			target, err := c.f.resolve(set, c.getenv)
			switch {
			case c.err != "":
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want %q", err, c.err)
				}
				for _, secret := range []string{"pw-secret", "tok-42"} {
					if strings.Contains(err.Error(), secret) {
						t.Errorf("error %q shows a secret", err)
					}
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			if target.url != c.url {
				t.Errorf("url %q, want %q", target.url, c.url)
			}
			if c.check != nil && !c.check(target.nats) {
				t.Errorf("settings %+v", target.nats)
			}
		})
	}

	// An embedded server on a port picked at each start cannot be found.
	random := write("random.yaml", "nats:\n  embedded:\n    listen: 127.0.0.1:0\nsources:\n  - name: cpn\n    provider: circle_cpn_payments\n    api_key: sk-x\n")
	if _, err := (natsFlags{config: random}).resolve(nil, noEnv); err == nil || !strings.Contains(err.Error(), "give --nats") {
		t.Errorf("embedded listen port 0: %v", err)
	}
}
