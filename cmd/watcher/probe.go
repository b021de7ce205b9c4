package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/payments-watcher/watcher/config"
	"github.com/payments-watcher/watcher/poller/provider"
	"github.com/payments-watcher/watcher/probe"
)

const probeUsage = `Usage: watcher probe --config FILE [SOURCE...] [--json]

Checks each configured source (or the SOURCEs named) against its live provider
account before the daemon polls it: credentials, list order, page size, date filter,
paging, single-item reads, status mapping, clock skew, and for Coindirect sign_query.
Read-only: no state file, no NATS; at most 10 provider requests per source.

One line per check: SOURCE  CHECK  ok|warn|fail  what it saw (--json: one JSON object
per line, {"source","check","result","detail"}). Exit status 0 when no check fails
(warnings allowed), 1 when one does, 2 for a bad configuration or command line.

Flags:
`

// probeCommand runs `watcher probe`: every selected source is probed in turn and each
// check printed as it is known, through the same redaction of configured secrets as
// the daemon's logs.
func probeCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts, err := parseProbeArgs(args, stdout, stderr)
	if err != nil {
		return err
	}
	cfg, err := config.Load(opts.config)
	if err != nil {
		return usageFailure(stderr, err)
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintf(stderr, "watcher probe: warning: %s\n", w)
	}
	sources, err := selectSources(cfg, opts.sources)
	if err != nil {
		return usageFailure(stderr, err)
	}
	out := probePrinter{w: stdout, json: opts.json, redact: secretsOf(cfg), width: nameWidth(sources)}
	failed, total := 0, 0
	for _, s := range sources {
		r := probe.Run(ctx, probeTarget(s))
		for _, c := range r.Checks {
			if err := out.print(c); err != nil {
				return err
			}
			total++
			if c.Result == probe.Fail {
				failed++
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if failed > 0 {
		return fmt.Errorf("probe: %d of %d checks failed", failed, total)
	}
	return nil
}

// probeOptions are the parsed command line of `watcher probe`.
type probeOptions struct {
	config  string
	json    bool
	sources []string
}

// parseProbeArgs reads flags before, between and after the source names.
func parseProbeArgs(args []string, stdout, stderr io.Writer) (probeOptions, error) {
	var o probeOptions
	fs := flag.NewFlagSet("watcher probe", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), probeUsage)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.config, "config", "watcher.yaml", "configuration `file`")
	fs.BoolVar(&o.json, "json", false, "print one JSON object per check")
	for {
		if err := parseFlags(fs, args, stdout, stderr); err != nil {
			return o, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return o, nil
		}
		o.sources = append(o.sources, rest[0])
		args = rest[1:]
	}
}

// usageFailure prints err for the user and returns it as a bad command line (exit 2):
// a configuration probe cannot use, or a source it does not name.
func usageFailure(stderr io.Writer, err error) error {
	fmt.Fprintf(stderr, "watcher probe: %v\n", err)
	return commandLineError{err}
}

// selectSources returns the configured sources named, in the configuration's order;
// all of them when names is empty. An unknown name is an error listing the known ones.
func selectSources(cfg *config.Config, names []string) ([]config.Source, error) {
	known := make([]string, len(cfg.Sources))
	for i, s := range cfg.Sources {
		known[i] = s.Name
	}
	for _, n := range names {
		if !slices.Contains(known, n) {
			return nil, fmt.Errorf("unknown source %q (configured: %s)", n, strings.Join(known, ", "))
		}
	}
	var out []config.Source
	for _, s := range cfg.Sources {
		if len(names) == 0 || slices.Contains(names, s.Name) {
			out = append(out, s)
		}
	}
	return out, nil
}

// probeTarget is source s with the provider.Client the daemon builds for it (see
// buildPoller): requests held to base_url's origin, its ca_file, watcher's user agent.
func probeTarget(s config.Source) probe.Target {
	client := provider.NewClient(provider.ClientOptions{
		BaseURL:   s.Settings.BaseURL,
		RootCAs:   s.RootCAs,
		UserAgent: "watcher/" + version,
	})
	return probe.Target{
		Name:           s.Name,
		ProviderID:     s.Config.Provider,
		Provider:       s.Provider,
		Settings:       s.Settings,
		Client:         client,
		RequestTimeout: s.RequestTimeout,
	}
}

// nameWidth is the width of the longest source name, for aligned text lines.
func nameWidth(sources []config.Source) int {
	w := 0
	for _, s := range sources {
		w = max(w, len(s.Name))
	}
	return w
}

// checkWidth is the width of the longest check name.
const checkWidth = len(probe.CheckCredentials)

// probePrinter writes checks as text lines or JSON Lines, every field redacted.
type probePrinter struct {
	w      io.Writer
	json   bool
	redact *strings.Replacer
	width  int
}

func (p probePrinter) print(c probe.Check) error {
	c.Source = p.redact.Replace(c.Source)
	c.Detail = strings.ReplaceAll(p.redact.Replace(c.Detail), "\n", " ")
	if p.json {
		return json.NewEncoder(p.w).Encode(c)
	}
	_, err := fmt.Fprintf(p.w, "%-*s  %-*s  %-4s  %s\n", p.width, c.Source, checkWidth, c.Name, c.Result, c.Detail)
	return err
}
