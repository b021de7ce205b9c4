// Package stripe holds the adapter for Stripe's crypto onramp sessions. This file has
// what a Stripe list endpoint needs: HTTP Basic authentication with the secret key as
// the user and an empty password, an optional pinned Stripe-Version, Stripe's
// {"error":{...}} bodies, and list envelopes {"object":"list","data":[...],"has_more":b}
// served newest first and paged with starting_after=<last id>. onramp.go maps the
// sessions.
package stripe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/payments-watcher/watcher/poller/provider"
)

// client sends the authenticated requests of one configured Stripe source.
type client struct {
	base    *url.URL // scheme, host and optional path prefix; no trailing slash
	apiKey  string
	version string // the Stripe-Version header; "" sends none
	limit   int
	http    *provider.Client
}

// keys are the configuration keys of every Stripe provider: the secret or restricted
// API key, sent as the Basic user, and the Stripe-Version header ("" sends none).
var keys = []provider.Key{
	{Name: "api_key", Secret: true, Required: true, Early: true},
	{Name: "stripe_version"},
	// webhook_secret holds the endpoint's whsec_… secret(s), comma-separated while
	// rotating; package webhook verifies Stripe-Signature with them.
	{Name: "webhook_secret", Secret: true},
}

// newClient validates the settings every Stripe source shares and reports every
// problem, each naming its configuration key. The API key never appears in a message.
func newClient(s provider.Settings, c *provider.Client, maxPageSize int) (*client, error) {
	var errs []error
	if err := checkAPIKey(s.Value("api_key")); err != nil {
		errs = append(errs, err)
	}
	base, err := provider.ParseBaseURL(s.BaseURL)
	if err != nil {
		errs = append(errs, err)
	}
	if s.PageSize < 1 || s.PageSize > maxPageSize {
		errs = append(errs, fmt.Errorf("page_size: %d is outside 1..%d", s.PageSize, maxPageSize))
	}
	if err := checkVersion(s.Value("stripe_version")); err != nil {
		errs = append(errs, err)
	}
	if len(s.TerminalStatuses) > 0 {
		// The override exists for providers that do not document their statuses.
		errs = append(errs, errors.New("terminal_statuses: Stripe documents its statuses; the override is not supported here"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if c == nil {
		c = &provider.Client{}
	}
	return &client{base: base, apiKey: s.Value("api_key"), version: s.Value("stripe_version"), limit: s.PageSize, http: c}, nil
}

// checkAPIKey accepts a secret (sk_…) or restricted (rk_…) key that can travel as a
// Basic user: no colon, space, control or non-ASCII character.
func checkAPIKey(k string) error {
	switch {
	case k == "":
		return errors.New("api_key: must be set")
	case strings.HasPrefix(k, "pk_"):
		return errors.New("api_key: is a publishable key (pk_…); listing sessions needs a secret key (sk_…) or a restricted key (rk_…)")
	case !strings.HasPrefix(k, "sk_") && !strings.HasPrefix(k, "rk_"):
		return errors.New("api_key: must be a Stripe secret key (sk_…) or restricted key (rk_…)")
	}
	for i := 0; i < len(k); i++ {
		if b := k[i]; b <= ' ' || b > '~' || b == ':' {
			return errors.New("api_key: must not contain ':', spaces, control or non-ASCII characters")
		}
	}
	return nil
}

// checkVersion accepts any printable Stripe-Version value ("2026-08-26.dahlia", or a
// version with beta flags such as "2026-08-26.preview; crypto_onramp_beta=v1").
func checkVersion(v string) error {
	if len(v) > 200 {
		return fmt.Errorf("stripe_version: %q is longer than 200 characters", provider.Clip(v, 40))
	}
	if v != strings.TrimSpace(v) {
		return fmt.Errorf("stripe_version: %q has surrounding spaces", v)
	}
	for i := 0; i < len(v); i++ {
		if b := v[i]; b < ' ' || b > '~' {
			return fmt.Errorf("stripe_version: %q contains a control or non-ASCII character", v)
		}
	}
	return nil
}

// endpoint is base_url joined with path, and with "/" + id when id is not "".
func (c *client) endpoint(path, id string) *url.URL {
	u := *c.base
	u.Path = c.base.Path + path
	u.RawPath = ""
	if id != "" {
		u.RawPath = u.EscapedPath() + "/" + url.PathEscape(id)
		u.Path += "/" + id
	}
	return &u
}

// shouldRetryNote marks errors Stripe answered with Stripe-Should-Retry: false.
const shouldRetryNote = "Stripe-Should-Retry: false"

// get sends an authenticated GET for u and returns the body of a 2xx answer. A non-2xx
// answer is a *provider.StatusError whose message is Stripe's error (see
// formatStripeError); errCode is the error body's "code" ("resource_missing"), "" when
// there is none.
//
// Stripe-Should-Retry: false makes the error permanent (StatusError.NoRetry) and is
// noted in the message. A refusal of the API version or of onramp access (see
// refusal) is a *provider.CauseError wrapping the StatusError, which is permanent.
func (c *client) get(ctx context.Context, u *url.URL) (body []byte, errCode string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, "", fmt.Errorf("GET %s: %w", u.Redacted(), err)
	}
	req.SetBasicAuth(c.apiKey, "")
	req.Header.Set("Accept", "application/json")
	if c.version != "" {
		req.Header.Set("Stripe-Version", c.version)
	}
	var decoded stripeError
	body, h, err := c.http.Do(ctx, req, func(b []byte) string {
		e, ok := decodeStripeError(b)
		if !ok {
			return ""
		}
		decoded, errCode = e, e.Code
		return formatStripeError(e, c.apiKey)
	})
	var se *provider.StatusError
	if err != nil && errors.As(err, &se) && strings.EqualFold(h.Get("Stripe-Should-Retry"), "false") {
		se.Message = strings.TrimSpace(se.Message + " [" + shouldRetryNote + "]")
		se.NoRetry = true
	}
	if se != nil {
		if cause, advice := refusal(se.Code, decoded, u.Path, c.version); cause != "" {
			err = &provider.CauseError{Cause: cause, Advice: advice, Err: err}
		}
	}
	return body, errCode, err
}

// Causes of the Stripe refusals refusal recognises.
const (
	causeStripeVersion = "stripe_version"
	causeOnrampAccess  = "onramp_access"
)

// refusal recognises a Stripe answer (status and decoded error body) to a request for
// path, sent with Stripe-Version version ("" when none), that no repetition can change:
//   - a 400 refusing the API version (Stripe's "Invalid Stripe API version: …", or a
//     code or param naming the version) names stripe_version and the value sent;
//   - a 400, 403 or 404 saying crypto onramp is not available to the account (code
//     crypto_onramp_disabled, a message about onramp access, or a 404 "Unrecognized
//     request URL" for an onramp path, which the account cannot see) names onramp
//     access and stripe_version.
//
// cause is "" for any other answer.
func refusal(status int, e stripeError, path, version string) (cause, advice string) {
	switch {
	case status == http.StatusBadRequest && versionRefused(e):
		return causeStripeVersion, "Stripe refused the API version: " + versionSent(version) +
			"; set stripe_version to a version Stripe accepts for this account, or remove it to use the account's default"
	case (status == http.StatusBadRequest || status == http.StatusForbidden || status == http.StatusNotFound) &&
		onrampRefused(status, e, path):
		advice := "Stripe refused crypto onramp access for this account: apply for Crypto Onramp in the Stripe Dashboard; " +
			"the API is in private preview"
		if version != "" {
			advice += "; once it is granted, check that stripe_version " + strconv.Quote(version) + " serves it"
		} else {
			advice += "; once it is granted, set stripe_version if the account's default version does not serve it"
		}
		return causeOnrampAccess, advice
	}
	return "", ""
}

// versionRefused reports whether e refuses the Stripe-Version sent.
func versionRefused(e stripeError) bool {
	msg, code, param := strings.ToLower(e.Message), strings.ToLower(e.Code), strings.ToLower(e.Param)
	return strings.Contains(msg, "api version") || strings.Contains(msg, "stripe-version") ||
		strings.Contains(code, "api_version") || strings.Contains(code, "stripe_version") ||
		param == "stripe-version" || param == "stripe_version" || param == "api_version" || param == "version"
}

// onrampWords are what Stripe's messages say when an account cannot use onramp.
var onrampWords = []string{"access", "not available", "unavailable", "not enabled", "enable", "apply", "disabled", "preview"}

// onrampRefused reports whether e, a status answer for path, says that crypto onramp
// is not available to the account.
func onrampRefused(status int, e stripeError, path string) bool {
	msg, code := strings.ToLower(e.Message), strings.ToLower(e.Code)
	if code == "crypto_onramp_disabled" {
		return true
	}
	// A 403 about the key is a restricted key's missing permission, not the account's.
	if strings.Contains(msg, "onramp") && !(status == http.StatusForbidden && strings.Contains(msg, "key")) {
		for _, w := range onrampWords {
			if strings.Contains(msg, w) {
				return true
			}
		}
	}
	return status == http.StatusNotFound && code != "resource_missing" &&
		strings.HasPrefix(msg, "unrecognized request url") && strings.Contains(path, onrampPath)
}

// versionSent describes the Stripe-Version a source sends.
func versionSent(version string) string {
	if version == "" {
		return "no Stripe-Version was sent (stripe_version is not set)"
	}
	return "stripe_version is " + strconv.Quote(version) + ", sent as Stripe-Version"
}

// stripeError is the "error" member of Stripe's error bodies.
type stripeError struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Param   string `json:"param"`
}

// decodeStripeError reads {"error":{"type","code","message","param",...}}; ok is false
// when body is not in that shape.
func decodeStripeError(body []byte) (e stripeError, ok bool) {
	var env struct {
		Error *stripeError `json:"error"`
	}
	if err := json.Unmarshal(body, &env); err != nil || env.Error == nil || *env.Error == (stripeError{}) {
		return stripeError{}, false
	}
	return *env.Error, true
}

// maxErrorMessage bounds the provider text carried into an error.
const maxErrorMessage = 300

// unmaskedKey matches a Stripe secret or restricted key written out in full; Stripe's
// own masked form (sk_test_****1234) does not match.
var unmaskedKey = regexp.MustCompile(`(?:sk|rk)_(?:test_|live_)?[A-Za-z0-9]{8,}`)

// formatStripeError writes e as "type (code): message (param p)", with control
// characters blanked and clipped. Stripe echoes a rejected key masked; should a message
// ever carry apiKey or any other key in full, it is replaced.
func formatStripeError(e stripeError, apiKey string) string {
	head := e.Type
	switch {
	case head == "":
		head = e.Code
	case e.Code != "":
		head += " (" + e.Code + ")"
	}
	s := e.Message
	if head != "" {
		s = strings.TrimSpace(head + ": " + s)
	}
	if e.Param != "" {
		s += " (param " + e.Param + ")"
	}
	if apiKey != "" {
		s = strings.ReplaceAll(s, apiKey, "[api_key]")
	}
	s = unmaskedKey.ReplaceAllString(s, "[redacted key]")
	return provider.Clip(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s), maxErrorMessage)
}

// list is a decoded list envelope.
type list struct {
	data    []json.RawMessage
	hasMore bool
}

// decodeList reads a list body. A body that is not a JSON object with "object":"list",
// a "data" array and a boolean "has_more" is an error: has_more decides whether the
// walk goes on, and guessing it could end a walk early.
func decodeList(body []byte) (list, error) {
	var env struct {
		Object  *string         `json:"object"`
		Data    json.RawMessage `json:"data"`
		HasMore *bool           `json:"has_more"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return list{}, fmt.Errorf("body: %s", provider.DecodeReason(err))
	}
	switch {
	case env.Object == nil:
		return list{}, errors.New(`body has no "object": "list"`)
	case *env.Object != "list":
		return list{}, fmt.Errorf(`body is a %q object, not a list`, provider.Clip(*env.Object, 64))
	case len(env.Data) == 0 || env.Data[0] != '[':
		return list{}, errors.New(`body has no "data" array`)
	case env.HasMore == nil:
		return list{}, errors.New(`body has no "has_more" boolean`)
	}
	data, err := provider.Elements(env.Data)
	if err != nil {
		return list{}, fmt.Errorf(`"data": %s`, provider.DecodeReason(err))
	}
	return list{data: data, hasMore: *env.HasMore}, nil
}

// Query parameters of a walk. A cursor is the encoded query of the next page and holds
// these and nothing else.
const (
	paramLimit         = "limit"
	paramCreatedGTE    = "created[gte]"
	paramStartingAfter = "starting_after"
)

// firstQuery is the query of a walk's first page: the page size and, when from is set,
// the inclusive creation-time bound in unix seconds. Truncating to the second moves the
// bound down: never a missed item. Stripe's cursor is an object id, so items created
// while the walk runs do not shift its later pages and no upper bound is pinned.
func (c *client) firstQuery(from time.Time) url.Values {
	q := url.Values{}
	q.Set(paramLimit, strconv.Itoa(c.limit))
	if !from.IsZero() && from.Unix() > 0 {
		q.Set(paramCreatedGTE, strconv.FormatInt(from.Unix(), 10))
	}
	return q
}

// parseCursor checks a cursor that nextCursor made and returns its query.
func parseCursor(cursor string, maxPageSize int) (url.Values, error) {
	bad := func(why string) error {
		return fmt.Errorf("cursor %q: %s", provider.Clip(cursor, 200), why)
	}
	q, err := url.ParseQuery(cursor)
	if err != nil {
		return nil, bad("not a query string")
	}
	for k, v := range q {
		if len(v) != 1 {
			return nil, bad(k + " appears more than once")
		}
		switch k {
		case paramLimit:
			if n, err := strconv.Atoi(v[0]); err != nil || n < 1 || n > maxPageSize {
				return nil, bad(fmt.Sprintf("limit is not in 1..%d", maxPageSize))
			}
		case paramCreatedGTE:
			if _, err := strconv.ParseInt(v[0], 10, 64); err != nil {
				return nil, bad("created[gte] is not a unix time")
			}
		case paramStartingAfter:
			if v[0] == "" {
				return nil, bad("starting_after is empty")
			}
		default:
			return nil, bad("unexpected parameter " + strconv.Quote(k))
		}
	}
	if q.Get(paramStartingAfter) == "" || q.Get(paramLimit) == "" {
		return nil, bad("no starting_after or limit")
	}
	return q, nil
}

// nextCursor decides the cursor after the page that q asked for: "" when Stripe has no
// more items or sent none, else q with starting_after set to the page's last id.
func nextCursor(q url.Values, l list) (string, error) {
	if !l.hasMore || len(l.data) == 0 {
		return "", nil
	}
	id := provider.LastID(l.data)
	if id == "" {
		return "", errors.New(`"has_more" is true and no item has an id to continue after`)
	}
	if id == q.Get(paramStartingAfter) {
		return "", fmt.Errorf("the next page would start after %q again", provider.Clip(id, 100))
	}
	next := url.Values{}
	for k, v := range q {
		next[k] = v
	}
	next.Set(paramStartingAfter, id)
	return next.Encode(), nil
}
