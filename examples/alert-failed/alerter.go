package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payments-watcher/watcher/event"
)

// alerter turns failure events into webhook calls.
//
// Delivery contract: an event is acknowledged only after the webhook answered 2xx
// and its id was recorded in the delivered file, and an id found there is
// acknowledged without a call. A crash between the 2xx and the record can still
// repeat one call; every call carries the event id as Idempotency-Key so that the
// receiver can drop it.
type alerter struct {
	o      options
	sent   *delivered
	client *http.Client
	log    *slog.Logger
	states map[string]bool

	// beforeAck, when set, runs after an alert is recorded and before its ack; an
	// error stops Run with the message unacknowledged, as a crash there would.
	beforeAck func(eventID string) error
}

func newAlerter(o options, sent *delivered, client *http.Client, log *slog.Logger) *alerter {
	a := &alerter{o: o, sent: sent, client: client, log: log, states: map[string]bool{}}
	for _, s := range o.states {
		a.states[s] = true
	}
	return a
}

// filterSubjects are {prefix}.*.*.{state} for each selected state.
func (a *alerter) filterSubjects() []string {
	subjects := make([]string, 0, len(a.o.states))
	for _, s := range a.o.states {
		subjects = append(subjects, event.Subject(a.o.prefix, "*", "*", s))
	}
	return subjects
}

// Run creates or updates the durable consumer and alerts, one event at a time in
// stream order, until ctx ends (then it returns nil) or the consumer, the
// connection or the delivered file fails.
func (a *alerter) Run(ctx context.Context, js jetstream.JetStream) error {
	stream, err := js.Stream(ctx, a.o.stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", a.o.stream, err)
	}
	cfg := jetstream.ConsumerConfig{
		Durable:        a.o.consumer,
		Description:    "webhook alerts on " + strings.Join(a.o.states, ", ") + " events",
		FilterSubjects: a.filterSubjects(),
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        a.o.ackWait,
		// One event in flight: alerts go out in stream order, and no fetched event
		// waits out its ack wait behind a webhook that is being retried.
		MaxAckPending: 1,
		DeliverPolicy: jetstream.DeliverNewPolicy,
	}
	if a.o.deliver == "all" {
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	}
	// The start position belongs to the consumer's creation and cannot change later.
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
// message must stay unacknowledged: ctx ended, or the delivered file failed.
func (a *alerter) handle(ctx context.Context, msg jetstream.Msg) error {
	e, err := event.Decode(msg.Data())
	if err == nil && e.ID == "" {
		err = errors.New("event has no id")
	}
	if err != nil {
		a.log.Warn("Not a watcher event; terminated", "subject", msg.Subject(), "err", err)
		if err := msg.Term(); err != nil {
			a.log.Warn("Term failed", "subject", msg.Subject(), "err", err)
		}
		return nil
	}
	log := a.log.With("event_id", e.ID, "source", e.Data.Source, "kind", e.Data.Kind, "id", e.Data.ID, "state", e.Data.Current.State)
	ack := func(what string) {
		if err := msg.Ack(); err != nil {
			log.Warn("Ack failed; the event will come again and be skipped", "err", err)
			return
		}
		log.Info(what)
	}
	if !a.states[e.Data.Current.State] {
		ack("State not selected; acknowledged without alerting")
		return nil
	}
	done, err := a.sent.Has(e.ID)
	if err != nil {
		return err
	}
	if done {
		ack("Already delivered; acknowledged without alerting")
		return nil
	}
	body, err := a.body(e)
	if err != nil {
		log.Warn("Cannot render the alert; terminated", "err", err)
		_ = msg.Term()
		return nil
	}
	stop := keepInProgress(msg, a.o.ackWait)
	err = a.post(ctx, e.ID, body, log)
	stop()
	if err != nil {
		return err
	}
	if err := a.sent.Add(e.ID); err != nil {
		return err
	}
	if a.beforeAck != nil {
		if err := a.beforeAck(e.ID); err != nil {
			return err
		}
	}
	ack("Alert delivered")
	return nil
}

// keepInProgress tells JetStream that msg is being worked on every third of the ack
// wait, so that a webhook being retried does not get the event redelivered, until
// the returned stop is called.
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
	return func() { close(done); wg.Wait() }
}

// post sends body until the webhook answers 2xx, waiting between attempts with an
// exponential backoff capped at --max-backoff. It gives up only when ctx ends.
func (a *alerter) post(ctx context.Context, id string, body []byte, log *slog.Logger) error {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(min(time.Second, a.o.maxBackoff)),
		backoff.WithMaxInterval(a.o.maxBackoff),
		backoff.WithMaxElapsedTime(0),
	)
	attempt := 0
	op := func() error {
		attempt++
		return a.postOnce(ctx, id, body)
	}
	notify := func(err error, wait time.Duration) {
		log.Warn("Webhook failed; retrying", "err", err, "attempt", attempt, "retry_in", wait)
	}
	if err := backoff.RetryNotify(op, backoff.WithContext(b, ctx), notify); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	return nil
}

// postOnce makes one webhook call; any answer but 2xx is an error.
func (a *alerter) postOnce(ctx context.Context, id string, body []byte) error {
	where := redactURL(a.o.webhook)
	ctx, cancel := context.WithTimeoutCause(ctx, a.o.timeout, fmt.Errorf("webhook %s: no answer within %s", where, a.o.timeout))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.o.webhook, bytes.NewReader(body))
	if err != nil {
		return backoff.Permanent(fmt.Errorf("webhook %s: %w", where, err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", id)
	req.Header.Set("User-Agent", "watcher-alert-failed")
	resp, err := a.client.Do(req)
	if err != nil {
		var ue *url.Error // its text holds the full url, secret included
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("webhook %s: %w", where, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("webhook %s: status %s", where, resp.Status)
	}
	return nil
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

// body renders the webhook body of e.
func (a *alerter) body(e event.Event) ([]byte, error) {
	if a.o.slack {
		return json.Marshal(struct {
			Text string `json:"text"`
		}{slackText(e)})
	}
	return json.Marshal(newAlert(e))
}

// slackEscaper escapes the characters Slack's mrkdwn reserves.
var slackEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", "\n", " ", "\r", " ")

// slackText is one readable line:
// "failed: cpn payment c4d1… FAILED (was CRYPTO_FUNDS_PENDING) 110.270000 USDC,
// reason CANCELLED PM01001, observed 2026-11-22T10:00:03Z, event 5b0f…".
func slackText(e event.Event) string {
	d := e.Data
	var b strings.Builder
	fmt.Fprintf(&b, ":rotating_light: *%s*: %s %s %s", d.Current.State, d.Source, d.Kind, d.ID)
	if d.ParentID != nil {
		fmt.Fprintf(&b, " (of %s)", *d.ParentID)
	}
	fmt.Fprintf(&b, " %s", d.Current.Status)
	if d.Previous != nil {
		fmt.Fprintf(&b, " (was %s)", d.Previous.Status)
	}
	if d.Amount != nil {
		fmt.Fprintf(&b, ", %s %s", d.Amount.Text(), d.Amount.Currency)
	}
	if d.Failure != nil && (d.Failure.Reason != "" || d.Failure.Code != "") {
		fmt.Fprintf(&b, ", reason %s", strings.TrimSpace(d.Failure.Reason+" "+d.Failure.Code))
	}
	fmt.Fprintf(&b, ", observed %s, event %s", d.ObservedAt.UTC().Format(time.RFC3339), e.ID)
	return slackEscaper.Replace(b.String())
}
