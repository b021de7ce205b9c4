// Package cluster shares work among watcher replicas through leases kept in a NATS
// JetStream key-value bucket, so that each piece of work (a source's poller, the
// outbox publisher) runs on exactly one replica at a time.
//
// # Leases
//
// The leases bucket has one key per piece of work and a bucket-wide TTL (the lease
// TTL): a key not rewritten within the TTL disappears. A replica acquires a lease
// with Create, which fails while another replica holds it, and renews it every
// TTL/3 with Update at the revision it last wrote, which fails if anyone else wrote
// the key meanwhile. The revision Create returned is the lease's fencing token: it
// grows with each new holder (Lease.Revision, published as data.poller).
//
// A replica stops the work of a lease at once (cancels its context) when a renewal
// fails or when no renewal has succeeded for 2/3 of the TTL, so it has stopped well
// before the key expires and another replica can take it. A replica that dies keeps
// its leases until they expire: its work moves within about TTL + TTL/3.
//
// # Balancing
//
// Each replica keeps a key of its own in the members bucket (same TTL, rewritten
// every TTL/3) and counts the live ones. It holds at most ceil(work / live replicas)
// leases: it acquires free ones up to that number, and when more replicas appear it
// stops the work of its extra leases and deletes them (at their revision) once the
// work has returned. Replicas try the keys in an order of their own, so they spread
// without coordination.
//
// Correctness does not rest on the leases alone: the state back end (package
// state/natskv) checks revisions on every write and asks Manager.Fence before each
// commit, so a replica that lost a lease cannot overwrite what the new holder wrote.
package cluster

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payments-watcher/watcher/jssetup"
)

// Config configures a Manager.
type Config struct {
	// ReplicaID names this replica; unique among the replicas. Letters, digits and
	// "-_=/." only.
	ReplicaID string
	// LeaseTTL is how long a lease outlives its holder's last renewal; default 15s,
	// at least 1s.
	LeaseTTL time.Duration
	// LeaseBucket and MembersBucket name the buckets; defaults "watcher_leases" and
	// "watcher_members".
	LeaseBucket, MembersBucket string
	// Replicas is the number of copies JetStream keeps of each bucket; default 1.
	Replicas int
}

// Lease is a lease this replica holds.
type Lease struct {
	// Key is the piece of work, as given to New.
	Key string
	// Holder is the replica id.
	Holder string
	// Revision is the revision at which the lease was acquired.
	Revision uint64
}

// Task runs the work of key while this replica holds its lease. It must return soon
// after ctx is cancelled (the lease is lost or being handed over).
type Task func(ctx context.Context, l Lease)

// Manager acquires, renews and releases this replica's leases and runs their tasks.
type Manager struct {
	cfg     Config
	keys    []string
	task    Task
	log     *slog.Logger
	leases  jetstream.KeyValue
	members jetstream.KeyValue

	mu   sync.Mutex
	held map[string]*held
	// wg counts running tasks.
	wg sync.WaitGroup
}

type held struct {
	lease     Lease
	rev       uint64    // revision last written
	renewed   time.Time // when the last successful write was sent
	cancel    context.CancelFunc
	done      chan struct{}
	releasing bool
}

// Defaults of Config.
const (
	DefaultLeaseTTL      = 15 * time.Second
	DefaultLeaseBucket   = "watcher_leases"
	DefaultMembersBucket = "watcher_members"
)

// New creates (or updates) the buckets and returns a Manager of the given keys
// (distinct names of work; any string) that runs task for each lease it holds.
func New(ctx context.Context, js jetstream.JetStream, cfg Config, keys []string, task Task, log *slog.Logger) (*Manager, error) {
	cfg.LeaseTTL = cmp.Or(cfg.LeaseTTL, DefaultLeaseTTL)
	cfg.LeaseBucket = cmp.Or(cfg.LeaseBucket, DefaultLeaseBucket)
	cfg.MembersBucket = cmp.Or(cfg.MembersBucket, DefaultMembersBucket)
	cfg.Replicas = cmp.Or(cfg.Replicas, 1)
	if err := CheckReplicaID(cfg.ReplicaID); err != nil {
		return nil, err
	}
	if cfg.LeaseTTL < time.Second {
		return nil, fmt.Errorf("cluster.lease_ttl %s is shorter than 1s", cfg.LeaseTTL)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Manager{cfg: cfg, keys: slices.Clone(keys), task: task, log: log, held: map[string]*held{}}
	for _, b := range []struct {
		name string
		kv   *jetstream.KeyValue
	}{{cfg.LeaseBucket, &m.leases}, {cfg.MembersBucket, &m.members}} {
		kv, err := jssetup.Retry(ctx, func(ctx context.Context) (jetstream.KeyValue, error) {
			if kv, err := js.KeyValue(ctx, b.name); err == nil {
				if st, err := kv.Status(ctx); err == nil && st.TTL() == cfg.LeaseTTL {
					return kv, nil
				}
			}
			return js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
				Bucket: b.name, History: 1, TTL: cfg.LeaseTTL, Replicas: cfg.Replicas, Storage: jetstream.FileStorage,
			})
		})
		if err != nil {
			return nil, fmt.Errorf("cluster: bucket %s: %w", b.name, err)
		}
		*b.kv = kv
	}
	// Try the keys in an order of this replica's own.
	h := fnv.New64a()
	h.Write([]byte(cfg.ReplicaID))
	r := rand.New(rand.NewPCG(h.Sum64(), 0))
	r.Shuffle(len(m.keys), func(i, j int) { m.keys[i], m.keys[j] = m.keys[j], m.keys[i] })
	return m, nil
}

// CheckReplicaID returns an error naming id when it cannot be a replica id.
func CheckReplicaID(id string) error {
	if id == "" {
		return errors.New("cluster.replica_id is empty")
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '=' || c == '/' || c == '.') {
			return fmt.Errorf("cluster.replica_id %q: use letters, digits and -_=/. only", id)
		}
	}
	if id[0] == '.' || id[len(id)-1] == '.' {
		return fmt.Errorf("cluster.replica_id %q must not begin or end with a dot", id)
	}
	return nil
}

func leaseKey(key string) string { return base64.RawURLEncoding.EncodeToString([]byte(key)) }

// Fence returns nil while this replica holds key's lease and renewed it within 2/3
// of the TTL, and an error naming the key otherwise.
func (m *Manager) Fence(key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := m.held[key]
	if h == nil {
		return fmt.Errorf("replica %s does not hold the lease of %q", m.cfg.ReplicaID, key)
	}
	if age := time.Since(h.renewed); age > m.safe() {
		return fmt.Errorf("replica %s last renewed the lease of %q %s ago", m.cfg.ReplicaID, key, age.Round(time.Millisecond))
	}
	return nil
}

// Held returns the leases this replica holds, by key.
func (m *Manager) Held() []Lease {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Lease
	for _, h := range m.held {
		out = append(out, h.lease)
	}
	slices.SortFunc(out, func(a, b Lease) int { return cmp.Compare(a.Key, b.Key) })
	return out
}

// safe is how long after its last renewal a lease's work may go on.
func (m *Manager) safe() time.Duration { return m.cfg.LeaseTTL * 2 / 3 }

// Run manages the leases until ctx is cancelled; it then stops every task, waits
// for them and deletes the leases, so that other replicas take the work at once.
func (m *Manager) Run(ctx context.Context) error {
	tick := time.NewTicker(m.cfg.LeaseTTL / 3)
	defer tick.Stop()
	for {
		m.step(ctx)
		select {
		case <-ctx.Done():
			m.stopAll()
			return nil
		case <-tick.C:
		}
	}
}

// step renews what is held, then releases or acquires leases towards this replica's
// share.
func (m *Manager) step(ctx context.Context) {
	timeout := m.cfg.LeaseTTL / 6
	rctx, cancel := context.WithTimeout(ctx, timeout)
	if _, err := m.members.PutString(rctx, m.cfg.ReplicaID, time.Now().UTC().Format(time.RFC3339Nano)); err != nil && ctx.Err() == nil {
		m.log.Warn("cluster: membership not renewed", "err", err)
	}
	cancel()
	m.renew(ctx, timeout)
	if ctx.Err() != nil {
		return
	}

	lctx, cancel := context.WithTimeout(ctx, timeout)
	live, err := countKeys(lctx, m.members)
	cancel()
	if err != nil {
		m.log.Warn("cluster: members not counted; keeping the leases held", "err", err)
		return
	}
	live = max(live, 1)
	share := (len(m.keys) + live - 1) / live
	m.finishReleases(ctx)

	m.mu.Lock()
	active := 0
	for _, h := range m.held {
		if !h.releasing {
			active++
		}
	}
	// Release the extra leases: the last of this replica's order first.
	for i := len(m.keys) - 1; i >= 0 && active > share; i-- {
		if h := m.held[m.keys[i]]; h != nil && !h.releasing {
			h.releasing = true
			h.cancel()
			active--
			m.log.Info("cluster: handing a lease over", "key", m.keys[i], "share", share, "replicas", live)
		}
	}
	m.mu.Unlock()

	for _, key := range m.keys {
		if active >= share || ctx.Err() != nil {
			break
		}
		m.mu.Lock()
		_, mine := m.held[key]
		m.mu.Unlock()
		if mine {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, timeout)
		sent := time.Now()
		rev, err := m.leases.Create(actx, leaseKey(key), []byte(m.cfg.ReplicaID))
		cancel()
		if err != nil {
			if !errors.Is(err, jetstream.ErrKeyExists) && ctx.Err() == nil {
				m.log.Warn("cluster: lease not acquired", "key", key, "err", err)
			}
			continue
		}
		m.start(ctx, key, rev, sent)
		active++
	}
}

// countKeys counts the live keys of kv. Unlike KeyValue.Keys, it gives up when ctx
// ends: a watch whose consumer was lost (a NATS node went away) may never deliver the
// end of its initial values.
func countKeys(ctx context.Context, kv jetstream.KeyValue) (int, error) {
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes(), jetstream.MetaOnly())
	if err != nil {
		return 0, err
	}
	defer w.Stop()
	keys := map[string]struct{}{}
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return 0, errors.New("watch closed before the initial values were read")
			}
			if e == nil {
				return len(keys), nil
			}
			keys[e.Key()] = struct{}{}
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// start runs key's task under the lease acquired at rev.
func (m *Manager) start(ctx context.Context, key string, rev uint64, sent time.Time) {
	tctx, cancel := context.WithCancel(ctx)
	h := &held{lease: Lease{Key: key, Holder: m.cfg.ReplicaID, Revision: rev}, rev: rev, renewed: sent,
		cancel: cancel, done: make(chan struct{})}
	m.mu.Lock()
	m.held[key] = h
	m.mu.Unlock()
	m.log.Info("cluster: lease acquired", "key", key, "revision", rev)
	m.wg.Go(func() {
		defer close(h.done)
		m.task(tctx, h.lease)
	})
	m.wg.Go(func() { m.watchdog(tctx, h) })
}

// watchdog stops h's task once its lease has gone unrenewed for 2/3 of the TTL,
// whatever the renewal loop is doing: a NATS call stuck in it must not keep the work
// running past the moment another replica may take the lease.
func (m *Manager) watchdog(ctx context.Context, h *held) {
	timer := time.NewTimer(m.safe())
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		m.mu.Lock()
		left := m.safe() - time.Since(h.renewed)
		if left <= 0 {
			m.log.Warn("cluster: lease not renewed in time; stopping its work", "key", h.lease.Key)
			h.cancel()
			if m.held[h.lease.Key] == h {
				delete(m.held, h.lease.Key)
			}
			m.mu.Unlock()
			return
		}
		m.mu.Unlock()
		timer.Reset(left)
	}
}

// renew rewrites every held lease at its revision, concurrently; a lease whose
// renewal is refused (or fails once it went unrenewed too long) is lost: its task is
// cancelled. The watchdog of start stops work whose renewals stopped coming back.
func (m *Manager) renew(ctx context.Context, timeout time.Duration) {
	m.mu.Lock()
	hs := make([]*held, 0, len(m.held))
	for _, h := range m.held {
		hs = append(hs, h)
	}
	m.mu.Unlock()
	var wg sync.WaitGroup
	for _, h := range hs {
		wg.Go(func() {
			rctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			sent := time.Now()
			rev, err := m.leases.Update(rctx, leaseKey(h.lease.Key), []byte(m.cfg.ReplicaID), h.rev)
			m.mu.Lock()
			defer m.mu.Unlock()
			if err == nil {
				h.rev, h.renewed = rev, sent
				return
			}
			if ctx.Err() != nil {
				return
			}
			if time.Since(h.renewed) < m.safe() && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) {
				m.log.Warn("cluster: lease renewal failed; retrying", "key", h.lease.Key, "err", err)
				return
			}
			m.log.Warn("cluster: lease lost; stopping its work", "key", h.lease.Key, "err", err)
			h.cancel()
			if m.held[h.lease.Key] == h {
				delete(m.held, h.lease.Key)
			}
		})
	}
	wg.Wait()
	// Work whose lease went unrenewed too long is stopped by its watchdog, whether or
	// not a renewal came back.
}

// finishReleases deletes the leases whose tasks have returned (handed over, or
// ended by themselves).
func (m *Manager) finishReleases(ctx context.Context) {
	m.mu.Lock()
	var done []*held
	for key, h := range m.held {
		select {
		case <-h.done:
			done = append(done, h)
			delete(m.held, key)
		default:
		}
	}
	m.mu.Unlock()
	for _, h := range done {
		m.release(ctx, h)
	}
}

func (m *Manager) release(ctx context.Context, h *held) {
	dctx, cancel := context.WithTimeout(ctx, m.cfg.LeaseTTL/6)
	defer cancel()
	if err := m.leases.Delete(dctx, leaseKey(h.lease.Key), jetstream.LastRevision(h.rev)); err != nil {
		m.log.Warn("cluster: lease not deleted; it expires by itself", "key", h.lease.Key, "err", err)
		return
	}
	m.log.Info("cluster: lease released", "key", h.lease.Key)
}

// stopAll cancels every task, waits for them and deletes the leases and this
// replica's membership.
func (m *Manager) stopAll() {
	m.mu.Lock()
	hs := maps.Clone(m.held)
	for _, h := range hs {
		h.cancel()
	}
	m.mu.Unlock()
	// The leases are kept while the work winds down (a commit in hand, a request
	// being abandoned): another replica must not start it before it has stopped here.
	stopped := make(chan struct{})
	go func() { m.wg.Wait(); close(stopped) }()
	tick := time.NewTicker(m.cfg.LeaseTTL / 3)
	defer tick.Stop()
wait:
	for {
		select {
		case <-stopped:
			break wait
		case <-tick.C:
			// Run's ctx has ended: renewals must outlive it until the work has stopped.
			m.renew(context.Background(), m.cfg.LeaseTTL/6)
		}
	}
	m.mu.Lock()
	m.held = map[string]*held{}
	m.mu.Unlock()
	// The final release outlives Run's ctx on purpose, bounded: a lease deleted now is
	// taken by another replica at once instead of after its TTL.
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.LeaseTTL/3)
	defer cancel()
	for _, h := range hs {
		if time.Since(h.renewed) < m.safe() {
			m.release(ctx, h)
		}
	}
	_ = m.members.Delete(ctx, m.cfg.ReplicaID)
}
