package sim

import (
	"fmt"
	"net/url"

	"github.com/shopspring/decimal"
)

// Ramp session statuses. Circle documents no enum (only PENDING appears in examples);
// the simulator keeps to PENDING and the three terminal values watcher maps, unless
// Quirks.UnknownStatuses sends sessions through the last three, which watcher does not
// know.
const (
	rampPending uint8 = iota
	rampCompleted
	rampFailed
	rampExpired
	rampInProgress
	rampSucceeded
	rampDeclined
)

var rampStatuses = []string{"PENDING", "COMPLETED", "FAILED", "EXPIRED", "IN_PROGRESS", "SUCCEEDED", "DECLINED"}

// rampMachine: PENDING -> COMPLETED | FAILED | EXPIRED. Under Quirks.UnknownStatuses a
// PENDING session takes PENDING -> IN_PROGRESS | DECLINED instead, and IN_PROGRESS ->
// SUCCEEDED | DECLINED.
type rampMachine struct{}

func (rampMachine) kind() string                { return "ramp_session" }
func (rampMachine) statuses() []string          { return rampStatuses }
func (rampMachine) kidKind(uint8) string        { return "" }
func (rampMachine) kidStatus(_, _ uint8) string { return "" }
func (rampMachine) addendum(*item) string       { return "" }

func (rampMachine) create(e *env, seq int, at int64, status int) int64 {
	if status >= 0 {
		e.item(seq).status = uint8(status)
	}
	e.appeared(seq)
	return e.after(at, 3)
}

func (rampMachine) step(e *env, seq int, at int64) int64 {
	switch e.item(seq).status {
	case rampPending:
		if e.p.quirks.get().UnknownStatuses {
			return rampUnknownStep(e, seq, at)
		}
	case rampInProgress:
		return rampUnknownStep(e, seq, at)
	default:
		return 0
	}
	switch {
	case e.failing(0.5):
		e.setStatus(seq, at, rampFailed)
	case e.failing(0.5):
		e.setStatus(seq, at, rampExpired)
	default:
		e.setStatus(seq, at, rampCompleted)
	}
	return 0
}

// rampUnknownStep moves a session along the statuses of Quirks.UnknownStatuses:
// PENDING -> IN_PROGRESS | DECLINED, IN_PROGRESS -> SUCCEEDED | DECLINED.
func rampUnknownStep(e *env, seq int, at int64) int64 {
	if e.failing(0.5) {
		e.setStatus(seq, at, rampDeclined)
		return 0
	}
	if e.item(seq).status == rampPending {
		e.setStatus(seq, at, rampInProgress)
		return e.after(at, 2)
	}
	e.setStatus(seq, at, rampSucceeded)
	return 0
}

type rampAddress struct {
	Blockchain string `json:"blockchain"`
	Address    string `json:"address"`
	AddressTag string `json:"addressTag"`
}

type rampFees struct {
	TotalAmount circleMoney `json:"totalAmount"`
	Breakdown   []cpnFee    `json:"breakdown"`
}

type rampRate struct {
	Rate string `json:"rate"`
	Pair string `json:"pair"`
}

type rampSession struct {
	ID            string `json:"id"`
	RampType      string `json:"rampType"`
	Status        string `json:"status"`
	URL           string `json:"url"`
	RefID         string `json:"refId"`
	CustomerRefID string `json:"customerRefId"`
	Country       struct {
		CountryCode     string `json:"countryCode"`
		SubdivisionCode string `json:"subdivisionCode"`
	} `json:"country"`
	WalletAddress rampAddress `json:"walletAddress"`
	Quote         struct {
		ID                string      `json:"id"`
		Blockchain        string      `json:"blockchain"`
		PaymentMethodType string      `json:"paymentMethodType"`
		FiatAmount        circleMoney `json:"fiatAmount"`
		CryptoAmount      circleMoney `json:"cryptoAmount"`
		PartnerName       string      `json:"partnerName"`
		ExchangeRate      rampRate    `json:"exchangeRate"`
		Fees              rampFees    `json:"fees"`
		CreateDate        string      `json:"createDate"`
		ExpireDate        string      `json:"expireDate"`
	} `json:"quote"`
	RedirectURL string `json:"redirectUrl"`
	Transaction struct {
		FiatAmount   circleMoney `json:"fiatAmount"`
		CryptoAmount circleMoney `json:"cryptoAmount"`
		FromAddress  rampAddress `json:"fromAddress"`
		ToAddress    rampAddress `json:"toAddress"`
		TxHash       string      `json:"txHash"`
		Fees         rampFees    `json:"fees"`
		ExchangeRate rampRate    `json:"exchangeRate"`
	} `json:"transaction"`
	CreateDate string `json:"createDate"`
	UpdateDate string `json:"updateDate"`
}

var rampChains = []string{"ETH", "SOL", "MATIC", "BASE"}

var rampCountries = [][2]string{{"US", "CA"}, {"US", "NY"}, {"US", "TX"}, {"US", "FL"}, {"US", "WA"}}

// rampFields are the derived fields the list filters on.
type rampFields struct {
	rampType, customerRefID, refID, blockchain string
}

func rampRefs(p *prov, seq int) rampFields {
	d := p.derive(seq, 1)
	f := rampFields{rampType: "BUY", refID: d.uuid(), blockchain: d.pick(rampChains)}
	if d.intn(5) == 0 {
		f.rampType = "SELL"
	}
	if d.intn(4) > 0 {
		f.customerRefID = fmt.Sprintf("customer-%03d", d.intn(200)+1)
	}
	return f
}

func rampTxHash(p *prov, seq int, chain string) string {
	it := &p.st.items[seq]
	if it.status != rampCompleted && it.status != rampSucceeded {
		return ""
	}
	d := p.derive(seq, 2)
	return chainTxHash(&d, chain)
}

func renderRamp(p *prov, seq int) rampSession {
	it := &p.st.items[seq]
	f := rampRefs(p, seq)
	d := p.derive(seq, 0)
	var o rampSession
	o.ID, o.RampType, o.Status = p.itemID(seq), f.rampType, rampStatuses[it.status]
	o.URL = "https://ramp.sandbox.circle.com/session/" + o.ID
	o.RefID, o.CustomerRefID = f.refID, f.customerRefID
	c := rampCountries[d.intn(len(rampCountries))]
	o.Country.CountryCode, o.Country.SubdivisionCode = c[0], c[1]
	wallet := rampAddress{Blockchain: f.blockchain, Address: chainAddress(&d, f.blockchain)}
	partner := rampAddress{Blockchain: f.blockchain, Address: chainAddress(&d, f.blockchain)}
	o.WalletAddress = wallet

	fiat := randAmount(&d, 20, 20000, 2, 40)
	rate := jitter(&d, "1.005000", 50, 6) // USD per USDC
	fee := fiat.Mul(decimal.New(1, -2)).RoundUp(2)
	var crypto decimal.Decimal
	if f.rampType == "BUY" {
		crypto = fiat.Sub(fee).DivRound(rate, 2)
	} else {
		crypto = fiat.Add(fee).DivRound(rate, 2)
	}
	fees := rampFees{
		TotalAmount: circleMoney{fixed(fee, 2), "USD"},
		Breakdown:   []cpnFee{{Amount: circleMoney{fixed(fee, 2), "USD"}, Type: "MARKUP"}},
	}
	xr := rampRate{Rate: fixed(rate, 6), Pair: "USDC/USD"}
	q := &o.Quote
	q.ID, q.Blockchain = d.uuid(), f.blockchain
	q.PaymentMethodType = []string{"WIRE", "ACH"}[d.intn(2)]
	q.FiatAmount, q.CryptoAmount = circleMoney{fixed(fiat, 2), "USD"}, circleMoney{fixed(crypto, 2), "USDC"}
	q.PartnerName, q.ExchangeRate, q.Fees = "Legend Trading", xr, fees
	q.CreateDate = circleTime(circleSeconds, it.created)
	q.ExpireDate = circleTime(circleSeconds, it.created+30*60*1000)
	t := &o.Transaction
	t.FiatAmount, t.CryptoAmount, t.Fees, t.ExchangeRate = q.FiatAmount, q.CryptoAmount, fees, xr
	t.FromAddress, t.ToAddress = partner, wallet
	if f.rampType == "SELL" {
		t.FromAddress, t.ToAddress = wallet, partner
	}
	t.TxHash = rampTxHash(p, seq, f.blockchain)
	o.CreateDate = circleTime(circleSeconds, it.created)
	o.UpdateDate = circleTime(circleSeconds, it.updated)
	return o
}

func rampEndpoint(p *prov) circleEndpoint {
	return circleEndpoint{
		path: "/v1/w3s/ramp/sessions", defSize: 10, maxSize: 50, threePart: true,
		key:    func(c Credentials) string { return c.CircleRampKey },
		render: func(seq int) any { return renderRamp(p, seq) },
		filter: func(q url.Values) (func(int) bool, []circleFieldErr) {
			return allOf([]fieldFilter{
				{q.Get("status"), func(seq int) string { return rampStatuses[p.st.items[seq].status] }},
				{q.Get("rampType"), func(seq int) string { return rampRefs(p, seq).rampType }},
				{q.Get("customerRefId"), func(seq int) string { return rampRefs(p, seq).customerRefID }},
				{q.Get("refId"), func(seq int) string { return rampRefs(p, seq).refID }},
				{q.Get("blockchain"), func(seq int) string { return rampRefs(p, seq).blockchain }},
				{q.Get("txHash"), func(seq int) string { return rampTxHash(p, seq, rampRefs(p, seq).blockchain) }},
			}), nil
		},
	}
}

// rampSim registers circle_ramp_sessions: Circle W3S ramp sessions (see simulatedProviders).
var rampSim = simulated{
	id: ProviderRamp, source: "ramp", listPath: "/v1/w3s/ramp/sessions",
	setup: func(p *prov, _ uint64) {
		p.m, p.precision = rampMachine{}, 1000
		p.render = func(seq int) any { return renderRamp(p, seq) }
		p.api = newCircleAPI(p, rampEndpoint(p))
	},
	keys: func(c Credentials) map[string]string { return map[string]string{"api_key": c.CircleRampKey} },
	// The last two are those of Quirks.UnknownStatuses.
	final: []string{"COMPLETED", "FAILED", "EXPIRED", "SUCCEEDED", "DECLINED"},
}
