package coindirect

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller/provider"
	"github.com/payments-watcher/watcher/poller/provider/providertest"
)

// testKey has the shape of a Coindirect Hawk key; tests assert that neither it nor the
// Hawk id ever shows in an error.
const testKey = "Qm4xT0dVc2Zr1pLw8sYc2nB6eH9jK3aR5tV7uX0zW4yA2cE6gI8kM1oP3qS5uV7x"

// t0 is the creation time of the newest payments the fakes hold.
var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func fakeUUID(i int) string { return fmt.Sprintf("5c75bc40-0000-4000-8000-%012d", i) }

var fakeStatuses = []string{"PENDING", "PROCESSING", "COMPLETE", "UNDERPAID", "EXPIRED", "CANCELLED"}

// fill adds n payments to f, one per minute going back from t0, and returns their
// uuids newest first.
func fill(f *coindirectFake, n int) []string {
	ids := make([]string, n)
	for i := range n {
		created := t0.Add(-time.Duration(i) * time.Minute)
		ids[i] = fakeUUID(i)
		f.appendOldest(ids[i], created, paymentJSON(ids[i], created, fakeStatuses[i%len(fakeStatuses)]))
	}
	return ids
}

// newTestSource builds a source on baseURL with the fake's credentials.
func newTestSource(t *testing.T, baseURL string, pageSize int, signQuery bool) *paymentsSource {
	t.Helper()
	s, err := NewPayments(provider.Settings{Name: "cd", BaseURL: baseURL, PageSize: pageSize, Values: map[string]string{"hawk_id": fakeHawkID, "hawk_key": testKey, "merchant_id": fakeMerchantID, "sign_query": strconv.FormatBool(signQuery)}}, &provider.Client{})
	if err != nil {
		t.Fatalf("NewPayments: %v", err)
	}
	return s.(*paymentsSource)
}

func startFake(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// walkIDs pages src to the end the way the poller does (each id once per walk) and
// returns the ids in order and how many repeats it dropped.
func walkIDs(t *testing.T, src provider.Source, from time.Time) (ids []string, repeats int) {
	t.Helper()
	seen := map[string]bool{}
	cursor := ""
	for range providertest.MaxPages {
		p, err := src.Page(t.Context(), provider.Request{Cursor: cursor, From: from})
		if err != nil {
			t.Fatalf("page at %q: %v", cursor, err)
		}
		if len(p.Skipped) > 0 {
			t.Fatalf("page at %q skipped %+v", cursor, p.Skipped)
		}
		inPage := map[string]bool{}
		for _, it := range p.Items {
			if inPage[it.ID] {
				t.Fatalf("page at %q lists %s twice", cursor, it.ID)
			}
			inPage[it.ID] = true
			if seen[it.ID] {
				repeats++
				continue
			}
			seen[it.ID] = true
			ids = append(ids, it.ID)
		}
		if p.Next == "" {
			return ids, repeats
		}
		cursor = p.Next
	}
	t.Fatalf("walk did not end within %d pages", providertest.MaxPages)
	return nil, 0
}

func contractFake(signQuery bool) providertest.Fake {
	return providertest.Fake{
		PageSize: 4,
		Handler: func(n int, apiKey string) (http.Handler, []string) {
			f := newFake(apiKey, signQuery)
			return f, fill(f, n)
		},
		WriteError: writeCDError,
		Malformed: []string{
			`{}`,
			`null`,
			`"[]"`,
			`{"errorList":[{"parameter":null,"message":"Internal server error","code":"internalError"}]}`,
			`{"data":[]}`,
			`[{"uuid":"5c75bc40-c1b2-4f57-b96f-79882a6e7c4b","status":"PENDING"},`,
		},
		MissingID: "00000000-0000-4000-8000-000000000000",
	}
}

func TestPaymentsContract(t *testing.T) {
	for _, signQuery := range []bool{true, false} {
		t.Run("sign_query="+strconv.FormatBool(signQuery), func(t *testing.T) {
			newSource := func(baseURL, apiKey string) provider.Source {
				src, err := NewPayments(provider.Settings{BaseURL: baseURL, PageSize: 4, Values: map[string]string{"hawk_id": fakeHawkID, "hawk_key": apiKey, "merchant_id": fakeMerchantID, "sign_query": strconv.FormatBool(signQuery)}}, nil)
				if err != nil {
					t.Errorf("NewPayments: %v", err)
					return nil
				}
				return src
			}
			providertest.CheckSource(t, newSource, contractFake(signQuery))
		})
	}
}

func TestPaymentsProvider(t *testing.T) {
	if Payments.Kind != "payment" || Payments.DefaultBaseURL != "https://api.coindirect.com" || Payments.MaxPageSize != 100 ||
		Payments.DefaultPageSize != 10 || !reflect.DeepEqual(Payments.Credentials(), []string{"hawk_id", "hawk_key", "merchant_id"}) ||
		Payments.New == nil {
		t.Errorf("Payments = %+v", Payments)
	}
	src, err := Payments.New(provider.Settings{BaseURL: Payments.DefaultBaseURL, PageSize: Payments.DefaultPageSize, Values: map[string]string{"hawk_id": fakeHawkID, "hawk_key": testKey, "merchant_id": fakeMerchantID, "sign_query": "true"}}, nil)
	if err != nil {
		t.Fatalf("Payments.New with the defaults: %v", err)
	}
	if _, ok := src.(provider.Getter); !ok {
		t.Errorf("the Coindirect source does not implement provider.Getter")
	}
}

var hawkHeaderRE = regexp.MustCompile(`^Hawk id="([^"]*)", ts="(\d+)", nonce="([A-Za-z0-9_-]{8})", mac="([A-Za-z0-9+/]{43}=)"$`)

// TestHawkOnTheWire sends real requests to the strict fake: the header has exactly the
// documented shape, ts is the source's clock in seconds, and the fake accepts the mac
// only when both sides agree on whether the query is signed (the source then needs a
// second request signed the other way; see TestSignQueryFallback).
func TestHawkOnTheWire(t *testing.T) {
	for _, tc := range []struct {
		fakeSigns, sourceSigns bool
		requests               int
	}{
		{true, true, 1},
		{false, false, 1},
		{true, false, 2},
		{false, true, 2},
	} {
		t.Run(fmt.Sprintf("fake=%v,source=%v", tc.fakeSigns, tc.sourceSigns), func(t *testing.T) {
			f := newFake(testKey, tc.fakeSigns)
			fill(f, 3)
			src := newTestSource(t, startFake(t, f), 10, tc.sourceSigns)
			now := time.Now().Truncate(time.Second).Add(-20 * time.Second) // within the fake's skew
			src.now = func() time.Time { return now }
			_, err := src.Page(t.Context(), provider.Request{})
			checkCode(t, err, 0)
			auths := f.authorizations()
			if len(auths) != tc.requests {
				t.Fatalf("%d requests, want %d", len(auths), tc.requests)
			}
			m := hawkHeaderRE.FindStringSubmatch(auths[0])
			if m == nil {
				t.Fatalf("Authorization %q does not have the documented shape", auths[0])
			}
			if m[1] != fakeHawkID || m[2] != strconv.FormatInt(now.Unix(), 10) {
				t.Errorf("Authorization %q: want id %q and ts %d", auths[0], fakeHawkID, now.Unix())
			}
		})
	}
}

// checkCode fails t unless err is nil (want 0) or a *provider.StatusError with code want.
func checkCode(t *testing.T, err error, want int) {
	t.Helper()
	if want == 0 {
		if err != nil {
			t.Fatalf("err = %v, want success", err)
		}
		return
	}
	var se *provider.StatusError
	if !errors.As(err, &se) || se.Code != want {
		t.Fatalf("err = %v, want a *provider.StatusError with code %d", err, want)
	}
}

// TestHawkTimestampSkew: a host clock within the fake's window is used as it is; one
// outside it gets the fake's stale-timestamp answer, and the source signs again with
// the fake's time (see TestStaleTimestamp).
func TestHawkTimestampSkew(t *testing.T) {
	f := newFake(testKey, true)
	fill(f, 2)
	base := startFake(t, f)
	for _, tc := range []struct {
		offset   time.Duration
		requests int
	}{
		{0, 1},
		{-50 * time.Second, 1},
		{50 * time.Second, 1},
		{-2 * time.Minute, 2},
		{3 * time.Minute, 2},
		{-time.Hour, 2},
	} {
		t.Run(tc.offset.String(), func(t *testing.T) {
			before := f.requestCount()
			src := newTestSource(t, base, 10, true)
			src.now = func() time.Time { return time.Now().Add(tc.offset) }
			if _, err := src.Page(t.Context(), provider.Request{}); err != nil {
				t.Fatalf("Page: %v", err)
			}
			if n := f.requestCount() - before; n != tc.requests {
				t.Errorf("%d requests, want %d", n, tc.requests)
			}
		})
	}
}

func TestHawkNonceReuse(t *testing.T) {
	f := newFake(testKey, true)
	fill(f, 2)
	src := newTestSource(t, startFake(t, f), 10, true)
	src.nonce = func() string { return "AAAAAAAA" }
	if _, err := src.Page(t.Context(), provider.Request{}); err != nil {
		t.Fatalf("first request: %v", err)
	}
	_, err := src.Page(t.Context(), provider.Request{})
	checkCode(t, err, http.StatusTooManyRequests)
	var se *provider.StatusError
	errors.As(err, &se)
	if !se.Temporary() || se.Message != "code nonceAlreadyUsed: Nonce already used (parameter Authorization)" {
		t.Errorf("reused nonce: %+v, want a temporary error with the provider's message", se)
	}

	// The real nonce source never repeats across a walk.
	src.nonce = newNonce
	walkIDs(t, src, time.Time{})
	for i := range 20 {
		if _, err := src.Get(t.Context(), fakeUUID(i%2)); err != nil {
			t.Fatalf("Get %d: %v", i, err)
		}
	}
	nonces := map[string]bool{}
	for _, a := range f.authorizations() {
		m := hawkHeaderRE.FindStringSubmatch(a)
		if m == nil {
			t.Fatalf("Authorization %q does not have the documented shape", a)
		}
		if m[3] != "AAAAAAAA" && nonces[m[3]] {
			t.Errorf("nonce %q sent twice", m[3])
		}
		nonces[m[3]] = true
	}
}

func TestPagingOffsets(t *testing.T) {
	for _, tc := range []struct {
		n, size     int
		wantOffsets []string
	}{
		{0, 3, []string{"0"}},
		// No full page yet: a short page might be the server's cap, so the walk ends
		// only at an empty page.
		{2, 3, []string{"0", "2"}},
		{3, 3, []string{"0", "3"}}, // a full last page costs one empty page
		// After a full page the server is known to serve max items: a short page ends.
		{7, 3, []string{"0", "3", "6"}},
		{9, 3, []string{"0", "3", "6", "9"}},
		{25, 10, []string{"0", "10", "20"}},
	} {
		t.Run(fmt.Sprintf("%d_items_by_%d", tc.n, tc.size), func(t *testing.T) {
			f := newFake(testKey, true)
			want := fill(f, tc.n)
			src := newTestSource(t, startFake(t, f), tc.size, true)
			got, repeats := walkIDs(t, src, time.Time{})
			if !slices.Equal(got, want) || repeats != 0 {
				t.Errorf("walk = %v (%d repeats), want %v", got, repeats, want)
			}
			var offsets []string
			for _, q := range f.listRequests() {
				offsets = append(offsets, q.Get("offset"))
				if q.Get("max") != strconv.Itoa(tc.size) || q.Get("merchantId") != fakeMerchantID || q.Has("fromDate") || len(q) != 3 {
					t.Errorf("request query %v, want merchantId, offset and max=%d only", q, tc.size)
				}
			}
			if !slices.Equal(offsets, tc.wantOffsets) {
				t.Errorf("offsets %v, want %v", offsets, tc.wantOffsets)
			}
		})
	}
}

// TestPagingUnderASilentCap: a server that serves fewer payments than max on every
// page (undocumented either way) is walked to its end, one empty page past the last.
func TestPagingUnderASilentCap(t *testing.T) {
	f := newFake(testKey, true)
	want := fill(f, 7)
	f.pageCap = 2
	src := newTestSource(t, startFake(t, f), 5, true)
	got, repeats := walkIDs(t, src, time.Time{})
	if !slices.Equal(got, want) || repeats != 0 {
		t.Fatalf("walk = %v (%d repeats), want %v", got, repeats, want)
	}
	var offsets []string
	for _, q := range f.listRequests() {
		offsets = append(offsets, q.Get("offset"))
	}
	if want := []string{"0", "2", "4", "6", "7"}; !slices.Equal(offsets, want) {
		t.Errorf("offsets %v, want %v", offsets, want)
	}
}

// TestPagingWithInserts inserts payments at the top between page requests, which
// shifts every later offset page: payments repeat on the next page, none is skipped,
// and the walk still ends.
func TestPagingWithInserts(t *testing.T) {
	for _, tc := range []struct {
		name    string
		perPage []int // payments inserted before the list request of that index
	}{
		{"one before page 2", []int{0, 1}},
		{"two, then three", []int{0, 2, 3}},
		{"more than a page", []int{0, 7, 0, 5}},
		{"before every page", []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(testKey, true)
			want := fill(f, 20)
			var calls, inserted int
			f.configure(func(f *coindirectFake) {
				f.onList = func(url.Values) {
					if calls < len(tc.perPage) {
						for range tc.perPage[calls] {
							inserted++
							created := t0.Add(time.Duration(inserted) * time.Second)
							id := fmt.Sprintf("new00000-0000-4000-8000-%012d", inserted)
							f.insert(id, created, paymentJSON(id, created, "PENDING"))
						}
					}
					calls++
				}
			})
			src := newTestSource(t, startFake(t, f), 5, true)
			got, repeats := walkIDs(t, src, time.Time{})
			var old []string
			for _, id := range got {
				if !strings.HasPrefix(id, "new") {
					old = append(old, id)
				}
			}
			if !slices.Equal(old, want) {
				t.Errorf("walk listed the original payments as\n  %v\nwant every one, in order\n  %v", old, want)
			}
			if repeats == 0 && inserted > 0 && len(tc.perPage) > 1 {
				t.Errorf("no payment repeated although %d were inserted during the walk", inserted)
			}
		})
	}
}

func TestPagingFromDate(t *testing.T) {
	f := newFake(testKey, true)
	ids := fill(f, 12) // one per minute back from t0
	src := newTestSource(t, startFake(t, f), 3, true)
	// Half a millisecond after the 8th payment: fromDate rounds down to its
	// millisecond, so the bound moves down and that payment is listed too.
	from := t0.Add(-7*time.Minute + 500*time.Microsecond)
	got, _ := walkIDs(t, src, from)
	if !slices.Equal(got, ids[:8]) {
		t.Errorf("walk from %v = %v, want %v", from, got, ids[:8])
	}
	want := strconv.FormatInt(t0.Add(-7*time.Minute).UnixMilli(), 10)
	reqs := f.listRequests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3", len(reqs))
	}
	for i, q := range reqs {
		if q.Get("fromDate") != want {
			t.Errorf("request %d fromDate = %q, want %s (epoch ms, kept by the cursor)", i, q.Get("fromDate"), want)
		}
	}

	// A cursor carries the walk's filter; req.From beside it is ignored.
	p, err := src.Page(t.Context(), provider.Request{Cursor: "offset=3", From: t0})
	if err != nil || len(p.Items) != 3 || p.Items[0].ID != ids[3] {
		t.Fatalf("Page at offset=3 = %v, %v; want 3 payments from %s", itemIDs(p.Items), err, ids[3])
	}
	if q := f.listRequests()[3]; q.Has("fromDate") || q.Get("offset") != "3" {
		t.Errorf("request at cursor offset=3: %v, want offset 3 and no fromDate", q)
	}
}

func TestPagingBadCursors(t *testing.T) {
	f := newFake(testKey, true)
	fill(f, 3)
	src := newTestSource(t, startFake(t, f), 3, true)
	for _, c := range []string{"3", "offset=-1", "offset=x", "offset=1&offset=2", "offset=1&max=5", "fromDate=1", "offset=1&fromDate=yesterday", "%zz"} {
		if _, err := src.Page(t.Context(), provider.Request{Cursor: c}); err == nil {
			t.Errorf("Page at cursor %q: no error", c)
		}
	}
	if n := f.requestCount(); n != 0 {
		t.Errorf("bad cursors caused %d requests", n)
	}
}

// TestPagingServerIgnoresMax: a server that answers more than max still ends the walk.
func TestPagingServerIgnoresMax(t *testing.T) {
	f := newFake(testKey, false) // the rewritten query below is not what the client signed
	ids := fill(f, 7)
	f.configure(func(f *coindirectFake) {
		f.fail = func(w http.ResponseWriter, r *http.Request) bool {
			q := r.URL.Query()
			q.Set("max", "1000")
			r.URL.RawQuery = q.Encode()
			return false
		}
	})
	src := newTestSource(t, startFake(t, f), 3, false)
	got, _ := walkIDs(t, src, time.Time{})
	if !slices.Equal(got, ids) || len(f.listRequests()) != 2 {
		t.Errorf("walk = %v in %d requests, want %v in 2", got, len(f.listRequests()), ids)
	}
}

func TestPaymentsErrors(t *testing.T) {
	for _, tc := range []struct {
		name      string
		key       string
		serve     func(w http.ResponseWriter)
		merchant  string
		code      int
		message   string
		temporary bool
	}{
		{name: "wrong key", key: "wrong", code: 401, message: "code unauthorized: Bad mac (parameter Authorization)"},
		{name: "other merchant", merchant: "someone-else", code: 403, message: "code forbidden: Access to merchant " + fakeMerchantID + " is denied (parameter merchantId)"},
		{name: "bad request", serve: func(w http.ResponseWriter) { writeCDError(w, 400) }, code: 400, message: "code invalid: max must be a positive integer (parameter max)"},
		{name: "not found", serve: func(w http.ResponseWriter) { writeCDError(w, 404) }, code: 404, message: "code notFound: Payment not found (parameter uuid)"},
		{name: "rate limited", serve: func(w http.ResponseWriter) { writeCDError(w, 429) }, code: 429, message: "code nonceAlreadyUsed: Nonce already used (parameter Authorization)", temporary: true},
		{name: "server error", serve: func(w http.ResponseWriter) { writeCDError(w, 500) }, code: 500, message: "code internalError: Internal server error", temporary: true},
		{name: "gateway page", serve: func(w http.ResponseWriter) { w.WriteHeader(502); w.Write([]byte("<html>bad gateway</html>")) }, code: 502, temporary: true},
		{name: "several entries", serve: func(w http.ResponseWriter) {
			w.WriteHeader(400)
			w.Write([]byte(`{"errorList":[{"parameter":"offset","message":"bad offset","code":"invalid"},{"parameter":null,"message":"and more","code":7}]}`))
		}, code: 400, message: "code invalid: bad offset (parameter offset); code 7: and more"},
		{name: "key echoed", serve: func(w http.ResponseWriter) {
			writeCDErrorEntry(w, 401, "Authorization", "bad key "+testKey+" for "+fakeHawkID+"\nline two", "unauthorized")
		}, code: 401, message: "code unauthorized: bad key [credential] for [credential] line two (parameter Authorization)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(testKey, true)
			fill(f, 2)
			if tc.key != "" {
				f.hawkKey = tc.key
			}
			if tc.merchant != "" {
				f.merchantID = tc.merchant
			}
			if tc.serve != nil {
				f.fail = func(w http.ResponseWriter, r *http.Request) bool { tc.serve(w); return true }
			}
			src := newTestSource(t, startFake(t, f), 2, true)
			_, err := src.Page(t.Context(), provider.Request{})
			var se *provider.StatusError
			if !errors.As(err, &se) {
				t.Fatalf("Page: %v, want a *provider.StatusError", err)
			}
			if se.Code != tc.code || se.Message != tc.message || se.Temporary() != tc.temporary {
				t.Errorf("StatusError = %+v; want code %d, message %q, temporary %v", se, tc.code, tc.message, tc.temporary)
			}
			noCredentials(t, err)
		})
	}
}

func TestDecodeErrorList(t *testing.T) {
	for body, want := range map[string]string{
		`{"errorList":[{"parameter":"max","message":"too big","code":"invalid"}]}`: "code invalid: too big (parameter max)",
		`{"errorList":[{"message":"only a message"}]}`:                             "only a message",
		`{"errorList":[{"code":"x"}]}`:                                             "code x: ",
		`{"errorList":[{"parameter":"","message":"m","code":null}]}`:               "m",
		`{"errorList":[{"code":12.5,"message":"numeric code"}]}`:                   "code 12.5: numeric code",
		`{"errorList":[{}, {"message":"second"}]}`:                                 "second",
		`{"errorList":[{"message":"a` + strings.Repeat("é", 400) + `"}]}`:          "a" + strings.Repeat("é", 149) + "…",
		`{"errorList":[{"message":"s3cr3t leaked"}]}`:                              "[credential] leaked",
		`{"errorList":[]}`:                     "",
		`{"errorList":"no"}`:                   "",
		`{"code":401,"message":"other shape"}`: "",
		`<html>502</html>`:                     "",
		``:                                     "",
	} {
		if got := decodeErrorList([]byte(body), "s3cr3t", ""); got != want {
			t.Errorf("decodeErrorList(%.60s) = %q, want %q", body, got, want)
		}
	}
}

func TestNewPaymentsValidation(t *testing.T) {
	ok := provider.Settings{BaseURL: "https://api.coindirect.com", PageSize: 10, Values: map[string]string{"hawk_id": fakeHawkID, "hawk_key": testKey, "merchant_id": fakeMerchantID}}
	for _, tc := range []struct {
		name   string
		change func(*provider.Settings)
		want   []string
	}{
		{"no hawk id", func(s *provider.Settings) { *s = s.With("hawk_id", "") }, []string{"hawk_id"}},
		{"hawk id with a quote", func(s *provider.Settings) { *s = s.With("hawk_id", `a"b`) }, []string{"hawk_id"}},
		{"hawk id with a newline", func(s *provider.Settings) { *s = s.With("hawk_id", "a\nb") }, []string{"hawk_id"}},
		{"no hawk key", func(s *provider.Settings) { *s = s.With("hawk_key", "") }, []string{"hawk_key"}},
		{"no merchant id", func(s *provider.Settings) { *s = s.With("merchant_id", "") }, []string{"merchant_id"}},
		{"no base url", func(s *provider.Settings) { s.BaseURL = "" }, []string{"base_url"}},
		{"ftp base url", func(s *provider.Settings) { s.BaseURL = "ftp://api.coindirect.com" }, []string{"base_url", "ftp://api.coindirect.com"}},
		{"relative base url", func(s *provider.Settings) { s.BaseURL = "api.coindirect.com" }, []string{"base_url"}},
		{"query", func(s *provider.Settings) { s.BaseURL = "https://api.coindirect.com?x=1" }, []string{"base_url"}},
		{"credentials in base url", func(s *provider.Settings) { s.BaseURL = "https://user:hunter2@api.coindirect.com" }, []string{"base_url"}},
		{"page size 0", func(s *provider.Settings) { s.PageSize = 0 }, []string{"page_size", "0", "1..100"}},
		{"page size 101", func(s *provider.Settings) { s.PageSize = 101 }, []string{"page_size", "101"}},
		{"everything", func(s *provider.Settings) { *s = provider.Settings{BaseURL: "x", PageSize: -1} },
			[]string{"hawk_id", "hawk_key", "merchant_id", "base_url", "page_size"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := ok
			tc.change(&s)
			src, err := NewPayments(s, nil)
			if err == nil || src != nil {
				t.Fatalf("NewPayments(%+v) = %v, %v; want an error", s, src, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), testKey) {
				t.Errorf("error shows a secret: %v", err)
			}
		})
	}
	for _, size := range []int{1, 100} {
		s := ok
		s.PageSize = size
		if _, err := NewPayments(s, nil); err != nil {
			t.Errorf("page_size %d: %v", size, err)
		}
	}
}

func TestPaymentsBaseURLPathPrefix(t *testing.T) {
	f := newFake(testKey, true)
	f.prefix = "/cd"
	ids := fill(f, 5)
	src := newTestSource(t, startFake(t, f)+"/cd/", 2, true)
	if got, _ := walkIDs(t, src, time.Time{}); !slices.Equal(got, ids) {
		t.Errorf("walk = %v, want %v", got, ids)
	}
	if _, err := src.Get(t.Context(), ids[3]); err != nil {
		t.Errorf("Get under a path prefix: %v", err)
	}
}

func TestPaymentsGet(t *testing.T) {
	f := newFake(testKey, true)
	fill(f, 8)
	src := newTestSource(t, startFake(t, f), 50, true)
	p, err := src.Page(t.Context(), provider.Request{})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range p.Items {
		got, err := src.Get(t.Context(), want.ID)
		if err != nil {
			t.Fatalf("Get(%q): %v", want.ID, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Get(%q) = %+v\nlisted as %+v", want.ID, got, want)
		}
	}

	_, err = src.Get(t.Context(), "00000000-0000-4000-8000-000000000000")
	var se *provider.StatusError
	if !errors.Is(err, provider.ErrNotFound) || !errors.As(err, &se) || se.Code != 404 ||
		se.Message != "code notFound: Payment 00000000-0000-4000-8000-000000000000 not found (parameter uuid)" {
		t.Errorf("Get of an unknown uuid: %v; want ErrNotFound and the 404 StatusError", err)
	}
	noCredentials(t, err)

	before := f.requestCount()
	for _, id := range []string{"", ".", "..", "a/b", "a?b", "a b", "é", strings.Repeat("a", 201)} {
		if _, err := src.Get(t.Context(), id); err == nil {
			t.Errorf("Get(%q): no error", id)
		}
	}
	if n := f.requestCount() - before; n != 0 {
		t.Errorf("invalid ids caused %d requests", n)
	}

	for _, tc := range []struct{ name, body string }{
		{"unmappable payment", `{"uuid":"x","dateCreated":1633010030000}`},
		{"another payment", string(paymentJSON("y", t0, "PENDING"))},
		{"a list", `[]`},
		{"null", `null`},
		{"truncated", `{"uuid":"x"`},
		{"html", `<html></html>`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.configure(func(f *coindirectFake) {
				f.fail = func(w http.ResponseWriter, r *http.Request) bool { w.Write([]byte(tc.body)); return true }
			})
			defer f.configure(func(f *coindirectFake) { f.fail = nil })
			_, err := src.Get(t.Context(), "x")
			var me *provider.MalformedError
			if !errors.As(err, &me) {
				t.Errorf("Get answered %s: %v, want a *provider.MalformedError", tc.body, err)
			}
		})
	}
}

// TestNoCredentialsInErrors provokes every kind of failure and checks that neither
// Hawk credential shows in an error. (merchant_id is an identifier that every payment
// object carries; it appears in request URLs.)
func TestNoCredentialsInErrors(t *testing.T) {
	f := newFake(testKey, true)
	fill(f, 3)
	base := startFake(t, f)
	var errs []error
	collect := func(_ any, err error) {
		if err == nil {
			t.Errorf("expected an error")
		}
		errs = append(errs, err)
	}
	wrong := newTestSource(t, base, 2, true)
	wrong.hawkKey = "not-" + testKey
	collect(wrong.Page(t.Context(), provider.Request{}))
	collect(wrong.Get(t.Context(), fakeUUID(0)))
	src := newTestSource(t, base, 2, true)
	collect(src.Get(t.Context(), "00000000-0000-4000-8000-000000000000"))
	collect(src.Page(t.Context(), provider.Request{Cursor: "offset=x"}))
	for _, code := range []int{400, 401, 404, 429, 500} {
		f.configure(func(f *coindirectFake) {
			f.fail = func(w http.ResponseWriter, r *http.Request) bool {
				writeCDErrorEntry(w, code, fakeHawkID, "echo "+r.Header.Get("Authorization")+" "+testKey, "x")
				return true
			}
		})
		collect(src.Page(t.Context(), provider.Request{}))
		collect(src.Get(t.Context(), fakeUUID(1)))
	}
	f.configure(func(f *coindirectFake) {
		f.fail = func(w http.ResponseWriter, r *http.Request) bool {
			w.Write([]byte(`{"x":"` + testKey + `"}`))
			return true
		}
	})
	collect(src.Page(t.Context(), provider.Request{}))
	collect(src.Get(t.Context(), fakeUUID(1)))
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	collect(newTestSource(t, closed.URL, 2, true).Page(t.Context(), provider.Request{}))
	_, err := NewPayments(provider.Settings{BaseURL: "ftp://x", PageSize: 500, Values: map[string]string{"hawk_id": fakeHawkID, "hawk_key": testKey}}, nil)
	collect(nil, err)
	for _, err := range errs {
		noCredentials(t, err)
	}
}

// noCredentials fails t when err shows the Hawk key or id.
func noCredentials(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if s := err.Error(); strings.Contains(s, testKey) || strings.Contains(s, fakeHawkID) {
		t.Errorf("error shows a Hawk credential: %s", s)
	}
}

// TestPaymentsNoRetry: the adapter sends one request per call whatever the answer but
// a 401 (see TestStaleTimestamp and TestSignQueryFallback).
func TestPaymentsNoRetry(t *testing.T) {
	var calls atomic.Int32
	base := startFake(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Retry-After", "1")
		writeCDError(w, http.StatusServiceUnavailable)
	}))
	src := newTestSource(t, base, 2, true)
	if _, err := src.Page(t.Context(), provider.Request{}); err == nil {
		t.Fatal("no error")
	}
	if _, err := src.Get(t.Context(), fakeUUID(0)); err == nil {
		t.Fatal("no error")
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d requests for two calls", n)
	}
}

func itemIDs(items []diff.Item) []string {
	var ids []string
	for _, it := range items {
		ids = append(ids, it.ID)
	}
	return ids
}

// compact returns raw without insignificant space, as the adapter keeps raw objects.
func compact(t testing.TB, raw []byte) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestFromDateFormats(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 891_000_000, time.UTC)
	for _, tc := range []struct{ format, want string }{
		{"", "1772600767891"},
		{FromDateEpochMillis, "1772600767891"},
		{FromDateEpochSeconds, "1772600767"},
		{FromDateRFC3339, "2026-03-04T05:06:07Z"},
		{FromDateDay, "2026-03-04"},
	} {
		f := newFake(testKey, true)
		srv := startFake(t, f)
		src, err := NewPayments(provider.Settings{BaseURL: srv, PageSize: 3, Values: map[string]string{"hawk_id": fakeHawkID, "hawk_key": testKey, "merchant_id": fakeMerchantID, "sign_query": "true", "from_date_format": tc.format}}, nil)
		if err != nil {
			t.Fatalf("from_date_format %q: %v", tc.format, err)
		}
		format := tc.format
		if format == "" {
			format = DefaultFromDateFormat
		}
		ps := src.(*paymentsSource)
		_, fromDate, err := ps.position(provider.Request{From: at})
		if err != nil || fromDate != tc.want {
			t.Errorf("from_date_format %q: fromDate %q, %v; want %q", tc.format, fromDate, err, tc.want)
		}
		// A cursor carrying it is accepted; one in another format is not.
		if _, _, err := ps.position(provider.Request{Cursor: "offset=3&fromDate=" + url.QueryEscape(tc.want)}); err != nil {
			t.Errorf("from_date_format %q: cursor with its own fromDate: %v", tc.format, err)
		}
		if _, _, err := ps.position(provider.Request{Cursor: "offset=3&fromDate=yesterday"}); err == nil || !strings.Contains(err.Error(), format) {
			t.Errorf("from_date_format %q: cursor fromDate=yesterday: %v", tc.format, err)
		}
	}
	_, err := NewPayments(provider.Settings{BaseURL: "https://api.coindirect.com", PageSize: 3, Values: map[string]string{"hawk_id": fakeHawkID, "hawk_key": testKey, "merchant_id": fakeMerchantID, "from_date_format": "iso"}}, nil)
	if err == nil || !strings.Contains(err.Error(), `from_date_format: "iso" is not one of epoch_ms, epoch_s, rfc3339, date`) {
		t.Errorf("from_date_format iso: %v", err)
	}
}
