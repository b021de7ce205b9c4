package probe

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/payments-watcher/watcher/poller/coindirect"
	"github.com/payments-watcher/watcher/poller/provider"
)

// hook is what one provider adds to the shared checks. Every field is optional.
type hook struct {
	// AfterFirstPage runs once the first page was asked for, before the rest. It may
	// switch the session to other settings the server accepts (replacing its source,
	// settings and first page, and setting credentialsNote), and returns checks of its
	// own, reported after the shared ones.
	AfterFirstPage func(ctx context.Context, s *session) []Check
	// Refused adds the provider's advice to a refused first page ("" for none).
	Refused func(set provider.Settings, se *provider.StatusError) string
	// ClockFail, when set, makes the clock check fail beyond this skew; ClockNote says
	// why the provider cares.
	ClockFail time.Duration
	ClockNote string
	// DateGranularity, when set, is the precision the adapter sends a date filter's
	// bound with (it rounds the bound down to it); one second when not set.
	DateGranularity func(set provider.Settings) time.Duration
}

// hooks holds the provider hooks by provider id: the only place probe tells providers
// apart.
var hooks = map[string]hook{
	"coindirect_payments": {
		AfterFirstPage: checkSignQuery,
		ClockFail:      5 * time.Minute,
		ClockNote:      "Coindirect refuses Hawk timestamps more than a minute off its clock",
		DateGranularity: func(set provider.Settings) time.Duration {
			if set.Value("from_date_format") == coindirect.FromDateDay {
				return 24 * time.Hour
			}
			return time.Second
		},
	},
	"stripe_crypto_onramp_sessions": {
		Refused: stripeRefused,
	},
}

// checkSignQuery finds which sign_query Coindirect accepts. The first page was signed
// with the configured value; when the server refused that mac (401, other than for a
// stale timestamp), the adapter may have signed the page again the other way itself
// (it then reports provider.AnomalySigning, or the page's second exchange succeeded);
// when it did not, the other value is tried here with a second source, and the session
// goes on with whichever works. A 401 for a stale timestamp comes after the mac was
// verified, so it shows the configured value works.
func checkSignQuery(ctx context.Context, s *session) []Check {
	conf := signQuery(s.settings)
	if s.srcErr != nil {
		return []Check{warn(CheckSignQuery, "skipped: the source cannot be built (see credentials)")}
	}
	refused := macRefusals(s.first.ex)
	_, flipped := s.anomaly(provider.AnomalySigning)
	if s.first.err == nil {
		if flipped || refused > 0 {
			// Later sources of the session sign the accepted way from their first request.
			s.settings = withSignQuery(s.settings, !conf)
			s.credentialsNote = fmt.Sprintf("hawk_id and hawk_key accepted once signed with sign_query %t (see sign_query)", !conf)
			return []Check{signedOtherWay(conf)}
		}
		return []Check{ok(CheckSignQuery, "sign_query %t (configured) accepted%s", conf, staleNote(s.first.ex))}
	}
	if !unauthorized(s.first.err) {
		return []Check{warn(CheckSignQuery, "skipped: the first page failed otherwise than with a 401 (see credentials)")}
	}
	if refused == 0 {
		// Only the timestamp was refused: the mac, hence the signing and the keys, passed.
		s.credentialsNote = "hawk_id and hawk_key accepted: the server verified the mac and refused the timestamp as stale (see clock)"
		return []Check{ok(CheckSignQuery, "sign_query %t (configured): the server verified the mac and refused the timestamp as stale", conf)}
	}
	if refused >= 2 {
		return []Check{fail(CheckSignQuery, "neither sign_query value is accepted (the adapter tried both): %v", s.first.err)}
	}
	return []Check{trySignedOtherWay(ctx, s)}
}

// signQuery returns Coindirect's sign_query setting.
func signQuery(set provider.Settings) bool { return set.Value("sign_query") != "false" }

// withSignQuery returns a copy of set whose sign_query is on.
func withSignQuery(set provider.Settings, on bool) provider.Settings {
	return set.With("sign_query", strconv.FormatBool(on))
}

// trySignedOtherWay lists the first page again with sign_query flipped, through a
// second source; when that is accepted the session continues with it.
func trySignedOtherWay(ctx context.Context, s *session) Check {
	conf := signQuery(s.settings)
	other := withSignQuery(s.settings, !conf)
	src, err := s.newSource(other)
	if err != nil {
		return warn(CheckSignQuery, "skipped: %v", err)
	}
	l := s.list(ctx, src, provider.Request{})
	if l.err != nil {
		if unauthorized(l.err) {
			return fail(CheckSignQuery, "neither sign_query value is accepted: %t (configured): %v; %t: %v", conf, s.first.err, !conf, l.err)
		}
		return fail(CheckSignQuery, "the configured sign_query %t is refused (%v); with %t: %v", conf, s.first.err, !conf, l.err)
	}
	s.settings, s.src, s.first = other, src, l
	s.credentialsNote = fmt.Sprintf("hawk_id and hawk_key accepted once signed with sign_query %t (see sign_query)", !conf)
	return signedOtherWay(conf)
}

// signedOtherWay is the sign_query fail when only the value other than conf works.
func signedOtherWay(conf bool) Check {
	return fail(CheckSignQuery, "the configured sign_query %t is refused with HTTP 401; %t is accepted: set sign_query: %t", conf, !conf, !conf)
}

// macRefusals counts the 401 answers among ex that refused the mac rather than the
// timestamp.
func macRefusals(ex []Exchange) int {
	n := 0
	for _, e := range ex {
		if e.Status == http.StatusUnauthorized && !staleTimestamp(e) {
			n++
		}
	}
	return n
}

// staleNote mentions a stale-timestamp refusal among ex, after which the mac was
// known good.
func staleNote(ex []Exchange) string {
	for _, e := range ex {
		if staleTimestamp(e) {
			return " (a timestamp was refused as stale and the request signed again with the provider's time: see clock)"
		}
	}
	return ""
}

func unauthorized(err error) bool {
	var se *provider.StatusError
	return errors.As(err, &se) && se.Code == http.StatusUnauthorized
}

// staleTimestamp reports whether e is a Hawk refusal of the request's timestamp
// (WWW-Authenticate: Hawk ts="…", tsm="…", error="Stale timestamp").
func staleTimestamp(e Exchange) bool {
	for _, v := range e.Header.Values("Www-Authenticate") {
		scheme, params, _ := strings.Cut(strings.TrimSpace(v), " ")
		if strings.EqualFold(scheme, "Hawk") && strings.Contains(params, "ts=") &&
			strings.Contains(strings.ToLower(params), "stale timestamp") {
			return true
		}
	}
	return false
}

// stripeRefused names stripe_version in the advice on a refused first page: Stripe
// answers 400 (or 403) when the API version is unknown or the account has no crypto
// onramp access.
func stripeRefused(set provider.Settings, se *provider.StatusError) string {
	if se.Code == http.StatusUnauthorized || se.Code == http.StatusTooManyRequests || se.Code >= 500 {
		return ""
	}
	version := set.Value("stripe_version")
	if version == "" {
		return "stripe_version is not set, so Stripe applies the account's default API version; crypto onramp sessions need a version that has them and an account with onramp access"
	}
	return fmt.Sprintf("stripe_version is %q: check that Stripe knows this API version and that the account has crypto onramp access", version)
}
