package sim

import (
	"bytes"
	"encoding/json"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"
)

const cdList = "/api/v1/pay/summary?merchantId=" + DefaultCoindirectMerchantID

type cdItem struct {
	UUID        string `json:"uuid"`
	DateCreated int64  `json:"dateCreated"`
	Status      string `json:"status"`
}

func cdPage(h *harness, query string) []cdItem {
	h.t.Helper()
	r := h.coindirectGet(cdList + query)
	if r.code != http.StatusOK {
		h.t.Fatalf("list %s: %d %s", query, r.code, r.body)
	}
	if !bytes.HasPrefix(r.body, []byte("[")) {
		h.t.Fatalf("list body is not a bare array: %.40s", r.body)
	}
	var items []cdItem
	r.json(h.t, &items)
	return items
}

// cdWalk pages with offset += len(page) until a page is shorter than max.
func cdWalk(h *harness, size int, between func()) (ids []string, pages int) {
	h.t.Helper()
	offset := 0
	for range 1000 {
		page := cdPage(h, "&max="+strconv.Itoa(size)+"&offset="+strconv.Itoa(offset))
		pages++
		for _, it := range page {
			ids = append(ids, it.UUID)
		}
		if between != nil {
			between()
		}
		if len(page) < size {
			return ids, pages
		}
		offset += len(page)
	}
	h.t.Fatal("walk did not end in 1000 pages")
	return nil, 0
}

func TestCoindirectWalkYieldsEveryItemOnceNewestFirst(t *testing.T) {
	h := newHarness(t, Config{Seed: 21, History: 53, HistorySpan: time.Hour, Providers: []string{ProviderCoindirect}})
	want := h.ids(ProviderCoindirect)
	got, pages := cdWalk(h, 10, nil)
	if !reflect.DeepEqual(got, want) || pages != 6 {
		t.Fatalf("walk yielded %d ids in %d pages, want the %d payments newest first in 6", len(got), pages, len(want))
	}
	items := cdPage(h, "&max=100")
	for i := 1; i < len(items); i++ {
		if items[i].DateCreated > items[i-1].DateCreated {
			t.Fatalf("item %d is newer than item %d", i, i-1)
		}
	}
	if n := len(cdPage(h, "")); n != 10 {
		t.Errorf("default max gave %d", n)
	}
	// 50 items: the sixth page of 10 is empty.
	h2 := newHarness(t, Config{Seed: 21, History: 50, Providers: []string{ProviderCoindirect}})
	if _, pages := cdWalk(h2, 10, nil); pages != 6 {
		t.Errorf("50 items in pages of 10 took %d requests, want 6 (the last empty)", pages)
	}
}

func TestCoindirectOffsetDriftRepeatsButNeverSkips(t *testing.T) {
	h := newHarness(t, Config{Seed: 22, Rate: 5, History: 150, HistorySpan: time.Hour, OpenShare: 0.3, FailureRate: 0.2,
		Providers: []string{ProviderCoindirect}})
	want := h.ids(ProviderCoindirect)
	// About 5 new payments per page of 10: the walk still reaches the end.
	got, _ := cdWalk(h, 10, func() { h.advance(time.Second) })
	seen := map[string]int{}
	for _, id := range got {
		seen[id]++
	}
	for _, id := range want {
		if seen[id] == 0 {
			t.Fatalf("payment %s, which existed before the walk, was skipped", id)
		}
	}
	repeats := len(got) - len(seen)
	if repeats == 0 {
		t.Fatal("payments created during the walk shifted no page: offset paging should repeat items")
	}
	// Repeats aside, the walk meets the existing payments newest first.
	var firsts []string
	met := map[string]bool{}
	for _, id := range got {
		if !met[id] && slices.Contains(want, id) {
			firsts = append(firsts, id)
		}
		met[id] = true
	}
	if !reflect.DeepEqual(firsts, want) {
		t.Fatal("the walk met the existing payments out of order")
	}
}

func TestCoindirectDatesStatusAndQ(t *testing.T) {
	h := newHarness(t, Config{Seed: 23, History: 200, HistorySpan: 10 * time.Minute, OpenShare: 0.3, FailureRate: 0.3,
		Providers: []string{ProviderCoindirect}})
	ids := h.ids(ProviderCoindirect)
	x := ids[100]
	at := h.created(ProviderCoindirect, x)
	ms := strconv.FormatInt(at, 10)
	page := cdPage(h, "&max=1000&fromDate="+ms+"&toDate="+ms)
	if len(page) != 1 || page[0].UUID != x {
		t.Fatalf("fromDate=toDate=%s gave %v", ms, page)
	}
	page = cdPage(h, "&max=1000&toDate="+strconv.FormatInt(at-1, 10))
	if want := len(ids) - 101; len(page) != want {
		t.Errorf("toDate just before the 101st newest item gave %d items, want the %d older ones", len(page), want)
	}
	iso := time.UnixMilli(at).UTC().Format(time.RFC3339Nano)
	if page := cdPage(h, "&fromDate="+iso+"&toDate="+iso); len(page) != 1 {
		t.Errorf("RFC 3339 dates gave %d items", len(page))
	}
	day := testStart.Format("2006-01-02")
	if page := cdPage(h, "&max=1000&fromDate="+day+"&toDate="+day); len(page) != len(ids) {
		t.Errorf("the whole day gave %d of %d items", len(page), len(ids))
	}

	for _, st := range []string{"COMPLETE", "expired"} {
		page := cdPage(h, "&max=1000&status="+st)
		if len(page) == 0 {
			t.Fatalf("no %s payments", st)
		}
		for _, it := range page {
			if !strings.EqualFold(it.Status, st) {
				t.Fatalf("status=%s returned %s", st, it.Status)
			}
		}
	}

	var full []cdPayment
	h.coindirectGet(cdList+"&max=1000&status=COMPLETE").json(t, &full)
	p := full[3]
	for _, q := range []string{p.UUID, p.Reference, p.Address.Address, p.Transactions[0].Hash} {
		page := cdPage(h, "&q="+q)
		if len(page) != 1 || page[0].UUID != p.UUID {
			t.Errorf("q=%s gave %v", q, page)
		}
	}
}

func TestCoindirectAmountsAreExactJSONNumbers(t *testing.T) {
	h := newHarness(t, Config{Seed: 24, History: 300, OpenShare: 0.3, FailureRate: 0.3, Providers: []string{ProviderCoindirect}})
	r := h.coindirectGet(cdList + "&max=300")
	var raw []map[string]any
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		t.Fatal(err)
	}
	exponent, zeroScale18, longScale := false, false, false
	check := func(where string, v any) {
		n, ok := v.(json.Number)
		if !ok {
			t.Fatalf("%s is %T, want a JSON number", where, v)
		}
		if _, err := decimal.NewFromString(n.String()); err != nil {
			t.Fatalf("%s %s is not a decimal", where, n)
		}
		s := n.String()
		exponent = exponent || strings.Contains(s, "E+")
		zeroScale18 = zeroScale18 || s == "0E-18"
		longScale = longScale || len(s) > 20 && strings.Count(s, ".") == 1
	}
	for _, p := range raw {
		for _, m := range []string{"displayCurrency", "walletCurrency", "paidCurrency", "feeCurrency"} {
			obj := p[m].(map[string]any)
			check(m+".amount", obj["amount"])
			check(m+".actual", obj["actual"])
		}
		check("displayRate.rate", p["displayRate"].(map[string]any)["rate"])
		for _, tx := range p["transactions"].([]any) {
			txm := tx.(map[string]any)
			check("transactions[].amount", txm["amount"])
			if txm["dateConfirmed"] != nil {
				if _, ok := txm["dateConfirmed"].(json.Number); !ok {
					t.Fatalf("dateConfirmed %v", txm["dateConfirmed"])
				}
			}
		}
	}
	if !exponent || !zeroScale18 || !longScale {
		t.Errorf("amount forms seen: exponent %v, 0E-18 %v, 18-digit scale %v; want all", exponent, zeroScale18, longScale)
	}
}

func TestCoindirectParametersAndGet(t *testing.T) {
	h := newHarness(t, Config{Seed: 25, History: 5, Providers: []string{ProviderCoindirect}})
	for _, c := range []struct {
		target, param string
		code          int
	}{
		{"/api/v1/pay/summary", "merchantId", 400},
		{"/api/v1/pay/summary?merchantId=someone-else", "merchantId", 403},
		{cdList + "&max=0", "max", 400},
		{cdList + "&max=1001", "max", 400},
		{cdList + "&offset=-1", "offset", 400},
		{cdList + "&fromDate=last-week", "fromDate", 400},
	} {
		r := h.coindirectGet(c.target)
		var body struct {
			ErrorList []cdError `json:"errorList"`
		}
		r.json(t, &body)
		if r.code != c.code || len(body.ErrorList) != 1 || body.ErrorList[0].Parameter == nil || *body.ErrorList[0].Parameter != c.param {
			t.Errorf("%s: %d %s", c.target, r.code, r.body)
		}
	}
	id := h.ids(ProviderCoindirect)[2]
	r := h.coindirectGet("/api/v1/pay/" + id + "/summary")
	var one cdItem
	r.json(t, &one)
	if r.code != 200 || one.UUID != id {
		t.Errorf("summary: %d %s", r.code, r.body)
	}
	r = h.coindirectGet("/api/v1/pay/5c75bc40-c1b2-4f57-b96f-79882a6e7c4b/summary")
	if r.code != http.StatusNotFound || !bytes.Contains(r.body, []byte(`"errorList"`)) {
		t.Errorf("unknown uuid: %d %s", r.code, r.body)
	}
}

func TestCoindirectHawk(t *testing.T) {
	h := newHarness(t, Config{Seed: 26, History: 3, Providers: []string{ProviderCoindirect}})
	target := cdList + "&max=5"
	errorCode := func(r response) string {
		var body struct {
			ErrorList []cdError `json:"errorList"`
		}
		r.json(t, &body)
		if len(body.ErrorList) != 1 {
			t.Fatalf("body %s", r.body)
		}
		return body.ErrorList[0].Code
	}

	if r := h.get(target, h.hawk(target, true)); r.code != 200 {
		t.Errorf("mac over path and query: %d %s", r.code, r.body)
	}
	if r := h.get(target, h.hawk(target, false)); r.code != 200 {
		t.Errorf("mac over the path alone: %d %s", r.code, r.body)
	}
	auth := h.hawk(target, true)
	if r := h.get(target, auth); r.code != 200 {
		t.Fatalf("fresh nonce: %d", r.code)
	}
	if r := h.get(target, auth); r.code != http.StatusTooManyRequests || errorCode(r) != "nonceAlreadyUsed" {
		t.Errorf("replayed nonce: %d %s", r.code, r.body)
	}
	if r := h.get(target, ""); r.code != 401 || errorCode(r) != "unauthorized" {
		t.Errorf("no header: %d %s", r.code, r.body)
	}
	if r := h.get(target, strings.Replace(h.hawk(target, true), `mac="`, `mac="A`, 1)); r.code != 401 {
		t.Errorf("bad mac: %d", r.code)
	}
	u := strings.TrimPrefix(h.srv.URL, "http://")
	host, port, _ := strings.Cut(u, ":")
	ts := strconv.FormatInt(testStart.Unix(), 10)
	if r := h.get(target, hawkHeader("someone", DefaultCoindirectHawkKey, ts, "x1", "GET", target, host, port)); r.code != 401 {
		t.Errorf("unknown id: %d", r.code)
	}
	if r := h.get(target, hawkHeader(DefaultCoindirectHawkID, "wrong-key", ts, "x2", "GET", target, host, port)); r.code != 401 {
		t.Errorf("wrong key: %d", r.code)
	}
	if r := h.get(target, hawkHeader(DefaultCoindirectHawkID, DefaultCoindirectHawkKey, ts, "x3", "GET", target, host, "443")); r.code != 401 {
		t.Errorf("signed for port 443 on a port-%s request: %d", port, r.code)
	}
	// ±60s of the simulated clock.
	for _, skew := range []time.Duration{59 * time.Second, -59 * time.Second} {
		ts := strconv.FormatInt(testStart.Add(skew).Unix(), 10)
		if r := h.get(target, hawkHeader(DefaultCoindirectHawkID, DefaultCoindirectHawkKey, ts, "s"+ts, "GET", target, host, port)); r.code != 200 {
			t.Errorf("ts %v off: %d", skew, r.code)
		}
	}
	stale := strconv.FormatInt(testStart.Add(-2*time.Minute).Unix(), 10)
	r := h.get(target, hawkHeader(DefaultCoindirectHawkID, DefaultCoindirectHawkKey, stale, "stale", "GET", target, host, port))
	www := r.header.Get("WWW-Authenticate")
	nowTS := strconv.FormatInt(testStart.Unix(), 10)
	if r.code != 401 || !strings.Contains(www, `ts="`+nowTS+`"`) ||
		!strings.Contains(www, `tsm="`+hawkTimestampMAC(DefaultCoindirectHawkKey, nowTS)+`"`) {
		t.Errorf("stale ts: %d, WWW-Authenticate %q", r.code, www)
	}
	// A stale request does not use up its nonce.
	h.clock.Set(testStart.Add(-2 * time.Minute))
	if r := h.get(target, hawkHeader(DefaultCoindirectHawkID, DefaultCoindirectHawkKey, stale, "stale", "GET", target, host, port)); r.code != 200 {
		t.Errorf("nonce of a refused stale request: %d", r.code)
	}
}

func TestCoindirectHawkQueryModes(t *testing.T) {
	target := cdList + "&max=1"
	for _, c := range []struct {
		mode          HawkQueryMode
		with, without int
	}{
		{HawkQueryEither, 200, 200},
		{HawkQueryIncluded, 200, 401},
		{HawkQueryExcluded, 401, 200},
	} {
		h := newHarness(t, Config{Seed: 27, History: 2, Providers: []string{ProviderCoindirect}, HawkQuery: c.mode})
		if r := h.get(target, h.hawk(target, true)); r.code != c.with {
			t.Errorf("mode %d, mac with query: %d, want %d", c.mode, r.code, c.with)
		}
		if r := h.get(target, h.hawk(target, false)); r.code != c.without {
			t.Errorf("mode %d, mac without query: %d, want %d", c.mode, r.code, c.without)
		}
	}
}

// A Host header without a port is signed with 80, or 443 when the request came over
// TLS or through a proxy that says so.
func TestCoindirectHawkDefaultPort(t *testing.T) {
	h := newHarness(t, Config{Seed: 28, History: 2, Providers: []string{ProviderCoindirect}})
	target := cdList
	ts := strconv.FormatInt(testStart.Unix(), 10)
	for i, c := range []struct {
		port, proto string
		code        int
	}{
		{"80", "", 200},
		{"443", "", 401},
		{"443", "https", 200},
		{"80", "https", 401},
	} {
		req, _ := http.NewRequest(http.MethodGet, h.srv.URL+target, nil)
		req.Host = "api.sandbox.coindirect.com"
		if c.proto != "" {
			req.Header.Set("X-Forwarded-Proto", c.proto)
		}
		req.Header.Set("Authorization", hawkHeader(DefaultCoindirectHawkID, DefaultCoindirectHawkKey, ts, "p"+strconv.Itoa(i),
			"GET", target, "api.sandbox.coindirect.com", c.port))
		resp, err := h.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("signed for port %s, X-Forwarded-Proto %q: %d, want %d", c.port, c.proto, resp.StatusCode, c.code)
		}
	}
}
