// Command alert-failed turns payment events that reach a failure state (failed by
// default; underpaid, expired and stalled items on request) into Alertmanager alerts
// and plain webhook calls.
//
// It reads watcher's JetStream stream through a durable pull consumer, so it resumes
// where it stopped, and it alerts at most once per event id and sink: outcomes are
// recorded in a local bbolt file before the message is acknowledged. Alerts a sink
// refuses for good go to a dead-letter subject instead of blocking the ones after.
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
	alertmanager   string
	link           string
	alertDuration  time.Duration
	stalledAfter   time.Duration
	deadLetter     string // "" = {prefix}.deadletter.{consumer}
	httpListen     string
	maxRetryAfter  time.Duration
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
	states := fs.String("states", "failed", "comma-separated normalized `states` to alert on, e.g. failed,underpaid,expired")
	fs.StringVar(&o.alertmanager, "alertmanager", env("ALERTMANAGER_URL", ""), "Alertmanager `url` to POST alerts to through its v2 API (env ALERTMANAGER_URL)")
	fs.StringVar(&o.link, "link", "", "link `template` of each alert ({source}, {kind}, {id}, {parent_id}, {event_id}), its generatorURL and link annotation")
	fs.DurationVar(&o.alertDuration, "alert-duration", time.Hour, "how long an Alertmanager alert stays active (its endsAt)")
	fs.DurationVar(&o.stalledAfter, "stalled-after", 0, "also alert (PaymentStalled) on an open item's transition observed this long after its creation; 0 = off")
	fs.StringVar(&o.webhook, "webhook", env("ALERT_WEBHOOK_URL", ""), "webhook `url` to POST alerts to (env ALERT_WEBHOOK_URL)")
	fs.BoolVar(&o.slack, "slack", false, "send a Slack-compatible body {\"text\": ...} to the webhook instead of the JSON alert")
	fs.StringVar(&o.deadLetter, "dead-letter-subject", "", "NATS `subject` of alerts refused for good (default {prefix}.deadletter.{consumer})")
	fs.StringVar(&o.httpListen, "http", "127.0.0.1:9467", "`address` serving /metrics and /healthz; \"\" disables")
	fs.DurationVar(&o.maxRetryAfter, "max-retry-after", 10*time.Minute, "longest wait a Retry-After answer is granted")
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
	if o.webhook == "" && o.alertmanager == "" {
		errs = append(errs, errors.New("--alertmanager (or ALERTMANAGER_URL) or --webhook (or ALERT_WEBHOOK_URL) is required"))
	}
	for name, v := range map[string]string{"--webhook": o.webhook, "--alertmanager": o.alertmanager} {
		if u, err := url.Parse(v); v != "" && (err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "") {
			errs = append(errs, fmt.Errorf("%s %q: want an http or https url", name, redactURL(v)))
		}
	}
	if o.stalledAfter < 0 {
		errs = append(errs, fmt.Errorf("--stalled-after %s: want 0 (off) or a positive duration", o.stalledAfter))
	}
	if o.deadLetter != "" && strings.ContainsAny(o.deadLetter, "*> \t") {
		errs = append(errs, fmt.Errorf("--dead-letter-subject %q: want a subject without wildcards", o.deadLetter))
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
	for name, d := range map[string]time.Duration{"--retention": o.retention, "--ack-wait": o.ackWait, "--max-backoff": o.maxBackoff, "--timeout": o.timeout,
		"--alert-duration": o.alertDuration, "--max-retry-after": o.maxRetryAfter} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s %s: want a positive duration", name, d))
		}
	}
	return o, errors.Join(errs...)
}

// sinks are the configured targets: Alertmanager first, then the webhook.
func (o options) sinks() []sink {
	var s []sink
	if o.alertmanager != "" {
		s = append(s, alertmanagerSink{base: o.alertmanager, link: o.link, duration: o.alertDuration, stalled: o.stalledAfter})
	}
	if o.webhook != "" {
		s = append(s, webhookSink{url: o.webhook, slack: o.slack})
	}
	return s
}

// deadLetterSubject is where refused alerts are published.
func (o options) deadLetterSubject() string {
	if o.deadLetter != "" {
		return o.deadLetter
	}
	return o.prefix + ".deadletter." + o.consumer
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
	m := newAlertMetrics()
	a := newAlerter(o, delivered, &http.Client{}, log, m)
	if o.httpListen != "" {
		addr, err := serveHTTP(ctx, o.httpListen, m.handler(func() error { return a.Healthy(nc) }), log)
		if err != nil {
			return fmt.Errorf("--http %s: %w", o.httpListen, err)
		}
		log.Info("serving /metrics and /healthz", "addr", addr.String())
	}
	for _, s := range a.sinks {
		log.Info("alerting", "sink", s.Name(), "target", s.Where())
	}
	log.Info("consuming", "stream", o.stream, "consumer", o.consumer, "subjects", a.filterSubjects(), "dead_letter_subject", o.deadLetterSubject())
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
