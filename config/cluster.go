package config

import (
	"os"
	"time"

	"github.com/payments-watcher/watcher/cluster"
)

// NATSKV is `state.nats_kv`: where the nats_kv back end keeps the state.
type NATSKV struct {
	// BucketPrefix names the buckets and the outbox stream (package state/natskv).
	BucketPrefix string
	// Replicas is how many copies JetStream keeps of them.
	Replicas int
}

// Cluster is the `cluster:` section, in force when state.backend is nats_kv.
type Cluster struct {
	// ReplicaID names this replica; default the host name.
	ReplicaID string
	// LeaseTTL is how long a source's lease outlives its holder's last renewal.
	LeaseTTL time.Duration
	// LeaseBucket and MembersBucket name the key-value buckets of leases and members.
	LeaseBucket, MembersBucket string
}

type rawNATSKV struct {
	BucketPrefix string `yaml:"bucket_prefix"`
	Replicas     int    `yaml:"replicas"`
}

type rawCluster struct {
	ReplicaID     string `yaml:"replica_id"`
	LeaseTTL      string `yaml:"lease_ttl"`
	LeaseBucket   string `yaml:"lease_bucket"`
	MembersBucket string `yaml:"members_bucket"`
}

// Defaults of the nats_kv back end and of cluster mode.
const (
	DefaultBucketPrefix = "watcher"
	DefaultKVReplicas   = 3
)

// stateAndCluster fills cfg.State's back end settings and cfg.Cluster from raw.
func (v *validator) stateAndCluster(raw *rawFile, cfg *Config, hostname func() (string, error)) {
	cfg.State.Backend = or(raw.State.Backend, "bbolt")
	rc := raw.Cluster
	switch cfg.State.Backend {
	case "bbolt":
		if raw.State.NATSKV != (rawNATSKV{}) {
			v.addf("state.nats_kv", "is set but state.backend is bbolt; set state.backend: nats_kv or remove it")
		}
		if rc != (rawCluster{}) {
			v.addf("cluster", "needs state.backend: nats_kv (replicas share their state through NATS)")
		}
		return
	case "nats_kv":
	default:
		v.addf("state.backend", "%q is not supported (want bbolt or nats_kv)", raw.State.Backend)
		return
	}
	if raw.NATS.URL == "" {
		v.addf("nats.url", "is required with state.backend nats_kv: the replicas share one NATS cluster (the embedded server is for a single process)")
	}
	kv := raw.State.NATSKV
	cfg.State.NATSKV = NATSKV{BucketPrefix: or(kv.BucketPrefix, DefaultBucketPrefix), Replicas: kv.Replicas}
	if cfg.State.NATSKV.Replicas == 0 {
		cfg.State.NATSKV.Replicas = DefaultKVReplicas
	}
	if r := cfg.State.NATSKV.Replicas; r < 1 || r > 5 {
		v.addf("state.nats_kv.replicas", "%d is not between 1 and 5", r)
	}
	if !bucketName(cfg.State.NATSKV.BucketPrefix) {
		v.addf("state.nats_kv.bucket_prefix", "%q: use letters, digits, '-' and '_' only", kv.BucketPrefix)
	}

	c := Cluster{ReplicaID: rc.ReplicaID, LeaseBucket: or(rc.LeaseBucket, cluster.DefaultLeaseBucket),
		MembersBucket: or(rc.MembersBucket, cluster.DefaultMembersBucket)}
	if c.ReplicaID == "" {
		h, err := hostname()
		if err != nil {
			v.addf("cluster.replica_id", "not set and the host name is unknown (%v)", err)
		}
		c.ReplicaID = h
	}
	if c.ReplicaID != "" {
		if err := cluster.CheckReplicaID(c.ReplicaID); err != nil {
			v.addf("cluster.replica_id", "%v", err)
		}
	}
	c.LeaseTTL = v.duration("cluster.lease_ttl", rc.LeaseTTL, cluster.DefaultLeaseTTL)
	if c.LeaseTTL > 0 && c.LeaseTTL < time.Second {
		v.addf("cluster.lease_ttl", "%s is shorter than 1s", c.LeaseTTL)
	}
	for key, name := range map[string]string{"cluster.lease_bucket": c.LeaseBucket, "cluster.members_bucket": c.MembersBucket} {
		if !bucketName(name) {
			v.addf(key, "%q: use letters, digits, '-' and '_' only", name)
		}
	}
	cfg.Cluster = c
}

func bucketName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// osHostname is the host name lookup of Parse.
var osHostname = os.Hostname
