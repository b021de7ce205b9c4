package sim

import (
	"encoding/base64"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/shopspring/decimal"
)

// Onramp session statuses, as Stripe lists them.
const (
	onrampInitialized uint8 = iota
	onrampRejected
	onrampRequiresPayment
	onrampFulfillmentProcessing
	onrampFulfillmentComplete
)

var onrampStatuses = []string{"initialized", "rejected", "requires_payment", "fulfillment_processing", "fulfillment_complete"}

// stripeMachine: initialized -> requires_payment -> fulfillment_processing ->
// fulfillment_complete; a session is rejected (KYC or risk) from initialized or
// requires_payment.
type stripeMachine struct{}

func (stripeMachine) kind() string                { return "onramp_session" }
func (stripeMachine) statuses() []string          { return onrampStatuses }
func (stripeMachine) kidKind(uint8) string        { return "" }
func (stripeMachine) kidStatus(_, _ uint8) string { return "" }
func (stripeMachine) addendum(*item) string       { return "" }

func (stripeMachine) create(e *env, seq int, at int64, status int) int64 {
	if status >= 0 {
		e.item(seq).status = uint8(status)
	}
	e.appeared(seq)
	return e.after(at, 2)
}

func (stripeMachine) step(e *env, seq int, at int64) int64 {
	switch e.item(seq).status {
	case onrampInitialized:
		if e.failing(0.5) {
			e.setStatus(seq, at, onrampRejected)
			return 0
		}
		e.setStatus(seq, at, onrampRequiresPayment)
		return e.after(at, 2)
	case onrampRequiresPayment:
		if e.failing(0.3) {
			e.setStatus(seq, at, onrampRejected)
			return 0
		}
		e.setStatus(seq, at, onrampFulfillmentProcessing)
		return e.after(at, 1)
	case onrampFulfillmentProcessing:
		e.setStatus(seq, at, onrampFulfillmentComplete)
	}
	return 0
}

// stripeDestination is a destination currency on a network, with an indicative USD
// price and the decimals Stripe quotes it with.
type stripeDestination struct {
	currency, network, price string
	scale                    int32
}

var stripeDestinations = []stripeDestination{
	{"btc", "bitcoin", "64000", 8},
	{"eth", "ethereum", "3100", 8},
	{"usdc", "ethereum", "1", 2},
	{"usdc", "solana", "1", 2},
	{"sol", "solana", "150", 6},
	{"usdc", "polygon", "1", 2},
	{"usdc", "base", "1", 2},
	{"xlm", "stellar", "0.12", 4},
	{"avax", "avalanche", "30", 6},
}

var (
	stripeCurrencies = []string{"btc", "eth", "matic", "sol", "xlm", "avax", "usdc"}
	stripeNetworks   = []string{"bitcoin", "ethereum", "base", "polygon", "solana", "stellar", "avalanche"}
)

type stripeFees struct {
	NetworkFeeAmount     *string `json:"network_fee_amount"`
	TransactionFeeAmount *string `json:"transaction_fee_amount"`
}

type stripeWalletAddresses struct {
	Avalanche       *string `json:"avalanche"`
	BaseNetwork     *string `json:"base_network"`
	Bitcoin         *string `json:"bitcoin"`
	DestinationTags struct {
		Stellar *string `json:"stellar"`
	} `json:"destination_tags"`
	Ethereum   *string `json:"ethereum"`
	Optimism   *string `json:"optimism"`
	Polygon    *string `json:"polygon"`
	Solana     *string `json:"solana"`
	Stellar    *string `json:"stellar"`
	Worldchain *string `json:"worldchain"`
	Sui        *string `json:"sui"`
	Tempo      *string `json:"tempo"`
	Celo       *string `json:"celo"`
}

type onrampSession struct {
	ID                 string         `json:"id"`
	Object             string         `json:"object"`
	ClientSecret       string         `json:"client_secret"`
	Created            int64          `json:"created"`
	KYCDetailsProvided bool           `json:"kyc_details_provided"`
	Livemode           bool           `json:"livemode"`
	Metadata           map[string]any `json:"metadata"`
	RedirectURL        *string        `json:"redirect_url"`
	Status             string         `json:"status"`
	TransactionDetails struct {
		DestinationAmount     *string                `json:"destination_amount"`
		DestinationCurrencies []string               `json:"destination_currencies"`
		DestinationCurrency   *string                `json:"destination_currency"`
		DestinationNetwork    *string                `json:"destination_network"`
		DestinationNetworks   []string               `json:"destination_networks"`
		Fees                  *stripeFees            `json:"fees"`
		LockWalletAddress     bool                   `json:"lock_wallet_address"`
		SettlementSpeed       string                 `json:"settlement_speed"`
		SourceAmount          *string                `json:"source_amount"`
		SourceCurrency        *string                `json:"source_currency"`
		TransactionID         *string                `json:"transaction_id"`
		WalletAddress         *string                `json:"wallet_address"`
		WalletAddresses       *stripeWalletAddresses `json:"wallet_addresses"`
	} `json:"transaction_details"`
}

func ptr(s string) *string { return &s }

func stripeDest(p *prov, seq int) (dest stripeDestination, preset bool) {
	d := p.derive(seq, 1)
	return stripeDestinations[d.intn(len(stripeDestinations))], d.intn(3) == 0
}

func stripeAddress(d *deriver, network string) string {
	switch network {
	case "bitcoin":
		return "bc1q" + strings.ToLower(d.alnum(38))
	case "solana":
		return d.base58(44)
	case "stellar":
		return "G" + strings.ToUpper(d.alnum(55))
	}
	return "0x" + d.hex(40)
}

func renderOnramp(p *prov, seq int) onrampSession {
	it := &p.st.items[seq]
	d := p.derive(seq, 0)
	dest, preset := stripeDest(p, seq)
	var o onrampSession
	o.ID, o.Object = p.itemID(seq), "crypto.onramp_session"
	o.ClientSecret = o.ID + "_secret_" + d.alnum(25)
	o.Created = it.created / 1000
	o.Livemode = strings.HasPrefix(p.s.creds.StripeSecretKey, "sk_live_")
	o.Metadata = map[string]any{}
	o.Status = onrampStatuses[it.status]
	o.KYCDetailsProvided = it.status != onrampInitialized
	td := &o.TransactionDetails
	td.DestinationCurrencies = stripeCurrencies
	td.DestinationNetworks = stripeNetworks
	td.SettlementSpeed = []string{"instant", "standard"}[d.intn(2)]
	td.SourceCurrency = ptr("usd")
	address := stripeAddress(&d, dest.network)
	source := randAmount(&d, 20, 5000, 2, 50)
	networkFee := decimal.New(d.between(5, 400), -2)
	txFee := source.Mul(decimal.New(15, -3)).RoundUp(2) // 1.5%
	// The quote exists once the user reached requires_payment; a platform can preset the
	// destination and wallet from the start.
	quoted := it.status >= onrampRequiresPayment
	if preset || quoted {
		td.DestinationCurrency, td.DestinationNetwork = ptr(dest.currency), ptr(dest.network)
		td.WalletAddress, td.LockWalletAddress = ptr(address), preset
		wa := &stripeWalletAddresses{}
		switch dest.network {
		case "bitcoin":
			wa.Bitcoin = ptr(address)
		case "ethereum":
			wa.Ethereum = ptr(address)
		case "base":
			wa.BaseNetwork = ptr(address)
		case "polygon":
			wa.Polygon = ptr(address)
		case "solana":
			wa.Solana = ptr(address)
		case "stellar":
			wa.Stellar = ptr(address)
		case "avalanche":
			wa.Avalanche = ptr(address)
		}
		td.WalletAddresses = wa
	}
	if quoted {
		amount := source.Sub(networkFee).Sub(txFee).DivRound(decimal.RequireFromString(dest.price), dest.scale)
		td.SourceAmount = ptr(fixed(source, 2))
		td.DestinationAmount = ptr(amount.String())
		td.Fees = &stripeFees{NetworkFeeAmount: ptr(fixed(networkFee, 2)), TransactionFeeAmount: ptr(fixed(txFee, 2))}
	}
	if it.status == onrampFulfillmentComplete {
		kd := p.derive(seq, 2)
		if dest.network == "solana" {
			td.TransactionID = ptr(kd.base58(88))
		} else {
			td.TransactionID = ptr("0x" + kd.hex(64))
		}
	}
	return o
}

type stripeErrorBody struct {
	Type    string `json:"type"`
	Code    string `json:"code,omitempty"`
	Message string `json:"message"`
	Param   string `json:"param,omitempty"`
	DocURL  string `json:"doc_url,omitempty"`
}

func stripeError(w http.ResponseWriter, code int, e stripeErrorBody) {
	if e.Code != "" && e.DocURL == "" {
		e.DocURL = "https://stripe.com/docs/error-codes/" + strings.ReplaceAll(e.Code, "_", "-")
	}
	writeJSON(w, code, map[string]any{"error": e})
}

func invalidRequest(w http.ResponseWriter, code, param, msg string) {
	stripeError(w, http.StatusBadRequest, stripeErrorBody{Type: "invalid_request_error", Code: code, Param: param, Message: msg})
}

type stripeAPI struct {
	p *prov
}

func (a *stripeAPI) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/crypto/onramp_sessions", serve(a.p, a, a.list))
	mux.HandleFunc("GET /v1/crypto/onramp_sessions/{id}", serve(a.p, a, a.get))
}

func (a *stripeAPI) begin(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Request-Id", "req_"+a.p.s.reqIDText(14))
	v := r.Header.Get("Stripe-Version")
	if v == "" {
		v = DefaultStripeVersion
	}
	w.Header().Set("Stripe-Version", v)
}

func (a *stripeAPI) fail(w http.ResponseWriter, code int) {
	switch code {
	case http.StatusTooManyRequests:
		stripeError(w, code, stripeErrorBody{Type: "invalid_request_error", Code: "rate_limit",
			Message: "Too many requests hit the API too quickly. We recommend an exponential backoff of your requests."})
	default:
		stripeError(w, code, stripeErrorBody{Type: "api_error",
			Message: "Sorry, something went wrong on Stripe's end. Please retry the request."})
	}
}

// authorize accepts the secret key as the Basic user (any password) or as a Bearer
// token, then refuses the Stripe-Version that Quirks.RefuseStripeVersion names.
func (a *stripeAPI) authorize(w http.ResponseWriter, r *http.Request) bool {
	scheme, cred, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	var key string
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		key = strings.TrimSpace(cred)
	case strings.EqualFold(scheme, "Basic"):
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
		if err == nil {
			key, _, _ = strings.Cut(string(raw), ":")
		}
	}
	if key == "" {
		stripeError(w, http.StatusUnauthorized, stripeErrorBody{Type: "invalid_request_error",
			Message: "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY')."})
		return false
	}
	if key != a.p.s.creds.StripeSecretKey {
		stripeError(w, http.StatusUnauthorized, stripeErrorBody{Type: "invalid_request_error", Code: "api_key_invalid",
			Message: "Invalid API Key provided: " + maskKey(key)})
		return false
	}
	if msg := stripeVersionRefusal(a.p.quirks.get().RefuseStripeVersion, r.Header.Get("Stripe-Version")); msg != "" {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": map[string]any{
			"type": "invalid_request_error", "message": msg, "param": nil}})
		return false
	}
	return true
}

// forbid answers as Stripe does a request from an address its IP allowlist lacks.
func (a *stripeAPI) forbid(w http.ResponseWriter, r *http.Request) {
	stripeError(w, http.StatusForbidden, stripeErrorBody{Type: "invalid_request_error",
		Message: "The IP address " + callerIP(r) + " is not allowed to make requests with this API key. Add it to the key's IP allowlist in the Dashboard."})
}

// maskKey shows a key's sk_test_/sk_live_ prefix and last four characters only.
func maskKey(k string) string {
	prefix := ""
	for _, p := range []string{"sk_test_", "sk_live_", "rk_test_", "rk_live_"} {
		if strings.HasPrefix(k, p) {
			prefix = p
		}
	}
	rest := k[len(prefix):]
	if len(rest) <= 4 {
		return prefix + strings.Repeat("*", len(rest))
	}
	return prefix + strings.Repeat("*", len(rest)-4) + rest[len(rest)-4:]
}

var stripeListParams = []string{
	"created", "created[gt]", "created[gte]", "created[lt]", "created[lte]",
	"destination_currency", "destination_network", "ending_before", "limit", "starting_after", "status",
}

func (a *stripeAPI) list(w http.ResponseWriter, r *http.Request) {
	s := a.p.s
	q := r.URL.Query()
	for k := range q {
		if !slices.Contains(stripeListParams, k) && !strings.HasPrefix(k, "expand[") {
			invalidRequest(w, "parameter_unknown", k, "Received unknown parameter: "+k)
			return
		}
	}
	limit := 10
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			invalidRequest(w, "parameter_invalid_integer", "limit", "Invalid integer: "+v)
			return
		}
		if n < 1 || n > 100 {
			invalidRequest(w, "parameter_invalid_integer", "limit", "Invalid limit: must be between 1 and 100")
			return
		}
		limit = n
	}
	quirks := a.p.quirks.get()
	from, to := int64(-1<<62), int64(1<<62)
	for _, c := range []struct {
		name string
		lo   bool  // a lower bound
		add  int64 // seconds added to the bound
	}{{"created", true, 0}, {"created", false, 0}, {"created[gte]", true, 0}, {"created[gt]", true, 1}, {"created[lte]", false, 0}, {"created[lt]", false, -1}} {
		v := q.Get(c.name)
		if v == "" {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < -1<<40 || n > 1<<40 {
			invalidRequest(w, "parameter_invalid_integer", c.name, "Invalid integer: "+v)
			return
		}
		if c.lo {
			if !quirks.IgnoreDateFilter {
				from = max(from, (n+c.add)*1000)
			}
		} else {
			to = min(to, (n+c.add)*1000+999)
		}
	}
	status := q.Get("status")
	if status != "" && !slices.Contains(onrampStatuses, status) {
		invalidRequest(w, "", "status", "Invalid status: must be one of "+strings.Join(onrampStatuses, ", "))
		return
	}
	after, before := q.Get("starting_after"), q.Get("ending_before")
	if after != "" && before != "" {
		invalidRequest(w, "", "", "You may only specify one of these parameters: ending_before, starting_after.")
		return
	}
	wantCurrency, wantNetwork := q.Get("destination_currency"), q.Get("destination_network")
	match := func(seq int) bool {
		if status != "" && onrampStatuses[a.p.st.items[seq].status] != status {
			return false
		}
		if wantCurrency != "" || wantNetwork != "" {
			dest, preset := stripeDest(a.p, seq)
			if !preset && a.p.st.items[seq].status < onrampRequiresPayment {
				return false
			}
			if wantCurrency != "" && dest.currency != wantCurrency || wantNetwork != "" && dest.network != wantNetwork {
				return false
			}
		}
		return true
	}

	s.mu.RLock()
	lo, hi := a.p.st.span(from, to)
	win := window{lo: lo, hi: hi, match: a.p.listable(s.now().UnixMilli(), match), oldestFirst: quirks.OldestFirst}
	limit = servedSize(limit, quirks)
	// cursor finds the session a cursor parameter names; when there is none it
	// unlocks and answers Stripe's error.
	cursor := func(param, id string) (int, bool) {
		cur, ok := a.p.lookup(id)
		if !ok {
			s.mu.RUnlock()
			invalidRequest(w, "resource_missing", param, "No such crypto.onramp_session: '"+id+"'")
		}
		return cur, ok
	}
	var idx []int
	hasMore := false
	switch {
	case before != "":
		cur, ok := cursor("ending_before", before)
		if !ok {
			return
		}
		idx = win.preceding(cur, limit)
		hasMore = len(idx) > 0 && win.anyPreceding(idx[0])
	case after != "":
		cur, ok := cursor("starting_after", after)
		if !ok {
			return
		}
		idx = win.following(cur, limit)
		hasMore = len(idx) > 0 && win.anyFollowing(idx[len(idx)-1])
	default:
		idx = win.first(limit)
		hasMore = len(idx) > 0 && win.anyFollowing(idx[len(idx)-1])
	}
	data := make([]onrampSession, len(idx))
	for i, seq := range idx {
		data[i] = renderOnramp(a.p, seq)
	}
	s.mu.RUnlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"object": "list", "data": data, "has_more": hasMore, "url": "/v1/crypto/onramp_sessions",
	})
}

func (a *stripeAPI) get(w http.ResponseWriter, r *http.Request) {
	s := a.p.s
	id := r.PathValue("id")
	s.mu.RLock()
	seq, ok := a.p.lookup(id)
	var o onrampSession
	if ok {
		o = renderOnramp(a.p, seq)
	}
	s.mu.RUnlock()
	if !ok {
		stripeError(w, http.StatusNotFound, stripeErrorBody{Type: "invalid_request_error", Code: "resource_missing",
			Param: "id", Message: "No such crypto.onramp_session: '" + id + "'"})
		return
	}
	writeJSON(w, http.StatusOK, o)
}

// onrampSim registers stripe_crypto_onramp_sessions: Stripe crypto onramp sessions (see simulatedProviders).
var onrampSim = simulated{
	id: ProviderStripe, source: "onramp", listPath: "/v1/crypto/onramp_sessions",
	setup: func(p *prov, key uint64) {
		p.m, p.precision = stripeMachine{}, 1000
		p.render = func(seq int) any { return renderOnramp(p, seq) }
		sc := newStripeCodec(key)
		p.itemID = func(seq int) string { return sc.encode("cos_", uint64(seq)) }
		p.decodeID = func(id string) (uint64, bool) { return sc.decode("cos_", id) }
		p.api = &stripeAPI{p: p}
	},
	keys: func(c Credentials) map[string]string {
		return map[string]string{"api_key": c.StripeSecretKey, "stripe_version": DefaultStripeVersion}
	},
	final: []string{"rejected", "fulfillment_complete"},
}
