package poller

import (
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller/provider"
)

// Observer receives what a poller does, for metrics. Implementations must be safe for
// concurrent use by every poller and must not block. source is the configured source
// name in every call.
type Observer interface {
	// Poll reports the end of a cycle; result is one of the Result* constants.
	Poll(source, result string, took time.Duration)
	// Request reports one provider request: purpose is PurposeDiscovery or
	// PurposeRefresh, code the HTTP status (0 when no response arrived).
	Request(source, purpose string, code int, took time.Duration)
	// Wait reports a pause before retrying a request: reason is "rate_limited" for a
	// 429 (Retry-After honoured) or "backoff" for other temporary failures.
	Wait(source, reason string, d time.Duration)
	// Items reports items read from the provider (nested ones not counted).
	Items(source string, n int)
	// Skipped reports a malformed item left out of a page.
	Skipped(source string)
	// Transition reports one published transition; unknown is true when the raw status
	// is not in the provider's table.
	Transition(source, kind string, state diff.State, unknown bool)
	// Open reports, after each cycle, the open items, the stalled items found in the
	// cycle, and the creation time of the oldest open item (zero when none).
	Open(source string, open, stalled int, oldest time.Time)
	// Success reports the end of a successful cycle.
	Success(source string, at time.Time)
	// Anomaly reports provider behaviour that the documents do not show and that
	// watcher worked around or stopped at; kind is one of the Anomaly* constants. The
	// poller reports each kind at most once per cycle.
	Anomaly(source, kind string)
	// Paced reports a wait between two pages of a walk while the outbox held
	// Config.PaceOutbox events or more (see Poller.pace); d is how long it lasted.
	Paced(source string, d time.Duration)
	// Forgotten reports n snapshot records removed from the state because no walk can
	// reach their items again (see Poller.forget).
	Forgotten(source string, n int)
}

// Provider anomalies (Observer.Anomaly). Each is logged once per source and counted.
const (
	// AnomalyUnordered: creation times went up within or across pages, so the list is
	// not newest first; the source walks every page down to the list's end from then on.
	AnomalyUnordered = "unordered"
	// AnomalyDateFilterIgnored: an item created before the walk's date filter came back.
	AnomalyDateFilterIgnored = "date_filter_ignored"
	// AnomalyShortPage: a page held fewer items than asked for and was not the last.
	AnomalyShortPage = "short_page"
	// AnomalyForeignLink: a next-page link named another origin than base_url and was
	// followed on base_url's origin.
	AnomalyForeignLink = "foreign_link"
	// AnomalyClockSkew: the provider refused a request's timestamp as stale; it was
	// signed again with the provider's time. Adapters report it through
	// provider.AnomalyReporter.
	AnomalyClockSkew = provider.AnomalyClockSkew
	// AnomalySigning: the provider accepted a request only when signed the other way
	// than configured (Coindirect sign_query). Adapters report it through
	// provider.AnomalyReporter.
	AnomalySigning = provider.AnomalySigning
)

// Anomalies lists every Anomaly* kind.
var Anomalies = []string{AnomalyUnordered, AnomalyDateFilterIgnored, AnomalyShortPage, AnomalyForeignLink, AnomalyClockSkew, AnomalySigning}

// Poll results.
const (
	ResultOK         = "ok"
	ResultError      = "error"
	ResultAuthError  = "auth_error"
	ResultOutboxFull = "outbox_full"
	ResultCanceled   = "canceled"
)

// Request purposes.
const (
	PurposeDiscovery = "discovery"
	PurposeRefresh   = "refresh"
)

// nopObserver is used when none is given.
type nopObserver struct{}

func (nopObserver) Poll(string, string, time.Duration)          {}
func (nopObserver) Request(string, string, int, time.Duration)  {}
func (nopObserver) Wait(string, string, time.Duration)          {}
func (nopObserver) Items(string, int)                           {}
func (nopObserver) Skipped(string)                              {}
func (nopObserver) Transition(string, string, diff.State, bool) {}
func (nopObserver) Open(string, int, int, time.Time)            {}
func (nopObserver) Success(string, time.Time)                   {}
func (nopObserver) Anomaly(string, string)                      {}
func (nopObserver) Paced(string, time.Duration)                 {}
func (nopObserver) Forgotten(string, int)                       {}
