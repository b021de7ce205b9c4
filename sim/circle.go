package sim

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Circle date layouts: CPN and ramp examples print seconds, settlements milliseconds.
const (
	circleSeconds = "2006-01-02T15:04:05Z"
	circleMillis  = "2006-01-02T15:04:05.000Z"
)

func circleTime(layout string, ms int64) string {
	return time.UnixMilli(ms).UTC().Format(layout)
}

// circleMoney is Circle's money object; amounts are decimal strings.
type circleMoney struct {
	Amount   string `json:"amount"`
	Currency string `json:"currency"`
}

// circleFieldErr is one entry of a 400 answer's errors array.
type circleFieldErr struct {
	Error        string         `json:"error"`
	Message      string         `json:"message"`
	Location     string         `json:"location"`
	InvalidValue string         `json:"invalidValue"`
	Constraints  map[string]any `json:"constraints,omitempty"`
}

type circleError struct {
	Code    int              `json:"code"`
	Message string           `json:"message"`
	Errors  []circleFieldErr `json:"errors,omitempty"`
}

// circleEndpoint describes one Circle list resource.
type circleEndpoint struct {
	path             string
	defSize, maxSize int
	// filter builds the item filter from the query (nil: everything matches) and
	// reports invalid values. It runs before the simulator's lock is taken; the
	// returned func runs under it.
	filter func(q url.Values) (func(seq int) bool, []circleFieldErr)
	// render returns the JSON object of one item; it runs under the lock.
	render func(seq int) any
	// key returns the API key the resource accepts; ramp keys must have three parts.
	key       func(c Credentials) string
	threePart bool
}

type circleAPI struct {
	p  *prov
	ep circleEndpoint
}

func newCircleAPI(p *prov, ep circleEndpoint) *circleAPI {
	return &circleAPI{p: p, ep: ep}
}

func (a *circleAPI) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+a.ep.path, serve(a.p, a, a.list))
	mux.HandleFunc("GET "+a.ep.path+"/{id}", serve(a.p, a, a.get))
}

func (a *circleAPI) begin(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("X-Request-Id", a.p.s.reqID.uuid())
}

func (a *circleAPI) fail(w http.ResponseWriter, code int) {
	switch code {
	case http.StatusTooManyRequests:
		writeJSON(w, code, circleError{Code: 429, Message: "Too many requests."})
	default:
		writeJSON(w, code, circleError{Code: -1, Message: "Something went wrong."})
	}
}

// forbid answers as Circle does a request from an address its IP allowlist lacks.
func (a *circleAPI) forbid(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusForbidden, circleError{Code: 3, Message: "Forbidden"})
}

// authorize accepts exactly "Bearer <key>" (the scheme in any case). A missing,
// malformed or wrong key gets the documented 401 body.
func (a *circleAPI) authorize(w http.ResponseWriter, r *http.Request) bool {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	ok = ok && strings.EqualFold(scheme, "Bearer")
	if ok && a.ep.threePart {
		parts := strings.Split(token, ":")
		ok = len(parts) == 3 && parts[0] != "" && parts[1] != "" && parts[2] != ""
	}
	if ok && token == a.ep.key(a.p.s.creds) {
		return true
	}
	writeJSON(w, http.StatusUnauthorized, circleError{Code: 401, Message: "Malformed authorization."})
	return false
}

func badParam(w http.ResponseWriter, errs []circleFieldErr) {
	writeJSON(w, http.StatusBadRequest, circleError{Code: 2, Message: "API parameter invalid", Errors: errs})
}

func invalidValue(location, value, msg string, constraints map[string]any) circleFieldErr {
	return circleFieldErr{Error: "invalid_value", Message: msg, Location: location, InvalidValue: value, Constraints: constraints}
}

// enumFilter validates an enum query parameter; "" means no filter.
func enumFilter(q url.Values, name string, allowed []string, errs *[]circleFieldErr) string {
	v := q.Get(name)
	if v != "" && !slices.Contains(allowed, v) {
		*errs = append(*errs, invalidValue(name, v, name+" must be one of "+strings.Join(allowed, ", "),
			map[string]any{"enum": allowed}))
	}
	return v
}

// parseCircleTime reads an RFC 3339 date parameter.
func parseCircleTime(q url.Values, name string, errs *[]circleFieldErr) (time.Time, bool) {
	v := q.Get(name)
	if v == "" {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		*errs = append(*errs, invalidValue(name, v, name+" must be an ISO 8601 date-time, e.g. 2023-01-01T12:04:05Z", nil))
		return time.Time{}, false
	}
	return t, true
}

// ceilMilli is the first whole millisecond at or after t.
func ceilMilli(t time.Time) int64 {
	ms := t.UnixMilli()
	if t.After(time.UnixMilli(ms)) {
		ms++
	}
	return ms
}

// floorMilli is the last whole millisecond at or before t.
func floorMilli(t time.Time) int64 {
	ms := t.UnixMilli()
	if t.Before(time.UnixMilli(ms)) {
		ms--
	}
	return ms
}

func (a *circleAPI) list(w http.ResponseWriter, r *http.Request) {
	s := a.p.s
	q := r.URL.Query()
	var errs []circleFieldErr
	size := a.ep.defSize
	if v := q.Get("pageSize"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			errs = append(errs, invalidValue("pageSize", v, "pageSize must be an integer of at least 1", map[string]any{"min": 1}))
		} else {
			size = min(n, a.ep.maxSize)
		}
	}
	quirks := a.p.quirks.get()
	from := int64(-1 << 62)
	if t, ok := parseCircleTime(q, "from", &errs); ok && !quirks.IgnoreDateFilter {
		from = ceilMilli(t)
	}
	now := s.now()
	toText, to := q.Get("to"), now.UnixMilli()
	if t, ok := parseCircleTime(q, "to", &errs); ok {
		to = floorMilli(t)
	} else if toText == "" {
		toText = now.UTC().Format(circleMillis)
	}
	after, before := q.Get("pageAfter"), q.Get("pageBefore")
	if after != "" && before != "" {
		errs = append(errs, invalidValue("pageBefore", before, "pageBefore and pageAfter cannot be used together", nil))
	}
	match, ferrs := func(int) bool { return true }, []circleFieldErr(nil)
	if a.ep.filter != nil {
		var m func(int) bool
		m, ferrs = a.ep.filter(q)
		if m != nil {
			match = m
		}
	}
	errs = append(errs, ferrs...)
	if len(errs) > 0 {
		badParam(w, errs)
		return
	}

	s.mu.RLock()
	cur, curName, curOK := 0, "", true
	switch {
	case after != "":
		cur, curOK = a.p.lookup(after)
		curName = "pageAfter"
	case before != "":
		cur, curOK = a.p.lookup(before)
		curName = "pageBefore"
	}
	if !curOK {
		s.mu.RUnlock()
		badParam(w, []circleFieldErr{invalidValue(curName, q.Get(curName), curName+" is not the id of an item of this collection", nil)})
		return
	}
	lo, hi := a.p.st.span(from, to)
	win := window{lo: lo, hi: hi, match: a.p.listable(now.UnixMilli(), match), oldestFirst: quirks.OldestFirst}
	served := servedSize(size, quirks)
	var idx []int
	switch {
	case after != "":
		idx = win.following(cur, served)
	case before != "":
		idx = win.preceding(cur, served)
	default:
		idx = win.first(served)
	}
	data := make([]any, len(idx))
	var firstID, lastID string
	var hasNext, hasPrev bool
	for i, seq := range idx {
		data[i] = a.ep.render(seq)
	}
	if len(idx) > 0 {
		firstID, lastID = a.p.itemID(idx[0]), a.p.itemID(idx[len(idx)-1])
		hasNext = win.anyFollowing(idx[len(idx)-1])
		hasPrev = win.anyPreceding(idx[0])
	}
	s.mu.RUnlock()

	origin := requestBase(r)
	if quirks.LinkOrigin != "" {
		origin = strings.TrimSuffix(quirks.LinkOrigin, "/")
	}
	base := origin + a.ep.path
	pinned := url.Values{}
	for k, v := range q {
		if k != "pageAfter" && k != "pageBefore" {
			pinned[k] = v
		}
	}
	pinned.Set("to", toText)
	pinned.Set("pageSize", strconv.Itoa(size))
	link := func(rel, cursorName, cursor string) string {
		v := url.Values{}
		for k, vs := range pinned {
			v[k] = vs
		}
		if cursorName != "" {
			v.Set(cursorName, cursor)
		}
		return "<" + base + "?" + v.Encode() + `>; rel="` + rel + `"`
	}
	links := []string{}
	if hasNext {
		links = append(links, link("next", "pageAfter", lastID))
	}
	if hasPrev {
		links = append(links, link("prev", "pageBefore", firstID))
	}
	links = append(links, link("first", "", ""))
	switch {
	case after != "":
		links = append(links, link("self", "pageAfter", after))
	case before != "":
		links = append(links, link("self", "pageBefore", before))
	default:
		links = append(links, link("self", "", ""))
	}
	w.Header().Set("Link", strings.Join(links, ", "))
	writeJSON(w, http.StatusOK, map[string]any{"data": data})
}

func (a *circleAPI) get(w http.ResponseWriter, r *http.Request) {
	s := a.p.s
	s.mu.RLock()
	seq, ok := a.p.lookup(r.PathValue("id"))
	var obj any
	if ok {
		obj = a.ep.render(seq)
	}
	s.mu.RUnlock()
	if !ok {
		writeJSON(w, http.StatusNotFound, circleError{Code: 404, Message: "Not found."})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": obj})
}

// servedSize is how many items a list page holds when size were asked: size, or
// Quirks.PageCap when that is smaller.
func servedSize(size int, q Quirks) int {
	if q.PageCap > 0 {
		return min(size, q.PageCap)
	}
	return size
}

// requestBase is the scheme and host the request was sent to, for absolute links.
func requestBase(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// fieldFilter asks an item's string field (get) to equal want; "" is no filter.
type fieldFilter struct {
	want string
	get  func(seq int) string
}

// allOf returns a filter matching the items that pass every active field filter; nil
// when no filter is active.
func allOf(fs []fieldFilter) func(int) bool {
	var active []fieldFilter
	for _, f := range fs {
		if f.want != "" {
			active = append(active, f)
		}
	}
	if len(active) == 0 {
		return nil
	}
	return func(seq int) bool {
		for _, f := range active {
			if f.get(seq) != f.want {
				return false
			}
		}
		return true
	}
}
