package main

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/config"
	"github.com/payments-watcher/watcher/logredact"
	"github.com/payments-watcher/watcher/poller"
)

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
	log := slog.New(logredact.New(slog.NewTextHandler(&buf, nil), secretsOf(cfg)))
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
