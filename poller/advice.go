package poller

import (
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/payments-watcher/watcher/poller/provider"
)

// accountSelector is the one credential setting that names an account rather than
// authenticating: a 401 is not about it, a 403 may be.
const accountSelector = "merchant_id"

// advise turns a failed cycle's error into what to tell the operator: msg says what
// the provider refused and what to change, naming the source's credential settings
// (credentials, the keys of provider.Provider.Credentials) but never their values, and
// quoting the provider's own message and request id; cause is a stable key of the
// cause. Both are "" when err is not a refusal the poller can explain (a network
// failure, a 5xx, a malformed page): such failures are logged as they come.
//
// A *provider.CauseError gives its own cause and advice. Otherwise a 401 means the
// credentials were refused and a 403 that they were accepted but the request was
// forbidden: a missing permission or product on the key or account, or this host's
// IP address missing from the provider's IP allowlist (Circle answers the latter with
// code 3), or, for a provider configured with merchant_id, a merchant that is not the
// credentials' own.
func advise(err error, providerID string, credentials []string) (msg, cause string) {
	var se *provider.StatusError
	errors.As(err, &se)
	var ce *provider.CauseError
	switch {
	case errors.As(err, &ce):
		return ce.Advice + providerSays(se), ce.Cause
	case se == nil:
		return "", ""
	case se.Code == http.StatusUnauthorized:
		return providerID + " refused the source's credentials (HTTP 401): check " +
			settingList(authSettings(credentials)) + ", then restart watcher (other sources keep running)" +
			providerSays(se), provider.CauseUnauthorized
	case se.Code == http.StatusForbidden:
		return providerID + " accepted the source's credentials but forbade the request (HTTP 403): " +
			forbiddenCauses(se, providerID, credentials) + providerSays(se), provider.CauseForbidden
	}
	return "", ""
}

// forbiddenCauses lists the likely causes of a 403, the likeliest first.
func forbiddenCauses(se *provider.StatusError, providerID string, credentials []string) string {
	causes := []string{
		"the key or account lacks the permission or product this endpoint needs",
		"this host's IP address is not on the provider's IP allowlist for the key",
	}
	if strings.HasPrefix(providerID, "circle_") && strings.HasPrefix(se.Message, "code 3:") {
		// Circle documents 403 code 3 FORBIDDEN for a request from outside the allowlist.
		causes[0], causes[1] = "this host's IP address is not on the API key's IP allowlist (Circle code 3 FORBIDDEN); add it in the Circle console", causes[0]
	}
	if slices.Contains(credentials, accountSelector) {
		causes = append(causes, accountSelector+" is not the merchant of these credentials")
	}
	return "likely " + strings.Join(causes, ", or ")
}

// authSettings are the credential settings that authenticate (all but the account
// selector); "the source's credentials" when the provider lists none.
func authSettings(credentials []string) []string {
	var keys []string
	for _, k := range credentials {
		if k != accountSelector {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return []string{"the source's credentials"}
	}
	return keys
}

// settingList joins setting names as "a", "a and b", "a, b and c".
func settingList(keys []string) string {
	if len(keys) <= 1 {
		return strings.Join(keys, "")
	}
	return strings.Join(keys[:len(keys)-1], ", ") + " and " + keys[len(keys)-1]
}

// providerSays quotes the provider's message and request id of se, when it has them;
// "" for a nil se. The adapters have already removed any secret from the message.
func providerSays(se *provider.StatusError) string {
	if se == nil {
		return ""
	}
	var b strings.Builder
	if se.Message != "" {
		b.WriteString("; the provider says: " + se.Message)
	}
	if se.RequestID != "" {
		b.WriteString(" (request id " + se.RequestID + ")")
	}
	return b.String()
}

// logSuccess records a successful cycle: a failure cause logged before is forgotten,
// so that a later recurrence is logged again, and the recovery is logged.
func (p *Poller) logSuccess() {
	if p.failureCause != "" {
		p.log.Info("poll succeeded again", "after", p.failureCause)
		p.failureCause = ""
	}
}

// drainAnomalies reports the anomalies the source noted during its last call, when it
// implements provider.AnomalyReporter: each is counted once per cycle and logged once
// per source, at WARN with the adapter's detail.
func (p *Poller) drainAnomalies() {
	r, ok := p.src.(provider.AnomalyReporter)
	if !ok {
		return
	}
	for _, a := range r.Anomalies() {
		p.anomaly(a.Kind, a.Detail)
	}
}
