// Package logredact hides secrets in log records: a slog.Handler that replaces every
// occurrence of a configured secret in a record's message and attributes before the
// handler it wraps sees them.
//
// No component logs a secret on purpose, but provider error messages are the
// providers' text, and one may echo a credential in a form its adapter does not
// recognise; this handler is the last line before the log output.
package logredact

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// Handler wraps another handler and passes it records with every secret replaced.
type Handler struct {
	next slog.Handler
	r    *strings.Replacer
}

// New returns a Handler passing records to next after r has replaced the secrets in
// the message, in string attributes, in errors and in anything printed as text (group
// members included). Numbers, times and durations pass unchanged: they cannot hold a
// secret.
func New(next slog.Handler, r *strings.Replacer) *Handler {
	return &Handler{next: next, r: r}
}

// Enabled reports what the wrapped handler reports.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

// Handle passes a redacted copy of rec to the wrapped handler.
func (h *Handler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, h.r.Replace(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

// WithAttrs redacts attrs once, here, rather than at every record.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		red[i] = h.attr(a)
	}
	return &Handler{next: h.next.WithAttrs(red), r: h.r}
}

// WithGroup returns a Handler whose records go to the group of the wrapped handler.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{next: h.next.WithGroup(name), r: h.r}
}

// attr redacts a string, an error or anything printed as text; other kinds (numbers,
// times, durations) cannot hold a secret.
func (h *Handler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, h.r.Replace(v.String()))
	case slog.KindGroup:
		group := v.Group()
		red := make([]any, len(group))
		for i, g := range group {
			red[i] = h.attr(g)
		}
		return slog.Group(a.Key, red...)
	case slog.KindAny:
		var text string
		if err, ok := v.Any().(error); ok {
			text = err.Error()
		} else {
			text = fmt.Sprint(v.Any())
		}
		if red := h.r.Replace(text); red != text {
			return slog.String(a.Key, red)
		}
		return slog.Attr{Key: a.Key, Value: v}
	default:
		return slog.Attr{Key: a.Key, Value: v}
	}
}
