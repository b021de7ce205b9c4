package publish

import (
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	natsserver "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/payments-watcher/watcher/internal/logtest"
	"github.com/payments-watcher/watcher/internal/testcert"
)

func TestStartEmbedded(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nats")
	srv, err := StartEmbedded(Embedded{Listen: "127.0.0.1:0", StoreDir: dir}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopServer(srv) })

	// Another process's client: plain nats.go, JetStream usable.
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := EnsureStream(t.Context(), js, testConfig()); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(t.Context(), "payments.x.payment.pending", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "jetstream")); err != nil {
		t.Fatalf("JetStream store not in the store directory: %v", err)
	}
	// By default every message is synced to disk before its acknowledgement.
	if jc := srv.JetStreamConfig(); !jc.SyncAlways {
		t.Fatalf("embedded server syncs every %s, want always", jc.SyncInterval)
	}

	// The address is taken now.
	busy := srv.Addr().String()
	start := time.Now()
	_, err = StartEmbedded(Embedded{Listen: busy, StoreDir: t.TempDir()}, testLogger(t))
	if err == nil {
		t.Fatalf("second StartEmbedded on %s succeeded", busy)
	}
	if !strings.HasPrefix(err.Error(), "embedded NATS server on "+busy+": ") || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("error %q does not name the address and the cause", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("StartEmbedded took %s to report a busy port", d)
	}
}

func TestStartEmbeddedSyncInterval(t *testing.T) {
	srv, err := StartEmbedded(Embedded{Listen: "127.0.0.1:0", StoreDir: t.TempDir(), SyncInterval: 10 * time.Second}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopServer(srv) })
	if jc := srv.JetStreamConfig(); jc.SyncAlways || jc.SyncInterval != 10*time.Second {
		t.Fatalf("embedded server: sync always %t, interval %s; want an fsync every 10s", jc.SyncAlways, jc.SyncInterval)
	}
}

func TestStartEmbeddedBadListen(t *testing.T) {
	_, err := StartEmbedded(Embedded{Listen: "localhost", StoreDir: t.TempDir()}, nil)
	if err == nil || !strings.Contains(err.Error(), `listen "localhost"`) {
		t.Fatalf("StartEmbedded with a bad address: %v, want an error naming it", err)
	}
}

func TestConnectNameAndQuietLogs(t *testing.T) {
	opts := natsserver.DefaultTestOptions
	opts.Port = -1
	opts.Username, opts.Password = "watcher-user", "pa55-secret"
	srv := natsserver.RunServer(&opts)
	t.Cleanup(func() { stopServer(srv) })

	var logs logtest.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := testConfig()
	c.User, c.Password = "watcher-user", "pa55-secret"
	nc, err := Connect(srv.ClientURL(), c, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if err := nc.Flush(); err != nil {
		t.Fatalf("authenticated connection: %v", err)
	}
	cz, err := srv.Connz(&server.ConnzOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(cz.Conns) != 1 || cz.Conns[0].Name != "watcher" {
		t.Fatalf("server sees connections %+v, want one named watcher", cz.Conns)
	}

	// Credentials in the URL (here a wrong password) never reach the logs.
	port := strconv.Itoa(srv.Addr().(*net.TCPAddr).Port)
	bad, err := Connect("nats://watcher-user:wrong-pa55@127.0.0.1:"+port, testConfig(), log)
	if err != nil {
		t.Fatal(err)
	}
	bad.Close()
	nc.Close()
	if !strings.Contains(logs.String(), "Authorization Violation") {
		t.Fatalf("logs do not tell the refusal:\n%s", logs.String())
	}
	for _, secret := range []string{"pa55-secret", "wrong-pa55"} {
		if strings.Contains(logs.String(), secret) {
			t.Fatalf("logs show a password:\n%s", logs.String())
		}
	}
}

// authAttempt is a connection attempt of TestConnectAuth: a URL (the server's when
// url is nil) and a configuration.
type authAttempt struct {
	name string
	url  func(base string) string
	c    Config
	want string // in the error of a refused attempt
}

func TestConnectAuth(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	with := func(f func(*Config)) Config {
		c := testConfig()
		f(&c)
		return c
	}
	const refused = "nats: Authorization Violation; "
	const noneGiven = "the server requires credentials and none is configured"

	// NKey users: the seed of one the server knows, and of one it does not.
	nkeyUser := newUserKey(t)
	nkeyPub, _ := nkeyUser.PublicKey()
	nkeySeed, _ := nkeyUser.Seed()
	strangerSeed, _ := newUserKey(t).Seed()

	// Operator mode: a user of an account the server resolves, and one of an account it
	// does not.
	operator, account := newKey(t, nkeys.CreateOperator), newKey(t, nkeys.CreateAccount)
	operatorClaims := jwt.NewOperatorClaims(publicKey(t, operator))
	operatorJWT := encode(t, operatorClaims, operator)
	accountJWT := encode(t, jwt.NewAccountClaims(publicKey(t, account)), operator)
	goodCreds, goodCredsSeed := userCreds(t, account)
	badCreds, badCredsSeed := userCreds(t, newKey(t, nkeys.CreateAccount))

	// TLS: a CA the server trusts for clients and its own certificate, and another CA.
	ca := testcert.NewCA(t, "watcher test CA")
	other := testcert.NewCA(t, "other CA")
	serverCert, serverKey := ca.Issue(t, dir, "server", true)
	clientCert, clientKey := ca.Issue(t, dir, "client", false)
	strangerCert, strangerKey := other.Issue(t, dir, "stranger", false)
	caFile, otherCAFile := ca.Write(t, dir, "ca.pem"), other.Write(t, dir, "other-ca.pem")

	for _, tt := range []struct {
		name    string
		server  func(o *server.Options)
		good    Config
		bad     []authAttempt
		secrets []string
		tlsURL  bool
	}{
		{
			name:   "user and password",
			server: func(o *server.Options) { o.Username, o.Password = "watcher-user", "pa55-secret" },
			good:   with(func(c *Config) { c.User, c.Password = "watcher-user", "pa55-secret" }),
			bad: []authAttempt{
				{name: "wrong password", c: with(func(c *Config) { c.User, c.Password = "watcher-user", "wrong-pa55" }),
					want: refused + "the server refused the credentials of nats.user and nats.password"},
				{name: "wrong password in the url", url: func(base string) string {
					return strings.Replace(base, "nats://", "nats://watcher-user:wrong-pa55@", 1)
				},
					c: testConfig(), want: refused + "the server refused the credentials of nats.url"},
				{name: "none", c: testConfig(), want: refused + noneGiven},
			},
			secrets: []string{"pa55-secret", "wrong-pa55"},
		},
		{
			name:   "token",
			server: func(o *server.Options) { o.Authorization = "tok-3141-secret" },
			good:   with(func(c *Config) { c.Token = "tok-3141-secret" }),
			bad: []authAttempt{
				{name: "wrong", c: with(func(c *Config) { c.Token = "tok-2718-wrong" }), want: refused + "the server refused the credentials of nats.token"},
				{name: "none", c: testConfig(), want: refused + noneGiven},
			},
			secrets: []string{"tok-3141-secret", "tok-2718-wrong"},
		},
		{
			name:   "nkey seed file",
			server: func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: nkeyPub}} },
			good:   with(func(c *Config) { c.NKeyFile = write("user.nk", string(nkeySeed)) }),
			bad: []authAttempt{
				{name: "unknown user", c: with(func(c *Config) { c.NKeyFile = write("stranger.nk", string(strangerSeed)) }),
					want: refused + "the server refused the credentials of nats.nkey_file"},
				{name: "none", c: testConfig(), want: refused + noneGiven},
			},
			secrets: []string{string(nkeySeed), string(strangerSeed)},
		},
		{
			name: "creds file",
			server: func(o *server.Options) {
				oc, err := jwt.DecodeOperatorClaims(operatorJWT)
				if err != nil {
					t.Fatal(err)
				}
				resolver := &server.MemAccResolver{}
				if err := resolver.Store(publicKey(t, account), accountJWT); err != nil {
					t.Fatal(err)
				}
				o.TrustedOperators, o.AccountResolver = []*jwt.OperatorClaims{oc}, resolver
			},
			good: with(func(c *Config) { c.CredsFile = write("user.creds", goodCreds) }),
			bad: []authAttempt{
				{name: "user of an unknown account", c: with(func(c *Config) { c.CredsFile = write("stranger.creds", badCreds) }),
					want: refused + "the server refused the credentials of nats.creds_file"},
				{name: "none", c: testConfig(), want: refused + noneGiven},
			},
			secrets: []string{goodCredsSeed, badCredsSeed},
		},
		{
			name: "TLS with a client certificate",
			server: func(o *server.Options) {
				tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: serverCert, KeyFile: serverKey, CaFile: caFile, Verify: true})
				if err != nil {
					t.Fatal(err)
				}
				o.TLS, o.TLSVerify, o.TLSConfig, o.TLSTimeout = true, true, tc, 5
			},
			good: with(func(c *Config) { c.TLS = TLS{CA: caFile, Cert: clientCert, Key: clientKey} }),
			bad: []authAttempt{
				{name: "certificate of another CA", c: with(func(c *Config) { c.TLS = TLS{CA: caFile, Cert: strangerCert, Key: strangerKey} }),
					want: "the server refused the TLS handshake: check nats.tls.cert and nats.tls.key"},
				{name: "no certificate", c: with(func(c *Config) { c.TLS = TLS{CA: caFile} }),
					want: "the server refused the TLS handshake; it may require a client certificate (nats.tls.cert and nats.tls.key)"},
				{name: "server not trusted", c: with(func(c *Config) { c.TLS = TLS{CA: otherCAFile, Cert: clientCert, Key: clientKey} }),
					want: "the server's certificate is not trusted: check nats.tls.ca"},
			},
			tlsURL: true,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := natsserver.DefaultTestOptions
			opts.Port = -1
			tt.server(&opts)
			srv := natsserver.RunServer(&opts)
			t.Cleanup(func() { stopServer(srv) })
			base := "nats://127.0.0.1:" + strconv.Itoa(srv.Addr().(*net.TCPAddr).Port)
			if tt.tlsURL {
				base = strings.Replace(base, "nats://", "tls://", 1)
			}

			nc, err := Connect(base, tt.good, testLogger(t))
			if err != nil {
				t.Fatalf("Connect with the right credential: %v", err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatalf("connection with the right credential: %v", err)
			}
			nc.Close()

			for _, a := range tt.bad {
				t.Run(a.name, func(t *testing.T) {
					t.Parallel()
					url := base
					if a.url != nil {
						url = a.url(base)
					}
					var logs logtest.Buffer
					nc, err := Connect(url, a.c, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
					if err != nil {
						t.Fatalf("Connect: %v; a refused connection is retried in the background, not an error", err)
					}
					defer nc.Close()
					if nc.IsConnected() {
						t.Fatal("connected")
					}
					// Connect logs the refusal: the url without credentials, the cause, what
					// to check.
					where := "nats " + RedactURL(url) + ": "
					if a.url != nil && !strings.Contains(where, "nats://redacted@127.0.0.1:") {
						t.Fatalf("redactURL(%q) = %q", url, RedactURL(url))
					}
					if line := errorLine(logs.String()); !strings.Contains(line, where) || !strings.Contains(line, a.want) {
						t.Errorf("log of the refusal %q does not name %q and say %q; logs:\n%s", line, where, a.want, logs.String())
					}
					// Healthy tells it too, once nats.go has given up or retried (for a
					// client certificate refused after a TLS 1.3 handshake it may only
					// see the connection closed).
					js, err := jetstream.New(nc)
					if err != nil {
						t.Fatal(err)
					}
					p := New(js, newOutbox(t), a.c, Options{}, nil)
					wantHealth := []string{"nats: not connected (", ") to " + RedactURL(url) + ": ", a.want}
					if tt.tlsURL {
						wantHealth = wantHealth[:1]
					}
					var health error
					waitFor(t, "Healthy to report the refusal", func() bool {
						health = p.Healthy()
						if health == nil {
							return false
						}
						for _, w := range wantHealth {
							if !strings.Contains(health.Error(), w) {
								return false
							}
						}
						return true
					})
					for _, secret := range tt.secrets {
						if strings.Contains(logs.String(), secret) || strings.Contains(health.Error(), secret) {
							t.Errorf("a secret shows in Healthy %q or in the logs:\n%s", health, logs.String())
						}
					}
				})
			}
		})
	}
}

// errorLine returns the first log line at level ERROR in logs.
func errorLine(logs string) string {
	for line := range strings.Lines(logs) {
		if strings.Contains(line, "level=ERROR") {
			return line
		}
	}
	return ""
}

// newKey returns a new key pair made by create.
func newKey(t testing.TB, create func() (nkeys.KeyPair, error)) nkeys.KeyPair {
	t.Helper()
	kp, err := create()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func newUserKey(t testing.TB) nkeys.KeyPair { return newKey(t, nkeys.CreateUser) }

func publicKey(t testing.TB, kp nkeys.KeyPair) string {
	t.Helper()
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func encode(t testing.TB, c interface {
	Encode(nkeys.KeyPair) (string, error)
}, signer nkeys.KeyPair) string {
	t.Helper()
	s, err := c.Encode(signer)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// userCreds returns the .creds content of a new user of account, and the user's seed.
func userCreds(t testing.TB, account nkeys.KeyPair) (creds, seed string) {
	t.Helper()
	user := newUserKey(t)
	userJWT := encode(t, jwt.NewUserClaims(publicKey(t, user)), account)
	s, err := user.Seed()
	if err != nil {
		t.Fatal(err)
	}
	b, err := jwt.FormatUserConfig(userJWT, s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), string(s)
}

func TestConnectBadFiles(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	for _, tt := range []struct {
		name string
		c    Config
		want string
	}{
		{"creds", Config{CredsFile: missing}, "nats.creds_file: open " + missing},
		{"nkey", Config{NKeyFile: missing}, "nats.nkey_file " + missing + ": "},
		{"tls", Config{TLS: TLS{CA: missing}}, "nats 127.0.0.1:1: connect: "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			nc, err := Connect("127.0.0.1:1", tt.c, nil)
			if err == nil {
				nc.Close()
				t.Fatal("Connect succeeded")
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("error %q, want it to start with %q", err, tt.want)
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                    "nats://127.0.0.1:4222",
		"nats://user:pass@a:4222,tls://tok@b:4222": "nats://redacted@a:4222,tls://redacted@b:4222",
		"user:p@ss@host:4222":                      "redacted@host:4222",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
