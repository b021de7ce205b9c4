package publish

import (
	"slices"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	valid := func() Config {
		return Config{
			Embedded:        Embedded{Listen: "127.0.0.1:4222", StoreDir: "data/nats"},
			Stream:          "PAYMENT_EVENTS",
			SubjectPrefix:   "payments",
			DuplicateWindow: 10 * time.Minute,
		}
	}
	tests := []struct {
		name   string
		change func(*Config)
		want   []string
	}{
		{"valid embedded", func(*Config) {}, nil},
		{"valid remote without embedded settings", func(c *Config) {
			c.URL, c.Embedded, c.Replicas, c.SubjectPrefix = "nats://a:4222,nats://b:4222", Embedded{}, 3, "acme.payments"
		}, nil},
		{"any port, any interface", func(c *Config) { c.Embedded.Listen = ":0" }, nil},
		{"empty stream", func(c *Config) { c.Stream = "" }, []string{`nats.stream: "" is empty`}},
		{"stream with a dot", func(c *Config) { c.Stream = "PAY.EVENTS" }, []string{
			`nats.stream: "PAY.EVENTS" contains '.'; a stream name cannot contain '.', '*', '>', '/', '\' or whitespace`}},
		{"stream with a space", func(c *Config) { c.Stream = "PAY EVENTS" }, []string{
			`nats.stream: "PAY EVENTS" contains ' '; a stream name cannot contain '.', '*', '>', '/', '\' or whitespace`}},
		{"prefix with a wildcard", func(c *Config) { c.SubjectPrefix = "a.b*" }, []string{
			`nats.subject_prefix: "a.b*" is not a subject prefix: want dot-separated tokens without wildcards or whitespace`}},
		{"prefix with an empty token", func(c *Config) { c.SubjectPrefix = "a..b" }, []string{
			`nats.subject_prefix: "a..b" is not a subject prefix: want dot-separated tokens without wildcards or whitespace`}},
		{"prefix ending in a dot", func(c *Config) { c.SubjectPrefix = "payments." }, []string{
			`nats.subject_prefix: "payments." is not a subject prefix: want dot-separated tokens without wildcards or whitespace`}},
		{"prefix with a space", func(c *Config) { c.SubjectPrefix = "pay ments" }, []string{
			`nats.subject_prefix: "pay ments" is not a subject prefix: want dot-separated tokens without wildcards or whitespace`}},
		{"prefix with >", func(c *Config) { c.SubjectPrefix = ">" }, []string{
			`nats.subject_prefix: ">" is not a subject prefix: want dot-separated tokens without wildcards or whitespace`}},
		{"empty prefix", func(c *Config) { c.SubjectPrefix = "" }, []string{
			`nats.subject_prefix: "" is not a subject prefix: want dot-separated tokens without wildcards or whitespace`}},
		{"zero duplicate window", func(c *Config) { c.DuplicateWindow = 0 }, []string{`nats.duplicate_window: 0s must be positive`}},
		{"negative retained size", func(c *Config) { c.RetainAckedMaxBytes = -1 }, []string{`nats.retain_acked_max_bytes: -1 must not be negative (0 means no bound)`}},
		{"negative duplicate window", func(c *Config) { c.DuplicateWindow = -time.Minute }, []string{`nats.duplicate_window: -1m0s must be positive`}},
		{"listen without port", func(c *Config) { c.Embedded.Listen = "localhost" }, []string{
			`nats.embedded.listen: "localhost" is not host:port (port 0..65535, 0 picks a free one); it is required when nats.url is empty`}},
		{"listen port out of range", func(c *Config) { c.Embedded.Listen = "127.0.0.1:65536" }, []string{
			`nats.embedded.listen: "127.0.0.1:65536" is not host:port (port 0..65535, 0 picks a free one); it is required when nats.url is empty`}},
		{"listen port not a number", func(c *Config) { c.Embedded.Listen = "127.0.0.1:nats" }, []string{
			`nats.embedded.listen: "127.0.0.1:nats" is not host:port (port 0..65535, 0 picks a free one); it is required when nats.url is empty`}},
		{"embedded without store", func(c *Config) { c.Embedded.StoreDir = "" }, []string{
			`nats.embedded.store_dir: "" is empty; it is required when nats.url is empty`}},
		{"replicas negative", func(c *Config) { c.Replicas = -1 }, []string{`nats.replicas: -1 must be between 1 and 5 (0 means 1)`}},
		{"replicas too many", func(c *Config) { c.URL, c.Replicas = "nats://a:4222", 7 }, []string{`nats.replicas: 7 must be between 1 and 5 (0 means 1)`}},
		{"replicas on the embedded server", func(c *Config) { c.Replicas = 3 }, []string{
			`nats.replicas: 3 needs a NATS cluster; the embedded server is a single node`}},
		{"negative outbox limit", func(c *Config) { c.MaxOutbox = -5 }, []string{`nats.max_outbox: -5 must not be negative`}},
		{"password without user, value not shown", func(c *Config) { c.Password = "hunter2" }, []string{`nats.password: set without nats.user`}},
		{"cert without key", func(c *Config) { c.TLS.Cert = "client.pem" }, []string{`nats.tls.key: "" is empty while nats.tls.cert is set`}},
		{"key without cert", func(c *Config) { c.TLS.Key = "client.key" }, []string{`nats.tls.cert: "" is empty while nats.tls.key is set`}},
		{"durability settings", func(c *Config) {
			c.RetainAcked, c.StreamStorage, c.StreamMaxAge, c.StreamMaxBytes, c.Embedded.SyncInterval = 5*time.Minute, StorageMemory, time.Hour, 1<<30, time.Second
		}, nil},
		{"negative retain_acked", func(c *Config) { c.RetainAcked = -time.Second }, []string{`nats.retain_acked: -1s must not be negative (0 disables it)`}},
		{"unknown storage", func(c *Config) { c.StreamStorage = "disk" }, []string{`nats.stream_storage: "disk" is not a storage type (want file or memory)`}},
		{"negative max age", func(c *Config) { c.StreamMaxAge = -time.Hour }, []string{`nats.stream_max_age: -1h0m0s must not be negative (0 means no limit)`}},
		{"max age shorter than the duplicate window", func(c *Config) { c.StreamMaxAge = time.Minute }, []string{
			`nats.stream_max_age: 1m0s is shorter than nats.duplicate_window 10m0s; JetStream refuses a duplicate window longer than the stream's max age`}},
		{"max age shorter than retain_acked", func(c *Config) { c.StreamMaxAge, c.RetainAcked = 15*time.Minute, 20*time.Minute }, []string{
			`nats.stream_max_age: 15m0s is shorter than nats.retain_acked 20m0s; re-published events could be stored again after the stream aged them out`}},
		{"negative max bytes", func(c *Config) { c.StreamMaxBytes = -1 }, []string{`nats.stream_max_bytes: -1 must not be negative (0 means no limit)`}},
		{"negative sync interval", func(c *Config) { c.Embedded.SyncInterval = -time.Second }, []string{`nats.embedded.sync_interval: -1s must be positive, or always`}},
		{"every problem at once", func(c *Config) { *c = Config{} }, []string{
			`nats.stream: "" is empty`,
			`nats.subject_prefix: "" is not a subject prefix: want dot-separated tokens without wildcards or whitespace`,
			`nats.duplicate_window: 0s must be positive`,
			`nats.embedded.listen: "" is not host:port (port 0..65535, 0 picks a free one); it is required when nats.url is empty`,
			`nats.embedded.store_dir: "" is empty; it is required when nats.url is empty`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.change(&c)
			var got []string
			for _, err := range c.Validate() {
				got = append(got, err.Error())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Validate:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}
