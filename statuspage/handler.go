package statuspage

import (
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"time"

	"github.com/payments-watcher/watcher/stateapi"
)

//go:embed page.html
var files embed.FS

var page = template.Must(template.New("page.html").Funcs(template.FuncMap{
	"spark": func(vals []int) string { return spark(vals, chartWidth, chartHeight) },
	"area":  func(vals []int) string { return area(vals, chartWidth, chartHeight) },
	"last": func(vals []int) int {
		if len(vals) == 0 {
			return 0
		}
		return vals[len(vals)-1]
	},
	"sum":   sum,
	"peak":  maxOf,
	"stamp": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"or":    func(s, alt string) string { return orDefault(s, alt) },
}).ParseFS(files, "page.html"))

// Chart size, in SVG user units.
const (
	chartWidth  = 240
	chartHeight = 36
)

// Handler serves the status page of p at GET / and its JSON twin at GET
// /status.json, each request authenticated by a.CheckPage (see the package doc).
func Handler(p *Page, a stateapi.Access) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		snap := p.Snapshot(r.Context())
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := page.Execute(w, view{Snapshot: snap, now: snap.Generated}); err != nil {
			fmt.Fprintf(w, "<p>page not rendered: %s</p>", template.HTMLEscapeString(err.Error()))
		}
	})
	mux.HandleFunc("GET /status.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(p.Snapshot(r.Context()))
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Cache-Control", "no-store")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'")
		if err := a.CheckPage(r); err != nil {
			h.Set("WWW-Authenticate", `Bearer realm="watcher admin"`)
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// view is what the template renders: the snapshot and the time ages count from.
type view struct {
	Snapshot
	now time.Time
}

// Ago returns how long before the snapshot t (a time.Time or *time.Time) was, for
// the template; "never" for a nil or zero time.
func (v view) Ago(t any) string {
	var at time.Time
	switch t := t.(type) {
	case time.Time:
		at = t
	case *time.Time:
		if t != nil {
			at = *t
		}
	}
	if at.IsZero() {
		return "never"
	}
	return ago(v.now, at)
}

// ago renders now-t roughly: "12s ago", "5m ago", "3h ago", "2d ago".
func ago(now, t time.Time) string {
	d := max(0, now.Sub(t))
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd ago", int(d/(24*time.Hour)))
}

func sum(vals []int) int {
	n := 0
	for _, v := range vals {
		n += v
	}
	return n
}

func maxOf(vals []int) int {
	m := 0
	for _, v := range vals {
		m = max(m, v)
	}
	return m
}

func orDefault(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}
