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
// otherwise normal answer. Error answers have the provider's own error body.
//
// In JSON (admin API) the fields are snake_case and durations are Go duration strings:
// {"error_rate":0.1,"rate_limit_rate":0.05,"rate_limit_burst":3,"retry_after":"2s",
// "latency":"100ms","latency_jitter":"50ms","timeout_rate":0.01,"max_hang":"30s",
// "malformed_rate":0.01,"truncate_rate":0.01}.
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
	}
	return errors.Join(errs...)
}

func (f Faults) validate() error {
	var errs []error
	for _, r := range []struct {
		name string
		v    float64
	}{{"error_rate", f.ErrorRate}, {"rate_limit_rate", f.RateLimitRate}, {"timeout_rate", f.TimeoutRate},
		{"malformed_rate", f.MalformedRate}, {"truncate_rate", f.TruncateRate}} {
		if !(r.v >= 0 && r.v <= 1) {
			errs = append(errs, fmt.Errorf("%s: %v is outside 0..1", r.name, r.v))
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"retry_after", f.RetryAfter}, {"latency", f.Latency}, {"latency_jitter", f.LatencyJitter}, {"max_hang", f.MaxHang}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s: %v is negative", d.name, d.v))
		}
	}
	if f.RateLimitBurst < 0 {
		errs = append(errs, fmt.Errorf("rate_limit_burst: %d is negative", f.RateLimitBurst))
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
	mu    sync.Mutex
	f     Faults
	burst int // 429 answers still due in the current burst
	rng   *rand.Rand
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
}

// serve wraps a provider endpoint with its flavor's headers, the provider's faults and
// authentication.
func serve(p *prov, fl flavor, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		fl.begin(w, r)
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
