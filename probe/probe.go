// Package probe checks a live provider account against what watcher's adapters
// assume, before the daemon polls it. The adapters were written from the providers'
// documents; where those are silent (list order, whether page sizes and date filters
// are honoured, where Link headers point, how Coindirect wants its Hawk mac, clock
// skew) an account may behave otherwise, and probe says so.
//
// # Contract
//
// Probe is read-only: it lists and reads items through the source's own adapter
// (provider.Source and provider.Getter, built by provider.Provider.New) on a copy of
// the provider.Client the daemon builds, and does nothing else: no state file, no NATS,
// no events. It makes at most MaxRequests provider requests per source: a recording
// RoundTripper counts every exchange (redirect hops included) and refuses any beyond
// the bound. Against a well-behaved provider a source takes five requests.
//
// Each source gets these checks, in this order, each ok, warn or fail; a check that
// cannot run (an empty list, a first page that was refused) is a warn saying why:
//
//   - credentials: the first page is accepted. 401 fails with the provider's message and
//     the credential keys; 403 fails as credentials accepted but forbidden (permission,
//     product access or IP allowlist); any other refusal fails with the provider's
//     message and the adapter's or the provider hook's advice (Stripe: stripe_version).
//   - order: creation times go newest first within the first two pages and across
//     them (equal times allowed); a fail names the two items and their times.
//   - page_size: a page holds the size asked, checked on the first page and on a page
//     of a second size (a second source instance with another page_size); a page
//     shorter than asked followed by a non-empty page fails, as does a longer one.
//   - date_filter: a list from just after a seen item's creation time (an older item
//     being known) returns no item older than that bound.
//   - paging: the second page is reached (cursor or Link rel="next") without repeating
//     an id of the first; a Link rel="next" on another origin than base_url fails,
//     naming that origin, whether the adapter refuses the link or follows it on
//     base_url.
//   - get: for sources with provider.Getter, the newest listed item read by id has the
//     listed id, status and creation time.
//   - statuses: every status seen, nested items' included, maps to a known state.
//   - clock: the provider's HTTP Date header is within 30s of this host's clock (warn
//     beyond; a provider hook may fail beyond a larger bound: Coindirect at 5 minutes).
//
// Provider hooks (hooks.go, by provider id) add what one provider needs. Coindirect
// adds sign_query, reported last: the configured value is what the first page was
// signed with; when the server refused that mac with 401, the other value is tried
// (by the adapter itself, or here through a second source), and the check fails
// naming the value that works, or both when neither does.
package probe

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller/provider"
)

// MaxRequests bounds the provider requests of one source's probe.
const MaxRequests = 10

// defaultTimeout bounds one request when a Target sets no RequestTimeout.
const defaultTimeout = 30 * time.Second

// Result is the outcome of one check.
type Result string

// The results, from best to worst.
const (
	OK   Result = "ok"
	Warn Result = "warn"
	Fail Result = "fail"
)

// Check names, in the order a Report lists them.
const (
	CheckCredentials = "credentials"
	CheckOrder       = "order"
	CheckPageSize    = "page_size"
	CheckDateFilter  = "date_filter"
	CheckPaging      = "paging"
	CheckGet         = "get"
	CheckStatuses    = "statuses"
	CheckClock       = "clock"
	CheckSignQuery   = "sign_query"
)

// Check is the outcome of one check of one source.
type Check struct {
	Source string `json:"source"`
	Name   string `json:"check"`
	Result Result `json:"result"`
	// Detail says what the check saw, in a sentence.
	Detail string `json:"detail"`
}

// Target is one configured source as the daemon would poll it.
type Target struct {
	Name       string // the configured source name
	ProviderID string // the configuration's provider id ("coindirect_payments")
	Provider   provider.Provider
	Settings   provider.Settings
	// Client is the provider.Client the daemon builds for the source (base_url origin
	// rules, ca_file, user agent). Probe uses a copy whose transport records and counts
	// every exchange; Client itself is not changed.
	Client *provider.Client
	// RequestTimeout bounds each request; 30s when 0.
	RequestTimeout time.Duration
}

// Report is the outcome of probing one source.
type Report struct {
	Source string
	Checks []Check
	// Requests is the number of provider requests made (redirect hops included).
	Requests int
}

// Failed reports whether any check failed.
func (r Report) Failed() bool {
	return slices.ContainsFunc(r.Checks, func(c Check) bool { return c.Result == Fail })
}

// Run probes one source: at most MaxRequests requests, every check in the package
// documentation's order, then the provider hook's own checks. It never returns an
// error: whatever went wrong is a check's detail.
func Run(ctx context.Context, t Target) Report {
	s := newSession(t)
	h := hooks[t.ProviderID]
	s.first = s.list(ctx, s.src, provider.Request{})
	var extra []Check
	if h.AfterFirstPage != nil {
		extra = h.AfterFirstPage(ctx, s)
	}
	if s.first.err == nil && s.first.page.Next != "" {
		second := s.list(ctx, s.src, provider.Request{Cursor: s.first.page.Next})
		s.second = &second
	}
	checks := []Check{
		s.checkCredentials(h),
		s.checkOrder(),
		s.checkPageSize(ctx),
		s.checkDateFilter(ctx, h),
		s.checkPaging(),
		s.checkGet(ctx),
		s.checkStatuses(),
		s.checkClock(h),
	}
	checks = append(checks, extra...)
	for i := range checks {
		checks[i].Source = t.Name
	}
	return Report{Source: t.Name, Checks: checks, Requests: s.rec.count()}
}

// session is the state of one source's probe: its recorder, the source in use and
// what the list calls returned.
type session struct {
	t        Target
	settings provider.Settings // the settings in use (a hook may change them)
	base     string            // base_url's origin
	rec      *recorder
	client   *provider.Client
	src      provider.Source
	srcErr   error // why the source could not be built
	first    listing
	second   *listing // nil when the first page had no next page (or failed)
	// extra are the items of every other list or read, for the statuses check.
	extra []diff.Item
	// anomalies are what the sources reported (provider.AnomalyReporter) after each
	// call: behaviour the adapter worked around.
	anomalies []provider.Anomaly
	// credentialsNote, when set by a hook, is the credentials check's ok detail: the
	// hook found the credentials accepted though a request was refused.
	credentialsNote string
}

// listing is one Page call and the exchanges it made.
type listing struct {
	page provider.Page
	err  error
	ex   []Exchange
}

func newSession(t Target) *session {
	rec := &recorder{max: MaxRequests, now: time.Now}
	c := &provider.Client{}
	if t.Client != nil {
		*c = *t.Client
	}
	hc := &http.Client{}
	if c.HTTP != nil {
		*hc = *c.HTTP
	}
	rec.next = hc.Transport
	if rec.next == nil {
		rec.next = http.DefaultTransport
	}
	hc.Transport = rec
	c.HTTP = hc
	s := &session{t: t, settings: t.Settings, base: originOf(t.Settings.BaseURL), rec: rec, client: c}
	s.src, s.srcErr = s.newSource(t.Settings)
	return s
}

// newSource builds another instance of the target's source with settings set, on the
// session's recording client.
func (s *session) newSource(set provider.Settings) (provider.Source, error) {
	if s.t.Provider.New == nil {
		return nil, fmt.Errorf("provider %q has no adapter", s.t.ProviderID)
	}
	src, err := s.t.Provider.New(set, s.client)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", s.t.Name, err)
	}
	return src, nil
}

// list asks src for one page, bounded by the request timeout, and keeps the exchanges
// the call made.
func (s *session) list(ctx context.Context, src provider.Source, req provider.Request) listing {
	if src == nil {
		return listing{err: s.srcErr}
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	mark := s.rec.count()
	p, err := src.Page(ctx, req)
	s.collectAnomalies(src)
	return listing{page: p, err: err, ex: s.rec.since(mark)}
}

// collectAnomalies keeps what src reports it worked around since its last call.
func (s *session) collectAnomalies(src provider.Source) {
	if r, ok := src.(provider.AnomalyReporter); ok {
		s.anomalies = append(s.anomalies, r.Anomalies()...)
	}
}

// anomaly returns the detail of the first reported anomaly of kind; ok is false when
// none was reported.
func (s *session) anomaly(kind string) (detail string, ok bool) {
	for _, a := range s.anomalies {
		if a.Kind == kind {
			return a.Detail, true
		}
	}
	return "", false
}

func (s *session) timeout() time.Duration {
	if s.t.RequestTimeout > 0 {
		return s.t.RequestTimeout
	}
	return defaultTimeout
}

// listed is the items of the first two pages, in list order.
func (s *session) listed() []diff.Item {
	items := slices.Clone(s.first.page.Items)
	if s.second != nil {
		items = append(items, s.second.page.Items...)
	}
	return items
}

// firstRead reports whether the first page was read; when not, why as a skip reason.
func (s *session) firstRead() (bool, string) {
	if s.first.err == nil {
		return true, ""
	}
	if len(s.foreignLinks()) > 0 {
		return false, "skipped: the first page was not read (see paging)"
	}
	return false, "skipped: the first page was not read (see credentials)"
}

func ok(name, format string, args ...any) Check {
	return Check{Name: name, Result: OK, Detail: fmt.Sprintf(format, args...)}
}

func warn(name, format string, args ...any) Check {
	return Check{Name: name, Result: Warn, Detail: fmt.Sprintf(format, args...)}
}

func fail(name, format string, args ...any) Check {
	return Check{Name: name, Result: Fail, Detail: fmt.Sprintf(format, args...)}
}

// stamp prints a creation time for details: RFC 3339 in UTC, sub-seconds when there
// are any.
func stamp(t time.Time) string {
	return t.UTC().Format(time.RFC3339Nano)
}
