package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/payments-watcher/watcher/event"
)

// sink is one alert target. Name is its metrics label and the prefix of its keys in
// the delivered record; Where is a loggable form of its url (no secret path).
type sink interface {
	Name() string
	Where() string
	// Request builds the HTTP request that delivers the alert of e. An error means
	// the event cannot be rendered for this sink; it is dead-lettered.
	Request(ctx context.Context, e event.Event, now time.Time) (*http.Request, error)
}

// webhookSink posts the JSON alert body (or Slack's {"text": ...}) to a url.
type webhookSink struct {
	url   string
	slack bool
}

func (w webhookSink) Name() string  { return "webhook" }
func (w webhookSink) Where() string { return redactURL(w.url) }

func (w webhookSink) Request(ctx context.Context, e event.Event, _ time.Time) (*http.Request, error) {
	var body []byte
	var err error
	if w.slack {
		body, err = json.Marshal(struct {
			Text string `json:"text"`
		}{slackText(e)})
	} else {
		body, err = json.Marshal(newAlert(e))
	}
	if err != nil {
		return nil, err
	}
	return jsonRequest(ctx, w.url, e.ID, body)
}

// alertmanagerSink posts one alert per event to Alertmanager's v2 API.
type alertmanagerSink struct {
	base     string // the Alertmanager's url, e.g. http://alertmanager:9093
	link     string // template of the alert's link; "" = none
	duration time.Duration
	stalled  time.Duration // 0 = stalled alerts are off
}

func (m alertmanagerSink) Name() string  { return "alertmanager" }
func (m alertmanagerSink) Where() string { return redactURL(m.base) }

// amAlert is one element of the body of POST /api/v2/alerts.
type amAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

func (m alertmanagerSink) Request(ctx context.Context, e event.Event, now time.Time) (*http.Request, error) {
	body, err := json.Marshal([]amAlert{amAlertOf(e, alertName(e, m.stalled), expandLink(m.link, e), now, m.duration)})
	if err != nil {
		return nil, err
	}
	return jsonRequest(ctx, strings.TrimSuffix(m.base, "/")+"/api/v2/alerts", e.ID, body)
}

// alertName is the alertname of e: PaymentFailed, PaymentUnderpaid, PaymentExpired
// for those states, PaymentStalled for an open item observed more than stalledAfter
// after its creation, and Payment<State> for any other selected state.
func alertName(e event.Event, stalledAfter time.Duration) string {
	if isStalled(e, stalledAfter) {
		return "PaymentStalled"
	}
	parts := strings.Split(e.Data.Current.State, "_")
	for i, p := range parts {
		if p != "" {
			parts[i] = strings.ToUpper(p[:1]) + p[1:]
		}
	}
	return "Payment" + strings.Join(parts, "")
}

// openStates are the normalized states of an item that is not final.
var openStates = []string{"pending", "action_required", "processing", "unknown"}

// isStalled reports whether e is an open item's transition observed at least
// after (> 0) past the item's creation.
func isStalled(e event.Event, after time.Duration) bool {
	d := e.Data
	return after > 0 && !d.Terminal && !d.CreatedAt.IsZero() && d.ObservedAt.Sub(d.CreatedAt) >= after &&
		containsString(openStates, d.Current.State)
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// amAlertOf builds the Alertmanager alert of e.
//
// Labels route and group: alertname, source, provider, kind, state, failure_code
// (when the event has one), and event_id, which only keeps two payments' alerts
// distinct in Alertmanager (alerts with equal labels are one alert): group by the
// others, never by event_id. Item ids, amounts, the observation time and the link
// are annotations. The alert starts now, not at the observation: Alertmanager
// flushes a group at once for an alert that started more than group_wait ago, so
// a backlog read after an outage would otherwise reach the receiver as one
// notification per group_interval instead of one. It ends duration later.
func amAlertOf(e event.Event, name, link string, now time.Time, duration time.Duration) amAlert {
	d := e.Data
	labels := map[string]string{"alertname": name, "event_id": e.ID}
	set := func(m map[string]string, k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	set(labels, "source", d.Source)
	set(labels, "provider", d.Provider)
	set(labels, "kind", d.Kind)
	set(labels, "state", d.Current.State)
	ann := map[string]string{"summary": summary(e)}
	set(ann, "event_id", e.ID)
	set(ann, "item_id", d.ID)
	set(ann, "status", d.Current.Status)
	set(ann, "observed_at", d.ObservedAt.UTC().Format(time.RFC3339Nano))
	set(ann, "created_at", d.CreatedAt.UTC().Format(time.RFC3339Nano))
	set(ann, "link", link)
	if d.ParentID != nil {
		set(ann, "parent_id", *d.ParentID)
	}
	if d.Previous != nil {
		set(ann, "previous_status", d.Previous.Status)
	}
	if d.Amount != nil {
		set(ann, "amount", d.Amount.Text())
		set(ann, "currency", d.Amount.Currency)
	}
	if d.Failure != nil {
		set(labels, "failure_code", d.Failure.Code)
		set(ann, "failure_reason", d.Failure.Reason)
	}
	start := now.UTC()
	return amAlert{Labels: labels, Annotations: ann, StartsAt: start, EndsAt: start.Add(duration), GeneratorURL: link}
}

// summary is one line for humans: "cpn payment p1 FAILED (was CREATED): 110.270000
// USDC, CANCELLED PM01001".
func summary(e event.Event) string {
	d := e.Data
	var b strings.Builder
	writeItem(&b, e)
	if d.Amount != nil {
		fmt.Fprintf(&b, ": %s %s", d.Amount.Text(), d.Amount.Currency)
	}
	if d.Failure != nil && (d.Failure.Reason != "" || d.Failure.Code != "") {
		fmt.Fprintf(&b, ", %s", strings.TrimSpace(d.Failure.Reason+" "+d.Failure.Code))
	}
	return b.String()
}

// writeItem writes what e is about and its change: "cpn payment p1 (of p0) FAILED
// (was CREATED)", the parent and previous status only when there are.
func writeItem(b *strings.Builder, e event.Event) {
	d := e.Data
	fmt.Fprintf(b, "%s %s %s", d.Source, d.Kind, d.ID)
	if d.ParentID != nil {
		fmt.Fprintf(b, " (of %s)", *d.ParentID)
	}
	fmt.Fprintf(b, " %s", d.Current.Status)
	if d.Previous != nil {
		fmt.Fprintf(b, " (was %s)", d.Previous.Status)
	}
}

// expandLink replaces {source}, {kind}, {id}, {parent_id} and {event_id} in tmpl
// with e's values, path-escaped.
func expandLink(tmpl string, e event.Event) string {
	if tmpl == "" {
		return ""
	}
	parent := ""
	if e.Data.ParentID != nil {
		parent = *e.Data.ParentID
	}
	return strings.NewReplacer(
		"{source}", url.PathEscape(e.Data.Source), "{kind}", url.PathEscape(e.Data.Kind),
		"{id}", url.PathEscape(e.Data.ID), "{parent_id}", url.PathEscape(parent), "{event_id}", url.PathEscape(e.ID),
	).Replace(tmpl)
}

// jsonRequest is a POST of body with the event id as Idempotency-Key.
func jsonRequest(ctx context.Context, target, eventID string, body []byte) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", eventID)
	req.Header.Set("User-Agent", "watcher-alert-failed")
	return req, nil
}
