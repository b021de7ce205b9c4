package sim

import (
	"fmt"
	"net/url"
	"slices"
)

// Settlement statuses and nested detail kinds and statuses.
const (
	settlementPending uint8 = iota
	settlementSettled
)

var settlementStatuses = []string{"pending", "settled"}

const (
	detailPayable uint8 = iota
	detailReceivable
)

const (
	detailPending uint8 = iota
	detailComplete
)

var (
	detailTypes    = []string{"payable", "receivable"}
	detailStatuses = []string{"pending", "complete"}
)

// settlementMachine: a settlement appears pending with its details (a payable and a
// receivable one, or only one of them), pending too; the details complete one by one,
// and the settlement is settled once all have.
type settlementMachine struct{}

func (settlementMachine) kind() string                     { return "settlement" }
func (settlementMachine) statuses() []string               { return settlementStatuses }
func (settlementMachine) kidKind(uint8) string             { return "settlement_detail" }
func (settlementMachine) kidStatus(_, status uint8) string { return detailStatuses[status] }
func (settlementMachine) addendum(*item) string            { return "" }

// The detail sets a settlement can have; callers must not modify them.
var (
	payableOnly    = []uint8{detailPayable}
	receivableOnly = []uint8{detailReceivable}
	bothDetails    = []uint8{detailPayable, detailReceivable}
)

// settlementShape derives which details a settlement has and its fiat currency.
func settlementShape(p *prov, seq int) (kinds []uint8, currency string) {
	d := p.derive(seq, 1)
	currency = []string{"MXN", "BRL"}[d.intn(2)]
	switch d.intn(10) {
	case 0, 1:
		return payableOnly, currency
	case 2:
		return receivableOnly, currency
	}
	return bothDetails, currency
}

func (settlementMachine) create(e *env, seq int, at int64, status int) int64 {
	it := e.item(seq)
	if status >= 0 {
		it.status = uint8(status)
	}
	e.appeared(seq)
	kinds, _ := settlementShape(e.p, seq)
	for _, k := range kinds {
		st := detailPending
		if it.status == settlementSettled {
			st = detailComplete
		}
		e.addKid(seq, it.created, k, st, 0)
	}
	return e.after(at, 4)
}

func (settlementMachine) step(e *env, seq int, at int64) int64 {
	for i, k := range e.kids(seq) {
		if k.status == detailPending {
			e.setKid(seq, i, at, detailComplete)
			return e.after(at, 2)
		}
	}
	if e.item(seq).status == settlementPending {
		e.setStatus(seq, at, settlementSettled)
	}
	return 0
}

type settlementDetail struct {
	ID         string      `json:"id"`
	Type       string      `json:"type"`
	Amount     circleMoney `json:"amount"`
	Status     string      `json:"status"`
	Reference  string      `json:"reference"`
	CreateDate string      `json:"createDate"`
	UpdateDate string      `json:"updateDate"`
}

type settlement struct {
	ID         string             `json:"id"`
	EntityID   string             `json:"entityId"`
	Status     string             `json:"status"`
	CreateDate string             `json:"createDate"`
	UpdateDate string             `json:"updateDate"`
	Details    []settlementDetail `json:"details"`
}

func renderSettlement(p *prov, seq int) settlement {
	it := &p.st.items[seq]
	_, currency := settlementShape(p, seq)
	d := p.derive(seq, 0)
	usdc := randAmount(&d, 1000, 500000, 2, 30)
	rate := jitter(&d, map[string]string{"MXN": "17.850000", "BRL": "5.420000"}[currency], 150, 6)
	fiat := usdc.Mul(rate).Round(2)
	// With two details, which side is in USDC alternates per settlement; a single
	// detail is in the settlement's fiat currency.
	usdcPayable := d.intn(2) == 0
	kids := p.st.kidsOf(it)
	entity := deriver{x: mix64(p.s.seed ^ 0xe17)}
	o := settlement{
		ID: p.itemID(seq), EntityID: entity.uuid(), Status: settlementStatuses[it.status],
		CreateDate: circleTime(circleMillis, it.created), UpdateDate: circleTime(circleMillis, it.updated),
		Details: []settlementDetail{},
	}
	for i, k := range kids {
		amount := circleMoney{fixed(fiat, 2), currency}
		if len(kids) > 1 && (k.kind == detailPayable) == usdcPayable {
			amount = circleMoney{fixed(usdc, 2), "USDC"}
		}
		kd := p.derive(seq, 10+uint64(i))
		o.Details = append(o.Details, settlementDetail{
			ID: p.kidID(seq, i), Type: detailTypes[k.kind], Amount: amount, Status: detailStatuses[k.status],
			Reference:  fmt.Sprintf("FXR%07d", kd.intn(10_000_000)),
			CreateDate: circleTime(circleMillis, k.created), UpdateDate: circleTime(circleMillis, k.updated),
		})
	}
	return o
}

// The settlements list filters: type account_payable (account_receivable) keeps the
// settlements with a payable (receivable) detail; currency keeps those whose fiat side
// is in that currency.
func settlementEndpoint(p *prov) circleEndpoint {
	return circleEndpoint{
		path: "/v1/exchange/trades/settlements", defSize: 50, maxSize: 200,
		key:    func(c Credentials) string { return c.CircleSettlementsKey },
		render: func(seq int) any { return renderSettlement(p, seq) },
		filter: func(q url.Values) (func(int) bool, []circleFieldErr) {
			var errs []circleFieldErr
			status := enumFilter(q, "status", settlementStatuses, &errs)
			typ := enumFilter(q, "type", []string{"account_payable", "account_receivable"}, &errs)
			currency := enumFilter(q, "currency", []string{"MXN", "BRL"}, &errs)
			return allOf([]fieldFilter{
				{status, func(seq int) string { return settlementStatuses[p.st.items[seq].status] }},
				{currency, func(seq int) string { _, c := settlementShape(p, seq); return c }},
				{typ, func(seq int) string {
					kinds, _ := settlementShape(p, seq)
					if typ == "account_payable" && slices.Contains(kinds, detailPayable) ||
						typ == "account_receivable" && slices.Contains(kinds, detailReceivable) {
						return typ
					}
					return ""
				}},
			}), errs
		},
	}
}

// settlementsSim registers circle_exchange_settlements: Circle Mint settlements (see simulatedProviders).
var settlementsSim = simulated{
	id: ProviderSettlements, source: "settlements", listPath: "/v1/exchange/trades/settlements",
	setup: func(p *prov, _ uint64) {
		p.m = settlementMachine{}
		p.render = func(seq int) any { return renderSettlement(p, seq) }
		p.api = newCircleAPI(p, settlementEndpoint(p))
	},
	keys:  func(c Credentials) map[string]string { return map[string]string{"api_key": c.CircleSettlementsKey} },
	final: []string{"settled"},
}
