package webhook

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/payments-watcher/watcher/poller"
)

// DefaultMaxBody bounds a delivery's body.
const DefaultMaxBody = 1 << 20

// Hinter is the poller of a source (poller.Poller.Hint).
type Hinter interface {
	Hint(id string) string
}

// Options configure a Handler.
type Options struct {
	// Verifiers are the configured sources' verifiers by source name; a source
	// absent from it refuses deliveries (404).
	Verifiers map[string]Verifier
	// Target returns the poller of source when this process polls it, nil when it
	// does not (a replica without the source's lease): then nothing is read, and
	// the delivery is acknowledged (202) because the holder's polling catches up.
	Target func(source string) Hinter
	// MaxBody bounds a body; 0 is DefaultMaxBody.
	MaxBody int64
	Metrics *Metrics
	Log     *slog.Logger
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// Handler serves POST and HEAD /webhooks/{source}.
type Handler struct {
	opt     Options
	replays replays
	mux     *http.ServeMux
}

// NewHandler returns the handler of the webhook listener.
func NewHandler(opt Options) *Handler {
	if opt.MaxBody <= 0 {
		opt.MaxBody = DefaultMaxBody
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	if opt.Target == nil {
		opt.Target = func(string) Hinter { return nil }
	}
	h := &Handler{opt: opt, replays: replays{seen: map[string]time.Time{}}, mux: http.NewServeMux()}
	h.mux.HandleFunc("HEAD /webhooks/{source}", h.head)
	h.mux.HandleFunc("POST /webhooks/{source}", h.post)
	return h
}

// ServeHTTP answers HEAD with 200 for a source that takes webhooks, and POST as
// described by the Result* constants. A verified delivery only queues a read.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mux.ServeHTTP(w, r)
}

func (h *Handler) head(w http.ResponseWriter, r *http.Request) {
	if _, ok := h.opt.Verifiers[r.PathValue("source")]; !ok {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (h *Handler) post(w http.ResponseWriter, r *http.Request) {
	source := r.PathValue("source")
	v, ok := h.opt.Verifiers[source]
	if !ok {
		// Not counted: the label would take any value a caller writes.
		http.Error(w, "this source takes no webhooks", http.StatusNotFound)
		return
	}
	result, code := h.deliver(r, source, v)
	h.opt.Metrics.count(source, result)
	if code >= 400 {
		h.opt.Log.Debug("webhook refused", "source", source, "result", result)
	}
	if code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, result+"\n")
}

// deliver verifies one delivery and hints its item; it returns the result and the
// status code to answer.
func (h *Handler) deliver(r *http.Request, source string, v Verifier) (string, int) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, h.opt.MaxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return ResultTooLarge, http.StatusRequestEntityTooLarge
		}
		return ResultMalformed, http.StatusBadRequest
	}
	now := h.opt.Now()
	got, err := v.Verify(r.Context(), Delivery{Header: r.Header, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Body: body, Now: now})
	switch {
	case errors.Is(err, ErrUnsigned):
		return ResultUnsigned, http.StatusUnauthorized
	case errors.Is(err, ErrStale):
		return ResultStale, http.StatusUnauthorized
	case errors.Is(err, ErrMalformed):
		return ResultMalformed, http.StatusBadRequest
	case errors.Is(err, ErrKeyUnavailable):
		return ResultKeyUnavailable, http.StatusServiceUnavailable
	case err != nil:
		return ResultBadSignature, http.StatusUnauthorized
	}
	if h.replays.seenBefore(source+"\x00"+got.ReplayKey, now) {
		return ResultReplayed, http.StatusOK
	}
	if got.ID == "" {
		return ResultIgnored, http.StatusOK
	}
	t := h.opt.Target(source)
	if t == nil {
		return ResultNotHeld, http.StatusAccepted
	}
	switch t.Hint(got.ID) {
	case poller.HintQueued:
		return ResultAccepted, http.StatusAccepted
	case poller.HintCoalesced:
		return ResultCoalesced, http.StatusAccepted
	case poller.HintDropped:
		return ResultDropped, http.StatusAccepted
	default:
		return ResultUnsupported, http.StatusNotFound
	}
}
