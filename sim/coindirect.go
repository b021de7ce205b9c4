package sim

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/shopspring/decimal"
)

// Coindirect payment statuses.
const (
	cdPending uint8 = iota
	cdProcessing
	cdComplete
	cdUnderpaid
	cdExpired
	cdCancelled
)

var cdStatuses = []string{"PENDING", "PROCESSING", "COMPLETE", "UNDERPAID", "EXPIRED", "CANCELLED"}

// Coindirect transactions have no status field; the truth names their two states.
const (
	cdTxUnconfirmed uint8 = iota
	cdTxConfirmed
)

var cdTxStatuses = []string{"UNCONFIRMED", "CONFIRMED"}

const cdLateDecided uint8 = 1 // whether a late transaction comes has been decided

// coindirectMachine follows Coindirect's payment statuses: PENDING -> PROCESSING (a
// customer transaction was detected) -> COMPLETE | UNDERPAID (on confirmation, by
// the amount received), PENDING -> EXPIRED, PENDING -> CANCELLED. Transactions appear
// unconfirmed (dateConfirmed null) and get confirmed; a final payment can still gain a
// late transaction, which then confirms too.
type coindirectMachine struct{}

func (coindirectMachine) kind() string                     { return "payment" }
func (coindirectMachine) statuses() []string               { return cdStatuses }
func (coindirectMachine) kidKind(uint8) string             { return "payment_transaction" }
func (coindirectMachine) kidStatus(_, status uint8) string { return cdTxStatuses[status] }
func (coindirectMachine) addendum(*item) string            { return "" }

func (coindirectMachine) create(e *env, seq int, at int64, status int) int64 {
	if status >= 0 {
		e.item(seq).status = uint8(status)
	}
	e.appeared(seq)
	return e.after(at, 2)
}

func (coindirectMachine) step(e *env, seq int, at int64) int64 {
	it := e.item(seq)
	switch it.status {
	case cdPending:
		switch {
		case e.failing(0.6):
			e.setStatus(seq, at, cdExpired)
			return e.after(at, 3)
		case e.failing(0.15):
			e.setStatus(seq, at, cdCancelled)
			return e.after(at, 3)
		}
		permille := uint16(1000)
		if e.failing(0.5) {
			permille = uint16(400 + e.rng.IntN(551))
		}
		e.addKid(seq, at, 0, cdTxUnconfirmed, permille)
		e.setStatus(seq, at, cdProcessing)
		return e.after(at, 2)
	case cdProcessing:
		ks := e.kids(seq)
		if len(ks) == 0 {
			e.addKid(seq, at, 0, cdTxUnconfirmed, 1000)
			return e.after(at, 1)
		}
		total := 0
		for i, k := range ks {
			if k.status == cdTxUnconfirmed {
				e.setKid(seq, i, at, cdTxConfirmed)
			}
			total += int(k.amount)
		}
		if total >= 1000 {
			e.setStatus(seq, at, cdComplete)
		} else {
			e.setStatus(seq, at, cdUnderpaid)
		}
		return e.after(at, 3)
	}
	for i, k := range e.kids(seq) {
		if k.status == cdTxUnconfirmed {
			e.setKid(seq, i, at, cdTxConfirmed)
			return e.after(at, 1)
		}
	}
	if it.flags&cdLateDecided != 0 {
		return 0
	}
	it.flags |= cdLateDecided
	if e.failing(0.5) || it.status == cdExpired && e.chance(0.1) {
		e.addKid(seq, at, 0, cdTxUnconfirmed, uint16(100+e.rng.IntN(901)))
		return e.after(at, 2)
	}
	return 0
}

type cdCrypto struct {
	code, priceEUR string
	scale          int32
}

type cdFiat struct {
	code, perEUR string
	scale        int32
	lo, hi       int64
}

var (
	cdCryptos = []cdCrypto{{"BTC", "58000", 8}, {"ETH", "2500", 7}, {"USDT", "0.92", 6}, {"LTC", "70", 8}, {"XRP", "0.48", 6}}
	cdDisplay = []cdFiat{
		{"EUR", "1", 2, 5, 5000}, {"USD", "1.08", 2, 5, 5000}, {"JPY", "162", 0, 500, 500000},
		{"ZAR", "19.8", 2, 50, 50000}, {"GBP", "0.85", 2, 5, 5000},
	}
	cdWallet = []cdFiat{{"EUR", "1", 2, 0, 0}, {"USD", "1.08", 2, 0, 0}}
)

// cdShape is a payment's fixed choices: currencies and the amount asked for.
type cdShape struct {
	crypto           cdCrypto
	display, wallet  cdFiat
	displayAmount    decimal.Decimal
	displayRate      decimal.Decimal // display currency per crypto unit
	exchangeRate     decimal.Decimal // wallet currency per crypto unit
	reference, addr  string
	tag              *string
	paid, walletAmt  decimal.Decimal
	fee              decimal.Decimal
	uuid, merchantID string
}

func coindirectShape(p *prov, seq int) cdShape {
	d := p.derive(seq, 0)
	var c cdShape
	c.uuid, c.merchantID = p.itemID(seq), p.s.creds.CoindirectMerchantID
	c.crypto = cdCryptos[d.intn(len(cdCryptos))]
	c.display = cdDisplay[d.intn(len(cdDisplay))]
	c.wallet = cdWallet[d.intn(len(cdWallet))]
	c.displayAmount = randAmount(&d, c.display.lo, c.display.hi, c.display.scale, 40)
	price := decimal.RequireFromString(c.crypto.priceEUR)
	c.displayRate = jitterD(&d, price.Mul(decimal.RequireFromString(c.display.perEUR)), 100, 18)
	c.exchangeRate = jitterD(&d, price.Mul(decimal.RequireFromString(c.wallet.perEUR)), 100, 18)
	c.paid = decimal.Max(c.displayAmount.DivRound(c.displayRate, c.crypto.scale), decimal.New(1, -c.crypto.scale))
	c.walletAmt = c.paid.Mul(c.exchangeRate).Round(2)
	c.fee = c.walletAmt.Mul(decimal.New(1, -2)).Round(2)
	c.reference = d.uuid()
	switch c.crypto.code {
	case "BTC":
		c.addr = "bc1q" + strings.ToLower(d.alnum(38))
	case "LTC":
		c.addr = "ltc1q" + strings.ToLower(d.alnum(38))
	case "XRP":
		c.addr = "r" + d.base58(33)
		c.tag = ptr(strconv.FormatInt(d.between(100000, 999999999), 10))
	default:
		c.addr = "0x" + d.hex(40)
	}
	return c
}

func jitterD(d *deriver, base decimal.Decimal, bp int64, scale int32) decimal.Decimal {
	k := d.between(-bp, bp)
	return base.Mul(decimal.New(10000+k, -4)).Round(scale)
}

// coindirectTxHash is the hash of a payment's i-th transaction, in its chain's format.
func coindirectTxHash(p *prov, seq, i int) string {
	code := cdCryptos[func() int { d := p.derive(seq, 0); return d.intn(len(cdCryptos)) }()].code
	d := p.derive(seq, 200+uint64(i))
	switch code {
	case "BTC", "LTC":
		return d.hex(64)
	case "XRP":
		return strings.ToUpper(d.hex(64))
	}
	return "0x" + d.hex(64)
}

type cdMoney struct {
	Currency string      `json:"currency"`
	Amount   json.Number `json:"amount"`
	Actual   json.Number `json:"actual"`
}

type cdRate struct {
	Base    string      `json:"base"`
	Counter string      `json:"counter"`
	Rate    json.Number `json:"rate"`
}

type cdTx struct {
	DateCreated        int64       `json:"dateCreated"`
	DateConfirmed      *int64      `json:"dateConfirmed"`
	Hash               string      `json:"hash"`
	Amount             json.Number `json:"amount"`
	Risk               string      `json:"risk"`
	NetworkFeeCurrency string      `json:"networkFeeCurrency"`
	NetworkFeeAmount   json.Number `json:"networkFeeAmount"`
	Sources            []string    `json:"sources"`
	ExchangeRate       cdRate      `json:"exchangeRate"`
	DisplayRate        cdRate      `json:"displayRate"`
}

type cdPayment struct {
	UUID            string  `json:"uuid"`
	MerchantID      string  `json:"merchantId"`
	DateCreated     int64   `json:"dateCreated"`
	ExpiryDate      int64   `json:"expiryDate"`
	QuoteExpiryDate int64   `json:"quoteExpiryDate"`
	Reference       string  `json:"reference"`
	Type            string  `json:"type"`
	SubType         string  `json:"subType"`
	Status          string  `json:"status"`
	DisplayCurrency cdMoney `json:"displayCurrency"`
	WalletCurrency  cdMoney `json:"walletCurrency"`
	PaidCurrency    cdMoney `json:"paidCurrency"`
	FeeCurrency     cdMoney `json:"feeCurrency"`
	DisplayRate     cdRate  `json:"displayRate"`
	ExchangeRate    cdRate  `json:"exchangeRate"`
	Address         struct {
		Protocol *string `json:"protocol"`
		Address  string  `json:"address"`
		Tag      *string `json:"tag"`
	} `json:"address"`
	RedirectURL  string     `json:"redirectUrl"`
	ReturnURL    string     `json:"returnUrl"`
	Transactions []cdTx     `json:"transactions"`
	Refund       *struct{}  `json:"refund"`
	Refunds      []struct{} `json:"refunds"`
}

func renderCoindirect(p *prov, seq int) cdPayment {
	it := &p.st.items[seq]
	c := coindirectShape(p, seq)
	var o cdPayment
	o.UUID, o.MerchantID = c.uuid, c.merchantID
	o.DateCreated, o.ExpiryDate, o.QuoteExpiryDate = it.created, it.created+15*60*1000, it.created+2*60*1000
	o.Reference, o.Type, o.SubType, o.Status = c.reference, "IN", "merchantPayIn", cdStatuses[it.status]
	o.Address.Address, o.Address.Tag = c.addr, c.tag
	o.RedirectURL = "https://business.sandbox.coindirect.com/payin?uuid=" + c.uuid + "&flow=direct"
	o.ReturnURL = "https://shop.example.com/orders/" + c.reference
	o.Transactions, o.Refunds = []cdTx{}, []struct{}{}
	received := decimal.Zero
	permille := 0
	invRate := decimal.New(1, 0).DivRound(c.exchangeRate, 18)
	for i, k := range p.st.kidsOf(it) {
		amount := c.paid.Mul(decimal.New(int64(k.amount), -3)).Round(c.crypto.scale)
		received = received.Add(amount)
		permille += int(k.amount)
		kd := p.derive(seq, 300+uint64(i))
		tx := cdTx{
			DateCreated: k.created, Hash: coindirectTxHash(p, seq, i), Amount: javaNumber(atScale(amount, 18)),
			Risk:               []string{"UNKNOWN", "LOW"}[kd.intn(2)],
			NetworkFeeCurrency: c.crypto.code,
			NetworkFeeAmount:   javaNumber(atScale(decimal.New(kd.between(1, 99999999), -12), 18)),
			ExchangeRate:       cdRate{c.wallet.code, c.crypto.code, javaNumber(atScale(invRate, 18))},
			DisplayRate:        cdRate{c.crypto.code, c.display.code, javaNumber(stripped(c.displayRate.Round(10)))},
		}
		switch c.crypto.code {
		case "BTC", "LTC":
			tx.Sources = []string{strings.ToLower(c.crypto.code[:1]) + "c1q" + strings.ToLower(kd.alnum(38))}
		case "XRP":
			tx.Sources = []string{"r" + kd.base58(33)}
		default:
			tx.Sources = []string{"0x" + kd.hex(40)}
		}
		if k.status == cdTxConfirmed {
			tx.DateConfirmed = &k.updated
		}
		o.Transactions = append(o.Transactions, tx)
	}
	displayActual := received.Mul(c.displayRate).Round(c.display.scale)
	walletActual := received.Mul(c.exchangeRate).Round(2)
	if received.Equal(c.paid) {
		displayActual, walletActual = c.displayAmount, c.walletAmt
	}
	feeActual := walletActual.Mul(decimal.New(1, -2)).Round(2)
	o.DisplayCurrency = cdMoney{c.display.code, javaNumber(stripped(c.displayAmount)), javaNumber(stripped(displayActual))}
	o.WalletCurrency = cdMoney{c.wallet.code, javaNumber(stripped(c.walletAmt)), javaNumber(stripped(walletActual))}
	o.PaidCurrency = cdMoney{c.crypto.code, javaNumber(stripped(c.paid)), javaNumber(atScale(received, 18))}
	o.FeeCurrency = cdMoney{c.wallet.code, javaNumber(stripped(c.fee)), javaNumber(stripped(feeActual))}
	o.DisplayRate = cdRate{c.crypto.code, c.display.code, javaNumber(atScale(c.displayRate, 18))}
	o.ExchangeRate = cdRate{c.wallet.code, c.crypto.code, javaNumber(atScale(c.exchangeRate, 18))}
	return o
}

// cdError is one entry of Coindirect's errorList.
type cdError struct {
	Parameter *string `json:"parameter"`
	Message   string  `json:"message"`
	Code      string  `json:"code"`
}

func coindirectError(w http.ResponseWriter, code int, param, msg, errCode string) {
	e := cdError{Message: msg, Code: errCode}
	if param != "" {
		e.Parameter = &param
	}
	writeJSON(w, code, map[string]any{"errorList": []cdError{e}})
}

type coindirectAPI struct {
	p *prov
}

func (a *coindirectAPI) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/pay/summary", serve(a.p, a, a.list))
	mux.HandleFunc("GET /api/v1/pay/{uuid}/summary", serve(a.p, a, a.get))
}

func (a *coindirectAPI) begin(http.ResponseWriter, *http.Request) {}

func (a *coindirectAPI) fail(w http.ResponseWriter, code int) {
	switch code {
	case http.StatusTooManyRequests:
		coindirectError(w, code, "", "Too many requests", "tooManyRequests")
	case http.StatusGatewayTimeout:
		coindirectError(w, code, "", "Gateway timeout", "gatewayTimeout")
	default:
		coindirectError(w, code, "", "Internal server error", "internalError")
	}
}

// forbid answers as Coindirect does a request from an address its IP allowlist lacks.
func (a *coindirectAPI) forbid(w http.ResponseWriter, r *http.Request) {
	coindirectError(w, http.StatusForbidden, "", "Access denied: IP address "+callerIP(r)+" is not whitelisted", "forbidden")
}

func (a *coindirectAPI) authorize(w http.ResponseWriter, r *http.Request) bool {
	f := a.p.s.checkHawk(r, a.p.clock())
	if f == nil {
		return true
	}
	if f.www != "" {
		w.Header().Set("WWW-Authenticate", f.www)
	}
	code := "unauthorized"
	if f.code == http.StatusTooManyRequests {
		code = "nonceAlreadyUsed"
	}
	coindirectError(w, f.code, "Authorization", f.message, code)
	return false
}

// parseCDDate reads a fromDate/toDate: epoch milliseconds, RFC 3339 or YYYY-MM-DD
// (UTC; as a toDate it means the end of that day).
func parseCDDate(v string, end bool) (int64, bool) {
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		return n, true
	}
	if t, err := time.Parse("2006-01-02", v); err == nil {
		if end {
			return t.Add(24*time.Hour).UnixMilli() - 1, true
		}
		return t.UnixMilli(), true
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		if end {
			return floorMilli(t), true
		}
		return ceilMilli(t), true
	}
	return 0, false
}

// cdMatchesQ reports whether q is the payment's uuid, reference, address or one of its
// transaction hashes.
func cdMatchesQ(p *prov, seq int, q string) bool {
	c := coindirectShape(p, seq)
	if q == c.uuid || q == c.reference || q == c.addr {
		return true
	}
	for i := range p.st.items[seq].kidN {
		if coindirectTxHash(p, seq, int(i)) == q {
			return true
		}
	}
	return false
}

func (a *coindirectAPI) list(w http.ResponseWriter, r *http.Request) {
	s := a.p.s
	q := r.URL.Query()
	merchant := q.Get("merchantId")
	if merchant == "" {
		coindirectError(w, http.StatusBadRequest, "merchantId", "merchantId is required", "required")
		return
	}
	if merchant != s.creds.CoindirectMerchantID {
		coindirectError(w, http.StatusForbidden, "merchantId", "Access to merchant "+merchant+" is denied", "forbidden")
		return
	}
	intParam := func(name string, def, lo, hi int) (int, bool) {
		v := q.Get(name)
		if v == "" {
			return def, true
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			coindirectError(w, http.StatusBadRequest, name,
				name+" must be an integer from "+strconv.Itoa(lo)+" to "+strconv.Itoa(hi), "invalid")
			return 0, false
		}
		return n, true
	}
	offset, ok := intParam("offset", 0, 0, 1<<31-1)
	if !ok {
		return
	}
	size, ok := intParam("max", 10, 1, 1000)
	if !ok {
		return
	}
	quirks := a.p.quirks.get()
	from, to := int64(-1<<62), int64(1<<62)
	for _, b := range []struct {
		name string
		end  bool
		dst  *int64
	}{{"fromDate", false, &from}, {"toDate", true, &to}} {
		if v := q.Get(b.name); v != "" {
			t, ok := parseCDDate(v, b.end)
			if !ok {
				coindirectError(w, http.StatusBadRequest, b.name, b.name+" must be epoch milliseconds, an ISO 8601 date-time or YYYY-MM-DD", "invalid")
				return
			}
			if !b.end && quirks.IgnoreDateFilter {
				continue
			}
			*b.dst = t
		}
	}
	size = servedSize(size, quirks)
	status, search := q.Get("status"), q.Get("q")

	if n := a.p.faults.drift(offset); n > 0 {
		s.mu.Lock()
		at := s.now().UnixMilli()
		for range n {
			s.createItem(a.p, at, -1)
		}
		s.mu.Unlock()
	}

	s.mu.RLock()
	lo, hi := a.p.st.span(from, to)
	listable := a.p.listable(s.now().UnixMilli(), nil)
	// The list runs from start by dir: newest first, or oldest first under the quirk.
	start, dir := hi-1, -1
	if quirks.OldestFirst {
		start, dir = lo, 1
	}
	inSpan := func(i int) bool { return i >= lo && i < hi }
	var idx []int
	if status == "" && search == "" && listable == nil {
		for i := start + dir*offset; inSpan(i) && len(idx) < size; i += dir {
			idx = append(idx, i)
		}
	} else {
		skip := offset
		for i := start; inSpan(i) && len(idx) < size; i += dir {
			if status != "" && !strings.EqualFold(cdStatuses[a.p.st.items[i].status], status) ||
				search != "" && !cdMatchesQ(a.p, i, search) || listable != nil && !listable(i) {
				continue
			}
			if skip > 0 {
				skip--
				continue
			}
			idx = append(idx, i)
		}
	}
	data := make([]cdPayment, len(idx))
	for i, seq := range idx {
		data[i] = renderCoindirect(a.p, seq)
	}
	s.mu.RUnlock()
	writeJSON(w, http.StatusOK, data)
}

func (a *coindirectAPI) get(w http.ResponseWriter, r *http.Request) {
	s := a.p.s
	id := r.PathValue("uuid")
	s.mu.RLock()
	seq, ok := a.p.lookup(id)
	var o cdPayment
	if ok {
		o = renderCoindirect(a.p, seq)
	}
	s.mu.RUnlock()
	if !ok {
		coindirectError(w, http.StatusNotFound, "uuid", "Payment "+id+" not found", "notFound")
		return
	}
	writeJSON(w, http.StatusOK, o)
}

// coindirectSim registers coindirect_payments: Coindirect payments (see simulatedProviders).
var coindirectSim = simulated{
	id: ProviderCoindirect, source: "coindirect", listPath: "/api/v1/pay/summary",
	setup: func(p *prov, _ uint64) {
		p.m = coindirectMachine{}
		p.render = func(seq int) any { return renderCoindirect(p, seq) }
		p.api = &coindirectAPI{p: p}
		p.nestedID = func(seq, i int) string { return coindirectTxHash(p, seq, i) }
	},
	keys: func(c Credentials) map[string]string {
		return map[string]string{"hawk_id": c.CoindirectHawkID, "hawk_key": c.CoindirectHawkKey, "merchant_id": c.CoindirectMerchantID}
	},
	final: []string{"COMPLETE", "UNDERPAID", "EXPIRED", "CANCELLED"},
}
