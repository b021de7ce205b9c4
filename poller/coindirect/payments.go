package coindirect

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller/provider"
)

// Kinds of the items a Coindirect source produces.
const (
	kindPayment     = "payment"
	kindTransaction = "payment_transaction"
)

// PaymentStatus is the payment status table: every documented value, nothing else.
// COMPLETE, UNDERPAID, EXPIRED and CANCELLED are final; a final payment can still gain
// transactions, so it keeps Settling.
var PaymentStatus = diff.Mapping{
	"PENDING":    {State: diff.Pending},
	"PROCESSING": {State: diff.Processing},
	"COMPLETE":   {State: diff.Completed, Terminal: true},
	"UNDERPAID":  {State: diff.Underpaid, Terminal: true},
	"EXPIRED":    {State: diff.Expired, Terminal: true},
	"CANCELLED":  {State: diff.Canceled, Terminal: true},
}

// Raw statuses of a transaction. Coindirect gives transactions no status field: these
// are watcher's names for "dateConfirmed absent or null" and "dateConfirmed set".
const (
	TxUnconfirmed = "UNCONFIRMED"
	TxConfirmed   = "CONFIRMED"
)

// TransactionStatus is the table of the statuses watcher derives for transactions[]
// entries from their dateConfirmed.
var TransactionStatus = diff.Mapping{
	TxUnconfirmed: {State: diff.Pending},
	TxConfirmed:   {State: diff.Completed, Terminal: true},
}

// secretFields are removed from every raw object before it becomes an event's item. A
// payment summary carries no credentials (merchantId is an identifier, not a secret),
// so there are none; the list is here so that adding one is one line.
var secretFields []string

// ParsePaymentsPage maps a GET /api/v1/pay/summary body (a bare JSON array). Payments
// it cannot map (not an object, no uuid, no status, a missing or unparsable
// dateCreated, an unparsable displayCurrency amount) are returned in skipped with the
// reason, as are transactions it cannot map (ID "<uuid>/transactions[1]"); the rest of
// the page is kept. A uuid repeated within the page is kept once, where it first
// appears. A body that is not a JSON array is a *provider.MalformedError.
func ParsePaymentsPage(body []byte) (items []diff.Item, skipped []provider.Skipped, err error) {
	data, err := decodeList(body)
	if err != nil {
		return nil, nil, &provider.MalformedError{Err: err}
	}
	items, skipped = parseItems(data)
	return items, skipped, nil
}

func parseItems(data []json.RawMessage) ([]diff.Item, []provider.Skipped) {
	items := make([]diff.Item, 0, len(data))
	var skipped []provider.Skipped
	seen := make(map[string]bool, len(data))
	for i, raw := range data {
		it, sk, ok := parsePayment(raw, "["+strconv.Itoa(i)+"]")
		if ok && seen[it.ID] {
			continue // the same payment twice in one page: one reading is enough
		}
		skipped = append(skipped, sk...)
		if ok {
			seen[it.ID] = true
			items = append(items, it)
		}
	}
	return items, skipped
}

// payment holds the summary fields watcher maps; the rest travel in Raw. Numbers stay
// raw JSON so that no amount or date passes through float64.
type payment struct {
	UUID            string          `json:"uuid"`
	MerchantID      string          `json:"merchantId"`
	DateCreated     json.RawMessage `json:"dateCreated"`
	Reference       string          `json:"reference"`
	Status          string          `json:"status"`
	DisplayCurrency *money          `json:"displayCurrency"`
	PaidCurrency    *money          `json:"paidCurrency"`
	// Transactions stays raw so that one bad entry costs only that entry.
	Transactions json.RawMessage `json:"transactions"`
}

// money is Coindirect's {currency, amount, actual} object.
type money struct {
	Currency string          `json:"currency"`
	Amount   json.RawMessage `json:"amount"`
}

// transaction holds the fields of a transactions[] entry.
type transaction struct {
	Hash          string          `json:"hash"`
	DateCreated   json.RawMessage `json:"dateCreated"`
	DateConfirmed json.RawMessage `json:"dateConfirmed"`
	Amount        json.RawMessage `json:"amount"`
}

// parsePayment maps one payment object; where locates it in messages ("[3]"). ok is
// false when the payment itself cannot be mapped: skipped then holds the reason.
// Otherwise skipped holds the transactions that were left out.
//
// The amount is displayCurrency: the price the merchant asked for, in the merchant's
// chosen currency (paidCurrency is the crypto amount asked of the customer and
// walletCurrency the merchant's proceeds; both stay in Raw).
func parsePayment(raw json.RawMessage, where string) (it diff.Item, skipped []provider.Skipped, ok bool) {
	fail := func(id, reason string) (diff.Item, []provider.Skipped, bool) {
		return diff.Item{}, []provider.Skipped{{ID: id, Reason: where + ": " + reason}}, false
	}
	if !provider.IsObject(raw) {
		return fail("", "not a JSON object")
	}
	var p payment
	if err := json.Unmarshal(raw, &p); err != nil {
		return fail(p.UUID, provider.DecodeReason(err))
	}
	if p.UUID == "" {
		return fail("", "no uuid")
	}
	if p.Status == "" {
		return fail(p.UUID, "no status")
	}
	created, set, err := epochMillis("dateCreated", p.DateCreated)
	if err != nil {
		return fail(p.UUID, err.Error())
	}
	if !set {
		return fail(p.UUID, "dateCreated: missing")
	}
	var amount *diff.Money
	if p.DisplayCurrency != nil {
		d, ok, err := provider.ParseAmountJSON(p.DisplayCurrency.Amount)
		if err != nil {
			return fail(p.UUID, "displayCurrency.amount "+err.Error())
		}
		if ok {
			amount = &diff.Money{Value: d, Currency: p.DisplayCurrency.Currency}
		}
	}
	rawOut, err := provider.Redact(raw, secretFields)
	if err != nil {
		return fail(p.UUID, err.Error())
	}
	status, _ := PaymentStatus.Status(p.Status, "")
	it = diff.Item{
		Kind:      kindPayment,
		ID:        p.UUID,
		Status:    status,
		CreatedAt: created,
		Amount:    amount,
		Refs:      provider.Refs("reference", p.Reference, "merchant_id", p.MerchantID),
		Raw:       rawOut,
		// Transactions can still arrive after a final status.
		Settling: status.Terminal,
	}
	currency := ""
	if p.PaidCurrency != nil {
		currency = p.PaidCurrency.Currency
	}
	skipped = parseTransactions(&it, p.Transactions, currency, where)
	return it, skipped, true
}

// parseTransactions appends the payment's transactions[] entries to parent.Nested as
// payment_transaction items keyed by hash, and returns the entries it left out. A
// transaction's amount is in currency, the payment's paidCurrency (transactions carry
// no currency of their own).
func parseTransactions(parent *diff.Item, raw json.RawMessage, currency, where string) []provider.Skipped {
	var skipped []provider.Skipped
	skip := func(id, reason string) {
		skipped = append(skipped, provider.Skipped{ID: id, Reason: where + ": " + reason})
	}
	entries, err := provider.NestedArray(raw)
	if err != nil {
		skip(parent.ID+"/transactions", "transactions: "+err.Error())
		return skipped
	}
	for i, e := range entries {
		at := "transactions[" + strconv.Itoa(i) + "]"
		tx, reason := parseTransaction(e, parent, currency)
		switch {
		case reason != "":
			skip(parent.ID+"/"+at, at+": "+reason)
		case hasNested(parent, tx.ID):
			skip(parent.ID+"/"+at, fmt.Sprintf("%s: hash %q appears twice", at, tx.ID))
		default:
			parent.Nested = append(parent.Nested, tx)
		}
	}
	return skipped
}

// parseTransaction maps one transactions[] entry; reason says why it cannot be mapped.
// Its status is CONFIRMED once dateConfirmed is set (a 0 counts as unset), UNCONFIRMED
// before; UpdatedAt is the confirmation time. CreatedAt is the transaction's
// dateCreated (its detection), or the payment's when absent.
func parseTransaction(raw json.RawMessage, parent *diff.Item, currency string) (it diff.Item, reason string) {
	if !provider.IsObject(raw) {
		return it, "not a JSON object"
	}
	var tx transaction
	if err := json.Unmarshal(raw, &tx); err != nil {
		return it, provider.DecodeReason(err)
	}
	if tx.Hash == "" {
		return it, "no hash"
	}
	created, set, err := epochMillis("dateCreated", tx.DateCreated)
	if err != nil {
		return it, fmt.Sprintf("hash %q: %v", tx.Hash, err)
	}
	if !set {
		created = parent.CreatedAt
	}
	confirmed, isConfirmed, err := epochMillis("dateConfirmed", tx.DateConfirmed)
	if err != nil {
		return it, fmt.Sprintf("hash %q: %v", tx.Hash, err)
	}
	var amount *diff.Money
	d, ok, err := provider.ParseAmountJSON(tx.Amount)
	if err != nil {
		return it, fmt.Sprintf("hash %q: amount %v", tx.Hash, err)
	}
	if ok {
		amount = &diff.Money{Value: d, Currency: currency}
	}
	rawOut, err := provider.Redact(raw, secretFields)
	if err != nil {
		return it, err.Error()
	}
	rawStatus := TxUnconfirmed
	if isConfirmed {
		rawStatus = TxConfirmed
	}
	status, _ := TransactionStatus.Status(rawStatus, "")
	return diff.Item{
		Kind:      kindTransaction,
		ID:        tx.Hash,
		Status:    status,
		CreatedAt: created,
		UpdatedAt: confirmed,
		Amount:    amount,
		Refs:      provider.Refs("tx_hash", tx.Hash),
		Raw:       rawOut,
	}, ""
}

func hasNested(parent *diff.Item, id string) bool {
	for i := range parent.Nested {
		if parent.Nested[i].ID == id {
			return true
		}
	}
	return false
}

// maxEpochMillis is 9999-12-31T23:59:59.999Z: later dates cannot be printed as RFC 3339.
const maxEpochMillis = 253402300799999

// epochMillis reads an epoch-milliseconds date (a JSON integer, or a string of one) as
// UTC. set is false for an absent or null value, and for 0, which Coindirect's Java
// models print for an unset primitive long. field names the value in errors.
func epochMillis(field string, raw json.RawMessage) (t time.Time, set bool, err error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return time.Time{}, false, nil
	}
	s := string(raw)
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &s); err != nil {
			return time.Time{}, false, fmt.Errorf("%s: %v", field, err)
		}
	}
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("%s %s: not epoch milliseconds", field, provider.Clip(string(raw), 64))
	}
	if ms == 0 {
		return time.Time{}, false, nil
	}
	if ms < 0 || ms > maxEpochMillis {
		return time.Time{}, false, fmt.Errorf("%s %d: outside 1970..9999", field, ms)
	}
	return time.UnixMilli(ms).UTC(), true, nil
}
