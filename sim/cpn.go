package sim

import (
	"fmt"
	"net/url"

	"github.com/shopspring/decimal"
)

// CPN payment statuses, in cpnStatuses order.
const (
	cpnCreated uint8 = iota
	cpnCryptoFundsPending
	cpnFiatPaymentInitiated
	cpnCompleted
	cpnFailed
)

var cpnStatuses = []string{"CREATED", "CRYPTO_FUNDS_PENDING", "FIAT_PAYMENT_INITIATED", "COMPLETED", "FAILED"}

// CPN nested kinds and their statuses.
const (
	cpnKidRFI uint8 = iota
	cpnKidTx
	cpnKidRefund
)

const (
	rfiInformationRequired uint8 = iota
	rfiInReview
	rfiApproved
	rfiFailed
)

const (
	txCreated uint8 = iota
	txPending
	txBroadcasted
	txCompleted
	txFailed
)

const (
	refundCreated uint8 = iota
	refundCompleted
	refundFailed
)

var (
	cpnKidKinds    = []string{"payment_rfi", "payment_onchain_transaction", "payment_refund"}
	cpnKidStatuses = [][]string{
		{"INFORMATION_REQUIRED", "IN_REVIEW", "APPROVED", "FAILED"},
		{"CREATED", "PENDING", "BROADCASTED", "COMPLETED", "FAILED"},
		{"CREATED", "COMPLETED", "FAILED"},
	}
)

// CPN item flags.
const (
	cpnInManualReview uint8 = 1 << iota // statusAddendum IN_MANUAL_REVIEW
	cpnReviewed                         // the manual review has happened (at most once)
	cpnRefundDecided                    // whether a refund comes has been decided
)

// cpnFailures are the failure reasons with the failureCode the simulator pairs with
// each (index 0 is "no failure").
var cpnFailures = []struct{ reason, code string }{
	{},
	{"TRAVEL_RULE_FAILED", "PM01001"},
	{"COMPLIANCE_CHECK_FAILED", "PM00001"},
	{"CANCELLED", "PM01002"},
	{"PAYMENT_EXPIRED", "PM09000"},
	{"RFI_VERIFICATION_FAILED", "PM00001"},
	{"ONCHAIN_SETTLEMENT_FAILED", "PM09000"},
	{"FIAT_SETTLEMENT_FAILED", "PM02002"},
	{"BANK_VERIFICATION_FAILED", "PM02001"},
}

const (
	failTravelRule uint8 = iota + 1
	failCompliance
	failCancelled
	failExpired
	failRFI
	failOnchain
	failFiat
	failBank
)

// cpnMachine follows the CPN docs' component states: a payment goes CREATED ->
// CRYPTO_FUNDS_PENDING -> FIAT_PAYMENT_INITIATED -> COMPLETED, can fail from any
// non-terminal status, and is sometimes created directly in CRYPTO_FUNDS_PENDING or
// FAILED. While CREATED it may go through a manual review (statusAddendum
// IN_MANUAL_REVIEW, set then cleared) or an RFI (INFORMATION_REQUIRED -> IN_REVIEW ->
// APPROVED|FAILED). In CRYPTO_FUNDS_PENDING the OFI's on-chain transaction goes
// CREATED -> PENDING -> BROADCASTED -> COMPLETED|FAILED. A payment that fails after its
// crypto arrived gets a refund later (CREATED -> COMPLETED|FAILED, or directly one of
// those): a nested change after the final status.
type cpnMachine struct{}

func (cpnMachine) kind() string                     { return "payment" }
func (cpnMachine) statuses() []string               { return cpnStatuses }
func (cpnMachine) kidKind(k uint8) string           { return cpnKidKinds[k] }
func (cpnMachine) kidStatus(k, status uint8) string { return cpnKidStatuses[k][status] }

func (cpnMachine) addendum(it *item) string {
	if it.flags&cpnInManualReview != 0 {
		return "IN_MANUAL_REVIEW"
	}
	return ""
}

func (m cpnMachine) create(e *env, seq int, at int64, status int) int64 {
	it := e.item(seq)
	switch {
	case status >= 0:
		it.status = uint8(status)
		if it.status == cpnFailed {
			it.fail = failCompliance
		}
	case e.failing(0.2):
		it.status, it.fail = cpnFailed, failCompliance
		if e.chance(0.5) {
			it.fail = failTravelRule
		}
	case e.chance(0.1):
		it.status = cpnCryptoFundsPending
	}
	e.appeared(seq)
	return e.after(at, 1)
}

func (m cpnMachine) fail(e *env, seq int, at int64, reason uint8) {
	e.change(seq, at, func(it *item) {
		it.status, it.fail = cpnFailed, reason
		it.flags &^= cpnInManualReview
	})
}

func (m cpnMachine) step(e *env, seq int, at int64) int64 {
	it := e.item(seq)
	switch it.status {
	case cpnCreated:
		if i, k := e.lastKid(seq, cpnKidRFI); i >= 0 {
			switch k.status {
			case rfiInformationRequired:
				e.setKid(seq, i, at, rfiInReview)
				return e.after(at, 2)
			case rfiInReview:
				if e.failing(1.5) {
					e.setKid(seq, i, at, rfiFailed)
				} else {
					e.setKid(seq, i, at, rfiApproved)
				}
				return e.after(at, 1)
			case rfiFailed:
				m.fail(e, seq, at, failRFI)
				return e.after(at, 1)
			}
		}
		if it.flags&cpnInManualReview != 0 {
			if e.failing(1) {
				m.fail(e, seq, at, failCompliance)
				return e.after(at, 1)
			}
			e.change(seq, at, func(it *item) { it.flags &^= cpnInManualReview })
			return e.after(at, 1)
		}
		rfiSeen, _ := e.lastKid(seq, cpnKidRFI)
		switch {
		case rfiSeen < 0 && e.chance(0.1):
			e.addKid(seq, at, cpnKidRFI, rfiInformationRequired, 0)
			return e.after(at, 2)
		case it.flags&cpnReviewed == 0 && e.chance(0.1):
			e.change(seq, at, func(it *item) { it.flags |= cpnInManualReview | cpnReviewed })
			return e.after(at, 2)
		case e.failing(0.5):
			m.fail(e, seq, at, []uint8{failTravelRule, failCompliance, failCancelled, failExpired}[e.rng.IntN(4)])
			return e.after(at, 1)
		}
		e.setStatus(seq, at, cpnCryptoFundsPending)
		return e.after(at, 1)

	case cpnCryptoFundsPending:
		i, k := e.lastKid(seq, cpnKidTx)
		if i < 0 {
			if e.failing(0.3) {
				m.fail(e, seq, at, failExpired)
				return e.after(at, 1)
			}
			e.addKid(seq, at, cpnKidTx, txCreated, 0)
			return e.after(at, 1)
		}
		switch k.status {
		case txCompleted:
			e.setStatus(seq, at, cpnFiatPaymentInitiated)
			return e.after(at, 3)
		case txFailed:
			m.fail(e, seq, at, failOnchain)
			return e.after(at, 1)
		}
		m.advanceTx(e, seq, i, k, at)
		return e.after(at, 1)

	case cpnFiatPaymentInitiated:
		if e.failing(1) {
			m.fail(e, seq, at, []uint8{failFiat, failBank}[e.rng.IntN(2)])
			return e.after(at, 4)
		}
		e.setStatus(seq, at, cpnCompleted)
		return e.after(at, 1)
	}

	// COMPLETED or FAILED. Nested items still moving (after a forced status) finish.
	ks := e.kids(seq)
	for i, k := range ks {
		switch {
		case k.kind == cpnKidRFI && k.status == rfiInformationRequired:
			e.setKid(seq, i, at, rfiInReview)
			return e.after(at, 1)
		case k.kind == cpnKidRFI && k.status == rfiInReview:
			e.setKid(seq, i, at, rfiApproved)
			return e.after(at, 1)
		case k.kind == cpnKidTx && k.status < txCompleted:
			m.advanceTx(e, seq, i, k, at)
			return e.after(at, 1)
		}
	}
	if it.status != cpnFailed {
		return 0
	}
	if i, k := e.lastKid(seq, cpnKidRefund); i >= 0 && k.status == refundCreated {
		if e.failing(0.5) {
			e.setKid(seq, i, at, refundFailed)
		} else {
			e.setKid(seq, i, at, refundCompleted)
		}
		return 0
	}
	if it.flags&cpnRefundDecided != 0 {
		return 0
	}
	it.flags |= cpnRefundDecided
	if i, k := e.lastKid(seq, cpnKidTx); i < 0 || k.status != txCompleted {
		return 0 // no crypto arrived: nothing to refund
	}
	status := refundCreated
	switch r := e.rng.Float64(); {
	case r < 0.1:
		status = refundCompleted // some BFIs skip CREATED
	case r < 0.15:
		status = refundFailed
	}
	e.addKid(seq, at, cpnKidRefund, status, 0)
	if status == refundCreated {
		return e.after(at, 2)
	}
	return 0
}

// advanceTx moves an on-chain transaction one status forward; BROADCASTED ends in
// COMPLETED or, sometimes, FAILED.
func (cpnMachine) advanceTx(e *env, seq, i int, k kid, at int64) {
	switch k.status {
	case txCreated:
		e.setKid(seq, i, at, txPending)
	case txPending:
		e.setKid(seq, i, at, txBroadcasted)
	case txBroadcasted:
		if e.item(seq).status == cpnCryptoFundsPending && e.failing(0.3) {
			e.setKid(seq, i, at, txFailed)
		} else {
			e.setKid(seq, i, at, txCompleted)
		}
	}
}

// cpnCorridor is a payment method with its fiat currency, an indicative USDC rate and
// the settlement time it advertises.
type cpnCorridor struct {
	method, currency, rate string
	scale                  int32
	min, max, unit         string
}

var cpnCorridors = []cpnCorridor{
	{"SPEI", "MXN", "17.850000", 2, "1", "30", "MINUTES"},
	{"PIX", "BRL", "5.420000", 2, "1", "2", "HOURS"},
	{"SEPA", "EUR", "0.920000", 2, "1", "1", "DAYS"},
	{"WIRE", "USD", "1.000000", 2, "1", "3", "DAYS"},
	{"INSTAPAY", "PHP", "56.200000", 2, "1", "30", "MINUTES"},
	{"FPS", "HKD", "7.810000", 2, "1", "2", "HOURS"},
}

var cpnChains = []string{"ETH-SEPOLIA", "SOL-DEVNET", "MATIC-AMOY", "BASE-SEPOLIA"}

// chainAddress and chainTxHash render an address or transaction hash in the chain's
// own format.
func chainAddress(d *deriver, chain string) string {
	if len(chain) >= 3 && chain[:3] == "SOL" {
		return d.base58(44)
	}
	return "0x" + d.hex(40)
}

func chainTxHash(d *deriver, chain string) string {
	if len(chain) >= 3 && chain[:3] == "SOL" {
		return d.base58(88)
	}
	return "0x" + d.hex(64)
}

type cpnFee struct {
	Amount circleMoney `json:"amount"`
	Type   string      `json:"type"`
}

type cpnIDStatus struct {
	ID     string `json:"id"`
	Status string `json:"status"`
}

type cpnRefund struct {
	ID              string      `json:"id"`
	Status          string      `json:"status"`
	Amount          circleMoney `json:"amount"`
	TransactionHash string      `json:"transactionHash,omitempty"`
}

type cpnPayment struct {
	Type              string      `json:"type"`
	ID                string      `json:"id"`
	QuoteID           string      `json:"quoteId"`
	PaymentMethodType string      `json:"paymentMethodType"`
	Blockchain        string      `json:"blockchain"`
	SenderAddress     string      `json:"senderAddress"`
	RefCode           string      `json:"refCode"`
	CustomerRefID     string      `json:"customerRefId"`
	ExpireDate        string      `json:"expireDate"`
	CreateDate        string      `json:"createDate"`
	Status            string      `json:"status"`
	UseCase           string      `json:"useCase"`
	ReasonForPayment  string      `json:"reasonForPayment"`
	SourceAmount      circleMoney `json:"sourceAmount"`
	DestinationAmount circleMoney `json:"destinationAmount"`
	Fees              struct {
		Breakdown   []cpnFee    `json:"breakdown"`
		TotalAmount circleMoney `json:"totalAmount"`
	} `json:"fees"`
	RefundAddress         string        `json:"refundAddress"`
	BeneficiaryRefID      string        `json:"beneficiaryRefId"`
	FiatNetworkPaymentRef string        `json:"fiatNetworkPaymentRef,omitempty"`
	FailureReason         string        `json:"failureReason,omitempty"`
	FailureCode           string        `json:"failureCode,omitempty"`
	RFIs                  []cpnIDStatus `json:"rfis"`
	OnChainTransactions   []cpnIDStatus `json:"onChainTransactions"`
	FiatSettlementTime    struct {
		Max  string `json:"max"`
		Min  string `json:"min"`
		Unit string `json:"unit"`
	} `json:"fiatSettlementTime"`
	Refunds        []cpnRefund    `json:"refunds"`
	Metadata       map[string]any `json:"metadata"`
	StatusAddendum string         `json:"statusAddendum,omitempty"`
}

// cpnRefs are the derived fields the list filters on.
func cpnRefs(p *prov, seq int) (customerRefID, refCode string) {
	d := p.derive(seq, 1)
	return fmt.Sprintf("customer-%03d", d.intn(200)+1), "REF" + d.alnum(12)
}

func renderCPN(p *prov, seq int) cpnPayment {
	it := &p.st.items[seq]
	d := p.derive(seq, 0)
	corr := cpnCorridors[d.intn(len(cpnCorridors))]
	chain := d.pick(cpnChains)
	var o cpnPayment
	o.Type, o.ID, o.QuoteID = "payment", p.itemID(seq), d.uuid()
	o.PaymentMethodType, o.Blockchain = corr.method, chain
	o.SenderAddress = chainAddress(&d, chain)
	o.RefundAddress = chainAddress(&d, chain)
	o.CustomerRefID, o.RefCode = cpnRefs(p, seq)
	o.BeneficiaryRefID = "beneficiary-" + d.alnum(10)
	o.CreateDate = circleTime(circleSeconds, it.created)
	o.ExpireDate = circleTime(circleSeconds, it.created+30*60*1000)
	o.Status = cpnStatuses[it.status]
	o.UseCase = []string{"B2B", "B2C"}[d.intn(2)]
	o.ReasonForPayment = fmt.Sprintf("PMT%03d", d.intn(20)+1)
	source := randAmount(&d, 10, 50000, 2, 20).Round(6)
	fee := source.Mul(decimal.New(2, -3)).RoundUp(6) // 0.2%
	rate := jitter(&d, corr.rate, 150, 6)
	o.SourceAmount = circleMoney{fixed(source, 6), "USDC"}
	o.DestinationAmount = circleMoney{fixed(source.Sub(fee).Mul(rate).RoundDown(corr.scale), corr.scale), corr.currency}
	o.Fees.Breakdown = []cpnFee{{Amount: circleMoney{fixed(fee, 6), "USDC"}, Type: "BFI_TRANSACTION_FEE"}}
	o.Fees.TotalAmount = circleMoney{fixed(fee, 6), "USDC"}
	if it.status == cpnFiatPaymentInitiated || it.status == cpnCompleted {
		o.FiatNetworkPaymentRef = "FNR" + d.alnum(16)
	}
	if it.status == cpnFailed && it.fail != 0 {
		o.FailureReason, o.FailureCode = cpnFailures[it.fail].reason, cpnFailures[it.fail].code
	}
	o.FiatSettlementTime.Min, o.FiatSettlementTime.Max, o.FiatSettlementTime.Unit = corr.min, corr.max, corr.unit
	o.RFIs, o.OnChainTransactions, o.Refunds = []cpnIDStatus{}, []cpnIDStatus{}, []cpnRefund{}
	for i, k := range p.st.kidsOf(it) {
		id := p.kidID(seq, i)
		st := cpnKidStatuses[k.kind][k.status]
		switch k.kind {
		case cpnKidRFI:
			o.RFIs = append(o.RFIs, cpnIDStatus{id, st})
		case cpnKidTx:
			o.OnChainTransactions = append(o.OnChainTransactions, cpnIDStatus{id, st})
		case cpnKidRefund:
			rf := cpnRefund{ID: id, Status: st, Amount: o.SourceAmount}
			if k.status == refundCompleted {
				kd := p.derive(seq, 100+uint64(i))
				rf.TransactionHash = chainTxHash(&kd, chain)
			}
			o.Refunds = append(o.Refunds, rf)
		}
	}
	o.Metadata = map[string]any{}
	if it.flags&cpnInManualReview != 0 {
		o.StatusAddendum = "IN_MANUAL_REVIEW"
	}
	return o
}

func cpnEndpoint(p *prov) circleEndpoint {
	return circleEndpoint{
		path: "/v1/cpn/payments", defSize: 50, maxSize: 200,
		key:    func(c Credentials) string { return c.CircleCPNKey },
		render: func(seq int) any { return renderCPN(p, seq) },
		filter: func(q url.Values) (func(int) bool, []circleFieldErr) {
			var errs []circleFieldErr
			status := enumFilter(q, "status", cpnStatuses, &errs)
			return allOf([]fieldFilter{
				{status, func(seq int) string { return cpnStatuses[p.st.items[seq].status] }},
				{q.Get("customerRefId"), func(seq int) string { c, _ := cpnRefs(p, seq); return c }},
				{q.Get("refCode"), func(seq int) string { _, r := cpnRefs(p, seq); return r }},
			}), errs
		},
	}
}

// forced clears what a forced status leaves inconsistent: the manual-review addendum
// only exists while CREATED, and a FAILED payment has a failure reason.
func (cpnMachine) forced(it *item) {
	if it.status != cpnCreated {
		it.flags &^= cpnInManualReview
	}
	if it.status == cpnFailed && it.fail == 0 {
		it.fail = failCancelled
	}
}

// cpnSim registers circle_cpn_payments: Circle CPN payments (see simulatedProviders).
var cpnSim = simulated{
	id: ProviderCPN, source: "cpn", listPath: "/v1/cpn/payments",
	setup: func(p *prov, _ uint64) {
		p.m, p.precision = cpnMachine{}, 1000
		p.render = func(seq int) any { return renderCPN(p, seq) }
		p.api = newCircleAPI(p, cpnEndpoint(p))
	},
	keys:  func(c Credentials) map[string]string { return map[string]string{"api_key": c.CircleCPNKey} },
	final: []string{"COMPLETED", "FAILED"},
}
