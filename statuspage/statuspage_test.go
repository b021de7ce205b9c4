package statuspage

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/state"
	"github.com/payments-watcher/watcher/stateapi"
)

// clock is an injectable clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// Counts land in the bucket of their minute; an hour later they have rolled out,
// and a bucket reused by a later minute starts again from zero.
func TestRecorderBucketsRollOverByMinute(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 2, 10, 0, 30, 0, time.UTC)}
	r := NewRecorder([]string{"a"}, c.now)
	r.Request("a", poller.PurposeDiscovery, 200, 0)
	r.Request("a", poller.PurposeDiscovery, 200, 0)
	r.Transition("a", "payment", diff.Pending, false)
	r.Request("unknown", poller.PurposeDiscovery, 200, 0) // not counted, no panic

	got := r.Requests("a")
	if len(got) != Minutes || got[Minutes-1] != 2 || sum(got) != 2 {
		t.Fatalf("requests in the first minute: %v", got)
	}
	c.t = c.t.Add(time.Minute)
	r.Request("a", poller.PurposeRefresh, 200, 0)
	got = r.Requests("a")
	if got[Minutes-2] != 2 || got[Minutes-1] != 1 {
		t.Fatalf("after a minute: %v", got[Minutes-3:])
	}
	if tr := r.Transitions("a"); tr[Minutes-2] != 1 || sum(tr) != 1 {
		t.Fatalf("transitions after a minute: %v", tr[Minutes-3:])
	}
	// 60 minutes after the first: its bucket is reused, the second minute is the oldest.
	c.t = c.t.Add(59 * time.Minute)
	r.Request("a", poller.PurposeRefresh, 200, 0)
	got = r.Requests("a")
	if got[0] != 1 || got[Minutes-1] != 1 || sum(got) != 2 {
		t.Fatalf("an hour later: %v", got)
	}
	c.t = c.t.Add(2 * time.Hour)
	if s := sum(r.Requests("a")); s != 0 {
		t.Fatalf("three hours later %d requests remain", s)
	}
}

// The recent transitions are the newest RecentEvents committed ones, newest first,
// and only from successful commits.
func TestRecorderRecentEvents(t *testing.T) {
	r := NewRecorder([]string{"a"}, nil)
	st := r.Store(&fakeStore{})
	var msgs []event.Message
	for i := range RecentEvents + 5 {
		msgs = append(msgs, message(t, "a", "payment", string(rune('A'+i)), "pending", "completed"))
	}
	if err := st.Commit(t.Context(), "a", state.Batch{Messages: msgs}); err != nil {
		t.Fatal(err)
	}
	failing := r.Store(&fakeStore{commitErr: errors.New("disk full")})
	if err := failing.Commit(t.Context(), "a", state.Batch{Messages: msgs[:1]}); err == nil {
		t.Fatal("commit error lost")
	}
	got := r.Recent()
	if len(got) != RecentEvents {
		t.Fatalf("%d recent events", len(got))
	}
	last := string(rune('A' + RecentEvents + 4))
	if got[0].ID != last || got[0].From != "pending" || got[0].To != "completed" || got[0].Status != "COMPLETE" {
		t.Fatalf("newest: %+v", got[0])
	}
}

func message(t *testing.T, source, kind, id, from, to string) event.Message {
	t.Helper()
	e := event.Event{ID: "ev-" + id, Time: time.Now().UTC(), Data: event.Data{
		Source: source, Kind: kind, ID: id,
		Previous: &event.Status{Status: strings.ToUpper(from), State: from},
		Current:  event.Status{Status: "COMPLETE", State: to},
		Item:     json.RawMessage(`{"client_secret":"pi_secret_should_not_show"}`),
	}}
	body, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return event.Message{ID: e.ID, Subject: "payments." + source, Body: body}
}

// fakeStore is a stateapi.Store and a poller.Store with fixed answers.
type fakeStore struct {
	poller.Store
	commitErr error
	open      map[string][]state.OpenItem
	recs      map[string]map[string]*diff.Record
}

func (f *fakeStore) Commit(context.Context, string, state.Batch) error { return f.commitErr }
func (f *fakeStore) Sources(context.Context) ([]string, error)         { return nil, nil }
func (f *fakeStore) Stats(_ context.Context, source string) (stateapi.Stats, error) {
	st := stateapi.Stats{Items: len(f.recs[source]), Open: len(f.open[source])}
	for _, r := range f.recs[source] {
		if r.Stalled {
			st.Stalled++
		}
	}
	return st, nil
}
func (f *fakeStore) Load(_ context.Context, source string, ids []string) (map[string]*diff.Record, error) {
	out := map[string]*diff.Record{}
	for _, id := range ids {
		if r, ok := f.recs[source][id]; ok {
			out[id] = r
		}
	}
	return out, nil
}
func (f *fakeStore) OpenItems(_ context.Context, source string) ([]state.OpenItem, error) {
	return f.open[source], nil
}
func (f *fakeStore) Each(context.Context, string, func(*diff.Record) error) error { return nil }
func (f *fakeStore) Pending(context.Context, uint64, int) ([]state.OutboxEntry, error) {
	return nil, nil
}
func (f *fakeStore) OutboxStats(context.Context) (int, time.Time, error) {
	return 3, time.Now().Add(-time.Minute), nil
}
func (f *fakeStore) Rebaseline(context.Context, string) error { return nil }

const apiKey = "sk_live_TOPSECRET123"

// testPage is a page of two sources: "good", polled fine with an open and a stalled
// item, and "bad", whose last error holds markup and the API key.
func testPage() *Page {
	created := time.Now().Add(-2 * time.Hour)
	store := &fakeStore{
		open: map[string][]state.OpenItem{"good": {
			{ID: "pay/1", CreatedAt: created, State: diff.Pending},
			{ID: "pay-2", CreatedAt: created.Add(time.Minute), State: diff.Processing},
		}},
		recs: map[string]map[string]*diff.Record{"good": {
			"pay/1": {Kind: "payment", ID: "pay/1", Status: diff.Status{Raw: "PENDING", State: diff.Pending}, Stalled: true},
			"pay-2": {Kind: "payment", ID: "pay-2", Status: diff.Status{Raw: "PROCESSING", State: diff.Processing}},
		}},
	}
	rec := NewRecorder([]string{"good", "bad"}, nil)
	rec.Request("good", poller.PurposeDiscovery, 200, 0)
	return &Page{
		Sources: []string{"good", "bad"}, Store: store, Recorder: rec,
		Running: func() map[string]poller.Health {
			return map[string]poller.Health{
				"good": {LastSuccess: time.Now()},
				"bad":  {Err: errors.New(`provider said <script>alert(1)</script> for key ` + apiKey)},
			}
		},
		NATS:   func() (string, error) { return "CONNECTED", nil },
		Redact: strings.NewReplacer(apiKey, "[api_key]"),
	}
}

func get(t *testing.T, h http.Handler, target string, header http.Header) (int, string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	body, _ := io.ReadAll(w.Result().Body)
	return w.Code, string(body)
}

// The page names every source, escapes the provider's error text, hides the
// secrets, links open and stalled items to their records, and draws both charts.
func TestHandlerRendersEverySourceEscapedWithoutSecrets(t *testing.T) {
	h := Handler(testPage(), stateapi.Access{})
	code, body := get(t, h, "/", nil)
	if code != http.StatusOK {
		t.Fatalf("GET /: %d %s", code, body)
	}
	for _, want := range []string{`id="source-good"`, `id="source-bad"`, "failing", "[api_key]",
		"&lt;script&gt;alert(1)&lt;/script&gt;", `href="/state/items/good/pay%2F1"`, "Stalled", "PROCESSING"} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, bad := range []string{apiKey, "<script>", "client_secret"} {
		if strings.Contains(body, bad) {
			t.Errorf("page holds %q", bad)
		}
	}
	if n := strings.Count(body, `<path d="M0.0 `); n != 4 {
		t.Errorf("%d charts drawn, want 4", n)
	}

	code, body = get(t, h, "/status.json", nil)
	var snap Snapshot
	if err := json.Unmarshal([]byte(body), &snap); code != http.StatusOK || err != nil {
		t.Fatalf("GET /status.json: %d %v", code, err)
	}
	if len(snap.Sources) != 2 || snap.Sources[1].Health != "failing" || strings.Contains(body, apiKey) ||
		snap.Outbox.Depth != 3 || len(snap.Sources[0].StalledItems) != 1 || snap.Sources[0].Requests[Minutes-1] != 1 {
		t.Fatalf("status.json: %s", body)
	}
}

// With a token over TCP, the page takes it from the Authorization header or the
// token query parameter; without one it answers 401. A unix socket needs none.
func TestHandlerAccess(t *testing.T) {
	const token = "admintoken-0123456789"
	h := Handler(testPage(), stateapi.Access{Token: token})
	for _, tc := range []struct {
		target string
		header http.Header
		want   int
	}{
		{"/", nil, http.StatusUnauthorized},
		{"/status.json", nil, http.StatusUnauthorized},
		{"/?token=wrong", nil, http.StatusUnauthorized},
		{"/?token=" + token, nil, http.StatusOK},
		{"/status.json?token=" + token, nil, http.StatusOK},
		{"/", http.Header{"Authorization": {"Bearer " + token}}, http.StatusOK},
	} {
		code, body := get(t, h, tc.target, tc.header)
		if code != tc.want {
			t.Errorf("GET %s: %d, want %d", tc.target, code, tc.want)
		}
		if strings.Contains(body, token) {
			t.Errorf("GET %s: the answer echoes the token", tc.target)
		}
	}
	if code, _ := get(t, Handler(testPage(), stateapi.Access{Token: token, Socket: true}), "/", nil); code != http.StatusOK {
		t.Errorf("GET / on a socket: %d", code)
	}
}

// A source whose cycle has run too long shows as late, with the readiness line
// redacted; one another replica polls shows as elsewhere.
func TestSnapshotLateAndElsewhere(t *testing.T) {
	p := testPage()
	p.Late = func(source string) string {
		if source == "good" {
			return "source good: no successful poll for 1m0s (interval 15s): a cycle is still running " + apiKey
		}
		return ""
	}
	snap := p.Snapshot(t.Context())
	if s := snap.Sources[0]; s.Health != "late" || strings.Contains(s.Error, apiKey) || !strings.Contains(s.Error, "still running") {
		t.Errorf("late source: %+v", s)
	}
	p.Replica = "r1"
	p.Running = func() map[string]poller.Health { return nil }
	if s := p.Snapshot(t.Context()).Sources[1]; s.Health != "elsewhere" || s.Here {
		t.Errorf("source of another replica: %+v", s)
	}
}
