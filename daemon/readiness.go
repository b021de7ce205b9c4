package daemon

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/payments-watcher/watcher/poller"
)

// staleIntervals is how many intervals a source may go without a successful cycle
// before /readyz reports it.
const staleIntervals = 3

// sourceHealth is one source this process runs, as readiness sees it.
type sourceHealth struct {
	name     string
	interval time.Duration
	// since is when this process started running the source: the daemon's start, or
	// in cluster mode when the lease was acquired.
	since  time.Time
	health poller.Health
}

// readiness holds the rules of /readyz, the same in both modes.
type readiness struct {
	// nats returns the state of the NATS connection and of the publisher's last pass;
	// nil when both are fine.
	nats func() error
	// outbox returns the depth of the outbox and its oldest entry's enqueueing time.
	outbox    func(ctx context.Context) (int, time.Time, error)
	maxOutbox int
	// sources returns the sources this process runs, in configuration order.
	sources func() []sourceHealth
	now     func() time.Time
	// redact hides the secrets provider error texts may carry.
	redact *strings.Replacer
}

// notReady lists what keeps the daemon from being ready, one line per check, each
// naming the check; empty when it is ready:
//
//   - nats: the connection is down or the last pass over the outbox failed;
//   - outbox: it holds nats.max_outbox events or more (polling is paused);
//   - source NAME: no successful cycle for 3 intervals (counted from when this
//     process started running the source until the first one), with the last error.
//
// ctx is passed to the outbox read. No line holds a newline or a configured secret.
func (r *readiness) notReady(ctx context.Context) []string {
	var failing []string
	if err := r.nats(); err != nil {
		msg := err.Error()
		if !strings.HasPrefix(msg, "nats") {
			msg = "nats: " + msg
		}
		failing = append(failing, msg)
	}
	if n, oldest, err := r.outbox(ctx); err != nil {
		failing = append(failing, "outbox: "+err.Error())
	} else if r.maxOutbox > 0 && n >= r.maxOutbox {
		failing = append(failing, fmt.Sprintf("outbox: %d events waiting since %s, at or over nats.max_outbox %d; polling is paused until NATS takes them",
			n, oldest.Format(time.RFC3339), r.maxOutbox))
	}
	now := r.now()
	for _, s := range r.sources() {
		if msg := stale(s, now); msg != "" {
			failing = append(failing, msg)
		}
	}
	for i, f := range failing {
		failing[i] = strings.ReplaceAll(r.redact.Replace(f), "\n", " ")
	}
	return failing
}

// stale returns the readiness line of s at now, "" while it is not stale.
func stale(s sourceHealth, now time.Time) string {
	h := s.health
	since := h.LastSuccess
	if since.IsZero() {
		since = s.since
	}
	age := now.Sub(since)
	if age <= staleIntervals*s.interval {
		return ""
	}
	cause := "a cycle is still running"
	if h.Err != nil {
		cause = h.Err.Error()
	}
	what := "no successful poll for"
	if h.LastSuccess.IsZero() {
		what = "no successful poll since the start"
	}
	return fmt.Sprintf("source %s: %s %s (interval %s): %s", s.name, what, age.Round(time.Second), s.interval, cause)
}
