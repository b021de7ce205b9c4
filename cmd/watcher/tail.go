package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payments-watcher/watcher/config"
	"github.com/payments-watcher/watcher/event"
)

// tailOptions select what `watcher tail` reads.
type tailOptions struct {
	url, stream, prefix, subject string
	source, kind, state          string
	since                        time.Duration
	all, json, color             bool
}

const tailUsage = `Usage: watcher tail [--nats URL | --config FILE] [connection flags]
                   [--source S] [--kind K] [--state S | --subject FILTER] [--since 1h | --all] [--json]

Prints the events of the stream as they arrive (with --since or --all, from earlier).

The server is --nats, else the configuration file's nats.url (nats.embedded.listen
when the daemon runs an embedded server), else $NATS_URL, else nats://127.0.0.1:4222.
--config FILE reads the daemon's configuration and connects as the daemon does: its
credentials and TLS settings, stream and subject prefix. Each flag replaces the file's
setting. Prefer --token-file and --password-file to --token and --password, whose
values other users can see in the process list and your shell history.

Flags:
`

func tailCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("watcher tail", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), tailUsage)
		fs.PrintDefaults()
	}
	var o tailOptions
	var conn natsFlags
	conn.register(fs)
	fs.StringVar(&o.stream, "stream", config.DefaultStream, "JetStream `stream`; with --config, the file's nats.stream")
	fs.StringVar(&o.prefix, "prefix", config.DefaultSubjectPrefix, "subject `prefix` of the events; with --config, the file's nats.subject_prefix")
	fs.StringVar(&o.subject, "subject", "", "subject `filter`, e.g. payments.cpn.> (overrides --source, --kind and --state)")
	fs.StringVar(&o.source, "source", "", "only this `source`")
	fs.StringVar(&o.kind, "kind", "", "only this `kind` (payment, payment_refund, …)")
	fs.StringVar(&o.state, "state", "", "only this normalized `state` (failed, completed, …)")
	fs.DurationVar(&o.since, "since", 0, "start this long ago (e.g. 1h) instead of with new events")
	fs.BoolVar(&o.all, "all", false, "start at the beginning of the stream")
	fs.BoolVar(&o.json, "json", false, "print each event's JSON document, one per line")
	colorFlag := fs.String("color", "auto", "colour: auto, always or never")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return badCommandLine(stderr, tailUsage, fmt.Errorf("tail: unexpected argument %q", fs.Arg(0)))
	}
	switch *colorFlag {
	case "always":
		o.color = true
	case "never":
	case "auto":
		o.color = isTerminal(stdout) && os.Getenv("NO_COLOR") == ""
	default:
		return fmt.Errorf("--color: %q is not auto, always or never", *colorFlag)
	}
	if o.all && o.since > 0 {
		return errors.New("--all and --since exclude each other")
	}
	set := flagsSet(fs)
	target, err := conn.resolve(set, os.Getenv)
	if err != nil {
		return fmt.Errorf("tail: %w", err)
	}
	o.url = target.url
	if !set["stream"] && target.nats.Stream != "" {
		o.stream = target.nats.Stream
	}
	if !set["prefix"] && target.nats.SubjectPrefix != "" {
		o.prefix = target.nats.SubjectPrefix
	}
	nc, err := target.connect("watcher tail")
	if err != nil {
		return fmt.Errorf("tail: %w", err)
	}
	defer nc.Close()
	return tail(ctx, nc, o, stdout)
}

// flagsSet returns the names of the flags set on fs's command line.
func flagsSet(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// filterSubject is the subject the options select.
func (o tailOptions) filterSubject() string {
	if o.subject != "" {
		return o.subject
	}
	if o.source == "" && o.kind == "" && o.state == "" {
		return o.prefix + ".>"
	}
	or := func(s string) string {
		if s == "" {
			return "*"
		}
		return s
	}
	return event.Subject(o.prefix, or(o.source), or(o.kind), or(o.state))
}

// tail prints the selected events until ctx ends.
func tail(ctx context.Context, nc *nats.Conn, o tailOptions, w io.Writer) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	stream, err := js.Stream(ctx, o.stream)
	if err != nil {
		return fmt.Errorf("tail: stream %s: %w", o.stream, err)
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{o.filterSubject()}, DeliverPolicy: jetstream.DeliverNewPolicy}
	switch {
	case o.all:
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	case o.since > 0:
		start := time.Now().Add(-o.since)
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
	}
	cons, err := stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("tail: %w", err)
	}
	msgs, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("tail: %w", err)
	}
	stop := context.AfterFunc(ctx, msgs.Stop)
	defer stop()
	for {
		m, err := msgs.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return fmt.Errorf("tail: %w", err)
		}
		if o.json {
			fmt.Fprintf(w, "%s\n", m.Data())
			continue
		}
		e, err := event.Decode(m.Data())
		if err != nil {
			fmt.Fprintf(w, "%s: %v\n", m.Subject(), err)
			continue
		}
		fmt.Fprintln(w, formatEvent(e, o.color))
	}
}

// ANSI colours by state.
var stateColor = map[string]string{
	"pending": "\x1b[37m", "action_required": "\x1b[33m", "processing": "\x1b[36m", "completed": "\x1b[32m",
	"underpaid": "\x1b[35m", "failed": "\x1b[31m", "canceled": "\x1b[35m", "expired": "\x1b[35m", "unknown": "\x1b[1;33m",
}

// formatEvent renders one event as a human line:
// time source kind id previous -> current (state) amount.
func formatEvent(e event.Event, color bool) string {
	d := e.Data
	status := func(s *event.Status) string {
		if s == nil {
			return "(new)"
		}
		if s.Addendum != "" {
			return s.Status + "+" + s.Addendum
		}
		return s.Status
	}
	state := d.Current.State
	if color {
		if c, ok := stateColor[state]; ok {
			state = c + state + "\x1b[0m"
		}
	}
	id := d.ID
	if d.ParentID != nil {
		id = *d.ParentID + "/" + d.ID
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %-10s %-28s %-40s %s -> %s  %s", e.Time.UTC().Format(time.RFC3339), d.Source, d.Kind, id,
		status(d.Previous), status(&d.Current), state)
	if d.Amount != nil {
		fmt.Fprintf(&b, "  %s %s", d.Amount.Text(), d.Amount.Currency)
	}
	if d.Failure != nil && (d.Failure.Reason != "" || d.Failure.Code != "") {
		fmt.Fprintf(&b, "  [%s]", strings.Trim(d.Failure.Reason+" "+d.Failure.Code, " "))
	}
	return b.String()
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
