package stripe

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/payments-watcher/watcher/poller/provider"
)

const (
	versionAdvice = "Stripe refused the API version: stripe_version is \"2099-01-01.nope\", sent as Stripe-Version; " +
		"set stripe_version to a version Stripe accepts for this account, or remove it to use the account's default"
	onrampAdvice = "Stripe refused crypto onramp access for this account: apply for Crypto Onramp in the Stripe Dashboard; " +
		"the API is in private preview"
)

// TestStripeRefusals sends requests to the fake answering as Stripe does when it
// refuses the API version or onramp access: the error names the setting and the value
// sent (or onramp access), keeps Stripe's StatusError, and is permanent. Other
// refusals keep their plain StatusError.
func TestStripeRefusals(t *testing.T) {
	unrecognized := func(w http.ResponseWriter, r *http.Request) {
		writeStripeError(w, http.StatusNotFound, stripeError{Type: "invalid_request_error",
			Message: fmt.Sprintf("Unrecognized request URL (GET: %s). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.", r.URL.Path)})
	}
	for _, tc := range []struct {
		name    string
		version string
		get     bool // read one session instead of listing
		serve   func(w http.ResponseWriter, r *http.Request)
		code    int
		cause   string // "" for a plain StatusError
		advice  string
	}{
		{name: "invalid version", version: "2099-01-01.nope", code: 400, cause: causeStripeVersion, advice: versionAdvice,
			serve: func(w http.ResponseWriter, r *http.Request) {
				invalidRequest(w, "", "", "Invalid Stripe API version: "+r.Header.Get("Stripe-Version"))
			}},
		{name: "version code", version: "2099-01-01.nope", code: 400, cause: causeStripeVersion, advice: versionAdvice,
			serve: func(w http.ResponseWriter, r *http.Request) {
				invalidRequest(w, "api_version_invalid", "", "The version you asked for does not exist.")
			}},
		{name: "version param", version: "2099-01-01.nope", code: 400, cause: causeStripeVersion, advice: versionAdvice,
			serve: func(w http.ResponseWriter, r *http.Request) {
				invalidRequest(w, "parameter_invalid", "Stripe-Version", "Unsupported value.")
			}},
		{name: "onramp disabled", version: "2026-08-26.preview", code: 400, cause: causeOnrampAccess,
			advice: onrampAdvice + "; once it is granted, check that stripe_version \"2026-08-26.preview\" serves it",
			serve: func(w http.ResponseWriter, r *http.Request) {
				writeStripeError(w, 400, stripeError{Type: "api_error", Code: "crypto_onramp_disabled",
					Message: "The v1/crypto/onramp_sessions endpoint has been disabled temporarily"})
			}},
		{name: "onramp access forbidden", code: 403, cause: causeOnrampAccess,
			advice: onrampAdvice + "; once it is granted, set stripe_version if the account's default version does not serve it",
			serve: func(w http.ResponseWriter, r *http.Request) {
				writeStripeError(w, 403, stripeError{Type: "invalid_request_error",
					Message: "Your account does not have access to the Crypto Onramp API."})
			}},
		{name: "onramp not available", code: 400, cause: causeOnrampAccess,
			advice: onrampAdvice + "; once it is granted, set stripe_version if the account's default version does not serve it",
			serve: func(w http.ResponseWriter, r *http.Request) {
				invalidRequest(w, "", "", "Crypto onramp is not available in your country or for your account.")
			}},
		{name: "list unrecognized", version: "2026-08-26.dahlia", code: 404, cause: causeOnrampAccess,
			advice: onrampAdvice + "; once it is granted, check that stripe_version \"2026-08-26.dahlia\" serves it",
			serve:  func(w http.ResponseWriter, r *http.Request) { unrecognized(w, r) }},
		{name: "get unrecognized", get: true, code: 404, cause: causeOnrampAccess,
			advice: onrampAdvice + "; once it is granted, set stripe_version if the account's default version does not serve it",
			serve:  func(w http.ResponseWriter, r *http.Request) { unrecognized(w, r) }},
		{name: "restricted key lacks permission", code: 403, serve: func(w http.ResponseWriter, r *http.Request) {
			writeStripeError(w, 403, stripeError{Type: "invalid_request_error",
				Message: "This restricted key lacks the permission to read crypto onramp sessions."})
		}},
		{name: "missing session", get: true, code: 404},
		{name: "bad parameter", code: 400, serve: func(w http.ResponseWriter, r *http.Request) { writeFakeError(w, 400) }},
		{name: "wrong key", code: 401, serve: func(w http.ResponseWriter, r *http.Request) { writeFakeError(w, 401) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newStripeFake(testKey)
			if tc.serve != nil {
				f.fail = func(w http.ResponseWriter, r *http.Request) bool { tc.serve(w, r); return true }
			}
			src := newTestSource(t, startFake(t, f), 2, tc.version)
			var err error
			if tc.get {
				_, err = src.Get(t.Context(), "cos_1Missing")
			} else {
				_, err = src.Page(t.Context(), provider.Request{})
			}
			var se *provider.StatusError
			if !errors.As(err, &se) || se.Code != tc.code || se.Temporary() {
				t.Fatalf("err = %v, want a permanent StatusError %d", err, tc.code)
			}
			var ce *provider.CauseError
			switch {
			case tc.cause == "" && errors.As(err, &ce):
				t.Errorf("err = %v, want no identified cause", err)
			case tc.cause == "":
			case !errors.As(err, &ce) || ce.Cause != tc.cause || ce.Advice != tc.advice:
				t.Errorf("err = %v\nwant cause %q and advice %q", err, tc.cause, tc.advice)
			case !strings.HasPrefix(err.Error(), tc.advice+": GET "):
				t.Errorf("err = %v, want it to open with the advice", err)
			}
			if strings.Contains(err.Error(), testKey) {
				t.Errorf("error shows the API key: %v", err)
			}
		})
	}
}

func TestRefusalWithoutVersion(t *testing.T) {
	cause, advice := refusal(400, stripeError{Type: "invalid_request_error", Message: "Invalid Stripe API version: "}, onrampPath, "")
	want := "Stripe refused the API version: no Stripe-Version was sent (stripe_version is not set); " +
		"set stripe_version to a version Stripe accepts for this account, or remove it to use the account's default"
	if cause != causeStripeVersion || advice != want {
		t.Errorf("refusal = %q, %q; want %q, %q", cause, advice, causeStripeVersion, want)
	}
	// The same words on another status, or an unrecognized URL elsewhere, are not recognised.
	for _, tc := range []struct {
		status int
		e      stripeError
		path   string
	}{
		{500, stripeError{Message: "Invalid Stripe API version: x"}, onrampPath},
		{401, stripeError{Code: "crypto_onramp_disabled"}, onrampPath},
		{404, stripeError{Message: "Unrecognized request URL (GET: /v1/charges)."}, "/v1/charges"},
		{404, stripeError{Code: "resource_missing", Message: "Unrecognized request URL"}, onrampPath},
	} {
		if cause, _ := refusal(tc.status, tc.e, tc.path, "v"); cause != "" {
			t.Errorf("refusal(%d, %+v, %s) = %q, want none", tc.status, tc.e, tc.path, cause)
		}
	}
}
