package logredact

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

type secretStringer struct{}

func (secretStringer) String() string { return "stringer with 0123456789abcdef" }

func TestHandler(t *testing.T) {
	var buf bytes.Buffer
	r := strings.NewReplacer("0123456789abcdef", "[api_key]")
	log := slog.New(New(slog.NewTextHandler(&buf, nil), r))
	log = log.With("key", "K:0123456789abcdef")
	log.WithGroup("g").Info("message with 0123456789abcdef",
		"err", errors.New("HTTP 403: secret 0123456789abcdef refused"),
		"plain", "x 0123456789abcdef",
		"any", secretStringer{},
		slog.Group("inner", "s", "0123456789abcdef"),
		"n", 42, "d", time.Second, "wrapped", fmt.Errorf("w: %w", errors.New("0123456789abcdef")))
	got := buf.String()
	if strings.Contains(got, "0123456789abcdef") {
		t.Errorf("a secret went through:\n%s", got)
	}
	for _, want := range []string{`msg="message with [api_key]"`, `key=K:[api_key]`, `g.err="HTTP 403: secret [api_key] refused"`,
		`g.plain="x [api_key]"`, `g.any="stringer with [api_key]"`, `g.inner.s=[api_key]`, `g.n=42`, `g.d=1s`, `g.wrapped="w: [api_key]"`} {
		if !strings.Contains(got, want) {
			t.Errorf("log line lacks %s:\n%s", want, got)
		}
	}
}
