package circle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller/provider"
)

// CPN paging limits (documented: pageSize 1..200, default 50).
const (
	cpnPath            = "/v1/cpn/payments"
	cpnMaxPageSize     = 200
	cpnDefaultPageSize = 50
)

// Kinds of the items a CPN source produces.
const (
	kindCPNPayment   = "payment"
	kindCPNRefund    = "payment_refund"
	kindCPNRFI       = "payment_rfi"
	kindCPNOnchainTx = "payment_onchain_transaction"
)

// CPN is the provider circle_cpn_payments: Circle Payments Network payments, listed by
// GET /v1/cpn/payments and read one at a time by GET /v1/cpn/payments/{id}.
var CPN = provider.Provider{
	Kind: kindCPNPayment,
	Statuses: map[string]diff.Mapping{
		kindCPNPayment: CPNPaymentStatus, kindCPNRefund: CPNRefundStatus,
		kindCPNRFI: CPNRFIStatus, kindCPNOnchainTx: CPNOnchainStatus,
	},
	DefaultBaseURL:  "https://api.circle.com",
	MaxPageSize:     cpnMaxPageSize,
	DefaultPageSize: cpnDefaultPageSize,
	Keys:            keys,
	New:             NewCPN,
}

// The CPN status tables: every documented value, nothing else. A FAILED payment is
// final, yet the payment stays open while refunds can still be added to it (Settling).
var (
	CPNPaymentStatus = diff.Mapping{
		"CREATED":                {State: diff.Pending},
		"CRYPTO_FUNDS_PENDING":   {State: diff.Pending},
		"FIAT_PAYMENT_INITIATED": {State: diff.Processing},
		"COMPLETED":              {State: diff.Completed, Terminal: true},
		"FAILED":                 {State: diff.Failed, Terminal: true},
	}
	CPNRFIStatus = diff.Mapping{
		"INFORMATION_REQUIRED": {State: diff.ActionRequired},
		"IN_REVIEW":            {State: diff.Processing},
		"APPROVED":             {State: diff.Completed, Terminal: true},
		"FAILED":               {State: diff.Failed, Terminal: true},
	}
	CPNRefundStatus = diff.Mapping{
		"CREATED":   {State: diff.Pending},
		"COMPLETED": {State: diff.Completed, Terminal: true},
		"FAILED":    {State: diff.Failed, Terminal: true},
	}
	CPNOnchainStatus = diff.Mapping{
		"CREATED":     {State: diff.Pending},
		"PENDING":     {State: diff.Pending},
		"BROADCASTED": {State: diff.Processing},
		"COMPLETED":   {State: diff.Completed, Terminal: true},
		"FAILED":      {State: diff.Failed, Terminal: true},
	}
)

// cpnSecretFields are removed from every raw CPN object before it becomes an event's
// item. A CPN payment carries no credentials, so there are none.
var cpnSecretFields []string

var cpnEndpoint = listEndpoint{
	path:        cpnPath,
	maxPageSize: cpnMaxPageSize,
	// "1 to 200, Default is 50" on the reference page.
	capDocumented: true,
	secretFields:  cpnSecretFields,
	parse:         parseCPNItems,
}

// cpnSource lists CPN payments; it implements provider.Source and provider.Getter.
type cpnSource struct {
	l *lister
}

// NewCPN builds a CPN payments source. It needs the api_key (sent as a Bearer token),
// an absolute http(s) base_url and a page_size in 1..200; it reports every missing or
// invalid one. The returned source also implements provider.Getter. c may be nil (a
// zero provider.Client).
func NewCPN(s provider.Settings, c *provider.Client) (provider.Source, error) {
	l, err := newLister(cpnEndpoint, s, c)
	if err != nil {
		return nil, err
	}
	return &cpnSource{l: l}, nil
}

// Anomalies returns the provider anomalies seen since the last call
// (provider.AnomalyReporter).
func (s *cpnSource) Anomalies() []provider.Anomaly { return s.l.anomalies() }

// Page lists one page of payments, newest first. The first page of a walk (req.Cursor
// "") pins the walk's `to` at the current time; Next is the following page's URL, ""
// on the last page.
func (s *cpnSource) Page(ctx context.Context, req provider.Request) (provider.Page, error) {
	return s.l.page(ctx, req)
}

// Get reads one payment by id. Nested entries the adapter cannot map are left out of
// the returned item; a payment it cannot map at all is a *provider.MalformedError.
func (s *cpnSource) Get(ctx context.Context, id string) (diff.Item, error) {
	raw, u, err := s.l.getOne(ctx, id)
	if err != nil {
		return diff.Item{}, err
	}
	it, skipped, ok := parseCPNPayment(raw, "data")
	if !ok {
		return diff.Item{}, fmt.Errorf("GET %s: %w", u.Redacted(), &provider.MalformedError{Err: errors.New(skipped[0].Reason)})
	}
	if it.ID != id {
		return diff.Item{}, fmt.Errorf("GET %s: %w", u.Redacted(), &provider.MalformedError{
			Err: fmt.Errorf("asked for payment %q, got %q", id, provider.Clip(it.ID, 100))})
	}
	return it, nil
}

// ParseCPNPage maps a GET /v1/cpn/payments body. Payments it cannot map (no id, no
// status, a missing or unparsable createDate, an unparsable amount) are returned in
// skipped with the reason, as are nested entries it cannot map (ID
// "<payment id>/refunds[1]"); the rest of the page is kept. A body that is not a page
// at all is a *provider.MalformedError.
func ParseCPNPage(body []byte) (items []diff.Item, skipped []provider.Skipped, err error) {
	data, err := decodeList(body)
	if err != nil {
		return nil, nil, &provider.MalformedError{Err: err}
	}
	items, skipped = parseCPNItems(data)
	return items, skipped, nil
}

func parseCPNItems(data []json.RawMessage) ([]diff.Item, []provider.Skipped) {
	items := make([]diff.Item, 0, len(data))
	var skipped []provider.Skipped
	for i, raw := range data {
		it, sk, ok := parseCPNPayment(raw, fmt.Sprintf("data[%d]", i))
		skipped = append(skipped, sk...)
		if ok {
			items = append(items, it)
		}
	}
	return items, skipped
}

// cpnPayment holds the payment fields watcher maps; the rest travel in Raw.
type cpnPayment struct {
	ID             string       `json:"id"`
	Status         string       `json:"status"`
	StatusAddendum string       `json:"statusAddendum"`
	CreateDate     string       `json:"createDate"`
	SourceAmount   *circleMoney `json:"sourceAmount"`
	FailureReason  string       `json:"failureReason"`
	FailureCode    string       `json:"failureCode"`
	CustomerRefID  string       `json:"customerRefId"`
	RefCode        string       `json:"refCode"`
	QuoteID        string       `json:"quoteId"`
	// Nested lists stay raw so that one bad entry costs only that entry.
	RFIs                json.RawMessage `json:"rfis"`
	ActiveRFI           json.RawMessage `json:"activeRfi"`
	OnChainTransactions json.RawMessage `json:"onChainTransactions"`
	Refunds             json.RawMessage `json:"refunds"`
}

// cpnNested holds the fields of an RFI or on-chain transaction entry.
type cpnNested struct {
	ID     string `json:"id"`
	Status string `json:"status"`
}

// cpnRefund holds the fields of a refund entry.
type cpnRefund struct {
	ID              string       `json:"id"`
	Status          string       `json:"status"`
	Amount          *circleMoney `json:"amount"`
	TransactionHash string       `json:"transactionHash"`
}

// parseCPNPayment maps one payment object; where locates it in messages ("data[3]").
// ok is false when the payment itself cannot be mapped: skipped then holds the reason.
// Otherwise skipped holds the nested entries that were left out.
func parseCPNPayment(raw json.RawMessage, where string) (it diff.Item, skipped []provider.Skipped, ok bool) {
	fail := func(id, reason string) (diff.Item, []provider.Skipped, bool) {
		return diff.Item{}, []provider.Skipped{{ID: id, Reason: where + ": " + reason}}, false
	}
	if !provider.IsObject(raw) {
		return fail("", "not a JSON object")
	}
	var p cpnPayment
	if err := json.Unmarshal(raw, &p); err != nil {
		return fail(p.ID, provider.DecodeReason(err))
	}
	if p.ID == "" {
		return fail("", "no id")
	}
	if p.Status == "" {
		return fail(p.ID, "no status")
	}
	created, err := circleTime("createDate", p.CreateDate)
	if err != nil {
		return fail(p.ID, err.Error())
	}
	amount, err := p.SourceAmount.money("sourceAmount")
	if err != nil {
		return fail(p.ID, err.Error())
	}
	rawOut, err := provider.Redact(raw, cpnSecretFields)
	if err != nil {
		return fail(p.ID, err.Error())
	}
	status, _ := CPNPaymentStatus.Status(p.Status, p.StatusAddendum)
	it = diff.Item{
		Kind:      kindCPNPayment,
		ID:        p.ID,
		Status:    status,
		CreatedAt: created,
		Amount:    amount,
		Refs:      provider.Refs("customer_ref_id", p.CustomerRefID, "ref_code", p.RefCode, "quote_id", p.QuoteID),
		Raw:       rawOut,
		// Refunds can still be added to a failed payment.
		Settling: p.Status == "FAILED",
	}
	if p.FailureReason != "" || p.FailureCode != "" {
		it.Failure = &diff.Failure{Reason: p.FailureReason, Code: p.FailureCode}
	}

	n := nestedParser{parent: &it, where: where}
	n.list("rfis", p.RFIs, kindCPNRFI, CPNRFIStatus)
	n.activeRFI(p.ActiveRFI)
	n.list("onChainTransactions", p.OnChainTransactions, kindCPNOnchainTx, CPNOnchainStatus)
	n.list("refunds", p.Refunds, kindCPNRefund, CPNRefundStatus)
	return it, n.skipped, true
}

// nestedParser appends a payment's nested entries to it, recording the ones it leaves out.
type nestedParser struct {
	parent  *diff.Item
	where   string
	skipped []provider.Skipped
}

func (n *nestedParser) skip(id, reason string) {
	n.skipped = append(n.skipped, provider.Skipped{ID: id, Reason: n.where + ": " + reason})
}

// has reports whether the parent already holds a nested item of kind with id.
func (n *nestedParser) has(kind, id string) bool {
	for _, c := range n.parent.Nested {
		if c.Kind == kind && c.ID == id {
			return true
		}
	}
	return false
}

// list maps the nested array member field into items of kind.
func (n *nestedParser) list(field string, raw json.RawMessage, kind string, m diff.Mapping) {
	entries, err := provider.NestedArray(raw)
	if err != nil {
		n.skip(n.parent.ID+"/"+field, field+": "+err.Error())
		return
	}
	for i, e := range entries {
		at := fmt.Sprintf("%s[%d]", field, i)
		it, reason := n.entry(e, kind, m)
		switch {
		case reason != "":
			n.skip(n.parent.ID+"/"+at, at+": "+reason)
		case n.has(kind, it.ID):
			n.skip(n.parent.ID+"/"+at, fmt.Sprintf("%s: id %q appears twice", at, it.ID))
		default:
			n.parent.Nested = append(n.parent.Nested, it)
		}
	}
}

// activeRFI maps the single activeRfi object some API versions return beside or
// instead of rfis; an RFI already listed under rfis wins.
func (n *nestedParser) activeRFI(raw json.RawMessage) {
	if len(raw) == 0 || string(raw) == "null" {
		return
	}
	it, reason := n.entry(raw, kindCPNRFI, CPNRFIStatus)
	switch {
	case reason != "":
		n.skip(n.parent.ID+"/activeRfi", "activeRfi: "+reason)
	case !n.has(kindCPNRFI, it.ID):
		n.parent.Nested = append(n.parent.Nested, it)
	}
}

// entry maps one nested object of kind; reason says why it cannot be mapped.
func (n *nestedParser) entry(raw json.RawMessage, kind string, m diff.Mapping) (it diff.Item, reason string) {
	if !provider.IsObject(raw) {
		return it, "not a JSON object"
	}
	var e cpnRefund // a superset of cpnNested
	var err error
	if kind == kindCPNRefund {
		err = json.Unmarshal(raw, &e)
	} else {
		var b cpnNested
		err = json.Unmarshal(raw, &b)
		e.ID, e.Status = b.ID, b.Status
	}
	if err != nil {
		return it, provider.DecodeReason(err)
	}
	if e.ID == "" {
		return it, "no id"
	}
	if e.Status == "" {
		return it, fmt.Sprintf("id %q: no status", e.ID)
	}
	amount, err := e.Amount.money("amount")
	if err != nil {
		return it, fmt.Sprintf("id %q: %v", e.ID, err)
	}
	rawOut, err := provider.Redact(raw, cpnSecretFields)
	if err != nil {
		return it, err.Error()
	}
	status, _ := m.Status(e.Status, "")
	return diff.Item{
		Kind:      kind,
		ID:        e.ID,
		Status:    status,
		CreatedAt: n.parent.CreatedAt, // nested entries carry no date of their own
		Amount:    amount,
		Refs:      provider.Refs("tx_hash", e.TransactionHash),
		Raw:       rawOut,
	}, ""
}
