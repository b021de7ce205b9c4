package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"
)

// defaultHealthURL is the liveness endpoint of the default http.listen.
const defaultHealthURL = "http://127.0.0.1:9464/healthz"

// healthcheckCommand asks a watcher's HTTP endpoint whether it is well, for container
// health checks in images without a shell or an HTTP client: it returns nil when the
// URL answers 200 within the timeout, and an error (exit status 1) for any other
// status, a connection failure or the timeout. It prints nothing on success.
func healthcheckCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("watcher healthcheck", flag.ContinueOnError)
	url := fs.String("url", defaultHealthURL, "`URL` to GET; /readyz also checks NATS and the sources")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this `duration`")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return commandLineError{fmt.Errorf("healthcheck: unexpected argument %q", fs.Arg(0))}
	}
	return probeHealth(ctx, *url, *timeout)
}

// probeHealth GETs url once, without following redirects, and reports whether it
// answered 200 OK within timeout.
func probeHealth(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %s", url, resp.Status)
	}
	return nil
}
