// Command audit-trail keeps every message of watcher's JetStream stream in an
// append-only PostgreSQL audit trail, each event linked into a SHA-256 hash chain
// per source, and proves it: `audit-trail verify` checks the chains and finds the
// stream sequences and item sequences the trail lacks.
//
//	audit-trail setup --dsn OWNER_DSN --writer ROLE   create the tables, grant ROLE INSERT and SELECT
//	audit-trail [flags]                               store events, connected as the writer
//	audit-trail verify [flags]                        check the trail against itself and the stream
//	audit-trail --history SOURCE ID                   print an item's status history
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "audit-trail:", err)
		os.Exit(1)
	}
}

// options are the command line.
type options struct {
	natsURL, creds string
	stream, prefix string
	consumer       string
	deliver        string // "all" or "new": where a newly created consumer starts
	dsn            string
	batch          int
	linger         time.Duration
	ackWait        time.Duration
	maxBackoff     time.Duration
	logLevel       slog.Level
	// historySource and historyID are set by --history SOURCE ID.
	historySource, historyID string
	command                  string // "" (store events), "setup" or "verify"
	writer                   string // setup: the role granted INSERT and SELECT
}

// parseOptions reads flags, with DATABASE_URL and NATS_URL as defaults for --dsn and
// --nats.
func parseOptions(args []string, lookupEnv func(string) (string, bool), stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("audit-trail", flag.ContinueOnError)
	fs.SetOutput(stderr)
	env := func(name, def string) string {
		if v, ok := lookupEnv(name); ok && v != "" {
			return v
		}
		return def
	}
	var o options
	if len(args) > 0 && (args[0] == "setup" || args[0] == "verify") {
		o.command, args = args[0], args[1:]
	}
	fs.StringVar(&o.writer, "writer", "", "setup: the `role` audit-trail runs as, granted INSERT and SELECT only")
	fs.StringVar(&o.natsURL, "nats", env("NATS_URL", nats.DefaultURL), "NATS server `url` (env NATS_URL)")
	fs.StringVar(&o.creds, "creds", "", "NATS credentials `file`")
	fs.StringVar(&o.stream, "stream", "PAYMENT_EVENTS", "JetStream `stream`")
	fs.StringVar(&o.prefix, "prefix", "payments", "subject `prefix` of the events")
	fs.StringVar(&o.consumer, "consumer", "audit-trail", "durable consumer `name`")
	fs.StringVar(&o.deliver, "deliver", "all", "where a new consumer starts: all (the whole stream) or new (events published from now on)")
	fs.StringVar(&o.dsn, "dsn", env("DATABASE_URL", ""), "PostgreSQL connection `string`, URL or key=value (env DATABASE_URL)")
	fs.IntVar(&o.batch, "batch", 100, "most events inserted in one transaction")
	fs.DurationVar(&o.linger, "linger", 20*time.Millisecond, "how long a batch waits for one more event")
	fs.DurationVar(&o.ackWait, "ack-wait", 30*time.Second, "JetStream ack wait: an unacknowledged event is redelivered after this")
	fs.DurationVar(&o.maxBackoff, "max-backoff", 30*time.Second, "longest wait between two attempts of a failing insert")
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&o.historySource, "history", "", "print the status history of the item `SOURCE ID` (the item id is the argument after the source) and exit")
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	var errs []error
	if o.historySource != "" && fs.NArg() > 0 {
		// The id follows the source; flags may come after it.
		o.historyID = fs.Arg(0)
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return options{}, err
		}
	}
	switch {
	case o.historySource != "" && o.historyID != "" && fs.NArg() == 0:
	case o.historySource != "":
		errs = append(errs, fmt.Errorf("--history %s: want one item id after the source, got %q", o.historySource, append([]string{o.historyID}, fs.Args()...)))
	case fs.NArg() > 0:
		errs = append(errs, fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	if err := o.logLevel.UnmarshalText([]byte(*level)); err != nil {
		errs = append(errs, fmt.Errorf("--log-level %q: %w", *level, err))
	}
	if o.dsn == "" {
		errs = append(errs, errors.New("--dsn (or DATABASE_URL) is required"))
	}
	if (o.command == "setup") != (o.writer != "") {
		errs = append(errs, errors.New("--writer is required by setup, and only by it"))
	}
	if o.command != "" && o.historySource != "" {
		errs = append(errs, fmt.Errorf("--history does not go with %s", o.command))
	}
	if o.deliver != "new" && o.deliver != "all" {
		errs = append(errs, fmt.Errorf("--deliver %q: want all or new", o.deliver))
	}
	if o.consumer == "" || strings.ContainsAny(o.consumer, ".*> \t") {
		errs = append(errs, fmt.Errorf("--consumer %q: want a name without dots, wildcards or spaces", o.consumer))
	}
	if !validPrefix(o.prefix) {
		errs = append(errs, fmt.Errorf("--prefix %q: want a subject prefix without wildcards", o.prefix))
	}
	if o.batch < 1 || o.batch > 10000 {
		errs = append(errs, fmt.Errorf("--batch %d: want 1 to 10000", o.batch))
	}
	for name, d := range map[string]time.Duration{"--linger": o.linger, "--ack-wait": o.ackWait, "--max-backoff": o.maxBackoff} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s %s: want a positive duration", name, d))
		}
	}
	return o, errors.Join(errs...)
}

// run parses args, opens the database and runs the command: setup, verify, a
// history, or storing events until ctx ends.
func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
	o, err := parseOptions(args, lookupEnv, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: o.logLevel}))
	pool, err := openDB(ctx, o.dsn)
	if err != nil {
		return err
	}
	defer pool.Close()
	switch {
	case o.command == "setup":
		if err := setupSchema(ctx, pool, o.writer); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "audit-trail: tables ready; %s may INSERT and SELECT only\n", o.writer)
		return nil
	case o.historySource != "":
		return printHistory(ctx, pool, o.historySource, o.historyID, stdout)
	}
	js, closeNATS, err := connectNATS(o)
	if err != nil {
		return err
	}
	defer closeNATS()
	if o.command == "verify" {
		return runVerify(ctx, pool, js, o.stream, stdout)
	}
	if err := checkWriter(ctx, pool); err != nil {
		return err
	}
	log.Info("auditing", "stream", o.stream, "consumer", o.consumer, "subjects", o.prefix+".>")
	a := &auditor{o: o, pool: pool, log: log, now: time.Now}
	return a.Run(ctx, js)
}

// connectNATS connects to o's NATS server.
func connectNATS(o options) (jetstream.JetStream, func(), error) {
	natsOpts := []nats.Option{nats.Name("audit-trail")}
	if o.creds != "" {
		natsOpts = append(natsOpts, nats.UserCredentials(o.creds))
	}
	nc, err := nats.Connect(o.natsURL, natsOpts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS at %s: %w", o.natsURL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return js, nc.Close, nil
}

// runVerify reads the stream's range and verifies the trail against it, printing
// the report; it is an error when the report has problems.
func runVerify(ctx context.Context, pool *pgxpool.Pool, js jetstream.JetStream, name string, stdout io.Writer) error {
	sr, err := readStreamRange(ctx, js, name)
	if err != nil {
		return err
	}
	r, err := verify(ctx, pool, sr)
	if err != nil {
		return err
	}
	r.print(stdout, sr)
	if len(r.problems) > 0 {
		return fmt.Errorf("verify: %d problems", len(r.problems))
	}
	return nil
}

// readStreamRange is the stream's first and last sequence and its deleted ones.
func readStreamRange(ctx context.Context, js jetstream.JetStream, name string) (streamRange, error) {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return streamRange{}, fmt.Errorf("stream %s: %w", name, err)
	}
	info, err := s.Info(ctx, jetstream.WithDeletedDetails(true))
	if err != nil {
		return streamRange{}, fmt.Errorf("stream %s: %w", name, err)
	}
	sr := streamRange{first: info.State.FirstSeq, last: info.State.LastSeq, deleted: map[uint64]bool{}}
	for _, d := range info.State.Deleted {
		sr.deleted[d] = true
	}
	return sr, nil
}
