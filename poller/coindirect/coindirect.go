// Package coindirect is the adapter for Coindirect's merchant payments (provider id
// coindirect_payments): GET /api/v1/pay/summary?merchantId=… lists a merchant's
// payments as a bare JSON array paged by offset and max, and GET
// /api/v1/pay/{uuid}/summary reads one payment. Every request carries a Hawk
// Authorization header (hawk.go). Amounts are JSON numbers of any precision, in plain
// or exponent form, and are read from their literal text, never through float64; dates
// are epoch milliseconds.
package coindirect

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller/provider"
)

// Paths below base_url.
const (
	listPath    = "/api/v1/pay/summary"
	paymentPath = "/api/v1/pay/" // + uuid + "/summary"
)

// Page sizes. The docs give only the default of max (10) and no upper limit;
// maxPageSize is watcher's own cap, kept moderate because a server that silently
// served fewer than max items per page would end a walk early (a short page is the
// last one).
const (
	maxPageSize     = 100
	defaultPageSize = 10
)

// Payments is the provider coindirect_payments. The default base URL is production
// (the official SDK's base path); the sandbox is https://api.sandbox.coindirect.com,
// set through base_url.
var Payments = provider.Provider{
	Kind:            kindPayment,
	Statuses:        map[string]diff.Mapping{kindPayment: PaymentStatus, kindTransaction: TransactionStatus},
	DefaultBaseURL:  "https://api.coindirect.com",
	MaxPageSize:     maxPageSize,
	DefaultPageSize: defaultPageSize,
	Keys:            keys,
	New:             NewPayments,
}

// keys are Coindirect's configuration keys: the Hawk credentials, the merchant id,
// whether the query string is signed, and how the date filter is written.
var keys = []provider.Key{
	{Name: "hawk_id", Required: true},
	{Name: "hawk_key", Secret: true, Required: true},
	{Name: "merchant_id", Required: true},
	{Name: "sign_query", Bool: true, Default: "true"},
	{Name: "from_date_format"},
	// webhook_secret is the merchant secret signing webhooks (comma-separated while
	// rotating); webhook_signature_header the header carrying the signature, which
	// Coindirect does not document (package webhook has the default).
	{Name: "webhook_secret", Secret: true},
	{Name: "webhook_signature_header"},
}

// paymentsSource lists one merchant's payments; it implements provider.Source and
// provider.Getter.
type paymentsSource struct {
	base       *url.URL // scheme, host and optional path prefix; no trailing slash
	hawkID     string
	hawkKey    string
	merchantID string
	signQuery  bool
	dateFormat string // one of FromDateFormats
	pageSize   int
	// fullPages records that the server has served a page of pageSize items (see Page).
	fullPages atomic.Bool
	client    *provider.Client
	// now gives the Hawk timestamp and nonce a fresh nonce; tests replace them.
	now   func() time.Time
	nonce func() string

	// clockOffset is the provider's clock minus this host's, learnt from a refused
	// stale timestamp (see get); requests are signed at now()+clockOffset.
	clockOffset time.Duration
	// anomalies are those noted since the poller last called Anomalies.
	anomalies []provider.Anomaly
}

// NewPayments builds a Coindirect payments source. It needs hawk_id and hawk_key (the
// Hawk credentials), merchant_id (sent as merchantId), an absolute http(s) base_url
// and a page_size in 1..100; it reports every missing or invalid one by its key and
// never shows the Hawk key. sign_query says whether the query string is signed: any
// value but "false" signs it (the default); a refused request is signed the other way
// once, and the source keeps the signing that works (see get). The returned source
// also implements provider.Getter and provider.AnomalyReporter. c may be nil (a zero
// provider.Client).
func NewPayments(s provider.Settings, c *provider.Client) (provider.Source, error) {
	var errs []error
	hawkID, hawkKey, merchantID := s.Value("hawk_id"), s.Value("hawk_key"), s.Value("merchant_id")
	switch {
	case hawkID == "":
		errs = append(errs, errors.New("hawk_id: must be set"))
	case !validHawkValue(hawkID):
		errs = append(errs, errors.New(`hawk_id: must be printable ASCII without '"' or '\'`))
	}
	if hawkKey == "" {
		errs = append(errs, errors.New("hawk_key: must be set"))
	}
	if merchantID == "" {
		errs = append(errs, errors.New("merchant_id: must be set"))
	}
	base, err := provider.ParseBaseURL(s.BaseURL)
	if err != nil {
		errs = append(errs, err)
	}
	if s.PageSize < 1 || s.PageSize > maxPageSize {
		errs = append(errs, fmt.Errorf("page_size: %d is outside 1..%d", s.PageSize, maxPageSize))
	}
	format := s.Value("from_date_format")
	if format == "" {
		format = DefaultFromDateFormat
	}
	if !slices.Contains(FromDateFormats, format) {
		errs = append(errs, fmt.Errorf("from_date_format: %q is not one of %s", provider.Clip(format, 40), strings.Join(FromDateFormats, ", ")))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if c == nil {
		c = &provider.Client{}
	}
	return &paymentsSource{dateFormat: format,
		base: base, hawkID: hawkID, hawkKey: hawkKey, merchantID: merchantID,
		signQuery: s.Value("sign_query") != "false", pageSize: s.PageSize, client: c, now: time.Now, nonce: newNonce,
	}, nil
}

// The ways fromDate can be written (from_date_format). The docs do not give its format
// [undocumented]; epoch milliseconds, the API's date format everywhere else, is the
// default. Each rounds the bound down (to the millisecond, second or day): never a
// missed payment, at worst a few older ones that the poller leaves out.
const (
	FromDateEpochMillis  = "epoch_ms"
	FromDateEpochSeconds = "epoch_s"
	FromDateRFC3339      = "rfc3339"
	FromDateDay          = "date"
)

// DefaultFromDateFormat is used when from_date_format is not set.
const DefaultFromDateFormat = FromDateEpochMillis

// FromDateFormats lists the accepted from_date_format values.
var FromDateFormats = []string{FromDateEpochMillis, FromDateEpochSeconds, FromDateRFC3339, FromDateDay}

// formatFromDate writes t as fromDate in the given format.
func formatFromDate(t time.Time, format string) string {
	t = t.UTC()
	switch format {
	case FromDateEpochSeconds:
		return strconv.FormatInt(t.Unix(), 10)
	case FromDateRFC3339:
		return t.Truncate(time.Second).Format(time.RFC3339)
	case FromDateDay:
		return t.Format(time.DateOnly)
	default:
		return strconv.FormatInt(t.UnixMilli(), 10)
	}
}

// validFromDate reports whether v is a fromDate that formatFromDate writes in format.
func validFromDate(v, format string) bool {
	var err error
	switch format {
	case FromDateRFC3339:
		_, err = time.Parse(time.RFC3339, v)
	case FromDateDay:
		_, err = time.Parse(time.DateOnly, v)
	default:
		_, err = strconv.ParseInt(v, 10, 64)
	}
	return err == nil
}

// A walk's position travels in the cursor as a query string: offset=N, plus the walk's
// fromDate when it has one (the first page's req.From, which later pages keep).
const (
	cursorOffset   = "offset"
	cursorFromDate = "fromDate"
)

// Page lists one page of payments. req.Cursor "" starts a walk at offset 0 (applying
// req.From as fromDate); a cursor continues at the offset it holds. Next is
// offset + the number of elements the page held, or "" when the page held none, or
// fewer than max once the server has shown that it serves max items a page: offsets
// only grow, so a walk always ends.
//
// The list is taken to be newest first by dateCreated [inferred: the order is
// undocumented]; the poller checks the order of every page and copes with any.
// Payments created during a walk shift the offset pages towards older items, so a
// payment can appear again on the next page; none is skipped. The adapter drops a
// uuid repeated within one page; repeats across pages cannot be recognised without
// carrying the walk's uuids in the cursor, and the poller drops them (it reads each id
// once per cycle).
func (s *paymentsSource) Page(ctx context.Context, req provider.Request) (provider.Page, error) {
	offset, fromDate, err := s.position(req)
	if err != nil {
		return provider.Page{}, err
	}
	u := s.endpoint(listPath)
	q := url.Values{}
	q.Set("merchantId", s.merchantID)
	q.Set("offset", strconv.Itoa(offset))
	q.Set("max", strconv.Itoa(s.pageSize))
	if fromDate != "" {
		q.Set("fromDate", fromDate)
	}
	u.RawQuery = q.Encode()
	body, err := s.get(ctx, u)
	if err != nil {
		return provider.Page{}, err
	}
	data, err := decodeList(body)
	if err != nil {
		return provider.Page{}, fmt.Errorf("GET %s: %w", u.Redacted(), &provider.MalformedError{Err: err})
	}
	items, skipped := parseItems(data)
	p := provider.Page{Items: items, Skipped: skipped}
	if len(data) >= s.pageSize {
		s.fullPages.Store(true)
	}
	// The list's end is an empty page. A short page ends the walk only once the server
	// has served a full page of max items: then it honours max, and only the list's end
	// is short. A server capping pages below max (undocumented either way) costs one
	// more request at the end of each walk instead of every item past the cap.
	if len(data) > 0 && (len(data) >= s.pageSize || !s.fullPages.Load()) {
		next := url.Values{}
		next.Set(cursorOffset, strconv.Itoa(offset+len(data)))
		if fromDate != "" {
			next.Set(cursorFromDate, fromDate)
		}
		p.Next = next.Encode()
	}
	return p, nil
}

// position reads the offset and fromDate of the page req asks for.
//
// fromDate is written in the source's from_date_format (see formatFromDate); the
// cursor carries it as sent.
func (s *paymentsSource) position(req provider.Request) (offset int, fromDate string, err error) {
	if req.Cursor == "" {
		if !req.From.IsZero() {
			fromDate = formatFromDate(req.From, s.dateFormat)
		}
		return 0, fromDate, nil
	}
	bad := func(why string) (int, string, error) {
		return 0, "", fmt.Errorf("cursor %q: %s", provider.Clip(req.Cursor, 200), why)
	}
	q, err := url.ParseQuery(req.Cursor)
	if err != nil {
		return bad("not a query string")
	}
	for k, v := range q {
		if (k != cursorOffset && k != cursorFromDate) || len(v) != 1 {
			return bad("unexpected " + strconv.Quote(k))
		}
	}
	offset, err = strconv.Atoi(q.Get(cursorOffset))
	if err != nil || offset < 0 {
		return bad("no offset")
	}
	fromDate = q.Get(cursorFromDate)
	if _, ok := q[cursorFromDate]; ok && !validFromDate(fromDate, s.dateFormat) {
		return bad("fromDate is not in from_date_format " + s.dateFormat)
	}
	return offset, fromDate, nil
}

// endpoint is base_url joined with path (unescaped and escaped forms alike).
func (s *paymentsSource) endpoint(path string) *url.URL {
	u := *s.base
	u.Path = s.base.Path + path
	u.RawPath = ""
	return &u
}

// get sends a Hawk-signed GET for u and returns the body of a 2xx answer.
//
// A refused authentication (401) is sent again once, with a fresh nonce, when the
// refusal can be corrected:
//   - A stale timestamp whose WWW-Authenticate carries the provider's time (a tsm
//     that verifies, see staleTimestamp) sets the source's clock offset, which later
//     requests keep, and reports provider.AnomalyClockSkew. Refused again, the error
//     is a *provider.CauseError "clock_skew" naming the offset. A stale timestamp
//     without a time that verifies is not retried; its error is a "clock_skew"
//     CauseError too.
//   - Any other 401 for a URL with a query string is signed the other way (see
//     sign_query). Any answer but a 401 means that signing was accepted: the source
//     keeps it and reports provider.AnomalySigning. Refused again, the error is a
//     *provider.CauseError saying the credentials were refused under both signings.
func (s *paymentsSource) get(ctx context.Context, u *url.URL) ([]byte, error) {
	body, h, err := s.send(ctx, u, s.signQuery)
	if !unauthorized(err) {
		return body, err
	}
	if server, stale, ok := staleTimestamp(h, s.hawkKey); stale {
		if !ok {
			return nil, &provider.CauseError{
				Cause: provider.AnomalyClockSkew,
				Advice: "clock skew: the provider refused the request's timestamp as stale and sent no time that verifies " +
					"with hawk_key; check the host's clock (NTP)",
				Err: err,
			}
		}
		return s.resendAt(ctx, u, server)
	}
	if u.RawQuery == "" {
		return nil, err
	}
	return s.resendSignedOtherWay(ctx, u, err)
}

// send sends one GET for u signed with a fresh nonce at the provider's time as the
// source knows it; signQuery says whether the query string is signed. It returns the
// answer's headers with any error of a non-2xx answer.
func (s *paymentsSource) send(ctx context.Context, u *url.URL, signQuery bool) ([]byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, nil, fmt.Errorf("GET %s: %w", u.Redacted(), err)
	}
	ts := s.now().Add(s.clockOffset).Unix()
	// Signed from the request's own URL, which is what goes on the wire.
	req.Header.Set("Authorization", HawkHeader(req.Method, req.URL, s.hawkID, s.hawkKey, ts, s.nonce(), signQuery))
	req.Header.Set("Accept", "application/json")
	return s.client.Do(ctx, req, s.decodeError)
}

// resendAt adopts server, the provider's time from a stale-timestamp refusal, as the
// source's clock and sends the GET for u again.
func (s *paymentsSource) resendAt(ctx context.Context, u *url.URL, server time.Time) ([]byte, error) {
	s.clockOffset = server.Sub(s.now()).Round(time.Second)
	skew := describeSkew(s.clockOffset)
	s.note(provider.AnomalyClockSkew, "clock skew: "+skew+
		"; requests are signed with the provider's time; fix the host's clock (NTP)")
	body, _, err := s.send(ctx, u, s.signQuery)
	if !unauthorized(err) {
		return body, err
	}
	return nil, &provider.CauseError{
		Cause: provider.AnomalyClockSkew,
		Advice: "clock skew: " + skew + " and the request signed with the provider's time was refused too; " +
			"fix the host's clock (NTP), then check hawk_id and hawk_key",
		Err: err,
	}
}

// resendSignedOtherWay sends the GET for u again with the query string signed the
// other way than sign_query says, after refused, the configured signing's refusal.
func (s *paymentsSource) resendSignedOtherWay(ctx context.Context, u *url.URL, refused error) ([]byte, error) {
	other := !s.signQuery
	body, h, err := s.send(ctx, u, other)
	var se *provider.StatusError
	accepted := err == nil || errors.As(err, &se) && se.Code != http.StatusUnauthorized
	// Hawk checks the timestamp only once the mac verified: a stale answer with a
	// verifiable server time accepts this signing too (a host whose clock is off and
	// whose signing differs meets both at once).
	server, stale, verified := staleTimestamp(h, s.hawkKey)
	if accepted || (unauthorized(err) && stale && verified) {
		s.signQuery = other
		s.note(provider.AnomalySigning, fmt.Sprintf(
			"sign_query: the provider refused the Hawk mac with sign_query %t and accepted it with %t; "+
				"requests are now signed that way; set sign_query: %t to skip the failed first try",
			!other, other, other))
		if !accepted {
			return s.resendAt(ctx, u, server)
		}
		return body, err
	}
	if !unauthorized(err) {
		return nil, err
	}
	return nil, &provider.CauseError{
		Cause: provider.CauseUnauthorized,
		Advice: "coindirect refused the Hawk credentials under both signings (sign_query true and false): " +
			"check hawk_id and hawk_key",
		Err: refused,
	}
}

// unauthorized reports whether err is the provider's 401.
func unauthorized(err error) bool {
	var se *provider.StatusError
	return errors.As(err, &se) && se.Code == http.StatusUnauthorized
}

// describeSkew says how the provider's clock stands to this host's, offset being the
// provider's minus the host's ("provider time is 93s ahead of this host").
func describeSkew(offset time.Duration) string {
	secs := int64(offset / time.Second)
	switch {
	case secs > 0:
		return fmt.Sprintf("provider time is %ds ahead of this host", secs)
	case secs < 0:
		return fmt.Sprintf("provider time is %ds behind this host", -secs)
	}
	return "provider time is within a second of this host's, yet the provider called the timestamp stale"
}

// note records an anomaly for the poller (see Anomalies).
func (s *paymentsSource) note(kind, detail string) {
	s.anomalies = append(s.anomalies, provider.Anomaly{Kind: kind, Detail: detail})
}

// Anomalies returns the anomalies noted since its last call and forgets them; it
// implements provider.AnomalyReporter.
func (s *paymentsSource) Anomalies() []provider.Anomaly {
	a := s.anomalies
	s.anomalies = nil
	return a
}

// Get reads one payment by uuid. A 404 is an error wrapping provider.ErrNotFound.
// Transactions the adapter cannot map are left out of the returned item; a payment it
// cannot map at all, or one with another uuid, is a *provider.MalformedError.
func (s *paymentsSource) Get(ctx context.Context, id string) (diff.Item, error) {
	if !validUUID(id) {
		return diff.Item{}, fmt.Errorf("get %q: not a payment uuid", provider.Clip(id, 100))
	}
	u := s.endpoint(paymentPath + id + "/summary")
	body, err := s.get(ctx, u)
	if err != nil {
		var se *provider.StatusError
		if errors.As(err, &se) && se.Code == http.StatusNotFound {
			return diff.Item{}, fmt.Errorf("%w: %w", provider.ErrNotFound, err)
		}
		return diff.Item{}, err
	}
	malformed := func(err error) (diff.Item, error) {
		return diff.Item{}, fmt.Errorf("GET %s: %w", u.Redacted(), &provider.MalformedError{Err: err})
	}
	if !json.Valid(body) {
		return malformed(errors.New("body is not JSON"))
	}
	it, skipped, ok := parsePayment(bytes.TrimSpace(body), "body")
	if !ok {
		return malformed(errors.New(skipped[0].Reason))
	}
	if it.ID != id {
		return malformed(fmt.Errorf("asked for payment %q, got %q", id, provider.Clip(it.ID, 100)))
	}
	return it, nil
}

// validUUID accepts ids made of characters that need no escaping in a path (uuids are),
// so that the signed path and the path the server sees cannot differ.
func validUUID(id string) bool {
	if id == "" || id == "." || id == ".." || len(id) > 200 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' || r == '~') {
			return false
		}
	}
	return true
}

// decodeList returns the elements of a page body, which must be a JSON array.
func decodeList(body []byte) ([]json.RawMessage, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '[' {
		return nil, errors.New("body is not a JSON array")
	}
	data, err := provider.Elements(body)
	if err != nil {
		return nil, fmt.Errorf("body: %w", err)
	}
	return data, nil
}

// maxErrorMessage bounds the provider text carried into an error.
const maxErrorMessage = 300

// decodeError is the provider.ErrorDecoder of s's requests.
func (s *paymentsSource) decodeError(body []byte) string {
	return decodeErrorList(body, s.hawkKey, s.hawkID)
}

// decodeErrorList reads Coindirect's {"errorList":[{"parameter","message","code"}]}
// body as "code X: message (parameter p)" per entry, joined by "; "; parts the entry
// lacks are left out. It returns "" when body is not in that shape. Should a message
// ever echo a secret, the secret is blanked out.
func decodeErrorList(body []byte, secrets ...string) string {
	var e struct {
		ErrorList []struct {
			Parameter *string         `json:"parameter"`
			Message   *string         `json:"message"`
			Code      json.RawMessage `json:"code"`
		} `json:"errorList"`
	}
	if err := json.Unmarshal(body, &e); err != nil || len(e.ErrorList) == 0 {
		return ""
	}
	var parts []string
	for _, x := range e.ErrorList {
		var b strings.Builder
		if code := errorCode(x.Code); code != "" {
			b.WriteString("code " + code + ": ")
		}
		if x.Message != nil {
			b.WriteString(*x.Message)
		}
		if x.Parameter != nil && *x.Parameter != "" {
			b.WriteString(" (parameter " + *x.Parameter + ")")
		}
		if b.Len() > 0 {
			parts = append(parts, b.String())
		}
	}
	msg := strings.Join(parts, "; ")
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, "[credential]")
		}
	}
	return provider.Clip(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, msg), maxErrorMessage)
}

// errorCode prints an errorList code given as a string (as documented) or a number.
func errorCode(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String()
	}
	return ""
}
