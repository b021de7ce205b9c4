package main

import (
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payments-watcher/watcher/event"
	"github.com/payments-watcher/watcher/internal/natstest"
	"github.com/payments-watcher/watcher/sim"
)

// quirkCase is one source polled from a simulator that behaves in a way the
// provider's documents allow without showing it.
type quirkCase struct {
	name     string // source name
	provider string
	quirks   sim.Quirks
	hawk     sim.HawkQueryMode
	// settings are extra source keys, one "key: value" a line.
	settings []string
	// refused lists what the source's error log must say; such a source publishes
	// nothing. Empty: the source must publish exactly the simulator's truth.
	refused []string
}

var quirkCases = []quirkCase{
	{name: "cpn_oldest", provider: sim.ProviderCPN, quirks: sim.Quirks{OldestFirst: true}},
	{name: "cpn_nofilter", provider: sim.ProviderCPN, quirks: sim.Quirks{IgnoreDateFilter: true}},
	{name: "cpn_cap", provider: sim.ProviderCPN, quirks: sim.Quirks{PageCap: 2}},
	{name: "cpn_links", provider: sim.ProviderCPN, quirks: sim.Quirks{LinkOrigin: "https://api.circle.com"}},
	{name: "fx_mixed", provider: sim.ProviderSettlements, quirks: sim.Quirks{OldestFirst: true, IgnoreDateFilter: true, PageCap: 3}},
	{name: "ramp_unknown", provider: sim.ProviderRamp, quirks: sim.Quirks{UnknownStatuses: true}},
	{name: "onramp_oldest", provider: sim.ProviderStripe, quirks: sim.Quirks{OldestFirst: true}},
	{name: "onramp_nofilter", provider: sim.ProviderStripe, quirks: sim.Quirks{IgnoreDateFilter: true, PageCap: 2}},
	{name: "cd_oldest", provider: sim.ProviderCoindirect, quirks: sim.Quirks{OldestFirst: true}},
	{name: "cd_nofilter", provider: sim.ProviderCoindirect, quirks: sim.Quirks{IgnoreDateFilter: true}},
	{name: "cd_cap", provider: sim.ProviderCoindirect, quirks: sim.Quirks{PageCap: 3}},
	{name: "cd_pathonly", provider: sim.ProviderCoindirect, hawk: sim.HawkQueryExcluded},
	{name: "cd_querysigned", provider: sim.ProviderCoindirect, hawk: sim.HawkQueryIncluded, settings: []string{"sign_query: false"}},
	{name: "cd_skew", provider: sim.ProviderCoindirect, quirks: sim.Quirks{ClockOffset: 7 * time.Minute}},
	{name: "cd_skew_pathonly", provider: sim.ProviderCoindirect, quirks: sim.Quirks{ClockOffset: -4 * time.Minute}, hawk: sim.HawkQueryExcluded},
	{name: "onramp_version", provider: sim.ProviderStripe, quirks: sim.Quirks{RefuseStripeVersion: sim.DefaultStripeVersion},
		refused: []string{"stripe_version", sim.DefaultStripeVersion}},
	{name: "cpn_allowlist", provider: sim.ProviderCPN, quirks: sim.Quirks{Forbidden: true},
		refused: []string{"403", "allowlist"}},
}

// credentialLines are the simulator's credentials as source keys.
func credentialLines(provider string) []string {
	for _, s := range demoSources {
		if s.provider != provider {
			continue
		}
		var lines []string
		for _, k := range slices.Sorted(maps.Keys(s.keys)) {
			lines = append(lines, fmt.Sprintf("%s: %q", k, s.keys[k]))
		}
		return lines
	}
	panic("no demo source for " + provider)
}

// TestRunAgainstQuirkyProviders runs the daemon against one simulator per quirk: each
// source either publishes exactly the transitions its simulator made (no final status
// missed, nothing outside the truth, no sequence twice) or, where watcher cannot go on,
// logs an error that names the cause and publishes nothing.
func TestRunAgainstQuirkyProviders(t *testing.T) {
	ns := natstest.JetStream(t)
	dir := t.TempDir()
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "state:\n  path: %q\nnats:\n  url: %q\nhttp:\n  listen: \"\"\nadmin:\n  listen: \"\"\nsources:\n", filepath.Join(dir, "w.db"), ns.ClientURL())
	sims := map[string]*sim.Sim{}
	urls := map[string]string{}
	for i, c := range quirkCases {
		s, err := sim.New(sim.Config{Seed: int64(100 + i), History: 30, HistorySpan: 72 * time.Hour, OpenShare: 0.4,
			FailureRate: 0.2, Providers: []string{c.provider}, Quirks: map[string]sim.Quirks{c.provider: c.quirks}, HawkQuery: c.hawk})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		srv := httptest.NewServer(s.Handler())
		t.Cleanup(srv.Close)
		sims[c.name], urls[c.name] = s, srv.URL
		fmt.Fprintf(&cfg, "  - name: %s\n    provider: %s\n    base_url: %q\n    interval: 200ms\n    open_refresh: 1ms\n    open_refresh_max: 0s\n"+
			"    rate_limit: 200\n    page_size: 4\n    request_timeout: 5s\n", c.name, c.provider, srv.URL)
		for _, l := range append(credentialLines(c.provider), c.settings...) {
			fmt.Fprintf(&cfg, "    %s\n", l)
		}
	}
	logs, stop := runConfig(t, dir, cfg.String())
	defer stop()

	// Every source either completes its baseline or logs its refusal.
	pending := map[string]bool{}
	for _, c := range quirkCases {
		pending[c.name] = true
	}
	deadline := time.After(60 * time.Second)
	for len(pending) > 0 {
		select {
		case l := <-logs.lines:
			for _, c := range quirkCases {
				if !pending[c.name] || !strings.Contains(l, "source="+c.name+" ") {
					continue
				}
				if len(c.refused) == 0 && strings.Contains(l, "baseline walk complete") {
					delete(pending, c.name)
				}
				if len(c.refused) > 0 && strings.Contains(l, "level=ERROR") && containsAll(l, c.refused) {
					delete(pending, c.name)
				}
			}
		case <-deadline:
			t.Fatalf("sources neither polled nor refused: %v\nlogs:\n%s", pending, logs.String())
		}
	}

	// Every open item moves on (several steps at once, possibly), and new items appear.
	marks := map[string]uint64{}
	for _, c := range quirkCases {
		if len(c.refused) > 0 {
			continue
		}
		s := sims[c.name]
		marks[c.name] = 0
		if tr := s.Truth(); len(tr) > 0 {
			marks[c.name] = tr[len(tr)-1].Seq
		}
		s.Step(time.Now().Add(10 * time.Minute))
		for range 2 {
			resp, err := http.Post(urls[c.name]+"/_sim/items/"+c.provider, "application/json", strings.NewReader(`{}`))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				t.Fatalf("%s: creating an item: HTTP %d", c.name, resp.StatusCode)
			}
		}
	}

	// want: per source, each item's final status in the truth since the mark, and every
	// status it passed through.
	type key struct{ source, kind, id string }
	final := map[key]string{}
	passed := map[key]map[string]bool{}
	for _, c := range quirkCases {
		if len(c.refused) > 0 {
			continue
		}
		for _, tr := range sims[c.name].Truth() {
			if tr.Seq <= marks[c.name] {
				continue
			}
			k := key{c.name, tr.Kind, tr.ID}
			final[k] = tr.To
			if passed[k] == nil {
				passed[k] = map[string]bool{}
			}
			passed[k][tr.To] = true
		}
	}
	if len(final) < 3*len(marks) {
		t.Fatalf("the simulators made only %d changes", len(final))
	}

	js := natstest.Connect(t, ns.ClientURL())
	col := newCollector(t, js)
	last := map[key]event.Data{}
	seqs := map[string]bool{}
	reached := func() bool {
		for k, st := range final {
			if last[k].Current.Status != st {
				return false
			}
		}
		return true
	}
	until := time.Now().Add(60 * time.Second)
	for !reached() {
		if time.Now().After(until) {
			var missing []string
			for k, st := range final {
				if got := last[k].Current.Status; got != st {
					missing = append(missing, fmt.Sprintf("%s %s %s: %q, want %q", k.source, k.kind, k.id, got, st))
				}
			}
			t.Fatalf("final statuses not published:\n%s\nlogs:\n%s", strings.Join(missing, "\n"), logs.String())
		}
		batch, err := col.cons.Fetch(100, jetstream.FetchMaxWait(500*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			ev, err := event.Decode(m.Data())
			if err != nil {
				t.Fatal(err)
			}
			d := ev.Data
			k := key{d.Source, d.Kind, d.ID}
			if !passed[k][d.Current.Status] {
				t.Errorf("%s %s %s: event to %q, which its simulator never made (truth: %v)", d.Source, d.Kind, d.ID, d.Current.Status, passed[k])
			}
			if id := fmt.Sprintf("%s/%s/%s#%d", d.Source, d.Kind, d.ID, d.Sequence); seqs[id] {
				t.Errorf("%s published twice", id)
			} else {
				seqs[id] = true
			}
			if d.Sequence > last[k].Sequence {
				last[k] = d
			}
		}
	}
	t.Logf("%d items changed in %d simulators; %d events checked", len(final), len(marks), len(seqs))
	for _, c := range quirkCases {
		if c.name == "ramp_unknown" {
			n := 0
			for k, d := range last {
				if k.source == c.name && d.Current.State == "unknown" {
					n++
				}
			}
			if n == 0 {
				t.Errorf("%s: no event with state unknown", c.name)
			}
		}
	}
	for _, l := range strings.Split(logs.String(), "\n") {
		for _, secret := range []string{sim.DefaultStripeSecretKey, sim.DefaultCoindirectHawkKey, "demo-cpn-secret", "demo-mint-secret", "demo-ramp-secret"} {
			if strings.Contains(l, secret) {
				t.Errorf("log carries a secret: %s", l)
			}
		}
	}
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
