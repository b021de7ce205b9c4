package webhook

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/payments-watcher/watcher/config"
	"github.com/payments-watcher/watcher/poller/provider"
)

// Build returns the verifiers of the sources that take webhooks, by source name: those
// whose provider has a Verifier and that configure what it needs. A source left out
// is logged at INFO (its deliveries are refused with 404).
func Build(sources []config.Source, version string, log *slog.Logger) (map[string]Verifier, error) {
	out := map[string]Verifier{}
	for _, s := range sources {
		f, ok := Verifiers[s.Config.Provider]
		if !ok {
			log.Info("source takes no webhooks: its provider documents none", "source", s.Name, "provider", s.Config.Provider)
			continue
		}
		client := provider.NewClient(provider.ClientOptions{BaseURL: s.Settings.BaseURL, RootCAs: s.RootCAs, UserAgent: "watcher/" + version})
		v, err := f(s.Settings, client)
		if errors.Is(err, ErrNotConfigured) {
			log.Info("source takes no webhooks: webhook_secret is not set", "source", s.Name)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("source %s webhooks: %w", s.Name, err)
		}
		out[s.Name] = v
	}
	return out, nil
}
