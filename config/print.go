package config

import (
	"net/url"
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
		URL             string   `yaml:"url"`
		Embedded        embedded `yaml:"embedded"`
		Stream          string   `yaml:"stream"`
		SubjectPrefix   string   `yaml:"subject_prefix"`
		DuplicateWindow string   `yaml:"duplicate_window"`
		RetainAcked     string   `yaml:"retain_acked"`
		StreamStorage   string   `yaml:"stream_storage"`
		StreamMaxAge    string   `yaml:"stream_max_age"`
		StreamMaxBytes  int64    `yaml:"stream_max_bytes"`
		Replicas        int      `yaml:"replicas"`
		MaxOutbox       int      `yaml:"max_outbox"`
		CredsFile       string   `yaml:"creds_file,omitempty"`
		Token           string   `yaml:"token,omitempty"`
		User            string   `yaml:"user,omitempty"`
		Password        string   `yaml:"password,omitempty"`
		NKeyFile        string   `yaml:"nkey_file,omitempty"`
		TLS             *tls     `yaml:"tls,omitempty"`
	}
	type sourceOut struct {
		Name               string            `yaml:"name"`
		Provider           string            `yaml:"provider"`
		BaseURL            string            `yaml:"base_url"`
		CAFile             string            `yaml:"ca_file,omitempty"`
		APIKey             string            `yaml:"api_key,omitempty"`
		Interval           string            `yaml:"interval"`
		PageSize           int               `yaml:"page_size"`
		DiscoveryOverlap   string            `yaml:"discovery_overlap"`
		Lookback           string            `yaml:"lookback"`
		OpenRefresh        string            `yaml:"open_refresh"`
		OpenRefreshByState map[string]string `yaml:"open_refresh_by_state,omitempty"`
		RateLimit          float64           `yaml:"rate_limit"`
		Baseline           string            `yaml:"baseline"`
		OpenMaxAge         string            `yaml:"open_max_age"`
		SettleWindow       string            `yaml:"settle_window"`
		RequestTimeout     string            `yaml:"request_timeout"`
		MaxPages           int               `yaml:"max_pages"`
		TerminalStatuses   []string          `yaml:"terminal_statuses,omitempty"`
		StripeVersion      string            `yaml:"stripe_version,omitempty"`
		HawkID             string            `yaml:"hawk_id,omitempty"`
		HawkKey            string            `yaml:"hawk_key,omitempty"`
		MerchantID         string            `yaml:"merchant_id,omitempty"`
		SignQuery          *bool             `yaml:"sign_query,omitempty"`
		FromDateFormat     string            `yaml:"from_date_format,omitempty"`
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
		Sources []sourceOut `yaml:"sources"`
	}{}
	out.State.Backend, out.State.Path = c.State.Backend, c.State.Path
	n := c.NATS
	out.NATS = natsOut{
		URL: redactURLs(n.URL), Stream: n.Stream, SubjectPrefix: n.SubjectPrefix, DuplicateWindow: dur(n.DuplicateWindow),
		Embedded: embedded{
			Listen: n.Embedded.Listen, StoreDir: n.Embedded.StoreDir, SyncInterval: syncInterval(n.Embedded.SyncInterval),
		},
		RetainAcked: dur(n.RetainAcked), StreamStorage: n.StreamStorage, StreamMaxAge: dur(n.StreamMaxAge), StreamMaxBytes: n.StreamMaxBytes,
		Replicas: n.Replicas, MaxOutbox: n.MaxOutbox, CredsFile: n.CredsFile, Token: secret(n.Token),
		User: n.User, Password: secret(n.Password), NKeyFile: n.NKeyFile,
	}
	if n.TLS.CA != "" || n.TLS.Cert != "" || n.TLS.Key != "" {
		out.NATS.TLS = &tls{CA: n.TLS.CA, Cert: n.TLS.Cert, Key: n.TLS.Key}
	}
	out.HTTP.Listen = c.HTTP.Listen
	out.Admin.Listen, out.Admin.Token = c.Admin.Listen, secret(c.Admin.Token)
	for _, s := range c.Sources {
		so := sourceOut{
			Name: s.Name, Provider: s.Config.Provider, BaseURL: s.Settings.BaseURL, CAFile: s.CAFile, APIKey: secret(s.Settings.APIKey),
			Interval: dur(s.Interval), PageSize: s.Settings.PageSize, DiscoveryOverlap: dur(s.DiscoveryOverlap),
			Lookback: dur(s.Lookback), OpenRefresh: dur(s.OpenRefresh), RateLimit: s.RateLimit, Baseline: s.Baseline,
			OpenMaxAge: dur(s.OpenMaxAge), SettleWindow: dur(s.SettleWindow), RequestTimeout: dur(s.RequestTimeout),
			MaxPages: s.MaxPages, TerminalStatuses: s.Settings.TerminalStatuses, StripeVersion: s.Settings.StripeVersion,
			HawkID: s.Settings.HawkID, HawkKey: secret(s.Settings.HawkKey), MerchantID: s.Settings.MerchantID,
		}
		if len(s.OpenRefreshByState) > 0 {
			so.OpenRefreshByState = map[string]string{}
			for st, d := range s.OpenRefreshByState {
				so.OpenRefreshByState[string(st)] = dur(d)
			}
		}
		if s.Config.Provider == "coindirect_payments" {
			sq := s.Settings.SignQuery
			so.SignQuery = &sq
			so.FromDateFormat = s.Settings.FromDateFormat
		}
		out.Sources = append(out.Sources, so)
	}
	return yaml.Marshal(&out)
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
