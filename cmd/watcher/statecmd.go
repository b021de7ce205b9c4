package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/payments-watcher/watcher/config"
	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller/provider"
	"github.com/payments-watcher/watcher/state"
	"github.com/payments-watcher/watcher/state/bbolt"
)

// The state commands read a state file directly when no watcher runs. A running
// watcher holds the file's lock, so then they ask it instead, over the read-only
// /state/ endpoints of its http.listen address; both paths give the same answers,
// in the JSON shapes below.

// sourceInfo is one line of `watcher state sources`.
type sourceInfo struct {
	Name string `json:"name"`
	// Configured is false for a source the file holds but the configuration no longer
	// names (always true without a configuration).
	Configured   bool       `json:"configured"`
	Items        int        `json:"items"`
	Open         int        `json:"open"`
	Stalled      int        `json:"stalled"`
	HighWater    *time.Time `json:"high_water"`
	LastPoll     *time.Time `json:"last_poll"`
	BaselineDone bool       `json:"baseline_done"`
	Rebaseline   bool       `json:"rebaseline"`
}

// statusJSON is a stored status, named as in events.
type statusJSON struct {
	Status   string `json:"status"`
	State    string `json:"state"`
	Addendum string `json:"addendum,omitempty"`
	Terminal bool   `json:"terminal"`
}

// recordJSON is a stored record as `watcher state get` and `export` print it.
type recordJSON struct {
	Source      string       `json:"source"`
	Kind        string       `json:"kind"`
	ID          string       `json:"id"`
	Status      statusJSON   `json:"current"`
	Sequence    uint32       `json:"sequence"`
	CreatedAt   time.Time    `json:"created_at"`
	SettleUntil *time.Time   `json:"settle_until,omitempty"`
	Stalled     bool         `json:"stalled"`
	Nested      []nestedJSON `json:"nested,omitempty"`
}

type nestedJSON struct {
	Kind     string     `json:"kind"`
	ID       string     `json:"id"`
	Status   statusJSON `json:"current"`
	Sequence uint32     `json:"sequence"`
}

// openJSON is one open item.
type openJSON struct {
	ID        string    `json:"id"`
	CreatedAt time.Time `json:"created_at"`
	Kind      string    `json:"kind"`
	Status    string    `json:"status"`
	// State is the state that keeps the item open (a nested item's when the item is
	// final); "" for a final item kept open by its settle window.
	State string `json:"state"`
}

// outboxJSON is one pending event.
type outboxJSON struct {
	Seq      uint64    `json:"seq"`
	Enqueued time.Time `json:"enqueued"`
	Subject  string    `json:"subject"`
	ID       string    `json:"id"`
}

// streamError is the last line of a JSON Lines answer that failed after it started.
type streamError struct {
	Error string `json:"error"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func statusOf(s diff.Status) statusJSON {
	return statusJSON{Status: s.Raw, State: string(s.State), Addendum: s.Addendum, Terminal: s.Terminal}
}

func recordOf(source string, r *diff.Record) recordJSON {
	out := recordJSON{
		Source: source, Kind: r.Kind, ID: r.ID, Status: statusOf(r.Status), Sequence: r.Sequence,
		CreatedAt: r.CreatedAt, SettleUntil: timePtr(r.SettleUntil), Stalled: r.Stalled,
	}
	for _, n := range r.Nested {
		out.Nested = append(out.Nested, nestedJSON{Kind: n.Kind, ID: n.ID, Status: statusOf(n.Status), Sequence: n.Sequence})
	}
	return out
}

// errUnknownSource is wrapped by the errors naming a source neither configured nor in
// the file.
var errUnknownSource = errors.New("unknown source")

// errNotFound is wrapped by the error of a record that is not stored.
var errNotFound = errors.New("not found")

// stateView answers the state commands from an open state file.
type stateView struct {
	store *bbolt.Store
	// configured are the configured source names in configuration order; nil when
	// there is no configuration.
	configured []string
}

// names returns the configured sources, then those only the file holds, sorted.
func (v stateView) names() ([]string, error) {
	inFile, err := v.store.Sources()
	if err != nil {
		return nil, err
	}
	out := slices.Clone(v.configured)
	for _, s := range inFile {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out, nil
}

// check returns an error listing the known sources when source is not one of them.
func (v stateView) check(source string) error {
	names, err := v.names()
	if err != nil {
		return err
	}
	if !slices.Contains(names, source) {
		return unknownSource(source, names)
	}
	return nil
}

func unknownSource(source string, known []string) error {
	list := strings.Join(known, ", ")
	if list == "" {
		list = "none"
	}
	return fmt.Errorf("%w %q (known: %s)", errUnknownSource, source, list)
}

func (v stateView) sources() ([]sourceInfo, error) {
	names, err := v.names()
	if err != nil {
		return nil, err
	}
	out := make([]sourceInfo, 0, len(names))
	for _, n := range names {
		st, err := v.store.Stats(n)
		if err != nil {
			return nil, err
		}
		out = append(out, sourceInfo{
			Name: n, Configured: v.configured == nil || slices.Contains(v.configured, n),
			Items: st.Items, Open: st.Open, Stalled: st.Stalled,
			HighWater: timePtr(st.Meta.HighWater), LastPoll: timePtr(st.Meta.LastPoll),
			BaselineDone: st.Meta.BaselineDone, Rebaseline: st.Meta.Rebaseline,
		})
	}
	return out, nil
}

// record returns the stored record of id; ctx is passed to the store.
func (v stateView) record(ctx context.Context, source, id string) (recordJSON, error) {
	if err := v.check(source); err != nil {
		return recordJSON{}, err
	}
	recs, err := v.store.Load(ctx, source, []string{id})
	if err != nil {
		return recordJSON{}, err
	}
	r, ok := recs[id]
	if !ok {
		return recordJSON{}, fmt.Errorf("source %s: item %q %w", source, id, errNotFound)
	}
	return recordOf(source, r), nil
}

// open returns the open items of source, oldest first; ctx is passed to the store.
func (v stateView) open(ctx context.Context, source string) ([]openJSON, error) {
	if err := v.check(source); err != nil {
		return nil, err
	}
	items, err := v.store.OpenItems(ctx, source)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(items))
	for i, o := range items {
		ids[i] = o.ID
	}
	recs, err := v.store.Load(ctx, source, ids)
	if err != nil {
		return nil, err
	}
	out := make([]openJSON, 0, len(items))
	for _, o := range items {
		j := openJSON{ID: o.ID, CreatedAt: o.CreatedAt, State: string(o.State)}
		if r, ok := recs[o.ID]; ok { // committed since OpenItems otherwise; the index entry is enough
			j.Kind, j.Status = r.Kind, r.Status.Raw
		}
		out = append(out, j)
	}
	return out, nil
}

// exportPage is how many records export reads per read transaction.
const exportPage = 500

// export calls fn with every record of source in id order, a page per short read
// transaction, so that a slow reader never holds one open.
func (v stateView) export(source string, fn func(recordJSON) error) error {
	if err := v.check(source); err != nil {
		return err
	}
	after := ""
	for {
		recs, err := v.store.Records(source, after, exportPage)
		if err != nil {
			return err
		}
		for i := range recs {
			if err := fn(recordOf(source, &recs[i])); err != nil {
				return err
			}
		}
		if len(recs) < exportPage {
			return nil
		}
		after = recs[len(recs)-1].ID
	}
}

// outbox calls fn with the pending events in order, at most limit (0: all); ctx is
// passed to the store.
func (v stateView) outbox(ctx context.Context, limit int, fn func(outboxJSON) error) error {
	var after uint64
	n := 0
	for {
		page := exportPage
		if limit > 0 {
			page = min(page, limit-n)
		}
		if page <= 0 {
			return nil
		}
		es, err := v.store.Pending(ctx, after, page)
		if err != nil {
			return err
		}
		for _, e := range es {
			if err := fn(outboxJSON{Seq: e.Seq, Enqueued: e.Enqueued, Subject: e.Msg.Subject, ID: e.Msg.ID}); err != nil {
				return err
			}
		}
		n += len(es)
		if len(es) < page {
			return nil
		}
		after = es[len(es)-1].Seq
	}
}

// stateReader is what the state commands ask: a state file, or a running watcher.
type stateReader interface {
	sources(ctx context.Context) ([]sourceInfo, error)
	record(ctx context.Context, source, id string) (recordJSON, error)
	open(ctx context.Context, source string) ([]openJSON, error)
	export(ctx context.Context, source string, fn func(recordJSON) error) error
	outbox(ctx context.Context, limit int, fn func(outboxJSON) error) error
}

// fileReader reads a state file opened read-only.
type fileReader struct{ v stateView }

func (f fileReader) sources(context.Context) ([]sourceInfo, error) { return f.v.sources() }
func (f fileReader) record(ctx context.Context, source, id string) (recordJSON, error) {
	return f.v.record(ctx, source, id)
}
func (f fileReader) open(ctx context.Context, source string) ([]openJSON, error) {
	return f.v.open(ctx, source)
}
func (f fileReader) export(_ context.Context, source string, fn func(recordJSON) error) error {
	return f.v.export(source, fn)
}
func (f fileReader) outbox(ctx context.Context, limit int, fn func(outboxJSON) error) error {
	return f.v.outbox(ctx, limit, fn)
}

// remoteReader asks a running watcher over its HTTP address.
type remoteReader struct {
	addr   string // host:port
	client *http.Client
}

func newRemote(addr string) *remoteReader {
	return &remoteReader{addr: addr, client: &http.Client{Transport: &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		ResponseHeaderTimeout: time.Minute, // counting a large source's records takes a while
	}}}
}

func (r *remoteReader) url(parts ...string) string {
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return "http://" + r.addr + "/state/" + strings.Join(parts, "/")
}

// do sends a request and returns the response of a 2xx answer; any other answer
// becomes an error carrying the watcher's message.
func (r *remoteReader) do(ctx context.Context, method, u string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("the running watcher at %s: %w", r.addr, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var se streamError
	if json.Unmarshal(body, &se) == nil && se.Error != "" {
		if resp.StatusCode/100 == 4 {
			return nil, errors.New(se.Error) // the watcher's own message names what is wrong
		}
		return nil, fmt.Errorf("the running watcher at %s answered %s: %s", r.addr, resp.Status, se.Error)
	}
	// Not a watcher's answer: another server, or a watcher without /state/ endpoints.
	return nil, fmt.Errorf("%s %s: %s: %s", method, u, resp.Status, provider.Clip(strings.TrimSpace(string(body)), 200))
}

func (r *remoteReader) getJSON(ctx context.Context, v any, parts ...string) error {
	resp, err := r.do(ctx, http.MethodGet, r.url(parts...))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("the running watcher at %s: reading its answer: %w", r.addr, err)
	}
	return nil
}

// lines decodes a JSON Lines answer, calling fn with each line's bytes; a final error
// line becomes the error returned.
func (r *remoteReader) lines(ctx context.Context, u string, fn func([]byte) error) error {
	resp, err := r.do(ctx, http.MethodGet, u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if bytes.HasPrefix(line, []byte(`{"error":`)) {
			var se streamError
			if json.Unmarshal(line, &se) == nil {
				return fmt.Errorf("the running watcher at %s: %s", r.addr, se.Error)
			}
		}
		if err := fn(line); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("the running watcher at %s: reading its answer: %w", r.addr, err)
	}
	return nil
}

func (r *remoteReader) sources(ctx context.Context) ([]sourceInfo, error) {
	var out []sourceInfo
	return out, r.getJSON(ctx, &out, "sources")
}

func (r *remoteReader) record(ctx context.Context, source, id string) (recordJSON, error) {
	var out recordJSON
	return out, r.getJSON(ctx, &out, "items", source, id)
}

func (r *remoteReader) open(ctx context.Context, source string) ([]openJSON, error) {
	var out []openJSON
	return out, r.getJSON(ctx, &out, "open", source)
}

func (r *remoteReader) export(ctx context.Context, source string, fn func(recordJSON) error) error {
	return r.lines(ctx, r.url("export", source), func(b []byte) error {
		var rec recordJSON
		if err := json.Unmarshal(b, &rec); err != nil {
			return fmt.Errorf("the running watcher at %s: reading its answer: %w", r.addr, err)
		}
		return fn(rec)
	})
}

func (r *remoteReader) outbox(ctx context.Context, limit int, fn func(outboxJSON) error) error {
	u := r.url("outbox")
	if limit > 0 {
		u += "?limit=" + strconv.Itoa(limit)
	}
	return r.lines(ctx, u, func(b []byte) error {
		var e outboxJSON
		if err := json.Unmarshal(b, &e); err != nil {
			return fmt.Errorf("the running watcher at %s: reading its answer: %w", r.addr, err)
		}
		return fn(e)
	})
}

func (r *remoteReader) rebaseline(ctx context.Context, source string) error {
	resp, err := r.do(ctx, http.MethodPost, r.url("rebaseline", source))
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

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
  watcher state rebaseline SOURCE       make the next cycle of SOURCE a silent baseline

Flags (before or after the arguments):
  --config FILE   the watcher's configuration: state.path, http.listen and the sources (default watcher.yaml)
  --state FILE    the state file, instead of --config
  --addr ADDR     the running watcher's http.listen address, instead of the configuration's

While a watcher runs it holds the state file, and the commands ask it over http.listen instead.
`

// stateOptions are the parsed flags and arguments of a state command.
type stateOptions struct {
	cmd        string
	args       []string
	path       string   // state file
	addr       string   // running watcher's address; "" when unknown
	addrErr    error    // why addr is unknown
	configured []string // configured source names; nil without a configuration
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
	want := map[string]int{"sources": 0, "get": 2, "open": 1, "export": 1, "outbox": 0, "check": 0, "rebaseline": 1}
	n, ok := want[o.cmd]
	if !ok {
		return nil, badCommandLine(stderr, stateUsage, fmt.Errorf("state: unknown subcommand %q", o.cmd))
	}
	fs := flag.NewFlagSet("watcher state "+o.cmd, flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), stateUsage) }
	cfgPath := fs.String("config", "", "configuration `file`")
	statePath := fs.String("state", "", "state `file`")
	addr := fs.String("addr", "", "the running watcher's http.listen `address`")
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
		o.path = cfg.State.Path
		o.configured = []string{}
		for _, s := range cfg.Sources {
			o.configured = append(o.configured, s.Name)
		}
		o.addr, o.addrErr = dialAddr(cfg.HTTP.Listen)
	}
	if *addr != "" {
		o.addr, o.addrErr = *addr, nil
	}
	return o, nil
}

// dialAddr turns an http.listen address into one to connect to: an unspecified host
// is this machine.
func dialAddr(listen string) (string, error) {
	if listen == "" {
		return "", errors.New("http.listen is empty, so it serves no /state/ endpoints")
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("http.listen %q: %w", listen, err)
	}
	if port == "0" {
		return "", fmt.Errorf("http.listen %q has port 0, so its address is unknown: give --addr", listen)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port), nil
}

// stateCommand runs `watcher state ...`.
func stateCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseStateArgs(args, stdout, stderr)
	if err != nil {
		return err
	}
	switch o.cmd {
	case "check":
		return stateCheck(o, stdout)
	case "rebaseline":
		return stateRebaseline(ctx, o, stdout, stderr)
	}

	var rd stateReader
	store, err := bbolt.OpenReadOnly(o.path, stateLockTimeout)
	switch {
	case err == nil:
		defer store.Close()
		fmt.Fprintf(stderr, "watcher state: read from state file %s\n", o.path)
		rd = fileReader{stateView{store: store, configured: o.configured}}
	case errors.Is(err, bbolt.ErrLocked):
		if o.addrErr != nil {
			return fmt.Errorf("state file %s is in use by a running watcher, which cannot be asked: %w", o.path, o.addrErr)
		}
		fmt.Fprintf(stderr, "watcher state: state file %s is in use; read from the running watcher at %s\n", o.path, o.addr)
		rd = newRemote(o.addr)
	default:
		return withRecovery(err, o.path, false)
	}
	return printState(ctx, o, rd, stdout)
}

func printState(ctx context.Context, o *stateOptions, rd stateReader, stdout io.Writer) error {
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	switch o.cmd {
	case "sources":
		list, err := rd.sources(ctx)
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
		rec, err := rd.record(ctx, o.args[0], o.args[1])
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
		list, err := rd.open(ctx, o.args[0])
		if err != nil {
			return err
		}
		for _, it := range list {
			st := it.State
			if st == "" {
				st = "settling"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", it.ID, it.CreatedAt.UTC().Format(time.RFC3339), it.Status, st)
		}
		return nil
	case "export":
		enc := json.NewEncoder(w)
		return rd.export(ctx, o.args[0], func(r recordJSON) error { return enc.Encode(r) })
	case "outbox":
		return rd.outbox(ctx, o.limit, func(e outboxJSON) error {
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

// stateRebaseline sets Meta.Rebaseline of a source in the file, or asks the running
// watcher to.
func stateRebaseline(ctx context.Context, o *stateOptions, stdout, stderr io.Writer) error {
	source := o.args[0]
	// Open would create a missing file; a watcher that never ran baselines anyway.
	if _, err := os.Stat(o.path); err != nil {
		return fmt.Errorf("state file %s: %w", o.path, err)
	}
	store, err := bbolt.Open(o.path, bbolt.Options{LockTimeout: stateLockTimeout})
	switch {
	case errors.Is(err, bbolt.ErrLocked):
		if o.addrErr != nil {
			return fmt.Errorf("state file %s is in use by a running watcher, which cannot be asked: %w", o.path, o.addrErr)
		}
		fmt.Fprintf(stderr, "watcher state: state file %s is in use; asking the running watcher at %s\n", o.path, o.addr)
		if err := newRemote(o.addr).rebaseline(ctx, source); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "source %s: rebaseline requested; the running watcher re-records every item without publishing at its next cycle\n", source)
		return nil
	case err != nil:
		return withRecovery(err, o.path, false)
	}
	if err := rebaselineFile(ctx, store, o.configured, source); err != nil {
		_ = store.Close()
		return err
	}
	if err := store.Close(); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "watcher state: wrote to state file %s\n", o.path)
	fmt.Fprintf(stdout, "source %s: rebaseline requested; the next watcher run re-records every item without publishing at its first cycle\n", source)
	return nil
}

// rebaselineFile sets Meta.Rebaseline of source, which must be one of configured (or
// of the file's sources when configured is nil).
func rebaselineFile(ctx context.Context, store *bbolt.Store, configured []string, source string) error {
	known := configured
	if known == nil {
		var err error
		if known, err = store.Sources(); err != nil {
			return err
		}
	}
	if !slices.Contains(known, source) {
		return unknownSource(source, known)
	}
	meta, err := store.Meta(ctx, source)
	if err != nil {
		return err
	}
	meta.Rebaseline = true
	return store.Commit(ctx, source, state.Batch{Meta: &meta})
}
