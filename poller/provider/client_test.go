package provider

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is a provider endpoint that remembers the credentials it was sent.
type recorder struct {
	mu    sync.Mutex
	calls []string // "METHOD path auth"
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.calls = append(r.calls, req.Method+" "+req.URL.Path+" "+req.Header.Get("Authorization"))
	r.mu.Unlock()
	w.Write([]byte(`{"data":[]}`))
}

func (r *recorder) seen() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

func get(t *testing.T, c *Client, u, auth string) ([]byte, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	body, _, err := c.Do(t.Context(), req, nil)
	return body, err
}

func TestNewClientVerifiesCertificates(t *testing.T) {
	srv := httptest.NewUnstartedServer(&recorder{})
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake
	srv.StartTLS()
	defer srv.Close()

	// The test server's certificate is signed by no authority the system trusts.
	_, err := get(t, NewClient(ClientOptions{BaseURL: srv.URL}), srv.URL+"/v1/payments", "")
	var ue x509.UnknownAuthorityError
	if !errors.As(err, &ue) {
		t.Fatalf("without ca_file: %v; want an unknown authority error", err)
	}
	if !strings.Contains(err.Error(), "needs the source's ca_file") {
		t.Errorf("without ca_file: %v; want a hint at ca_file", err)
	}

	// ca_file: the server's certificate as the source's only trusted root.
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	body, err := get(t, NewClient(ClientOptions{BaseURL: srv.URL, RootCAs: roots}), srv.URL+"/v1/payments", "")
	if err != nil || string(body) != `{"data":[]}` {
		t.Fatalf("with the server's CA: %q, %v", body, err)
	}
}

func TestRedirectToAnotherOriginIsNotFollowed(t *testing.T) {
	other := &recorder{}
	otherSrv := httptest.NewServer(other)
	defer otherSrv.Close()
	for _, code := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		base := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, otherSrv.URL+"/collect?token=abc", code)
		}))
		c := NewClient(ClientOptions{BaseURL: base.URL})
		for _, auth := range []string{"Bearer s3cr3t-api-key", `Hawk id="id", ts="1", nonce="n", mac="m"`} {
			_, err := get(t, c, base.URL+"/v1/payments", auth)
			if err == nil {
				t.Fatalf("HTTP %d: followed the redirect", code)
			}
			msg := err.Error()
			for _, want := range []string{"redirect to " + otherSrv.URL + "/collect not followed", "go only to " + originOf(base.URL)} {
				if !strings.Contains(msg, want) {
					t.Errorf("HTTP %d: %v\nwant it to contain %q", code, err, want)
				}
			}
			if strings.Contains(msg, "s3cr3t") || strings.Contains(msg, "token=abc") {
				t.Errorf("HTTP %d: error shows a credential or the target's query: %v", code, err)
			}
		}
		base.Close()
	}
	if calls := other.seen(); len(calls) != 0 {
		t.Fatalf("the other host was sent %d requests: %q", len(calls), calls)
	}
}

func TestRedirectWithinTheOriginIsFollowed(t *testing.T) {
	rec := &recorder{}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/old", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/v1/new", http.StatusFound)
	})
	mux.Handle("/v1/new", rec)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	body, err := get(t, NewClient(ClientOptions{BaseURL: srv.URL}), srv.URL+"/v1/old", "Bearer k")
	if err != nil || string(body) != `{"data":[]}` {
		t.Fatalf("same-origin redirect: %q, %v", body, err)
	}
	if calls := rec.seen(); len(calls) != 1 || calls[0] != "GET /v1/new Bearer k" {
		t.Fatalf("calls = %q", calls)
	}

	loop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, r.URL.Path, http.StatusFound)
	}))
	defer loop.Close()
	if _, err := get(t, NewClient(ClientOptions{BaseURL: loop.URL}), loop.URL+"/x", ""); err == nil || !strings.Contains(err.Error(), "stopped after 10 redirects") {
		t.Fatalf("redirect loop: %v", err)
	}
}

func TestRequestOutsideBaseURLIsRefused(t *testing.T) {
	other := &recorder{}
	otherSrv := httptest.NewServer(other)
	defer otherSrv.Close()
	c := NewClient(ClientOptions{BaseURL: "https://api.circle.com/"})
	_, err := get(t, c, otherSrv.URL+"/v1/payments", "Bearer s3cr3t")
	if err == nil || !strings.Contains(err.Error(), "refused: the source's requests go only to base_url https://api.circle.com:443") {
		t.Fatalf("request to another origin: %v", err)
	}
	if calls := other.seen(); len(calls) != 0 {
		t.Fatalf("the other host was sent %q", calls)
	}
}

func TestOrigin(t *testing.T) {
	same := [][2]string{
		{"https://api.circle.com", "https://API.circle.com:443/v1/x?y=1"},
		{"http://127.0.0.1:8089/prefix", "http://127.0.0.1:8089/other"},
		{"http://[::1]/a", "http://[::1]:80/b"},
	}
	for _, p := range same {
		if originOf(p[0]) != originOf(p[1]) {
			t.Errorf("%s and %s: origins %s and %s differ", p[0], p[1], originOf(p[0]), originOf(p[1]))
		}
	}
	differ := [][2]string{
		{"https://api.circle.com", "http://api.circle.com"},
		{"https://api.circle.com", "https://api.circle.com:8443"},
		{"https://api.circle.com", "https://api.circle.com.evil.example"},
		{"http://127.0.0.1:8089", "http://127.0.0.1:8090"},
	}
	for _, p := range differ {
		if originOf(p[0]) == originOf(p[1]) {
			t.Errorf("%s and %s: same origin %s", p[0], p[1], originOf(p[0]))
		}
	}
}

func TestBodyLimitAndContextDeadline(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-r.Context().Done()
			return
		}
		w.Write([]byte(strings.Repeat("x", 2048)))
	}))
	defer srv.Close()
	c := NewClient(ClientOptions{BaseURL: srv.URL, MaxBody: 1024})
	if _, err := get(t, c, srv.URL+"/big", ""); err == nil || !strings.Contains(err.Error(), "response body exceeds 1024 bytes") {
		t.Fatalf("oversized body: %v", err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/slow", nil)
	if _, _, err := c.Do(ctx, req, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("request past its deadline: %v", err)
	}
}

func TestRedactTarget(t *testing.T) {
	u, _ := url.Parse("https://user:pw@evil.example:8443/a%2Fb?token=1#frag")
	if got := redactTarget(u); got != "https://evil.example:8443/a%2Fb" {
		t.Errorf("redactTarget = %q", got)
	}
}
