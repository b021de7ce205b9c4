// Package circle holds the adapters for Circle's list endpoints. This file has what
// every Circle list shares: Bearer authentication, {"code","message"} error bodies,
// pages of {"data":[...]} newest first (createDate DESC) that follow the Link header's
// rel="next" (or, when a server sends no Link header, pageAfter=<last id>) with the
// walk's upper time bound `to` pinned at its first page, RFC 3339 dates and
// {amount,currency} money objects with decimal-string amounts. Each product's file maps
// its own items.
package circle

import (
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

// listEndpoint describes one Circle list endpoint.
type listEndpoint struct {
	// path is the list path below the base URL ("/v1/cpn/payments"); one item is read
	// at path + "/" + id.
	path        string
	maxPageSize int
	// capDocumented records that Circle documents maxPageSize as the endpoint's page
	// limit, so that without a Link header a page shorter than asked is the last one.
	// Elsewhere such a walk continues until an empty page.
	capDocumented bool
	// secretFields are the JSON member names removed, at any depth, from every raw
	// object before it leaves the adapter.
	secretFields []string
	// parse maps the elements of a page's data array; it never fails as a whole.
	parse func(data []json.RawMessage) ([]diff.Item, []provider.Skipped)
}

// lister walks one Circle list endpoint for one configured source.
type lister struct {
	ep       listEndpoint
	base     *url.URL // scheme, host and optional path prefix; no trailing slash
	apiKey   string
	pageSize int
	client   *provider.Client
	// now pins the `to` bound of a walk at its first page.
	now func() time.Time
	// pending holds anomalies not yet collected by Anomalies.
	pending []provider.Anomaly
}

// anomalies returns and forgets the anomalies seen since the last call
// (provider.AnomalyReporter).
func (l *lister) anomalies() []provider.Anomaly {
	a := l.pending
	l.pending = nil
	return a
}

// keys are the configuration keys of every Circle provider: the API key, sent as a
// Bearer token.
var keys = []provider.Key{{Name: "api_key", Secret: true, Required: true, Early: true}}

// newLister validates the settings Circle adapters share. Every problem is reported,
// each naming its configuration key; the API key itself never appears in a message.
func newLister(ep listEndpoint, s provider.Settings, c *provider.Client) (*lister, error) {
	var errs []error
	if s.Value("api_key") == "" {
		errs = append(errs, errors.New("api_key: must be set"))
	}
	base, err := provider.ParseBaseURL(s.BaseURL)
	if err != nil {
		errs = append(errs, err)
	}
	if s.PageSize < 1 || s.PageSize > ep.maxPageSize {
		errs = append(errs, fmt.Errorf("page_size: %d is outside 1..%d", s.PageSize, ep.maxPageSize))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if c == nil {
		c = &provider.Client{}
	}
	return &lister{ep: ep, base: base, apiKey: s.Value("api_key"), pageSize: s.PageSize, client: c, now: time.Now}, nil
}

// page reads one page: the newest one (pinning `to` at now and applying req.From) when
// req.Cursor is "", else the page at the cursor, which is the URL a previous page
// returned as Next.
func (l *lister) page(ctx context.Context, req provider.Request) (provider.Page, error) {
	u, err := l.pageURL(req)
	if err != nil {
		return provider.Page{}, err
	}
	body, h, err := l.get(ctx, u)
	if err != nil {
		return provider.Page{}, err
	}
	data, err := decodeList(body)
	if err != nil {
		return provider.Page{}, fmt.Errorf("GET %s: %w", u.Redacted(), &provider.MalformedError{Err: err})
	}
	items, skipped := l.ep.parse(data)
	next, err := l.nextURL(u, h, data)
	if err != nil {
		return provider.Page{}, err
	}
	return provider.Page{Items: items, Skipped: skipped, Next: next}, nil
}

// pageURL is the URL of the page req asks for. A cursor must be on base_url's scheme
// and host, since the API key goes wherever it points.
func (l *lister) pageURL(req provider.Request) (*url.URL, error) {
	if req.Cursor != "" {
		u, err := url.Parse(req.Cursor)
		if err != nil || !u.IsAbs() {
			return nil, fmt.Errorf("cursor %q is not an absolute URL", req.Cursor)
		}
		if !sameOrigin(u, l.base) {
			return nil, fmt.Errorf("cursor %s: refusing to send the api_key to %s://%s, which is not base_url %s",
				u.Redacted(), u.Scheme, u.Host, l.base.Redacted())
		}
		u.User = nil
		return u, nil
	}
	u := l.endpointURL()
	q := url.Values{}
	q.Set("pageSize", strconv.Itoa(l.pageSize))
	// Circle's own next links pin `to` so that items created during the walk do not
	// shift its pages. ISO 8601 UTC to the second, as in the API's examples.
	q.Set("to", l.now().UTC().Format(time.RFC3339))
	if !req.From.IsZero() {
		// Truncating to seconds moves the inclusive lower bound down: never a missed item.
		q.Set("from", req.From.UTC().Format(time.RFC3339))
	}
	u.RawQuery = q.Encode()
	return u, nil
}

// endpointURL is base_url joined with the endpoint's list path.
func (l *lister) endpointURL() *url.URL {
	u := *l.base
	u.Path = l.base.Path + l.ep.path
	u.RawPath = ""
	return &u
}

// get sends an authenticated GET for u and returns the body of a 2xx answer.
func (l *lister) get(ctx context.Context, u *url.URL) ([]byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, nil, fmt.Errorf("GET %s: %w", u.Redacted(), err)
	}
	req.Header.Set("Authorization", "Bearer "+l.apiKey)
	req.Header.Set("Accept", "application/json")
	return l.client.Do(ctx, req, l.decodeError)
}

// decodeError is the provider.ErrorDecoder of l's requests.
func (l *lister) decodeError(body []byte) string {
	return decodeCircleError(body, l.apiKey)
}

// maxErrorMessage bounds the provider text carried into an error.
const maxErrorMessage = 300

// decodeCircleError reads Circle's {"code":N,"message":"..."} error body as
// "code N: message"; "" when body is not in that shape. Should the message ever echo
// apiKey, the key is blanked out.
func decodeCircleError(body []byte, apiKey string) string {
	var e struct {
		Code    *int64 `json:"code"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(body, &e); err != nil || (e.Code == nil && e.Message == "") {
		return ""
	}
	msg := provider.HideSecret(e.Message, apiKey, "[api_key]")
	msg = provider.Clip(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, msg), maxErrorMessage)
	if e.Code == nil {
		return msg
	}
	return "code " + strconv.FormatInt(*e.Code, 10) + ": " + msg
}

// nextURL decides the cursor after the page at cur. An empty page is the last one. With
// a Link header, its rel="next" target is the next page and its absence marks the last
// page. Without one, a full page continues at pageAfter=<last id> with the page's other
// parameters (to, from, pageSize) kept, and a short page is the last.
func (l *lister) nextURL(cur *url.URL, h http.Header, data []json.RawMessage) (string, error) {
	if len(data) == 0 {
		return "", nil
	}
	var next *url.URL
	if links, ok := h["Link"]; ok {
		ref, found, err := linkRel(links, "next")
		if err != nil {
			return "", fmt.Errorf("GET %s: %w", cur.Redacted(), &provider.MalformedError{Err: err})
		}
		if !found {
			return "", nil
		}
		// Resolved against the request URL (RFC 8288), which is on base_url.
		u, err := cur.Parse(ref)
		if err != nil {
			return "", fmt.Errorf("GET %s: %w", cur.Redacted(), &provider.MalformedError{
				Err: fmt.Errorf("Link rel=\"next\" <%s>: %w", provider.Clip(ref, 200), err)})
		}
		if !sameOrigin(u, l.base) {
			// A gateway or proxy in front of Circle passes Circle's own links on, which
			// name Circle's host: the page they mean is on base_url. The api_key goes
			// only there.
			onBase := l.onBase(u)
			l.pending = append(l.pending, provider.Anomaly{Kind: provider.AnomalyForeignLink, Detail: fmt.Sprintf(
				"Link rel=\"next\" names %s://%s, not base_url's origin; following it on %s instead (the api_key is only sent to base_url)",
				u.Scheme, u.Host, onBase.Redacted())})
			u = onBase
		}
		u.User = nil
		next = u
	} else {
		// Without Link headers, a short page ends the walk only where Circle documents
		// the endpoint's page limit; elsewhere the walk goes on to an empty page.
		if l.ep.capDocumented && len(data) < pageSizeOf(cur, l.pageSize) {
			return "", nil
		}
		id := provider.LastID(data)
		if id == "" {
			return "", fmt.Errorf("GET %s: %w", cur.Redacted(), &provider.MalformedError{
				Err: errors.New("full page without a Link header and no item with an id to continue after")})
		}
		u := *cur
		q := u.Query()
		q.Del("pageBefore")
		q.Set("pageAfter", id)
		u.RawQuery = q.Encode()
		next = &u
	}
	if next.String() == cur.String() {
		return "", fmt.Errorf("GET %s: the next page is this page again", cur.Redacted())
	}
	return next.String(), nil
}

// onBase moves a next-page URL on another origin to base_url's: its query is kept,
// and its path too, with base_url's path prefix put before the endpoint's path where
// the link's path ends with it (a gateway that serves Circle below a prefix).
func (l *lister) onBase(u *url.URL) *url.URL {
	v := *l.base
	v.RawQuery = u.RawQuery
	v.Fragment = ""
	v.RawPath = ""
	if strings.HasSuffix(u.Path, l.ep.path) {
		v.Path = l.base.Path + l.ep.path
	} else {
		v.Path = u.Path
	}
	return &v
}

// linkRel returns the target of the first link among the Link header values whose rel
// parameter lists rel (RFC 8288: relation types compare case-insensitively, and only a
// link's first rel parameter counts). A value that is not a well-formed list of links
// is an error: guessing would risk ending a walk early.
func linkRel(values []string, rel string) (target string, found bool, err error) {
	for _, v := range values {
		links, err := parseLinks(v)
		if err != nil {
			return "", false, err
		}
		for _, l := range links {
			for _, r := range l.rels {
				if strings.EqualFold(r, rel) {
					return l.target, true, nil
				}
			}
		}
	}
	return "", false, nil
}

// link is one element of a Link header.
type link struct {
	target string
	rels   []string
}

// parseLinks parses one Link header value: `<uri>; param=value; param="quoted", ...`.
func parseLinks(s string) ([]link, error) {
	bad := func(i int, what string) error {
		return fmt.Errorf("Link header %q: %s at offset %d", provider.Clip(s, 200), what, i)
	}
	var out []link
	i := 0
	for {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == ',') {
			i++
		}
		if i == len(s) {
			return out, nil
		}
		if s[i] != '<' {
			return nil, bad(i, "expected '<'")
		}
		end := strings.IndexByte(s[i+1:], '>')
		if end < 0 {
			return nil, bad(i, "unclosed '<'")
		}
		l := link{target: strings.TrimSpace(s[i+1 : i+1+end])}
		i += end + 2
		relSeen := false
		for {
			i = skipSpace(s, i)
			if i == len(s) || s[i] == ',' {
				break
			}
			if s[i] != ';' {
				return nil, bad(i, "expected ';' or ','")
			}
			i = skipSpace(s, i+1)
			start := i
			for i < len(s) && !strings.ContainsRune("=;, \t", rune(s[i])) {
				i++
			}
			name := s[start:i]
			if name == "" {
				return nil, bad(i, "empty parameter name")
			}
			i = skipSpace(s, i)
			var val string
			if i < len(s) && s[i] == '=' {
				i = skipSpace(s, i+1)
				if i < len(s) && s[i] == '"' {
					var b strings.Builder
					closed := false
					for i++; i < len(s); i++ {
						if s[i] == '\\' && i+1 < len(s) {
							i++
							b.WriteByte(s[i])
							continue
						}
						if s[i] == '"' {
							closed = true
							i++
							break
						}
						b.WriteByte(s[i])
					}
					if !closed {
						return nil, bad(i, "unclosed quoted string")
					}
					val = b.String()
				} else {
					start := i
					for i < len(s) && !strings.ContainsRune(";, \t", rune(s[i])) {
						i++
					}
					val = s[start:i]
				}
			}
			if strings.EqualFold(name, "rel") && !relSeen {
				relSeen = true
				l.rels = strings.Fields(val)
			}
		}
		out = append(out, l)
	}
}

func skipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	return i
}

// pageSizeOf is the pageSize a page URL asked for, or def when it names none.
func pageSizeOf(u *url.URL, def int) int {
	if n, err := strconv.Atoi(u.Query().Get("pageSize")); err == nil && n > 0 {
		return n
	}
	return def
}

// sameOrigin reports whether a and b have the same scheme, host and port (default
// ports made explicit).
func sameOrigin(a, b *url.URL) bool {
	if !strings.EqualFold(a.Scheme, b.Scheme) || !strings.EqualFold(a.Hostname(), b.Hostname()) {
		return false
	}
	return portOf(a) == portOf(b)
}

func portOf(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if strings.EqualFold(u.Scheme, "https") {
		return "443"
	}
	return "80"
}

// getOne reads the single item at the endpoint's path + "/" + id, answered as
// {"data":{...}}. A 404 is an error wrapping provider.ErrNotFound (and the
// *provider.StatusError).
func (l *lister) getOne(ctx context.Context, id string) (json.RawMessage, *url.URL, error) {
	if id == "" || id == "." || id == ".." {
		return nil, nil, fmt.Errorf("get %q: not an item id", id)
	}
	u := l.endpointURL()
	u.RawPath = u.EscapedPath() + "/" + url.PathEscape(id)
	u.Path += "/" + id
	body, _, err := l.get(ctx, u)
	if err != nil {
		var se *provider.StatusError
		if errors.As(err, &se) && se.Code == http.StatusNotFound {
			return nil, u, fmt.Errorf("%w: %w", provider.ErrNotFound, err)
		}
		return nil, u, err
	}
	var env struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, u, fmt.Errorf("GET %s: %w", u.Redacted(), &provider.MalformedError{Err: fmt.Errorf("body: %w", err)})
	}
	if !provider.IsObject(env.Data) {
		return nil, u, fmt.Errorf("GET %s: %w", u.Redacted(), &provider.MalformedError{Err: errors.New(`body has no "data" object`)})
	}
	return env.Data, u, nil
}

// decodeList returns the elements of a page body's "data" array. A body that is not a
// JSON object with a data array (including a truncated one) is an error.
func decodeList(body []byte) ([]json.RawMessage, error) {
	var env struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("body is not a JSON object: %w", err)
	}
	if len(env.Data) == 0 || env.Data[0] != '[' {
		return nil, errors.New(`body has no "data" array`)
	}
	data, err := provider.Elements(env.Data)
	if err != nil {
		return nil, fmt.Errorf(`"data": %w`, err)
	}
	return data, nil
}

// circleTime parses a Circle date (RFC 3339) as UTC; field names it in errors.
func circleTime(field, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, fmt.Errorf("%s: missing", field)
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s %q: not an RFC 3339 time", field, provider.Clip(s, 64))
	}
	// An offset can move a year-0000 time into year -1: RFC 3339 (and an event) cannot
	// carry it.
	if y := t.UTC().Year(); y < 0 || y > 9999 {
		return time.Time{}, fmt.Errorf("%s %q: outside the years 0000 to 9999 in UTC", field, provider.Clip(s, 64))
	}
	return t.UTC(), nil
}

// circleMoney is Circle's money object.
type circleMoney struct {
	// Amount is a decimal string ("110.270000"); a bare JSON number is accepted too and
	// read from its literal, never through float64.
	Amount   json.RawMessage `json:"amount"`
	Currency string          `json:"currency"`
}

// money maps m; nil when m or its amount is absent or null. field names m in errors.
func (m *circleMoney) money(field string) (*diff.Money, error) {
	if m == nil {
		return nil, nil
	}
	d, ok, err := provider.ParseAmountJSON(m.Amount)
	if err != nil {
		return nil, fmt.Errorf("%s.amount %w", field, err)
	}
	if !ok {
		return nil, nil
	}
	return &diff.Money{Value: d, Currency: m.Currency}, nil
}
