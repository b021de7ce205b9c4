package daemon

import (
	"net/http"

	"github.com/nats-io/nats.go"

	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/stateapi"
	"github.com/payments-watcher/watcher/statuspage"
)

// observer is what every poller of this process reports to: the metrics and the
// status page's recorder.
func (d *daemon) observer() poller.Observer {
	return statuspage.Tee(d.met, d.rec)
}

// statusPage returns the status page of this process; nc is its NATS connection.
func (d *daemon) statusPage(nc *nats.Conn) *statuspage.Page {
	p := &statuspage.Page{
		Sources: d.running.order, Store: d.state, Recorder: d.rec,
		Running: d.running.healthByName, Late: d.late, Replica: d.replicaID, Held: d.leases,
		MaxOutbox: d.cfg.NATS.MaxOutbox, Redact: d.opt.Redact,
	}
	p.NATS = func() (string, error) {
		var err error
		if d.ready.nats != nil {
			err = d.ready.nats()
		}
		return nc.Status().String(), err
	}
	return p
}

// adminHandler serves the admin listener: the /state/ API from rd, and the status
// page at / and /status.json, both by the rules of access.
func (d *daemon) adminHandler(rd stateapi.Reader, page *statuspage.Page, access stateapi.Access) http.Handler {
	mux := http.NewServeMux()
	api := stateapi.Handler(rd, access)
	mux.Handle("/state/", api)
	status := statuspage.Handler(page, access)
	mux.Handle("/{$}", status)
	mux.Handle("/status.json", status)
	mux.Handle("/", api) // its own answers (401, 404) for every other path
	return mux
}

// healthByName returns the health of the running sources by name.
func (s *sourceSet) healthByName() map[string]poller.Health {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]poller.Health, len(s.m))
	for n, r := range s.m {
		out[n] = r.p.Health()
	}
	return out
}

// late returns the readiness line of source when it has gone too long without a
// successful cycle here, "" otherwise.
func (d *daemon) late(source string) string {
	for _, s := range d.running.health() {
		if s.name == source {
			return stale(s, d.ready.now())
		}
	}
	return ""
}
