package sim

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
)

const maxAdminBody = 1 << 16

func (s *Sim) adminRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /_sim/items/{provider}", s.adminCreate)
	mux.HandleFunc("POST /_sim/items/{provider}/{id}/status", s.adminForce)
	mux.HandleFunc("GET /_sim/faults/{provider}", s.adminGetFaults)
	mux.HandleFunc("POST /_sim/faults/{provider}", s.adminSetFaults)
	mux.HandleFunc("GET /_sim/faults/{provider}/counts", s.adminFaultCounts)
	mux.HandleFunc("GET /_sim/quirks/{provider}", s.adminGetQuirks)
	mux.HandleFunc("POST /_sim/quirks/{provider}", s.adminSetQuirks)
	mux.HandleFunc("GET /_sim/truth", s.adminTruth)
	mux.HandleFunc("GET /_sim/webhooks/{provider}", s.adminWebhookFaults)
	mux.HandleFunc("POST /_sim/webhooks/{provider}", s.adminWebhookFaults)
}

func adminError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// adminProv resolves the {provider} path value, answering 404 when it is not simulated.
func (s *Sim) adminProv(w http.ResponseWriter, r *http.Request) *prov {
	id := r.PathValue("provider")
	p, ok := s.byID[id]
	if !ok {
		adminError(w, http.StatusNotFound, "provider "+strconv.Quote(id)+" is not simulated")
	}
	return p
}

// decodeAdminBody decodes a JSON request body into v; when it cannot, it answers 400
// and returns false.
func decodeAdminBody(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxAdminBody))
	if err != nil {
		adminError(w, http.StatusBadRequest, "read body: "+err.Error())
		return false
	}
	if err := json.Unmarshal(body, v); err != nil {
		adminError(w, http.StatusBadRequest, "body: "+err.Error())
		return false
	}
	return true
}

// readStatus decodes an optional {"status":"..."} body and resolves the status among
// the provider's documented ones; -1 when the body names none.
func readStatus(w http.ResponseWriter, r *http.Request, p *prov, required bool) (int, bool) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxAdminBody))
	if err != nil {
		adminError(w, http.StatusBadRequest, "read body: "+err.Error())
		return 0, false
	}
	var req struct {
		Status string `json:"status"`
	}
	if len(bytes.TrimSpace(body)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			adminError(w, http.StatusBadRequest, "body: "+err.Error())
			return 0, false
		}
	}
	if req.Status == "" {
		if required {
			adminError(w, http.StatusBadRequest, `body: "status" is required`)
			return 0, false
		}
		return -1, true
	}
	i := slices.Index(p.m.statuses(), req.Status)
	if i < 0 {
		adminError(w, http.StatusBadRequest, "status "+strconv.Quote(req.Status)+" is not a documented "+p.id+" status")
		return 0, false
	}
	return i, true
}

func (s *Sim) adminCreate(w http.ResponseWriter, r *http.Request) {
	p := s.adminProv(w, r)
	if p == nil {
		return
	}
	status, ok := readStatus(w, r, p, false)
	if !ok {
		return
	}
	s.mu.Lock()
	seq := s.createItem(p, s.now().UnixMilli(), status)
	obj := p.render(seq)
	s.flushHooks()
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, obj)
}

func (s *Sim) adminForce(w http.ResponseWriter, r *http.Request) {
	p := s.adminProv(w, r)
	if p == nil {
		return
	}
	status, ok := readStatus(w, r, p, true)
	if !ok {
		return
	}
	s.mu.Lock()
	seq, found := p.lookup(r.PathValue("id"))
	if !found {
		s.mu.Unlock()
		adminError(w, http.StatusNotFound, p.id+" has no item "+strconv.Quote(r.PathValue("id")))
		return
	}
	at := s.now().UnixMilli()
	e := s.liveEnv(p)
	e.change(seq, at, func(it *item) {
		it.status = uint8(status)
		if f, ok := p.m.(statusForcer); ok {
			f.forced(it)
		}
	})
	s.schedule(p, seq, at, e.after(at, 1))
	obj := p.render(seq)
	s.flushHooks()
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, obj)
}

func (s *Sim) adminGetFaults(w http.ResponseWriter, r *http.Request) {
	if p := s.adminProv(w, r); p != nil {
		writeJSON(w, http.StatusOK, p.faults.get())
	}
}

func (s *Sim) adminSetFaults(w http.ResponseWriter, r *http.Request) {
	p := s.adminProv(w, r)
	if p == nil {
		return
	}
	var f Faults
	if !decodeAdminBody(w, r, &f) {
		return
	}
	if err := f.validate(); err != nil {
		adminError(w, http.StatusBadRequest, err.Error())
		return
	}
	p.faults.set(f)
	writeJSON(w, http.StatusOK, f)
}

// adminTruth streams the retained transitions after ?after=N as JSON lines.
func (s *Sim) adminTruth(w http.ResponseWriter, r *http.Request) {
	var after uint64
	if v := r.URL.Query().Get("after"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			adminError(w, http.StatusBadRequest, "after: "+strconv.Quote(v)+" is not a transition number")
			return
		}
		after = n
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, t := range s.truth.since(after) {
		if err := enc.Encode(t); err != nil {
			adminError(w, http.StatusInternalServerError, "encode transition: "+err.Error())
			return
		}
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	_, _ = w.Write(buf.Bytes())
}

// statusForcer is implemented by machines whose items need more than the new status
// when one is forced through the admin API.
type statusForcer interface {
	// forced makes it consistent with the status just forced on it.
	forced(it *item)
}
