// Package statuspage is watcher's status page: one server-rendered HTML page at /
// on the admin listener, and its JSON twin /status.json, showing per source its
// health, last successful poll, an hour of requests and transitions per minute, its
// oldest open and stalled items, the recent committed transitions, the outbox and
// the NATS connection. The page has no external assets and no script: it refreshes
// itself with a meta refresh.
//
// Nothing on the page carries a secret: provider and NATS error texts pass through
// the daemon's redaction, events are shown by id, kind and state only (never the
// item's body), and the access token is never echoed.
//
// # Access
//
// The page follows the admin API's rules (package stateapi): a unix socket needs no
// token; over TCP without a token, reads are open; over TCP with a token, it is
// required. As a browser cannot send a bearer header by itself, GET / and GET
// /status.json also accept the token as the query parameter token (see
// stateapi.Access.CheckPage); no other endpoint does. Answers carry
// Referrer-Policy: no-referrer and Cache-Control: no-store so that the address
// leaves the browser only by being typed or bookmarked.
package statuspage

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/stateapi"
)

// ListedItems is how many open, and how many stalled, items the page lists per
// source, oldest first.
const ListedItems = 10

// Page is what the status page reads. Every func field may be nil unless noted.
type Page struct {
	// Sources are the configured source names in configuration order (required).
	Sources []string
	// Store is the state in use (required).
	Store stateapi.Store
	// Recorder feeds the charts and the recent transitions (required).
	Recorder *Recorder
	// Running returns the health of the sources this process polls.
	Running func() map[string]poller.Health
	// Late returns why a source this process polls has gone too long without a
	// successful cycle (the readiness rule), "" while it has not.
	Late func(source string) string
	// Replica is the replica's id in cluster mode, "" for a single process.
	Replica string
	// Held lists the leases this replica holds (cluster mode).
	Held func() []string
	// NATS returns the connection's status ("CONNECTED", "RECONNECTING", …) and the
	// publisher's or connection's error (nil when fine).
	NATS      func() (string, error)
	MaxOutbox int
	// Redact hides the configuration's secrets in error texts; nil hides nothing.
	Redact *strings.Replacer
	// Now is the clock; nil: time.Now.
	Now func() time.Time
	// Refresh is how often the page reloads itself; 0: 5 seconds.
	Refresh time.Duration
}

// Snapshot is the page's content, and the body of /status.json.
type Snapshot struct {
	Generated time.Time `json:"generated"`
	Replica   string    `json:"replica,omitempty"`
	// Held lists this replica's leases (cluster mode only).
	Held        []string       `json:"held,omitempty"`
	NATS        NATSStatus     `json:"nats"`
	Outbox      OutboxStatus   `json:"outbox"`
	Sources     []SourceStatus `json:"sources"`
	Recent      []Event        `json:"recent"`
	RefreshSecs int            `json:"refresh_seconds"`
}

// NATSStatus is the connection's state.
type NATSStatus struct {
	Status string `json:"status"`
	Error  string `json:"error,omitempty"` // redacted
}

// OutboxStatus is the outbox's depth.
type OutboxStatus struct {
	Depth  int        `json:"depth"`
	Max    int        `json:"max"`
	Oldest *time.Time `json:"oldest,omitempty"`
	Error  string     `json:"error,omitempty"`
}

// SourceStatus is one source.
type SourceStatus struct {
	Name string `json:"name"`
	// Here is true when this process polls the source (always, outside a cluster,
	// once started).
	Here bool `json:"here"`
	// Health is "ok", "failing" (the last cycle failed), "late" (a cycle has been
	// running too long), "starting" (no cycle ended yet), "elsewhere" (another
	// replica polls it) or "stopped".
	Health      string     `json:"health"`
	Error       string     `json:"error,omitempty"` // the last cycle's, redacted
	LastSuccess *time.Time `json:"last_success,omitempty"`
	Items       int        `json:"items"`
	Open        int        `json:"open"`
	Stalled     int        `json:"stalled"`
	// Requests and Transitions count each of the last Minutes minutes, oldest first.
	Requests     []int      `json:"requests_per_minute"`
	Transitions  []int      `json:"transitions_per_minute"`
	OldestOpen   []ItemLink `json:"oldest_open"`
	StalledItems []ItemLink `json:"stalled_items"`
	StateError   string     `json:"state_error,omitempty"`
}

// ItemLink is one listed item and the admin API path of its stored record.
type ItemLink struct {
	ID        string    `json:"id"`
	Kind      string    `json:"kind"`
	Status    string    `json:"status"`
	CreatedAt time.Time `json:"created_at"`
	Href      string    `json:"href"`
}

func (p *Page) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

func (p *Page) redact(s string) string {
	if p.Redact != nil {
		s = p.Redact.Replace(s)
	}
	return strings.ReplaceAll(s, "\n", " ")
}

// Snapshot reads the page's content. A failed state read is shown on the page,
// not returned.
func (p *Page) Snapshot(ctx context.Context) Snapshot {
	refresh := p.Refresh
	if refresh <= 0 {
		refresh = 5 * time.Second
	}
	snap := Snapshot{Generated: p.now().UTC(), Replica: p.Replica, Recent: p.Recorder.Recent(),
		RefreshSecs: int(refresh / time.Second)}
	if p.Held != nil {
		snap.Held = p.Held()
	}
	snap.NATS = p.natsStatus()
	snap.Outbox = p.outbox(ctx)
	running := map[string]poller.Health{}
	if p.Running != nil {
		running = p.Running()
	}
	for _, name := range p.Sources {
		snap.Sources = append(snap.Sources, p.source(ctx, name, running))
	}
	return snap
}

func (p *Page) natsStatus() NATSStatus {
	if p.NATS == nil {
		return NATSStatus{Status: "unknown"}
	}
	status, err := p.NATS()
	n := NATSStatus{Status: status}
	if err != nil {
		n.Error = p.redact(err.Error())
	}
	return n
}

func (p *Page) outbox(ctx context.Context) OutboxStatus {
	n, oldest, err := p.Store.OutboxStats(ctx)
	o := OutboxStatus{Depth: n, Max: p.MaxOutbox}
	if err != nil {
		o.Error = p.redact(err.Error())
	}
	if !oldest.IsZero() {
		o.Oldest = &oldest
	}
	return o
}

// source reads one source's status; running holds the sources this process polls.
func (p *Page) source(ctx context.Context, name string, running map[string]poller.Health) SourceStatus {
	s := SourceStatus{Name: name, Requests: p.Recorder.Requests(name), Transitions: p.Recorder.Transitions(name)}
	h, here := running[name]
	s.Here = here
	switch {
	case !here && p.Replica != "":
		s.Health = "elsewhere"
	case !here:
		s.Health = "stopped"
	case h.Err != nil:
		s.Health, s.Error = "failing", p.redact(h.Err.Error())
	case p.Late != nil && p.Late(name) != "":
		s.Health, s.Error = "late", p.redact(p.Late(name))
	case h.LastSuccess.IsZero():
		s.Health = "starting"
	default:
		s.Health = "ok"
	}
	st, err := p.Store.Stats(ctx, name)
	if err != nil {
		s.StateError = p.redact(err.Error())
		return s
	}
	s.Items, s.Open, s.Stalled = st.Items, st.Open, st.Stalled
	last := h.LastSuccess
	if last.IsZero() {
		last = st.Meta.LastPoll
	}
	if !last.IsZero() {
		s.LastSuccess = &last
	}
	if s.OldestOpen, s.StalledItems, err = p.items(ctx, name); err != nil {
		s.StateError = p.redact(err.Error())
	}
	return s
}

// scanOpen bounds how many open items are read to find the stalled ones.
const scanOpen = 2000

// items returns the oldest open items of source and its oldest stalled ones (among
// the scanOpen oldest open items), at most ListedItems each.
func (p *Page) items(ctx context.Context, source string) (open, stalled []ItemLink, err error) {
	idx, err := p.Store.OpenItems(ctx, source)
	if err != nil {
		return nil, nil, err
	}
	idx = idx[:min(len(idx), scanOpen)]
	ids := make([]string, len(idx))
	for i, o := range idx {
		ids[i] = o.ID
	}
	recs, err := p.Store.Load(ctx, source, ids)
	if err != nil {
		return nil, nil, err
	}
	for _, o := range idx {
		link := ItemLink{ID: o.ID, CreatedAt: o.CreatedAt, Status: string(o.State), Href: recordPath(source, o.ID)}
		r, ok := recs[o.ID]
		if ok {
			link.Kind, link.Status = r.Kind, r.Status.Raw
		}
		if len(open) < ListedItems {
			open = append(open, link)
		}
		if ok && r.Stalled && len(stalled) < ListedItems {
			stalled = append(stalled, link)
		}
		if len(open) == ListedItems && len(stalled) == ListedItems {
			break
		}
	}
	return open, stalled, nil
}

// recordPath is the admin API's path of a stored record.
func recordPath(source, id string) string {
	return "/state/items/" + url.PathEscape(source) + "/" + url.PathEscape(id)
}

// spark returns the SVG path of vals drawn in a w×h box, highest value at the top:
// never empty (all zeros draw a flat line at the bottom).
func spark(vals []int, w, h float64) string {
	top := slices.Max(append([]int{1}, vals...))
	var b strings.Builder
	step := w / float64(max(1, len(vals)-1))
	for i, v := range vals {
		cmd := "L"
		if i == 0 {
			cmd = "M"
		}
		y := h - 1 - (h-2)*float64(v)/float64(top)
		fmt.Fprintf(&b, "%s%.1f %.1f ", cmd, float64(i)*step, y)
	}
	return strings.TrimSpace(b.String())
}

// area returns the SVG path of the region under spark(vals, w, h), closed along
// the bottom edge.
func area(vals []int, w, h float64) string {
	return fmt.Sprintf("%s L%.1f %.1f L0 %.1f Z", spark(vals, w, h), w, h, h)
}
