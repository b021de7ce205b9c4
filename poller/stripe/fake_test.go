package stripe

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// stripeFake behaves like Stripe's onramp session endpoints as documented: sessions
// newest first by created, ties broken by id (descending); starting_after and
// ending_before exclusive and never together, an unknown cursor id a 400; limit 1..100
// (default 10), anything else a 400; created, created[gt], created[gte], created[lt] and
// created[lte] in unix seconds; has_more; unknown parameters a 400; HTTP Basic
// authentication with the secret key as user and an empty password; Stripe's
// {"error":{...}} bodies and a Request-Id on every answer.
type stripeFake struct {
	apiKey string // set before the fake serves

	reqID atomic.Int64

	// mu guards everything below; tests change the behaviour fields through configure.
	mu sync.Mutex
	// echoKey makes a 401 show the rejected key in full instead of masked.
	echoKey bool
	// onList, when set, runs before each list request is answered (without the lock
	// held, so it may add sessions).
	onList func(q url.Values)
	// fail, when set, may answer a request itself (returning true).
	fail func(w http.ResponseWriter, r *http.Request) bool

	sessions []fakeSession
	requests []fakeRequest // every request that passed fail, in order
}

type fakeSession struct {
	id      string
	created int64
	status  string
	body    json.RawMessage
}

// fakeRequest is what the fake recorded of one request.
type fakeRequest struct {
	path   string
	query  url.Values
	header http.Header
}

func newStripeFake(apiKey string) *stripeFake {
	return &stripeFake{apiKey: apiKey}
}

// configure changes the fake's behaviour while it serves.
func (f *stripeFake) configure(change func(f *stripeFake)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(f)
}

// add stores a session; body must be its JSON object with the same id, created and status.
func (f *stripeFake) add(id string, created int64, status string, body json.RawMessage) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sessions = append(f.sessions, fakeSession{id: id, created: created, status: status, body: body})
}

// recorded returns the requests so far.
func (f *stripeFake) recorded() []fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

// listQueries returns the queries of the list requests so far.
func (f *stripeFake) listQueries() []url.Values {
	var qs []url.Values
	for _, r := range f.recorded() {
		if r.path == onrampPath {
			qs = append(qs, r.query)
		}
	}
	return qs
}

// writeStripeError writes Stripe's error body for e with status code.
func writeStripeError(w http.ResponseWriter, code int, e stripeError) {
	body := map[string]string{"type": e.Type, "message": e.Message}
	if e.Code != "" {
		body["code"] = e.Code
		body["doc_url"] = "https://stripe.com/docs/error-codes/" + strings.ReplaceAll(e.Code, "_", "-")
	}
	if e.Param != "" {
		body["param"] = e.Param
	}
	body["request_log_url"] = "https://dashboard.stripe.com/test/logs/req_fake"
	b, _ := json.Marshal(map[string]any{"error": body})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(b)
}

// cannedErrors are the bodies writeFakeError sends.
var cannedErrors = map[int]stripeError{
	http.StatusBadRequest:          {Type: "invalid_request_error", Code: "parameter_invalid_integer", Param: "limit", Message: "Invalid integer: abc"},
	http.StatusUnauthorized:        {Type: "invalid_request_error", Message: "Invalid API Key provided: sk_test_****0000"},
	http.StatusNotFound:            {Type: "invalid_request_error", Code: "resource_missing", Param: "id", Message: "No such crypto.onramp_session: 'cos_123'"},
	http.StatusTooManyRequests:     {Type: "invalid_request_error", Code: "rate_limit", Message: "Too many requests in too short a time; slow down and retry."},
	http.StatusInternalServerError: {Type: "api_error", Message: "Something went wrong on our side; the request can be retried."},
}

// writeFakeError writes Stripe's error response for code.
func writeFakeError(w http.ResponseWriter, code int) {
	e, ok := cannedErrors[code]
	if !ok {
		e = stripeError{Type: "api_error", Message: http.StatusText(code)}
	}
	writeStripeError(w, code, e)
}

func invalidRequest(w http.ResponseWriter, code, param, msg string) {
	writeStripeError(w, http.StatusBadRequest, stripeError{Type: "invalid_request_error", Code: code, Param: param, Message: msg})
}

// maskKey shows a key the way Stripe echoes a rejected one: its sk_test_-style prefix
// and last four characters.
func maskKey(k string) string {
	prefix := ""
	for _, p := range []string{"sk_test_", "sk_live_", "rk_test_", "rk_live_"} {
		if strings.HasPrefix(k, p) {
			prefix = p
		}
	}
	rest := k[len(prefix):]
	if len(rest) <= 4 {
		return prefix + "****"
	}
	return prefix + "****" + rest[len(rest)-4:]
}

func (f *stripeFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Request-Id", fmt.Sprintf("req_fake%06d", f.reqID.Add(1)))
	f.mu.Lock()
	fail, echo := f.fail, f.echoKey
	f.mu.Unlock()
	if fail != nil && fail(w, r) {
		return
	}
	f.mu.Lock()
	f.requests = append(f.requests, fakeRequest{path: r.URL.Path, query: r.URL.Query(), header: r.Header.Clone()})
	f.mu.Unlock()

	user, pass, ok := r.BasicAuth()
	switch {
	case !ok:
		writeStripeError(w, http.StatusUnauthorized, stripeError{Type: "invalid_request_error",
			Message: "No API key was sent; send your secret key as the Basic auth user."})
		return
	case user != f.apiKey || pass != "":
		shown := maskKey(user)
		if echo {
			shown = user
		}
		writeStripeError(w, http.StatusUnauthorized, stripeError{Type: "invalid_request_error",
			Message: "Invalid API Key provided: " + shown})
		return
	}
	unrecognized := func() {
		writeStripeError(w, http.StatusNotFound, stripeError{Type: "invalid_request_error",
			Message: fmt.Sprintf("Unrecognized request URL (%s: %s).", r.Method, r.URL.Path)})
	}
	if r.Method != http.MethodGet {
		unrecognized()
		return
	}
	switch p := r.URL.Path; {
	case p == onrampPath:
		f.list(w, r)
	case strings.HasPrefix(p, onrampPath+"/") && len(p) > len(onrampPath)+1:
		f.one(w, strings.TrimPrefix(p, onrampPath+"/"))
	default:
		unrecognized()
	}
}

// one answers GET {path}/{id}; id is the decoded path segment.
func (f *stripeFake) one(w http.ResponseWriter, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.sessions {
		if s.id == id {
			w.Header().Set("Content-Type", "application/json")
			w.Write(s.body)
			return
		}
	}
	writeStripeError(w, http.StatusNotFound, stripeError{Type: "invalid_request_error", Code: "resource_missing",
		Param: "id", Message: "No such crypto.onramp_session: '" + id + "'"})
}

var fakeListParams = []string{
	"created", "created[gt]", "created[gte]", "created[lt]", "created[lte]",
	"destination_currency", "destination_network", "ending_before", "limit", "starting_after", "status",
}

func (f *stripeFake) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f.mu.Lock()
	onList := f.onList
	f.mu.Unlock()
	if onList != nil {
		onList(q)
	}
	for k, v := range q {
		if !slices.Contains(fakeListParams, k) {
			invalidRequest(w, "parameter_unknown", k, "Received unknown parameter: "+k)
			return
		}
		if len(v) > 1 {
			invalidRequest(w, "", k, "Received more than one value for "+k)
			return
		}
	}
	limit := 10
	if v, ok := q["limit"]; ok {
		n, err := strconv.Atoi(v[0])
		if err != nil {
			invalidRequest(w, "parameter_invalid_integer", "limit", "Invalid integer: "+v[0])
			return
		}
		if n < 1 || n > 100 {
			invalidRequest(w, "", "limit", "Invalid limit: must be between 1 and 100.")
			return
		}
		limit = n
	}
	lo, hi := int64(-1<<62), int64(1<<62)
	for _, c := range []struct {
		name  string
		lower bool
		add   int64
	}{{"created", true, 0}, {"created", false, 0}, {"created[gte]", true, 0}, {"created[gt]", true, 1}, {"created[lte]", false, 0}, {"created[lt]", false, -1}} {
		v, ok := q[c.name]
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(v[0], 10, 64)
		if err != nil {
			invalidRequest(w, "parameter_invalid_integer", c.name, "Invalid integer: "+v[0])
			return
		}
		if c.lower {
			lo = max(lo, n+c.add)
		} else {
			hi = min(hi, n+c.add)
		}
	}
	status := q.Get("status")
	if _, known := OnrampStatus[status]; status != "" && !known {
		invalidRequest(w, "", "status", "Invalid status: "+status)
		return
	}
	after, before := q.Get("starting_after"), q.Get("ending_before")
	if after != "" && before != "" {
		invalidRequest(w, "", "", "Send either starting_after or ending_before, not both.")
		return
	}

	f.mu.Lock()
	sorted := slices.Clone(f.sessions)
	f.mu.Unlock()
	slices.SortFunc(sorted, func(a, b fakeSession) int {
		if c := cmp.Compare(b.created, a.created); c != 0 {
			return c
		}
		return strings.Compare(b.id, a.id)
	})
	match := func(s fakeSession) bool {
		return s.created >= lo && s.created <= hi && (status == "" || s.status == status)
	}
	position := func(param, id string) (int, bool) {
		i := slices.IndexFunc(sorted, func(s fakeSession) bool { return s.id == id })
		if i < 0 {
			invalidRequest(w, "resource_missing", param, "No such crypto.onramp_session: '"+id+"'")
		}
		return i, i >= 0
	}
	var page []fakeSession
	hasMore := false
	switch {
	case before != "":
		pos, ok := position("ending_before", before)
		if !ok {
			return
		}
		var newer []fakeSession
		for _, s := range sorted[:pos] {
			if match(s) {
				newer = append(newer, s)
			}
		}
		page = newer[max(0, len(newer)-limit):]
		hasMore = len(newer) > limit
	default:
		start := 0
		if after != "" {
			pos, ok := position("starting_after", after)
			if !ok {
				return
			}
			start = pos + 1
		}
		var older []fakeSession
		for _, s := range sorted[start:] {
			if match(s) {
				older = append(older, s)
			}
		}
		page = older[:min(limit, len(older))]
		hasMore = len(older) > limit
	}
	data := make([]json.RawMessage, len(page))
	for i, s := range page {
		data[i] = s.body
	}
	b, _ := json.Marshal(map[string]any{"object": "list", "url": onrampPath, "has_more": hasMore, "data": data})
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}
