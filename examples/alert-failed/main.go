// Command alert-failed posts an alert to a webhook for every payment event that
// reaches a failure state (failed, underpaid, expired by default).
//
// It reads watcher's JetStream stream through a durable pull consumer, so it resumes
// where it stopped, and it alerts at most once per event id: ids it has delivered are
// recorded in a local bbolt file before the message is acknowledged.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.LookupEnv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "alert-failed:", err)
		os.Exit(1)
	}
}

// knownStates are the normalized states watcher publishes.
var knownStates = []string{"pending", "action_required", "processing", "completed", "underpaid", "failed", "canceled", "expired", "unknown"}

// options are the command line.
type options struct {
	natsURL, creds string
	stream, prefix string
	consumer       string
	deliver        string // "new" or "all": where a newly created consumer starts
	states         []string
	webhook        string
	slack          bool
	statePath      string
	retention      time.Duration
	ackWait        time.Duration
	maxBackoff     time.Duration
	timeout        time.Duration
	logLevel       slog.Level
}

// parseOptions reads flags, with ALERT_WEBHOOK_URL and NATS_URL as defaults for
// --webhook and --nats.
func parseOptions(args []string, lookupEnv func(string) (string, bool), stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("alert-failed", flag.ContinueOnError)
	fs.SetOutput(stderr)
	env := func(name, def string) string {
		if v, ok := lookupEnv(name); ok && v != "" {
			return v
		}
		return def
	}
	var o options
	fs.StringVar(&o.natsURL, "nats", env("NATS_URL", nats.DefaultURL), "NATS server `url` (env NATS_URL)")
	fs.StringVar(&o.creds, "creds", "", "NATS credentials `file`")
	fs.StringVar(&o.stream, "stream", "PAYMENT_EVENTS", "JetStream `stream`")
	fs.StringVar(&o.prefix, "prefix", "payments", "subject `prefix` of the events")
	fs.StringVar(&o.consumer, "consumer", "alert-failed", "durable consumer `name`")
	fs.StringVar(&o.deliver, "deliver", "new", "where a new consumer starts: new (events published from now on) or all (the whole stream)")
	states := fs.String("states", "failed,underpaid,expired", "comma-separated normalized `states` to alert on")
	fs.StringVar(&o.webhook, "webhook", env("ALERT_WEBHOOK_URL", ""), "webhook `url` to POST alerts to (env ALERT_WEBHOOK_URL)")
	fs.BoolVar(&o.slack, "slack", false, "send a Slack-compatible body {\"text\": ...} instead of the JSON alert")
	fs.StringVar(&o.statePath, "state", "alert-failed.db", "bbolt `file` recording the event ids already delivered")
	fs.DurationVar(&o.retention, "retention", 7*24*time.Hour, "how long delivered event ids are remembered")
	fs.DurationVar(&o.ackWait, "ack-wait", 30*time.Second, "JetStream ack wait: an unacknowledged event is redelivered after this")
	fs.DurationVar(&o.maxBackoff, "max-backoff", time.Minute, "longest wait between two attempts of a failing webhook")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "timeout of one webhook request")
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var errs []error
	if err := o.logLevel.UnmarshalText([]byte(*level)); err != nil {
		errs = append(errs, fmt.Errorf("--log-level %q: %w", *level, err))
	}
	for s := range strings.SplitSeq(*states, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !slices.Contains(knownStates, s) {
			errs = append(errs, fmt.Errorf("--states: %q is not one of %s", s, strings.Join(knownStates, ", ")))
			continue
		}
		if !slices.Contains(o.states, s) {
			o.states = append(o.states, s)
		}
	}
	if len(o.states) == 0 {
		errs = append(errs, errors.New("--states: no state given"))
	}
	if o.webhook == "" {
		errs = append(errs, errors.New("--webhook (or ALERT_WEBHOOK_URL) is required"))
	} else if u, err := url.Parse(o.webhook); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("--webhook %q: want an http or https url", redactURL(o.webhook)))
	}
	if o.deliver != "new" && o.deliver != "all" {
		errs = append(errs, fmt.Errorf("--deliver %q: want new or all", o.deliver))
	}
	if o.consumer == "" || strings.ContainsAny(o.consumer, ".*> \t") {
		errs = append(errs, fmt.Errorf("--consumer %q: want a name without dots, wildcards or spaces", o.consumer))
	}
	if o.prefix == "" || strings.ContainsAny(o.prefix, "*> \t") {
		errs = append(errs, fmt.Errorf("--prefix %q: want a subject prefix without wildcards", o.prefix))
	}
	for name, d := range map[string]time.Duration{"--retention": o.retention, "--ack-wait": o.ackWait, "--max-backoff": o.maxBackoff, "--timeout": o.timeout} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s %s: want a positive duration", name, d))
		}
	}
	return o, errors.Join(errs...)
}

// run parses args, connects to NATS, opens the delivery record and alerts until ctx
// ends.
func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stderr io.Writer) error {
	o, err := parseOptions(args, lookupEnv, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: o.logLevel}))
	natsOpts := []nats.Option{nats.Name("alert-failed")}
	if o.creds != "" {
		natsOpts = append(natsOpts, nats.UserCredentials(o.creds))
	}
	nc, err := nats.Connect(o.natsURL, natsOpts...)
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", o.natsURL, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	delivered, err := openDelivered(o.statePath, o.retention)
	if err != nil {
		return err
	}
	defer delivered.Close()
	a := newAlerter(o, delivered, &http.Client{}, log)
	log.Info("alerting", "stream", o.stream, "consumer", o.consumer, "subjects", a.filterSubjects(), "webhook", redactURL(o.webhook), "slack", o.slack)
	return a.Run(ctx, js)
}

// redactURL keeps the scheme and host of a webhook url: Slack-style urls carry their
// secret in the path.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(unparsable url)"
	}
	return u.Scheme + "://" + u.Host + "/…"
}
