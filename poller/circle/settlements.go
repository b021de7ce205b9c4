package circle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller/provider"
)

// Settlement paging limits. Circle documents no maximum or default pageSize for this
// collection (only pageSize >= 1, and that a collection may cap larger values), so the
// Circle-wide default of 50 is used, with 200, the largest documented Circle
// collection limit, as the most a source may ask for.
const (
	settlementsPath            = "/v1/exchange/trades/settlements"
	settlementsMaxPageSize     = 200
	settlementsDefaultPageSize = 50
)

// Kinds of the items a settlements source produces.
const (
	kindSettlement       = "settlement"
	kindSettlementDetail = "settlement_detail"
)

// Settlements is the provider circle_exchange_settlements: Circle Mint cross-currency
// trade settlements, listed by GET /v1/exchange/trades/settlements and read one at a
// time by GET /v1/exchange/trades/settlements/{id}. The sandbox is reached by setting
// base_url to https://api-sandbox.circle.com.
var Settlements = provider.Provider{
	Kind:            kindSettlement,
	Statuses:        map[string]diff.Mapping{kindSettlement: SettlementStatus, kindSettlementDetail: SettlementDetailStatus},
	DefaultBaseURL:  "https://api.circle.com",
	MaxPageSize:     settlementsMaxPageSize,
	DefaultPageSize: settlementsDefaultPageSize,
	Keys:            keys,
	New:             NewSettlements,
}

// The settlement status tables: every documented value, nothing else. Circle documents
// no failure state for either.
var (
	SettlementStatus = diff.Mapping{
		"pending": {State: diff.Pending},
		"settled": {State: diff.Completed, Terminal: true},
	}
	SettlementDetailStatus = diff.Mapping{
		"pending":  {State: diff.Pending},
		"complete": {State: diff.Completed, Terminal: true},
	}
)

// settlementSecretFields are removed from every raw settlement and detail before they
// become events' items. A settlement carries no credentials, so there are none.
var settlementSecretFields []string

var settlementsEndpoint = listEndpoint{
	path:         settlementsPath,
	maxPageSize:  settlementsMaxPageSize,
	secretFields: settlementSecretFields,
	parse:        parseSettlementItems,
}

// settlementsSource lists settlements; it implements provider.Source and
// provider.Getter.
type settlementsSource struct {
	l *lister
}

// NewSettlements builds a settlements source. It needs the api_key (sent as a Bearer
// token), an absolute http(s) base_url and a page_size in 1..200, and refuses
// terminal_statuses (the statuses are documented); it reports every missing or invalid
// setting by its key. The returned source also implements provider.Getter. c may be
// nil (a zero provider.Client).
func NewSettlements(s provider.Settings, c *provider.Client) (provider.Source, error) {
	l, err := newLister(settlementsEndpoint, s, c)
	errs := []error{err}
	if len(s.TerminalStatuses) > 0 {
		errs = append(errs, errors.New("terminal_statuses: settlement statuses are documented; their terminal set cannot be replaced"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &settlementsSource{l: l}, nil
}

// Anomalies returns the provider anomalies seen since the last call
// (provider.AnomalyReporter).
func (s *settlementsSource) Anomalies() []provider.Anomaly { return s.l.anomalies() }

// Page lists one page of settlements, newest first. The first page of a walk
// (req.Cursor "") pins the walk's `to` at the current time; Next is the following
// page's URL, "" on the last page.
func (s *settlementsSource) Page(ctx context.Context, req provider.Request) (provider.Page, error) {
	return s.l.page(ctx, req)
}

// Get reads one settlement by id. Details the adapter cannot map are left out of the
// returned item; a settlement it cannot map at all is a *provider.MalformedError.
func (s *settlementsSource) Get(ctx context.Context, id string) (diff.Item, error) {
	return getMapped(ctx, s.l, id, "settlement", parseSettlement)
}

// ParseSettlementsPage maps a GET /v1/exchange/trades/settlements body. Settlements it
// cannot map (no id, no status, a missing or unparsable createDate, an unparsable
// updateDate or amount) are returned in skipped with the reason, as are details it
// cannot map (ID "<settlement id>/details[1]"); the rest of the page is kept. A body
// that is not a page at all is a *provider.MalformedError.
func ParseSettlementsPage(body []byte) (items []diff.Item, skipped []provider.Skipped, err error) {
	data, err := decodeList(body)
	if err != nil {
		return nil, nil, &provider.MalformedError{Err: err}
	}
	items, skipped = parseSettlementItems(data)
	return items, skipped, nil
}

func parseSettlementItems(data []json.RawMessage) ([]diff.Item, []provider.Skipped) {
	items := make([]diff.Item, 0, len(data))
	var skipped []provider.Skipped
	for i, raw := range data {
		it, sk, ok := parseSettlement(raw, fmt.Sprintf("data[%d]", i))
		skipped = append(skipped, sk...)
		if ok {
			items = append(items, it)
		}
	}
	return items, skipped
}

// settlement holds the settlement fields watcher maps; the rest travel in Raw.
type settlement struct {
	ID         string `json:"id"`
	EntityID   string `json:"entityId"`
	Status     string `json:"status"`
	CreateDate string `json:"createDate"`
	UpdateDate string `json:"updateDate"`
	// Amount is not documented on a settlement (its details carry the amounts); it is
	// mapped should a settlement ever carry one.
	Amount *circleMoney `json:"amount"`
	// Details stay raw so that one bad entry costs only that entry.
	Details json.RawMessage `json:"details"`
}

// settlementDetail holds the fields of one details[] entry: a payable or receivable leg.
type settlementDetail struct {
	ID         string       `json:"id"`
	Status     string       `json:"status"`
	Amount     *circleMoney `json:"amount"`
	Reference  string       `json:"reference"`
	CreateDate string       `json:"createDate"`
	UpdateDate string       `json:"updateDate"`
}

// parseSettlement maps one settlement object; where locates it in messages
// ("data[3]"). ok is false when the settlement itself cannot be mapped: skipped then
// holds the reason. Otherwise skipped holds the details that were left out.
func parseSettlement(raw json.RawMessage, where string) (it diff.Item, skipped []provider.Skipped, ok bool) {
	fail := func(id, reason string) (diff.Item, []provider.Skipped, bool) {
		return diff.Item{}, []provider.Skipped{{ID: id, Reason: where + ": " + reason}}, false
	}
	if !provider.IsObject(raw) {
		return fail("", "not a JSON object")
	}
	var s settlement
	if err := json.Unmarshal(raw, &s); err != nil {
		return fail(s.ID, provider.DecodeReason(err))
	}
	if s.ID == "" {
		return fail("", "no id")
	}
	if s.Status == "" {
		return fail(s.ID, "no status")
	}
	created, err := circleTime("createDate", s.CreateDate)
	if err != nil {
		return fail(s.ID, err.Error())
	}
	updated, err := optionalTime("updateDate", s.UpdateDate)
	if err != nil {
		return fail(s.ID, err.Error())
	}
	amount, err := s.Amount.money("amount")
	if err != nil {
		return fail(s.ID, err.Error())
	}
	rawOut, err := provider.Redact(raw, settlementSecretFields)
	if err != nil {
		return fail(s.ID, err.Error())
	}
	status, _ := SettlementStatus.Status(s.Status, "")
	it = diff.Item{
		Kind:      kindSettlement,
		ID:        s.ID,
		Status:    status,
		CreatedAt: created,
		UpdatedAt: updated,
		Amount:    amount,
		Refs:      provider.Refs("entity_id", s.EntityID),
		Raw:       rawOut,
	}

	skip := func(at, reason string) {
		skipped = append(skipped, provider.Skipped{ID: s.ID + "/" + at, Reason: where + ": " + at + ": " + reason})
	}
	entries, err := provider.NestedArray(s.Details)
	if err != nil {
		skip("details", err.Error())
		return it, skipped, true
	}
	seen := make(map[string]bool, len(entries))
	for i, e := range entries {
		at := fmt.Sprintf("details[%d]", i)
		d, reason := parseSettlementDetail(e, created)
		switch {
		case reason != "":
			skip(at, reason)
		case seen[d.ID]:
			skip(at, fmt.Sprintf("id %q appears twice", d.ID))
		default:
			seen[d.ID] = true
			it.Nested = append(it.Nested, d)
		}
	}
	return it, skipped, true
}

// parseSettlementDetail maps one details[] entry; reason says why it cannot be mapped.
// An entry without a createDate takes its settlement's (parentCreated).
func parseSettlementDetail(raw json.RawMessage, parentCreated time.Time) (it diff.Item, reason string) {
	if !provider.IsObject(raw) {
		return it, "not a JSON object"
	}
	var d settlementDetail
	if err := json.Unmarshal(raw, &d); err != nil {
		return it, provider.DecodeReason(err)
	}
	if d.ID == "" {
		return it, "no id"
	}
	if d.Status == "" {
		return it, fmt.Sprintf("id %q: no status", d.ID)
	}
	created := parentCreated
	if d.CreateDate != "" {
		t, err := circleTime("createDate", d.CreateDate)
		if err != nil {
			return it, fmt.Sprintf("id %q: %v", d.ID, err)
		}
		created = t
	}
	updated, err := optionalTime("updateDate", d.UpdateDate)
	if err != nil {
		return it, fmt.Sprintf("id %q: %v", d.ID, err)
	}
	amount, err := d.Amount.money("amount")
	if err != nil {
		return it, fmt.Sprintf("id %q: %v", d.ID, err)
	}
	rawOut, err := provider.Redact(raw, settlementSecretFields)
	if err != nil {
		return it, err.Error()
	}
	status, _ := SettlementDetailStatus.Status(d.Status, "")
	return diff.Item{
		Kind:      kindSettlementDetail,
		ID:        d.ID,
		Status:    status,
		CreatedAt: created,
		UpdatedAt: updated,
		Amount:    amount,
		Refs:      provider.Refs("reference", d.Reference),
		Raw:       rawOut,
	}, ""
}
