package stateapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// Access is how an admin listener authenticates requests (see the package doc).
type Access struct {
	// Token is the bearer token; "" when none is configured.
	Token string
	// Socket is set for a unix socket listener, whose file mode is the
	// authentication.
	Socket bool
}

// check returns nil when r may be served, else an error wrapping ErrUnauthorized that
// says what is missing.
func (a Access) check(r *http.Request) error {
	if a.Socket {
		return nil
	}
	if a.Token == "" {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			return nil
		}
		return fmt.Errorf("%w: this admin listener has no token, so it refuses every change over TCP: set admin.token_file, or listen on a unix socket (admin.listen: unix:/PATH)", ErrUnauthorized)
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || !sameToken(got, a.Token) {
		return fmt.Errorf("%w: send Authorization: Bearer and the token of admin.token_file", ErrUnauthorized)
	}
	return nil
}

// CheckPage is check for the read-only status page (GET / and GET /status.json):
// the same rules, except that the token may also come as the query parameter token,
// as a browser cannot send a bearer header by itself. No other endpoint accepts it
// there.
func (a Access) CheckPage(r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return fmt.Errorf("%w: the status page is read-only", ErrBadRequest)
	}
	if !a.Socket && a.Token != "" {
		if q := r.URL.Query().Get("token"); q != "" && sameToken(q, a.Token) {
			return nil
		}
	}
	if err := a.check(r); err != nil {
		return fmt.Errorf("%w, or open the page as /?token=TOKEN", err)
	}
	return nil
}

// sameToken compares in constant time; hashing first makes the time independent of
// the lengths too.
func sameToken(got, want string) bool {
	g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

// Handler serves the /state/ endpoints of the package doc from rd, each request
// authenticated as a says.
func Handler(rd Reader, a Access) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /state/sources", func(w http.ResponseWriter, r *http.Request) {
		list, err := rd.Sources(r.Context())
		writeJSON(w, http.StatusOK, list, err)
	})
	mux.HandleFunc("GET /state/items/{source}/{id}", func(w http.ResponseWriter, r *http.Request) {
		rec, err := rd.Record(r.Context(), r.PathValue("source"), r.PathValue("id"))
		writeJSON(w, http.StatusOK, rec, err)
	})
	mux.HandleFunc("GET /state/open/{source}", func(w http.ResponseWriter, r *http.Request) {
		list, err := rd.Open(r.Context(), r.PathValue("source"))
		writeJSON(w, http.StatusOK, list, err)
	})
	mux.HandleFunc("GET /state/export/{source}", func(w http.ResponseWriter, r *http.Request) {
		writeLines(w, func(fn func(any) error) error {
			return rd.Export(r.Context(), r.PathValue("source"), func(rec Record) error { return fn(rec) })
		})
	})
	mux.HandleFunc("GET /state/outbox", func(w http.ResponseWriter, r *http.Request) {
		limit := 0
		if q := r.URL.Query().Get("limit"); q != "" {
			n, err := strconv.Atoi(q)
			if err != nil || n < 0 {
				writeJSON(w, 0, nil, fmt.Errorf("%w: limit %q is not a count", ErrBadRequest, q))
				return
			}
			limit = n
		}
		writeLines(w, func(fn func(any) error) error {
			return rd.Outbox(r.Context(), limit, func(o OutboxEntry) error { return fn(o) })
		})
	})
	mux.HandleFunc("POST /state/rebaseline/{source}", func(w http.ResponseWriter, r *http.Request) {
		// A browser cannot send this content type to another origin without a CORS
		// preflight, which this server never grants.
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			writeJSON(w, 0, nil, fmt.Errorf("%w: Content-Type %q; send application/json", ErrBadRequest, ct))
			return
		}
		name := r.PathValue("source")
		err := rd.Rebaseline(r.Context(), name)
		writeJSON(w, http.StatusAccepted, map[string]string{"source": name, "rebaseline": "requested"}, err)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := a.check(r); err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="watcher admin"`)
			writeJSON(w, 0, nil, err)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// writeJSON writes v with status code, or err as {"error": …} with a status that
// fits it.
func writeJSON(w http.ResponseWriter, code int, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		code = http.StatusInternalServerError
		switch {
		case errors.Is(err, ErrUnknownSource), errors.Is(err, ErrNotFound):
			code = http.StatusNotFound
		case errors.Is(err, ErrBadRequest):
			code = http.StatusBadRequest
		case errors.Is(err, ErrUnauthorized):
			code = http.StatusUnauthorized
		}
		v = streamError{Error: err.Error()}
	}
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// writeLines streams JSON Lines from each; an error before the first line is a
// plain error answer, one after it ends the stream with an {"error": …} line, which
// the Client turns back into an error.
func writeLines(w http.ResponseWriter, each func(fn func(any) error) error) {
	started := false
	enc := json.NewEncoder(w)
	err := each(func(v any) error {
		if !started {
			w.Header().Set("Content-Type", "application/jsonl")
			started = true
		}
		return enc.Encode(v)
	})
	switch {
	case err != nil && !started:
		writeJSON(w, 0, nil, err)
	case err != nil:
		_ = enc.Encode(streamError{Error: err.Error()})
	case !started:
		w.Header().Set("Content-Type", "application/jsonl")
		w.WriteHeader(http.StatusOK)
	}
}
