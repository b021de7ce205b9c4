package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/payments-watcher/watcher/sim"
)

// scenarioFile is the YAML form of a simulator scenario (`watcher sim --scenario`).
type scenarioFile struct {
	Seed        *int64   `yaml:"seed"`
	Rate        *float64 `yaml:"rate"`
	History     *int     `yaml:"history"`
	HistorySpan string   `yaml:"history_span"`
	OpenShare   *float64 `yaml:"open_share"`
	// OpenResumeWithin spreads the open history items' next steps over this long.
	OpenResumeWithin string   `yaml:"open_resume_within"`
	FailureRate      *float64 `yaml:"failure_rate"`
	Delays           struct {
		Min  string `yaml:"min"`
		Mean string `yaml:"mean"`
		Max  string `yaml:"max"`
	} `yaml:"delays"`
	Providers []string `yaml:"providers"`
	// Faults per provider id, in the admin API's JSON field names.
	Faults map[string]map[string]any `yaml:"faults"`
	// Quirks per provider id, in the admin API's JSON field names (sim.Quirks).
	Quirks map[string]map[string]any `yaml:"quirks"`
	// HawkQuery is the Coindirect Hawk resource forms accepted: either, query or path.
	HawkQuery string `yaml:"hawk_query"`
	// Webhooks per provider id, in the admin API's JSON field names (sim.WebhookTarget:
	// url, secret, faults).
	Webhooks map[string]map[string]any `yaml:"webhooks"`
}

// applyScenario reads path into cfg; fields the file leaves out keep cfg's values.
func applyScenario(path string, cfg *sim.Config) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--scenario: %w", err)
	}
	var sf scenarioFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&sf); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("scenario %s: %w", path, err)
	}
	if sf.Seed != nil {
		cfg.Seed = *sf.Seed
	}
	if sf.Rate != nil {
		cfg.Rate = *sf.Rate
	}
	if sf.History != nil {
		cfg.History = *sf.History
	}
	if sf.OpenShare != nil {
		cfg.OpenShare = *sf.OpenShare
	}
	if sf.FailureRate != nil {
		cfg.FailureRate = *sf.FailureRate
	}
	for _, d := range []struct {
		key string
		val string
		dst *time.Duration
	}{{"history_span", sf.HistorySpan, &cfg.HistorySpan},
		{"open_resume_within", sf.OpenResumeWithin, &cfg.OpenResumeWithin}, {"delays.min", sf.Delays.Min, &cfg.Delays.Min},
		{"delays.mean", sf.Delays.Mean, &cfg.Delays.Mean}, {"delays.max", sf.Delays.Max, &cfg.Delays.Max}} {
		if d.val == "" {
			continue
		}
		v, err := time.ParseDuration(d.val)
		if err != nil {
			return fmt.Errorf("scenario %s: %s: %q is not a duration", path, d.key, d.val)
		}
		*d.dst = v
	}
	if len(sf.Providers) > 0 {
		cfg.Providers = sf.Providers
	}
	for prov, raw := range sf.Faults {
		b, err := json.Marshal(raw)
		if err != nil {
			return fmt.Errorf("scenario %s: faults.%s: %w", path, prov, err)
		}
		var f sim.Faults
		if err := json.Unmarshal(b, &f); err != nil {
			return fmt.Errorf("scenario %s: faults.%s: %w", path, prov, err)
		}
		if cfg.Faults == nil {
			cfg.Faults = map[string]sim.Faults{}
		}
		cfg.Faults[prov] = f
	}
	for prov, raw := range sf.Quirks {
		q, err := quirksFromMap(raw)
		if err != nil {
			return fmt.Errorf("scenario %s: quirks.%s: %w", path, prov, err)
		}
		if cfg.Quirks == nil {
			cfg.Quirks = map[string]sim.Quirks{}
		}
		cfg.Quirks[prov] = q
	}
	for prov, raw := range sf.Webhooks {
		var wt sim.WebhookTarget
		if err := fromJSONMap(raw, &wt); err != nil {
			return fmt.Errorf("scenario %s: webhooks.%s: %w", path, prov, err)
		}
		if cfg.Webhooks == nil {
			cfg.Webhooks = map[string]sim.WebhookTarget{}
		}
		cfg.Webhooks[prov] = wt
	}
	if sf.HawkQuery != "" {
		mode, err := parseHawkQuery(sf.HawkQuery)
		if err != nil {
			return fmt.Errorf("scenario %s: hawk_query: %w", path, err)
		}
		cfg.HawkQuery = mode
	}
	return nil
}

// hawkQueryModes are the names of sim.HawkQueryMode in the scenario file and flag.
var hawkQueryModes = []struct {
	name string
	mode sim.HawkQueryMode
}{{"either", sim.HawkQueryEither}, {"query", sim.HawkQueryIncluded}, {"path", sim.HawkQueryExcluded}}

// parseHawkQuery reads a Hawk query mode: either (a mac over the path with or without
// its query), query (only with it) or path (only without it).
func parseHawkQuery(v string) (sim.HawkQueryMode, error) {
	for _, m := range hawkQueryModes {
		if v == m.name {
			return m.mode, nil
		}
	}
	return 0, fmt.Errorf("%q is not one of either, query, path", v)
}

// quirksFromMap decodes quirks given by their JSON field names (sim.Quirks); unknown
// names and values of the wrong type are errors.
func quirksFromMap(m map[string]any) (sim.Quirks, error) {
	var q sim.Quirks
	err := fromJSONMap(m, &q)
	return q, err
}

// fromJSONMap decodes a YAML mapping into v by v's JSON field names; unknown names are
// errors.
func fromJSONMap(m map[string]any, v any) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// quirkNames returns each quirk's JSON name with its zero value, which gives its type.
func quirkNames() map[string]any {
	b, err := json.Marshal(sim.Quirks{})
	if err != nil {
		panic("marshal zero quirks: " + err.Error())
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		panic("unmarshal zero quirks: " + err.Error())
	}
	return m
}

// quirkSetting is one --quirk PROVIDER:NAME[=VALUE], its value already typed.
type quirkSetting struct {
	provider, name string
	value          any
}

// quirkFlags collects the --quirk settings in the order given.
type quirkFlags []quirkSetting

func (f *quirkFlags) String() string { return "" }

// Set parses PROVIDER:NAME[=VALUE]. A boolean quirk without a value is true; the others
// need one.
func (f *quirkFlags) Set(v string) error {
	provider, rest, ok := strings.Cut(v, ":")
	if !ok || provider == "" || rest == "" {
		return errors.New("want PROVIDER:NAME[=VALUE], e.g. coindirect_payments:oldest_first")
	}
	if !slices.Contains(sim.ProviderIDs(), provider) {
		return fmt.Errorf("provider %q is not one of %s", provider, strings.Join(sim.ProviderIDs(), ", "))
	}
	name, raw, hasValue := strings.Cut(rest, "=")
	value, err := quirkValue(name, raw, hasValue)
	if err != nil {
		return err
	}
	*f = append(*f, quirkSetting{provider: provider, name: name, value: value})
	return nil
}

// quirkValue types the text of one quirk's value by the quirk's JSON type, and checks
// it decodes.
func quirkValue(name, raw string, hasValue bool) (any, error) {
	names := quirkNames()
	zero, ok := names[name]
	if !ok {
		return nil, fmt.Errorf("unknown quirk %q (known: %s)", name, strings.Join(slices.Sorted(maps.Keys(names)), ", "))
	}
	var value any
	switch zero.(type) {
	case bool:
		value = true
		if hasValue {
			b, err := strconv.ParseBool(raw)
			if err != nil {
				return nil, fmt.Errorf("%s: %q is not true or false", name, raw)
			}
			value = b
		}
	case float64:
		n, err := strconv.Atoi(raw)
		if !hasValue || err != nil {
			return nil, fmt.Errorf("%s: %q is not an integer (want %s=N)", name, raw, name)
		}
		value = n
	default:
		if !hasValue {
			return nil, fmt.Errorf("%s needs a value (%s=VALUE)", name, name)
		}
		value = raw
	}
	if _, err := quirksFromMap(map[string]any{name: value}); err != nil {
		return nil, err
	}
	return value, nil
}

// apply sets each quirk on top of cfg.Quirks, the later setting of a name winning.
func (f quirkFlags) apply(cfg *sim.Config) error {
	for _, qs := range f {
		b, err := json.Marshal(cfg.Quirks[qs.provider])
		if err != nil {
			return err
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			return err
		}
		m[qs.name] = qs.value
		q, err := quirksFromMap(m)
		if err != nil {
			return fmt.Errorf("--quirk %s:%s: %w", qs.provider, qs.name, err)
		}
		if cfg.Quirks == nil {
			cfg.Quirks = map[string]sim.Quirks{}
		}
		cfg.Quirks[qs.provider] = q
	}
	return nil
}

const simUsage = `Usage: watcher sim [--listen 127.0.0.1:8089] [--scenario FILE] [--truth FILE] [--seed S] [--rate R]
                 [--history N] [--quirk PROVIDER:NAME[=VALUE]]... [--hawk-query either|query|path]
                 [--webhook PROVIDER=URL]...

Serves the simulated provider APIs (and the admin API under /_sim/) until interrupted.

Quirks make one provider behave in ways its documents allow but do not show; each is
off by default and set per provider id, by --quirk (repeatable), the scenario file's
quirks: {PROVIDER: {NAME: VALUE}} or POST /_sim/quirks/PROVIDER. --quirk wins over the file.
  oldest_first             lists ascend by creation time; cursors and offsets follow that order
  ignore_date_filter       the lower creation-date bound (from, created[gte|gt], fromDate) is ignored
  page_cap=N               at most N items a page whatever was asked, silently; paging still works
  link_origin=URL          Circle only: Link header URLs on this origin, e.g. https://api.circle.com
  unknown_statuses         circle_ramp_sessions only: sessions go IN_PROGRESS, SUCCEEDED, DECLINED
  refuse_stripe_version=V  Stripe only: 400 for Stripe-Version V; * refuses any Stripe-Version sent
  forbidden                every API request is a 403, as for a caller off the IP allowlist
  clock_offset=D           the provider's clock runs D off (Coindirect Hawk check, Date header), e.g. -90s
Providers: circle_cpn_payments, circle_ramp_sessions, circle_exchange_settlements,
stripe_crypto_onramp_sessions, coindirect_payments.
Example: watcher sim --quirk coindirect_payments:oldest_first --quirk circle_cpn_payments:page_cap=3

Webhooks: --webhook PROVIDER=URL (or the scenario file's webhooks: {PROVIDER: {url, secret,
faults: {drop_rate, duplicate_rate, max_delay, delay_rate, reorder, forge_rate, replay_rate,
replay_age, inject_rate}}}) makes
the simulator POST that provider's signed webhook to URL for every status change
(stripe_crypto_onramp_sessions, coindirect_payments, circle_cpn_payments).

Flags:
`

// simArgs is a parsed `watcher sim` command line.
type simArgs struct {
	cfg                 sim.Config
	listen, truth       string
	logFormat, logLevel string
}

// parseSimArgs reads the flags and then the scenario file; --quirk and --hawk-query
// are applied over the file's values. Help and --version go to stdout, a bad flag to
// stderr (see parseFlags).
func parseSimArgs(args []string, stdout, stderr io.Writer) (simArgs, error) {
	fs := flag.NewFlagSet("watcher sim", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), simUsage)
		fs.PrintDefaults()
	}
	a := simArgs{cfg: sim.DefaultConfig()}
	fs.StringVar(&a.listen, "listen", "127.0.0.1:8089", "`address` to serve the five provider APIs on")
	scenario := fs.String("scenario", "", "scenario `file` (YAML: seed, rate, history, history_span, open_share, open_resume_within, failure_rate, delays, providers, faults, quirks, hawk_query)")
	fs.StringVar(&a.truth, "truth", "", "append every transition the simulator makes to this JSONL `file`")
	fs.Int64Var(&a.cfg.Seed, "seed", a.cfg.Seed, "scenario seed")
	fs.Float64Var(&a.cfg.Rate, "rate", a.cfg.Rate, "new items per second per provider")
	fs.IntVar(&a.cfg.History, "history", a.cfg.History, "items per provider that exist at start")
	var quirks quirkFlags
	fs.Var(&quirks, "quirk", "set one provider quirk, `PROVIDER:NAME[=VALUE]` (repeatable; see above), e.g. circle_cpn_payments:page_cap=3")
	webhooks := map[string]string{}
	fs.Func("webhook", "deliver a provider's webhooks to a URL, `PROVIDER=URL` (repeatable; stripe_crypto_onramp_sessions, coindirect_payments, circle_cpn_payments), signed with the simulator's default secrets", func(v string) error {
		prov, u, ok := strings.Cut(v, "=")
		if !ok || prov == "" || u == "" {
			return fmt.Errorf("%q is not PROVIDER=URL", v)
		}
		webhooks[prov] = u
		return nil
	})
	var hawkQuery *sim.HawkQueryMode
	fs.Func("hawk-query", "Coindirect Hawk `mode`: either (mac over the path with or without its query), query (only with it) or path (only without it)", func(v string) error {
		m, err := parseHawkQuery(v)
		if err != nil {
			return err
		}
		hawkQuery = &m
		return nil
	})
	fs.StringVar(&a.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&a.logLevel, "log-level", "info", "log level")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return a, err
	}
	if fs.NArg() > 0 {
		return a, badCommandLine(stderr, simUsage, fmt.Errorf("sim: unexpected argument %q", fs.Arg(0)))
	}
	if *scenario != "" {
		if err := applyScenario(*scenario, &a.cfg); err != nil {
			return a, err
		}
	}
	if err := quirks.apply(&a.cfg); err != nil {
		return a, err
	}
	if hawkQuery != nil {
		a.cfg.HawkQuery = *hawkQuery
	}
	for prov, u := range webhooks {
		if a.cfg.Webhooks == nil {
			a.cfg.Webhooks = map[string]sim.WebhookTarget{}
		}
		wt := a.cfg.Webhooks[prov]
		wt.URL = u
		a.cfg.Webhooks[prov] = wt
	}
	return a, nil
}

func simCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a, err := parseSimArgs(args, stdout, stderr)
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, a.logFormat, a.logLevel)
	if err != nil {
		return err
	}
	cfg := a.cfg
	if a.truth != "" {
		f, err := os.OpenFile(a.truth, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return fmt.Errorf("--truth: %w", err)
		}
		defer f.Close()
		cfg.TruthWriter = f
	}
	cfg.Log = log
	return sim.ListenAndServe(ctx, a.listen, cfg, log)
}
