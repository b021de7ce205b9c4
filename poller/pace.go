package poller

import (
	"cmp"
	"context"
	"time"
)

// Pacing defaults (pacer's zero values).
const (
	// DefaultPaceStall is how long the outbox may go without getting smaller before a
	// paced walk stops waiting for it.
	DefaultPaceStall = 10 * time.Second
	// defaultPaceCheck and defaultPaceMaxCheck are the first and the longest interval
	// between two looks at the outbox while a walk waits; the interval doubles from one
	// to the other.
	defaultPaceCheck    = 100 * time.Millisecond
	defaultPaceMaxCheck = time.Second
)

// pacer is a poller's pacing state (Config.PaceOutbox), owned by the goroutine that
// walks. Its zero value uses the defaults; tests shorten stall, check and maxCheck.
type pacer struct {
	stall, check, maxCheck time.Duration

	// pacing is set from the first wait of an episode to the look at the outbox that
	// ends it (logged once at each end); since is when it began, waited the time its
	// waits took and lastN the outbox's size at the last look (or wait's end).
	pacing bool
	since  time.Time
	waited time.Duration
	lastN  int
	// stalledAt is when a wait last gave up because the outbox did not get smaller
	// (zero when the last wait did not), stalledN how many events it held then.
	stalledAt time.Time
	stalledN  int
}

// pace runs between two pages of a walk and holds the walk while the outbox holds
// Config.PaceOutbox events or more and the publisher is taking them, so that a burst
// of events never piles up in the state file far ahead of what JetStream acknowledges.
// It returns:
//   - at once when pacing is off (PaceOutbox 0) or the outbox holds fewer events;
//   - once the outbox holds fewer than half PaceOutbox;
//   - when the outbox has not got smaller for the stall period (NATS is away or slow
//     to come back): the walk goes on and the outbox buffers events up to
//     nats.max_outbox, as without pacing. The walks after that look at the outbox
//     again only once a stall period has passed, and pace again only if it has got
//     smaller since;
//   - when ctx ends; the walk's next request then fails with ctx's error.
//
// A failure to read the outbox's size is logged and ends the wait: pacing never fails
// a walk, and a store that cannot be read fails the page's commit anyway. Every wait
// is reported to Observer.Paced. The first wait of an episode is logged at INFO, and
// so is its end: a stall, or a look at the outbox finding it below half the pace and
// no larger than at the look before (the walks no longer produce events faster than
// NATS takes them; after a burst, typically at the first page of the next walk); the
// waits in between are not.
func (p *Poller) pace(ctx context.Context) {
	limit := p.cfg.PaceOutbox
	if limit <= 0 {
		return
	}
	c := &p.paced
	stall := cmp.Or(c.stall, DefaultPaceStall)
	if !c.stalledAt.IsZero() && time.Since(c.stalledAt) < stall {
		return
	}
	n, ok := p.outboxSize(ctx)
	if !ok {
		return
	}
	if !c.stalledAt.IsZero() {
		if n >= c.stalledN {
			c.stalledAt, c.stalledN = time.Now(), n // still not taken: look again a stall period later
			return
		}
		c.stalledAt, c.stalledN = time.Time{}, 0 // the publisher took events again
	}
	resume := max(limit/2, 1)
	if n < limit {
		if c.pacing && n < resume && n <= c.lastN {
			p.endPacing("walks no longer wait for NATS: the outbox is below half nats.outbox_pace and did not grow across a page", n)
		}
		c.lastN = n
		return
	}
	if !c.pacing {
		c.pacing, c.since, c.waited = true, time.Now(), 0
		p.log.Info("the outbox reached nats.outbox_pace; walks wait between pages until NATS has taken half of it",
			"outbox", n, "outbox_pace", limit, "resume_below", resume)
	}
	began := time.Now()
	n, stalled := p.awaitOutbox(ctx, n, resume, stall)
	d := time.Since(began)
	c.waited, c.lastN = c.waited+d, n
	p.obs.Paced(p.cfg.Name, d)
	if stalled {
		c.stalledAt, c.stalledN = time.Now(), n
		p.endPacing("the outbox has not got smaller for the stall period (NATS away or slow); walks go on and the outbox buffers events up to nats.max_outbox",
			n, "stall", stall)
	}
}

// awaitOutbox looks at the outbox at growing intervals until it holds fewer than
// resume events, it has not got smaller for stall (stalled true), ctx ends or it
// cannot be read. n is the last size read (the one given when none was).
func (p *Poller) awaitOutbox(ctx context.Context, n, resume int, stall time.Duration) (last int, stalled bool) {
	c := &p.paced
	interval := cmp.Or(c.check, defaultPaceCheck)
	longest := max(cmp.Or(c.maxCheck, defaultPaceMaxCheck), interval)
	low, lowAt := n, time.Now()
	timer := time.NewTimer(interval)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return n, false
		case <-timer.C:
		}
		m, ok := p.outboxSize(ctx)
		if !ok {
			return n, false
		}
		n = m
		if n < resume {
			return n, false
		}
		if now := time.Now(); n < low {
			low, lowAt = n, now
		} else if now.Sub(lowAt) >= stall {
			return n, true
		}
		interval = min(2*interval, longest)
		timer.Reset(interval)
	}
}

// outboxSize returns the number of events in the outbox; ok is false, the failure
// logged, when the store cannot tell.
func (p *Poller) outboxSize(ctx context.Context) (n int, ok bool) {
	n, _, err := p.store.OutboxStats(ctx)
	if err != nil {
		if ctx.Err() == nil {
			p.log.Warn("pacing: cannot read the outbox's size; the walk goes on without waiting", "err", err)
		}
		return 0, false
	}
	return n, true
}

// endPacing ends a pacing episode and logs msg with its figures.
func (p *Poller) endPacing(msg string, outbox int, args ...any) {
	c := &p.paced
	if !c.pacing {
		return
	}
	c.pacing = false
	p.log.Info(msg, append([]any{"outbox", outbox, "paced_for", time.Since(c.since).Round(time.Millisecond),
		"waited", c.waited.Round(time.Millisecond)}, args...)...)
}
