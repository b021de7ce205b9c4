package coindirect

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// coindirectFake behaves like Coindirect's merchant payments API as the docs and the
// official SDK describe it:
//
//   - GET /api/v1/pay/summary?merchantId=… lists the merchant's payments as a bare JSON
//     array, newest first, paged by offset (default 0) and max (default 10); fromDate
//     (epoch milliseconds, inclusive) filters on dateCreated. Payments inserted while a
//     client pages shift the offset pages, as on the real API.
//   - GET /api/v1/pay/{uuid}/summary answers one payment object.
//   - Every request must carry a valid Hawk header: the fake recomputes the mac from the
//     request it received (its own path, query, Host and port), rejects a ts more than
//     maxSkew away from its clock as Hawk does (a 401 whose WWW-Authenticate carries
//     its time: ts, and tsm keyed with the Hawk key), and answers a reused nonce with 429.
//   - Failures are {"errorList":[{"parameter","message","code"}]} bodies: 400 for a bad
//     parameter, 401 for bad authentication, 403 for another merchant's id, 404 for an
//     unknown payment or path, 429 for a reused nonce, 500 when told to fail.
type coindirectFake struct {
	hawkID, hawkKey, merchantID string
	// signQuery says whether the signed resource includes the query string.
	signQuery bool
	maxSkew   time.Duration
	// prefix is a path prefix before /api (a base_url with a path).
	prefix string

	mu  sync.Mutex
	now func() time.Time
	// nonces holds every id+nonce accepted so far.
	nonces map[string]bool
	// onList, when set, runs before each list request is answered, without the lock
	// held, so that it may insert payments (shifting the pages).
	onList func(q url.Values)
	// fail, when set, may answer a request itself (returning true), before any check.
	fail func(w http.ResponseWriter, r *http.Request) bool
	// pageCap, when above 0, silently serves at most that many payments a page
	// whatever max asks (the docs give no upper limit either way).
	pageCap int
	// tsmKey, when set, keys the tsm of stale-timestamp answers instead of hawkKey
	// (a tsm the client cannot verify).
	tsmKey string

	items    []fakePayment // newest first
	listReqs []url.Values  // the query of every list request, in order
	auths    []string      // the Authorization header of every request, in order
	requests int
}

type fakePayment struct {
	uuid    string
	created int64 // epoch ms
	body    json.RawMessage
}

const (
	fakeHawkID     = "3a7c0d1e-hawk-id"
	fakeMerchantID = "9a57c17a-1eef-48ff-83d0-b5892c99f767"
)

func newFake(hawkKey string, signQuery bool) *coindirectFake {
	return &coindirectFake{
		hawkID: fakeHawkID, hawkKey: hawkKey, merchantID: fakeMerchantID, signQuery: signQuery,
		maxSkew: time.Minute, now: time.Now, nonces: map[string]bool{},
	}
}

// configure changes the fake's behaviour while it serves.
func (f *coindirectFake) configure(change func(f *coindirectFake)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(f)
}

// insert adds a payment as the newest one; body must carry the same uuid and dateCreated.
func (f *coindirectFake) insert(uuid string, created time.Time, body json.RawMessage) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.items = slices.Insert(f.items, 0, fakePayment{uuid: uuid, created: created.UnixMilli(), body: body})
}

// appendOldest adds a payment as the oldest one.
func (f *coindirectFake) appendOldest(uuid string, created time.Time, body json.RawMessage) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.items = append(f.items, fakePayment{uuid: uuid, created: created.UnixMilli(), body: body})
}

func (f *coindirectFake) listRequests() []url.Values {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.listReqs)
}

func (f *coindirectFake) authorizations() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.auths)
}

func (f *coindirectFake) requestCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests
}

// writeCDError writes the fake's error response for code.
func writeCDError(w http.ResponseWriter, code int) {
	switch code {
	case http.StatusBadRequest:
		writeCDErrorEntry(w, code, "max", "max must be a positive integer", "invalid")
	case http.StatusUnauthorized:
		writeCDErrorEntry(w, code, "Authorization", "Bad mac", "unauthorized")
	case http.StatusForbidden:
		writeCDErrorEntry(w, code, "merchantId", "Access denied", "forbidden")
	case http.StatusNotFound:
		writeCDErrorEntry(w, code, "uuid", "Payment not found", "notFound")
	case http.StatusTooManyRequests:
		writeCDErrorEntry(w, code, "Authorization", "Nonce already used", "nonceAlreadyUsed")
	default:
		writeCDErrorEntry(w, code, "", "Internal server error", "internalError")
	}
}

// writeCDErrorEntry writes an errorList body with one entry; an empty param is null.
func writeCDErrorEntry(w http.ResponseWriter, code int, param, msg, errCode string) {
	var p *string
	if param != "" {
		p = &param
	}
	b, _ := json.Marshal(map[string]any{"errorList": []map[string]any{{"parameter": p, "message": msg, "code": errCode}}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(b)
}

func (f *coindirectFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests++
	f.auths = append(f.auths, r.Header.Get("Authorization"))
	fail := f.fail
	f.mu.Unlock()
	if fail != nil && fail(w, r) {
		return
	}
	if code, msg := f.authenticate(r); code != 0 {
		errCode := "unauthorized"
		if code == http.StatusTooManyRequests {
			errCode = "nonceAlreadyUsed"
		}
		if msg == "Stale timestamp" {
			w.Header().Set("WWW-Authenticate", f.staleHeader())
		}
		writeCDErrorEntry(w, code, "Authorization", msg, errCode)
		return
	}
	if r.Method != http.MethodGet {
		writeCDErrorEntry(w, http.StatusMethodNotAllowed, "", "Method not allowed", "methodNotAllowed")
		return
	}
	p, ok := strings.CutPrefix(r.URL.EscapedPath(), f.prefix)
	switch {
	case !ok:
		writeCDErrorEntry(w, http.StatusNotFound, "", "Not found", "notFound")
	case p == "/api/v1/pay/summary":
		f.list(w, r)
	case strings.HasPrefix(p, "/api/v1/pay/") && strings.HasSuffix(p, "/summary"):
		f.one(w, strings.TrimSuffix(strings.TrimPrefix(p, "/api/v1/pay/"), "/summary"))
	default:
		writeCDErrorEntry(w, http.StatusNotFound, "", "Not found", "notFound")
	}
}

// authenticate checks the Hawk header strictly; it returns 0 when the request passes,
// else the status code and message to answer with.
func (f *coindirectFake) authenticate(r *http.Request) (int, string) {
	h := r.Header.Get("Authorization")
	scheme, rest, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "Hawk") {
		return http.StatusUnauthorized, "Missing Hawk authorization"
	}
	attrs, ok := parseHawkAttrs(rest)
	if !ok {
		return http.StatusUnauthorized, "Malformed Hawk header"
	}
	for _, k := range []string{"id", "ts", "nonce", "mac"} {
		if attrs[k] == "" {
			return http.StatusUnauthorized, "Missing Hawk attribute " + k
		}
	}
	if len(attrs) != 4 {
		return http.StatusUnauthorized, "Unexpected Hawk attributes"
	}
	if attrs["id"] != f.hawkID {
		return http.StatusUnauthorized, "Unknown credentials"
	}
	ts, err := strconv.ParseInt(attrs["ts"], 10, 64)
	if err != nil {
		return http.StatusUnauthorized, "Bad ts"
	}
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil {
		host, port = r.Host, "80"
		if r.TLS != nil {
			port = "443"
		}
	}
	resource := r.URL.EscapedPath()
	if f.signQuery && r.URL.RawQuery != "" {
		resource += "?" + r.URL.RawQuery
	}
	normalized := "hawk.1.header\n" + attrs["ts"] + "\n" + attrs["nonce"] + "\n" + r.Method + "\n" +
		resource + "\n" + host + "\n" + port + "\n" + "\n" + "\n"
	m := hmac.New(sha256.New, []byte(f.hawkKey))
	m.Write([]byte(normalized))
	want := base64.StdEncoding.EncodeToString(m.Sum(nil))
	if !hmac.Equal([]byte(want), []byte(attrs["mac"])) {
		return http.StatusUnauthorized, "Bad mac"
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if d := f.now().Sub(time.Unix(ts, 0)); d > f.maxSkew || d < -f.maxSkew {
		return http.StatusUnauthorized, "Stale timestamp"
	}
	key := attrs["id"] + "\x00" + attrs["nonce"]
	if f.nonces[key] {
		return http.StatusTooManyRequests, "Nonce already used"
	}
	f.nonces[key] = true
	return 0, ""
}

// staleHeader is the WWW-Authenticate value of a Hawk server refusing a stale timestamp.
func (f *coindirectFake) staleHeader() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := f.hawkKey
	if f.tsmKey != "" {
		key = f.tsmKey
	}
	ts := strconv.FormatInt(f.now().Unix(), 10)
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte("hawk.1.ts\n" + ts + "\n"))
	return `Hawk ts="` + ts + `", tsm="` + base64.StdEncoding.EncodeToString(m.Sum(nil)) + `", error="Stale timestamp"`
}

// parseHawkAttrs parses `id="…", ts="…", …` strictly: quoted values, no escapes, each
// attribute once, separated by ", ".
func parseHawkAttrs(s string) (map[string]string, bool) {
	attrs := map[string]string{}
	for part := range strings.SplitSeq(s, ", ") {
		k, v, ok := strings.Cut(part, "=")
		if !ok || len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
			return nil, false
		}
		v = v[1 : len(v)-1]
		if _, dup := attrs[k]; dup || strings.ContainsAny(v, `"\`) {
			return nil, false
		}
		attrs[k] = v
	}
	return attrs, true
}

func (f *coindirectFake) one(w http.ResponseWriter, escapedID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, it := range f.items {
		if url.PathEscape(it.uuid) == escapedID {
			w.Header().Set("Content-Type", "application/json")
			w.Write(it.body)
			return
		}
	}
	writeCDErrorEntry(w, http.StatusNotFound, "uuid", "Payment "+escapedID+" not found", "notFound")
}

func (f *coindirectFake) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	switch m := q.Get("merchantId"); {
	case m == "":
		writeCDErrorEntry(w, http.StatusBadRequest, "merchantId", "merchantId is required", "required")
		return
	case m != f.merchantID:
		writeCDErrorEntry(w, http.StatusForbidden, "merchantId", "Access to merchant "+m+" is denied", "forbidden")
		return
	}
	intParam := func(name string, def, lo int) (int, bool) {
		v := q.Get(name)
		if v == "" {
			return def, true
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < lo {
			writeCDErrorEntry(w, http.StatusBadRequest, name, name+" must be an integer of at least "+strconv.Itoa(lo), "invalid")
			return 0, false
		}
		return n, true
	}
	offset, ok := intParam("offset", 0, 0)
	if !ok {
		return
	}
	size, ok := intParam("max", 10, 1)
	if !ok {
		return
	}
	from := int64(-1 << 62)
	if v := q.Get("fromDate"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			writeCDErrorEntry(w, http.StatusBadRequest, "fromDate", "fromDate is not a date", "invalid")
			return
		}
		from = n
	}

	f.mu.Lock()
	onList := f.onList
	f.mu.Unlock()
	if onList != nil {
		onList(q)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listReqs = append(f.listReqs, q)
	var sel []fakePayment
	for _, it := range f.items {
		if it.created >= from {
			sel = append(sel, it)
		}
	}
	if f.pageCap > 0 {
		size = min(size, f.pageCap)
	}
	page := sel[min(offset, len(sel)):min(offset+size, len(sel))]
	var b bytes.Buffer
	b.WriteByte('[')
	for i, it := range page {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(it.body)
	}
	b.WriteByte(']')
	w.Header().Set("Content-Type", "application/json")
	w.Write(b.Bytes())
}

//go:embed testdata/coindirect/example.json
var exampleJSON []byte

// paymentJSON is the documented example payment with uuid, dateCreated and status
// replaced and its transaction's hash made unique to the payment. A PENDING payment
// has no transactions; a PROCESSING one has an unconfirmed one. Every number keeps the
// text the docs show.
func paymentJSON(uuid string, created time.Time, status string) json.RawMessage {
	var page []map[string]any
	dec := json.NewDecoder(bytes.NewReader(exampleJSON))
	dec.UseNumber()
	if err := dec.Decode(&page); err != nil {
		panic(fmt.Sprintf("testdata/coindirect/example.json: %v", err))
	}
	p := page[0]
	p["uuid"], p["dateCreated"], p["status"] = uuid, json.Number(strconv.FormatInt(created.UnixMilli(), 10)), status
	txs := p["transactions"].([]any)
	tx := txs[0].(map[string]any)
	tx["hash"] = "0x" + strings.ReplaceAll(uuid, "-", "")
	tx["dateCreated"] = json.Number(strconv.FormatInt(created.Add(time.Minute).UnixMilli(), 10))
	switch status {
	case "PENDING":
		p["transactions"] = []any{}
	case "PROCESSING":
		tx["dateConfirmed"] = nil
	default:
		tx["dateConfirmed"] = json.Number(strconv.FormatInt(created.Add(2*time.Minute).UnixMilli(), 10))
	}
	b, err := json.Marshal(p)
	if err != nil {
		panic(err)
	}
	return b
}
