package stateapi

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// fakeReader answers every read with nothing and counts rebaselines.
type fakeReader struct{ rebaselines []string }

func (f *fakeReader) Sources(context.Context) ([]SourceInfo, error) {
	return []SourceInfo{{Name: "cpn", Configured: true}}, nil
}
func (f *fakeReader) Record(_ context.Context, source, id string) (Record, error) {
	return Record{Source: source, ID: id}, nil
}
func (f *fakeReader) Open(context.Context, string) ([]OpenItem, error) { return nil, nil }
func (f *fakeReader) Export(_ context.Context, source string, fn func(Record) error) error {
	return fn(Record{Source: source, ID: "p1"})
}
func (f *fakeReader) Outbox(context.Context, int, func(OutboxEntry) error) error { return nil }
func (f *fakeReader) Rebaseline(_ context.Context, source string) error {
	if source != "cpn" {
		return UnknownSource(source, []string{"cpn"})
	}
	f.rebaselines = append(f.rebaselines, source)
	return nil
}

func TestAccess(t *testing.T) {
	const token = "the-admin-token"
	for _, tc := range []struct {
		name        string
		access      Access
		clientTok   string
		readErr     error // of Sources and Export
		rebaseErr   error
		rebaselined bool
	}{
		{name: "tcp, no token configured", access: Access{}, rebaseErr: ErrUnauthorized},
		{name: "tcp, token configured, none sent", access: Access{Token: token}, readErr: ErrUnauthorized, rebaseErr: ErrUnauthorized},
		{name: "tcp, wrong token", access: Access{Token: token}, clientTok: "other", readErr: ErrUnauthorized, rebaseErr: ErrUnauthorized},
		{name: "tcp, token", access: Access{Token: token}, clientTok: token, rebaselined: true},
		{name: "socket", access: Access{Socket: true}, rebaselined: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rd := &fakeReader{}
			srv := httptest.NewServer(Handler(rd, tc.access))
			defer srv.Close()
			c, err := NewClient(strings.TrimPrefix(srv.URL, "http://"), tc.clientTok)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Sources(t.Context()); !errors.Is(err, tc.readErr) && (err != nil || tc.readErr != nil) {
				t.Errorf("sources: %v, want %v", err, tc.readErr)
			}
			err = c.Export(t.Context(), "cpn", func(Record) error { return nil })
			if !errors.Is(err, tc.readErr) && (err != nil || tc.readErr != nil) {
				t.Errorf("export: %v, want %v", err, tc.readErr)
			}
			err = c.Rebaseline(t.Context(), "cpn")
			if !errors.Is(err, tc.rebaseErr) && (err != nil || tc.rebaseErr != nil) {
				t.Errorf("rebaseline: %v, want %v", err, tc.rebaseErr)
			}
			if got := len(rd.rebaselines) == 1; got != tc.rebaselined {
				t.Errorf("rebaselined %v, want %v", got, tc.rebaselined)
			}
			if tc.rebaseErr != nil && !strings.Contains(err.Error(), "admin.token_file") {
				t.Errorf("refusal does not say what to set: %v", err)
			}
		})
	}
}

func TestRebaselineNeedsJSONContentType(t *testing.T) {
	rd := &fakeReader{}
	srv := httptest.NewServer(Handler(rd, Access{Socket: true}))
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/state/rebaseline/cpn", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 || len(rd.rebaselines) != 0 {
		t.Errorf("text/plain rebaseline: %s, %d rebaselines", resp.Status, len(rd.rebaselines))
	}
	c, _ := NewClient(strings.TrimPrefix(srv.URL, "http://"), "")
	if err := c.Rebaseline(t.Context(), "paypal"); !errors.Is(err, ErrNotFound) || err.Error() != `unknown source "paypal" (known: cpn)` {
		t.Errorf("rebaseline of an unknown source: %v", err)
	}
}

// The token as a query parameter opens the status page only, never the /state/ API.
func TestQueryTokenOnlyForThePage(t *testing.T) {
	const token = "the-admin-token"
	a := Access{Token: token}
	h := Handler(&fakeReader{}, a)
	for _, target := range []string{"/state/sources?token=" + token, "/state/items/cpn/p1?token=" + token} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, target, nil))
		if w.Code != http.StatusUnauthorized {
			t.Errorf("GET %s: %d, want 401", target, w.Code)
		}
	}
	if err := a.CheckPage(httptest.NewRequest(http.MethodGet, "/?token="+token, nil)); err != nil {
		t.Errorf("page with the query token: %v", err)
	}
	if err := a.CheckPage(httptest.NewRequest(http.MethodPost, "/?token="+token, nil)); err == nil {
		t.Error("POST to the page accepted")
	}
	if err := a.CheckPage(httptest.NewRequest(http.MethodGet, "/?token=nope", nil)); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("page with a wrong token: %v", err)
	}
}
