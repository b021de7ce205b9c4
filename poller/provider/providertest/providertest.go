// Package providertest is the contract every provider adapter is tested against.
// An adapter's tests describe a fake of the provider's API (an http.Handler that pages
// and authenticates like the provider) and call CheckSource, which walks the adapter
// over it and provokes the failures the poller relies on the adapter to report:
// rejected credentials, rate limits, server errors, malformed and cut-short bodies.
package providertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller/provider"
)

// MaxPages bounds every walk CheckSource makes: an adapter whose cursor never ends
// fails instead of looping.
const MaxPages = 100

// Keys CheckSource configures. The valid one has the shape of Circle's keys
// (PREFIX:ID:SECRET); fakes must accept any key they are given.
const (
	apiKey   = "TEST_API_KEY:providertest:S3cr3t-9c1e52"
	wrongKey = "TEST_API_KEY:providertest:Wr0ng-44d0a7"
)

// Fake describes a provider's API to CheckSource.
type Fake struct {
	// PageSize is the page size of the sources newSource builds. CheckSource lists up to
	// 2*PageSize+1 items, so keep it small.
	PageSize int
	// Handler returns a handler that behaves like the provider's API holding n
	// well-formed items: it lists them newest first with the provider's own paging;
	// answers a request that does not carry apiKey with the provider's 401 response;
	// and, when the adapter implements provider.Getter, serves single items by id (404
	// for an unknown id). ids are the n item ids in the order a walk must yield them.
	Handler func(n int, apiKey string) (h http.Handler, ids []string)
	// WriteError writes the provider's error response with HTTP status code (its error
	// body included). Headers such as Retry-After are already set when it is called.
	WriteError func(w http.ResponseWriter, code int)
	// Malformed are provider-specific bodies that, served with 200 to a list request,
	// the adapter must reject with a *provider.MalformedError. CheckSource always adds
	// a truncated real page, an HTML page and an empty body.
	Malformed []string
	// MissingID is an id the fake does not know, for provider.Getter; "" means
	// "providertest-missing-id".
	MissingID string
}

// CheckSource runs the adapter contract: newSource builds the adapter under test for
// a base URL and an API key (it may report a construction failure with t.Errorf and
// return nil). CheckSource checks that
//   - paging to the end yields every item exactly once, newest first, in at most
//     MaxPages pages, and an empty list is one empty last page;
//   - every item has a kind, an id, a raw status mapped to a valid state, a UTC
//     creation time and a raw JSON object, and nested items too;
//   - a wrong key is a permanent *provider.StatusError whose Auth() is true;
//   - 429 with Retry-After: 7 and 500 are Temporary() *provider.StatusErrors carrying
//     RetryAfter, and the adapter does not retry them itself;
//   - a malformed or truncated body is a *provider.MalformedError, never a panic, and a
//     body cut short by the connection is an error;
//   - a canceled context is reported as context.Canceled;
//   - a provider.Getter reads a listed item and reports an unknown id as
//     provider.ErrNotFound;
//   - no error carries the API key.
func CheckSource(t *testing.T, newSource func(baseURL, apiKey string) provider.Source, fake Fake) {
	t.Helper()
	if fake.PageSize < 1 || fake.Handler == nil || fake.WriteError == nil {
		t.Fatalf("providertest: Fake needs PageSize >= 1, Handler and WriteError; got %+v", fake)
	}
	c := &checker{newSource: newSource, fake: fake}
	t.Run("walk", c.walkAll)
	t.Run("wrong_key", c.wrongKey)
	t.Run("rate_limited", func(t *testing.T) { c.temporary(t, http.StatusTooManyRequests, "7", 7*time.Second) })
	t.Run("server_error", func(t *testing.T) { c.temporary(t, http.StatusInternalServerError, "", 0) })
	t.Run("malformed", c.malformed)
	t.Run("cut_short", c.cutShort)
	t.Run("canceled", c.canceled)
	t.Run("get", c.get)
}

type checker struct {
	newSource func(baseURL, apiKey string) provider.Source
	fake      Fake
}

// serve starts h on a test server that lives as long as t.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func (c *checker) source(t *testing.T, baseURL, key string) provider.Source {
	t.Helper()
	src := c.newSource(baseURL, key)
	if src == nil {
		t.Fatalf("newSource(%q) returned nil", baseURL)
	}
	return src
}

// page calls src.Page and turns a panic into a test failure.
func page(t *testing.T, ctx context.Context, src provider.Source, req provider.Request) (p provider.Page, err error) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("Page(%+v) panicked: %v", req, r)
		}
	}()
	p, err = src.Page(ctx, req)
	if err != nil {
		noKey(t, err)
	}
	return p, err
}

// noKey fails t when err shows either API key.
func noKey(t *testing.T, err error) {
	t.Helper()
	if s := err.Error(); strings.Contains(s, apiKey) || strings.Contains(s, wrongKey) {
		t.Errorf("error shows the API key: %s", s)
	}
}

// walk pages src from the newest page to the last one and returns every item.
func walk(t *testing.T, src provider.Source) []diff.Item {
	t.Helper()
	var all []diff.Item
	cursor := ""
	seen := map[string]bool{}
	for n := 1; ; n++ {
		if n > MaxPages {
			t.Fatalf("walk did not end within %d pages (cursor %q)", MaxPages, cursor)
		}
		p, err := page(t, t.Context(), src, provider.Request{Cursor: cursor})
		if err != nil {
			t.Fatalf("page %d (cursor %q): %v", n, cursor, err)
		}
		for _, s := range p.Skipped {
			t.Errorf("page %d skipped a well-formed item: %+v", n, s)
		}
		for i := range p.Items {
			checkItem(t, &p.Items[i], false)
		}
		all = append(all, p.Items...)
		if p.Next == "" {
			return all
		}
		if p.Next == cursor || seen[p.Next] {
			t.Fatalf("page %d: cursor %q repeats", n, p.Next)
		}
		seen[p.Next] = true
		cursor = p.Next
	}
}

// checkItem checks the fields every mapped item must have.
func checkItem(t *testing.T, it *diff.Item, nested bool) {
	t.Helper()
	what := fmt.Sprintf("item %s/%s", it.Kind, it.ID)
	if it.Kind == "" || it.ID == "" {
		t.Errorf("%s: empty kind or id", what)
	}
	if it.Status.Raw == "" || !it.Status.State.Valid() {
		t.Errorf("%s: status %+v: empty raw status or invalid state", what, it.Status)
	}
	if it.CreatedAt.IsZero() || it.CreatedAt.Location() != time.UTC {
		t.Errorf("%s: created at %v, want a UTC time", what, it.CreatedAt)
	}
	if !it.UpdatedAt.IsZero() && it.UpdatedAt.Location() != time.UTC {
		t.Errorf("%s: updated at %v, want UTC", what, it.UpdatedAt)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(it.Raw, &obj); err != nil {
		t.Errorf("%s: raw is not a JSON object: %v", what, err)
	}
	if nested && len(it.Nested) > 0 {
		t.Errorf("%s: a nested item has nested items", what)
	}
	for i := range it.Nested {
		checkItem(t, &it.Nested[i], true)
	}
}

func (c *checker) walkAll(t *testing.T) {
	p := c.fake.PageSize
	for _, n := range []int{0, 1, p, 2*p + 1} {
		t.Run(strconv.Itoa(n)+"_items", func(t *testing.T) {
			h, ids := c.fake.Handler(n, apiKey)
			if len(ids) != n {
				t.Fatalf("fake handler lists %d ids for %d items", len(ids), n)
			}
			src := c.source(t, serve(t, h), apiKey)
			items := walk(t, src)
			got := make([]string, len(items))
			count := map[string]int{}
			for i, it := range items {
				got[i] = it.ID
				count[it.ID]++
				if i > 0 && it.CreatedAt.After(items[i-1].CreatedAt) {
					t.Errorf("item %d (%s, %v) is newer than item %d (%s, %v): not newest first",
						i, it.ID, it.CreatedAt, i-1, items[i-1].ID, items[i-1].CreatedAt)
				}
			}
			for id, k := range count {
				if k > 1 {
					t.Errorf("item %s listed %d times", id, k)
				}
			}
			if strings.Join(got, ",") != strings.Join(ids, ",") {
				t.Errorf("walk listed\n  %v\nwant\n  %v", got, ids)
			}
		})
	}
}

func (c *checker) wrongKey(t *testing.T) {
	h, _ := c.fake.Handler(1, apiKey)
	src := c.source(t, serve(t, h), wrongKey)
	_, err := page(t, t.Context(), src, provider.Request{})
	checkAuth(t, "Page", err)
	if g, ok := src.(provider.Getter); ok {
		_, err := g.Get(t.Context(), c.missingID())
		checkAuth(t, "Get", err)
		if err != nil {
			noKey(t, err)
		}
	}
}

func checkAuth(t *testing.T, call string, err error) {
	t.Helper()
	var se *provider.StatusError
	if !errors.As(err, &se) {
		t.Fatalf("%s with a wrong key: %v, want a *provider.StatusError", call, err)
	}
	if !se.Auth() || se.Temporary() {
		t.Errorf("%s with a wrong key: %v (code %d): want Auth() and not Temporary()", call, err, se.Code)
	}
}

// temporary checks that code (with Retry-After retryAfter) is a temporary error and
// that the adapter neither retries it nor keeps state from it: the same request
// succeeds once the provider recovers.
func (c *checker) temporary(t *testing.T, code int, retryAfter string, wantRetry time.Duration) {
	h, ids := c.fake.Handler(1, apiKey)
	var calls atomic.Int32
	base := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			if retryAfter != "" {
				w.Header().Set("Retry-After", retryAfter)
			}
			c.fake.WriteError(w, code)
			return
		}
		h.ServeHTTP(w, r)
	}))
	src := c.source(t, base, apiKey)
	_, err := page(t, t.Context(), src, provider.Request{})
	var se *provider.StatusError
	if !errors.As(err, &se) {
		t.Fatalf("answer %d: %v, want a *provider.StatusError", code, err)
	}
	if se.Code != code || !se.Temporary() || se.Auth() || se.RetryAfter != wantRetry {
		t.Errorf("answer %d: %v: code %d, Temporary() %v, Auth() %v, RetryAfter %v; want code %d, temporary, RetryAfter %v",
			code, err, se.Code, se.Temporary(), se.Auth(), se.RetryAfter, code, wantRetry)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("the adapter sent %d requests for one Page call; it must not retry", n)
	}
	p, err := page(t, t.Context(), src, provider.Request{})
	if err != nil {
		t.Fatalf("Page once the provider recovered: %v", err)
	}
	if len(p.Items) != 1 || p.Items[0].ID != ids[0] {
		t.Errorf("Page once the provider recovered listed %d items, want %s", len(p.Items), ids[0])
	}
}

func (c *checker) malformed(t *testing.T) {
	h, _ := c.fake.Handler(c.fake.PageSize, apiKey)
	bodies := map[string]func(w http.ResponseWriter, r *http.Request){
		"truncated": func(w http.ResponseWriter, r *http.Request) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			for k, v := range rec.Header() {
				if k != "Content-Length" {
					w.Header()[k] = v
				}
			}
			body := rec.Body.Bytes()
			w.WriteHeader(rec.Code)
			w.Write(body[:len(body)/2])
		},
		"html": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.Write([]byte("<html><body><h1>Service Unavailable</h1></body></html>"))
		},
		"empty": func(w http.ResponseWriter, r *http.Request) {},
	}
	for i, b := range c.fake.Malformed {
		bodies["fake_"+strconv.Itoa(i)] = func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(b))
		}
	}
	for name, serveBody := range bodies {
		t.Run(name, func(t *testing.T) {
			src := c.source(t, serve(t, http.HandlerFunc(serveBody)), apiKey)
			p, err := page(t, t.Context(), src, provider.Request{})
			var me *provider.MalformedError
			if !errors.As(err, &me) {
				t.Errorf("Page = %d items, next %q, err %v; want a *provider.MalformedError", len(p.Items), p.Next, err)
			}
		})
	}
}

// cutShort serves a real page whose connection closes halfway through the body.
func (c *checker) cutShort(t *testing.T) {
	h, _ := c.fake.Handler(c.fake.PageSize, apiKey)
	base := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(rec.Code)
		w.Write(body[:len(body)/2]) // the server closes a connection that falls short of its Content-Length
	}))
	src := c.source(t, base, apiKey)
	if _, err := page(t, t.Context(), src, provider.Request{}); err == nil {
		t.Errorf("Page over a connection cut halfway through the body: no error")
	}
}

func (c *checker) canceled(t *testing.T) {
	h, _ := c.fake.Handler(1, apiKey)
	src := c.source(t, serve(t, h), apiKey)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := page(t, ctx, src, provider.Request{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Page with a canceled context: %v, want context.Canceled", err)
	}
}

func (c *checker) missingID() string {
	if c.fake.MissingID != "" {
		return c.fake.MissingID
	}
	return "providertest-missing-id"
}

func (c *checker) get(t *testing.T) {
	h, _ := c.fake.Handler(c.fake.PageSize, apiKey)
	src := c.source(t, serve(t, h), apiKey)
	g, ok := src.(provider.Getter)
	if !ok {
		return // the provider has no single-item endpoint: nothing to check
	}
	listed := walk(t, src)
	for _, want := range []diff.Item{listed[0], listed[len(listed)-1]} {
		got, err := g.Get(t.Context(), want.ID)
		if err != nil {
			noKey(t, err)
			t.Fatalf("Get(%q): %v", want.ID, err)
		}
		checkItem(t, &got, false)
		if got.ID != want.ID || got.Kind != want.Kind || got.Status != want.Status || !got.CreatedAt.Equal(want.CreatedAt) {
			t.Errorf("Get(%q) = %s/%s %+v created %v; the list has %s/%s %+v created %v",
				want.ID, got.Kind, got.ID, got.Status, got.CreatedAt, want.Kind, want.ID, want.Status, want.CreatedAt)
		}
	}
	_, err := g.Get(t.Context(), c.missingID())
	if !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("Get(%q) of an unknown id: %v, want provider.ErrNotFound", c.missingID(), err)
	}
	if err != nil {
		noKey(t, err)
	}
}
