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
	"net/http"
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

// Settings is one configured source as an adapter needs it. Secrets are plain strings
// here: the adapter puts them on the wire and nowhere else.
type Settings struct {
	Name     string // the configured source name
	BaseURL  string // without a trailing slash
	APIKey   string
	PageSize int
	// TerminalStatuses, when set, replaces the provider's terminal set (only for
	// providers whose statuses are undocumented).
	TerminalStatuses []string
	StripeVersion    string
	HawkID           string
	HawkKey          string
	MerchantID       string
	SignQuery        bool
	// FromDateFormat is how a provider whose date filter format is undocumented writes
	// the walk's lower bound (Coindirect's from_date_format); "" is the adapter's default.
	FromDateFormat string
}

// Provider describes one provider id of the configuration.
type Provider struct {
	// Kind is the kind of the top-level items ("payment").
	Kind string
	// DefaultBaseURL is used when the source configures none.
	DefaultBaseURL string
	// MaxPageSize is the largest page the provider serves; DefaultPageSize is used
	// when the source configures none.
	MaxPageSize, DefaultPageSize int
	// TerminalOverride reports that the provider's statuses are undocumented, so a
	// source may replace the terminal set with terminal_statuses.
	TerminalOverride bool
	// Credentials lists the configuration keys holding this provider's credentials,
	// for error messages ("api_key").
	Credentials []string
	// New builds the source. It returns an error naming the setting when one is
	// missing or invalid.
	New func(s Settings, c *Client) (Source, error)
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
