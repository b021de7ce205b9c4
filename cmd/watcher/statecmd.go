package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payments-watcher/watcher/config"
	"github.com/payments-watcher/watcher/publish"
	"github.com/payments-watcher/watcher/state/bbolt"
	"github.com/payments-watcher/watcher/state/natskv"
	"github.com/payments-watcher/watcher/stateapi"
)

// The state commands read the state directly when they can: a bbolt file no watcher
// holds, or the NATS KV buckets of a cluster (connecting as the daemon does). A
// running watcher holds its bbolt file's lock, so then they ask it instead, over the
// /state/ endpoints of its admin listener (admin.listen); --addr asks a running
// watcher or replica in any case. Both paths give the same answers (package
// stateapi).

// stateLockTimeout is how long the commands wait for the state file's lock before
// concluding that a watcher holds it.
const stateLockTimeout = 500 * time.Millisecond

const stateUsage = `Usage:
  watcher state sources                 one line per source: items, open, stalled, high-water mark, last poll
  watcher state get SOURCE ID           the stored record of an item, as JSON
  watcher state open SOURCE             one line per open item: id, created, status, state
  watcher state export SOURCE           every record of a source, as JSON Lines
  watcher state outbox [--limit N]      the events waiting for NATS: seq, enqueued, subject, id
  watcher state check                   bbolt's consistency check of the file (watcher stopped)
  watcher state compact                 rewrite the file without its free pages (watcher stopped)
  watcher state rebaseline SOURCE       make the next cycle of SOURCE a silent baseline

Flags (before or after the arguments):
  --config FILE   the watcher's configuration: state, admin and the sources (default watcher.yaml)
  --state FILE    a bbolt state file, instead of --config
  --addr ADDR     ask the running watcher's admin listener at ADDR (host:port or unix:/PATH), instead of
                  the configuration's admin.listen

With state.backend bbolt the commands read the file, or, while a watcher runs and holds it, ask the
watcher over admin.listen. With state.backend nats_kv they read the NATS KV buckets, connecting as the
daemon does, unless --addr names a replica to ask. The admin token is read from admin.token_file.
`

// stateOptions are the parsed flags and arguments of a state command.
type stateOptions struct {
	cmd        string
	args       []string
	cfg        *config.Config // nil with --state
	path       string         // the bbolt state file; "" with state.backend nats_kv
	addr       string         // the admin listener to ask; "" when unknown
	addrErr    error          // why addr is unknown
	asked      bool           // --addr was given
	token      string         // admin token
	configured []string       // configured source names; nil without a configuration
	limit      int
}

// parseStateArgs reads a state command line: the subcommand, then its arguments and
// flags in any order. Help and --version go to stdout, a bad command line to stderr
// with the usage (see parseFlags).
func parseStateArgs(args []string, stdout, stderr io.Writer) (*stateOptions, error) {
	if len(args) == 0 {
		return nil, badCommandLine(stderr, stateUsage, errors.New("state: missing subcommand"))
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, stateUsage)
		return nil, flag.ErrHelp
	case "-version", "--version":
		printVersion(stdout)
		return nil, errVersionShown
	}
	o := &stateOptions{cmd: args[0]}
	want := map[string]int{"sources": 0, "get": 2, "open": 1, "export": 1, "outbox": 0, "check": 0, "compact": 0, "rebaseline": 1}
	n, ok := want[o.cmd]
	if !ok {
		return nil, badCommandLine(stderr, stateUsage, fmt.Errorf("state: unknown subcommand %q", o.cmd))
	}
	fs := flag.NewFlagSet("watcher state "+o.cmd, flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), stateUsage) }
	cfgPath := fs.String("config", "", "configuration `file`")
	statePath := fs.String("state", "", "state `file`")
	addr := fs.String("addr", "", "the running watcher's admin listener `address`")
	fs.IntVar(&o.limit, "limit", 0, "at most this many outbox entries (0: all)")
	rest := args[1:]
	for {
		if err := parseFlags(fs, rest, stdout, stderr); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		o.args = append(o.args, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(o.args) != n {
		return nil, badCommandLine(stderr, stateUsage, fmt.Errorf("state %s: want %d argument(s), got %d", o.cmd, n, len(o.args)))
	}
	if o.limit < 0 {
		return nil, fmt.Errorf("state %s: --limit %d is negative", o.cmd, o.limit)
	}
	switch {
	case *statePath != "" && *cfgPath != "":
		return nil, errors.New("state: give --config or --state, not both")
	case *statePath != "":
		o.path = *statePath
		o.addrErr = errors.New("its address is unknown: give --config or --addr")
	default:
		if *cfgPath == "" {
			*cfgPath = "watcher.yaml"
		}
		cfg, err := config.Load(*cfgPath)
		if err != nil {
			return nil, err
		}
		o.cfg, o.token = cfg, cfg.Admin.Token
		if cfg.State.Backend != "nats_kv" {
			o.path = cfg.State.Path
		}
		o.configured = []string{}
		for _, s := range cfg.Sources {
			o.configured = append(o.configured, s.Name)
		}
		o.addr = cfg.Admin.Listen
		if o.addr == "" {
			o.addrErr = errors.New("admin.listen is empty, so it serves no /state/ endpoints")
		}
	}
	if *addr != "" {
		o.addr, o.addrErr, o.asked = *addr, nil, true
	}
	return o, nil
}

// client returns a Client of the admin listener o names.
func (o *stateOptions) client() (*stateapi.Client, error) {
	if o.addrErr != nil {
		return nil, o.addrErr
	}
	c, err := stateapi.NewClient(o.addr, o.token)
	if err != nil {
		return nil, fmt.Errorf("admin.listen %w", err)
	}
	return c, nil
}

// stateCommand runs `watcher state ...`.
func stateCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseStateArgs(args, stdout, stderr)
	if err != nil {
		return err
	}
	if o.cmd == "check" {
		return stateCheck(o, stdout)
	}
	if o.cmd == "compact" {
		return stateCompact(o, stdout)
	}
	rd, done, err := openState(ctx, o, stderr)
	if err != nil {
		return err
	}
	if o.cmd == "rebaseline" {
		err = stateRebaseline(ctx, o, rd, stdout)
		if cerr := done(); err == nil {
			err = cerr
		}
		return err
	}
	defer done()
	return printState(ctx, o, rd, stdout)
}

// openState returns what the command reads (and rebaseline writes), saying on
// stderr which it is, and the function that releases it.
func openState(ctx context.Context, o *stateOptions, stderr io.Writer) (stateapi.Reader, func() error, error) {
	noop := func() error { return nil }
	verb := "read from"
	if o.cmd == "rebaseline" {
		verb = "asking"
	}
	if o.path == "" && !o.asked {
		return openKV(ctx, o, stderr)
	}
	if o.path == "" {
		c, err := o.client()
		if err != nil {
			return nil, nil, err
		}
		fmt.Fprintf(stderr, "watcher state: %s the running watcher at %s\n", verb, c.Addr())
		return c, noop, nil
	}
	store, err := openFile(o)
	switch {
	case err == nil:
		if o.cmd != "rebaseline" {
			fmt.Fprintf(stderr, "watcher state: read from state file %s\n", o.path)
		}
		done := func() error {
			if err := store.Close(); err != nil {
				return err
			}
			if o.cmd == "rebaseline" {
				fmt.Fprintf(stderr, "watcher state: wrote to state file %s\n", o.path)
			}
			return nil
		}
		return stateapi.NewView(stateapi.Bolt(store), o.configured), done, nil
	case errors.Is(err, bbolt.ErrLocked):
		c, cerr := o.client()
		if cerr != nil {
			return nil, nil, fmt.Errorf("state file %s is in use by a running watcher, which cannot be asked: %w", o.path, cerr)
		}
		fmt.Fprintf(stderr, "watcher state: state file %s is in use; %s the running watcher at %s\n", o.path, verb, c.Addr())
		return c, noop, nil
	default:
		return nil, nil, withRecovery(err, o.path, false)
	}
}

// openFile opens the state file: read-only, or for a rebaseline read-write (without
// creating a missing file: a watcher that never ran baselines anyway).
func openFile(o *stateOptions) (*bbolt.Store, error) {
	if o.cmd != "rebaseline" {
		return bbolt.OpenReadOnly(o.path, stateLockTimeout)
	}
	if _, err := os.Stat(o.path); err != nil {
		return nil, fmt.Errorf("state file %s: %w", o.path, err)
	}
	return bbolt.Open(o.path, bbolt.Options{LockTimeout: stateLockTimeout})
}

// openKV connects to NATS as the daemon does and reads the state buckets the
// configuration names.
func openKV(ctx context.Context, o *stateOptions, stderr io.Writer) (stateapi.Reader, func() error, error) {
	cfg := o.cfg
	nc, err := publish.Connect(cfg.NATS.URL, cfg.NATS, nil)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("nats: %w", err)
	}
	store, err := natskv.Open(ctx, js, natskv.Options{
		Prefix: cfg.State.NATSKV.BucketPrefix, Replicas: cfg.State.NATSKV.Replicas,
		DuplicateWindow: cfg.NATS.DuplicateWindow, Reader: true,
	})
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	fmt.Fprintf(stderr, "watcher state: read from the NATS KV state (bucket prefix %s) at %s\n", cfg.State.NATSKV.BucketPrefix, nc.ConnectedUrlRedacted())
	return stateapi.NewView(stateapi.KV(store), o.configured), func() error { nc.Close(); return nil }, nil
}

func printState(ctx context.Context, o *stateOptions, rd stateapi.Reader, stdout io.Writer) error {
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	switch o.cmd {
	case "sources":
		list, err := rd.Sources(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "SOURCE\tITEMS\tOPEN\tSTALLED\tHIGH-WATER\tLAST POLL\tNOTE")
		for _, s := range list {
			var notes []string
			if !s.Configured {
				notes = append(notes, "not configured")
			}
			if !s.BaselineDone {
				notes = append(notes, "no baseline yet")
			}
			if s.Rebaseline {
				notes = append(notes, "rebaseline requested")
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%s\n", s.Name, s.Items, s.Open, s.Stalled,
				formatTime(s.HighWater), formatTime(s.LastPoll), strings.Join(notes, ", "))
		}
		return tw.Flush()
	case "get":
		rec, err := rd.Record(ctx, o.args[0], o.args[1])
		if err != nil {
			return err
		}
		b, err := json.MarshalIndent(rec, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	case "open":
		list, err := rd.Open(ctx, o.args[0])
		if err != nil {
			return err
		}
		for _, it := range list {
			st := it.State
			if st == "" {
				st = "settling"
			}
			read := "-"
			if it.LastRead != nil {
				read = it.LastRead.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", it.ID, it.CreatedAt.UTC().Format(time.RFC3339), it.Status, st, read)
		}
		return nil
	case "export":
		enc := json.NewEncoder(w)
		return rd.Export(ctx, o.args[0], func(r stateapi.Record) error { return enc.Encode(r) })
	case "outbox":
		return rd.Outbox(ctx, o.limit, func(e stateapi.OutboxEntry) error {
			_, err := fmt.Fprintf(w, "%d\t%s\t%s\t%s\n", e.Seq, e.Enqueued.UTC().Format(time.RFC3339Nano), e.Subject, e.ID)
			return err
		})
	}
	return fmt.Errorf("state: unknown subcommand %q", o.cmd)
}

func formatTime(t *time.Time) string {
	if t == nil {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}

// stateCheck runs the consistency check, which needs the file to itself.
func stateCheck(o *stateOptions, stdout io.Writer) error {
	if o.path == "" {
		return errors.New("state check reads a bbolt state file; with state.backend nats_kv the state is in NATS, whose own tools check it (nats stream info, nats kv status)")
	}
	store, err := bbolt.OpenReadOnly(o.path, stateLockTimeout)
	if errors.Is(err, bbolt.ErrLocked) {
		return fmt.Errorf("state check needs the watcher stopped: state file %s is in use by a running watcher (a check reads the whole file, which a running watcher keeps changing); stop it, then run the check again", o.path)
	}
	if err != nil {
		return withRecovery(err, o.path, true)
	}
	defer store.Close()
	if err := store.Check(); err != nil {
		return withRecovery(err, o.path, true)
	}
	fmt.Fprintf(stdout, "state file %s: no problems found\n", o.path)
	return nil
}

// stateRebaseline asks rd for a rebaseline of the source: written to a bbolt file
// or to the shared KV state, or asked of the running watcher.
func stateRebaseline(ctx context.Context, o *stateOptions, rd stateapi.Reader, stdout io.Writer) error {
	source := o.args[0]
	if err := rd.Rebaseline(ctx, source); err != nil {
		return err
	}
	_, asked := rd.(*stateapi.Client)
	switch {
	case asked:
		fmt.Fprintf(stdout, "source %s: rebaseline requested; the running watcher re-records every item without publishing at its next cycle\n", source)
	case o.path != "":
		fmt.Fprintf(stdout, "source %s: rebaseline requested; the next watcher run re-records every item without publishing at its first cycle\n", source)
	default:
		fmt.Fprintf(stdout, "source %s: rebaseline requested; the replica polling it re-records every item without publishing at its next cycle\n", source)
	}
	return nil
}
