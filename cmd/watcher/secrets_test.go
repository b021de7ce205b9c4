package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	natsserver "github.com/nats-io/nats-server/v2/test"

	"github.com/payments-watcher/watcher/config"
	"github.com/payments-watcher/watcher/internal/logtest"
)

// Credentials distinctive enough that any copy of them, whole or in part, is found.
const (
	secretCPN         = "cpnSECRET-1a2b3c4d5e"
	secretRampPart    = "rampSECRET5e6f7a8b9c"
	secretRamp        = "TEST_API_KEY:ramp-entity:" + secretRampPart
	secretSettlements = "settleSECRET-9c0d1e2f"
	secretStripe      = "sk_test_stripeSECRET12345678"
	secretHawk        = "hawkSECRET-77aa88bb99"
	secretNATSPass    = "natsSECRET-password"
	secretNATSToken   = "natsSECRET-token"
)

var allSecrets = []string{secretCPN, secretRamp, secretRampPart, secretSettlements, secretStripe, secretHawk,
	secretNATSPass, secretNATSToken}

// hostileProvider answers every provider API with errors whose bodies and headers
// echo the credentials the request carried, where a provider might: in error
// messages, parameters and request ids.
type hostileProvider struct {
	mu    sync.Mutex
	calls map[string]int
}

// hostileSetup starts a hostileProvider, puts secretCPN in LEAK_CPN_KEY and writes
// secretHawk in hawk.key of the directory it returns.
func hostileSetup(t *testing.T) (prov *hostileProvider, url, dir string) {
	t.Helper()
	prov = &hostileProvider{calls: map[string]int{}}
	srv := httptest.NewServer(prov)
	t.Cleanup(srv.Close)
	dir = t.TempDir()
	t.Setenv("LEAK_CPN_KEY", secretCPN)
	if err := os.WriteFile(filepath.Join(dir, "hawk.key"), []byte(secretHawk+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return prov, srv.URL, dir
}

func (h *hostileProvider) count(path string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls[path]
}

func (h *hostileProvider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.calls[r.URL.Path]++
	n := h.calls[r.URL.Path]
	h.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	auth := r.Header.Get("Authorization")
	switch r.URL.Path {
	case "/v1/cpn/payments":
		w.Header().Set("X-Request-Id", "req-"+strings.TrimPrefix(auth, "Bearer ")[:6])
		w.WriteHeader(401)
		fmt.Fprintf(w, `{"code":401,"message":"Invalid credentials: %s"}`, strings.TrimPrefix(auth, "Bearer "))
	case "/v1/w3s/ramp/sessions":
		w.WriteHeader(403)
		fmt.Fprintf(w, `{"code":403,"message":"entity secret %s is not allowed; key %s"}`, secretRampPart, strings.TrimPrefix(auth, "Bearer "))
	case "/v1/exchange/trades/settlements":
		key := strings.TrimPrefix(auth, "Bearer ")
		switch n % 4 {
		case 1:
			w.WriteHeader(429)
			fmt.Fprintf(w, `{"code":429,"message":"too many requests for %s"}`, key)
		case 2:
			w.WriteHeader(500)
			fmt.Fprintf(w, `{"code":500,"message":"internal error handling %s"}`, key)
		case 3:
			fmt.Fprintf(w, `{"data":[{"id":"%s","status":"pend`, key) // cut short
		default:
			fmt.Fprintf(w, `{"data":%q}`, key)
		}
	case "/v1/crypto/onramp_sessions":
		w.WriteHeader(401)
		fmt.Fprintf(w, `{"error":{"type":"invalid_request_error","code":"api_key_invalid","message":"Invalid API Key provided: %s","param":%q}}`,
			secretStripe, auth)
	case "/api/v1/pay/summary":
		w.WriteHeader(401)
		fmt.Fprintf(w, `{"errorList":[{"parameter":%q,"message":"bad mac for key %s","code":401}]}`, auth, secretHawk)
	default:
		w.WriteHeader(404)
	}
}

func TestNoSecretInAnyOutput(t *testing.T) {
	for _, tc := range []struct {
		name string
		// natsAuth configures the server; watcher's nats settings then fail it.
		serverUser, serverPass, serverToken string
		natsYAML                            func(port string) string
	}{
		{"user and password", "watcher", "right-password", "", func(port string) string {
			return fmt.Sprintf("  url: nats://127.0.0.1:%s\n  user: watcher\n  password: %s\n", port, secretNATSPass)
		}},
		{"token", "", "", "right-token", func(port string) string {
			return fmt.Sprintf("  url: nats://127.0.0.1:%s\n  token: %s\n", port, secretNATSToken)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prov, provURL, dir := hostileSetup(t)
			opts := natsserver.DefaultTestOptions
			opts.Port, opts.JetStream, opts.StoreDir = -1, true, t.TempDir()
			opts.Username, opts.Password, opts.Authorization = tc.serverUser, tc.serverPass, tc.serverToken
			ns := natsserver.RunServer(&opts)
			defer stopNATS(ns)

			cfg := fmt.Sprintf(`state:
  path: %[1]s/watcher.db
nats:
%[2]shttp:
  listen: 127.0.0.1:0
admin:
  listen: 127.0.0.1:0
sources:
  - name: cpn
    provider: circle_cpn_payments
    base_url: %[3]s
    api_key: ${LEAK_CPN_KEY}
    interval: 200ms
  - name: ramp
    provider: circle_ramp_sessions
    base_url: %[3]s
    api_key: %[4]s
    interval: 200ms
  - name: settlements
    provider: circle_exchange_settlements
    base_url: %[3]s
    api_key: %[5]s
    interval: 200ms
  - name: onramp
    provider: stripe_crypto_onramp_sessions
    base_url: %[3]s
    api_key: %[6]s
    interval: 200ms
  - name: coindirect
    provider: coindirect_payments
    base_url: %[3]s
    hawk_id: hawk-id-1
    hawk_key_file: %[1]s/hawk.key
    merchant_id: 6f0b4c1e-2d3a-4b5c-8d9e-0a1b2c3d4e5f
    interval: 200ms
`, dir, tc.natsYAML(portOf(ns.Addr().String())), provURL, secretRamp, secretSettlements, secretStripe)
			cfgPath := filepath.Join(dir, "watcher.yaml")
			if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}

			var outputs []string // every text a user or a scraper can see
			var logs logtest.Buffer
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				done <- run(ctx, []string{"run", "--config", cfgPath, "--log-format", "json", "--log-level", "debug"}, &logs, &logs)
			}()
			addr := ""
			eventually(t, func() string {
				if i := strings.Index(logs.String(), `"addr":"`); i >= 0 {
					rest := logs.String()[i+len(`"addr":"`):]
					addr = rest[:strings.IndexByte(rest, '"')]
					return ""
				}
				return "the HTTP address in the logs"
			})
			var ready string
			eventually(t, func() string {
				_, ready = get(t, "http://"+addr+"/readyz")
				for _, want := range []string{"nats: ", "source cpn:", "source ramp:", "source onramp:", "source coindirect:", "source settlements:"} {
					if !strings.Contains(ready, want) {
						return fmt.Sprintf("/readyz naming %q:\n%s", want, ready)
					}
				}
				if n := prov.count("/v1/exchange/trades/settlements"); n < 5 {
					return fmt.Sprintf("every settlements error answer (%d requests so far)", n)
				}
				return ""
			})
			outputs = append(outputs, ready)
			for _, path := range []string{"/metrics", "/healthz", "/state/sources", "/state/outbox"} {
				_, body := get(t, "http://"+addr+path)
				outputs = append(outputs, body)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("run: %v", err)
			}
			outputs = append(outputs, logs.String())

			// The failures really happened, and were told.
			for _, want := range []string{"HTTP 401", "HTTP 403", "HTTP 429", "HTTP 500", "malformed response", "uthorization"} {
				if !strings.Contains(logs.String(), want) {
					t.Errorf("logs never mention %q:\n%s", want, logs.String())
				}
			}

			for _, args := range [][]string{{"config", "check", "--config", cfgPath}, {"--help"}, {"run", "-h"}, {"state", "-h"}, {"state", "sources", "--config", cfgPath}} {
				var out, errOut bytes.Buffer
				err := run(t.Context(), args, &out, &errOut)
				outputs = append(outputs, out.String(), errOut.String())
				if err != nil {
					outputs = append(outputs, err.Error())
				}
			}
			for _, o := range outputs {
				for _, s := range allSecrets {
					if i := strings.Index(o, s); i >= 0 {
						t.Errorf("%q shown: …%s…", s, o[max(0, i-200):min(len(o), i+len(s)+40)])
					}
				}
			}
		})
	}
}

// portOf returns the port of a host:port address.
func portOf(addr string) string { return addr[strings.LastIndex(addr, ":")+1:] }

// TestSecretsOfHidesEncodedForms: a provider's error may echo a credential as it was
// sent, Basic authentication's base64 of "key:" included.
func TestSecretsOfHidesEncodedForms(t *testing.T) {
	cfg, err := config.Parse([]byte(`
state: {path: w.db}
sources:
  - name: onramp
    provider: stripe_crypto_onramp_sessions
    api_key: sk_test_redactMe0000000000000000
`), func(string) (string, bool) { return "", false }, os.ReadFile)
	if err != nil {
		t.Fatal(err)
	}
	r := secretsOf(cfg)
	key := "sk_test_redactMe0000000000000000"
	for _, form := range []string{key, base64.StdEncoding.EncodeToString([]byte(key + ":")), base64.StdEncoding.EncodeToString([]byte(key))} {
		if got := r.Replace("the provider says: Basic " + form + " is invalid"); strings.Contains(got, form) || !strings.Contains(got, "[api_key]") {
			t.Errorf("%q redacted to %q", form, got)
		}
	}
}
