package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/payments-watcher/watcher/cluster"
	"github.com/payments-watcher/watcher/config"
	"github.com/payments-watcher/watcher/daemon"
	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/internal/logtest"
	"github.com/payments-watcher/watcher/internal/natstest"
	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/sim"
)

// natsCluster starts three JetStream servers routed into one cluster on loopback and
// waits until JetStream answers through the first.
func natsCluster(t *testing.T) []*server.Server {
	t.Helper()
	ports := make([]int, 3)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	var srvs []*server.Server
	for i := range ports {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i), Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
			JetStream: true, StoreDir: t.TempDir(),
			Cluster: server.ClusterOpts{Name: "watcher-test", Host: "127.0.0.1", Port: ports[i]},
			Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
		}
		srv, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		srv.Start()
		t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
		if !srv.ReadyForConnections(10 * time.Second) {
			t.Fatalf("server n%d not ready", i)
		}
		srvs = append(srvs, srv)
	}
	js := natstest.Connect(t, srvs[0].ClientURL())
	eventually(t, func() string {
		leaders := 0
		for _, s := range srvs {
			if !s.JetStreamIsCurrent() {
				return "every server's JetStream meta state to be current"
			}
			if s.JetStreamIsLeader() {
				leaders++
			}
		}
		if leaders != 1 {
			return "a JetStream meta leader"
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := js.AccountInfo(ctx); err != nil {
			return "JetStream meta leader: " + err.Error()
		}
		return ""
	})
	return srvs
}

// span is the time one replica ran the work of one lease.
type span struct {
	replica    string
	revision   uint64
	start, end time.Time
}

// spans records the task spans of every replica.
type spans struct {
	mu  sync.Mutex
	all map[string][]*span // key -> spans in start order
}

func (s *spans) hook(l cluster.Lease, stopped bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !stopped {
		s.all[l.Key] = append(s.all[l.Key], &span{replica: l.Holder, revision: l.Revision, start: time.Now()})
		return
	}
	for _, sp := range slices.Backward(s.all[l.Key]) {
		if sp.replica == l.Holder && sp.revision == l.Revision {
			sp.end = time.Now()
			return
		}
	}
}

// holders returns, per key, the replica running its work now ("" when none).
func (s *spans) holders() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	for k, list := range s.all {
		for _, sp := range list {
			if sp.end.IsZero() {
				out[k] = sp.replica
			}
		}
	}
	return out
}

type replica struct {
	id     string
	cancel context.CancelFunc
	done   chan error
	conn   chan *nats.Conn
}

func TestClusterFailover(t *testing.T) {
	srvs := natsCluster(t)
	simulator, err := sim.New(sim.Config{Seed: 7, Rate: 0.2, History: 12, HistorySpan: time.Hour, OpenShare: 0.5,
		OpenResumeWithin: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	provSrv := httptest.NewServer(simulator.Handler())
	defer provSrv.Close()
	simCtx, stopSim := context.WithCancel(context.Background())
	simDone := make(chan struct{})
	go func() { defer close(simDone); _ = simulator.Run(simCtx) }()
	defer func() { stopSim(); <-simDone }()

	var urls []string
	for _, s := range srvs {
		urls = append(urls, s.ClientURL())
	}
	raw, names := demoConfig(t.TempDir(), strings.Join(urls, ","), provSrv.URL, "", "")
	// Open items are re-read every interval whatever their age: the test waits for
	// each item's last status within a minute.
	doc := strings.ReplaceAll(string(raw), "open_refresh_max: 20s", "open_refresh_max: 0s")
	// A second account of every provider: same API, another source name.
	_, srcPart, _ := strings.Cut(doc, "sources:\n")
	second := srcPart
	for _, n := range names {
		second = strings.Replace(second, "name: "+n+"\n", "name: "+n+"-b\n", 1)
	}
	doc += second
	// A lease outlives its holder by up to its TTL and is taken over at the next
	// attempt (every TTL/3): a TTL of one interval moves a dead replica's sources
	// within about 1.4 intervals, as the defaults (interval 15s, lease_ttl 15s) do.
	doc = strings.Replace(doc, "state:\n", "state:\n  backend: nats_kv\n  nats_kv:\n    bucket_prefix: wt\n    replicas: 3\n", 1)
	doc = strings.Replace(doc, "nats:\n", "nats:\n  replicas: 3\n", 1)
	const interval, ttl = 2 * time.Second, 2 * time.Second
	doc += "cluster:\n  lease_ttl: 2s\n  replica_id: REPLICA\n"
	sourceCount := 2 * len(names)

	rec := &spans{all: map[string][]*span{}}
	logs := &logtest.Buffer{}
	defer func() {
		if t.Failed() {
			t.Logf("replica logs:\n%s", logs)
		}
	}()
	start := func(id string) *replica {
		cfg, err := config.Parse([]byte(strings.Replace(doc, "REPLICA", id, 1)), func(string) (string, bool) { return "", false }, os.ReadFile)
		if err != nil {
			t.Fatalf("config: %v\n%s", err, doc)
		}
		if len(cfg.Sources) != sourceCount {
			t.Fatalf("config has %d sources, want %d", len(cfg.Sources), sourceCount)
		}
		ctx, cancel := context.WithCancel(context.Background())
		r := &replica{id: id, cancel: cancel, done: make(chan error, 1), conn: make(chan *nats.Conn, 1)}
		log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
		go func() {
			r.done <- daemon.Run(ctx, cfg, log, daemon.Options{Hooks: daemon.Hooks{Conn: func(c *nats.Conn) { r.conn <- c }, Task: rec.hook}})
		}()
		return r
	}
	reps := []*replica{start("r1"), start("r2"), start("r3")}
	conns := map[string]*nats.Conn{}
	for _, r := range reps {
		conns[r.id] = <-r.conn
	}
	keys := sourceCount + 1 // and the publisher
	share := (keys + 2) / 3

	// Every source is polled, spread over the three replicas. Three replicas creating
	// replicated buckets at once on a young cluster can take a while on a busy machine.
	waitFor(t, 2*time.Minute, func() string {
		for _, r := range reps {
			select {
			case err := <-r.done:
				t.Fatalf("replica %s stopped: %v", r.id, err)
			default:
			}
		}
		h := rec.holders()
		per := map[string]int{}
		for _, r := range h {
			per[r]++
		}
		if len(h) != keys || len(per) != 3 {
			return fmt.Sprintf("all %d leases spread over 3 replicas: %v", keys, per)
		}
		for r, n := range per {
			if n > share {
				return fmt.Sprintf("%s holds %d leases, more than its share %d", r, n, share)
			}
		}
		return ""
	})

	// Crash the replica with the most leases: its connection goes and its work stops,
	// without releasing anything.
	per := map[string][]string{}
	for k, r := range rec.holders() {
		per[r] = append(per[r], k)
	}
	victim := reps[0]
	for _, r := range reps {
		if len(per[r.id]) > len(per[victim.id]) {
			victim = r
		}
	}
	killed := time.Now()
	conns[victim.id].Close()
	victim.cancel()
	<-victim.done
	var moved time.Duration
	eventually(t, func() string {
		h := rec.holders()
		for _, k := range per[victim.id] {
			if h[k] == "" || h[k] == victim.id {
				return "the crashed replica's lease on " + k + " to move"
			}
		}
		moved = time.Since(killed)
		return ""
	})
	t.Logf("replica %s crashed holding %d leases; all of them moved in %s (interval %s, lease TTL %s)",
		victim.id, len(per[victim.id]), moved.Round(time.Millisecond), interval, ttl)

	// Lose one of the three NATS nodes as well: buckets and stream keep a quorum of
	// two, and the replicas connected to it reconnect to the others.
	srvs[2].Shutdown()
	srvs[2].WaitForShutdown()

	// Let the survivors catch up with the simulator's truth, then stop everything.
	stopSim()
	<-simDone
	js := natstest.Connect(t, srvs[1].ClientURL())
	final := map[string]string{} // provider/id -> last raw status of a top-level item
	for _, tr := range simulator.Truth() {
		if tr.ParentID == "" && tr.Kind == poller.Providers[tr.Provider].Kind {
			final[tr.Provider+"/"+tr.ID] = tr.To
		}
	}
	providerOf := map[string]string{}
	for _, s := range demoSources {
		providerOf[s.name], providerOf[s.name+"-b"] = s.provider, s.provider
	}
	var evs []event.Event
	var seqs []uint64
	waitFor(t, time.Minute, func() string {
		var err error
		if evs, seqs, err = readStream(js, config.DefaultStream); err != nil {
			return "the stream to be read: " + err.Error()
		}
		last := map[string]string{} // source/id -> last status
		for _, e := range evs {
			if e.Data.ParentID == nil {
				last[e.Data.Source+"/"+e.Data.ID] = e.Data.Current.Status
			}
		}
		for src, prov := range providerOf {
			for k, want := range final {
				p, id, _ := strings.Cut(k, "/")
				if p == prov && last[src+"/"+id] != want {
					return fmt.Sprintf("source %s item %s at %q (stream has %q)", src, id, want, last[src+"/"+id])
				}
			}
		}
		return ""
	})
	for _, r := range reps {
		if r != victim {
			r.cancel()
			if err := <-r.done; err != nil {
				t.Errorf("replica %s: %v", r.id, err)
			}
		}
	}

	// Each transition is stored once, every event names its poller, and along the
	// stream a source's lease revisions never go back.
	ids := map[string]bool{}
	type itemSeq struct {
		source, kind, id string
		seq              uint32
	}
	seen := map[itemSeq]bool{}
	lastRev := map[string]uint64{}
	for i, e := range evs {
		if ids[e.ID] {
			t.Errorf("event id %s stored twice", e.ID)
		}
		ids[e.ID] = true
		k := itemSeq{e.Data.Source, e.Data.Kind, e.Data.ID, e.Data.Sequence}
		if seen[k] {
			t.Errorf("transition %+v stored twice", k)
		}
		seen[k] = true
		if e.Data.Poller == nil {
			t.Fatalf("event %s (stream seq %d) has no data.poller", e.ID, seqs[i])
		}
		if e.Data.Poller.LeaseRevision < lastRev[e.Data.Source] {
			t.Errorf("source %s: event at stream seq %d from lease revision %d after one from %d",
				e.Data.Source, seqs[i], e.Data.Poller.LeaseRevision, lastRev[e.Data.Source])
		}
		lastRev[e.Data.Source] = e.Data.Poller.LeaseRevision
	}

	// No two replicas ran a source's poller at the same time.
	rec.mu.Lock()
	defer rec.mu.Unlock()
	handovers := 0
	for k, list := range rec.all {
		for i := 1; i < len(list); i++ {
			prev, cur := list[i-1], list[i]
			if prev.end.IsZero() || cur.start.Before(prev.end) {
				t.Errorf("%s: %s (revision %d) started at %s while %s (revision %d) ran until %s", k,
					cur.replica, cur.revision, cur.start.Format(time.StampMicro), prev.replica, prev.revision, prev.end.Format(time.StampMicro))
			}
			handovers++
		}
	}
	t.Logf("%d events, %d transitions checked; %d lease handovers without overlap", len(evs), len(seen), handovers)
}

// readStream returns every event in stream and its stream sequences, in order.
func readStream(js jetstream.JetStream, stream string) ([]event.Event, []uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// One consumer per read, deleted afterwards: callers poll, and consumers left to
	// expire would pile up against the server's limit.
	cons, err := js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: time.Minute, MemoryStorage: true,
	})
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = js.DeleteConsumer(dctx, stream, cons.CachedInfo().Name) // it expires anyway
	}()
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, nil, err
	}
	pending := int(info.NumPending)
	var evs []event.Event
	var seqs []uint64
	for len(evs) < pending {
		batch, err := cons.Fetch(min(500, pending-len(evs)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, nil, err
		}
		n := 0
		for m := range batch.Messages() {
			var e event.Event
			if err := json.Unmarshal(m.Data(), &e); err != nil {
				return nil, nil, fmt.Errorf("event on %s: %w", m.Subject(), err)
			}
			md, _ := m.Metadata()
			evs = append(evs, e)
			seqs = append(seqs, md.Sequence.Stream)
			n++
		}
		if n == 0 {
			return nil, nil, fmt.Errorf("read %d of %d events", len(evs), pending)
		}
	}
	return evs, seqs, nil
}

// waitFor calls check until it returns "" or limit passes; check says what it still
// waits for.
func waitFor(t *testing.T, limit time.Duration, check func() string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		waiting := check()
		if waiting == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s still waiting for %s", limit, waiting)
		}
		<-time.After(20 * time.Millisecond)
	}
}

// A replica asked to stop while NATS cannot set up its buckets (here: a server
// without JetStream) stops cleanly: daemon.Run returns nil, as a SIGTERM must end in
// exit 0.
func TestReplicaStopDuringSetup(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	raw, _ := demoConfig(t.TempDir(), srv.ClientURL(), "http://127.0.0.1:1", "", "")
	doc := strings.Replace(string(raw), "state:\n", "state:\n  backend: nats_kv\n  nats_kv:\n    replicas: 1\n", 1)
	doc += "cluster:\n  replica_id: r1\n"
	cfg, err := config.Parse([]byte(doc), func(string) (string, bool) { return "", false }, os.ReadFile)
	if err != nil {
		t.Fatalf("config: %v\n%s", err, doc)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	// Cancelled once connected, before (or while) the buckets are set up.
	err = daemon.Run(ctx, cfg, log, daemon.Options{Hooks: daemon.Hooks{Conn: func(*nats.Conn) { cancel() }}})
	if err != nil {
		t.Errorf("the replica stopped during setup: %v, want nil", err)
	}
}
