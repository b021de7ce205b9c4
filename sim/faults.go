package sim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Faults make one provider misbehave. Each request draws its fate in this order: added
// latency; a 429 burst in progress or starting (RateLimitRate); a hang (TimeoutRate);
// a 500 (ErrorRate); a malformed or truncated body (MalformedRate, TruncateRate) on an
// otherwise normal answer. Error answers have the provider's own error body. Two faults
// change what a list holds rather than how it is answered: late items (LateRate) and,
// for Coindirect's offset pages, items arriving during a walk (PageDriftRate). Every fault injected is
// counted (FaultCounts).
//
// In JSON (admin API) the fields are snake_case and durations are Go duration strings:
// {"error_rate":0.1,"rate_limit_rate":0.05,"rate_limit_burst":3,"retry_after":"2s",
// "latency":"100ms","latency_jitter":"50ms","timeout_rate":0.01,"max_hang":"30s",
// "malformed_rate":0.01,"truncate_rate":0.01,"late_rate":0.1,"late_by":"20s",
// "page_drift_rate":0.2,"page_drift_max":3}.
type Faults struct {
	// ErrorRate is the probability of a 500 answer.
	ErrorRate float64
	// RateLimitRate is the probability that a request starts a burst of RateLimitBurst
	// (default 3) consecutive 429 answers, itself included, each with Retry-After:
	// RetryAfter rounded up to whole seconds (default 1s).
	RateLimitRate  float64
	RateLimitBurst int
	RetryAfter     time.Duration
	// Latency is added to every answer, plus a uniform extra in [0, LatencyJitter).
	Latency       time.Duration
	LatencyJitter time.Duration
	// TimeoutRate is the probability that a request hangs until the client gives up or
	// MaxHang (default 30s) passes; then it gets a 504 with the provider's error body.
	TimeoutRate float64
	MaxHang     time.Duration
	// MalformedRate is the probability that a body is made invalid JSON (a '<' after
	// its first byte); TruncateRate that the connection is cut half-way through a body
	// whose Content-Length announced all of it.
	MalformedRate float64
	TruncateRate  float64
	// LateRate is the share of items that list answers leave out until some time after
	// their creation: each late item becomes listable at a moment drawn uniformly from
	// (0, LateBy] (default 10s) after it was created, while a read by id finds it at
	// once. Which items are late, and by how much, depends only on the seed, the item
	// and these two settings; its creation time does not change when it shows up, so it
	// appears below newer items that a walk may already have passed.
	LateRate float64
	LateBy   time.Duration
	// PageDriftRate is the probability that 1..PageDriftMax (default 3) new payments
	// are created just before a Coindirect list request with an offset above 0 is
	// answered, as if they had arrived while a client walks the pages: every older
	// payment moves that many places down, so the page repeats the end of the
	// previous one. They are real items (in the truth, moving on like any other), so
	// the truth then depends on when such requests come too. Other providers ignore it.
	PageDriftRate float64
	PageDriftMax  int
}

type faultsJSON struct {
	ErrorRate      float64 `json:"error_rate"`
	RateLimitRate  float64 `json:"rate_limit_rate"`
	RateLimitBurst int     `json:"rate_limit_burst"`
	RetryAfter     string  `json:"retry_after,omitempty"`
	Latency        string  `json:"latency,omitempty"`
	LatencyJitter  string  `json:"latency_jitter,omitempty"`
	TimeoutRate    float64 `json:"timeout_rate"`
	MaxHang        string  `json:"max_hang,omitempty"`
	MalformedRate  float64 `json:"malformed_rate"`
	TruncateRate   float64 `json:"truncate_rate"`
	LateRate       float64 `json:"late_rate,omitempty"`
	LateBy         string  `json:"late_by,omitempty"`
	PageDriftRate  float64 `json:"page_drift_rate,omitempty"`
	PageDriftMax   int     `json:"page_drift_max,omitempty"`
}

// MarshalJSON writes f in the admin API's form.
func (f Faults) MarshalJSON() ([]byte, error) {
	dur := func(d time.Duration) string {
		if d == 0 {
			return ""
		}
		return d.String()
	}
	return json.Marshal(faultsJSON{
		ErrorRate: f.ErrorRate, RateLimitRate: f.RateLimitRate, RateLimitBurst: f.RateLimitBurst,
		RetryAfter: dur(f.RetryAfter), Latency: dur(f.Latency), LatencyJitter: dur(f.LatencyJitter),
		TimeoutRate: f.TimeoutRate, MaxHang: dur(f.MaxHang), MalformedRate: f.MalformedRate, TruncateRate: f.TruncateRate,
		LateRate: f.LateRate, LateBy: dur(f.LateBy), PageDriftRate: f.PageDriftRate, PageDriftMax: f.PageDriftMax,
	})
}

// UnmarshalJSON reads the admin API's form; unknown fields and bad durations are errors.
func (f *Faults) UnmarshalJSON(b []byte) error {
	var j faultsJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return err
	}
	var errs []error
	dur := func(name, s string) time.Duration {
		if s == "" {
			return 0
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not a duration", name, s))
		}
		return d
	}
	*f = Faults{
		ErrorRate: j.ErrorRate, RateLimitRate: j.RateLimitRate, RateLimitBurst: j.RateLimitBurst,
		RetryAfter: dur("retry_after", j.RetryAfter), Latency: dur("latency", j.Latency),
		LatencyJitter: dur("latency_jitter", j.LatencyJitter), TimeoutRate: j.TimeoutRate,
		MaxHang: dur("max_hang", j.MaxHang), MalformedRate: j.MalformedRate, TruncateRate: j.TruncateRate,
		LateRate: j.LateRate, LateBy: dur("late_by", j.LateBy), PageDriftRate: j.PageDriftRate, PageDriftMax: j.PageDriftMax,
	}
	return errors.Join(errs...)
}

func (f Faults) validate() error {
	var errs []error
	for _, r := range []struct {
		name string
		v    float64
	}{{"error_rate", f.ErrorRate}, {"rate_limit_rate", f.RateLimitRate}, {"timeout_rate", f.TimeoutRate},
		{"malformed_rate", f.MalformedRate}, {"truncate_rate", f.TruncateRate}, {"late_rate", f.LateRate},
		{"page_drift_rate", f.PageDriftRate}} {
		if !(r.v >= 0 && r.v <= 1) {
			errs = append(errs, fmt.Errorf("%s: %v is outside 0..1", r.name, r.v))
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"retry_after", f.RetryAfter}, {"latency", f.Latency}, {"latency_jitter", f.LatencyJitter}, {"max_hang", f.MaxHang},
		{"late_by", f.LateBy}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s: %v is negative", d.name, d.v))
		}
	}
	if f.RateLimitBurst < 0 {
		errs = append(errs, fmt.Errorf("rate_limit_burst: %d is negative", f.RateLimitBurst))
	}
	if f.PageDriftMax < 0 {
		errs = append(errs, fmt.Errorf("page_drift_max: %d is negative", f.PageDriftMax))
	}
	return errors.Join(errs...)
}

// fate is what a request's faults decided.
type fate int

const (
	fateNormal fate = iota
	fateRateLimited
	fateHang
	fateServerError
	fateMalformed
	fateTruncated
)

type faultState struct {
	mu     sync.Mutex
	f      Faults
	burst  int // 429 answers still due in the current burst
	rng    *rand.Rand
	counts FaultCounts
	late   map[int]bool // late items left out of a list answer at least once
}

// FaultCounts are the faults one provider has injected since the simulator started.
type FaultCounts struct {
	// ServerErrors counts 500 answers; RateLimited 429 answers (each answer of a burst);
	// Hangs the requests held until the client gave up or MaxHang passed.
	ServerErrors uint64 `json:"server_errors"`
	RateLimited  uint64 `json:"rate_limited"`
	Hangs        uint64 `json:"hangs"`
	// Malformed and Truncated count the bodies damaged.
	Malformed uint64 `json:"malformed"`
	Truncated uint64 `json:"truncated"`
	// LateItems counts the distinct items a list answer left out because they were not
	// listable yet; PageDrifts the Coindirect pages preceded by new payments.
	LateItems  uint64 `json:"late_items"`
	PageDrifts uint64 `json:"page_drifts"`
}

// Total is the number of faults counted.
func (c FaultCounts) Total() uint64 {
	return c.ServerErrors + c.RateLimited + c.Hangs + c.Malformed + c.Truncated + c.LateItems + c.PageDrifts
}

// count records one request's fault.
func (fs *faultState) count(fa fate) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	switch fa {
	case fateRateLimited:
		fs.counts.RateLimited++
	case fateHang:
		fs.counts.Hangs++
	case fateServerError:
		fs.counts.ServerErrors++
	case fateMalformed:
		fs.counts.Malformed++
	case fateTruncated:
		fs.counts.Truncated++
	}
}

// drift returns how many payments to create before answering a Coindirect list page
// at offset: 0, or 1..PageDriftMax when the page drifts.
func (fs *faultState) drift(offset int) int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if offset <= 0 || fs.f.PageDriftRate <= 0 || fs.rng.Float64() >= fs.f.PageDriftRate {
		return 0
	}
	most := fs.f.PageDriftMax
	if most <= 0 {
		most = 3
	}
	fs.counts.PageDrifts++
	return 1 + fs.rng.IntN(most)
}

// noteLate records that a late item was left out of a list answer.
func (fs *faultState) noteLate(seq int) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.late == nil {
		fs.late = map[int]bool{}
	}
	if !fs.late[seq] {
		fs.late[seq] = true
		fs.counts.LateItems++
	}
}

// listable returns the filter of the items a list answered at now (unix ms) may hold:
// match (nil: every item) without the late items that are not listable yet. It returns
// nil when match is nil and no item is late. The caller holds s.mu.
func (p *prov) listable(now int64, match func(int) bool) func(int) bool {
	f := p.faults.get()
	if f.LateRate <= 0 {
		return match
	}
	by := f.LateBy.Milliseconds()
	if by <= 0 {
		by = 10_000
	}
	threshold := uint64(f.LateRate * (1 << 53))
	return func(seq int) bool {
		if match != nil && !match(seq) {
			return false
		}
		d := p.derive(seq, 0x1a7e)
		if d.next()>>11 >= threshold {
			return true
		}
		if p.st.items[seq].created+1+int64(d.next()%uint64(by)) <= now {
			return true
		}
		p.faults.noteLate(seq)
		return false
	}
}

// FaultCounts returns the faults each simulated provider has injected so far, by
// provider id.
func (s *Sim) FaultCounts() map[string]FaultCounts {
	out := make(map[string]FaultCounts, len(s.provs))
	for _, p := range s.provs {
		p.faults.mu.Lock()
		out[p.id] = p.faults.counts
		p.faults.mu.Unlock()
	}
	return out
}

// adminFaultCounts answers GET /_sim/faults/{provider}/counts.
func (s *Sim) adminFaultCounts(w http.ResponseWriter, r *http.Request) {
	if p := s.adminProv(w, r); p != nil {
		p.faults.mu.Lock()
		c := p.faults.counts
		p.faults.mu.Unlock()
		writeJSON(w, http.StatusOK, c)
	}
}

func (fs *faultState) set(f Faults) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.f, fs.burst = f, 0
}

func (fs *faultState) get() Faults {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.f
}

// decide draws one request's latency and fate.
func (fs *faultState) decide() (latency time.Duration, fa fate, f Faults) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	f = fs.f
	latency = f.Latency
	if f.LatencyJitter > 0 {
		latency += time.Duration(fs.rng.Int64N(int64(f.LatencyJitter)))
	}
	roll := func(p float64) bool { return p > 0 && fs.rng.Float64() < p }
	switch {
	case fs.burst > 0:
		fs.burst--
		fa = fateRateLimited
	case roll(f.RateLimitRate):
		fs.burst = burstOf(f) - 1
		fa = fateRateLimited
	case roll(f.TimeoutRate):
		fa = fateHang
	case roll(f.ErrorRate):
		fa = fateServerError
	case roll(f.MalformedRate):
		fa = fateMalformed
	case roll(f.TruncateRate):
		fa = fateTruncated
	}
	return latency, fa, f
}

func burstOf(f Faults) int {
	if f.RateLimitBurst > 0 {
		return f.RateLimitBurst
	}
	return 3
}

func retryAfterSeconds(f Faults) string {
	d := f.RetryAfter
	if d <= 0 {
		d = time.Second
	}
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10)
}

// flavor is a provider's way of answering: its per-request headers, its error bodies
// and its authentication.
type flavor interface {
	// begin sets the headers every answer carries.
	begin(w http.ResponseWriter, r *http.Request)
	// fail writes one of the generic errors (429, 500, 504) in the provider's shape.
	fail(w http.ResponseWriter, code int)
	// authorize checks the request's credentials and, when they are wrong, answers.
	authorize(w http.ResponseWriter, r *http.Request) bool
	// forbid answers 403 as the provider does for a caller its IP allowlist lacks.
	forbid(w http.ResponseWriter, r *http.Request)
}

// serve wraps a provider endpoint with its flavor's headers, the Date of a provider
// clock that runs off (Quirks.ClockOffset), a refusal of every caller
// (Quirks.Forbidden), the provider's faults and authentication.
func serve(p *prov, fl flavor, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		fl.begin(w, r)
		p.setDate(w)
		if p.quirks.get().Forbidden {
			fl.forbid(w, r)
			return
		}
		latency, fa, f := p.faults.decide()
		if latency > 0 {
			t := time.NewTimer(latency)
			select {
			case <-r.Context().Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		switch fa {
		case fateRateLimited, fateHang, fateServerError:
			p.faults.count(fa)
		}
		switch fa {
		case fateRateLimited:
			w.Header().Set("Retry-After", retryAfterSeconds(f))
			fl.fail(w, http.StatusTooManyRequests)
			return
		case fateHang:
			hang := f.MaxHang
			if hang <= 0 {
				hang = 30 * time.Second
			}
			t := time.NewTimer(hang)
			defer t.Stop()
			select {
			case <-r.Context().Done():
				return
			case <-t.C:
				fl.fail(w, http.StatusGatewayTimeout)
			}
			return
		case fateServerError:
			fl.fail(w, http.StatusInternalServerError)
			return
		}
		if !fl.authorize(w, r) {
			return
		}
		if fa == fateNormal {
			h(w, r)
			return
		}
		p.faults.count(fa)
		rec := &recorder{header: http.Header{}, code: http.StatusOK}
		h(rec, r)
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		body := rec.body.Bytes()
		if fa == fateMalformed {
			if len(body) > 0 {
				body = append(append(body[:1:1], '<'), body[1:]...)
			}
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.WriteHeader(rec.code)
			_, _ = w.Write(body)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(rec.code)
		_, _ = w.Write(body[:len(body)/2])
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		// Cuts the connection: the client sees the body end early.
		panic(http.ErrAbortHandler)
	}
}

// recorder buffers an answer so that a fault can damage it.
type recorder struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) WriteHeader(code int)        { r.code = code }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }

// writeJSON answers v as JSON with code.
func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only the simulator's own types are written; they always marshal.
		http.Error(w, "encode response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	_, _ = w.Write(b)
}
