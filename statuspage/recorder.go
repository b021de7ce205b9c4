package statuspage

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/state"
)

// Minutes is how many one-minute buckets a Recorder keeps per source: the charts
// cover the last hour.
const Minutes = 60

// RecentEvents is how many committed transitions a Recorder remembers, over all
// sources.
const RecentEvents = 30

// Event is one committed transition as the page shows it: never the item's body.
type Event struct {
	Source string    `json:"source"`
	Kind   string    `json:"kind"`
	ID     string    `json:"id"`
	Parent string    `json:"parent_id,omitempty"`
	From   string    `json:"previous_state"` // "" on first sight
	To     string    `json:"current_state"`
	Status string    `json:"current_status"` // the provider's raw status
	Time   time.Time `json:"time"`
}

// minuteCounts is a ring of per-minute counts: bucket i holds the count of the
// minute stamp[i] (minutes since the Unix epoch); a bucket whose stamp is not the
// minute asked for counts 0.
type minuteCounts struct {
	stamp [Minutes]int64
	count [Minutes]int
}

// add counts n in minute m.
func (c *minuteCounts) add(m int64, n int) {
	i := m % Minutes
	if c.stamp[i] != m {
		c.stamp[i], c.count[i] = m, 0
	}
	c.count[i] += n
}

// last returns the counts of the Minutes minutes ending with minute m, oldest first.
func (c *minuteCounts) last(m int64) []int {
	out := make([]int, Minutes)
	for k := range Minutes {
		want := m - Minutes + 1 + int64(k)
		if want < 0 {
			continue
		}
		if i := want % Minutes; c.stamp[i] == want {
			out[k] = c.count[i]
		}
	}
	return out
}

// series are the charts of one source.
type series struct {
	requests, transitions minuteCounts
}

// Recorder keeps what the status page charts and lists: per source, the provider
// requests and the transitions of each of the last Minutes minutes, and the last
// RecentEvents committed transitions. It implements poller.Observer (only Request
// and Transition count; compose it with the metrics' observer with Tee) and wraps a
// poller.Store to see commits (Store). It is safe for concurrent use and holds its
// lock only for a few additions. Sources not given to NewRecorder are not counted.
type Recorder struct {
	now func() time.Time

	mu     sync.Mutex
	series map[string]*series
	recent []Event // ring of RecentEvents
	next   int     // where the next event goes in recent
}

var _ poller.Observer = (*Recorder)(nil)

// NewRecorder returns a Recorder of the given sources; now is its clock (nil:
// time.Now).
func NewRecorder(sources []string, now func() time.Time) *Recorder {
	if now == nil {
		now = time.Now
	}
	r := &Recorder{now: now, series: map[string]*series{}}
	for _, s := range sources {
		r.series[s] = &series{}
	}
	return r
}

// minute returns the current minute since the Unix epoch.
func (r *Recorder) minute() int64 { return r.now().Unix() / 60 }

// Request counts one provider request of source.
func (r *Recorder) Request(source, _ string, _ int, _ time.Duration) {
	m := r.minute()
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.series[source]; ok {
		s.requests.add(m, 1)
	}
}

// Transition counts one transition of source.
func (r *Recorder) Transition(source, _ string, _ diff.State, _ bool) {
	m := r.minute()
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.series[source]; ok {
		s.transitions.add(m, 1)
	}
}

func (r *Recorder) Poll(string, string, time.Duration) {}
func (r *Recorder) Wait(string, string, time.Duration) {}
func (r *Recorder) Items(string, int)                  {}
func (r *Recorder) Skipped(string)                     {}
func (r *Recorder) Open(string, int, int, time.Time)   {}
func (r *Recorder) Success(string, time.Time)          {}
func (r *Recorder) Anomaly(string, string)             {}
func (r *Recorder) Paced(string, time.Duration)        {}
func (r *Recorder) Forgotten(string, int)              {}

// Requests returns the requests of source in each of the last Minutes minutes,
// oldest first (all 0 for an unknown source).
func (r *Recorder) Requests(source string) []int {
	return r.counts(source, func(s *series) *minuteCounts { return &s.requests })
}

// Transitions returns the transitions of source in each of the last Minutes
// minutes, oldest first.
func (r *Recorder) Transitions(source string) []int {
	return r.counts(source, func(s *series) *minuteCounts { return &s.transitions })
}

func (r *Recorder) counts(source string, which func(*series) *minuteCounts) []int {
	m := r.minute()
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.series[source]
	if !ok {
		return make([]int, Minutes)
	}
	return which(s).last(m)
}

// Recent returns the last committed transitions, newest first.
func (r *Recorder) Recent() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Event, 0, len(r.recent))
	for k := range len(r.recent) {
		out = append(out, r.recent[(r.next-1-k+len(r.recent))%len(r.recent)])
	}
	return out
}

// remember adds events, oldest first, to the ring.
func (r *Recorder) remember(events []Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range events {
		if len(r.recent) < RecentEvents {
			r.recent = append(r.recent, e)
			r.next = len(r.recent) % RecentEvents
			continue
		}
		r.recent[r.next] = e
		r.next = (r.next + 1) % RecentEvents
	}
}

// Store returns next with every successful Commit's events remembered as recent
// transitions. Only the last RecentEvents messages of a batch are read, and only
// their heads (no item body is kept).
func (r *Recorder) Store(next poller.Store) poller.Store {
	return &recordingStore{Store: next, r: r}
}

type recordingStore struct {
	poller.Store
	r *Recorder
}

func (s *recordingStore) Commit(ctx context.Context, source string, b state.Batch) error {
	if err := s.Store.Commit(ctx, source, b); err != nil {
		return err
	}
	msgs := b.Messages[max(0, len(b.Messages)-RecentEvents):]
	events := make([]Event, 0, len(msgs))
	for _, m := range msgs {
		if e, ok := eventOf(m.Body); ok {
			events = append(events, e)
		}
	}
	s.r.remember(events)
	return nil
}

// eventHead is the part of an encoded event.Event the page shows.
type eventHead struct {
	Time time.Time `json:"time"`
	Data struct {
		Source   string  `json:"source"`
		Kind     string  `json:"kind"`
		ID       string  `json:"id"`
		ParentID *string `json:"parent_id"`
		Previous *struct {
			State string `json:"state"`
		} `json:"previous"`
		Current struct {
			Status string `json:"status"`
			State  string `json:"state"`
		} `json:"current"`
	} `json:"data"`
}

// eventOf returns the Event of an encoded event.Event; false when body is not one.
func eventOf(body []byte) (Event, bool) {
	var h eventHead
	if err := json.Unmarshal(body, &h); err != nil {
		return Event{}, false
	}
	e := Event{Source: h.Data.Source, Kind: h.Data.Kind, ID: h.Data.ID, To: h.Data.Current.State,
		Status: h.Data.Current.Status, Time: h.Time}
	if h.Data.ParentID != nil {
		e.Parent = *h.Data.ParentID
	}
	if h.Data.Previous != nil {
		e.From = h.Data.Previous.State
	}
	return e, true
}

// Tee returns an Observer passing every call to each of obs in order.
func Tee(obs ...poller.Observer) poller.Observer { return tee(slices.Clone(obs)) }

type tee []poller.Observer

func (t tee) Poll(s, res string, d time.Duration) {
	for _, o := range t {
		o.Poll(s, res, d)
	}
}
func (t tee) Request(s, p string, c int, d time.Duration) {
	for _, o := range t {
		o.Request(s, p, c, d)
	}
}
func (t tee) Wait(s, reason string, d time.Duration) {
	for _, o := range t {
		o.Wait(s, reason, d)
	}
}
func (t tee) Items(s string, n int) {
	for _, o := range t {
		o.Items(s, n)
	}
}
func (t tee) Skipped(s string) {
	for _, o := range t {
		o.Skipped(s)
	}
}
func (t tee) Transition(s, kind string, st diff.State, unknown bool) {
	for _, o := range t {
		o.Transition(s, kind, st, unknown)
	}
}
func (t tee) Open(s string, open, stalled int, oldest time.Time) {
	for _, o := range t {
		o.Open(s, open, stalled, oldest)
	}
}
func (t tee) Success(s string, at time.Time) {
	for _, o := range t {
		o.Success(s, at)
	}
}
func (t tee) Anomaly(s, kind string) {
	for _, o := range t {
		o.Anomaly(s, kind)
	}
}
func (t tee) Paced(s string, d time.Duration) {
	for _, o := range t {
		o.Paced(s, d)
	}
}
func (t tee) Forgotten(s string, n int) {
	for _, o := range t {
		o.Forgotten(s, n)
	}
}
