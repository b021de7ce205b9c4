package stripe

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller/provider"
)

// Onramp session paging limits (documented: limit 1..100, default 10).
const (
	onrampPath            = "/v1/crypto/onramp_sessions"
	onrampMaxPageSize     = 100
	onrampDefaultPageSize = 10
	onrampObject          = "crypto.onramp_session"
	kindOnrampSession     = "onramp_session"
)

// OnrampSessions is the provider stripe_crypto_onramp_sessions: crypto onramp sessions,
// listed by GET /v1/crypto/onramp_sessions and read one at a time by
// GET /v1/crypto/onramp_sessions/{id}.
var OnrampSessions = provider.Provider{
	Kind:            kindOnrampSession,
	Statuses:        map[string]diff.Mapping{kindOnrampSession: OnrampStatus},
	DefaultBaseURL:  "https://api.stripe.com",
	MaxPageSize:     onrampMaxPageSize,
	DefaultPageSize: onrampDefaultPageSize,
	Keys:            keys,
	New:             NewOnrampSessions,
}

// OnrampStatus is the onramp session status table: every documented value, nothing
// else. Stripe does not say which statuses are final; a delivered (fulfillment_complete)
// or rejected session is not known to change again.
var OnrampStatus = diff.Mapping{
	"initialized":            {State: diff.Pending},
	"requires_payment":       {State: diff.ActionRequired},
	"fulfillment_processing": {State: diff.Processing},
	"fulfillment_complete":   {State: diff.Completed, Terminal: true},
	"rejected":               {State: diff.Failed, Terminal: true},
}

// onrampSecretFields are removed, at any depth, from every raw session before it leaves
// the adapter. client_secret lets a browser complete the session; nothing else in the
// documented object is a credential (metadata, redirect_url, wallet addresses and
// transaction ids are not).
var onrampSecretFields = []string{"client_secret"}

// onrampSource lists onramp sessions; it implements provider.Source and provider.Getter.
type onrampSource struct {
	c *client
}

// NewOnrampSessions builds an onramp sessions source. It needs the api_key (a secret
// sk_… or restricted rk_… key, sent as the Basic user with an empty password), an
// absolute http(s) base_url and a page_size in 1..100; stripe_version, when set, is sent
// as Stripe-Version. It reports every missing or invalid setting. The returned source
// also implements provider.Getter. c may be nil (a zero provider.Client).
func NewOnrampSessions(s provider.Settings, c *provider.Client) (provider.Source, error) {
	cl, err := newClient(s, c, onrampMaxPageSize)
	if err != nil {
		return nil, err
	}
	return &onrampSource{c: cl}, nil
}

// Page lists one page of sessions, newest first. The first page of a walk (req.Cursor
// "") asks for limit=page_size and, when req.From is set, created[gte]; Next is the
// following page's query (the same parameters and starting_after=<last id>), "" once
// Stripe says has_more is false or sends an empty page.
func (s *onrampSource) Page(ctx context.Context, req provider.Request) (provider.Page, error) {
	q := s.c.firstQuery(req.From)
	if req.Cursor != "" {
		var err error
		if q, err = parseCursor(req.Cursor, onrampMaxPageSize); err != nil {
			return provider.Page{}, err
		}
	}
	u := s.c.endpoint(onrampPath, "")
	u.RawQuery = q.Encode()
	body, _, err := s.c.get(ctx, u)
	if err != nil {
		return provider.Page{}, err
	}
	l, err := decodeList(body)
	if err != nil {
		return provider.Page{}, fmt.Errorf("GET %s: %w", u.Redacted(), &provider.MalformedError{Err: err})
	}
	next, err := nextCursor(q, l)
	if err != nil {
		return provider.Page{}, fmt.Errorf("GET %s: %w", u.Redacted(), &provider.MalformedError{Err: err})
	}
	items, skipped := parseSessions(l.data)
	return provider.Page{Items: items, Skipped: skipped, Next: next}, nil
}

// Get reads one session by id. Stripe's 404 with code resource_missing is an error
// wrapping provider.ErrNotFound (and the *provider.StatusError); a 404 without it (an
// unrecognized URL: a wrong base_url) is only the *provider.StatusError, so that a
// misconfiguration is not taken for a missing session. A session the adapter cannot map
// is a *provider.MalformedError.
func (s *onrampSource) Get(ctx context.Context, id string) (diff.Item, error) {
	if id == "" || id == "." || id == ".." {
		return diff.Item{}, fmt.Errorf("get %q: not a session id", id)
	}
	u := s.c.endpoint(onrampPath, id)
	body, code, err := s.c.get(ctx, u)
	if err != nil {
		var se *provider.StatusError
		if errors.As(err, &se) && se.Code == http.StatusNotFound && code == "resource_missing" {
			return diff.Item{}, fmt.Errorf("%w: %w", provider.ErrNotFound, err)
		}
		return diff.Item{}, err
	}
	it, reason, ok := parseSession(body, "body")
	if !ok {
		return diff.Item{}, fmt.Errorf("GET %s: %w", u.Redacted(), &provider.MalformedError{Err: errors.New(reason.Reason)})
	}
	if it.ID != id {
		return diff.Item{}, fmt.Errorf("GET %s: %w", u.Redacted(), &provider.MalformedError{
			Err: fmt.Errorf("asked for session %q, got %q", id, provider.Clip(it.ID, 100))})
	}
	return it, nil
}

// ParseOnrampPage maps a GET /v1/crypto/onramp_sessions body. Sessions it cannot map
// (not an object, no id, another object type, no status, a missing or implausible
// created, an unparsable amount, a field of the wrong JSON type) are returned in skipped
// with the reason; the rest of the page is kept. A body that is not a list at all is a
// *provider.MalformedError.
func ParseOnrampPage(body []byte) (items []diff.Item, skipped []provider.Skipped, err error) {
	l, err := decodeList(body)
	if err != nil {
		return nil, nil, &provider.MalformedError{Err: err}
	}
	items, skipped = parseSessions(l.data)
	return items, skipped, nil
}

func parseSessions(data []json.RawMessage) ([]diff.Item, []provider.Skipped) {
	items := make([]diff.Item, 0, len(data))
	var skipped []provider.Skipped
	for i, raw := range data {
		it, sk, ok := parseSession(raw, fmt.Sprintf("data[%d]", i))
		if !ok {
			skipped = append(skipped, sk)
			continue
		}
		items = append(items, it)
	}
	return items, skipped
}

// onrampSession holds the session fields watcher maps; the rest travel in Raw.
type onrampSession struct {
	ID     string  `json:"id"`
	Object *string `json:"object"`
	Status string  `json:"status"`
	// Created is unix seconds, read from its literal.
	Created json.RawMessage `json:"created"`
	// ClientSecret is only read to find copies of it elsewhere in the object.
	ClientSecret       json.RawMessage `json:"client_secret"`
	TransactionDetails *onrampDetails  `json:"transaction_details"`
}

// onrampDetails holds the transaction_details fields watcher maps. Amounts are decimal
// strings ("100.00") or null; a bare JSON number is read from its literal too.
type onrampDetails struct {
	SourceAmount        json.RawMessage `json:"source_amount"`
	SourceCurrency      string          `json:"source_currency"`
	DestinationAmount   json.RawMessage `json:"destination_amount"`
	DestinationCurrency string          `json:"destination_currency"`
	TransactionID       string          `json:"transaction_id"`
	WalletAddress       string          `json:"wallet_address"`
}

// maxUnixTime is 9999-12-31T23:59:59Z, the last second an event's RFC 3339 time can show.
const maxUnixTime = 253402300799

// parseSession maps one session object; where locates it in messages ("data[3]"). ok is
// false when it cannot be mapped: skipped then holds the reason.
//
// The amount is the source (fiat) side when transaction_details.source_amount is set,
// else the destination (crypto) side, else none. The source amount is what the customer
// pays, in the currency the session is priced in; the destination amount is a quote
// that depends on the chosen currency and network, so it only stands in when no source
// amount is known. The currency is Stripe's code as sent ("usd", "eth"), "" when null.
func parseSession(raw json.RawMessage, where string) (it diff.Item, skipped provider.Skipped, ok bool) {
	fail := func(id, reason string) (diff.Item, provider.Skipped, bool) {
		return diff.Item{}, provider.Skipped{ID: id, Reason: where + ": " + reason}, false
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return fail("", "not a JSON object")
	}
	var s onrampSession
	if err := json.Unmarshal(raw, &s); err != nil {
		return fail(s.ID, provider.DecodeReason(err))
	}
	if s.Object != nil && *s.Object != onrampObject {
		return fail(s.ID, fmt.Sprintf("object %q is not a %s", provider.Clip(*s.Object, 64), onrampObject))
	}
	if s.ID == "" {
		return fail("", "no id")
	}
	if s.Status == "" {
		return fail(s.ID, "no status")
	}
	created, err := unixTime("created", s.Created)
	if err != nil {
		return fail(s.ID, err.Error())
	}
	var amount *diff.Money
	var txID, wallet string
	if d := s.TransactionDetails; d != nil {
		txID, wallet = d.TransactionID, d.WalletAddress
		if amount, err = money("source_amount", d.SourceAmount, d.SourceCurrency); err == nil && amount == nil {
			amount, err = money("destination_amount", d.DestinationAmount, d.DestinationCurrency)
		}
		if err != nil {
			return fail(s.ID, err.Error())
		}
	}
	rawOut, err := provider.Redact(raw, onrampSecretFields)
	if err != nil {
		return fail(s.ID, err.Error())
	}
	var secret string
	if json.Unmarshal(s.ClientSecret, &secret) == nil && secret != "" {
		if rawOut, err = scrubSecret(rawOut, secret); err != nil {
			return fail(s.ID, err.Error())
		}
		txID = strings.ReplaceAll(txID, secret, secretMark)
		wallet = strings.ReplaceAll(wallet, secret, secretMark)
	}
	status, _ := OnrampStatus.Status(s.Status, "")
	return diff.Item{
		Kind:      kindOnrampSession,
		ID:        s.ID,
		Status:    status,
		CreatedAt: created,
		Amount:    amount,
		Refs:      provider.Refs("transaction_id", txID, "wallet_address", wallet),
		Raw:       rawOut,
	}, provider.Skipped{}, true
}

// unixTime parses a JSON integer of unix seconds as UTC; field names it in errors.
func unixTime(field string, raw json.RawMessage) (time.Time, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return time.Time{}, fmt.Errorf("%s: missing", field)
	}
	sec, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s %s: not an integer unix time", field, provider.Clip(string(raw), 64))
	}
	if sec < 1 || sec > maxUnixTime {
		return time.Time{}, fmt.Errorf("%s %d: outside 1..%d", field, sec, maxUnixTime)
	}
	return time.Unix(sec, 0).UTC(), nil
}

// money maps an amount and its currency; nil when the amount is absent or null.
func money(field string, amount json.RawMessage, currency string) (*diff.Money, error) {
	d, ok, err := provider.ParseAmountJSON(amount)
	if err != nil {
		return nil, fmt.Errorf("transaction_details.%s %w", field, err)
	}
	if !ok {
		return nil, nil
	}
	return &diff.Money{Value: d, Currency: currency}, nil
}

// secretMark stands in for copies of a client secret.
const secretMark = "[client_secret]"

// scrubSecret replaces copies of the session's client secret that survive in raw after
// the client_secret member is gone (a merchant may have put it in metadata or a URL).
// Stripe's secrets are letters, digits and underscores, so a literal copy can only sit
// inside a JSON string and replacing it keeps raw valid. A copy that cannot be replaced
// that way (another kind of secret, or one written with \u escapes) makes the session
// unmappable rather than published with it.
func scrubSecret(raw []byte, secret string) ([]byte, error) {
	errCopy := errors.New("the client_secret value appears in another field and cannot be removed from it")
	if bytes.Contains(raw, []byte(secret)) {
		if !replaceable(secret) {
			return nil, errCopy
		}
		raw = bytes.ReplaceAll(raw, []byte(secret), []byte(secretMark))
		if !json.Valid(raw) {
			return nil, errCopy
		}
	}
	if bytes.IndexByte(raw, '\\') >= 0 && hasString(raw, secret) {
		return nil, errCopy
	}
	return raw, nil
}

// hasString reports whether a member name or string value of the JSON text raw, once
// unescaped, contains s.
func hasString(raw []byte, s string) bool {
	dec := json.NewDecoder(bytes.NewReader(raw))
	for {
		t, err := dec.Token()
		if err != nil {
			return false
		}
		if v, ok := t.(string); ok && strings.Contains(v, s) {
			return true
		}
	}
}

// replaceable reports whether s has at least 8 characters, all letters, digits or
// underscores, with at least one underscore: such text cannot be part of a JSON number,
// literal or punctuation.
func replaceable(s string) bool {
	if len(s) < 8 {
		return false
	}
	underscore := false
	for i := 0; i < len(s); i++ {
		switch b := s[i]; {
		case b == '_':
			underscore = true
		case b >= '0' && b <= '9', b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z':
		default:
			return false
		}
	}
	return underscore
}
