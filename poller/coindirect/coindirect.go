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
	"strconv"
	"strings"
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
	DefaultBaseURL:  "https://api.coindirect.com",
	MaxPageSize:     maxPageSize,
	DefaultPageSize: defaultPageSize,
	Credentials:     []string{"hawk_id", "hawk_key", "merchant_id"},
	New:             NewPayments,
}

// paymentsSource lists one merchant's payments; it implements provider.Source and
// provider.Getter.
type paymentsSource struct {
	base       *url.URL // scheme, host and optional path prefix; no trailing slash
	hawkID     string
	hawkKey    string
	merchantID string
	signQuery  bool
	pageSize   int
	client     *provider.Client
	// now gives the Hawk timestamp and nonce a fresh nonce; tests replace them.
	now   func() time.Time
	nonce func() string
}

// NewPayments builds a Coindirect payments source. It needs hawk_id and hawk_key (the
// Hawk credentials), merchant_id (sent as merchantId), an absolute http(s) base_url
// and a page_size in 1..100; it reports every missing or invalid one by its key and
// never shows the Hawk key. s.SignQuery says whether the query string is signed (the
// configuration's sign_query, default true). The returned source also implements
// provider.Getter. c may be nil (a zero provider.Client).
func NewPayments(s provider.Settings, c *provider.Client) (provider.Source, error) {
	var errs []error
	switch {
	case s.HawkID == "":
		errs = append(errs, errors.New("hawk_id: must be set"))
	case !validHawkValue(s.HawkID):
		errs = append(errs, errors.New(`hawk_id: must be printable ASCII without '"' or '\'`))
	}
	if s.HawkKey == "" {
		errs = append(errs, errors.New("hawk_key: must be set"))
	}
	if s.MerchantID == "" {
		errs = append(errs, errors.New("merchant_id: must be set"))
	}
	base, err := provider.ParseBaseURL(s.BaseURL)
	if err != nil {
		errs = append(errs, err)
	}
	if s.PageSize < 1 || s.PageSize > maxPageSize {
		errs = append(errs, fmt.Errorf("page_size: %d is outside 1..%d", s.PageSize, maxPageSize))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if c == nil {
		c = &provider.Client{}
	}
	return &paymentsSource{
		base: base, hawkID: s.HawkID, hawkKey: s.HawkKey, merchantID: s.MerchantID,
		signQuery: s.SignQuery, pageSize: s.PageSize, client: c, now: time.Now, nonce: newNonce,
	}, nil
}

// A walk's position travels in the cursor as a query string: offset=N, plus the walk's
// fromDate when it has one (the first page's req.From, which later pages keep).
const (
	cursorOffset   = "offset"
	cursorFromDate = "fromDate"
)

// Page lists one page of payments. req.Cursor "" starts a walk at offset 0 (applying
// req.From as fromDate); a cursor continues at the offset it holds. Next is
// offset + the number of elements the page held, or "" when the page held fewer than
// max (or none): offsets only grow, so a walk always ends.
//
// The list is newest first by dateCreated [inferred: the order is undocumented].
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
	if len(data) > 0 && len(data) >= s.pageSize {
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
// fromDate is sent as epoch milliseconds. The docs do not give its format
// [undocumented]; milliseconds are the API's date format everywhere else.
// Milliseconds are truncated, which moves the inclusive bound down: never a missed
// payment.
func (s *paymentsSource) position(req provider.Request) (offset int, fromDate string, err error) {
	if req.Cursor == "" {
		if !req.From.IsZero() {
			fromDate = strconv.FormatInt(req.From.UnixMilli(), 10)
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
	if _, ok := q[cursorFromDate]; ok {
		if _, err := strconv.ParseInt(fromDate, 10, 64); err != nil {
			return bad("fromDate is not epoch milliseconds")
		}
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
func (s *paymentsSource) get(ctx context.Context, u *url.URL) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u.Redacted(), err)
	}
	// Signed from the request's own URL, which is what goes on the wire.
	req.Header.Set("Authorization", HawkHeader(req.Method, req.URL, s.hawkID, s.hawkKey, s.now().Unix(), s.nonce(), s.signQuery))
	req.Header.Set("Accept", "application/json")
	body, _, err := s.client.Do(ctx, req, s.decodeError)
	return body, err
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
