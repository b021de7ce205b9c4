package main

import (
	"bytes"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payments-watcher/watcher/config"
	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/poller/provider"
	"github.com/payments-watcher/watcher/publish"
	"github.com/payments-watcher/watcher/state"
	"github.com/payments-watcher/watcher/state/bbolt"
)

func TestReadiness(t *testing.T) {
	// A CPN-shaped provider that refuses the key until told otherwise.
	var accept atomic.Bool
	prov := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if !accept.Load() {
			w.WriteHeader(401)
			w.Write([]byte(`{"code":401,"message":"Malformed authorization."}`))
			return
		}
		w.Write([]byte(`{"data":[]}`))
	}))
	defer prov.Close()

	store, err := bbolt.Open(filepath.Join(t.TempDir(), "w.db"), bbolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ns := runNATS(t)
	nc, err := publish.Connect(ns.ClientURL(), publish.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	natsCfg := publish.Config{Stream: "EVENTS", SubjectPrefix: "payments", DuplicateWindow: time.Minute}
	pub := publish.New(js, store, natsCfg, publish.Options{}, nil)

	src, err := poller.Providers["circle_cpn_payments"].New(provider.Settings{Name: "cpn", BaseURL: prov.URL, PageSize: 50, Values: map[string]string{"api_key": "k"}}, &provider.Client{})
	if err != nil {
		t.Fatal(err)
	}
	p := poller.New(poller.Config{Name: "cpn", Provider: "circle_cpn_payments", Kind: "payment", Interval: 15 * time.Second,
		Lookback: time.Hour, RateLimit: 100, Baseline: "silent"}, src, store, "payments", slog.New(slog.DiscardHandler))

	start := time.Now().UTC()
	clock := start
	e := &endpoints{store: store, pub: pub, sources: []watchedSource{{name: "cpn", interval: 15 * time.Second, p: p}},
		maxOutbox: 2, started: start, now: func() time.Time { return clock }, redact: strings.NewReplacer()}

	if got := e.notReady(t.Context()); len(got) != 0 {
		t.Errorf("at start: %q, want ready", got)
	}
	// Three intervals without a successful cycle, the last one refused.
	if err := p.Poll(t.Context()); err == nil {
		t.Fatal("poll with a refused key succeeded")
	}
	clock = start.Add(45 * time.Second)
	if got := e.notReady(t.Context()); len(got) != 0 {
		t.Errorf("3 intervals after the start: %q, want ready", got)
	}
	clock = start.Add(47 * time.Second)
	got := e.notReady(t.Context())
	const stale = "source cpn: no successful poll since the start 47s (interval 15s): "
	if len(got) != 1 || !strings.HasPrefix(got[0], stale) || !strings.HasSuffix(got[0], "HTTP 401 Unauthorized: code 401: Malformed authorization.") {
		t.Errorf("47s after the start with a refused key: %q\nwant one line starting %q", got, stale)
	}

	accept.Store(true)
	if err := p.Poll(t.Context()); err != nil {
		t.Fatal(err)
	}
	last := p.Health().LastSuccess
	clock = last.Add(30 * time.Second)
	if got := e.notReady(t.Context()); len(got) != 0 {
		t.Errorf("2 intervals after a success: %q, want ready", got)
	}
	clock = last.Add(47 * time.Second)
	if got := e.notReady(t.Context()); !slices.Equal(got, []string{"source cpn: no successful poll for 47s (interval 15s): a cycle is still running"}) {
		t.Errorf("47s after a success: %q", got)
	}
	clock = last

	// The outbox at nats.max_outbox.
	msgs := []event.Message{{ID: "a", Subject: "payments.cpn.payment.pending"}, {ID: "b", Subject: "payments.cpn.payment.pending"}}
	if err := store.Commit(t.Context(), "cpn", state.Batch{Now: start, Messages: msgs}); err != nil {
		t.Fatal(err)
	}
	want := "outbox: 2 events waiting since " + start.Format(time.RFC3339) + ", at or over nats.max_outbox 2; polling is paused until NATS takes them"
	if got := e.notReady(t.Context()); !slices.Equal(got, []string{want}) {
		t.Errorf("outbox full: %q\nwant %q", got, want)
	}

	// NATS away: named first.
	nc.Close()
	got = e.notReady(t.Context())
	if len(got) != 2 || got[0] != "nats: not connected (CLOSED)" || got[1] != want {
		t.Errorf("NATS closed: %q", got)
	}
}

func TestSecretsOfRedactsEveryForm(t *testing.T) {
	cfg := &config.Config{}
	cfg.NATS.Token, cfg.NATS.Password = "tok-123456789", "pw-123456789"
	ramp := config.Source{Provider: poller.Providers["circle_ramp_sessions"]}
	ramp.Settings = ramp.Settings.With("api_key", "TEST_API_KEY:rampid:0123456789abcdef")
	cd := config.Source{Provider: poller.Providers["coindirect_payments"]}
	cd.Settings = cd.Settings.With("hawk_id", "hawk-id").With("hawk_key", "hawk-secret-key")
	cfg.Sources = append(cfg.Sources, ramp, cd)
	in := "a TEST_API_KEY:rampid:0123456789abcdef b 0123456789abcdef c hawk-secret-key d tok-123456789 e pw-123456789"
	want := "a [api_key] b [api_key] c [hawk_key] d [nats.token] e [nats.password]"
	if got := secretsOf(cfg).Replace(in); got != want {
		t.Errorf("redacted:\n%s\nwant\n%s", got, want)
	}
}

func TestRedactingHandler(t *testing.T) {
	var buf bytes.Buffer
	cfg := &config.Config{}
	s := config.Source{Provider: poller.Providers["circle_ramp_sessions"]}
	s.Settings = s.Settings.With("api_key", "TEST_API_KEY:ent:0123456789abcdef")
	cfg.Sources = append(cfg.Sources, s)
	log := slog.New(redactingHandler{next: slog.NewTextHandler(&buf, nil), r: secretsOf(cfg)})
	log = log.With("key", "TEST_API_KEY:ent:0123456789abcdef")
	log.WithGroup("g").Info("message with 0123456789abcdef",
		"err", errors.New("HTTP 403: secret 0123456789abcdef refused"),
		"plain", "x 0123456789abcdef",
		slog.Group("inner", "s", "0123456789abcdef"),
		"n", 42, "d", time.Second)
	got := buf.String()
	if strings.Contains(got, "0123456789abcdef") {
		t.Errorf("a secret went through:\n%s", got)
	}
	for _, want := range []string{`msg="message with [api_key]"`, `key=[api_key]`, `g.err="HTTP 403: secret [api_key] refused"`,
		`g.plain="x [api_key]"`, `g.inner.s=[api_key]`, `g.n=42`, `g.d=1s`} {
		if !strings.Contains(got, want) {
			t.Errorf("log line lacks %s:\n%s", want, got)
		}
	}
}
