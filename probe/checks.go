package probe

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller/provider"
)

// Clock thresholds: skew beyond clockWarn is a warn (a provider hook may fail beyond
// its own bound).
const clockWarn = 30 * time.Second

// smallPage is the page size of the page_size check's second source.
const smallPage = 2

// checkCredentials reports whether the first page was accepted, and if not, how the
// provider refused it: the provider's message, the credential keys (401), the likely
// causes (403), and the adapter's or the provider hook's advice.
func (s *session) checkCredentials(h hook) Check {
	if s.srcErr != nil {
		return fail(CheckCredentials, "the source cannot be built: %v", s.srcErr)
	}
	if s.credentialsNote != "" {
		return ok(CheckCredentials, "%s", s.credentialsNote)
	}
	err := s.first.err
	if err == nil {
		e, _ := last(s.first.ex)
		return ok(CheckCredentials, "first page accepted (HTTP %d), %d items", e.Status, len(s.first.page.Items))
	}
	var se *provider.StatusError
	if errors.As(err, &se) {
		return fail(CheckCredentials, "%s", s.refusal(h, se, err))
	}
	if e, answered := last(s.first.ex); answered && e.Status >= 200 && e.Status <= 299 {
		if len(s.foreignLinks()) > 0 {
			return ok(CheckCredentials, "first page accepted (HTTP %d); the adapter refused its next link (see paging)", e.Status)
		}
		return fail(CheckCredentials, "first page accepted (HTTP %d) but not readable: %v", e.Status, err)
	}
	return fail(CheckCredentials, "no answer to the first page: %v", err)
}

// accountSelector is the credential key that names an account rather than
// authenticating: a 401 is not about it, a 403 may be.
const accountSelector = "merchant_id"

// refusal describes the first page's refusal se (err, which wraps it, carries the
// adapter's advice when it recognised the cause).
func (s *session) refusal(h hook, se *provider.StatusError, err error) string {
	var d string
	switch se.Code {
	case http.StatusUnauthorized:
		keys := slices.DeleteFunc(slices.Clone(s.t.Provider.Credentials()), func(k string) bool { return k == accountSelector })
		d = fmt.Sprintf("the provider refused the credentials (check %s): %v", strings.Join(keys, ", "), err)
	case http.StatusForbidden:
		causes := "the key lacks a permission or product access, or this host is not on the account's IP allowlist"
		if slices.Contains(s.t.Provider.Credentials(), accountSelector) {
			causes += ", or " + accountSelector + " is not the merchant of these credentials"
		}
		d = fmt.Sprintf("credentials accepted but forbidden (%s): %v", causes, err)
	default:
		if se.Temporary() {
			d = fmt.Sprintf("the first page was refused with a temporary error, so nothing could be checked (probe again later): %v", err)
		} else {
			d = fmt.Sprintf("the first page was refused: %v", err)
		}
	}
	var ce *provider.CauseError
	if h.Refused != nil && !errors.As(err, &ce) {
		if advice := h.Refused(s.settings, se); advice != "" {
			d += "; " + advice
		}
	}
	return d
}

// checkOrder reports whether creation times go newest first within and across the
// first two pages.
func (s *session) checkOrder() Check {
	if read, why := s.firstRead(); !read {
		return warn(CheckOrder, "%s", why)
	}
	items := s.listed()
	if len(items) < 2 {
		return warn(CheckOrder, "skipped: %d item listed; the order needs two", len(items))
	}
	n1 := len(s.first.page.Items)
	for i := 1; i < len(items); i++ {
		a, b := items[i-1], items[i]
		if !b.CreatedAt.After(a.CreatedAt) {
			continue
		}
		where := "on page 1"
		switch {
		case i == n1:
			where = "across pages 1 and 2"
		case i > n1:
			where = "on page 2"
		}
		return fail(CheckOrder, "%s is listed before %s %s, yet was created earlier (%s before %s): the list is not newest first",
			a.ID, b.ID, where, stamp(a.CreatedAt), stamp(b.CreatedAt))
	}
	return ok(CheckOrder, "%d items newest first across %d %s", len(items), s.pages(), plural(s.pages(), "page", "pages"))
}

// pages is the number of main-walk pages read.
func (s *session) pages() int {
	if s.second != nil && s.second.err == nil {
		return 2
	}
	return 1
}

// checkPageSize reports whether pages hold the size asked: the first page of the
// configured size, then a page of another size (smaller, or the first page's when that
// was short).
func (s *session) checkPageSize(ctx context.Context) Check {
	if read, why := s.firstRead(); !read {
		return warn(CheckPageSize, "%s", why)
	}
	asked := s.settings.PageSize
	n := served(s.first.page)
	switch {
	case n == 0:
		return warn(CheckPageSize, "skipped: the list is empty")
	case n > asked:
		return fail(CheckPageSize, "asked for pages of %d, the first page held %d: page_size is not honoured", asked, n)
	case n < asked:
		return s.shortFirstPage(ctx, n, asked)
	}
	return s.smallerPage(ctx, asked)
}

// shortFirstPage decides whether a first page of n items, fewer than the asked, is the
// whole list or a server cap: from the second page when there is one, else by asking
// for pages of n and reading the page after.
func (s *session) shortFirstPage(ctx context.Context, n, asked int) Check {
	if s.second != nil {
		if fresh := newIDs(s.second.page.Items, s.first.page.Items); s.second.err == nil && len(fresh) > 0 {
			return fail(CheckPageSize, "the first page held %d items though %d were asked, and a page of %d more followed: the server serves at most %d per page",
				n, asked, len(s.second.page.Items), n)
		}
		return ok(CheckPageSize, "the first page held %d of the %d asked and was the last", n, asked)
	}
	src, err := s.withPageSize(n)
	if err != nil {
		return warn(CheckPageSize, "skipped: %v", err)
	}
	a := s.list(ctx, src, provider.Request{})
	if a.err != nil {
		return warn(CheckPageSize, "skipped: a page of %d could not be read: %v", n, a.err)
	}
	s.extra = append(s.extra, a.page.Items...)
	if m := served(a.page); m > n {
		return fail(CheckPageSize, "asked for a page of %d, got %d: page_size is not honoured", n, m)
	}
	if a.page.Next == "" {
		return ok(CheckPageSize, "the whole list (%d items) fits in one page of %d", n, asked)
	}
	b := s.list(ctx, src, provider.Request{Cursor: a.page.Next})
	if b.err != nil {
		return warn(CheckPageSize, "skipped: the page after a page of %d could not be read: %v", n, b.err)
	}
	s.extra = append(s.extra, b.page.Items...)
	if fresh := newIDs(b.page.Items, s.first.page.Items, a.page.Items); len(fresh) > 0 {
		return fail(CheckPageSize, "the first page held %d items though %d were asked and had no next page, yet the list goes on (%s and more): the server serves at most %d per page, and a walk would stop at the first",
			n, asked, fresh[0], n)
	}
	return ok(CheckPageSize, "the whole list (%d items) fits in one page of %d", n, asked)
}

// smallerPage checks, after a full first page of asked items, that a smaller page
// size is honoured too (a server that ignores the size fills any page to its own).
func (s *session) smallerPage(ctx context.Context, asked int) Check {
	k := min(smallPage, asked-1)
	if k < 1 {
		return ok(CheckPageSize, "a page of %d when asked for %d", asked, asked)
	}
	src, err := s.withPageSize(k)
	if err != nil {
		return warn(CheckPageSize, "skipped: %v", err)
	}
	a := s.list(ctx, src, provider.Request{})
	if a.err != nil {
		return warn(CheckPageSize, "skipped: a page of %d could not be read: %v", k, a.err)
	}
	s.extra = append(s.extra, a.page.Items...)
	m, known := served(a.page), len(s.listed())
	switch {
	case m > k:
		return fail(CheckPageSize, "asked for a page of %d, got %d: page_size is not honoured", k, m)
	case m < k && known > m:
		return fail(CheckPageSize, "asked for a page of %d, got %d though the list holds at least %d: the server serves at most %d per page",
			k, m, known, m)
	case a.page.Next == "" && known > m:
		return fail(CheckPageSize, "a full page of %d had no next page though the list holds at least %d", m, known)
	}
	return ok(CheckPageSize, "a page of %d when asked for %d, and of %d when asked for %d", asked, asked, m, k)
}

// withPageSize builds a second instance of the source asking for pages of n.
func (s *session) withPageSize(n int) (provider.Source, error) {
	set := s.settings
	set.PageSize = n
	return s.newSource(set)
}

// served is the number of elements a page held, malformed ones included.
func served(p provider.Page) int {
	return len(p.Items) + len(p.Skipped)
}

// newIDs returns the ids of items that none of the seen lists holds, in order.
func newIDs(items []diff.Item, seen ...[]diff.Item) []string {
	known := map[string]bool{}
	for _, l := range seen {
		for _, it := range l {
			known[it.ID] = true
		}
	}
	var out []string
	for _, it := range items {
		if !known[it.ID] {
			out = append(out, it.ID)
		}
	}
	return out
}

// checkDateFilter lists from just after a listed item's creation time (rounded up to
// the precision the adapter sends the bound with, so that its rounding down keeps the
// bound) and reports any item older than the bound.
func (s *session) checkDateFilter(ctx context.Context, h hook) Check {
	if read, why := s.firstRead(); !read {
		return warn(CheckDateFilter, "%s", why)
	}
	grain := time.Second
	if h.DateGranularity != nil {
		grain = h.DateGranularity(s.settings)
	}
	older, found := pivot(s.listed(), grain)
	if !found {
		return warn(CheckDateFilter, "skipped: no two listed items were created %s apart", grainName(grain))
	}
	from := older.CreatedAt.Truncate(grain).Add(grain)
	l := s.list(ctx, s.src, provider.Request{From: from})
	if l.err != nil {
		return fail(CheckDateFilter, "listing from %s failed: %v", stamp(from), l.err)
	}
	s.extra = append(s.extra, l.page.Items...)
	var before []diff.Item
	for _, it := range l.page.Items {
		if it.CreatedAt.Before(from) {
			before = append(before, it)
		}
	}
	if len(before) > 0 {
		return fail(CheckDateFilter, "listed from %s, got %d of %d items created before it, e.g. %s (created %s): the date filter is not honoured",
			stamp(from), len(before), len(l.page.Items), before[0].ID, stamp(before[0].CreatedAt))
	}
	if len(l.page.Items) == 0 {
		return fail(CheckDateFilter, "listed from %s, got nothing, though listed items were created since", stamp(from))
	}
	return ok(CheckDateFilter, "listed from %s: %d %s, none older (%s, created %s, left out)",
		stamp(from), len(l.page.Items), plural(len(l.page.Items), "item", "items"), older.ID, stamp(older.CreatedAt))
}

// pivot is the newest item created in an earlier grain (second, day) than the newest
// item; a list from the grain after it must leave it out and keep the newest.
func pivot(items []diff.Item, grain time.Duration) (diff.Item, bool) {
	if len(items) == 0 {
		return diff.Item{}, false
	}
	top := slices.MaxFunc(items, func(a, b diff.Item) int { return a.CreatedAt.Compare(b.CreatedAt) }).CreatedAt.Truncate(grain)
	var best diff.Item
	found := false
	for _, it := range items {
		if it.CreatedAt.Truncate(grain).Before(top) && (!found || it.CreatedAt.After(best.CreatedAt)) {
			best, found = it, true
		}
	}
	return best, found
}

// grainName says "a second" or "a day" for the date filter's precision.
func grainName(grain time.Duration) string {
	switch grain {
	case time.Second:
		return "a second"
	case 24 * time.Hour:
		return "a day"
	}
	return grain.String()
}

// checkPaging reports whether the second page is reached without repeats, and whether
// every Link rel="next" stays on base_url's origin.
func (s *session) checkPaging() Check {
	if foreign := s.foreignLinks(); len(foreign) > 0 {
		return fail(CheckPaging, "Link rel=\"next\" points to %s, not to base_url's origin %s: watcher sends credentials only to base_url",
			strings.Join(foreign, ", "), s.base)
	}
	if read, why := s.firstRead(); !read {
		return warn(CheckPaging, "%s", why)
	}
	if s.second == nil {
		return warn(CheckPaging, "skipped: the first page (%d items) was the last; there is no second page to reach", len(s.first.page.Items))
	}
	how := "cursor"
	if e, answered := last(s.first.ex); answered && len(e.nextLinks()) > 0 {
		how = `Link rel="next"`
	}
	if s.second.err != nil {
		return fail(CheckPaging, "following the first page's %s failed: %v", how, s.second.err)
	}
	if rep := repeated(s.first.page.Items, s.second.page.Items); len(rep) > 0 {
		return fail(CheckPaging, "page 2 (by %s) repeats %d %s of page 1: %s", how, len(rep), plural(len(rep), "id", "ids"), clipList(rep, 5))
	}
	return ok(CheckPaging, "page 2 reached by %s: %d items, none of page 1 repeated", how, len(s.second.page.Items))
}

// foreignLinks lists the origins of Link rel="next" targets of the main walk's
// answers that are not base_url's origin.
func (s *session) foreignLinks() []string {
	ex := slices.Clone(s.first.ex)
	if s.second != nil {
		ex = append(ex, s.second.ex...)
	}
	var out []string
	for _, e := range ex {
		for _, u := range e.nextLinks() {
			if o := provider.Origin(u); o != s.base && !slices.Contains(out, o) {
				out = append(out, o)
			}
		}
	}
	return out
}

// repeated returns the ids of b that a holds too.
func repeated(a, b []diff.Item) []string {
	in := map[string]bool{}
	for _, it := range a {
		in[it.ID] = true
	}
	var out []string
	for _, it := range b {
		if in[it.ID] && !slices.Contains(out, it.ID) {
			out = append(out, it.ID)
		}
	}
	return out
}

// checkGet reads the newest listed item by id and compares it with the listed one.
func (s *session) checkGet(ctx context.Context) Check {
	g, isGetter := s.src.(provider.Getter)
	if s.src != nil && !isGetter {
		return ok(CheckGet, "not applicable: the adapter reads no single item")
	}
	if read, why := s.firstRead(); !read {
		return warn(CheckGet, "%s", why)
	}
	items := s.listed()
	if len(items) == 0 {
		return warn(CheckGet, "skipped: the list is empty")
	}
	listed := slices.MaxFunc(items, func(a, b diff.Item) int { return a.CreatedAt.Compare(b.CreatedAt) })
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	got, err := g.Get(ctx, listed.ID)
	s.collectAnomalies(s.src)
	if err != nil {
		return fail(CheckGet, "reading the newest listed item %s by id failed: %v", listed.ID, err)
	}
	s.extra = append(s.extra, got)
	var diffs []string
	if got.ID != listed.ID {
		diffs = append(diffs, fmt.Sprintf("id %s", got.ID))
	}
	if !got.CreatedAt.Equal(listed.CreatedAt) {
		diffs = append(diffs, fmt.Sprintf("created %s, listed %s", stamp(got.CreatedAt), stamp(listed.CreatedAt)))
	}
	moved := got.Status.Raw != listed.Status.Raw
	if moved && !got.UpdatedAt.After(listed.UpdatedAt) {
		diffs = append(diffs, fmt.Sprintf("status %s, listed %s", got.Status.Raw, listed.Status.Raw))
	}
	if len(diffs) > 0 {
		return fail(CheckGet, "%s read by id differs from the listed item: %s", listed.ID, strings.Join(diffs, "; "))
	}
	if moved {
		return ok(CheckGet, "%s read by id: same id and creation time; its status moved from %s to %s in between (updated %s)",
			listed.ID, listed.Status.Raw, got.Status.Raw, stamp(got.UpdatedAt))
	}
	return ok(CheckGet, "%s read by id: same id, status %s and creation time %s", listed.ID, got.Status.Raw, stamp(got.CreatedAt))
}

// checkStatuses reports raw statuses that the adapter's mapping does not know, among
// every item seen and their nested items.
func (s *session) checkStatuses() Check {
	items := append(s.listed(), s.extra...)
	if len(items) == 0 {
		if read, why := s.firstRead(); !read {
			return warn(CheckStatuses, "%s", why)
		}
		return warn(CheckStatuses, "skipped: no item seen")
	}
	known, unknown := map[string]bool{}, map[string]int{}
	seen := map[string]bool{}
	var visit func(it diff.Item, parent string)
	visit = func(it diff.Item, parent string) {
		key := it.Kind + "/" + parent + "/" + it.ID
		if seen[key] {
			return
		}
		seen[key] = true
		label := it.Kind + " " + it.Status.Raw
		if it.Status.State == diff.Unknown || !it.Status.State.Valid() {
			unknown[label]++
		} else {
			known[label] = true
		}
		for _, n := range it.Nested {
			visit(n, it.ID)
		}
	}
	for _, it := range items {
		visit(it, "")
	}
	if len(unknown) > 0 {
		var parts []string
		for _, l := range slices.Sorted(maps.Keys(unknown)) {
			parts = append(parts, fmt.Sprintf("%s (%d %s)", l, unknown[l], plural(unknown[l], "item", "items")))
		}
		return fail(CheckStatuses, "raw statuses the mapping does not know (published with state unknown): %s", strings.Join(parts, ", "))
	}
	return ok(CheckStatuses, "%d items (nested ones included) seen, every status mapped: %s", len(seen), strings.Join(slices.Sorted(maps.Keys(known)), ", "))
}

// checkClock compares this host's clock with the provider's Date header, on the
// exchange with the shortest round trip.
func (s *session) checkClock(h hook) Check {
	skew, date, found := s.skew()
	if !found {
		return warn(CheckClock, "skipped: no answer carried a Date header")
	}
	abs := skew.Abs()
	dir := "ahead of"
	if skew < 0 {
		dir = "behind"
	}
	d := fmt.Sprintf("the provider's clock (Date %s) is %s %s this host's", date.UTC().Format(time.RFC3339), abs.Round(time.Second), dir)
	switch {
	case h.ClockFail > 0 && abs > h.ClockFail:
		return fail(CheckClock, "%s: over %s; %s", d, h.ClockFail, h.ClockNote)
	case abs > clockWarn:
		if h.ClockNote != "" {
			return warn(CheckClock, "%s: over %s; %s", d, clockWarn, h.ClockNote)
		}
		return warn(CheckClock, "%s: over %s", d, clockWarn)
	}
	return ok(CheckClock, "this host's clock is within %s of the provider's Date header", max(abs.Round(time.Second), time.Second))
}

// skew is the provider's clock minus this host's, from the Date header of the
// exchange with the shortest round trip. Date has whole seconds, so half a second is
// added to centre its truncation.
func (s *session) skew() (time.Duration, time.Time, bool) {
	var best Exchange
	var bestDate time.Time
	found := false
	for _, e := range s.rec.all() {
		date, err := http.ParseTime(e.Header.Get("Date"))
		if err != nil || e.Received.IsZero() {
			continue
		}
		if !found || e.Received.Sub(e.Sent) < best.Received.Sub(best.Sent) {
			best, bestDate, found = e, date, true
		}
	}
	if !found {
		return 0, time.Time{}, false
	}
	local := best.Sent.Add(best.Received.Sub(best.Sent) / 2)
	return bestDate.Add(500 * time.Millisecond).Sub(local), bestDate, true
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// clipList joins the first n of ids, saying how many more there are.
func clipList(ids []string, n int) string {
	if len(ids) <= n {
		return strings.Join(ids, ", ")
	}
	return strings.Join(ids[:n], ", ") + fmt.Sprintf(" and %d more", len(ids)-n)
}
