// Package sim simulates the five provider list APIs that watcher polls, for the
// one-command demo, end-to-end tests, chaos and benchmark runs. It serves each API at
// its real path with the documented query parameters, ordering, paging, authentication
// and error bodies (see provider-specs/NOTES.md), and a scenario engine creates items
// and moves them through each provider's documented state machine only. Every change
// it makes is recorded as a Transition: the ground truth that watcher's events can be
// checked against.
//
// # Endpoints
//
//	GET /v1/cpn/payments[/{id}]                 circle_cpn_payments            Bearer <CircleCPNKey>
//	GET /v1/w3s/ramp/sessions[/{id}]            circle_ramp_sessions           Bearer <CircleRampKey> (PREFIX:ID:SECRET)
//	GET /v1/exchange/trades/settlements[/{id}]  circle_exchange_settlements    Bearer <CircleSettlementsKey>
//	GET /v1/crypto/onramp_sessions[/{id}]       stripe_crypto_onramp_sessions  Basic <StripeSecretKey>: or Bearer
//	GET /api/v1/pay/summary?merchantId=         coindirect_payments            Hawk (CoindirectHawkID/Key)
//	GET /api/v1/pay/{uuid}/summary
//
// Circle lists return {"data":[...]} by createDate DESC. pageAfter and pageBefore are
// exclusive id cursors (pageAfter pages towards older items); from and to are inclusive
// RFC 3339 bounds on createDate, to defaulting to the time of the request. pageSize
// defaults to 50 (CPN), 10 (ramp) and 50 (settlements) and is silently capped at 200,
// 50 and 200. Every list answer has one Link header with rel="first" and rel="self",
// rel="next" (pageAfter=<last id>) unless no older matching item exists, and rel="prev"
// (pageBefore=<first id>) unless no newer matching item exists; the links keep the
// request's filters and pin to (the request's own text, or the request time) and the
// effective pageSize. An empty page links only first and self. Dates are rendered with
// second precision (CPN, ramp) or millisecond precision (settlements), and stored at
// that precision, so the filters compare exactly what clients see. A pageAfter or
// pageBefore id that names no item, both of them at once, a bad pageSize, date or enum
// value are 400 {"code":2,"message":"API parameter invalid","errors":[...]}.
//
// The Stripe list is newest first by created (unix seconds); equal seconds are ordered
// by id, which here grows with creation order. It takes starting_after/ending_before,
// limit 1..100 (default 10), created (exact) or created[gt|gte|lt|lte], status,
// destination_currency, destination_network and expand[] (ignored); any other
// parameter is a 400 parameter_unknown, as on Stripe. has_more looks away from the
// cursor: towards older items, or newer ones with ending_before. A Stripe-Version
// request header is echoed back; without one the response carries DefaultStripeVersion.
//
// The Coindirect list is a bare JSON array, newest first by dateCreated (epoch ms),
// paged by offset (default 0) and max (default 10, at most 1000, else 400): items created
// while a client pages shift the pages, so a walk can see an item twice but never skips
// an older one. fromDate and toDate are inclusive and accept epoch milliseconds, RFC 3339
// or YYYY-MM-DD (UTC); status matches case-insensitively; q matches the uuid, reference,
// payment address or a transaction hash. A merchantId other than CoindirectMerchantID is
// a 403. Amounts are JSON numbers written as Java's BigDecimal prints them (1E+4,
// 0.030581700000000000, 0E-18 for a zero at scale 18).
//
// Hawk authentication is checked as NOTES §5.1 describes: the mac is
// base64(HMAC-SHA256(key, "hawk.1.header\n{ts}\n{nonce}\n{METHOD}\n{resource}\n{host}\n{port}\n{hash}\n{ext}\n")),
// host and port come from the request's Host header, the port defaulting to 443 when
// the request came over TLS or with X-Forwarded-Proto: https, else 80. By default the
// resource may be the path with its query or without it (Config.HawkQuery narrows
// this: HawkQueryIncluded refuses a mac over the bare path, HawkQueryExcluded one over
// the path with its query). ts must be within HawkSkew of the provider's clock (the
// simulated clock moved by Quirks.ClockOffset), else 401 with
// WWW-Authenticate: Hawk ts="<that clock, unix s>", tsm="<base64(HMAC-SHA256(key,
// "hawk.1.ts\n{ts}\n"))>", error="Stale timestamp"; a nonce seen within 15 minutes for
// the same id is a 429.
//
// # Quirks
//
// Quirks (per provider, off by default; Config.Quirks, SetQuirks, the admin API) make a
// provider behave in ways its documents allow but do not show, so that clients can be
// tested against each: oldest_first (lists ascend by creation time, cursors and offsets
// follow that order), ignore_date_filter (the lower creation-date bound is accepted and
// ignored), page_cap (at most N items per page, silently, paging still correct),
// link_origin (Circle: Link URLs on another origin), unknown_statuses (Circle ramp:
// sessions move through IN_PROGRESS, SUCCEEDED and DECLINED), refuse_stripe_version
// (Stripe: a 400 for the named Stripe-Version, or "*" for any), forbidden (every API
// request is a 403 as for a caller off the IP allowlist) and clock_offset (the
// provider's clock, for Coindirect's Hawk check and every Date header, runs off the
// simulated one). Quirks change how requests are answered, not what happens to items
// (unknown_statuses aside, whose statuses the truth records), so the truth holds under
// every one of them. See Quirks for each one's exact contract.
//
// # Errors
//
// Circle: 401 {"code":401,"message":"Malformed authorization."} (missing, malformed or
// wrong key), 404 {"code":404,"message":"Not found."}, 429 {"code":429,"message":"Too
// many requests."}, 500 and 504 {"code":-1,"message":"Something went wrong."}; every
// answer has an X-Request-Id UUID. Stripe: {"error":{"type","code","message","param",
// "doc_url"}} with 401 invalid_request_error ("Invalid API Key provided: sk_test_****1234",
// or "You did not provide an API key."), 404 resource_missing, 429 code rate_limit,
// 500/504 type api_error; every answer has Request-Id: req_…. Coindirect:
// {"errorList":[{"parameter","message","code"}]} with codes required, invalid,
// forbidden, notFound, unauthorized (401), nonceAlreadyUsed (429), tooManyRequests,
// internalError and gatewayTimeout.
//
// # Scenario
//
// Items arrive per provider as a Poisson process at Config.Rate and move through their
// provider's documented state machine (see each machine's doc comment) with delays
// drawn from Config.Delays and failure branches taken with Config.FailureRate. All
// changes due by a Step happen in order of their own due times, so the truth depends
// only on the seed, the configuration and the final Step time, not on how often Step
// runs. An item keeps 32 bytes of state plus its nested objects; every other field is
// derived from the seed and the item's position when it is rendered, so a million
// history items take about 50 MB and a quarter of a second to build.
//
// Items carry every field of the providers' documented examples (Stripe: of the
// fixture). Circle omits a field that has no value yet: CPN failureReason and
// failureCode (until FAILED), fiatNetworkPaymentRef (until FIAT_PAYMENT_INITIATED),
// statusAddendum and a refund's transactionHash (until COMPLETED); Stripe and
// Coindirect write null instead, as their examples do.
//
// # Admin API
//
// Unauthenticated, under /_sim/:
//
//	POST /_sim/items/{provider}               create one item now; body {"status":"..."} optional -> 201, the item as its API renders it
//	POST /_sim/items/{provider}/{id}/status   body {"status":"FAILED"}: force any documented top-level status -> 200, the item
//	GET  /_sim/faults/{provider}              the provider's Faults as JSON
//	POST /_sim/faults/{provider}              replace them (body: Faults as JSON; {} clears)
//	GET  /_sim/faults/{provider}/counts       the faults injected so far, by kind (FaultCounts as JSON)
//	GET  /_sim/quirks/{provider}              the provider's Quirks as JSON (every field)
//	POST /_sim/quirks/{provider}              replace them (body: Quirks as JSON, unknown fields refused; {} clears) -> 200, the quirks
//	GET  /_sim/truth[?after=N]                the retained transitions with seq > N, as JSON lines
//	GET  /_sim/webhooks/{provider}            the provider's webhook faults and delivery counts (sim.WebhookTarget)
//	POST /_sim/webhooks/{provider}            replace its webhook faults (body: WebhookFaults as JSON)
//
// With Config.Webhooks, the simulator POSTs each status change of a Stripe onramp
// session, Coindirect payment or Circle CPN payment to the configured URL, signed as
// the provider signs (Circle's public key is served at
// GET /v2/notifications/publicKey/{keyId}); see webhooks.go.
//
// A forced status is recorded in the truth like any other change, whether or not the
// provider documents that transition; the engine then continues from it. Ramp sessions
// also accept the statuses of the unknown_statuses quirk. Invalid faults or quirks, or
// quirks that do not apply to the provider, are a 400 naming the field and value.
package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Provider ids, as in watcher's configuration.
const (
	ProviderCPN         = "circle_cpn_payments"
	ProviderRamp        = "circle_ramp_sessions"
	ProviderSettlements = "circle_exchange_settlements"
	ProviderStripe      = "stripe_crypto_onramp_sessions"
	ProviderCoindirect  = "coindirect_payments"
)

// ProviderIDs returns the ids of the simulated providers, in a fixed order.
func ProviderIDs() []string {
	ids := make([]string, len(simulatedProviders))
	for i, sp := range simulatedProviders {
		ids[i] = sp.id
	}
	return ids
}

// Well-known demo credentials, used for every Credentials field left empty. They are
// not secrets: anyone can point a client at a simulator with them.
const (
	DefaultCircleCPNKey         = "TEST_API_KEY:sim-cpn:demo-cpn-secret"
	DefaultCircleRampKey        = "TEST_API_KEY:sim-ramp:demo-ramp-secret"
	DefaultCircleSettlementsKey = "TEST_API_KEY:sim-mint:demo-mint-secret"
	DefaultStripeSecretKey      = "sk_test_simDemoKey0000000000000000"
	DefaultCoindirectHawkID     = "sim-hawk-id"
	DefaultCoindirectHawkKey    = "sim-hawk-key-demo-0000000000000000000000000000000000000000000000"
	DefaultCoindirectMerchantID = "6f0b4c1e-2d3a-4b5c-8d9e-0a1b2c3d4e5f"
)

// DefaultStripeVersion is the Stripe-Version answered when a request sends none.
const DefaultStripeVersion = "2026-08-26.preview"

// Credentials are what the simulated providers accept. Empty fields take the Default*
// constants.
type Credentials struct {
	CircleCPNKey string
	// CircleRampKey must have Circle's PREFIX:ID:SECRET form.
	CircleRampKey        string
	CircleSettlementsKey string
	// StripeSecretKey is accepted as the Basic user (any password) or a Bearer token; a
	// key starting with sk_live_ makes livemode true.
	StripeSecretKey      string
	CoindirectHawkID     string
	CoindirectHawkKey    string
	CoindirectMerchantID string
}

// Delays shape the time between two steps of an item: exponential with mean Mean,
// clamped to [Min, Max]. Some steps scale it (a refund arrives a few delays after its
// payment failed).
type Delays struct {
	Min, Mean, Max time.Duration
}

// HawkQueryMode says which resource strings a Coindirect Hawk mac may cover.
type HawkQueryMode int

const (
	// HawkQueryEither accepts a mac over the path with its query or over the path
	// alone (provider docs disagree on which).
	HawkQueryEither HawkQueryMode = iota
	// HawkQueryIncluded accepts only a mac over the path with its query (standard Hawk,
	// Coindirect's SDK).
	HawkQueryIncluded
	// HawkQueryExcluded accepts only a mac over the path alone.
	HawkQueryExcluded
)

// Config configures a simulator. The zero value of a probability, rate or count means
// zero; DefaultConfig has the demo's values.
type Config struct {
	// Seed makes the scenario reproducible: the same seed, configuration and sequence of
	// Step times give the same items and the same truth.
	Seed int64
	// Rate is the number of new items per second per provider (a Poisson process).
	Rate float64
	// History items per provider exist at start, created evenly over the HistorySpan
	// before it (default 7 days) and already advanced through their lifecycles.
	History     int
	HistorySpan time.Duration
	// OpenShare is the share of history items left part-way, on a status that still
	// moves (they move on once the simulator runs); items created shortly before the
	// start can be open too.
	OpenShare float64
	// OpenResumeWithin spreads the moments at which those open history items move on:
	// each resumes at a uniformly random time within this long after the start. Zero
	// resumes each one step delay after the start.
	OpenResumeWithin time.Duration
	// FailureRate in [0,1] is the probability of taking a failure branch wherever a
	// machine has one (scaled per branch).
	FailureRate float64
	// Delays between steps; a zero Mean means 1s..10s..2m.
	Delays Delays
	// Providers restricts the simulation to these provider ids; nil means all.
	Providers   []string
	Credentials Credentials
	// Faults per provider id; see Faults. Changeable later with SetFaults or the admin API.
	Faults map[string]Faults
	// Quirks per provider id; see Quirks. Changeable later with SetQuirks or the admin
	// API. A provider id that is not simulated is ignored.
	Quirks map[string]Quirks
	// Webhooks per provider id: where circle_cpn_payments, stripe_crypto_onramp_sessions
	// and coindirect_payments deliver their webhooks, and the delivery faults; see
	// WebhookTarget. A provider that is not simulated is ignored. Close stops delivery.
	Webhooks map[string]WebhookTarget
	// Now is the simulated clock, used for the start time, request-time defaults ("to"),
	// Hawk timestamps and Run's steps. Default time.Now.
	Now func() time.Time
	// Tick is Run's step period; default 250ms.
	Tick time.Duration
	// TruthWriter, if set, receives every transition as one JSON line. The first write
	// error stops further writes and is logged.
	TruthWriter io.Writer
	// TruthLimit is how many of the newest transitions Truth and /_sim/truth retain;
	// 0 means 100000, negative means none.
	TruthLimit int
	// HistoryTruth also records the transitions that built the history.
	HistoryTruth bool
	// HawkQuery selects the accepted Hawk resource forms; HawkSkew is the accepted clock
	// difference (default 60s).
	HawkQuery HawkQueryMode
	HawkSkew  time.Duration
	// Log receives the simulator's own messages; nil discards them.
	Log *slog.Logger
}

// DefaultConfig returns the demo scenario: one new item per second per provider, a
// week of 1000 items each, 5% of them open, 10% failures.
func DefaultConfig() Config {
	return Config{
		Seed:        1,
		Rate:        1,
		History:     1000,
		HistorySpan: 7 * 24 * time.Hour,
		OpenShare:   0.05,
		FailureRate: 0.1,
	}
}

const (
	maxHistory        = 10_000_000
	maxEventsPerStep  = 200_000
	defaultTruthLimit = 100_000
)

// Sim is a running simulation. Its methods are safe for concurrent use.
type Sim struct {
	cfg   Config
	creds Credentials
	log   *slog.Logger
	now   func() time.Time
	seed  uint64
	start int64 // unix ms

	mu     sync.RWMutex // guards provs' stores, the heap and rng
	provs  []*prov
	byID   map[string]*prov
	byIdx  []*prov // by position in ProviderIDs; events name providers this way
	heap   eventHeap
	rng    *rand.Rand
	delays Delays

	truth truthLog
	nonce nonceCache
	reqID requestIDs

	circleKeyOnce sync.Once
	circleSigning circleSigningKey
	stopHooks     context.CancelFunc
	hooksDone     sync.WaitGroup
}

// New builds a simulator and its history. It reports every invalid setting.
func New(cfg Config) (*Sim, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Sim{cfg: cfg, creds: cfg.Credentials.withDefaults(), log: cfg.Log, now: cfg.Now, seed: uint64(cfg.Seed)}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.cfg.HistorySpan == 0 {
		s.cfg.HistorySpan = 7 * 24 * time.Hour
	}
	if s.cfg.Tick == 0 {
		s.cfg.Tick = 250 * time.Millisecond
	}
	if s.cfg.HawkSkew == 0 {
		s.cfg.HawkSkew = time.Minute
	}
	s.delays = cfg.Delays
	if s.delays.Mean == 0 {
		s.delays = Delays{Min: time.Second, Mean: 10 * time.Second, Max: 2 * time.Minute}
	}
	limit := cfg.TruthLimit
	if limit == 0 {
		limit = defaultTruthLimit
	}
	s.truth = truthLog{limit: max(limit, 0), w: cfg.TruthWriter, onWErr: func(err error) {
		s.log.Error("Truth writer failed; no further transitions are written", "err", err)
	}}
	s.nonce = nonceCache{seen: map[string]int64{}}
	s.reqID = requestIDs{key: mix64(s.seed ^ 0x7e9)}
	s.rng = rand.New(rand.NewPCG(s.seed, 0x5eed))
	s.start = s.now().UnixMilli()
	s.byID = map[string]*prov{}
	s.byIdx = make([]*prov, len(simulatedProviders))
	for i, id := range ProviderIDs() {
		if cfg.Providers != nil && !slices.Contains(cfg.Providers, id) {
			continue
		}
		p := newProv(s, i, id)
		p.faults.set(cfg.Faults[id])
		p.quirks.set(cfg.Quirks[id])
		if t, ok := cfg.Webhooks[id]; ok {
			p.hook = newHookSender(s, p, t)
		}
		s.provs = append(s.provs, p)
		s.byID[id] = p
		s.byIdx[i] = p
	}
	for _, p := range s.provs {
		s.buildHistory(p)
		if cfg.Rate > 0 {
			p.arrival = s.start + s.interArrival()
			s.heap.push(event{due: p.arrival, prov: uint8(p.idx), seq: -1})
		}
	}
	s.startHooks()
	return s, nil
}

func (c *Config) validate() error {
	var errs []error
	if c.Rate < 0 {
		errs = append(errs, fmt.Errorf("rate: %v is negative", c.Rate))
	}
	if c.History < 0 || c.History > maxHistory {
		errs = append(errs, fmt.Errorf("history: %d is outside 0..%d", c.History, maxHistory))
	}
	if c.HistorySpan < 0 {
		errs = append(errs, fmt.Errorf("history_span: %v is negative", c.HistorySpan))
	}
	if c.OpenResumeWithin < 0 {
		errs = append(errs, fmt.Errorf("open_resume_within: %v is negative", c.OpenResumeWithin))
	}
	for name, v := range map[string]float64{"open_share": c.OpenShare, "failure_rate": c.FailureRate} {
		if !(v >= 0 && v <= 1) {
			errs = append(errs, fmt.Errorf("%s: %v is outside 0..1", name, v))
		}
	}
	d := c.Delays
	if d.Mean != 0 && (d.Min < 0 || d.Mean < 0 || d.Max < d.Min || d.Max == 0) {
		errs = append(errs, fmt.Errorf("delays: {min %v, mean %v, max %v} needs 0 <= min <= max, max > 0 and mean >= 0", d.Min, d.Mean, d.Max))
	}
	for _, id := range c.Providers {
		if !slices.Contains(ProviderIDs(), id) {
			errs = append(errs, fmt.Errorf("providers: unknown provider %q", id))
		}
	}
	for id, f := range c.Faults {
		if !slices.Contains(ProviderIDs(), id) {
			errs = append(errs, fmt.Errorf("faults: unknown provider %q", id))
			continue
		}
		if err := f.validate(); err != nil {
			errs = append(errs, fmt.Errorf("faults[%s]: %w", id, err))
		}
	}
	for _, id := range slices.Sorted(maps.Keys(c.Quirks)) {
		if !slices.Contains(ProviderIDs(), id) {
			errs = append(errs, fmt.Errorf("quirks: unknown provider %q", id))
			continue
		}
		if err := c.Quirks[id].validate(id); err != nil {
			errs = append(errs, fmt.Errorf("quirks[%s]: %w", id, err))
		}
	}
	for _, id := range slices.Sorted(maps.Keys(c.Webhooks)) {
		if err := c.Webhooks[id].validate(id); err != nil {
			errs = append(errs, fmt.Errorf("webhooks[%s]: %w", id, err))
		}
	}
	if k := c.Credentials.CircleRampKey; k != "" {
		parts := strings.Split(k, ":")
		if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
			errs = append(errs, errors.New("credentials.circle_ramp_key: must have the form PREFIX:ID:SECRET"))
		}
	}
	if c.Tick < 0 {
		errs = append(errs, fmt.Errorf("tick: %v is negative", c.Tick))
	}
	if c.HawkSkew < 0 {
		errs = append(errs, fmt.Errorf("hawk_skew: %v is negative", c.HawkSkew))
	}
	if c.HawkQuery < HawkQueryEither || c.HawkQuery > HawkQueryExcluded {
		errs = append(errs, fmt.Errorf("hawk_query: unknown mode %d", c.HawkQuery))
	}
	return errors.Join(errs...)
}

func (c Credentials) withDefaults() Credentials {
	set := func(v *string, def string) {
		if *v == "" {
			*v = def
		}
	}
	set(&c.CircleCPNKey, DefaultCircleCPNKey)
	set(&c.CircleRampKey, DefaultCircleRampKey)
	set(&c.CircleSettlementsKey, DefaultCircleSettlementsKey)
	set(&c.StripeSecretKey, DefaultStripeSecretKey)
	set(&c.CoindirectHawkID, DefaultCoindirectHawkID)
	set(&c.CoindirectHawkKey, DefaultCoindirectHawkKey)
	set(&c.CoindirectMerchantID, DefaultCoindirectMerchantID)
	return c
}

// Handler serves the enabled providers' APIs at their real paths and the admin API
// under /_sim/.
func (s *Sim) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, p := range s.provs {
		p.api.routes(mux)
	}
	s.adminRoutes(mux)
	if p := s.byID[ProviderCPN]; p != nil {
		mux.HandleFunc("GET /v2/notifications/publicKey/{keyId}", s.servePublicKey)
	}
	return mux
}

// Step advances the simulation to now: items due to arrive or to change by then do so,
// in time order, each at its own due time. Steps backwards do nothing. One call makes
// at most 200000 changes; the rest wait for the next call.
func (s *Sim) Step(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(now.UnixMilli())
	s.flushHooks()
}

// Run steps the simulation to the clock every Tick until ctx ends, and returns
// ctx.Err().
func (s *Sim) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.Tick)
	defer t.Stop()
	for {
		s.Step(s.now())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Truth returns the retained transitions (Config.TruthLimit), oldest first.
func (s *Sim) Truth() []Transition {
	return s.truth.since(0)
}

// SetFaults replaces the faults of one provider.
func (s *Sim) SetFaults(provider string, f Faults) error {
	p, ok := s.byID[provider]
	if !ok {
		return fmt.Errorf("set faults: provider %q is not simulated", provider)
	}
	if err := f.validate(); err != nil {
		return fmt.Errorf("set faults: %s: %w", provider, err)
	}
	p.faults.set(f)
	return nil
}

// ListenAndServe runs a simulator built from cfg on addr, with its scenario engine,
// until ctx ends; it then shuts the server down (waiting up to 5s for requests in
// flight) and returns nil. The bound address is logged ("addr").
func ListenAndServe(ctx context.Context, addr string, cfg Config, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Log == nil {
		cfg.Log = log
	}
	s, err := New(cfg)
	if err != nil {
		return fmt.Errorf("simulator: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("simulator: listen %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		// Requests inherit ctx, so hanging faults end with the server.
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	log.Info("Simulator listening", "addr", ln.Addr().String())
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	runDone := make(chan struct{})
	go func() {
		defer close(runDone)
		_ = s.Run(runCtx) // ends with ctx: its error is ctx's
	}()
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	select {
	case err := <-serveErr:
		stopRun()
		<-runDone
		return fmt.Errorf("simulator: serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(shutCtx)
	<-runDone
	s.Close()
	if err != nil {
		return fmt.Errorf("simulator: shutdown %s: %w", ln.Addr(), err)
	}
	return nil
}
