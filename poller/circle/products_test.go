package circle

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path"
	"reflect"
	"strings"
	"testing"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller/provider"
	"github.com/payments-watcher/watcher/poller/provider/providertest"
)

// Test machinery the ramp and settlement adapters share: golden fixtures whose items
// carry update times, the fuzz check of a page parser, and the Circle error cases.

// pageParser is the signature of the exported Parse…Page functions.
type pageParser func(body []byte) ([]diff.Item, []provider.Skipped, error)

// readTestdata reads testdata/<dir>/<name>.
func readTestdata(t testing.TB, dir, name string) []byte {
	t.Helper()
	b, err := testdataFS.ReadFile(path.Join("testdata", dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fixtureNames lists the .json fixtures of testdata/<dir>.
func fixtureNames(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := testdataFS.ReadDir(path.Join("testdata", dir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".json") {
			names = append(names, e.Name())
		}
	}
	return names
}

// checkGoldenDir maps every testdata/<dir>/*.json fixture with parse and compares the
// result with the fixture's .golden file; -update rewrites them.
func checkGoldenDir(t *testing.T, dir string, parse pageParser) {
	providertest.GoldenFixtures(t, testdataFS, path.Join("testdata", dir), 10, *update, providertest.Parser(parse))
}

// fuzzPageParser seeds f with the fixtures of testdata/<dir> and checks that parse never
// panics and returns either a MalformedError alone or items fit for diff.
func fuzzPageParser(f *testing.F, dir string, parse pageParser) {
	for _, name := range fixtureNames(f, dir) {
		f.Add(readTestdata(f, dir, name))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		items, skipped, err := parse(body)
		providertest.CheckParsed(t, items, skipped, err)
	})
}

// checkMalformedPages checks that the page_*.json fixtures of testdata/<dir> are
// *provider.MalformedErrors and that empty.json is an empty page.
func checkMalformedPages(t *testing.T, dir string, parse pageParser) {
	for _, name := range []string{"page_not_json.json", "page_no_data.json", "page_data_object.json", "page_data_null.json", "page_truncated.json"} {
		t.Run(name, func(t *testing.T) {
			items, skipped, err := parse(readTestdata(t, dir, name))
			var me *provider.MalformedError
			if !errors.As(err, &me) || items != nil || skipped != nil {
				t.Errorf("parse = %d items, %d skipped, err %v; want a *provider.MalformedError", len(items), len(skipped), err)
			}
		})
	}
	items, skipped, err := parse(readTestdata(t, dir, "empty.json"))
	if err != nil || len(items) != 0 || len(skipped) != 0 {
		t.Errorf("empty page: %d items, %v skipped, err %v", len(items), skipped, err)
	}
}

// checkCircleErrors provokes Circle's documented error answers on a list endpoint and
// on its single-item endpoint, and checks that each becomes a *provider.StatusError
// carrying the decoded message and request id, never the API key. newSource builds the
// adapter for a base URL and key.
func checkCircleErrors(t *testing.T, endpointPath string, newSource func(t *testing.T, baseURL, key string) provider.Source) {
	const wrongKey = "TEST_API_KEY:6f1d0c2e9a7b:wrong"
	for _, tc := range []struct {
		name      string
		key       string
		serve     func(w http.ResponseWriter)
		code      int
		message   string
		temporary bool
	}{
		{name: "wrong key", key: wrongKey, code: 401, message: "code 401: Malformed authorization."},
		{name: "forbidden", serve: func(w http.ResponseWriter) { writeCircleErrorMessage(w, 403, "Forbidden.") }, code: 403, message: "code 403: Forbidden."},
		{name: "bad request", serve: func(w http.ResponseWriter) { writeCircleErrorMessage(w, 400, "Invalid pageSize.") }, code: 400, message: "code 2: Invalid pageSize."},
		{name: "not found", serve: func(w http.ResponseWriter) { writeCircleError(w, 404) }, code: 404, message: "code 404: Not found."},
		{name: "rate limited", serve: func(w http.ResponseWriter) { writeCircleError(w, 429) }, code: 429, message: "code 429: Too many requests.", temporary: true},
		{name: "server error", serve: func(w http.ResponseWriter) { writeCircleError(w, 500) }, code: 500, message: "code -1: Something went wrong.", temporary: true},
		{name: "gateway page", serve: func(w http.ResponseWriter) { w.WriteHeader(502); w.Write([]byte("<html>bad gateway</html>")) }, code: 502, temporary: true},
		{name: "key echoed", serve: func(w http.ResponseWriter) {
			writeCircleErrorMessage(w, 401, "Malformed authorization: "+testKey+"\nline two")
		}, code: 401, message: "code 401: Malformed authorization: [api_key] line two"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newCircleFake(endpointPath, testKey)
			if tc.key != "" {
				f.apiKey = tc.key
			}
			if tc.serve != nil {
				f.fail = func(w http.ResponseWriter, r *http.Request) bool { tc.serve(w); return true }
			}
			src := newSource(t, startFake(t, f), testKey)
			_, pageErr := src.Page(t.Context(), provider.Request{})
			_, getErr := src.(provider.Getter).Get(t.Context(), "c4d1da72-111e-4d52-bdbf-2e74a2d803d5")
			for call, err := range map[string]error{"Page": pageErr, "Get": getErr} {
				var se *provider.StatusError
				if !errors.As(err, &se) {
					t.Fatalf("%s: %v, want a *provider.StatusError", call, err)
				}
				if se.Code != tc.code || se.Message != tc.message || se.Temporary() != tc.temporary || se.RequestID == "" {
					t.Errorf("%s: StatusError = %+v; want code %d, message %q, temporary %v and the X-Request-Id",
						call, se, tc.code, tc.message, tc.temporary)
				}
				if got := errors.Is(err, provider.ErrNotFound); got != (call == "Get" && tc.code == 404) {
					t.Errorf("%s: errors.Is(%v, ErrNotFound) = %v", call, err, got)
				}
				if strings.Contains(err.Error(), testKey) || strings.Contains(err.Error(), wrongKey) {
					t.Errorf("%s: error shows the API key: %v", call, err)
				}
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		base := srv.URL
		srv.Close()
		_, err := newSource(t, base, testKey).Page(t.Context(), provider.Request{})
		if err == nil || strings.Contains(err.Error(), testKey) {
			t.Errorf("Page on a closed server: %v; want an error without the API key", err)
		}
	})
}

// compactData returns the compacted elements of a fixture's data array.
func compactData(t *testing.T, body []byte) [][]byte {
	t.Helper()
	var page struct{ Data []json.RawMessage }
	if err := json.Unmarshal(body, &page); err != nil {
		t.Fatal(err)
	}
	out := make([][]byte, len(page.Data))
	for i, d := range page.Data {
		var buf bytes.Buffer
		if err := json.Compact(&buf, d); err != nil {
			t.Fatal(err)
		}
		out[i] = buf.Bytes()
	}
	return out
}

// checkCircleGet checks src's Get against the fake f behind it: the first and the
// last of the n listed items read back as listed, an unknown id is the 404 wrapping
// provider.ErrNotFound, and answers that are not the one asked-for item (an item the
// adapter cannot map, another item, a list, a truncated body) are MalformedErrors.
// other is the JSON of a well-formed item with id "y".
func checkCircleGet(t *testing.T, f *circleFake, src provider.Source, n int, kind string, other []byte) {
	t.Helper()
	g := src.(provider.Getter)
	p, err := src.Page(t.Context(), provider.Request{})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []diff.Item{p.Items[0], p.Items[n-1]} {
		got, err := g.Get(t.Context(), want.ID)
		if err != nil {
			t.Fatalf("Get(%q): %v", want.ID, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Get(%q) = %+v\nlisted as %+v", want.ID, got, want)
		}
	}
	_, err = g.Get(t.Context(), "00000000-0000-4000-8000-000000000000")
	var se *provider.StatusError
	if !errors.Is(err, provider.ErrNotFound) || !errors.As(err, &se) || se.Code != 404 || se.Message != "code 404: Not found." {
		t.Errorf("Get of an unknown id: %v; want ErrNotFound and the 404 StatusError", err)
	}
	for _, tc := range []struct{ name, body string }{
		{"unmappable " + kind, `{"data":{"id":"x","createDate":"2025-01-01T00:00:00Z"}}`},
		{"another " + kind, `{"data":` + string(other) + "}"},
		{"a list", `{"data":[]}`},
		{"truncated", `{"data":{"id":"x"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.configure(func(f *circleFake) {
				f.fail = func(w http.ResponseWriter, r *http.Request) bool { w.Write([]byte(tc.body)); return true }
			})
			defer f.configure(func(f *circleFake) { f.fail = nil })
			_, err := g.Get(t.Context(), "x")
			var me *provider.MalformedError
			if !errors.As(err, &me) {
				t.Errorf("Get answered %s: %v, want a *provider.MalformedError", tc.body, err)
			}
		})
	}
}
