package sim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// Quirks make one provider behave in ways its documents allow but do not show. The
// zero value is the documented behaviour. Quirks change how lists and requests are
// answered, never what happens to items (UnknownStatuses excepted, which changes the
// statuses a ramp session moves through), so the truth stays the record of item changes
// under every quirk.
//
// In JSON (admin API, scenario files) the fields are snake_case and ClockOffset is a Go
// duration string: {"oldest_first":true,"ignore_date_filter":false,"page_cap":3,
// "link_origin":"https://api.circle.com","unknown_statuses":false,
// "refuse_stripe_version":"","forbidden":false,"clock_offset":"-90s"}.
type Quirks struct {
	// OldestFirst ("oldest_first", every provider) lists items by ascending creation
	// time. Cursors and offsets keep working in that order: Circle's rel="next" and
	// pageAfter page towards newer items (rel="prev" and pageBefore towards older ones),
	// Stripe's starting_after and has_more likewise, and a Coindirect offset counts from
	// the oldest item.
	OldestFirst bool
	// IgnoreDateFilter ("ignore_date_filter", every provider) accepts the list's lower
	// creation-date bound but ignores it: Circle from, Stripe created[gte], created[gt]
	// and the lower half of an exact created, Coindirect fromDate. Upper bounds (Circle
	// to, Stripe created[lt], created[lte], Coindirect toDate) still apply.
	IgnoreDateFilter bool
	// PageCap ("page_cap", every provider), when above 0, serves at most that many items
	// per list page whatever size was asked, without saying so. Paging stays correct:
	// Circle links rel="next" while more items exist (its links keep the pageSize the
	// request asked for), Stripe says has_more, and Coindirect returns min(max, PageCap)
	// items at the offset.
	PageCap int
	// LinkOrigin ("link_origin", Circle only), when set, is the scheme and host of every
	// Link header URL (e.g. "https://api.circle.com") in place of the request's own
	// origin; path and query are as usual.
	LinkOrigin string
	// UnknownStatuses ("unknown_statuses", circle_ramp_sessions only) moves ramp
	// sessions through statuses outside the ones watcher knows: a PENDING session goes
	// to IN_PROGRESS (or, on the failure branch, DECLINED), and an IN_PROGRESS one to
	// SUCCEEDED or DECLINED. It applies at each session's next step, so sessions already
	// final keep their statuses, and a session in IN_PROGRESS finishes that way even if
	// the quirk is turned off. The truth records these raw statuses.
	UnknownStatuses bool
	// RefuseStripeVersion ("refuse_stripe_version", Stripe only) refuses, after the API
	// key is accepted, a request whose Stripe-Version header equals it: 400
	// invalid_request_error, message "Invalid Stripe API version: <v>", param null. The
	// value "*" refuses every request that sends a Stripe-Version header at all, as an
	// account whose crypto onramp access does not extend to the versions it pins: 400
	// invalid_request_error, message "Crypto onramp sessions are not available on API
	// version <v>. ...", param null. Requests without the header are served either way.
	RefuseStripeVersion string
	// Forbidden ("forbidden", every provider) answers every API request (list and get)
	// 403, before authentication, as the provider answers a caller address missing from
	// its IP allowlist: Circle {"code":3,"message":"Forbidden"}, Stripe an
	// invalid_request_error naming the address, Coindirect an errorList entry with code
	// "forbidden" and parameter null.
	Forbidden bool
	// ClockOffset ("clock_offset") runs the provider's clock this far from the simulated
	// clock for request checks: Coindirect's Hawk timestamp check and the ts and tsm of
	// its WWW-Authenticate answer use the offset clock. When it is not zero, every
	// answer's HTTP Date header shows the offset clock too (otherwise net/http's wall
	// clock, as before).
	ClockOffset time.Duration
}

// quirksJSON is the JSON form of Quirks; every field is always written, so a GET shows
// the full set of names.
type quirksJSON struct {
	OldestFirst         bool   `json:"oldest_first"`
	IgnoreDateFilter    bool   `json:"ignore_date_filter"`
	PageCap             int    `json:"page_cap"`
	LinkOrigin          string `json:"link_origin"`
	UnknownStatuses     bool   `json:"unknown_statuses"`
	RefuseStripeVersion string `json:"refuse_stripe_version"`
	Forbidden           bool   `json:"forbidden"`
	ClockOffset         string `json:"clock_offset"`
}

// MarshalJSON writes q with snake_case names and ClockOffset as a duration string.
func (q Quirks) MarshalJSON() ([]byte, error) {
	return json.Marshal(quirksJSON{
		OldestFirst: q.OldestFirst, IgnoreDateFilter: q.IgnoreDateFilter, PageCap: q.PageCap,
		LinkOrigin: q.LinkOrigin, UnknownStatuses: q.UnknownStatuses, RefuseStripeVersion: q.RefuseStripeVersion,
		Forbidden: q.Forbidden, ClockOffset: q.ClockOffset.String(),
	})
}

// UnmarshalJSON reads the form MarshalJSON writes; fields left out are zero. Unknown
// fields and a clock_offset that is not a Go duration are errors.
func (q *Quirks) UnmarshalJSON(b []byte) error {
	var j quirksJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return err
	}
	var offset time.Duration
	if j.ClockOffset != "" {
		d, err := time.ParseDuration(j.ClockOffset)
		if err != nil {
			return fmt.Errorf("clock_offset: %q is not a duration", j.ClockOffset)
		}
		offset = d
	}
	*q = Quirks{
		OldestFirst: j.OldestFirst, IgnoreDateFilter: j.IgnoreDateFilter, PageCap: j.PageCap,
		LinkOrigin: j.LinkOrigin, UnknownStatuses: j.UnknownStatuses, RefuseStripeVersion: j.RefuseStripeVersion,
		Forbidden: j.Forbidden, ClockOffset: offset,
	}
	return nil
}

// circleProviders are the providers that answer with Circle's Link header.
var circleProviders = []string{ProviderCPN, ProviderRamp, ProviderSettlements}

// validate reports every quirk of q that is out of range or does not apply to
// provider, naming the key and the value.
func (q Quirks) validate(provider string) error {
	var errs []error
	if q.PageCap < 0 {
		errs = append(errs, fmt.Errorf("page_cap: %d is negative", q.PageCap))
	}
	if q.LinkOrigin != "" {
		if !slices.Contains(circleProviders, provider) {
			errs = append(errs, fmt.Errorf("link_origin: %q applies only to %s", q.LinkOrigin, strings.Join(circleProviders, ", ")))
		} else if err := checkOrigin(q.LinkOrigin); err != nil {
			errs = append(errs, fmt.Errorf("link_origin: %q %w", q.LinkOrigin, err))
		}
	}
	if q.UnknownStatuses && provider != ProviderRamp {
		errs = append(errs, fmt.Errorf("unknown_statuses: true applies only to %s", ProviderRamp))
	}
	if v := q.RefuseStripeVersion; v != "" {
		if provider != ProviderStripe {
			errs = append(errs, fmt.Errorf("refuse_stripe_version: %q applies only to %s", v, ProviderStripe))
		} else if strings.TrimSpace(v) != v || strings.ContainsAny(v, "\r\n") {
			errs = append(errs, fmt.Errorf("refuse_stripe_version: %q has surrounding spaces or line breaks, so no header can equal it", v))
		}
	}
	return errors.Join(errs...)
}

// checkOrigin accepts an http or https origin: scheme and host, nothing else.
func checkOrigin(origin string) error {
	u, err := url.Parse(origin)
	switch {
	case err != nil:
		return errors.New("is not a URL")
	case u.Scheme != "http" && u.Scheme != "https":
		return errors.New("is not an http or https origin")
	case u.Host == "":
		return errors.New("has no host")
	case u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return errors.New("is not an origin (scheme and host only, e.g. https://api.circle.com)")
	}
	return nil
}

// quirkState holds one provider's quirks; requests and machines read it concurrently
// with admin changes.
type quirkState struct {
	mu sync.RWMutex
	q  Quirks
}

func (qs *quirkState) get() Quirks {
	qs.mu.RLock()
	defer qs.mu.RUnlock()
	return qs.q
}

func (qs *quirkState) set(q Quirks) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	qs.q = q
}

// SetQuirks replaces the quirks of one provider. It fails, changing nothing, when the
// provider is not simulated or a quirk is invalid or does not apply to it.
func (s *Sim) SetQuirks(provider string, q Quirks) error {
	p, ok := s.byID[provider]
	if !ok {
		return fmt.Errorf("set quirks: provider %q is not simulated", provider)
	}
	if err := q.validate(provider); err != nil {
		return fmt.Errorf("set quirks: %s: %w", provider, err)
	}
	p.quirks.set(q)
	return nil
}

// Quirks returns the quirks of one provider; the zero value when it is not simulated.
func (s *Sim) Quirks(provider string) Quirks {
	if p, ok := s.byID[provider]; ok {
		return p.quirks.get()
	}
	return Quirks{}
}

// clock is the provider's own clock: the simulated clock moved by its ClockOffset.
func (p *prov) clock() time.Time {
	return p.s.now().Add(p.quirks.get().ClockOffset)
}

// setDate shows the provider's clock in the Date header when it runs off the
// simulated one; otherwise net/http writes its own.
func (p *prov) setDate(w http.ResponseWriter) {
	if p.quirks.get().ClockOffset != 0 {
		w.Header().Set("Date", p.clock().UTC().Format(http.TimeFormat))
	}
}

// callerIP is the address a request came from, as an IP allowlist sees it.
func callerIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// stripeVersionRefusal is the 400 message for a Stripe-Version the quirk refuses, or
// "" when the request may go on.
func stripeVersionRefusal(refuse, version string) string {
	switch {
	case refuse == "" || version == "":
		return ""
	case refuse == "*":
		return "Crypto onramp sessions are not available on API version " + version +
			". Your account's access to crypto onramp does not extend to this version; send a version with access, or no Stripe-Version header to use your account's default."
	case version == refuse:
		return "Invalid Stripe API version: " + version
	}
	return ""
}

func (s *Sim) adminGetQuirks(w http.ResponseWriter, r *http.Request) {
	if p := s.adminProv(w, r); p != nil {
		writeJSON(w, http.StatusOK, p.quirks.get())
	}
}

// adminSetQuirks replaces a provider's quirks with the body ({} clears them) and
// answers the quirks now in force.
func (s *Sim) adminSetQuirks(w http.ResponseWriter, r *http.Request) {
	p := s.adminProv(w, r)
	if p == nil {
		return
	}
	var q Quirks
	if !decodeAdminBody(w, r, &q) {
		return
	}
	if err := q.validate(p.id); err != nil {
		adminError(w, http.StatusBadRequest, p.id+": "+err.Error())
		return
	}
	p.quirks.set(q)
	writeJSON(w, http.StatusOK, q)
}
