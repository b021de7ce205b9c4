package publish

import (
	"bytes"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsserver "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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

func TestStartEmbeddedBadListen(t *testing.T) {
	_, err := StartEmbedded(Embedded{Listen: "localhost", StoreDir: t.TempDir()}, nil)
	if err == nil || !strings.Contains(err.Error(), `listen "localhost"`) {
		t.Fatalf("StartEmbedded with a bad address: %v, want an error naming it", err)
	}
}

func TestConnectAuthAndName(t *testing.T) {
	opts := natsserver.DefaultTestOptions
	opts.Port = -1
	opts.Username, opts.Password = "watcher-user", "pa55-secret"
	srv := natsserver.RunServer(&opts)
	t.Cleanup(func() { stopServer(srv) })

	var logs syncBuffer
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
	if err == nil {
		bad.Close()
	}
	if err != nil && strings.Contains(err.Error(), "wrong-pa55") {
		t.Fatalf("error shows the password: %v", err)
	}
	nc.Close()
	for _, secret := range []string{"pa55-secret", "wrong-pa55"} {
		if strings.Contains(logs.String(), secret) {
			t.Fatalf("logs show a password:\n%s", logs.String())
		}
	}
}

func TestConnectToken(t *testing.T) {
	opts := natsserver.DefaultTestOptions
	opts.Port = -1
	opts.Authorization = "tok-3141"
	srv := natsserver.RunServer(&opts)
	t.Cleanup(func() { stopServer(srv) })

	var logs syncBuffer
	c := testConfig()
	c.Token = "tok-3141"
	nc, err := Connect(srv.ClientURL(), c, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.Flush(); err != nil {
		t.Fatalf("token connection: %v", err)
	}
	if strings.Contains(logs.String(), "tok-3141") {
		t.Fatalf("logs show the token:\n%s", logs.String())
	}
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
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
