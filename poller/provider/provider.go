// Package provider is the contract between the poller and the provider adapters
// (one sub-package of poller per provider): what an adapter is given, what it returns,
// and how it reports provider errors. Adapters map provider responses to diff.Items;
// they never sleep, and retry nothing but a refused authentication they can correct
// (Coindirect's stale Hawk timestamp and query signing, once per request). The only
// state they keep between calls is what such a correction learnt (a clock offset, a
// signing), reported to the poller as an Anomaly through AnomalyReporter.
package provider

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/payments-watcher/watcher/diff"
)

// Request asks for one page of a provider list, newest first.
type Request struct {
	// Cursor is the opaque value a previous Page returned in Next; "" asks for the
	// newest page and starts a walk (the adapter pins the walk's upper time bound then,
	// where the provider supports one).
	Cursor string
	// From is an inclusive lower bound on creation time; zero means none. It is only
	// read when Cursor is "" (a cursor carries the walk's filters).
	From time.Time
}

// Page is one page of a list.
type Page struct {
	// Items are the well-formed items of the page, in the provider's order (newest first).
	Items []diff.Item
	// Skipped are the malformed items of the page, which the poller logs and counts.
	Skipped []Skipped
	// Next is the cursor of the following (older) page; "" when this is the last page.
	Next string
}

// Skipped is an item an adapter could not map.
type Skipped struct {
	ID     string // "" when the item has no usable id
	Reason string
}

// Source lists one provider endpoint's items, newest first, one page per call.
// Implementations must be safe for use by one goroutine at a time; they do not retry.
type Source interface {
	Page(ctx context.Context, req Request) (Page, error)
}

// Getter is implemented by sources whose provider can read one item by id.
type Getter interface {
	// Get reads one top-level item. It returns an error wrapping ErrNotFound when the
	// provider says the item does not exist.
	Get(ctx context.Context, id string) (diff.Item, error)
}

// ErrNotFound means the provider answered 404 for an item.
var ErrNotFound = errors.New("item not found")

// Settings is one configured source as an adapter needs it: the keys every source
// has, and the provider's own keys (Provider.Keys) in Values. Secrets are plain
// strings here: the adapter puts them on the wire and nowhere else.
type Settings struct {
	Name     string // the configured source name
	BaseURL  string // without a trailing slash
	PageSize int
	// TerminalStatuses, when set, replaces the provider's terminal set (only for
	// providers whose statuses are undocumented, Provider.TerminalOverride).
	TerminalStatuses []string
	// Values holds the provider's own keys by name, as the configuration gives them:
	// defaults applied, *_file twins read, a Bool key "true" or "false". A key absent
	// from the map is "". An adapter validates them in Provider.New.
	Values map[string]string
}

// Value returns the provider key's value, "" when it is not set.
func (s Settings) Value(key string) string { return s.Values[key] }

// With returns a copy of s whose key is value; s is unchanged (Values is copied).
func (s Settings) With(key, value string) Settings {
	v := make(map[string]string, len(s.Values)+1)
	for k, x := range s.Values {
		v[k] = x
	}
	v[key] = value
	s.Values = v
	return s
}

// Key describes one configuration key of a provider's own, written in a source's
// mapping beside the keys every source has. The configuration decodes, checks and
// prints a provider's keys from these descriptions alone.
type Key struct {
	Name string // the YAML key ("api_key")
	// Secret keys are credentials: they may instead be read from a file named by a
	// Name+"_file" twin key, are redacted in `config check` output and in logs, and a
	// file holding one draws a warning when other users may read it.
	Secret bool
	// Required keys are the provider's credentials: a source must set them (or their
	// _file twin), and refusal advice names them.
	Required bool
	// Bool keys take true or false; their Values entry is "true" or "false".
	Bool bool
	// Default is the value of a key the source leaves out; "" for none.
	Default string
	// Early keys are printed by `config check` right after ca_file, with the
	// connection settings; the others after terminal_statuses, in declaration order.
	Early bool
}

// Provider describes one provider id of the configuration.
type Provider struct {
	// Kind is the kind of the top-level items ("payment").
	Kind string
	// Statuses are the provider's status tables by item kind: Kind's, and those of the
	// kinds the adapter nests in top-level items. They name every kind the adapter
	// emits (see Kinds).
	Statuses map[string]diff.Mapping
	// DefaultBaseURL is used when the source configures none.
	DefaultBaseURL string
	// MaxPageSize is the largest page the provider serves; DefaultPageSize is used
	// when the source configures none.
	MaxPageSize, DefaultPageSize int
	// TerminalOverride reports that the provider's statuses are undocumented, so a
	// source may replace the terminal set with terminal_statuses.
	TerminalOverride bool
	// Keys are the provider's own configuration keys; a source of the provider may
	// set these and no others beyond the keys every source has.
	Keys []Key
	// New builds the source. It returns an error naming the setting when one is
	// missing or invalid.
	New func(s Settings, c *Client) (Source, error)
}

// Kinds returns the kinds of the items the adapter emits: Kind first, then the other
// kinds of Statuses, sorted.
func (p Provider) Kinds() []string {
	kinds := []string{p.Kind}
	for _, k := range slices.Sorted(maps.Keys(p.Statuses)) {
		if k != p.Kind {
			kinds = append(kinds, k)
		}
	}
	return kinds
}

// Credentials returns the names of the provider's Required keys, in declaration
// order, for error messages ("api_key").
func (p Provider) Credentials() []string {
	var out []string
	for _, k := range p.Keys {
		if k.Required {
			out = append(out, k.Name)
		}
	}
	return out
}

// Key returns the description of the provider's key name.
func (p Provider) Key(name string) (Key, bool) {
	for _, k := range p.Keys {
		if k.Name == name {
			return k, true
		}
	}
	return Key{}, false
}

// StatusError reports a non-2xx provider response.
type StatusError struct {
	Code int
	// RetryAfter is the provider's Retry-After; 0 when absent.
	RetryAfter time.Duration
	// Message is the provider's own explanation, from its error body; may be "".
	Message string
	// RequestID is the provider's request id header, when it sends one.
	RequestID string
	// NoRetry records that the provider advised against repeating the request
	// (Stripe-Should-Retry: false); it makes the error permanent whatever its code.
	NoRetry bool
}

func (e *StatusError) Error() string {
	s := "HTTP " + strconv.Itoa(e.Code) + " " + http.StatusText(e.Code)
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.RequestID != "" {
		s += " (request id " + e.RequestID + ")"
	}
	return s
}

// Temporary reports whether the same request may succeed later.
func (e *StatusError) Temporary() bool {
	return !e.NoRetry && (e.Code == http.StatusTooManyRequests || e.Code == http.StatusRequestTimeout || e.Code >= 500)
}

// Auth reports whether the provider refused the request's authentication (401: the
// credentials were refused) or its authorization (403: the credentials were accepted
// but the request is forbidden, for instance by a missing permission or an IP
// allowlist). Either is permanent: repeating the request cannot succeed until the
// configuration or the provider account changes.
func (e *StatusError) Auth() bool {
	return e.Code == http.StatusUnauthorized || e.Code == http.StatusForbidden
}

// CauseError is a provider refusal whose cause the adapter identified, with what to
// change. It is permanent: the poller does not repeat the request within a cycle.
// Err is the underlying error, usually wrapping the *StatusError of the refused
// request, so StatusError's Code and Auth still classify it.
type CauseError struct {
	// Cause is a stable key of the cause ("clock_skew", "stripe_version"); the
	// poller logs a cause once while it persists.
	Cause string
	// Advice says what was refused and what to change, naming the setting and the
	// value sent; it never holds a secret.
	Advice string
	Err    error
}

// Causes named by both the poller and adapters.
const (
	// CauseUnauthorized: the provider refused the credentials (401).
	CauseUnauthorized = "unauthorized"
	// CauseForbidden: the provider accepted the credentials but forbade the request (403).
	CauseForbidden = "forbidden"
)

func (e *CauseError) Error() string { return e.Advice + ": " + e.Err.Error() }
func (e *CauseError) Unwrap() error { return e.Err }

// Provider anomalies an adapter can report; the poller counts them by these kinds
// (the poller's Anomaly* constants have the same values).
const (
	// AnomalyClockSkew: the provider refused a request's timestamp as stale and the
	// adapter signed it again with the provider's time.
	AnomalyClockSkew = "clock_skew"
	// AnomalySigning: the provider accepted a request only when signed the other way
	// than configured (Coindirect sign_query).
	AnomalySigning = "signing"
	// AnomalyForeignLink: a next-page link named another origin than base_url; the
	// adapter followed it on base_url's origin (same path and query).
	AnomalyForeignLink = "foreign_link"
)

// Anomaly is provider behaviour the documents do not show, which an adapter worked
// around.
type Anomaly struct {
	Kind string // an Anomaly* constant
	// Detail says what was seen, what the adapter does about it and what to change;
	// it never holds a secret.
	Detail string
}

// AnomalyReporter is the seam through which an adapter reports anomalies without
// seeing the poller: a Source may implement it, and the poller calls Anomalies after
// every Page or Get (whatever it returned) and counts and logs what it gets.
// Anomalies returns the anomalies seen since its last call, oldest first, and forgets
// them; nil when there were none. It is called by the goroutine using the Source.
type AnomalyReporter interface {
	Anomalies() []Anomaly
}

// MalformedError reports a response the adapter could not parse as a page at all.
// The cycle fails and state is untouched; a later poll may succeed.
type MalformedError struct {
	Err error
}

func (e *MalformedError) Error() string { return "malformed response: " + e.Err.Error() }
func (e *MalformedError) Unwrap() error { return e.Err }
