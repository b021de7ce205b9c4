package config

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/publish"
)

const natsTestSource = "sources:\n- name: a\n  provider: circle_cpn_payments\n  api_key: k\n"

func TestNATSDurabilityKeys(t *testing.T) {
	cfg, err := Parse([]byte(natsTestSource), testEnv(nil), readTestdata)
	if err != nil {
		t.Fatal(err)
	}
	n := cfg.NATS
	if n.RetainAcked != 5*time.Minute || n.Embedded.SyncInterval != 0 || n.StreamStorage != publish.StorageFile ||
		n.StreamMaxAge != 0 || n.StreamMaxBytes != 0 {
		t.Errorf("defaults: retain_acked %s, sync_interval %s, stream_storage %q, stream_max_age %s, stream_max_bytes %d; want 5m, always, file, none, none",
			n.RetainAcked, n.Embedded.SyncInterval, n.StreamStorage, n.StreamMaxAge, n.StreamMaxBytes)
	}
	if n.RetainAcked <= 2*time.Minute {
		t.Errorf("default retain_acked %s is not longer than nats-server's 2m sync interval", n.RetainAcked)
	}

	doc := "nats:\n  embedded: {sync_interval: 10s}\n  retain_acked: 0s\n  stream_storage: memory\n  stream_max_age: 72h\n  stream_max_bytes: 10GiB\n" + natsTestSource
	cfg, err = Parse([]byte(doc), testEnv(nil), readTestdata)
	if err != nil {
		t.Fatal(err)
	}
	n = cfg.NATS
	if n.RetainAcked != 0 || n.Embedded.SyncInterval != 10*time.Second || n.StreamStorage != publish.StorageMemory ||
		n.StreamMaxAge != 72*time.Hour || n.StreamMaxBytes != 10<<30 {
		t.Errorf("parsed %+v", n)
	}

	// The printed configuration keeps them, and reads back the same.
	out, err := cfg.Effective()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"sync_interval: 10s", "retain_acked: 0s", "stream_storage: memory", "stream_max_age: 72h0m0s", "stream_max_bytes: 10737418240"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("effective config lacks %q:\n%s", want, out)
		}
	}
	again, err := Parse(out, testEnv(nil), readTestdata)
	if err != nil {
		t.Fatalf("re-parsing the effective config: %v", err)
	}
	if again.NATS.RetainAcked != n.RetainAcked || again.NATS.Embedded.SyncInterval != n.Embedded.SyncInterval ||
		again.NATS.StreamStorage != n.StreamStorage || again.NATS.StreamMaxAge != n.StreamMaxAge || again.NATS.StreamMaxBytes != n.StreamMaxBytes {
		t.Errorf("re-parsed %+v, want %+v", again.NATS, n)
	}
	def, err := Parse([]byte(natsTestSource), testEnv(nil), readTestdata)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := def.Effective(); err != nil || !strings.Contains(string(out), "sync_interval: always") {
		t.Errorf("effective default config (%v):\n%s", err, out)
	}
}

func TestNATSStreamSizes(t *testing.T) {
	for in, want := range map[string]int64{
		"1048576": 1 << 20, "512MiB": 512 << 20, "10GB": 10 << 30, "2g": 2 << 30, "1 TiB": 1 << 40, "4K": 4 << 10, "0": 0, "100B": 100,
	} {
		cfg, err := Parse([]byte("nats:\n  stream_max_bytes: "+in+"\n"+natsTestSource), testEnv(nil), readTestdata)
		if err != nil {
			t.Errorf("stream_max_bytes %q: %v", in, err)
			continue
		}
		if got := cfg.NATS.StreamMaxBytes; got != want {
			t.Errorf("stream_max_bytes %q = %d, want %d", in, got, want)
		}
	}
}

func TestNATSDurabilityKeysInvalid(t *testing.T) {
	for _, tt := range []struct{ nats, want string }{
		{"retain_acked: -1m", `nats.retain_acked: -1m0s must not be negative (0 disables it)`},
		{"retain_acked: soon", `nats.retain_acked: "soon" is not a duration (e.g. 15s, 10m, 720h)`},
		{"embedded: {sync_interval: never}", `nats.embedded.sync_interval: "never" is neither always nor a duration (e.g. 1s, 2m)`},
		{"embedded: {sync_interval: 0s}", `nats.embedded.sync_interval: "0s" must be positive, or always`},
		{"stream_storage: disk", `nats.stream_storage: "disk" is not a storage type (want file or memory)`},
		{"stream_max_age: 5m", `nats.stream_max_age: 5m0s is shorter than nats.duplicate_window 10m0s; JetStream refuses a duplicate window longer than the stream's max age`},
		{"{stream_max_age: 15m, retain_acked: 20m}", `nats.stream_max_age: 15m0s is shorter than nats.retain_acked 20m0s; re-published events could be stored again after the stream aged them out`},
		{"stream_max_bytes: -5", `nats.stream_max_bytes: "-5" must not be negative (0 means no limit)`},
		{"stream_max_bytes: lots", `nats.stream_max_bytes: "lots" is not a size (bytes, or with a unit: 512MiB, 10GiB)`},
		{"stream_max_bytes: 9000000TiB", `nats.stream_max_bytes: "9000000TiB" is too large`},
	} {
		doc := "nats:\n  " + tt.nats + "\n"
		if strings.HasPrefix(tt.nats, "{") {
			doc = "nats: " + tt.nats + "\n"
		}
		_, err := Parse([]byte(doc+natsTestSource), testEnv(nil), readTestdata)
		if err == nil || err.Error() != tt.want {
			t.Errorf("nats %s: error %v\nwant %s", tt.nats, err, tt.want)
		}
	}
}

func TestRetainAckedMaxBytes(t *testing.T) {
	for _, tt := range []struct {
		doc  string
		want int64
	}{
		{"", DefaultRetainAckedMaxBytes},
		{"nats: {retain_acked_max_bytes: 0}\n", 0},
		{"nats: {retain_acked_max_bytes: 256MiB}\n", 256 << 20},
	} {
		cfg, err := Parse([]byte(tt.doc+natsTestSource), testEnv(nil), readTestdata)
		if err != nil {
			t.Fatalf("%q: %v", tt.doc, err)
		}
		if got := cfg.NATS.RetainAckedMaxBytes; got != tt.want {
			t.Errorf("%q: retain_acked_max_bytes %d, want %d", tt.doc, got, tt.want)
		}
		// The printed configuration reads back the same.
		out, err := cfg.Effective()
		if err != nil {
			t.Fatal(err)
		}
		again, err := Parse(out, testEnv(nil), readTestdata)
		if err != nil || again.NATS.RetainAckedMaxBytes != tt.want {
			t.Errorf("%q printed and read back: %v, %v", tt.doc, again, err)
		}
	}
	_, err := Parse([]byte("nats: {retain_acked_max_bytes: lots}\n"+natsTestSource), testEnv(nil), readTestdata)
	if err == nil || !strings.Contains(err.Error(), "nats.retain_acked_max_bytes") {
		t.Errorf("a bad size: %v", err)
	}
}

func TestUnboundedRetentionWarns(t *testing.T) {
	cfg, err := Parse([]byte("nats: {retain_acked_max_bytes: 0}\n"+natsTestSource), testEnv(nil), readTestdata)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(cfg.Warnings, func(w string) bool {
		return strings.Contains(w, "nats.retain_acked_max_bytes: 0 leaves") && strings.Contains(w, "360 MB")
	}) {
		t.Errorf("warnings %q lack the unbounded retention", cfg.Warnings)
	}
	for _, doc := range []string{"", "nats: {retain_acked_max_bytes: 0, retain_acked: 0s}\n"} {
		cfg, err := Parse([]byte(doc+natsTestSource), testEnv(nil), readTestdata)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range cfg.Warnings {
			if strings.Contains(w, "retain_acked_max_bytes") {
				t.Errorf("%q: warning %q", doc, w)
			}
		}
	}
}

func TestOutboxPace(t *testing.T) {
	for _, c := range []struct {
		nats string
		want int
	}{
		{"", DefaultOutboxPace},
		{"  outbox_pace: 0\n", 0},
		{"  outbox_pace: 2500\n", 2500},
		{"  max_outbox: 4000\n", 4000}, // the default never exceeds max_outbox
		{"  max_outbox: 4000\n  outbox_pace: 4000\n", 4000},
	} {
		cfg, err := Parse([]byte("nats:\n  stream: S\n"+c.nats+natsTestSource), testEnv(nil), readTestdata)
		if err != nil {
			t.Fatalf("%q: %v", c.nats, err)
		}
		if got := cfg.NATS.OutboxPace; got != c.want {
			t.Errorf("%q: outbox_pace %d, want %d", c.nats, got, c.want)
		}
		out, err := cfg.Effective()
		if err != nil {
			t.Fatal(err)
		}
		again, err := Parse(out, testEnv(nil), readTestdata)
		if err != nil {
			t.Fatalf("%q: re-parsing the effective configuration: %v", c.nats, err)
		}
		if again.NATS.OutboxPace != c.want {
			t.Errorf("%q: the effective configuration reads back as outbox_pace %d, want %d", c.nats, again.NATS.OutboxPace, c.want)
		}
	}
	for _, c := range []struct{ nats, want string }{
		{"  outbox_pace: -1\n", "nats.outbox_pace: -1 must not be negative (0 turns pacing off)"},
		{"  outbox_pace: 20000\n  max_outbox: 15000\n", "nats.outbox_pace: 20000 must not exceed nats.max_outbox (15000)"},
		{"  outbox_pace: 1000001\n", "nats.outbox_pace: 1000001 must not exceed nats.max_outbox (1000000)"},
	} {
		_, err := Parse([]byte("nats:\n"+c.nats+natsTestSource), testEnv(nil), readTestdata)
		if err == nil || err.Error() != c.want {
			t.Errorf("%q: err = %v, want %s", c.nats, err, c.want)
		}
	}
}
