package config

import (
	"net/url"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Redacted is what `watcher config check` prints.
const Redacted = "<redacted>"

// Effective renders the configuration with defaults applied, in the file's own
// layout, every secret replaced by Redacted.
func (c *Config) Effective() ([]byte, error) {
	secret := func(s string) string {
		if s == "" {
			return ""
		}
		return Redacted
	}
	dur := func(d time.Duration) string { return d.String() }
	type tls struct {
		CA   string `yaml:"ca,omitempty"`
		Cert string `yaml:"cert,omitempty"`
		Key  string `yaml:"key,omitempty"`
	}
	type embedded struct {
		Listen       string `yaml:"listen"`
		StoreDir     string `yaml:"store_dir"`
		SyncInterval string `yaml:"sync_interval"`
	}
	type natsOut struct {
		URL                 string   `yaml:"url"`
		Embedded            embedded `yaml:"embedded"`
		Stream              string   `yaml:"stream"`
		SubjectPrefix       string   `yaml:"subject_prefix"`
		DuplicateWindow     string   `yaml:"duplicate_window"`
		RetainAcked         string   `yaml:"retain_acked"`
		RetainAckedMaxBytes int64    `yaml:"retain_acked_max_bytes"`
		StreamStorage       string   `yaml:"stream_storage"`
		StreamMaxAge        string   `yaml:"stream_max_age"`
		StreamMaxBytes      int64    `yaml:"stream_max_bytes"`
		Replicas            int      `yaml:"replicas"`
		MaxOutbox           int      `yaml:"max_outbox"`
		OutboxPace          int      `yaml:"outbox_pace"`
		CredsFile           string   `yaml:"creds_file,omitempty"`
		Token               string   `yaml:"token,omitempty"`
		User                string   `yaml:"user,omitempty"`
		Password            string   `yaml:"password,omitempty"`
		NKeyFile            string   `yaml:"nkey_file,omitempty"`
		TLS                 *tls     `yaml:"tls,omitempty"`
	}
	type sourceOut struct {
		Name               string            `yaml:"name"`
		Provider           string            `yaml:"provider"`
		BaseURL            string            `yaml:"base_url"`
		CAFile             string            `yaml:"ca_file,omitempty"`
		Interval           string            `yaml:"interval"`
		PageSize           int               `yaml:"page_size"`
		DiscoveryOverlap   string            `yaml:"discovery_overlap"`
		Lookback           string            `yaml:"lookback"`
		OpenRefresh        string            `yaml:"open_refresh"`
		OpenRefreshByState map[string]string `yaml:"open_refresh_by_state,omitempty"`
		OpenRefreshMax     string            `yaml:"open_refresh_max"`
		RateLimit          float64           `yaml:"rate_limit"`
		Baseline           string            `yaml:"baseline"`
		OpenMaxAge         string            `yaml:"open_max_age"`
		SettleWindow       string            `yaml:"settle_window"`
		RequestTimeout     string            `yaml:"request_timeout"`
		MaxPages           int               `yaml:"max_pages"`
		TerminalStatuses   []string          `yaml:"terminal_statuses,omitempty"`
	}
	out := struct {
		State struct {
			Backend string `yaml:"backend"`
			Path    string `yaml:"path"`
		} `yaml:"state"`
		NATS natsOut `yaml:"nats"`
		HTTP struct {
			Listen string `yaml:"listen"`
		} `yaml:"http"`
		Admin struct {
			Listen string `yaml:"listen"`
			Token  string `yaml:"token,omitempty"`
		} `yaml:"admin"`
		Webhooks *webhooksOut `yaml:"webhooks,omitempty"`
		Sources  []*yaml.Node `yaml:"sources"`
	}{}
	out.State.Backend, out.State.Path = c.State.Backend, c.State.Path
	n := c.NATS
	out.NATS = natsOut{
		URL: redactURLs(n.URL), Stream: n.Stream, SubjectPrefix: n.SubjectPrefix, DuplicateWindow: dur(n.DuplicateWindow),
		Embedded: embedded{
			Listen: n.Embedded.Listen, StoreDir: n.Embedded.StoreDir, SyncInterval: syncInterval(n.Embedded.SyncInterval),
		},
		RetainAcked: dur(n.RetainAcked), RetainAckedMaxBytes: n.RetainAckedMaxBytes, StreamStorage: n.StreamStorage, StreamMaxAge: dur(n.StreamMaxAge), StreamMaxBytes: n.StreamMaxBytes,
		Replicas: n.Replicas, MaxOutbox: n.MaxOutbox, OutboxPace: n.OutboxPace, CredsFile: n.CredsFile, Token: secret(n.Token),
		User: n.User, Password: secret(n.Password), NKeyFile: n.NKeyFile,
	}
	if n.TLS.CA != "" || n.TLS.Cert != "" || n.TLS.Key != "" {
		out.NATS.TLS = &tls{CA: n.TLS.CA, Cert: n.TLS.Cert, Key: n.TLS.Key}
	}
	out.HTTP.Listen = c.HTTP.Listen
	out.Admin.Listen, out.Admin.Token = c.Admin.Listen, secret(c.Admin.Token)
	out.Webhooks = printWebhooks(c.Webhooks)
	for _, s := range c.Sources {
		so := sourceOut{
			Name: s.Name, Provider: s.Config.Provider, BaseURL: s.Settings.BaseURL, CAFile: s.CAFile,
			Interval: dur(s.Interval), PageSize: s.Settings.PageSize, DiscoveryOverlap: dur(s.DiscoveryOverlap),
			Lookback: dur(s.Lookback), OpenRefresh: dur(s.OpenRefresh), OpenRefreshMax: dur(s.OpenRefreshMax), RateLimit: s.RateLimit, Baseline: s.Baseline,
			OpenMaxAge: dur(s.OpenMaxAge), SettleWindow: dur(s.SettleWindow), RequestTimeout: dur(s.RequestTimeout),
			MaxPages: s.MaxPages, TerminalStatuses: s.Settings.TerminalStatuses,
		}
		if len(s.OpenRefreshByState) > 0 {
			so.OpenRefreshByState = map[string]string{}
			for st, d := range s.OpenRefreshByState {
				so.OpenRefreshByState[string(st)] = dur(d)
			}
		}
		n, err := withProviderKeys(so, s, secret)
		if err != nil {
			return nil, err
		}
		out.Sources = append(out.Sources, n)
	}
	return yaml.Marshal(&out)
}

// withProviderKeys renders so, a source's shared keys, as a mapping with the
// provider's keys of s added: its Early keys after ca_file (or base_url), the others
// at the end, each in declaration order; a key without a value is left out, a Secret
// one is passed through redact.
func withProviderKeys(so any, s Source, redact func(string) string) (*yaml.Node, error) {
	var n yaml.Node
	if err := n.Encode(so); err != nil {
		return nil, err
	}
	var early, late []*yaml.Node
	for _, k := range s.Provider.Keys {
		val := s.Settings.Value(k.Name)
		if val == "" {
			continue
		}
		var v any = val
		switch {
		case k.Secret:
			v = redact(val)
		case k.Bool:
			v = val == "true"
		}
		var kn, vn yaml.Node
		if err := kn.Encode(k.Name); err != nil {
			return nil, err
		}
		if err := vn.Encode(v); err != nil {
			return nil, err
		}
		if k.Early {
			early = append(early, &kn, &vn)
		} else {
			late = append(late, &kn, &vn)
		}
	}
	at := 0 // after the key/value pair of ca_file, else of base_url
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i].Value; k == "base_url" || k == "ca_file" {
			at = i + 2
		}
	}
	n.Content = append(slices.Insert(n.Content, at, early...), late...)
	return &n, nil
}

// redactURLs hides the passwords of a comma-separated list of server URLs.
func redactURLs(list string) string {
	if list == "" {
		return ""
	}
	parts := strings.Split(list, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			if _, has := u.User.Password(); has {
				u.User = url.UserPassword(u.User.Username(), Redacted)
			} else {
				u.User = url.User(Redacted) // a token in the user part
			}
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}
