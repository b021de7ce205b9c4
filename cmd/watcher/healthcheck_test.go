package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHealthcheckCommand(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			w.Write([]byte("ok\n"))
		case "/readyz":
			http.Error(w, "nats: not connected", http.StatusServiceUnavailable)
		case "/moved":
			http.Redirect(w, r, "/healthz", http.StatusFound)
		case "/slow":
			<-block
		}
	}))
	defer srv.Close()
	defer close(block) // before Close, which waits for the blocked handler
	for _, c := range []struct {
		args []string
		ok   bool
		err  string
	}{
		{[]string{"--url", srv.URL + "/healthz"}, true, ""},
		{[]string{"--url", srv.URL + "/readyz"}, false, "503"},
		{[]string{"--url", srv.URL + "/moved"}, false, "302"},
		{[]string{"--url", srv.URL + "/slow", "--timeout", "100ms"}, false, "deadline exceeded"},
		{[]string{"--url", "http://127.0.0.1:1/healthz"}, false, "refused"},
		{[]string{"--url", srv.URL + "/healthz", "extra"}, false, "unexpected argument"},
	} {
		var stdout, stderr bytes.Buffer
		start := time.Now()
		err := run(context.Background(), append([]string{"healthcheck"}, c.args...), &stdout, &stderr)
		if (err == nil) != c.ok || (err != nil && !strings.Contains(err.Error(), c.err)) {
			t.Errorf("healthcheck %v: %v, want ok=%v or an error with %q", c.args, err, c.ok, c.err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("healthcheck %v took %v", c.args, took)
		}
		if stdout.Len() != 0 {
			t.Errorf("healthcheck %v printed %q", c.args, stdout.String())
		}
	}
}

func TestVersionCommit(t *testing.T) {
	defer func(v, c string) { version, commit = v, c }(version, commit)
	version, commit = "1.4.0", "0123abc"
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "watcher 1.4.0 (commit 0123abc, ") {
		t.Errorf("version printed %q", out.String())
	}
	commit = ""
	if got := buildCommit(); got == "" {
		t.Error("buildCommit without -X main.commit is empty")
	}
}
