package probe

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/sim"
)

// TestProbeQuirks runs probe against a simulated provider with one quirk on: behaviour
// the provider's documents allow but do not show. Each row's named check fails, saying
// what it saw, and the report fails.
func TestProbeQuirks(t *testing.T) {
	for _, tc := range []struct {
		name     string
		provider string
		quirks   sim.Quirks
		hawk     sim.HawkQueryMode
		check    string
		says     string
	}{
		{"oldest first", sim.ProviderCPN, sim.Quirks{OldestFirst: true}, 0, CheckOrder, "not newest first"},
		{"date filter ignored", sim.ProviderCoindirect, sim.Quirks{IgnoreDateFilter: true}, 0, CheckDateFilter, "not honoured"},
		{"pages capped", sim.ProviderCoindirect, sim.Quirks{PageCap: 3}, 0, CheckPageSize, "at most 3 per page"},
		{"link on another origin", sim.ProviderCPN, sim.Quirks{LinkOrigin: "https://api.circle.com"}, 0, CheckPaging, "https://api.circle.com:443"},
		{"unknown statuses", sim.ProviderRamp, sim.Quirks{UnknownStatuses: true}, 0, CheckStatuses, "ramp_session"},
		{"stripe version refused", sim.ProviderStripe, sim.Quirks{RefuseStripeVersion: "*"}, 0, CheckCredentials, "stripe_version"},
		{"forbidden", sim.ProviderSettlements, sim.Quirks{Forbidden: true}, 0, CheckCredentials, "forbidden"},
		{"clock off", sim.ProviderCoindirect, sim.Quirks{ClockOffset: 10 * time.Minute}, 0, CheckClock, "10m0s ahead"},
		{"query not signed", sim.ProviderCoindirect, sim.Quirks{}, sim.HawkQueryExcluded, CheckSignQuery, "set sign_query: false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, served := newSim(t, sim.Config{Quirks: map[string]sim.Quirks{tc.provider: tc.quirks}, HawkQuery: tc.hawk})
			r := Run(context.Background(), simTarget(tc.provider, srv.URL))
			logReport(t, r)
			c := checkOf(r, tc.check)
			if c.Result != Fail || !strings.Contains(c.Detail, tc.says) {
				t.Errorf("%s: %s %q; want a fail saying %q", tc.check, c.Result, c.Detail, tc.says)
			}
			if !r.Failed() {
				t.Error("the report does not fail")
			}
			if r.Requests > MaxRequests || r.Requests != served.count(tc.provider) {
				t.Errorf("%d requests counted, %d served; want them equal and at most %d", r.Requests, served.count(tc.provider), MaxRequests)
			}
		})
	}
}
