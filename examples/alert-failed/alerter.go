package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payments-watcher/watcher/event"
)

// alerter turns selected events into alerts, delivered to each of its sinks.
//
// Delivery contract, per event and sink: the sink answers 2xx, or refuses the alert
// for good (a 4xx other than 408 and 429), in which case the event goes to the
// dead-letter subject and a counter; either way the outcome is recorded in the
// delivered file under the sink's name and the event id, and the message is
// acknowledged once every sink has its record. An outcome found in the file is not
// repeated, so each sink sees an event at most once across restarts, except for one
// window: a crash between the 2xx and the record repeats that call, which carries
// the event id as Idempotency-Key (Alertmanager merges an alert posted twice).
// Other failures (5xx, 408, 429, no answer) are retried, waiting what Retry-After
// asks or else an exponential backoff, while the event is kept in progress.
type alerter struct {
	o       options
	sinks   []sink
	sent    *delivered
	client  *http.Client
	log     *slog.Logger
	metrics *alertMetrics
	states  map[string]bool
	now     func() time.Time

	js      jetstream.JetStream // set by Run: dead letters are published with it
	running atomic.Bool         // the consumer is set up and reading

	// beforeAck, when set, runs after an alert is recorded and before its ack; an
	// error stops Run with the message unacknowledged, as a crash there would.
	beforeAck func(eventID string) error
}

func newAlerter(o options, sent *delivered, client *http.Client, log *slog.Logger, m *alertMetrics) *alerter {
	a := &alerter{o: o, sinks: o.sinks(), sent: sent, client: client, log: log, metrics: m, states: map[string]bool{}, now: time.Now}
	for _, s := range o.states {
		a.states[s] = true
	}
	return a
}

// filterSubjects are {prefix}.*.*.{state} for each selected state, and for each
// open state when stalled alerts are on.
func (a *alerter) filterSubjects() []string {
	var subjects []string
	for _, s := range a.subjectStates() {
		subjects = append(subjects, event.Subject(a.o.prefix, "*", "*", s))
	}
	return subjects
}

func (a *alerter) subjectStates() []string {
	states := append([]string(nil), a.o.states...)
	if a.o.stalledAfter > 0 {
		for _, s := range openStates {
			if !containsString(states, s) {
				states = append(states, s)
			}
		}
	}
	return states
}

// selected reports whether e is alerted: its state is selected, or it is stalled.
func (a *alerter) selected(e event.Event) bool {
	return a.states[e.Data.Current.State] || isStalled(e, a.o.stalledAfter)
}

// Healthy is nil while Run reads the consumer over a connected NATS connection.
func (a *alerter) Healthy(nc *nats.Conn) error {
	if !a.running.Load() {
		return errors.New("consumer not running")
	}
	if nc != nil && nc.Status() != nats.CONNECTED {
		return fmt.Errorf("NATS connection %s", nc.Status())
	}
	return nil
}

// Run creates or updates the durable consumer and alerts, one event at a time in
// stream order, until ctx ends (then it returns nil) or the consumer, the
// connection or the delivered file fails.
func (a *alerter) Run(ctx context.Context, js jetstream.JetStream) error {
	a.js = js
	defer a.running.Store(false)
	stream, err := js.Stream(ctx, a.o.stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", a.o.stream, err)
	}
	cfg := jetstream.ConsumerConfig{
		Durable:        a.o.consumer,
		Description:    "alerts on " + strings.Join(a.o.states, ", ") + " events",
		FilterSubjects: a.filterSubjects(),
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        a.o.ackWait,
		// One event in flight: alerts go out in stream order, and no fetched event
		// waits out its ack wait behind a sink that is being retried.
		MaxAckPending: 1,
		DeliverPolicy: jetstream.DeliverNewPolicy,
	}
	if a.o.deliver == "all" {
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	}
	// The start position belongs to the consumer's creation and cannot change later.
	// examples/audit-trail does the same; each example program stands alone.
	if existing, err := stream.Consumer(ctx, a.o.consumer); err == nil {
		info := existing.CachedInfo().Config
		cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = info.DeliverPolicy, info.OptStartSeq, info.OptStartTime
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("consumer %s: %w", a.o.consumer, err)
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("consumer %s: %w", a.o.consumer, err)
	}
	msgs, err := cons.Messages(jetstream.PullMaxMessages(1))
	if err != nil {
		return fmt.Errorf("consumer %s: %w", a.o.consumer, err)
	}
	defer msgs.Stop()
	a.running.Store(true)
	for {
		msg, err := msgs.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("consumer %s: %w", a.o.consumer, err)
		}
		if err := a.handle(ctx, msg); err != nil {
			if ctx.Err() != nil {
				// Shutting down mid-retry: hand the event back for the next run.
				_ = msg.Nak()
				return nil
			}
			return err
		}
	}
}

// handle alerts on one message and settles it. It returns an error only when the
// message must stay unacknowledged: ctx ended, or the delivered file or the
// dead-letter publish failed.
func (a *alerter) handle(ctx context.Context, msg jetstream.Msg) error {
	e, err := event.Decode(msg.Data())
	if err == nil && e.ID == "" {
		err = errors.New("event has no id")
	}
	if err != nil {
		a.metrics.terminated.Inc()
		a.log.Warn("Not a watcher event; terminated", "subject", msg.Subject(), "err", err)
		if err := msg.Term(); err != nil {
			a.log.Warn("Term failed", "subject", msg.Subject(), "err", err)
		}
		return nil
	}
	log := a.log.With("event_id", e.ID, "source", e.Data.Source, "kind", e.Data.Kind, "id", e.Data.ID, "state", e.Data.Current.State)
	if !a.selected(e) {
		a.ack(msg, log, "Not selected; acknowledged without alerting")
		return nil
	}
	stop := keepInProgress(msg, a.o.ackWait)
	defer stop()
	for _, s := range a.sinks {
		if err := a.deliver(ctx, s, e, msg, log.With("sink", s.Name())); err != nil {
			return err
		}
	}
	stop()
	if a.beforeAck != nil {
		if err := a.beforeAck(e.ID); err != nil {
			return err
		}
	}
	a.ack(msg, log, "Alert handled")
	return nil
}

func (a *alerter) ack(msg jetstream.Msg, log *slog.Logger, what string) {
	if err := msg.Ack(); err != nil {
		log.Warn("Ack failed; the event will come again and be skipped", "err", err)
		return
	}
	log.Info(what)
}

// deliver gives e to sink s once: it skips an event recorded for s, posts it
// (retrying what may succeed later), dead-letters a permanent refusal, and records
// the outcome.
func (a *alerter) deliver(ctx context.Context, s sink, e event.Event, msg jetstream.Msg, log *slog.Logger) error {
	key := s.Name() + "/" + e.ID
	done, err := a.sent.Has(key)
	if err == nil && !done && s.Name() == "webhook" {
		done, err = a.sent.Has(e.ID) // recorded by a version that knew only the webhook
	}
	if err != nil {
		return err
	}
	if done {
		a.metrics.deliveries.WithLabelValues(s.Name(), "already_delivered").Inc()
		log.Info("Already delivered to this sink; skipped")
		return nil
	}
	outcome := "delivered"
	err = a.post(ctx, s, e, log)
	var refused *refusal
	if errors.As(err, &refused) {
		if err := a.deadLetter(ctx, s, e, msg, refused); err != nil {
			return err
		}
		outcome = "dead_letter"
		a.metrics.deadLetters.WithLabelValues(s.Name()).Inc()
		log.Warn("Alert refused for good; sent to the dead-letter subject", "reason", refused, "dead_letter_subject", a.o.deadLetterSubject())
	} else if err != nil {
		return err
	}
	if err := a.sent.Add(key); err != nil {
		return err
	}
	a.metrics.deliveries.WithLabelValues(s.Name(), outcome).Inc()
	if outcome == "delivered" {
		a.metrics.lastDelivery.WithLabelValues(s.Name()).SetToCurrentTime()
	}
	return nil
}

// refusal is a sink's permanent refusal of an alert: a 4xx other than 408 and 429,
// or an alert that cannot be rendered for it. No retry can change it.
type refusal struct {
	Status int    `json:"status,omitempty"`
	Reason string `json:"reason"`
}

func (r *refusal) Error() string {
	if r.Status == 0 {
		return r.Reason
	}
	return fmt.Sprintf("status %d: %s", r.Status, r.Reason)
}

// permanent reports whether an HTTP status refuses an alert for good.
func permanent(status int) bool {
	return status >= 400 && status < 500 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests
}

// post sends e to s until s answers 2xx or refuses it for good (a *refusal). Other
// failures are retried after the answer's Retry-After, capped at --max-retry-after,
// or else an exponential backoff capped at --max-backoff. It gives up only when ctx
// ends.
func (a *alerter) post(ctx context.Context, s sink, e event.Event, log *slog.Logger) error {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(min(time.Second, a.o.maxBackoff)),
		backoff.WithMaxInterval(a.o.maxBackoff),
		backoff.WithMaxElapsedTime(0),
	)
	for attempt := 1; ; attempt++ {
		retryAfter, err := a.postOnce(ctx, s, e)
		if err == nil {
			return nil
		}
		var refused *refusal
		if errors.As(err, &refused) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait := b.NextBackOff()
		if retryAfter > 0 {
			wait = min(retryAfter, a.o.maxRetryAfter)
		}
		a.metrics.retries.WithLabelValues(s.Name()).Inc()
		log.Warn("Delivery failed; retrying", "err", err, "attempt", attempt, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// postOnce makes one call to s. It returns nil on a 2xx, a *refusal on a
// permanent refusal, and otherwise an error with the wait the answer's
// Retry-After asked for (0 when it has none).
func (a *alerter) postOnce(ctx context.Context, s sink, e event.Event) (time.Duration, error) {
	where := s.Where()
	ctx, cancel := context.WithTimeoutCause(ctx, a.o.timeout, fmt.Errorf("%s %s: no answer within %s", s.Name(), where, a.o.timeout))
	defer cancel()
	req, err := s.Request(ctx, e, a.now())
	if err != nil {
		return 0, &refusal{Reason: fmt.Sprintf("cannot build the request: %v", err)}
	}
	resp, err := a.client.Do(req)
	if err != nil {
		var ue *url.Error // its text holds the full url, secret included
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, fmt.Errorf("%s %s: %w", s.Name(), where, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode <= 299:
		return 0, nil
	case permanent(resp.StatusCode):
		return 0, &refusal{Status: resp.StatusCode, Reason: firstLine(body, 300)}
	}
	return retryAfter(resp.Header.Get("Retry-After"), a.now()), fmt.Errorf("%s %s: status %s", s.Name(), where, resp.Status)
}

// retryAfter reads a Retry-After value: seconds, or an HTTP date. It is 0 when
// absent, malformed or in the past.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n <= 0 {
			return 0
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// firstLine is the start of body, on one line, at most n bytes.
func firstLine(body []byte, n int) string {
	s := strings.TrimSpace(strings.ReplaceAll(string(body), "\n", " "))
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}

// deadLetter is the JSON document published to the dead-letter subject.
type deadLetter struct {
	Consumer  string          `json:"consumer"`
	Sink      string          `json:"sink"`
	Target    string          `json:"target"`
	Refusal   *refusal        `json:"refusal"`
	EventID   string          `json:"event_id"`
	Subject   string          `json:"subject"`
	StreamSeq uint64          `json:"stream_sequence,omitempty"`
	RefusedAt time.Time       `json:"refused_at"`
	Event     json.RawMessage `json:"event"`
}

// deadLetter publishes e's refusal by s to the dead-letter subject through
// JetStream, with a message id derived from the sink and the event id so that a
// repeat after a crash is dropped by the stream's duplicate window. A subject no
// stream captures is published on core NATS instead.
func (a *alerter) deadLetter(ctx context.Context, s sink, e event.Event, msg jetstream.Msg, r *refusal) error {
	dl := deadLetter{Consumer: a.o.consumer, Sink: s.Name(), Target: s.Where(), Refusal: r, EventID: e.ID,
		Subject: msg.Subject(), RefusedAt: a.now().UTC(), Event: json.RawMessage(msg.Data())}
	if md, err := msg.Metadata(); err == nil {
		dl.StreamSeq = md.Sequence.Stream
	}
	body, err := json.Marshal(dl)
	if err != nil {
		return fmt.Errorf("dead letter of %s: %w", e.ID, err)
	}
	subject := a.o.deadLetterSubject()
	m := nats.NewMsg(subject)
	m.Data = body
	m.Header.Set("Alert-Failed-Sink", s.Name())
	m.Header.Set("Alert-Failed-Event-Id", e.ID)
	_, err = a.js.PublishMsg(ctx, m, jetstream.WithMsgID(a.o.consumer+"/"+s.Name()+"/"+e.ID))
	if errors.Is(err, jetstream.ErrNoStreamResponse) {
		nc := a.js.Conn()
		if err = nc.PublishMsg(m); err == nil {
			err = nc.FlushWithContext(ctx)
		}
	}
	if err != nil {
		return fmt.Errorf("dead letter of %s to %s: %w", e.ID, subject, err)
	}
	return nil
}

// keepInProgress tells JetStream that msg is being worked on every third of the ack
// wait, so that a sink being retried does not get the event redelivered, until the
// returned stop is called; stop may be called more than once. examples/audit-trail
// has its own, for a batch: each example program stands alone.
func keepInProgress(msg jetstream.Msg, ackWait time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(ackWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	})
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

// alert is the JSON body of a webhook call without --slack. Fields the event does
// not carry are null.
type alert struct {
	EventID        string    `json:"event_id"`
	Source         string    `json:"source"`
	Kind           string    `json:"kind"`
	ID             string    `json:"id"`
	ParentID       *string   `json:"parent_id"`
	Status         string    `json:"status"`
	State          string    `json:"state"`
	PreviousStatus *string   `json:"previous_status"`
	Amount         *string   `json:"amount"` // decimal string with the provider's scale
	Currency       *string   `json:"currency"`
	FailureReason  *string   `json:"failure_reason"`
	FailureCode    *string   `json:"failure_code"`
	ObservedAt     time.Time `json:"observed_at"`
}

func newAlert(e event.Event) alert {
	d := e.Data
	nonEmpty := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}
	al := alert{EventID: e.ID, Source: d.Source, Kind: d.Kind, ID: d.ID, ParentID: d.ParentID,
		Status: d.Current.Status, State: d.Current.State, ObservedAt: d.ObservedAt.UTC()}
	if d.Previous != nil {
		al.PreviousStatus = &d.Previous.Status
	}
	if d.Amount != nil {
		al.Amount, al.Currency = nonEmpty(d.Amount.Text()), nonEmpty(d.Amount.Currency)
	}
	if d.Failure != nil {
		al.FailureReason, al.FailureCode = nonEmpty(d.Failure.Reason), nonEmpty(d.Failure.Code)
	}
	return al
}

// slackEscaper escapes the characters Slack's mrkdwn reserves.
var slackEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", "\n", " ", "\r", " ")

// slackText is one readable line:
// "failed: cpn payment c4d1… FAILED (was CRYPTO_FUNDS_PENDING) 110.270000 USDC,
// reason CANCELLED PM01001, observed 2026-11-22T10:00:03Z, event 5b0f…".
func slackText(e event.Event) string {
	d := e.Data
	var b strings.Builder
	fmt.Fprintf(&b, ":rotating_light: *%s*: ", d.Current.State)
	writeItem(&b, e)
	if d.Amount != nil {
		fmt.Fprintf(&b, ", %s %s", d.Amount.Text(), d.Amount.Currency)
	}
	if d.Failure != nil && (d.Failure.Reason != "" || d.Failure.Code != "") {
		fmt.Fprintf(&b, ", reason %s", strings.TrimSpace(d.Failure.Reason+" "+d.Failure.Code))
	}
	fmt.Fprintf(&b, ", observed %s, event %s", d.ObservedAt.UTC().Format(time.RFC3339), e.ID)
	return slackEscaper.Replace(b.String())
}
