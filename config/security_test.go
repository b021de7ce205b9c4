package config

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/payments-watcher/watcher/internal/testcert"
	"github.com/payments-watcher/watcher/poller/provider"
)

// selfSigned returns the PEM of a fresh self-signed CA certificate.
func selfSigned(t *testing.T) []byte {
	t.Helper()
	return testcert.NewCA(t, "watcher test CA").PEM()
}

func files(m map[string][]byte) func(string) ([]byte, error) {
	return func(name string) ([]byte, error) {
		if b, ok := m[name]; ok {
			return b, nil
		}
		return nil, &os.PathError{Op: "open", Path: name, Err: os.ErrNotExist}
	}
}

func cpnSource(extra string) []byte {
	return []byte("sources:\n- name: a\n  provider: circle_cpn_payments\n  api_key: k\n" + extra)
}

func TestCAFile(t *testing.T) {
	ca := selfSigned(t)
	read := files(map[string][]byte{
		"ca.pem":     ca,
		"bundle.pem": append(append([]byte("# comment\n"), ca...), selfSigned(t)...),
		"key.pem":    append(append([]byte{}, ca...), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte{1}})...),
		"junk.pem":   []byte("not a certificate\n"),
		"bad.pem":    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("garbage")}),
	})
	cfg, err := Parse(cpnSource("  base_url: https://cpn.internal.example\n  ca_file: ca.pem\n"), testEnv(nil), read)
	if err != nil {
		t.Fatal(err)
	}
	if s := cfg.Sources[0]; s.CAFile != "ca.pem" || s.RootCAs == nil {
		t.Fatalf("ca_file gave %q, %v", s.CAFile, s.RootCAs)
	}
	out, err := cfg.Effective()
	if err != nil || !strings.Contains(string(out), "ca_file: ca.pem") {
		t.Fatalf("effective config (%v):\n%s", err, out)
	}
	if cfg, err := Parse(cpnSource("  base_url: https://cpn.internal.example\n  ca_file: bundle.pem\n"), testEnv(nil), read); err != nil || cfg.Sources[0].RootCAs == nil {
		t.Fatalf("bundle of two certificates: %v", err)
	}
	if cfg, err := Parse(cpnSource(""), testEnv(nil), read); err != nil || cfg.Sources[0].RootCAs != nil || cfg.Sources[0].CAFile != "" {
		t.Fatalf("without ca_file: %v", err)
	}

	for extra, want := range map[string]string{
		"  base_url: http://127.0.0.1:8089\n  ca_file: ca.pem\n": `sources[0].ca_file: applies only to an https base_url, not "http://127.0.0.1:8089"`,
		"  base_url: https://x.example\n  ca_file: none.pem\n":   `sources[0].ca_file: "none.pem" cannot be read: file does not exist`,
		"  base_url: https://x.example\n  ca_file: key.pem\n":    `sources[0].ca_file: "key.pem": PEM block 2 has type EC PRIVATE KEY; a ca_file holds certificates only`,
		"  base_url: https://x.example\n  ca_file: junk.pem\n":   `sources[0].ca_file: "junk.pem" holds no PEM certificate`,
		"  base_url: https://x.example\n  ca_file: bad.pem\n":    `sources[0].ca_file: "bad.pem": PEM block 1 is not a valid certificate: `,
	} {
		_, err := Parse(cpnSource(extra), testEnv(nil), read)
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s: %v\nwant %s", extra, err, want)
		}
	}
}

// TestCAFileTrustsPrivateCA runs the whole path: a ca_file holding a server's
// certificate makes the source's client trust that server, and nothing else does.
func TestCAFileTrustsPrivateCA(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok"))
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake
	srv.StartTLS()
	defer srv.Close()
	read := files(map[string][]byte{"ca.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})})
	fetch := func(s Source) error {
		c := provider.NewClient(provider.ClientOptions{BaseURL: s.Settings.BaseURL, RootCAs: s.RootCAs})
		req, _ := http.NewRequest(http.MethodGet, s.Settings.BaseURL+"/v1/payments", nil)
		_, _, err := c.Do(t.Context(), req, nil)
		return err
	}

	cfg, err := Parse(cpnSource("  base_url: "+srv.URL+"\n  ca_file: ca.pem\n"), testEnv(nil), read)
	if err != nil {
		t.Fatal(err)
	}
	if err := fetch(cfg.Sources[0]); err != nil {
		t.Fatalf("with ca_file: %v", err)
	}
	cfg, err = Parse(cpnSource("  base_url: "+srv.URL+"\n"), testEnv(nil), read)
	if err != nil {
		t.Fatal(err)
	}
	var ua x509.UnknownAuthorityError
	if err := fetch(cfg.Sources[0]); !errors.As(err, &ua) {
		t.Fatalf("without ca_file: %v; want the certificate refused", err)
	}
}

func TestPlainHTTPToAnotherHostWarns(t *testing.T) {
	for base, warn := range map[string]bool{
		"http://127.0.0.1:8089":             false,
		"http://localhost:8089":             false,
		"http://[::1]:8089":                 false,
		"https://api.circle.com":            false,
		"http://circle-proxy.internal:8080": true,
	} {
		cfg, err := Parse(cpnSource("  base_url: "+base+"\n"), testEnv(nil), readTestdata)
		if err != nil {
			t.Fatal(err)
		}
		want := []string(nil)
		if warn {
			want = []string{`sources[0].base_url: "` + base + `" is plain http to another host: the source's credentials and data travel unencrypted`}
		}
		if strings.Join(cfg.Warnings, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s: warnings %q, want %q", base, cfg.Warnings, want)
		}
	}
}

func TestLoadWarnsOfReadableSecretFiles(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("file modes are not permissions on Windows")
	}
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte("s3cr3t\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		return path
	}
	private := write("private.key", 0o600)
	readable := write("readable.key", 0o644)
	group := write("group.key", 0o640)
	hawk := write("hawk.key", 0o604)
	cfgPath := filepath.Join(dir, "watcher.yaml")
	doc := "nats:\n  token_file: " + group + "\nsources:\n" +
		"- name: a\n  provider: circle_cpn_payments\n  api_key_file: " + private + "\n" +
		"- name: b\n  provider: circle_cpn_payments\n  api_key_file: " + readable + "\n" +
		"- name: c\n  provider: coindirect_payments\n  hawk_id: id\n  hawk_key_file: " + hawk + "\n  merchant_id: m\n"
	if err := os.WriteFile(cfgPath, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`nats.token_file: "` + group + `" holds a secret but has mode 0640, so other users may read it; chmod 600 it`,
		`sources[1].api_key_file: "` + readable + `" holds a secret but has mode 0644, so other users may read it; chmod 600 it`,
		`sources[2].hawk_key_file: "` + hawk + `" holds a secret but has mode 0604, so other users may read it; chmod 600 it`,
	}
	if strings.Join(cfg.Warnings, "\n") != strings.Join(want, "\n") {
		t.Fatalf("warnings:\n%s\nwant:\n%s", strings.Join(cfg.Warnings, "\n"), strings.Join(want, "\n"))
	}
	if cfg.Sources[0].Settings.Value("api_key") != "s3cr3t" {
		t.Fatal("a readable secret file must still be used")
	}
}
