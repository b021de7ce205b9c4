package sim

import (
	"encoding/json"
	"net/http"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

type stripeList struct {
	Object  string          `json:"object"`
	URL     string          `json:"url"`
	HasMore bool            `json:"has_more"`
	Data    []onrampSession `json:"data"`
}

func stripePage(h *harness, query string) stripeList {
	h.t.Helper()
	r := h.get("/v1/crypto/onramp_sessions?"+query, basic(DefaultStripeSecretKey))
	if r.code != http.StatusOK {
		h.t.Fatalf("list ?%s: %d %s", query, r.code, r.body)
	}
	var l stripeList
	r.json(h.t, &l)
	if l.Object != "list" || l.URL != "/v1/crypto/onramp_sessions" {
		h.t.Fatalf("list envelope %q %q", l.Object, l.URL)
	}
	return l
}

func onrampIDs(l stripeList) []string {
	ids := make([]string, len(l.Data))
	for i, s := range l.Data {
		ids[i] = s.ID
	}
	return ids
}

// stripeWalk pages with starting_after until has_more is false.
func stripeWalk(h *harness, limit int, between func()) []string {
	h.t.Helper()
	var ids []string
	q := "limit=" + strconv.Itoa(limit)
	for range 1000 {
		l := stripePage(h, q)
		ids = append(ids, onrampIDs(l)...)
		if between != nil {
			between()
		}
		if !l.HasMore {
			return ids
		}
		q = "limit=" + strconv.Itoa(limit) + "&starting_after=" + l.Data[len(l.Data)-1].ID
	}
	h.t.Fatal("walk did not end in 1000 pages")
	return nil
}

func TestStripeWalkYieldsEveryItemOnceNewestFirst(t *testing.T) {
	h := newHarness(t, Config{Seed: 11, History: 95, HistorySpan: 2 * time.Minute, Providers: []string{ProviderStripe}})
	want := h.ids(ProviderStripe)
	got := stripeWalk(h, 10, nil)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("walk yielded %d ids, not the %d sessions newest first", len(got), len(want))
	}
	// Newest first by created, ties (about one per second here) by id descending.
	ties := 0
	for i := 1; i < len(got); i++ {
		a, b := h.created(ProviderStripe, got[i-1]), h.created(ProviderStripe, got[i])
		if b > a || b == a && got[i] > got[i-1] {
			t.Fatalf("%s is listed after %s", got[i], got[i-1])
		}
		if a == b {
			ties++
		}
	}
	if ties == 0 {
		t.Error("no two sessions share a created second: the tie-break is untested")
	}
	last := stripePage(h, "limit=10&starting_after="+want[84])
	if len(last.Data) != 10 || last.HasMore {
		t.Errorf("last page: %d sessions, has_more %v", len(last.Data), last.HasMore)
	}
	if l := stripePage(h, "limit=10&starting_after="+want[83]); !l.HasMore {
		t.Error("page before the last has has_more false")
	}
	if l := stripePage(h, "starting_after="+want[94]); len(l.Data) != 0 || l.HasMore {
		t.Errorf("after the oldest: %d sessions, has_more %v", len(l.Data), l.HasMore)
	}
	if l := stripePage(h, ""); len(l.Data) != 10 {
		t.Errorf("default limit gave %d", len(l.Data))
	}

	// ending_before walks back to the newest; has_more looks towards newer sessions.
	var back []string
	cursor := want[len(want)-1]
	for range 100 {
		l := stripePage(h, "limit=10&ending_before="+cursor)
		back = append(onrampIDs(l), back...)
		if !l.HasMore {
			break
		}
		cursor = l.Data[0].ID
	}
	if !reflect.DeepEqual(back, want[:len(want)-1]) {
		t.Fatalf("ending_before walk gave %d ids, want the %d newer than the oldest", len(back), len(want)-1)
	}
}

func TestStripeWalkWithInsertsSkipsNothing(t *testing.T) {
	h := newHarness(t, Config{Seed: 12, Rate: 30, History: 120, HistorySpan: time.Hour, OpenShare: 0.5, FailureRate: 0.2,
		Providers: []string{ProviderStripe}})
	want := h.ids(ProviderStripe)
	got := stripeWalk(h, 9, func() { h.advance(time.Second) })
	if n := len(h.ids(ProviderStripe)); n < len(want)+200 {
		t.Fatalf("only %d sessions were created during the walk", n-len(want))
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("walk with inserts yielded %d ids, want exactly the %d that existed at its start", len(got), len(want))
	}
}

func TestStripeCreatedFilters(t *testing.T) {
	h := newHarness(t, Config{Seed: 13, History: 200, HistorySpan: 10 * time.Minute, Providers: []string{ProviderStripe}})
	ids := h.ids(ProviderStripe)
	sec := h.created(ProviderStripe, ids[100]) / 1000
	count := func(pred func(int64) bool) int {
		n := 0
		for _, id := range ids {
			if pred(h.created(ProviderStripe, id) / 1000) {
				n++
			}
		}
		return n
	}
	s := strconv.FormatInt(sec, 10)
	for _, c := range []struct {
		query string
		pred  func(int64) bool
	}{
		{"created=" + s, func(v int64) bool { return v == sec }},
		{"created[gte]=" + s, func(v int64) bool { return v >= sec }},
		{"created[gt]=" + s, func(v int64) bool { return v > sec }},
		{"created[lte]=" + s, func(v int64) bool { return v <= sec }},
		{"created[lt]=" + s, func(v int64) bool { return v < sec }},
		{"created[gt]=" + strconv.FormatInt(sec-60, 10) + "&created[lt]=" + s, func(v int64) bool { return v > sec-60 && v < sec }},
	} {
		l := stripePage(h, "limit=100&"+c.query)
		if want := count(c.pred); len(l.Data) != min(want, 100) || want == 0 {
			t.Errorf("%s: %d sessions, want %d", c.query, len(l.Data), want)
		}
		for _, o := range l.Data {
			if !c.pred(o.Created) {
				t.Errorf("%s returned created %d", c.query, o.Created)
			}
		}
	}
}

func TestStripeBadParametersAre400(t *testing.T) {
	h := newHarness(t, Config{Seed: 14, History: 5, Providers: []string{ProviderStripe}})
	id := h.ids(ProviderStripe)[0]
	for _, c := range []struct{ query, code, param string }{
		{"limit=0", "parameter_invalid_integer", "limit"},
		{"limit=101", "parameter_invalid_integer", "limit"},
		{"limit=ten", "parameter_invalid_integer", "limit"},
		{"created[gte]=soon", "parameter_invalid_integer", "created[gte]"},
		{"page=2", "parameter_unknown", "page"},
		{"status=done", "", "status"},
		{"starting_after=" + id + "&ending_before=" + id, "", ""},
		{"starting_after=cos_1NamBL2eZvKYlo2CP38sZVEW", "resource_missing", "starting_after"},
		{"ending_before=cos_nope", "resource_missing", "ending_before"},
	} {
		r := h.get("/v1/crypto/onramp_sessions?"+c.query, bearer(DefaultStripeSecretKey))
		var body struct {
			Error stripeErrorBody `json:"error"`
		}
		r.json(t, &body)
		if r.code != http.StatusBadRequest || body.Error.Type != "invalid_request_error" || body.Error.Code != c.code ||
			body.Error.Param != c.param || body.Error.Message == "" {
			t.Errorf("?%s: %d %s", c.query, r.code, r.body)
		}
	}
	if l := stripePage(h, "limit=100&expand[]=data.transaction_details"); len(l.Data) != 5 {
		t.Errorf("expand[] is not ignored: %d sessions", len(l.Data))
	}
}

func TestStripeAuthAndVersion(t *testing.T) {
	h := newHarness(t, Config{Seed: 15, History: 3, Providers: []string{ProviderStripe}, Credentials: Credentials{StripeSecretKey: "sk_test_abcdefghijklmnop1234"}})
	for _, c := range []struct {
		auth string
		code int
		msg  string
	}{
		{basic("sk_test_abcdefghijklmnop1234"), 200, ""},
		{"Basic " + "c2tfdGVzdF9hYmNkZWZnaGlqa2xtbm9wMTIzNDpwdw==", 200, ""}, // with a password
		{bearer("sk_test_abcdefghijklmnop1234"), 200, ""},
		{bearer("sk_test_abcdefghijklmnop9999"), 401, "Invalid API Key provided: sk_test_****************9999"},
		{basic("sk_live_zzzzzzzz5678"), 401, "Invalid API Key provided: sk_live_********5678"},
		{"", 401, "You did not provide an API key."},
		{"Basic !!!", 401, "You did not provide an API key."},
	} {
		r := h.get("/v1/crypto/onramp_sessions", c.auth)
		if r.code != c.code {
			t.Errorf("%q: %d %s, want %d", c.auth, r.code, r.body, c.code)
			continue
		}
		if c.code == 401 {
			var body struct {
				Error stripeErrorBody `json:"error"`
			}
			r.json(t, &body)
			if body.Error.Type != "invalid_request_error" || !strings.HasPrefix(body.Error.Message, c.msg) ||
				strings.Contains(string(r.body), "abcdefghijklmnop") {
				t.Errorf("%q: body %s", c.auth, r.body)
			}
		}
		if !strings.HasPrefix(r.header.Get("Request-Id"), "req_") {
			t.Errorf("Request-Id %q", r.header.Get("Request-Id"))
		}
	}
	r := h.get("/v1/crypto/onramp_sessions", bearer("sk_test_abcdefghijklmnop1234"))
	if v := r.header.Get("Stripe-Version"); v != DefaultStripeVersion {
		t.Errorf("Stripe-Version %q without one sent", v)
	}
	req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/v1/crypto/onramp_sessions", nil)
	req.Header.Set("Authorization", bearer("sk_test_abcdefghijklmnop1234"))
	req.Header.Set("Stripe-Version", "2026-08-26.dahlia")
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if v := resp.Header.Get("Stripe-Version"); v != "2026-08-26.dahlia" {
		t.Errorf("Stripe-Version %q, want the one sent", v)
	}
}

// The fixture's fields (stripe/openapi fixtures3.private_preview.json,
// resources["crypto.onramp_session"]), every one of which a session carries.
var onrampFixtureKeys = map[string][]string{
	"": {"client_secret", "created", "id", "kyc_details_provided", "livemode", "metadata", "object", "redirect_url",
		"status", "transaction_details"},
	"transaction_details": {"destination_amount", "destination_currencies", "destination_currency", "destination_network",
		"destination_networks", "fees", "lock_wallet_address", "settlement_speed", "source_amount", "source_currency",
		"transaction_id", "wallet_address", "wallet_addresses"},
	"wallet_addresses": {"avalanche", "base_network", "bitcoin", "celo", "destination_tags", "ethereum", "optimism",
		"polygon", "solana", "stellar", "sui", "tempo", "worldchain"},
}

func keys(m map[string]json.RawMessage) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestStripeSessionShapeAndGet(t *testing.T) {
	h := newHarness(t, Config{Seed: 16, History: 300, OpenShare: 0.2, FailureRate: 0.2, Providers: []string{ProviderStripe}})
	r := h.get("/v1/crypto/onramp_sessions?limit=100", bearer(DefaultStripeSecretKey))
	var raw struct {
		Data []map[string]json.RawMessage `json:"data"`
	}
	r.json(t, &raw)
	complete := 0
	for _, o := range raw.Data {
		if got := keys(o); !reflect.DeepEqual(got, onrampFixtureKeys[""]) {
			t.Fatalf("session keys %v", got)
		}
		var td map[string]json.RawMessage
		if err := json.Unmarshal(o["transaction_details"], &td); err != nil {
			t.Fatal(err)
		}
		if got := keys(td); !reflect.DeepEqual(got, onrampFixtureKeys["transaction_details"]) {
			t.Fatalf("transaction_details keys %v", got)
		}
		if string(td["wallet_addresses"]) != "null" {
			var wa map[string]json.RawMessage
			if err := json.Unmarshal(td["wallet_addresses"], &wa); err != nil {
				t.Fatal(err)
			}
			if got := keys(wa); !reflect.DeepEqual(got, onrampFixtureKeys["wallet_addresses"]) {
				t.Fatalf("wallet_addresses keys %v", got)
			}
		}
		var s onrampSession
		b, _ := json.Marshal(o)
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(s.ID, "cos_") || s.ClientSecret != s.ID+"_secret_"+s.ClientSecret[len(s.ID)+8:] ||
			s.Object != "crypto.onramp_session" || !slices.Contains(onrampStatuses, s.Status) {
			t.Fatalf("session %s: id/secret/object/status wrong", b)
		}
		if s.Status == "fulfillment_complete" {
			complete++
			if s.TransactionDetails.TransactionID == nil || s.TransactionDetails.DestinationAmount == nil {
				t.Fatalf("complete session without transaction_id or amount: %s", b)
			}
		}
	}
	if complete == 0 {
		t.Error("no fulfillment_complete session to check")
	}
	id := h.ids(ProviderStripe)[7]
	r = h.get("/v1/crypto/onramp_sessions/"+id, basic(DefaultStripeSecretKey))
	var one onrampSession
	r.json(t, &one)
	if r.code != 200 || one.ID != id {
		t.Errorf("retrieve: %d %s", r.code, r.body)
	}
	r = h.get("/v1/crypto/onramp_sessions/cos_missing", basic(DefaultStripeSecretKey))
	var body struct {
		Error stripeErrorBody `json:"error"`
	}
	r.json(t, &body)
	if r.code != http.StatusNotFound || body.Error.Code != "resource_missing" || body.Error.Type != "invalid_request_error" {
		t.Errorf("retrieve unknown: %d %s", r.code, r.body)
	}
}
