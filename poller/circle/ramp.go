package circle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller/provider"
)

// W3S ramp session paging limits (documented: pageSize 1..50, default 10).
const (
	rampPath            = "/v1/w3s/ramp/sessions"
	rampMaxPageSize     = 50
	rampDefaultPageSize = 10
)

// kindRampSession is the kind of the items a ramp source produces; they have no nested
// items.
const kindRampSession = "ramp_session"

// Ramp is the provider circle_ramp_sessions: Circle Web3 Services on/off-ramp sessions,
// listed by GET /v1/w3s/ramp/sessions and read one at a time by
// GET /v1/w3s/ramp/sessions/{id}.
var Ramp = provider.Provider{
	Kind:             kindRampSession,
	Statuses:         map[string]diff.Mapping{kindRampSession: RampStatus},
	DefaultBaseURL:   "https://api.circle.com",
	MaxPageSize:      rampMaxPageSize,
	DefaultPageSize:  rampDefaultPageSize,
	TerminalOverride: true,
	Keys:             keys,
	New:              NewRamp,
}

// RampStatus is the ramp session status table. Circle publishes no status enum for
// ramp sessions (PENDING is the only value its examples show), so the table holds the
// lifecycle the other Circle products use; any other value maps to unknown and is
// published. A source's terminal_statuses replaces the terminal set of this table.
var RampStatus = diff.Mapping{
	"PENDING":   {State: diff.Pending},
	"COMPLETED": {State: diff.Completed, Terminal: true},
	"FAILED":    {State: diff.Failed, Terminal: true},
	"EXPIRED":   {State: diff.Expired, Terminal: true},
	"CANCELED":  {State: diff.Canceled, Terminal: true},
	"CANCELLED": {State: diff.Canceled, Terminal: true},
}

// rampSecretFields are removed, at any depth, from every raw ramp session before it
// becomes an event's item. "url" is the hosted session link handed to the customer:
// whoever holds it can act in the customer's session, so it must not travel to every
// consumer of the stream. (redirectUrl, the integrator's own return page, stays.)
var rampSecretFields = []string{"url"}

// rampEndpoint describes the ramp session list for a status table.
func rampEndpoint(status diff.Mapping) listEndpoint {
	return listEndpoint{
		path:        rampPath,
		maxPageSize: rampMaxPageSize,
		// "1 to 50, Default is 10" on the reference page.
		capDocumented: true,
		secretFields:  rampSecretFields,
		parse: func(data []json.RawMessage) ([]diff.Item, []provider.Skipped) {
			return parseRampItems(data, status)
		},
	}
}

// rampSource lists ramp sessions; it implements provider.Source and provider.Getter.
type rampSource struct {
	l      *lister
	status diff.Mapping
}

// NewRamp builds a ramp session source. It needs the api_key in Circle's Web3 Services
// form PREFIX:ID:SECRET (sent as a Bearer token), an absolute http(s) base_url and a
// page_size in 1..50; terminal_statuses, when given, replaces RampStatus's terminal
// set for this source. It reports every missing or invalid setting by its key and
// never prints the key itself. The returned source also implements provider.Getter. c
// may be nil (a zero provider.Client).
func NewRamp(s provider.Settings, c *provider.Client) (provider.Source, error) {
	status := RampStatus
	if len(s.TerminalStatuses) > 0 {
		status = RampStatus.WithTerminal(s.TerminalStatuses)
	}
	l, err := newLister(rampEndpoint(status), s, c)
	errs := []error{err}
	if key := s.Value("api_key"); key != "" {
		errs = append(errs, checkW3SKey(key))
	}
	for i, raw := range s.TerminalStatuses {
		if strings.TrimSpace(raw) == "" {
			errs = append(errs, fmt.Errorf("terminal_statuses[%d]: empty status", i))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &rampSource{l: l, status: status}, nil
}

// w3sKeyParts names the parts of a Circle Web3 Services API key.
var w3sKeyParts = [...]string{"PREFIX", "ID", "SECRET"}

// checkW3SKey checks that key has the PREFIX:ID:SECRET form: three non-empty parts
// separated by colons, without spaces or control characters. Its errors describe the
// shape only, never the key's text.
func checkW3SKey(key string) error {
	parts := strings.Split(key, ":")
	if len(parts) != len(w3sKeyParts) {
		return fmt.Errorf("api_key: must have the form PREFIX:ID:SECRET (three parts separated by colons); it has %d", len(parts))
	}
	for i, p := range parts {
		if p == "" {
			return fmt.Errorf("api_key: the %s part of PREFIX:ID:SECRET is empty", w3sKeyParts[i])
		}
		if strings.IndexFunc(p, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
			return fmt.Errorf("api_key: the %s part of PREFIX:ID:SECRET contains spaces or control characters", w3sKeyParts[i])
		}
	}
	return nil
}

// Anomalies returns the provider anomalies seen since the last call
// (provider.AnomalyReporter).
func (s *rampSource) Anomalies() []provider.Anomaly { return s.l.anomalies() }

// Page lists one page of ramp sessions, newest first. The first page of a walk
// (req.Cursor "") pins the walk's `to` at the current time; Next is the following
// page's URL, "" on the last page.
func (s *rampSource) Page(ctx context.Context, req provider.Request) (provider.Page, error) {
	return s.l.page(ctx, req)
}

// Get reads one ramp session by id; a session it cannot map is a
// *provider.MalformedError.
func (s *rampSource) Get(ctx context.Context, id string) (diff.Item, error) {
	return getMapped(ctx, s.l, id, "ramp session", func(raw json.RawMessage, where string) (diff.Item, []provider.Skipped, bool) {
		it, sk, ok := parseRampSession(raw, where, s.status)
		return it, []provider.Skipped{sk}, ok
	})
}

// getMapped reads the item with id from l's single-item endpoint and maps it with
// parse. Nested entries parse leaves out are left out of the returned item; an item it
// cannot map at all, or one with another id, is a *provider.MalformedError. what names
// the item in messages.
func getMapped(ctx context.Context, l *lister, id, what string,
	parse func(raw json.RawMessage, where string) (diff.Item, []provider.Skipped, bool)) (diff.Item, error) {
	raw, u, err := l.getOne(ctx, id)
	if err != nil {
		return diff.Item{}, err
	}
	malformed := func(u *url.URL, err error) error {
		return fmt.Errorf("GET %s: %w", u.Redacted(), &provider.MalformedError{Err: err})
	}
	it, skipped, ok := parse(raw, "data")
	if !ok {
		return diff.Item{}, malformed(u, errors.New(skipped[0].Reason))
	}
	if it.ID != id {
		return diff.Item{}, malformed(u, fmt.Errorf("asked for %s %q, got %q", what, id, provider.Clip(it.ID, 100)))
	}
	return it, nil
}

// ParseRampPage maps a GET /v1/w3s/ramp/sessions body with the RampStatus table.
// Sessions it cannot map (no id, no status, a missing or unparsable createDate, an
// unparsable updateDate or amount) are returned in skipped with the reason; the rest
// of the page is kept. A body that is not a page at all is a *provider.MalformedError.
func ParseRampPage(body []byte) (items []diff.Item, skipped []provider.Skipped, err error) {
	data, err := decodeList(body)
	if err != nil {
		return nil, nil, &provider.MalformedError{Err: err}
	}
	items, skipped = parseRampItems(data, RampStatus)
	return items, skipped, nil
}

func parseRampItems(data []json.RawMessage, status diff.Mapping) ([]diff.Item, []provider.Skipped) {
	items := make([]diff.Item, 0, len(data))
	var skipped []provider.Skipped
	for i, raw := range data {
		it, sk, ok := parseRampSession(raw, fmt.Sprintf("data[%d]", i), status)
		if !ok {
			skipped = append(skipped, sk)
			continue
		}
		items = append(items, it)
	}
	return items, skipped
}

// rampSession holds the session fields watcher maps; the rest travel in Raw.
type rampSession struct {
	ID            string `json:"id"`
	RampType      string `json:"rampType"`
	Status        string `json:"status"`
	CreateDate    string `json:"createDate"`
	UpdateDate    string `json:"updateDate"`
	RefID         string `json:"refId"`
	CustomerRefID string `json:"customerRefId"`
	Quote         *struct {
		FiatAmount   *circleMoney `json:"fiatAmount"`
		CryptoAmount *circleMoney `json:"cryptoAmount"`
	} `json:"quote"`
	Transaction *struct {
		TxHash string `json:"txHash"`
	} `json:"transaction"`
}

// amount is the session's event amount: what the customer pays, as quoted. A BUY
// session's customer pays the quote's fiatAmount (and receives its cryptoAmount); a
// SELL session's customer pays the cryptoAmount. The quote's figure is used rather than
// the transaction's so that every event of a session carries the same amount. A session
// of another ramp type, or without a quote, has none.
func (r *rampSession) amount() (*diff.Money, error) {
	if r.Quote == nil {
		return nil, nil
	}
	switch r.RampType {
	case "BUY":
		return r.Quote.FiatAmount.money("quote.fiatAmount")
	case "SELL":
		return r.Quote.CryptoAmount.money("quote.cryptoAmount")
	}
	return nil, nil
}

// parseRampSession maps one session object with the status table m; where locates it
// in messages ("data[3]"). ok is false when the session cannot be mapped: skipped then
// holds the reason.
func parseRampSession(raw json.RawMessage, where string, m diff.Mapping) (it diff.Item, skipped provider.Skipped, ok bool) {
	fail := func(id, reason string) (diff.Item, provider.Skipped, bool) {
		return diff.Item{}, provider.Skipped{ID: id, Reason: where + ": " + reason}, false
	}
	if !provider.IsObject(raw) {
		return fail("", "not a JSON object")
	}
	var r rampSession
	if err := json.Unmarshal(raw, &r); err != nil {
		return fail(r.ID, provider.DecodeReason(err))
	}
	if r.ID == "" {
		return fail("", "no id")
	}
	if r.Status == "" {
		return fail(r.ID, "no status")
	}
	created, err := circleTime("createDate", r.CreateDate)
	if err != nil {
		return fail(r.ID, err.Error())
	}
	updated, err := optionalTime("updateDate", r.UpdateDate)
	if err != nil {
		return fail(r.ID, err.Error())
	}
	amount, err := r.amount()
	if err != nil {
		return fail(r.ID, err.Error())
	}
	rawOut, err := provider.Redact(raw, rampSecretFields)
	if err != nil {
		return fail(r.ID, err.Error())
	}
	var txHash string
	if r.Transaction != nil {
		txHash = r.Transaction.TxHash
	}
	status, _ := m.Status(r.Status, "")
	return diff.Item{
		Kind:      kindRampSession,
		ID:        r.ID,
		Status:    status,
		CreatedAt: created,
		UpdatedAt: updated,
		Amount:    amount,
		Refs:      provider.Refs("customer_ref_id", r.CustomerRefID, "ref_id", r.RefID, "tx_hash", txHash),
		Raw:       rawOut,
	}, provider.Skipped{}, true
}

// optionalTime parses a Circle date that may be absent: "" (absent or null) is the
// zero time; anything else must be RFC 3339.
func optionalTime(field, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	return circleTime(field, s)
}
