package sim

import (
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"
)

type circleCase struct {
	provider, path, key string
	def, max            int
	layout              string
}

var circleCases = []circleCase{
	{ProviderCPN, "/v1/cpn/payments", DefaultCircleCPNKey, 50, 200, circleSeconds},
	{ProviderRamp, "/v1/w3s/ramp/sessions", DefaultCircleRampKey, 10, 50, circleSeconds},
	{ProviderSettlements, "/v1/exchange/trades/settlements", DefaultCircleSettlementsKey, 50, 200, circleMillis},
}

type circleItem struct {
	ID            string `json:"id"`
	CreateDate    string `json:"createDate"`
	Status        string `json:"status"`
	CustomerRefID string `json:"customerRefId"`
}

type circlePage struct {
	Data []circleItem `json:"data"`
}

func (c circleCase) page(h *harness, target string) (circlePage, map[string]string) {
	h.t.Helper()
	r := h.get(target, bearer(c.key))
	if r.code != http.StatusOK {
		h.t.Fatalf("GET %s: %d %s", target, r.code, r.body)
	}
	if _, ok := parseUUID(r.header.Get("X-Request-Id")); !ok {
		h.t.Fatalf("X-Request-Id %q is not a UUID", r.header.Get("X-Request-Id"))
	}
	var p circlePage
	r.json(h.t, &p)
	return p, linkRels(h.t, r.header.Get("Link"))
}

func pageIDs(p circlePage) []string {
	ids := make([]string, len(p.Data))
	for i, it := range p.Data {
		ids[i] = it.ID
	}
	return ids
}

// walk follows rel (next or prev) from target until a page lacks it, calling between
// after each page; it returns the pages' ids in walk order.
func (c circleCase) walk(h *harness, target, rel string, between func()) [][]string {
	h.t.Helper()
	var pages [][]string
	for range 1000 {
		p, links := c.page(h, target)
		pages = append(pages, pageIDs(p))
		if _, ok := links["self"]; !ok {
			h.t.Fatalf("page %s has no self link", target)
		}
		if _, ok := links["first"]; !ok {
			h.t.Fatalf("page %s has no first link", target)
		}
		if between != nil {
			between()
		}
		next, ok := links[rel]
		if !ok {
			return pages
		}
		target = next
	}
	h.t.Fatal("walk did not end in 1000 pages")
	return nil
}

func TestCircleWalkYieldsEveryItemOnceNewestFirst(t *testing.T) {
	for _, c := range circleCases {
		t.Run(c.provider, func(t *testing.T) {
			h := newHarness(t, Config{Seed: 2, History: 137, HistorySpan: 6 * time.Hour, OpenShare: 0.2, Providers: []string{c.provider}})
			want := h.ids(c.provider)
			pages := c.walk(h, c.path+"?pageSize=10", "next", nil)
			if len(pages) != 14 {
				t.Fatalf("%d pages of 10 for 137 items", len(pages))
			}
			got := slices.Concat(pages...)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("walk yielded %d ids, not the %d items newest first", len(got), len(want))
			}
			for i := 1; i < len(got); i++ {
				if h.created(c.provider, got[i]) > h.created(c.provider, got[i-1]) {
					t.Fatalf("item %d is newer than item %d", i, i-1)
				}
			}

			// Link relations: no prev on the first page, no next on the last one.
			p1, first := c.page(h, c.path+"?pageSize=10")
			if _, ok := first["prev"]; ok {
				t.Error("first page links prev")
			}
			u, err := url.Parse(first["next"])
			if err != nil {
				t.Fatal(err)
			}
			q := u.Query()
			if q.Get("pageAfter") != p1.Data[9].ID || q.Get("pageSize") != "10" || q.Get("to") == "" {
				t.Errorf("next link %s: want pageAfter=<last id>, pageSize=10 and a pinned to", first["next"])
			}
			_, middle := c.page(h, first["next"])
			if middle["prev"] == "" || middle["next"] == "" {
				t.Errorf("second page links %v, want next and prev", middle)
			}
			last, lastLinks := c.page(h, c.path+"?pageSize=10&pageAfter="+want[len(want)-8])
			if len(last.Data) != 7 {
				t.Fatalf("last page has %d items", len(last.Data))
			}
			if _, ok := lastLinks["next"]; ok {
				t.Error("last page links next")
			}

			// Walking back with prev from the last page gives the same pages, reversed.
			back := c.walk(h, c.path+"?pageSize=10&pageAfter="+pages[12][9], "prev", nil)
			slices.Reverse(back)
			if !reflect.DeepEqual(back, pages) {
				t.Fatalf("prev walk from the last page gave %v, want %v", back, pages)
			}
		})
	}
}

func TestCircleWalkWithInsertsSkipsAndRepeatsNothing(t *testing.T) {
	for _, c := range circleCases {
		t.Run(c.provider, func(t *testing.T) {
			h := newHarness(t, Config{Seed: 4, Rate: 20, History: 100, HistorySpan: time.Hour, OpenShare: 0.5, FailureRate: 0.2,
				Providers: []string{c.provider}})
			want := h.ids(c.provider)
			got := slices.Concat(c.walk(h, c.path+"?pageSize=7", "next", func() { h.advance(2 * time.Second) })...)
			if n := len(h.ids(c.provider)); n < len(want)+200 {
				t.Fatalf("only %d items were created during the walk", n-len(want))
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("walk with inserts yielded %d ids, want exactly the %d that existed at its start", len(got), len(want))
			}
		})
	}
}

func TestCircleFromToAreInclusiveOnCreateDate(t *testing.T) {
	for _, c := range circleCases {
		t.Run(c.provider, func(t *testing.T) {
			h := newHarness(t, Config{Seed: 5, History: 300, HistorySpan: 10 * time.Minute, Providers: []string{c.provider}})
			ids := h.ids(c.provider)
			x := ids[150]
			at := h.created(c.provider, x)
			var same []string
			for _, id := range ids {
				if h.created(c.provider, id) == at {
					same = append(same, id)
				}
			}
			stamp := url.QueryEscape(circleTime(c.layout, at))
			p, _ := c.page(h, c.path+"?pageSize=200&from="+stamp+"&to="+stamp)
			if !reflect.DeepEqual(pageIDs(p), same) {
				t.Fatalf("from=to=%s gave %v, want %v", stamp, pageIDs(p), same)
			}
			ms := func(v int64) string { return url.QueryEscape(circleTime(circleMillis, v)) }
			p, _ = c.page(h, c.path+"?pageSize=200&from="+ms(at+1))
			if slices.Contains(pageIDs(p), x) {
				t.Error("from one millisecond after the item's createDate includes it")
			}
			p, _ = c.page(h, c.path+"?pageSize=200&to="+ms(at-1))
			if slices.Contains(pageIDs(p), x) {
				t.Error("to one millisecond before the item's createDate includes it")
			}
			for _, it := range p.Data {
				ts, err := time.Parse(time.RFC3339Nano, it.CreateDate)
				if err != nil || ts.UnixMilli() > at-1 {
					t.Fatalf("item %s createDate %s is after to", it.ID, it.CreateDate)
				}
			}
			// A window after every item is an empty page linking only first and self.
			p, links := c.page(h, c.path+"?from="+ms(testStart.Add(time.Hour).UnixMilli()))
			if len(p.Data) != 0 || len(links) != 2 {
				t.Errorf("future window: %d items, links %v", len(p.Data), links)
			}
		})
	}
}

func TestCirclePageSizeDefaultsAndSilentCap(t *testing.T) {
	for _, c := range circleCases {
		t.Run(c.provider, func(t *testing.T) {
			h := newHarness(t, Config{Seed: 6, History: 450, Providers: []string{c.provider}})
			p, _ := c.page(h, c.path)
			if len(p.Data) != c.def {
				t.Errorf("default page has %d items, want %d", len(p.Data), c.def)
			}
			p, links := c.page(h, c.path+"?pageSize=5000")
			if len(p.Data) != c.max {
				t.Errorf("pageSize=5000 gave %d items, want the cap %d", len(p.Data), c.max)
			}
			u, _ := url.Parse(links["next"])
			if got := u.Query().Get("pageSize"); got != strconv.Itoa(c.max) {
				t.Errorf("next link pins pageSize=%s, want %d", got, c.max)
			}
			p, _ = c.page(h, c.path+"?pageSize=3")
			if len(p.Data) != 3 {
				t.Errorf("pageSize=3 gave %d items", len(p.Data))
			}
		})
	}
}

func TestCircleBadParametersAre400(t *testing.T) {
	h := newHarness(t, Config{Seed: 7, History: 20})
	someID := h.ids(ProviderCPN)[3]
	unknown := "c4d1da72-111e-4d52-bdbf-2e74a2d803d5"
	for _, c := range []struct {
		cc       circleCase
		query    string
		location string
	}{
		{circleCases[0], "pageSize=0", "pageSize"},
		{circleCases[0], "pageSize=ten", "pageSize"},
		{circleCases[0], "from=yesterday", "from"},
		{circleCases[1], "to=2023-13-01T00:00:00Z", "to"},
		{circleCases[0], "pageAfter=" + unknown, "pageAfter"},
		{circleCases[0], "pageBefore=" + h.ids(ProviderRamp)[0], "pageBefore"},
		{circleCases[0], "pageAfter=" + someID + "&pageBefore=" + someID, "pageBefore"},
		{circleCases[0], "status=DONE", "status"},
		{circleCases[2], "status=SETTLED", "status"},
		{circleCases[2], "type=payable", "type"},
		{circleCases[2], "currency=USD", "currency"},
	} {
		r := h.get(c.cc.path+"?"+c.query, bearer(c.cc.key))
		var body circleError
		r.json(t, &body)
		if r.code != http.StatusBadRequest || body.Code != 2 || body.Message != "API parameter invalid" ||
			len(body.Errors) == 0 || body.Errors[0].Location != c.location {
			t.Errorf("%s?%s: %d %s", c.cc.path, c.query, r.code, r.body)
		}
	}
}

func TestCircleGetByID(t *testing.T) {
	h := newHarness(t, Config{Seed: 8, History: 20})
	for _, c := range circleCases {
		id := h.ids(c.provider)[4]
		r := h.get(c.path+"/"+id, bearer(c.key))
		var one struct {
			Data circleItem `json:"data"`
		}
		r.json(t, &one)
		if r.code != http.StatusOK || one.Data.ID != id {
			t.Errorf("%s/%s: %d %s", c.path, id, r.code, r.body)
		}
		r = h.get(c.path+"/c4d1da72-111e-4d52-bdbf-2e74a2d803d5", bearer(c.key))
		if r.code != http.StatusNotFound || string(r.body) != `{"code":404,"message":"Not found."}` {
			t.Errorf("unknown id: %d %s", r.code, r.body)
		}
		if _, ok := parseUUID(r.header.Get("X-Request-Id")); !ok {
			t.Errorf("404 without a UUID X-Request-Id")
		}
	}
}

func TestCircleBearerAuth(t *testing.T) {
	h := newHarness(t, Config{Seed: 9, History: 5, Credentials: Credentials{CircleCPNKey: "cpn-key-1"}})
	const unauthorized = `{"code":401,"message":"Malformed authorization."}`
	for _, c := range []struct {
		path, auth string
		code       int
	}{
		{"/v1/cpn/payments", "Bearer cpn-key-1", 200},
		{"/v1/cpn/payments", "bearer cpn-key-1", 200},
		{"/v1/cpn/payments", "", 401},
		{"/v1/cpn/payments", "Bearer cpn-key-2", 401},
		{"/v1/cpn/payments", basic("cpn-key-1"), 401},
		{"/v1/cpn/payments", "Bearer " + DefaultCircleCPNKey, 401},
		{"/v1/w3s/ramp/sessions", "Bearer " + DefaultCircleRampKey, 200},
		{"/v1/w3s/ramp/sessions", "Bearer TEST_API_KEY:sim-ramp", 401},
		{"/v1/w3s/ramp/sessions", "Bearer TEST_API_KEY:sim-ramp:wrong", 401},
		{"/v1/exchange/trades/settlements", "Bearer " + DefaultCircleSettlementsKey, 200},
		{"/v1/exchange/trades/settlements", "Bearer " + DefaultCircleCPNKey, 401},
	} {
		r := h.get(c.path, c.auth)
		if r.code != c.code || c.code == 401 && string(r.body) != unauthorized {
			t.Errorf("%s with %q: %d %s, want %d", c.path, c.auth, r.code, r.body, c.code)
		}
	}
}

func TestCircleFilters(t *testing.T) {
	h := newHarness(t, Config{Seed: 10, History: 400, OpenShare: 0.3, FailureRate: 0.3})
	cpn, ramp, sett := circleCases[0], circleCases[1], circleCases[2]

	p, _ := cpn.page(h, cpn.path+"?status=FAILED&pageSize=200")
	if len(p.Data) == 0 {
		t.Fatal("no FAILED payments")
	}
	h.sim.mu.RLock()
	wantFailed := 0
	for _, it := range h.sim.byID[ProviderCPN].st.items {
		if it.status == cpnFailed {
			wantFailed++
		}
	}
	h.sim.mu.RUnlock()
	if len(p.Data) != wantFailed {
		t.Errorf("status=FAILED gave %d payments, the store has %d", len(p.Data), wantFailed)
	}
	for _, it := range p.Data {
		if it.Status != "FAILED" {
			t.Fatalf("status=FAILED returned %s", it.Status)
		}
	}
	ref := p.Data[0].CustomerRefID
	p, _ = cpn.page(h, cpn.path+"?customerRefId="+ref)
	if len(p.Data) == 0 {
		t.Fatal("customerRefId filter found nothing")
	}
	for _, it := range p.Data {
		if it.CustomerRefID != ref {
			t.Fatalf("customerRefId=%s returned %s", ref, it.CustomerRefID)
		}
	}

	r := h.get(ramp.path+"?rampType=SELL&pageSize=50", bearer(ramp.key))
	var sells struct {
		Data []struct {
			RampType string `json:"rampType"`
		} `json:"data"`
	}
	r.json(t, &sells)
	if len(sells.Data) == 0 {
		t.Fatal("no SELL sessions")
	}
	for _, s := range sells.Data {
		if s.RampType != "SELL" {
			t.Fatalf("rampType=SELL returned %s", s.RampType)
		}
	}

	r = h.get(sett.path+"?currency=BRL&type=account_receivable", bearer(sett.key))
	var settlements struct {
		Data []settlement `json:"data"`
	}
	r.json(t, &settlements)
	if len(settlements.Data) == 0 {
		t.Fatal("no BRL settlements with a receivable detail")
	}
	for _, s := range settlements.Data {
		brl, receivable := false, false
		for _, d := range s.Details {
			brl = brl || d.Amount.Currency == "BRL"
			receivable = receivable || d.Type == "receivable"
		}
		if !brl || !receivable {
			t.Fatalf("settlement %s does not match currency=BRL&type=account_receivable", s.ID)
		}
	}
}
