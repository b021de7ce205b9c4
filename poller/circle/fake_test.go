package circle

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
	"time"
)

// circleFake is kept independent of the fakes of the other adapters (poller/stripe,
// poller/coindirect) on purpose, though their paging and error plumbing look alike:
// each follows its own provider's documentation, and a shared fake would let one
// provider's quirks leak into another's tests.
//
// circleFake behaves like a Circle list endpoint and its single-item endpoint, as the
// docs describe them: items in createDate DESC order (ties: the later insert first);
// pageAfter and pageBefore exclusive (never together); from and to inclusive on
// createDate, to defaulting to the request time; pageSize 1..maxPageSize (default
// defaultPageSize, larger values capped; 200 and 50 unless set); a Link header with
// self, first, next (omitted on the last page) and prev (omitted on the first page)
// that pins to and pageSize; Bearer authentication; Circle's {"code","message"} error
// bodies and an X-Request-Id on every answer.
type circleFake struct {
	path   string
	apiKey string // set before the fake serves
	// maxPageSize and defaultPageSize are the collection's page size limit and default;
	// 0 means 200 and 50. Set them before the fake serves.
	maxPageSize, defaultPageSize int

	reqID atomic.Int64

	// mu guards everything below; tests change the behaviour fields through configure.
	mu  sync.Mutex
	now func() time.Time // the default `to`
	// noLink sends no Link header, like mock servers built from Circle's OpenAPI files.
	noLink bool
	// relativeLinks sends Link targets as path and query only.
	relativeLinks bool
	// linkOrigin, when set ("http://other.example"), is the scheme and host of the links.
	linkOrigin string
	// onList, when set, runs before each list request is answered (without the lock
	// held, so it may add items).
	onList func(q url.Values)
	// fail, when set, may answer a request itself (returning true).
	fail func(w http.ResponseWriter, r *http.Request) bool

	items    []fakeItem
	seq      int
	listReqs []fakeRequest // the list requests, in order
	requests int           // every request, list or single
}

// fakeRequest is what the fake recorded of one list request.
type fakeRequest struct {
	query  url.Values
	header http.Header
}

type fakeItem struct {
	id      string
	created time.Time
	body    json.RawMessage
	seq     int
}

func newCircleFake(path, apiKey string) *circleFake {
	return &circleFake{path: path, apiKey: apiKey, now: time.Now}
}

// configure changes the fake's behaviour while it serves.
func (f *circleFake) configure(change func(f *circleFake)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(f)
}

// add stores an item; body must be its JSON object with the same id and createDate.
func (f *circleFake) add(id string, created time.Time, body json.RawMessage) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	f.items = append(f.items, fakeItem{id: id, created: created, body: body, seq: f.seq})
}

// listRequests returns the list requests so far.
func (f *circleFake) listRequests() []fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.listReqs)
}

func (f *circleFake) requestCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests
}

// writeCircleError writes Circle's error response for code, in the documented bodies.
func writeCircleError(w http.ResponseWriter, code int) {
	writeCircleErrorMessage(w, code, map[int]string{
		http.StatusUnauthorized:    "Malformed authorization.",
		http.StatusNotFound:        "Not found.",
		http.StatusTooManyRequests: "Too many requests.",
	}[code])
}

func writeCircleErrorMessage(w http.ResponseWriter, code int, msg string) {
	bodyCode := code
	switch {
	case code >= 500:
		bodyCode, msg = -1, cmp.Or(msg, "Something went wrong.")
	case code == http.StatusBadRequest:
		bodyCode = 2
	}
	b, _ := json.Marshal(map[string]any{"code": bodyCode, "message": cmp.Or(msg, http.StatusText(code))})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(b)
}

func (f *circleFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Request-Id", fmt.Sprintf("00000000-0000-4000-8000-%012d", f.reqID.Add(1)))
	f.mu.Lock()
	f.requests++
	fail := f.fail
	f.mu.Unlock()
	if fail != nil && fail(w, r) {
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+f.apiKey {
		writeCircleError(w, http.StatusUnauthorized)
		return
	}
	if r.Method != http.MethodGet {
		writeCircleErrorMessage(w, http.StatusMethodNotAllowed, "")
		return
	}
	switch p := r.URL.EscapedPath(); {
	case p == f.path:
		f.list(w, r)
	case strings.HasPrefix(p, f.path+"/"):
		f.one(w, strings.TrimPrefix(p, f.path+"/"))
	default:
		writeCircleError(w, http.StatusNotFound)
	}
}

// one answers GET {path}/{id}; escapedID is as it appeared in the request path.
func (f *circleFake) one(w http.ResponseWriter, escapedID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, it := range f.items {
		if url.PathEscape(it.id) == escapedID {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"data":%s}`, it.body)
			return
		}
	}
	writeCircleError(w, http.StatusNotFound)
}

func (f *circleFake) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f.mu.Lock()
	onList := f.onList
	f.mu.Unlock()
	if onList != nil {
		onList(q)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listReqs = append(f.listReqs, fakeRequest{query: q, header: r.Header.Clone()})

	size := cmp.Or(f.defaultPageSize, 50)
	if v := q.Get("pageSize"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeCircleErrorMessage(w, http.StatusBadRequest, "Invalid pageSize.")
			return
		}
		size = min(n, cmp.Or(f.maxPageSize, 200))
	}
	// bound reads the time parameter name, def when absent.
	bound := func(name string, def time.Time) (time.Time, bool) {
		v := q.Get(name)
		if v == "" {
			return def, true
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			writeCircleErrorMessage(w, http.StatusBadRequest, "Invalid "+name+".")
		}
		return t, err == nil
	}
	to, ok := bound("to", f.now().UTC())
	if !ok {
		return
	}
	from, ok := bound("from", time.Time{})
	if !ok {
		return
	}
	after, before := q.Get("pageAfter"), q.Get("pageBefore")
	if after != "" && before != "" {
		writeCircleErrorMessage(w, http.StatusBadRequest, "pageAfter and pageBefore cannot be used together.")
		return
	}

	var sel []fakeItem
	for _, it := range f.items {
		if !it.created.After(to) && (from.IsZero() || !it.created.Before(from)) {
			sel = append(sel, it)
		}
	}
	slices.SortFunc(sel, func(a, b fakeItem) int {
		if c := b.created.Compare(a.created); c != 0 {
			return c
		}
		return cmp.Compare(b.seq, a.seq)
	})
	index := func(id string) int {
		return slices.IndexFunc(sel, func(it fakeItem) bool { return it.id == id })
	}
	start, end := 0, min(size, len(sel))
	switch {
	case after != "":
		i := index(after)
		if i < 0 {
			writeCircleErrorMessage(w, http.StatusBadRequest, "Invalid pageAfter.")
			return
		}
		start, end = i+1, min(i+1+size, len(sel))
	case before != "":
		i := index(before)
		if i < 0 {
			writeCircleErrorMessage(w, http.StatusBadRequest, "Invalid pageBefore.")
			return
		}
		start, end = max(0, i-size), i
	}
	page := sel[start:end]

	if !f.noLink {
		pinned := url.Values{}
		pinned.Set("to", to.Format(time.RFC3339Nano))
		pinned.Set("pageSize", strconv.Itoa(size))
		if !from.IsZero() {
			pinned.Set("from", from.Format(time.RFC3339Nano))
		}
		with := func(k, v string) url.Values {
			c := url.Values{}
			for pk, pv := range pinned {
				c[pk] = pv
			}
			if k != "" {
				c.Set(k, v)
			}
			return c
		}
		links := []string{f.link(r, q, "self"), f.link(r, with("", ""), "first")}
		if len(page) > 0 && end < len(sel) {
			links = append(links, f.link(r, with("pageAfter", page[len(page)-1].id), "next"))
		}
		if len(page) > 0 && start > 0 {
			links = append(links, f.link(r, with("pageBefore", page[0].id), "prev"))
		}
		w.Header().Set("Link", strings.Join(links, ", "))
	}
	w.Header().Set("Content-Type", "application/json")
	var b strings.Builder
	b.WriteString(`{"data":[`)
	for i, it := range page {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(it.body)
	}
	b.WriteString("]}")
	w.Write([]byte(b.String()))
}

func (f *circleFake) link(r *http.Request, q url.Values, rel string) string {
	target := f.path + "?" + q.Encode()
	switch {
	case f.linkOrigin != "":
		target = f.linkOrigin + target
	case !f.relativeLinks:
		target = "http://" + r.Host + target
	}
	return fmt.Sprintf(`<%s>; rel="%s"`, target, rel)
}
