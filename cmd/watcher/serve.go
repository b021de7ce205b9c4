package main

import (
	"context"
	"encoding/base64"
	"log/slog"
	"runtime/debug"
	"strings"

	"github.com/payments-watcher/watcher/config"
	"github.com/payments-watcher/watcher/daemon"
)

// serve runs the daemon (package daemon) until ctx is cancelled, with the secrets of
// cfg hidden in its logs and readiness messages. A damaged state file is reported
// with the way out.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	err := daemon.Run(ctx, cfg, log, daemon.Options{
		Version: version, Commit: buildCommit(), Redact: secretsOf(cfg), Kinds: sourceKinds,
	})
	return withRecovery(err, cfg.State.Path, false)
}

// buildCommit is the commit the binary was built from: the one -ldflags
// "-X main.commit=…" set, else Go's VCS stamp, else "unknown".
func buildCommit() string {
	if commit != "" {
		return commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

// secretsOf returns a replacer of every secret value of cfg; readiness messages carry
// provider error texts, which must never show one.
func secretsOf(cfg *config.Config) *strings.Replacer {
	var pairs []string
	add := func(key, v string) {
		if v == "" {
			return
		}
		pairs = append(pairs, v, "["+key+"]")
		// Basic authentication carries "key:" in base64 (Stripe's form), which a
		// provider's error may echo.
		for _, enc := range []string{base64.StdEncoding.EncodeToString([]byte(v + ":")), base64.StdEncoding.EncodeToString([]byte(v))} {
			pairs = append(pairs, strings.TrimRight(enc, "="), "["+key+"]")
		}
		// A Circle W3S key is PREFIX:ID:SECRET; the secret part alone is one too.
		if i := strings.LastIndexByte(v, ':'); i >= 0 && len(v)-i-1 >= 8 {
			pairs = append(pairs, v[i+1:], "["+key+"]")
		}
	}
	for _, s := range cfg.Secrets() {
		add(s.Key, s.Value)
	}
	add("admin.token", cfg.Admin.Token)
	return strings.NewReplacer(pairs...)
}
