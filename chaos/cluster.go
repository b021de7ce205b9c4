package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payments-watcher/watcher/state/natskv"
)

// The cluster run's settings.
const (
	// clusterNodes is the number of nats-server nodes; the stream and every bucket
	// keep a copy on each, so one node down leaves a quorum of two.
	clusterNodes = 3
	// leaseTTL is cluster.lease_ttl: a killed replica's sources move after about
	// 4/3 of it.
	leaseTTL = 2 * time.Second
	// bucketPrefix is state.nats_kv.bucket_prefix.
	bucketPrefix = "watcher"
	// replicaEnv carries each replica's id into the configuration all replicas share.
	replicaEnv = "CHAOS_REPLICA_ID"
)

// ClusterReport is what a cluster run adds to a Report.
type ClusterReport struct {
	// Replicas is the number of replica slots, each running one watcher process at a
	// time.
	Replicas int
	// NodeRestarts counts restarts by node name; LeaderRestarts those of a node that
	// was the JetStream meta leader when it was stopped.
	NodeRestarts   map[string]int
	LeaderRestarts int
	// LeaseAcquisitions counts the "lease acquired" lines in the replicas' logs, for
	// sources and the outbox publisher, first ones included.
	LeaseAcquisitions int
	// Pollers is what the stream says about which replica polled each source.
	Pollers PollerResult
}

// clusterConfig is the configuration every replica of a cluster run reads; only the
// environment variable replicaEnv differs between replicas.
func clusterConfig(natsURLs, simURL string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "state:\n  backend: nats_kv\n  nats_kv:\n    bucket_prefix: %s\n    replicas: %d\n", bucketPrefix, clusterNodes)
	fmt.Fprintf(&b, "cluster:\n  replica_id: ${%s}\n  lease_ttl: %v\n", replicaEnv, leaseTTL)
	fmt.Fprintf(&b, "nats:\n  url: %s\n  stream: %s\n  subject_prefix: %s\n  replicas: %d\n", natsURLs, streamName, subjectPrefix, clusterNodes)
	b.WriteString("http:\n  listen: \"\"\nadmin:\n  listen: \"\"\n")
	writeSources(&b, simURL)
	return b.String()
}

// natsCluster is three nats-server nodes routed into one JetStream cluster on
// loopback, each with its own store, client port and monitoring port across
// restarts.
type natsCluster struct {
	nodes   []*natsServer
	names   []string
	monitor []string // base URL of each node's monitoring endpoint
}

// newNATSCluster picks the nodes' ports; nothing runs yet.
func newNATSCluster(bin, dir string, log *os.File, rng *rand.Rand) (*natsCluster, error) {
	taken := map[string]bool{}
	addr := func() (string, error) {
		for range 20 {
			a, err := serverAddr(rng)
			if err != nil {
				return "", err
			}
			if !taken[a] {
				taken[a] = true
				return a, nil
			}
		}
		return "", errors.New("no free loopback port for the NATS cluster")
	}
	client, route, mon := make([]string, clusterNodes), make([]string, clusterNodes), make([]string, clusterNodes)
	for i := range clusterNodes {
		for _, p := range []*string{&client[i], &route[i], &mon[i]} {
			a, err := addr()
			if err != nil {
				return nil, err
			}
			*p = a
		}
	}
	routes := make([]string, clusterNodes)
	for i, r := range route {
		routes[i] = "nats://" + r
	}
	c := &natsCluster{}
	for i := range clusterNodes {
		name := fmt.Sprintf("n%d", i+1)
		_, monPort, _ := net.SplitHostPort(mon[i])
		c.nodes = append(c.nodes, &natsServer{
			bin: bin, addr: client[i], storeDir: filepath.Join(dir, "nats-"+name), log: log,
			extra: []string{"-n", name, "-m", monPort, "--cluster_name", "chaos", "--cluster", "nats://" + route[i],
				"--routes", strings.Join(routes, ",")},
		})
		c.names = append(c.names, name)
		c.monitor = append(c.monitor, "http://"+mon[i])
	}
	return c, nil
}

// url lists every node's client URL, for watcher and the checker.
func (c *natsCluster) url() string {
	urls := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		urls[i] = n.url()
	}
	return strings.Join(urls, ",")
}

// start starts every node and returns once each answers JetStream requests and
// reports itself healthy.
func (c *natsCluster) start(ctx context.Context) error {
	errs := make([]error, len(c.nodes))
	var wg sync.WaitGroup
	for i, n := range c.nodes {
		wg.Go(func() {
			if errs[i] = n.start(ctx); errs[i] == nil {
				errs[i] = c.awaitHealthy(ctx, i, time.Minute)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// stop ends every node with SIGTERM.
func (c *natsCluster) stop() {
	for _, n := range c.nodes {
		_, _ = n.stop(syscall.SIGTERM)
	}
}

// leader returns the index of the node that is the JetStream meta leader, as the
// monitoring endpoint of the first node that answers /jsz says.
func (c *natsCluster) leader(ctx context.Context) (int, error) {
	var errs []error
	for _, base := range c.monitor {
		var jsz struct {
			Meta *struct {
				Leader string `json:"leader"`
			} `json:"meta_cluster"`
		}
		if err := getJSON(ctx, base+"/jsz", &jsz); err != nil {
			errs = append(errs, err)
			continue
		}
		if jsz.Meta == nil || jsz.Meta.Leader == "" {
			errs = append(errs, fmt.Errorf("%s/jsz: no meta leader", base))
			continue
		}
		for i, name := range c.names {
			if name == jsz.Meta.Leader {
				return i, nil
			}
		}
		errs = append(errs, fmt.Errorf("%s/jsz: unknown meta leader %q", base, jsz.Meta.Leader))
	}
	return 0, errors.Join(errs...)
}

// awaitLeader polls leader until a node is the meta leader or limit passes.
func (c *natsCluster) awaitLeader(ctx context.Context, limit time.Duration) (int, error) {
	deadline := time.Now().Add(limit)
	for {
		i, err := c.leader(ctx)
		if err == nil {
			return i, nil
		}
		if time.Now().After(deadline) || !after(ctx, 100*time.Millisecond) {
			return 0, fmt.Errorf("no JetStream meta leader within %v: %w", limit, err)
		}
	}
}

// awaitHealthy polls node i's /healthz (JetStream enabled and every stream and
// consumer replica on it current) until it answers 200 or limit passes.
func (c *natsCluster) awaitHealthy(ctx context.Context, i int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		var health struct {
			Status string `json:"status"`
			Error  string `json:"error"`
		}
		err := getJSON(ctx, c.monitor[i]+"/healthz", &health)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || !after(ctx, 100*time.Millisecond) {
			return fmt.Errorf("nats-server %s not healthy within %v: %w", c.names[i], limit, err)
		}
	}
}

// getJSON decodes the answer of a GET into v; an answer other than 200 is an error.
func getJSON(ctx context.Context, url string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	if _, err := body.ReadFrom(resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(body.String()))
	}
	return json.Unmarshal(body.Bytes(), v)
}

// tally counts the stops of every replica slot; safe for concurrent use.
type tally struct {
	mu                  sync.Mutex
	kills, terms        int
	starts              int
	unexpected, unclean []string
}

// runCluster is Run for Options.Replicas above 1: the NATS cluster, the chaos
// phase, the settling of the simulator and the catch-up with its checks.
func (h *harness) runCluster(ctx context.Context, rep *Report, stopEngine func()) error {
	rep.Cluster = ClusterReport{Replicas: h.opt.Replicas, NodeRestarts: map[string]int{}}
	natsLog, err := os.OpenFile(filepath.Join(h.opt.Dir, "nats.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer natsLog.Close()
	nc, err := newNATSCluster(h.opt.NATSBin, h.opt.Dir, natsLog, rand.New(rand.NewPCG(uint64(h.opt.Seed), uint64(time.Now().UnixNano()))))
	if err != nil {
		return err
	}
	defer nc.stop()
	if err := nc.start(ctx); err != nil {
		return err
	}
	h.cfgPath = filepath.Join(h.opt.Dir, "watcher.yaml")
	if err := os.WriteFile(h.cfgPath, []byte(clusterConfig(nc.url(), h.simURL)), 0o600); err != nil {
		return err
	}
	h.logf("simulator on %s, NATS cluster on %s, data in %s, seed %d", h.simURL, nc.url(), h.opt.Dir, h.opt.Seed)

	var t tally
	defer func() { // what the replicas went through, also when the run stops early
		rep.Kills, rep.Terms, rep.Starts = t.kills, t.terms, t.starts
		rep.UnexpectedExits = append(rep.UnexpectedExits, t.unexpected...)
		rep.BadStops = append(rep.BadStops, t.unclean...)
	}()
	if err := h.clusterChaos(ctx, nc, &t, rep); err != nil {
		return err
	}
	if err := h.settle(stopEngine); err != nil {
		return err
	}
	err = h.clusterCatchUp(ctx, nc, &t, rep)
	if n, lerr := h.leaseAcquisitions(); lerr == nil {
		rep.Cluster.LeaseAcquisitions = n
	} else {
		err = errors.Join(err, lerr)
	}
	return err
}

// replicaID names replica slot i.
func replicaID(i int) string { return fmt.Sprintf("r%d", i+1) }

// replicaLog is the log file of replica slot id: every process of the slot appends
// to it.
func (h *harness) replicaLog(id string) string {
	return filepath.Join(h.opt.Dir, "watcher-"+id+".log")
}

// startReplica starts one `watcher run` process as replica id.
func (h *harness) startReplica(id string, log *os.File, t *tally) (*proc, error) {
	t.mu.Lock()
	t.starts++
	n := t.starts
	t.mu.Unlock()
	fmt.Fprintf(log, "=== chaos: watcher start %d (replica %s) at %s\n", n, id, time.Now().UTC().Format(time.RFC3339Nano))
	return startProc(h.opt.WatcherBin, []string{"run", "--config", h.cfgPath}, log, replicaEnv+"="+id)
}

// clusterChaos runs Options.Replicas replica slots, each starting a watcher process
// and stopping it after a random time (SIGKILL, every TermEvery-th stop of all a
// SIGTERM) and starting the next, while NATS nodes go down one at a time. It ends
// when Duration has passed, Kills replicas have been killed and NATSRestarts nodes
// restarted, with every slot's last process killed.
func (h *harness) clusterChaos(ctx context.Context, nc *natsCluster, t *tally, rep *Report) error {
	begin := time.Now()
	// phase ends early when a slot or the outages cannot go on, so that the others
	// do not wait for restarts or kills that will not come.
	phase, abort := context.WithCancel(ctx)
	defer abort()
	over := func() bool {
		t.mu.Lock()
		defer t.mu.Unlock()
		return phase.Err() != nil || t.kills >= h.opt.Kills && time.Since(begin) >= h.opt.Duration &&
			int(h.natsTotal.Load()) >= h.opt.NATSRestarts
	}
	loopDone := make(chan struct{})
	natsErr := make(chan error, 1)
	go func() {
		err := h.nodeOutages(phase, nc, rand.New(rand.NewPCG(uint64(h.opt.Seed), 0x4a75)), loopDone, &rep.Cluster)
		if err != nil {
			abort()
		}
		natsErr <- err
	}()
	h.logf("chaos phase: at least %v, %d replica kills after %v..%v each, %d NATS node restarts",
		h.opt.Duration, h.opt.Kills, h.opt.KillAfter[0], h.opt.KillAfter[1], h.opt.NATSRestarts)
	errs := make([]error, h.opt.Replicas)
	var wg sync.WaitGroup
	for i := range h.opt.Replicas {
		rng := rand.New(rand.NewPCG(uint64(h.opt.Seed), 0xc4a05+uint64(i)))
		wg.Go(func() {
			if errs[i] = h.replicaSlot(phase, replicaID(i), rng, over, t); errs[i] != nil {
				abort()
			}
		})
	}
	wg.Wait()
	close(loopDone)
	err := errors.Join(append(errs, <-natsErr, ctx.Err())...)
	rep.Chaos = time.Since(begin)
	h.natsRestarts.Range(func(k, v any) bool {
		rep.NATSRestarts[k.(string)] = int(v.(*atomic.Int64).Load())
		return true
	})
	h.logf("chaos phase over: %d replica kills, %d graceful stops, %d NATS node restarts (%d of the meta leader) in %v",
		t.kills, t.terms, h.natsTotal.Load(), rep.Cluster.LeaderRestarts, rep.Chaos.Round(time.Second))
	return err
}

// replicaSlot runs the processes of replica id one after another until over reports
// true; each is stopped at the end of its run time (or killed when ctx ends), so none
// is left running. It returns an error only when the run cannot go on (a process
// that does not die, five starts in a row ending on their own).
func (h *harness) replicaSlot(ctx context.Context, id string, rng *rand.Rand, over func() bool, t *tally) error {
	log, err := os.OpenFile(h.replicaLog(id), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	ownExits := 0
	for !over() {
		p, err := h.startReplica(id, log, t)
		if err != nil {
			return err
		}
		timer := time.NewTimer(uniform(rng, h.opt.KillAfter))
		select {
		case <-p.done:
			timer.Stop()
			t.mu.Lock()
			t.unexpected = append(t.unexpected, fmt.Sprintf("replica %s ended on its own: %v", id, p.err))
			t.mu.Unlock()
			h.logf("replica %s ended on its own: %v (see %s)", id, p.err, log.Name())
			if ownExits++; ownExits >= 5 {
				return fmt.Errorf("replica %s ended on its own at 5 starts in a row; last: %v (see %s)", id, p.err, log.Name())
			}
			continue
		case <-ctx.Done():
			timer.Stop()
			_ = p.stop(syscall.SIGKILL, 0)
			return nil
		case <-timer.C:
		}
		ownExits = 0
		if err := h.stopReplica(id, p, t); err != nil {
			return err
		}
	}
	return nil
}

// stopReplica ends a replica's process at the end of its run time: with SIGTERM
// when the stop's number (over all slots) is a multiple of TermEvery and the process
// has set its signal handlers, which must end in exit 0, else with SIGKILL. Only a
// process that does not die is an error.
func (h *harness) stopReplica(id string, p *proc, t *tally) error {
	t.mu.Lock()
	term := h.opt.TermEvery > 0 && (t.kills+t.terms+1)%h.opt.TermEvery == 0
	if term {
		t.terms++ // counted at once, so that the other slots' stops keep their numbers
	} else {
		t.kills++
	}
	kills := t.kills
	t.mu.Unlock()
	if term && p.awaitOutput(time.Minute) {
		err := p.stop(syscall.SIGTERM, 20*time.Second)
		if errors.Is(err, errStuck) {
			return err
		}
		if err != nil {
			t.mu.Lock()
			t.unclean = append(t.unclean, fmt.Sprintf("replica %s, stopped with SIGTERM: %v", id, err))
			t.mu.Unlock()
			h.logf("replica %s did not stop cleanly on SIGTERM: %v", id, err)
		}
		return nil
	}
	if term { // never wrote a line in a minute: killed instead, and counted so
		t.mu.Lock()
		t.terms--
		t.kills++
		t.mu.Unlock()
	}
	if err := p.stop(syscall.SIGKILL, 0); errors.Is(err, errStuck) {
		return err
	}
	if !term && kills%10 == 0 {
		h.logf("%d replica kills, %d NATS node restarts", kills, h.natsTotal.Load())
	}
	return nil
}

// nodeOutages restarts NATS nodes one at a time until loopDone is closed: every
// other outage hits the node that is the JetStream meta leader at that moment (the
// first one included), the others a node that is not; two outages in a row of each
// kind use SIGTERM, the next two SIGKILL. A node stays down for a random time in
// NATSDown and comes back on its store and ports; the next outage is scheduled once
// it is healthy again, so that the stream and the buckets keep their quorum.
func (h *harness) nodeOutages(ctx context.Context, nc *natsCluster, rng *rand.Rand, loopDone <-chan struct{}, cr *ClusterReport) error {
	for i := 0; ; i++ {
		if !h.awaitOutage(ctx, rng, loopDone) {
			return nil
		}
		leader, err := nc.awaitLeader(ctx, time.Minute)
		if err != nil {
			return err
		}
		target := leader
		if i%2 == 1 {
			target = (leader + 1 + rng.IntN(clusterNodes-1)) % clusterNodes
		}
		sig := syscall.SIGTERM
		if i%4 >= 2 {
			sig = syscall.SIGKILL
		}
		ended, err := nc.nodes[target].stop(sig)
		if err != nil {
			return fmt.Errorf("stop nats-server %s: %w", nc.names[target], err)
		}
		down := uniform(rng, h.opt.NATSDown)
		role := "a follower"
		if target == leader {
			role = "the meta leader"
		}
		h.logf("nats-server %s (%s) stopped with %s, down for %v", nc.names[target], role, sigName(ended), down.Round(time.Millisecond))
		after(ctx, down) // the outage's length, not a wait for anything
		if err := nc.nodes[target].start(context.WithoutCancel(ctx)); err != nil {
			return err
		}
		if err := nc.awaitHealthy(context.WithoutCancel(ctx), target, 2*time.Minute); err != nil {
			return err
		}
		h.countRestart(ended)
		cr.NodeRestarts[nc.names[target]]++
		if target == leader {
			cr.LeaderRestarts++
		}
	}
}

// clusterCatchUp starts every replica again and runs them, the faults still on,
// until every final status is in the stream (or Options.CatchUp passes); it then
// stops them all at once with SIGTERM (each must exit 0) and checks the stream
// against the truth, the pollers the events name, and the shared outbox, which must
// be empty.
func (h *harness) clusterCatchUp(ctx context.Context, nc *natsCluster, t *tally, rep *Report) error {
	begin := time.Now()
	var procs []*proc
	defer func() {
		for _, p := range procs {
			_ = p.stop(syscall.SIGKILL, 0)
		}
	}()
	for i := range h.opt.Replicas {
		id := replicaID(i)
		log, err := os.OpenFile(h.replicaLog(id), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		defer log.Close()
		p, err := h.startReplica(id, log, t)
		if err != nil {
			return err
		}
		procs = append(procs, p)
	}
	reader, err := newStreamReader(nc.url(), streamName)
	if err != nil {
		return err
	}
	defer reader.close()
	ended := func() string {
		for i, p := range procs {
			if p.exited() {
				return fmt.Sprintf("final replica %s ended on its own: %v", replicaID(i), p.err)
			}
		}
		return ""
	}
	if err := h.awaitFinal(ctx, reader, ended, rep); err != nil {
		return err
	}
	rep.CatchUp = time.Since(begin)
	stops := make([]error, len(procs))
	var wg sync.WaitGroup
	for i, p := range procs {
		wg.Go(func() {
			if err := p.stop(syscall.SIGTERM, 30*time.Second); err != nil {
				stops[i] = fmt.Errorf("replica %s: %w", replicaID(i), err)
			}
		})
	}
	wg.Wait()
	rep.FinalStop = errors.Join(stops...)
	h.logf("caught up in %v; final replicas stopped with SIGTERM: %v", rep.CatchUp.Round(100*time.Millisecond), exitText(rep.FinalStop))
	if err := h.checkStream(ctx, reader, rep); err != nil {
		return err
	}
	rep.Cluster.Pollers = CheckPollers(reader.msgs)
	rep.Outbox, err = pendingOutbox(ctx, reader.js)
	return err
}

// pendingOutbox returns the number of entries in the shared outbox stream: events
// committed by a replica and not yet acknowledged by the event stream.
func pendingOutbox(ctx context.Context, js jetstream.JetStream) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, _, _, _, name := natskv.Names(bucketPrefix)
	s, err := js.Stream(ctx, name)
	if err != nil {
		return 0, fmt.Errorf("outbox stream %s: %w", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("outbox stream %s: %w", name, err)
	}
	return int(info.State.Msgs), nil
}

// leaseAcquisitions counts the leases the replicas' logs say were acquired.
func (h *harness) leaseAcquisitions() (int, error) {
	n := 0
	for i := range h.opt.Replicas {
		f, err := os.Open(h.replicaLog(replicaID(i)))
		if err != nil {
			return 0, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if bytes.Contains(sc.Bytes(), []byte("cluster: lease acquired")) {
				n++
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return 0, err
		}
	}
	return n, nil
}
