package coindirect

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/poller/provider"
)

// fakeTime is the fake's clock in the clock-skew tests: whole seconds, so that the
// offset the source measures is exact.
var fakeTime = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

// skewedSource builds a source on f whose clock is offset from the fake's fixed clock:
// offset > 0 puts the host ahead of the provider.
func skewedSource(t *testing.T, f *coindirectFake, offset time.Duration, signQuery bool) *paymentsSource {
	t.Helper()
	f.configure(func(f *coindirectFake) { f.now = func() time.Time { return fakeTime } })
	src := newTestSource(t, startFake(t, f), 10, signQuery)
	src.now = func() time.Time { return fakeTime.Add(offset) }
	return src
}

// anomalies drains src's anomalies and checks that none shows a Hawk credential.
func anomalies(t *testing.T, src *paymentsSource) []provider.Anomaly {
	t.Helper()
	as := src.Anomalies()
	for _, a := range as {
		if strings.Contains(a.Detail, testKey) || strings.Contains(a.Detail, fakeHawkID) {
			t.Errorf("anomaly shows a Hawk credential: %s", a.Detail)
		}
	}
	if again := src.Anomalies(); len(again) != 0 {
		t.Errorf("Anomalies did not forget what it returned: %+v", again)
	}
	return as
}

// TestStaleTimestamp: the fake refuses a timestamp out of its window with its own
// time; the source checks the tsm, keeps the offset for later requests, signs the
// request again with the fake's time and reports the skew once.
func TestStaleTimestamp(t *testing.T) {
	for _, tc := range []struct {
		name   string
		host   time.Duration // host clock minus the provider's
		detail string
	}{
		{"provider ahead", -93 * time.Second, "clock skew: provider time is 93s ahead of this host; requests are signed with the provider's time; fix the host's clock (NTP)"},
		{"provider behind", 2 * time.Hour, "clock skew: provider time is 7200s behind this host; requests are signed with the provider's time; fix the host's clock (NTP)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(testKey, true)
			ids := fill(f, 2)
			src := skewedSource(t, f, tc.host, true)
			p, err := src.Page(t.Context(), provider.Request{})
			if err != nil || len(p.Items) != 2 {
				t.Fatalf("Page = %d items, %v; want both payments", len(p.Items), err)
			}
			auths := f.authorizations()
			if len(auths) != 2 {
				t.Fatalf("%d requests, want the refused one and one retry", len(auths))
			}
			first, retry := hawkHeaderRE.FindStringSubmatch(auths[0]), hawkHeaderRE.FindStringSubmatch(auths[1])
			if first == nil || retry == nil || retry[2] != "1795341600" || retry[3] == first[3] {
				t.Errorf("retry %q after %q: want the fake's time 1795341600 and a fresh nonce", auths[1], auths[0])
			}
			if got := src.clockOffset; got != -tc.host {
				t.Errorf("clock offset %v, want %v", got, -tc.host)
			}
			as := anomalies(t, src)
			if len(as) != 1 || as[0].Kind != provider.AnomalyClockSkew || as[0].Detail != tc.detail {
				t.Errorf("anomalies %+v, want one %s: %q", as, provider.AnomalyClockSkew, tc.detail)
			}

			// Later requests of the source are signed with the provider's time at once.
			if _, err := src.Get(t.Context(), ids[0]); err != nil {
				t.Fatalf("Get: %v", err)
			}
			if n := f.requestCount(); n != 3 {
				t.Errorf("%d requests in all, want 3 (one for Get)", n)
			}
			if as := anomalies(t, src); len(as) != 0 {
				t.Errorf("anomalies after a request that was not refused: %+v", as)
			}
		})
	}
}

// TestStaleTimestampUnverifiedTSM: a provider time whose tsm does not verify with the
// key is ignored: no retry, no offset and no signing switch (the refusal was about the
// timestamp, not the mac), and the error says clock skew.
func TestStaleTimestampUnverifiedTSM(t *testing.T) {
	f := newFake(testKey, true)
	fill(f, 1)
	f.tsmKey = "not-the-key"
	src := skewedSource(t, f, -5*time.Minute, true)
	_, err := src.Page(t.Context(), provider.Request{})
	checkCode(t, err, http.StatusUnauthorized)
	var ce *provider.CauseError
	if !errors.As(err, &ce) || ce.Cause != provider.AnomalyClockSkew || !strings.HasPrefix(err.Error(),
		"clock skew: the provider refused the request's timestamp as stale and sent no time that verifies with hawk_key; check the host's clock (NTP): GET ") {
		t.Errorf("err = %v, want a clock skew CauseError", err)
	}
	noCredentials(t, err)
	if n := f.requestCount(); n != 1 || src.clockOffset != 0 || !src.signQuery {
		t.Errorf("%d requests, offset %v, sign_query %v; want 1, 0, true", n, src.clockOffset, src.signQuery)
	}
	if as := anomalies(t, src); len(as) != 0 {
		t.Errorf("anomalies %+v, want none", as)
	}
}

// TestStaleTimestampStillRefused: when the request signed with the provider's time is
// refused as well, the error says clock skew with the offset, not bad credentials.
func TestStaleTimestampStillRefused(t *testing.T) {
	f := newFake(testKey, true)
	fill(f, 1)
	f.fail = func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("WWW-Authenticate", f.staleHeader())
		writeCDErrorEntry(w, http.StatusUnauthorized, "Authorization", "Stale timestamp", "unauthorized")
		return true
	}
	src := skewedSource(t, f, -93*time.Second, true)
	_, err := src.Page(t.Context(), provider.Request{})
	var ce *provider.CauseError
	if !errors.As(err, &ce) || ce.Cause != provider.AnomalyClockSkew {
		t.Fatalf("err = %v, want a CauseError %q", err, provider.AnomalyClockSkew)
	}
	want := "clock skew: provider time is 93s ahead of this host and the request signed with the provider's time was refused too; fix the host's clock (NTP), then check hawk_id and hawk_key"
	if ce.Advice != want || !strings.HasPrefix(err.Error(), want+": GET ") {
		t.Errorf("err = %v\nwant advice %q", err, want)
	}
	checkCode(t, err, http.StatusUnauthorized)
	if n := f.requestCount(); n != 2 {
		t.Errorf("%d requests, want 2", n)
	}
	noCredentials(t, err)
}

// TestSignQueryFallback: a 401 for a request with a query string is retried once
// signed the other way; when that is accepted the source keeps it and reports the
// signing once, naming the sign_query value that works.
func TestSignQueryFallback(t *testing.T) {
	for _, tc := range []struct {
		fakeSigns bool
		detail    string
	}{
		{false, "sign_query: the provider refused the Hawk mac with sign_query true and accepted it with false; requests are now signed that way; set sign_query: false to skip the failed first try"},
		{true, "sign_query: the provider refused the Hawk mac with sign_query false and accepted it with true; requests are now signed that way; set sign_query: true to skip the failed first try"},
	} {
		t.Run("provider signs query "+map[bool]string{true: "yes", false: "no"}[tc.fakeSigns], func(t *testing.T) {
			f := newFake(testKey, tc.fakeSigns)
			ids := fill(f, 5)
			src := newTestSource(t, startFake(t, f), 2, !tc.fakeSigns)
			got, _ := walkIDs(t, src, time.Time{})
			if len(got) != len(ids) {
				t.Fatalf("walk = %v, want %v", got, ids)
			}
			// One refused first try, then the working signing for every page.
			if n, pages := f.requestCount(), len(f.listRequests()); n != pages+1 {
				t.Errorf("%d requests for %d pages, want one more", n, pages)
			}
			if src.signQuery != tc.fakeSigns {
				t.Errorf("sign_query is %v after the fallback, want %v", src.signQuery, tc.fakeSigns)
			}
			as := anomalies(t, src)
			if len(as) != 1 || as[0].Kind != provider.AnomalySigning || as[0].Detail != tc.detail {
				t.Errorf("anomalies %+v, want one %s: %q", as, provider.AnomalySigning, tc.detail)
			}
		})
	}
}

// TestSignQueryFallbackOtherRefusal: any answer but a 401 to the other signing means
// the provider accepted the mac: the source keeps that signing and returns the answer.
func TestSignQueryFallbackOtherRefusal(t *testing.T) {
	f := newFake(testKey, false)
	fill(f, 1)
	f.merchantID = "someone-else"
	src := newTestSource(t, startFake(t, f), 2, true)
	_, err := src.Page(t.Context(), provider.Request{})
	checkCode(t, err, http.StatusForbidden)
	if src.signQuery || len(anomalies(t, src)) != 1 || f.requestCount() != 2 {
		t.Errorf("sign_query %v after %d requests; want false after 2, and the signing reported", src.signQuery, f.requestCount())
	}
}

// TestBothSigningsRefused: wrong credentials are refused under both signings; the
// error says so and names the credential settings. A request without a query string
// (a read by id) has no other signing and gets the provider's 401 alone.
func TestBothSigningsRefused(t *testing.T) {
	f := newFake("not-"+testKey, true)
	fill(f, 1)
	src := newTestSource(t, startFake(t, f), 2, true)
	_, err := src.Page(t.Context(), provider.Request{})
	var ce *provider.CauseError
	if !errors.As(err, &ce) || ce.Cause != provider.CauseUnauthorized ||
		ce.Advice != "coindirect refused the Hawk credentials under both signings (sign_query true and false): check hawk_id and hawk_key" {
		t.Fatalf("err = %v, want a CauseError %q about both signings", err, provider.CauseUnauthorized)
	}
	checkCode(t, err, http.StatusUnauthorized)
	if f.requestCount() != 2 || !src.signQuery || len(anomalies(t, src)) != 0 {
		t.Errorf("%d requests, sign_query %v; want 2 and the configured signing kept", f.requestCount(), src.signQuery)
	}
	noCredentials(t, err)

	_, err = src.Get(t.Context(), fakeUUID(0))
	checkCode(t, err, http.StatusUnauthorized)
	if errors.As(err, &ce) || f.requestCount() != 3 {
		t.Errorf("Get: %v after %d requests; want the plain 401 after one more", err, f.requestCount())
	}
}

func TestStaleTimestampHeader(t *testing.T) {
	const key = "werxhqb98rpaxn39848xrunpaw3489ruxnpa98w4rxn"
	tsm := hawkTSM("1365741469", key)
	for _, tc := range []struct {
		name      string
		values    []string
		stale, ok bool
	}{
		{"none", nil, false, false},
		{"another scheme", []string{`Bearer error="invalid_token"`}, false, false},
		{"hawk without ts", []string{`Hawk error="Bad mac"`}, false, false},
		{"verified", []string{`Hawk ts="1365741469", tsm="` + tsm + `", error="Stale timestamp"`}, true, true},
		{"verified among others", []string{`Basic realm="x"`, `hawk ts="1365741469",tsm="` + tsm + `"`}, true, true},
		{"wrong tsm", []string{`Hawk ts="1365741469", tsm="` + hawkTSM("1365741469", "other") + `", error="Stale timestamp"`}, true, false},
		{"tsm of another ts", []string{`Hawk ts="1365741470", tsm="` + tsm + `", error="Stale timestamp"`}, true, false},
		{"no tsm", []string{`Hawk ts="1365741469", error="Stale timestamp"`}, true, false},
		{"stale without time", []string{`Hawk error="Stale timestamp"`}, true, false},
		{"ts not seconds", []string{`Hawk ts="1365741469000000000000", tsm="x", error="Stale timestamp"`}, true, false},
		{"ts negative", []string{`Hawk ts="-5", tsm="x"`}, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tc.values {
				h.Add("WWW-Authenticate", v)
			}
			server, stale, ok := staleTimestamp(h, key)
			if stale != tc.stale || ok != tc.ok {
				t.Fatalf("stale %v, ok %v; want %v, %v", stale, ok, tc.stale, tc.ok)
			}
			if ok && !server.Equal(time.Unix(1365741469, 0)) {
				t.Errorf("server time %v", server)
			}
		})
	}
}

// TestSkewAndOtherSigningTogether: a host whose clock is off, configured with the
// signing the provider refuses, meets both refusals: the bad mac first, then, signed
// the other way, the stale timestamp. The source switches signing, adopts the
// provider's time and reads the page, reporting both.
func TestSkewAndOtherSigningTogether(t *testing.T) {
	f := newFake(testKey, false)
	fill(f, 2)
	src := skewedSource(t, f, 10*time.Minute, true)
	p, err := src.Page(t.Context(), provider.Request{})
	if err != nil || len(p.Items) != 2 {
		t.Fatalf("Page = %d items, %v; want both payments", len(p.Items), err)
	}
	if n := f.requestCount(); n != 3 {
		t.Errorf("%d requests, want 3: refused mac, stale timestamp, accepted", n)
	}
	if src.signQuery || src.clockOffset != -10*time.Minute {
		t.Errorf("sign_query %v, clock offset %v; want false and -10m", src.signQuery, src.clockOffset)
	}
	var kinds []string
	for _, a := range anomalies(t, src) {
		kinds = append(kinds, a.Kind)
	}
	if !slices.Equal(kinds, []string{provider.AnomalySigning, provider.AnomalyClockSkew}) {
		t.Errorf("anomalies %v, want signing then clock_skew", kinds)
	}
}
