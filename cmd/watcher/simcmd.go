package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
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
	return nil
}

func simCommand(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("watcher sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := sim.DefaultConfig()
	listen := fs.String("listen", "127.0.0.1:8089", "`address` to serve the five provider APIs on")
	scenario := fs.String("scenario", "", "scenario `file` (YAML: seed, rate, history, history_span, open_share, open_resume_within, failure_rate, delays, providers, faults)")
	truth := fs.String("truth", "", "append every transition the simulator makes to this JSONL `file`")
	fs.Int64Var(&cfg.Seed, "seed", cfg.Seed, "scenario seed")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "new items per second per provider")
	fs.IntVar(&cfg.History, "history", cfg.History, "items per provider that exist at start")
	format := fs.String("log-format", "text", "log format: text or json")
	level := fs.String("log-level", "info", "log level")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := newLogger(stderr, *format, *level)
	if err != nil {
		return err
	}
	if *scenario != "" {
		if err := applyScenario(*scenario, &cfg); err != nil {
			return err
		}
	}
	if *truth != "" {
		f, err := os.OpenFile(*truth, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return fmt.Errorf("--truth: %w", err)
		}
		defer f.Close()
		cfg.TruthWriter = f
	}
	cfg.Log = log
	return sim.ListenAndServe(ctx, *listen, cfg, log)
}
