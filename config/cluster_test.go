package config

import (
	"strings"
	"testing"
	"time"
)

const clusterSource = "sources:\n- name: a\n  provider: circle_cpn_payments\n  api_key: k\n"

func TestClusterDefaults(t *testing.T) {
	cfg, err := Parse([]byte("state:\n  backend: nats_kv\nnats:\n  url: nats://n1:4222\n"+clusterSource), testEnv(nil), readTestdata)
	if err != nil {
		t.Fatal(err)
	}
	host, _ := osHostname()
	want := Cluster{ReplicaID: host, LeaseTTL: 15 * time.Second, LeaseBucket: "watcher_leases", MembersBucket: "watcher_members"}
	if cfg.Cluster != want {
		t.Errorf("cluster = %+v, want %+v", cfg.Cluster, want)
	}
	if cfg.State.NATSKV != (NATSKV{BucketPrefix: "watcher", Replicas: 3}) {
		t.Errorf("state.nats_kv = %+v", cfg.State.NATSKV)
	}

	cfg, err = Parse([]byte("state:\n  backend: nats_kv\n  nats_kv:\n    bucket_prefix: w1\n    replicas: 1\nnats:\n  url: nats://n1:4222\n"+
		"cluster:\n  replica_id: watcher-0\n  lease_ttl: 9s\n  lease_bucket: l\n  members_bucket: m\n"+clusterSource), testEnv(nil), readTestdata)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster != (Cluster{ReplicaID: "watcher-0", LeaseTTL: 9 * time.Second, LeaseBucket: "l", MembersBucket: "m"}) ||
		cfg.State.NATSKV != (NATSKV{BucketPrefix: "w1", Replicas: 1}) {
		t.Errorf("cluster = %+v, state.nats_kv = %+v", cfg.Cluster, cfg.State.NATSKV)
	}
}

func TestClusterInvalid(t *testing.T) {
	cases := []struct{ doc, want string }{
		{"state:\n  backend: etcd\n", `state.backend: "etcd" is not supported (want bbolt or nats_kv)`},
		{"cluster:\n  replica_id: a\n", "cluster: needs state.backend: nats_kv"},
		{"state:\n  nats_kv:\n    replicas: 3\n", "state.nats_kv: is set but state.backend is bbolt"},
		{"state:\n  backend: nats_kv\n", "nats.url: is required with state.backend nats_kv"},
		{"state:\n  backend: nats_kv\n  nats_kv:\n    replicas: 7\n    bucket_prefix: a.b\nnats:\n  url: nats://x\n",
			"state.nats_kv.replicas: 7 is not between 1 and 5"},
		{"state:\n  backend: nats_kv\n  nats_kv:\n    bucket_prefix: a.b\nnats:\n  url: nats://x\n", `state.nats_kv.bucket_prefix: "a.b"`},
		{"state:\n  backend: nats_kv\nnats:\n  url: nats://x\ncluster:\n  replica_id: \"a b\"\n", `cluster.replica_id: cluster.replica_id "a b"`},
		{"state:\n  backend: nats_kv\nnats:\n  url: nats://x\ncluster:\n  replica_id: a\n  lease_ttl: 100ms\n", "cluster.lease_ttl: 100ms is shorter than 1s"},
		{"state:\n  backend: nats_kv\nnats:\n  url: nats://x\ncluster:\n  replica_id: a\n  lease_bucket: x.y\n", `cluster.lease_bucket: "x.y"`},
	}
	for _, c := range cases {
		_, err := Parse([]byte(c.doc+clusterSource), testEnv(nil), readTestdata)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: err %v, want one containing %q", c.doc, err, c.want)
		}
	}
}
