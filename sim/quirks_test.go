package sim

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func circleCaseOf(t *testing.T, provider string) circleCase {
	t.Helper()
	i := slices.IndexFunc(circleCases, func(c circleCase) bool { return c.provider == provider })
	if i < 0 {
		t.Fatalf("%s is not a Circle provider", provider)
	}
	return circleCases[i]
}

// listWalk walks a provider's whole list with the provider's own paging, asking for
// size items a page, and returns the pages' ids in walk order: Circle follows
// rel="next", Stripe starting_after while has_more, Coindirect offset += len(page)
// until a page is empty (so that short pages do not end the walk).
func listWalk(h *harness, provider string, size int) [][]string {
	h.t.Helper()
	n := strconv.Itoa(size)
	var pages [][]string
	switch provider {
	case ProviderStripe:
		q := "limit=" + n
		for range 1000 {
			l := stripePage(h, q)
			pages = append(pages, onrampIDs(l))
			if !l.HasMore {
				return pages
			}
			q = "limit=" + n + "&starting_after=" + l.Data[len(l.Data)-1].ID
		}
	case ProviderCoindirect:
		offset := 0
		for range 1000 {
			page := cdPage(h, "&max="+n+"&offset="+strconv.Itoa(offset))
			if len(page) == 0 {
				return pages
			}
			ids := make([]string, len(page))
			for i, it := range page {
				ids[i] = it.UUID
			}
			pages = append(pages, ids)
			offset += len(page)
		}
	default:
		c := circleCaseOf(h.t, provider)
		return c.walk(h, c.path+"?pageSize="+n, "next", nil)
	}
	h.t.Fatalf("%s: walk did not end in 1000 pages", provider)
	return nil
}

func flat(pages [][]string) []string {
	var out []string
	for _, p := range pages {
		out = append(out, p...)
	}
	return out
}

func oldestFirst(h *harness, provider string) []string {
	ids := h.ids(provider)
	slices.Reverse(ids)
	return ids
}

func TestQuirkOldestFirstWalksAscendingOnce(t *testing.T) {
	for _, provider := range ProviderIDs() {
		t.Run(provider, func(t *testing.T) {
			h := newHarness(t, Config{Seed: 51, History: 23, Providers: []string{provider},
				Quirks: map[string]Quirks{provider: {OldestFirst: true}}})
			got := flat(listWalk(h, provider, 5))
			if want := oldestFirst(h, provider); !slices.Equal(got, want) {
				t.Fatalf("walk:\n got %v\nwant %v (every item once, oldest first)", got, want)
			}
		})
	}
}

// Circle's prev links and Stripe's ending_before page back towards older items when the
// list ascends.
func TestQuirkOldestFirstBackwardCursors(t *testing.T) {
	t.Run("circle", func(t *testing.T) {
		c := circleCases[0]
		h := newHarness(t, Config{Seed: 52, History: 12, Providers: []string{c.provider},
			Quirks: map[string]Quirks{c.provider: {OldestFirst: true}}})
		asc := oldestFirst(h, c.provider)
		first, links := c.page(h, c.path+"?pageSize=5")
		if _, ok := links["prev"]; ok || !slices.Equal(pageIDs(first), asc[:5]) {
			t.Fatalf("first page %v, links %v; want %v and no prev", pageIDs(first), links, asc[:5])
		}
		back := c.walk(h, c.path+"?pageSize=5&pageBefore="+asc[len(asc)-1], "prev", nil)
		slices.Reverse(back) // pages towards older items, each page ascending
		got := flat(back)
		if want := asc[:len(asc)-1]; !slices.Equal(got, want) {
			t.Fatalf("prev walk from the newest item:\n got %v\nwant %v", got, want)
		}
	})
	t.Run("stripe", func(t *testing.T) {
		h := newHarness(t, Config{Seed: 53, History: 12, Providers: []string{ProviderStripe},
			Quirks: map[string]Quirks{ProviderStripe: {OldestFirst: true}}})
		asc := oldestFirst(h, ProviderStripe)
		l := stripePage(h, "limit=4&ending_before="+asc[10])
		if !slices.Equal(onrampIDs(l), asc[6:10]) || !l.HasMore {
			t.Fatalf("ending_before: %v has_more %v, want %v and true", onrampIDs(l), l.HasMore, asc[6:10])
		}
		l = stripePage(h, "limit=4&ending_before="+asc[3])
		if !slices.Equal(onrampIDs(l), asc[:3]) || l.HasMore {
			t.Fatalf("ending_before near the start: %v has_more %v", onrampIDs(l), l.HasMore)
		}
	})
}

// boundsQuery is a list query with a lower (from) and, unless 0, an upper (to)
// creation bound in unix ms, in each provider's parameters.
func boundsQuery(t *testing.T, provider string, from, to int64) string {
	rfc := func(ms int64) string { return url.QueryEscape(time.UnixMilli(ms).UTC().Format(time.RFC3339Nano)) }
	var q string
	switch provider {
	case ProviderStripe:
		q = "/v1/crypto/onramp_sessions?limit=100&created[gte]=" + strconv.FormatInt(from/1000, 10)
		if to != 0 {
			q += "&created[lte]=" + strconv.FormatInt(to/1000, 10)
		}
	case ProviderCoindirect:
		q = cdList + "&max=1000&fromDate=" + strconv.FormatInt(from, 10)
		if to != 0 {
			q += "&toDate=" + strconv.FormatInt(to, 10)
		}
	default:
		c := circleCaseOf(t, provider)
		q = c.path + "?pageSize=" + strconv.Itoa(c.max) + "&from=" + rfc(from)
		if to != 0 {
			q += "&to=" + rfc(to)
		}
	}
	return q
}

// listedIDs reads one list page and returns its ids in answer order.
func listedIDs(h *harness, provider, target string) []string {
	h.t.Helper()
	r := authGet(h, provider, target)
	if r.code != http.StatusOK {
		h.t.Fatalf("GET %s: %d %s", target, r.code, r.body)
	}
	var items []struct{ ID, UUID string }
	var wrapped struct {
		Data []struct{ ID, UUID string }
	}
	if provider == ProviderCoindirect {
		r.json(h.t, &items)
	} else {
		r.json(h.t, &wrapped)
		items = wrapped.Data
	}
	ids := make([]string, len(items))
	for i, it := range items {
		ids[i] = it.ID + it.UUID
	}
	return ids
}

func TestQuirkIgnoreDateFilterKeepsTheUpperBound(t *testing.T) {
	for _, provider := range ProviderIDs() {
		t.Run(provider, func(t *testing.T) {
			h := newHarness(t, Config{Seed: 54, History: 30, Providers: []string{provider}})
			ids := h.ids(provider)
			from, to := h.created(provider, ids[9]), h.created(provider, ids[20])
			if got := listedIDs(h, provider, boundsQuery(t, provider, from, 0)); !slices.Equal(got, ids[:10]) {
				t.Fatalf("documented lower bound: %d items, want the 10 newest", len(got))
			}
			if err := h.sim.SetQuirks(provider, Quirks{IgnoreDateFilter: true}); err != nil {
				t.Fatal(err)
			}
			if got := listedIDs(h, provider, boundsQuery(t, provider, from, 0)); !slices.Equal(got, ids) {
				t.Fatalf("ignored lower bound: %d items, want all %d", len(got), len(ids))
			}
			if got := listedIDs(h, provider, boundsQuery(t, provider, from, to)); !slices.Equal(got, ids[20:]) {
				t.Fatalf("ignored lower bound with an upper bound: %d items, want the %d at or before it", len(got), len(ids[20:]))
			}
		})
	}
	t.Run("stripe created[gt] and created", func(t *testing.T) {
		h := newHarness(t, Config{Seed: 55, History: 10, Providers: []string{ProviderStripe},
			Quirks: map[string]Quirks{ProviderStripe: {IgnoreDateFilter: true}}})
		ids := h.ids(ProviderStripe)
		sec := strconv.FormatInt(h.created(ProviderStripe, ids[4])/1000, 10)
		if got := onrampIDs(stripePage(h, "limit=100&created[gt]="+sec)); !slices.Equal(got, ids) {
			t.Errorf("created[gt] ignored: %d items, want %d", len(got), len(ids))
		}
		if got := onrampIDs(stripePage(h, "limit=100&created="+sec)); !slices.Equal(got, ids[4:]) {
			t.Errorf("exact created keeps its upper half: %d items, want %d", len(got), len(ids[4:]))
		}
	})
}

func TestQuirkPageCapShortPagesReachEveryItem(t *testing.T) {
	for _, provider := range ProviderIDs() {
		t.Run(provider, func(t *testing.T) {
			h := newHarness(t, Config{Seed: 56, History: 20, Providers: []string{provider},
				Quirks: map[string]Quirks{provider: {PageCap: 3}}})
			pages := listWalk(h, provider, 10)
			for i, p := range pages {
				if len(p) > 3 || len(p) < 3 && i < len(pages)-1 {
					t.Fatalf("page %d holds %d items; want 3 on every page but the last", i, len(p))
				}
			}
			if got, want := flat(pages), h.ids(provider); !slices.Equal(got, want) {
				t.Fatalf("capped walk:\n got %v\nwant %v", got, want)
			}
		})
	}
	t.Run("circle links keep the asked pageSize", func(t *testing.T) {
		c := circleCases[0]
		h := newHarness(t, Config{Seed: 57, History: 8, Providers: []string{c.provider},
			Quirks: map[string]Quirks{c.provider: {PageCap: 3}}})
		p, links := c.page(h, c.path+"?pageSize=10")
		next, err := url.Parse(links["next"])
		if err != nil || len(p.Data) != 3 || next.Query().Get("pageSize") != "10" {
			t.Fatalf("page of %d, next %q (%v)", len(p.Data), links["next"], err)
		}
	})
}

func TestQuirkLinkOriginNamesTheOtherOrigin(t *testing.T) {
	for _, c := range circleCases {
		t.Run(c.provider, func(t *testing.T) {
			h := newHarness(t, Config{Seed: 58, History: 7, Providers: []string{c.provider},
				Quirks: map[string]Quirks{c.provider: {LinkOrigin: "https://api.circle.com"}}})
			target := c.path + "?pageSize=3"
			var seen []string
			for range 10 {
				p, links := c.page(h, target)
				seen = append(seen, pageIDs(p)...)
				for rel, link := range links {
					if !strings.HasPrefix(link, "https://api.circle.com"+c.path+"?") {
						t.Fatalf("rel=%s link %q is not on https://api.circle.com", rel, link)
					}
				}
				next, ok := links["next"]
				if !ok {
					break
				}
				// The path and query work against the simulator itself.
				target = strings.TrimPrefix(next, "https://api.circle.com")
			}
			if want := h.ids(c.provider); !slices.Equal(seen, want) {
				t.Fatalf("walk over the foreign links:\n got %v\nwant %v", seen, want)
			}
		})
	}
}

func TestQuirkUnknownStatusesAreServedAndInTheTruth(t *testing.T) {
	h := newHarness(t, Config{Seed: 59, Rate: 0.2, History: 200, OpenShare: 0.3, FailureRate: 0.5, HistoryTruth: true,
		Providers: []string{ProviderRamp}, Quirks: map[string]Quirks{ProviderRamp: {UnknownStatuses: true}}})
	h.advance(20 * time.Minute)

	last := map[string]string{}
	edges := map[string]bool{}
	for _, tr := range h.sim.Truth() {
		last[tr.ID] = tr.To
		edges[tr.From+">"+tr.To] = true
	}
	for _, e := range []string{">PENDING", "PENDING>IN_PROGRESS", "PENDING>DECLINED", "IN_PROGRESS>SUCCEEDED", "IN_PROGRESS>DECLINED"} {
		if !edges[e] {
			t.Errorf("no %s transition in the truth", e)
		}
	}
	served := map[string]int{}
	c := circleCaseOf(t, ProviderRamp)
	target := c.path + "?pageSize=50"
	for range 100 {
		p, links := c.page(h, target)
		for _, it := range p.Data {
			served[it.Status]++
			if last[it.ID] != it.Status {
				t.Fatalf("session %s is served %s, the truth says %q", it.ID, it.Status, last[it.ID])
			}
		}
		next, ok := links["next"]
		if !ok {
			break
		}
		target = next
	}
	for status := range served {
		if !slices.Contains([]string{"PENDING", "IN_PROGRESS", "SUCCEEDED", "DECLINED"}, status) {
			t.Errorf("served status %s under the quirk", status)
		}
	}
	if served["SUCCEEDED"] == 0 || served["DECLINED"] == 0 {
		t.Errorf("served statuses %v lack SUCCEEDED or DECLINED", served)
	}

	// Turned off, the quirk leaves new sessions on the documented statuses.
	if err := h.sim.SetQuirks(ProviderRamp, Quirks{}); err != nil {
		t.Fatal(err)
	}
	id := createItem(h, ProviderRamp)
	h.advance(30 * time.Minute)
	var to []string
	for _, tr := range h.sim.Truth() {
		if tr.ID == id {
			to = append(to, tr.To)
		}
	}
	if len(to) != 2 || to[0] != "PENDING" || !slices.Contains([]string{"COMPLETED", "FAILED", "EXPIRED"}, to[1]) {
		t.Errorf("a session created without the quirk went %v", to)
	}
}

func TestQuirkRefuseStripeVersion(t *testing.T) {
	h := newHarness(t, Config{Seed: 60, History: 3, Providers: []string{ProviderStripe}})
	// send lists sessions with version as Stripe-Version ("" sends none) and returns the
	// status and, for an error, "type|message|param".
	send := func(version, key string) (int, string) {
		req, err := http.NewRequest(http.MethodGet, h.srv.URL+"/v1/crypto/onramp_sessions", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", basic(key))
		if version != "" {
			req.Header.Set("Stripe-Version", version)
		}
		resp, err := h.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct{ Error map[string]any }
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		if body.Error == nil {
			return resp.StatusCode, ""
		}
		return resp.StatusCode, stringOr(body.Error["type"]) + "|" + stringOr(body.Error["message"]) + "|" + paramText(body.Error, "param")
	}
	for _, c := range []struct {
		refuse, version, key string
		code                 int
		body                 string // a prefix of the error
	}{
		{"2024-06-20", "2024-06-20", DefaultStripeSecretKey, 400, "invalid_request_error|Invalid Stripe API version: 2024-06-20|null"},
		{"2024-06-20", "2024-06-20", "sk_test_wrong", 401, "invalid_request_error|Invalid API Key"},
		{"2024-06-20", DefaultStripeVersion, DefaultStripeSecretKey, 200, ""},
		{"2024-06-20", "", DefaultStripeSecretKey, 200, ""},
		{"*", "2026-08-26.dahlia", DefaultStripeSecretKey, 400,
			"invalid_request_error|Crypto onramp sessions are not available on API version 2026-08-26.dahlia."},
		{"*", "", DefaultStripeSecretKey, 200, ""},
		{"", "2024-06-20", DefaultStripeSecretKey, 200, ""},
	} {
		if err := h.sim.SetQuirks(ProviderStripe, Quirks{RefuseStripeVersion: c.refuse}); err != nil {
			t.Fatal(err)
		}
		code, body := send(c.version, c.key)
		if code != c.code || !strings.HasPrefix(body, c.body) {
			t.Errorf("refuse %q, version %q: %d %q; want %d %q", c.refuse, c.version, code, body, c.code, c.body)
		}
		if c.code == 400 && !strings.HasSuffix(body, "|null") {
			t.Errorf("refuse %q: error %q lacks param null", c.refuse, body)
		}
	}
}

func stringOr(v any) string {
	s, _ := v.(string)
	return s
}

// paramText is e[key] as text: "null" when present as null, "absent" when missing.
func paramText(e map[string]any, key string) string {
	v, ok := e[key]
	switch {
	case !ok:
		return "absent"
	case v == nil:
		return "null"
	}
	return stringOr(v)
}

func TestQuirkForbiddenAnswersEachProviders403(t *testing.T) {
	bodies := map[string]func(t *testing.T, b []byte){
		"circle": func(t *testing.T, b []byte) {
			if string(b) != `{"code":3,"message":"Forbidden"}` {
				t.Errorf("body %s", b)
			}
		},
		ProviderStripe: func(t *testing.T, b []byte) {
			var e struct {
				Error struct{ Type, Message string }
			}
			if json.Unmarshal(b, &e) != nil || e.Error.Type != "invalid_request_error" ||
				!strings.Contains(e.Error.Message, "IP address 127.0.0.1 is not allowed") {
				t.Errorf("body %s", b)
			}
		},
		ProviderCoindirect: func(t *testing.T, b []byte) {
			var e struct {
				ErrorList []map[string]any `json:"errorList"`
			}
			if json.Unmarshal(b, &e) != nil || len(e.ErrorList) != 1 || e.ErrorList[0]["code"] != "forbidden" ||
				paramText(e.ErrorList[0], "parameter") != "null" || stringOr(e.ErrorList[0]["message"]) == "" {
				t.Errorf("body %s", b)
			}
		},
	}
	for _, c := range lateCases {
		t.Run(c.provider, func(t *testing.T) {
			h := newHarness(t, Config{Seed: 61, History: 3, Providers: []string{c.provider},
				Quirks: map[string]Quirks{c.provider: {Forbidden: true}}})
			check := bodies[c.provider]
			if check == nil {
				check = bodies["circle"]
			}
			id := h.ids(c.provider)[0]
			for _, target := range []string{c.list, c.get(id)} {
				for _, r := range []response{authGet(h, c.provider, target), h.get(target, "")} {
					if r.code != http.StatusForbidden {
						t.Fatalf("GET %s: %d %s", target, r.code, r.body)
					}
					check(t, r.body)
				}
			}
			if err := h.sim.SetQuirks(c.provider, Quirks{}); err != nil {
				t.Fatal(err)
			}
			if r := authGet(h, c.provider, c.list); r.code != 200 {
				t.Fatalf("after clearing: %d %s", r.code, r.body)
			}
		})
	}
}

// tsMAC is Hawk's timestamp mac, computed here from the specification:
// base64(HMAC-SHA256(key, "hawk.1.ts\n" + ts + "\n")).
func tsMAC(key, ts string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte("hawk.1.ts\n" + ts + "\n"))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

func TestQuirkClockOffsetMovesDateAndTheHawkCheck(t *testing.T) {
	const offset = -10 * time.Minute
	provClock := testStart.Add(offset)
	for _, c := range lateCases {
		t.Run(c.provider, func(t *testing.T) {
			h := newHarness(t, Config{Seed: 62, History: 3, Providers: []string{c.provider}})
			if r := authGet(h, c.provider, c.list); r.code != 200 || r.header.Get("Date") == provClock.Format(http.TimeFormat) {
				t.Fatalf("without the quirk: %d, Date %s", r.code, r.header.Get("Date"))
			}
			if err := h.sim.SetQuirks(c.provider, Quirks{ClockOffset: offset}); err != nil {
				t.Fatal(err)
			}
			target, auth := providerRequest(h, c.provider)
			if c.provider == ProviderCoindirect {
				auth = h.hawkAt(target, provClock.Unix(), "offset-ok")
			}
			r := h.get(target, auth)
			if r.code != 200 || r.header.Get("Date") != provClock.Format(http.TimeFormat) {
				t.Fatalf("with the quirk: %d, Date %q, want %q", r.code, r.header.Get("Date"), provClock.Format(http.TimeFormat))
			}
		})
	}
	t.Run("hawk stale answer", func(t *testing.T) {
		h := newHarness(t, Config{Seed: 63, History: 3, Providers: []string{ProviderCoindirect},
			Quirks: map[string]Quirks{ProviderCoindirect: {ClockOffset: offset}}})
		r := h.get(cdList, h.hawkAt(cdList, testStart.Unix(), "sim-clock"))
		ts := strconv.FormatInt(provClock.Unix(), 10)
		want := `Hawk ts="` + ts + `", tsm="` + tsMAC(DefaultCoindirectHawkKey, ts) + `", error="Stale timestamp"`
		if r.code != 401 || r.header.Get("WWW-Authenticate") != want {
			t.Fatalf("signed at the simulated clock: %d, WWW-Authenticate %q; want %q", r.code, r.header.Get("WWW-Authenticate"), want)
		}
		if r.header.Get("Date") != provClock.Format(http.TimeFormat) {
			t.Errorf("stale answer Date %q", r.header.Get("Date"))
		}
		// Within HawkSkew of the provider's clock is accepted.
		if r := h.get(cdList, h.hawkAt(cdList, provClock.Unix()+50, "near-offset")); r.code != 200 {
			t.Fatalf("signed near the provider's clock: %d %s", r.code, r.body)
		}
	})
}

// hawkAt is a Coindirect Authorization header for a GET of target (mac over the path
// with its query) signed with timestamp ts and nonce.
func (h *harness) hawkAt(target string, ts int64, nonce string) string {
	u, err := url.Parse(h.srv.URL)
	if err != nil {
		h.t.Fatal(err)
	}
	host, port, _ := strings.Cut(u.Host, ":")
	return hawkHeader(DefaultCoindirectHawkID, DefaultCoindirectHawkKey, strconv.FormatInt(ts, 10), nonce, "GET", target, host, port)
}

func TestQuirksJSON(t *testing.T) {
	in := `{"oldest_first":true,"ignore_date_filter":true,"page_cap":3,"link_origin":"https://api.circle.com",` +
		`"unknown_statuses":true,"refuse_stripe_version":"*","forbidden":true,"clock_offset":"-1m30s"}`
	var q Quirks
	if err := json.Unmarshal([]byte(in), &q); err != nil {
		t.Fatal(err)
	}
	want := Quirks{OldestFirst: true, IgnoreDateFilter: true, PageCap: 3, LinkOrigin: "https://api.circle.com",
		UnknownStatuses: true, RefuseStripeVersion: "*", Forbidden: true, ClockOffset: -90 * time.Second}
	if q != want {
		t.Fatalf("decoded %+v", q)
	}
	if out, err := json.Marshal(q); err != nil || string(out) != in {
		t.Fatalf("encoded %s, %v", out, err)
	}
	for _, bad := range []string{`{"oldest_frist":true}`, `{"clock_offset":"soon"}`, `{"page_cap":"3"}`} {
		if err := json.Unmarshal([]byte(bad), &q); err == nil {
			t.Errorf("%s decoded", bad)
		}
	}
}

func TestQuirksValidation(t *testing.T) {
	for _, c := range []struct {
		quirks map[string]Quirks
		want   []string
	}{
		{map[string]Quirks{"paypal": {}}, []string{`quirks: unknown provider "paypal"`}},
		{map[string]Quirks{ProviderCPN: {PageCap: -2}}, []string{"quirks[circle_cpn_payments]: page_cap: -2 is negative"}},
		{map[string]Quirks{ProviderStripe: {LinkOrigin: "https://api.circle.com"}},
			[]string{`quirks[stripe_crypto_onramp_sessions]: link_origin: "https://api.circle.com" applies only to`}},
		{map[string]Quirks{ProviderCPN: {LinkOrigin: "ftp://api.circle.com"}}, []string{`link_origin: "ftp://api.circle.com" is not an http`}},
		{map[string]Quirks{ProviderCPN: {LinkOrigin: "https://api.circle.com/v1"}}, []string{`link_origin: "https://api.circle.com/v1" is not an origin`}},
		{map[string]Quirks{ProviderCPN: {UnknownStatuses: true}}, []string{"quirks[circle_cpn_payments]: unknown_statuses: true applies only to circle_ramp_sessions"}},
		{map[string]Quirks{ProviderCoindirect: {RefuseStripeVersion: "2024-06-20"}},
			[]string{`quirks[coindirect_payments]: refuse_stripe_version: "2024-06-20" applies only to stripe_crypto_onramp_sessions`}},
	} {
		_, err := New(Config{Quirks: c.quirks})
		for _, w := range c.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("New(%v): %v; want %q", c.quirks, err, w)
			}
		}
	}
	s, err := New(Config{Providers: []string{ProviderCPN}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetQuirks(ProviderStripe, Quirks{}); err == nil {
		t.Error("SetQuirks of a provider not simulated succeeded")
	}
	if err := s.SetQuirks(ProviderCPN, Quirks{PageCap: -1}); err == nil || !strings.Contains(err.Error(), "page_cap: -1") {
		t.Errorf("SetQuirks page_cap -1: %v", err)
	}
	if got := s.Quirks(ProviderCPN); got != (Quirks{}) {
		t.Errorf("a refused SetQuirks changed the quirks to %+v", got)
	}
	if got := s.Quirks(ProviderStripe); got != (Quirks{}) {
		t.Errorf("Quirks of a provider not simulated: %+v", got)
	}
}

func TestAdminQuirksRoundTrip(t *testing.T) {
	h := newHarness(t, Config{Seed: 64, History: 3})
	path := "/_sim/quirks/" + ProviderCPN
	r := h.get(path, "")
	if r.code != 200 || string(r.body) != `{"oldest_first":false,"ignore_date_filter":false,"page_cap":0,"link_origin":"",`+
		`"unknown_statuses":false,"refuse_stripe_version":"","forbidden":false,"clock_offset":"0s"}` {
		t.Fatalf("GET default: %d %s", r.code, r.body)
	}
	set := `{"oldest_first":true,"page_cap":2,"link_origin":"https://api.circle.com","clock_offset":"2m"}`
	if r := post(h, path, set); r.code != 200 {
		t.Fatalf("POST: %d %s", r.code, r.body)
	}
	want := Quirks{OldestFirst: true, PageCap: 2, LinkOrigin: "https://api.circle.com", ClockOffset: 2 * time.Minute}
	if got := h.sim.Quirks(ProviderCPN); got != want {
		t.Fatalf("Quirks after POST: %+v", got)
	}
	var got Quirks
	h.get(path, "").json(t, &got)
	if got != want {
		t.Fatalf("GET after POST: %+v", got)
	}
	if p, _ := circleCases[0].page(h, "/v1/cpn/payments"); len(p.Data) != 2 {
		t.Fatalf("page_cap set over the admin API: page of %d", len(p.Data))
	}
	for _, bad := range []struct {
		path, body string
		code       int
		msg        string
	}{
		{path, `{"oldest_first":true,"sorted":"asc"}`, 400, `unknown field \"sorted\"`},
		{path, `{"clock_offset":"later"}`, 400, `clock_offset: \"later\" is not a duration`},
		{path, `{"page_cap":-1}`, 400, "page_cap: -1 is negative"},
		{"/_sim/quirks/" + ProviderStripe, `{"link_origin":"https://api.circle.com"}`, 400, "link_origin"},
		{"/_sim/quirks/paypal", `{}`, 404, "paypal"},
	} {
		r := post(h, bad.path, bad.body)
		if r.code != bad.code || !strings.Contains(string(r.body), bad.msg) {
			t.Errorf("POST %s %s: %d %s; want %d with %s", bad.path, bad.body, r.code, r.body, bad.code, bad.msg)
		}
	}
	if got := h.sim.Quirks(ProviderCPN); got != want {
		t.Fatalf("refused POSTs changed the quirks to %+v", got)
	}
	if r := post(h, path, `{}`); r.code != 200 || h.sim.Quirks(ProviderCPN) != (Quirks{}) {
		t.Fatalf("POST {}: %d %s, quirks %+v", r.code, r.body, h.sim.Quirks(ProviderCPN))
	}
}

// Quirks that change how lists and requests are answered leave the truth as it is.
func TestServingQuirksLeaveTheTruthAlone(t *testing.T) {
	cfg := scenario(65)
	cfg.History = 100
	plain := runScenario(t, cfg, 10*time.Minute, time.Second)
	cfg.Quirks = map[string]Quirks{}
	for _, id := range ProviderIDs() {
		q := Quirks{OldestFirst: true, IgnoreDateFilter: true, PageCap: 2, Forbidden: true, ClockOffset: time.Hour}
		switch id {
		case ProviderStripe:
			q.RefuseStripeVersion = "*"
		case ProviderCoindirect:
		default:
			q.LinkOrigin = "https://api.circle.com"
		}
		cfg.Quirks[id] = q
	}
	if quirky := runScenario(t, cfg, 10*time.Minute, time.Second); !reflect.DeepEqual(plain, quirky) {
		t.Fatalf("the truth differs under serving quirks: %d vs %d transitions", len(plain), len(quirky))
	}
}
