package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/payments-watcher/watcher/config"
	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/poller/provider"
)

// buildPoller builds the poller of source s on store; lease is set in cluster mode
// (the fencing token published with each event), nil otherwise.
func buildPoller(cfg *config.Config, s config.Source, store poller.Store, lease *event.Poller, version string, log *slog.Logger) (*poller.Poller, error) {
	client := provider.NewClient(provider.ClientOptions{
		BaseURL:   s.Settings.BaseURL,
		RootCAs:   s.RootCAs,
		UserAgent: "watcher/" + version,
	})
	src, err := s.Provider.New(s.Settings, client)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", s.Name, err)
	}
	pc := s.Config
	pc.RequestTimeout = s.RequestTimeout
	pc.MaxOutbox, pc.PaceOutbox = cfg.NATS.MaxOutbox, cfg.NATS.OutboxPace
	pc.Lease = lease
	return poller.New(pc, src, store, cfg.NATS.SubjectPrefix, log.With("source", s.Name)), nil
}

// runningSource is a source whose poller runs in this process.
type runningSource struct {
	interval time.Duration
	p        *poller.Poller
	since    time.Time
}

// sourceSet holds the sources this process runs: all of them in single mode, those
// whose lease it holds in cluster mode. It is safe for concurrent use.
type sourceSet struct {
	order []string // configuration order

	mu      sync.Mutex
	m       map[string]runningSource
	changed chan struct{} // closed and replaced at every removal
}

func newSourceSet(cfg *config.Config) *sourceSet {
	set := &sourceSet{m: map[string]runningSource{}, changed: make(chan struct{})}
	for _, s := range cfg.Sources {
		set.order = append(set.order, s.Name)
	}
	return set
}

// add records that name now runs on p.
func (s *sourceSet) add(name string, interval time.Duration, p *poller.Poller, since time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[name] = runningSource{interval: interval, p: p, since: since}
}

// remove records that name's poller has returned.
func (s *sourceSet) remove(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, name)
	close(s.changed)
	s.changed = make(chan struct{})
}

// poller returns the poller of name, nil when this process does not run it.
func (s *sourceSet) poller(name string) *poller.Poller {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[name].p
}

// names returns the names of the running sources in configuration order.
func (s *sourceSet) names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, n := range s.order {
		if _, ok := s.m[n]; ok {
			out = append(out, n)
		}
	}
	return out
}

// health returns the running sources' health in configuration order.
func (s *sourceSet) health() []sourceHealth {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []sourceHealth
	for _, n := range s.order {
		if r, ok := s.m[n]; ok {
			out = append(out, sourceHealth{name: n, interval: r.interval, since: r.since, health: r.p.Health()})
		}
	}
	return out
}

// waitIdle waits until no source runs, or ctx ends; it reports whether none runs.
func (s *sourceSet) waitIdle(ctx context.Context) bool {
	for {
		s.mu.Lock()
		n, changed := len(s.m), s.changed
		s.mu.Unlock()
		if n == 0 {
			return true
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return false
		}
	}
}
