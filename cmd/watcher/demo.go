package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/payments-watcher/watcher/config"
	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/poller"
	"github.com/payments-watcher/watcher/publish"
	"github.com/payments-watcher/watcher/sim"
)

// demoSource is how the demo configures one simulated provider: its source name,
// provider id and provider keys.
type demoSource struct {
	name, provider string
	keys           map[string]string
}

// demoSources are the simulator's sources (sim.Sources), with its default credentials.
var demoSources = func() []demoSource {
	var out []demoSource
	for _, s := range sim.Sources() {
		out = append(out, demoSource{s.Name, s.Provider, s.Keys})
	}
	return out
}()

// demoConfig renders the configuration of a demo: every simulated provider that has
// an adapter, polled fast, publishing first sights so that every kind shows at once.
// adminListen is the admin listener's address (the status page and /state/; ""
// disables it).
func demoConfig(dataDir, natsURL, simURL, httpListen, adminListen string) ([]byte, []string) {
	return demoConfigHooks(dataDir, natsURL, simURL, httpListen, adminListen, "")
}

// demoWebhookSecrets are the simulator's default webhook secrets by provider.
var demoWebhookSecrets = map[string]string{
	sim.ProviderStripe:     sim.DefaultStripeWebhookSecret,
	sim.ProviderCoindirect: sim.DefaultCoindirectWebhookSecret,
}

// demoConfigHooks is demoConfig with the webhook listener on webhooksListen ("" leaves
// it off) and every source given the simulator's webhook secret.
func demoConfigHooks(dataDir, natsURL, simURL, httpListen, adminListen, webhooksListen string) ([]byte, []string) {
	var b strings.Builder
	fmt.Fprintf(&b, "state:\n  path: %q\n", filepath.Join(dataDir, "watcher.db"))
	fmt.Fprintf(&b, "nats:\n  url: %q\n", natsURL)
	fmt.Fprintf(&b, "http:\n  listen: %q\n", httpListen)
	fmt.Fprintf(&b, "admin:\n  listen: %q\n", adminListen)
	if webhooksListen != "" {
		fmt.Fprintf(&b, "webhooks:\n  listen: %q\n", webhooksListen)
	}
	b.WriteString("sources:\n")
	var names []string
	for _, s := range demoSources {
		if _, ok := poller.Providers[s.provider]; !ok {
			continue
		}
		names = append(names, s.name)
		fmt.Fprintf(&b, "  - name: %s\n    provider: %s\n    base_url: %q\n", s.name, s.provider, simURL)
		fmt.Fprintf(&b, "    interval: 2s\n    open_refresh: 2s\n    open_refresh_max: 20s\n    rate_limit: 20\n    baseline: emit\n")
		for _, k := range slices.Sorted(maps.Keys(s.keys)) {
			fmt.Fprintf(&b, "    %s: %q\n", k, s.keys[k])
		}
		if secret := demoWebhookSecrets[s.provider]; webhooksListen != "" && secret != "" {
			fmt.Fprintf(&b, "    webhook_secret: %q\n", secret)
		}
	}
	return []byte(b.String()), names
}

func demoCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("watcher demo", flag.ContinueOnError)
	rate := fs.Float64("rate", 0.5, "new items per second per provider")
	history := fs.Int("history", 25, "items per provider that exist when the demo starts")
	seed := fs.Int64("seed", time.Now().UnixNano(), "scenario seed (the same seed replays the same scenario)")
	data := fs.String("data", "", "keep state and NATS data in this `directory` (default: a temporary one, removed at exit)")
	natsListen := fs.String("nats-listen", "127.0.0.1:4222", "`address` of the embedded NATS server (watcher tail connects here)")
	simListen := fs.String("sim-listen", "127.0.0.1:0", "`address` of the provider simulator (port 0: any free port)")
	httpListen := fs.String("http-listen", "127.0.0.1:9464", "`address` of /healthz and /readyz (\"\" disables)")
	adminListen := fs.String("admin-listen", config.DefaultAdminListen, "loopback `address` of the status page and the /state/ API (\"\" disables)")
	colorFlag := fs.String("color", "auto", "colour: auto, always or never")
	logLevel := fs.String("log-level", "warn", "log level of watcher's own messages (on stderr)")
	hooksListen := fs.String("webhooks-listen", "127.0.0.1:0", "loopback `address` of the webhook listener the simulator delivers to (port 0: any free port; \"\" turns webhooks off)")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return err
	}
	color := *colorFlag == "always" || (*colorFlag == "auto" && isTerminal(stdout) && os.Getenv("NO_COLOR") == "")
	log, err := newLogger(stderr, "text", *logLevel)
	if err != nil {
		return err
	}

	dir := *data
	if dir == "" {
		tmp, err := os.MkdirTemp("", "watcher-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}

	srv, err := publish.StartEmbedded(publish.Embedded{Listen: *natsListen, StoreDir: filepath.Join(dir, "nats")}, log.With("component", "nats"))
	if err != nil {
		return fmt.Errorf("%w (choose another address with --nats-listen)", err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()

	var hooks map[string]sim.WebhookTarget
	if *hooksListen != "" {
		if !config.IsLoopback(*hooksListen) {
			return fmt.Errorf("--webhooks-listen %s: the demo listens on a loopback address only", *hooksListen)
		}
		if *hooksListen, err = freeLoopback(*hooksListen); err != nil {
			return fmt.Errorf("--webhooks-listen: %w", err)
		}
		hooks = demoWebhooks(*hooksListen, demoWebhookFaults)
	}
	simulator, err := sim.New(sim.Config{Seed: *seed, Rate: *rate, History: *history, HistorySpan: time.Hour, OpenShare: 0.6,
		FailureRate: 0.3, Delays: sim.Delays{Min: time.Second, Mean: 4 * time.Second, Max: 20 * time.Second}, Webhooks: hooks})
	if err != nil {
		return fmt.Errorf("demo simulator: %w", err)
	}
	defer simulator.Close()
	ln, err := net.Listen("tcp", *simListen)
	if err != nil {
		return fmt.Errorf("--sim-listen %s: %w", *simListen, err)
	}
	simURL := "http://" + ln.Addr().String()
	simServer := &http.Server{Handler: simulator.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go simServer.Serve(ln)
	defer simServer.Close()

	nc, err := nats.Connect(srv.ClientURL(), nats.Name("watcher demo printer"))
	if err != nil {
		return fmt.Errorf("demo: connect to the embedded NATS server: %w", err)
	}
	defer nc.Close()
	var printMu sync.Mutex
	sub, err := nc.Subscribe("payments.>", func(m *nats.Msg) {
		e, err := event.Decode(m.Data)
		printMu.Lock()
		defer printMu.Unlock()
		if err != nil {
			fmt.Fprintf(stdout, "%s: %v\n", m.Subject, err)
			return
		}
		fmt.Fprintln(stdout, formatEvent(e, color))
	})
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()

	if *adminListen != "" {
		if *adminListen, err = demoAdminAddress(*adminListen); err != nil {
			return err
		}
	}
	raw, names := demoConfigHooks(dir, srv.ClientURL(), simURL, *httpListen, *adminListen, *hooksListen)
	cfg, err := config.Parse(raw, os.LookupEnv, os.ReadFile)
	if err != nil {
		return fmt.Errorf("demo configuration: %w", err)
	}
	fmt.Fprintf(stderr, "watcher demo: simulator on %s, NATS on %s (stream %s), sources %s; data in %s\n",
		simURL, srv.ClientURL(), cfg.NATS.Stream, strings.Join(names, ", "), dir)
	fmt.Fprintf(stderr, "watcher demo: in another terminal: go run ./cmd/watcher tail --nats %s --state failed\n", srv.ClientURL())
	if *adminListen != "" {
		fmt.Fprintf(stderr, "watcher demo: status page on http://%s/\n", *adminListen)
	}
	if *hooksListen != "" {
		fmt.Fprintf(stderr, "watcher demo: webhooks on: the simulator delivers Stripe, Coindirect and Circle CPN webhooks to http://%s/webhooks/{source} (%.0f%% dropped, some duplicated or forged; polling catches up)\n",
			*hooksListen, demoWebhookFaults.DropRate*100)
	}
	fmt.Fprintln(stderr, "watcher demo: press Ctrl-C to stop")

	var wg sync.WaitGroup
	simCtx, stopSim := context.WithCancel(ctx)
	defer stopSim()
	wg.Go(func() {
		if err := simulator.Run(simCtx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("simulator stopped", "err", err)
		}
	})
	err = serve(ctx, cfg, log)
	stopSim()
	wg.Wait()
	return err
}

// demoWebhooks points each simulated provider that sends webhooks at the source of
// the demo polling it, on the webhook listener at addr, with faults.
func demoWebhooks(addr string, faults sim.WebhookFaults) map[string]sim.WebhookTarget {
	out := map[string]sim.WebhookTarget{}
	for _, s := range demoSources {
		if s.provider == sim.ProviderStripe || s.provider == sim.ProviderCoindirect || s.provider == sim.ProviderCPN {
			out[s.provider] = sim.WebhookTarget{URL: "http://" + addr + "/webhooks/" + s.name, Faults: faults}
		}
	}
	return out
}

// demoWebhookFaults are the demo's default delivery faults: enough lost and bad
// deliveries that polling visibly catches up.
var demoWebhookFaults = sim.WebhookFaults{DropRate: 0.2, DuplicateRate: 0.1, ForgeRate: 0.05, MaxDelay: 500 * time.Millisecond}

// freeLoopback replaces a port of 0 in listen by a free one.
func freeLoopback(listen string) (string, error) {
	if _, port, _ := net.SplitHostPort(listen); port != "0" {
		return listen, nil
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// demoAdminAddress checks that listen, the demo's admin listener, is a loopback
// address (the demo configures no token) and replaces a port of 0 by a free one, so
// that the status page's address can be printed.
func demoAdminAddress(listen string) (string, error) {
	if !config.IsLoopback(listen) {
		return "", fmt.Errorf("--admin-listen %s: the demo's admin listener has no token, so it listens on a loopback address only", listen)
	}
	if _, port, _ := net.SplitHostPort(listen); port != "0" {
		return listen, nil
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return "", fmt.Errorf("--admin-listen %s: %w", listen, err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
