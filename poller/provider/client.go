package provider

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultMaxBody is the response size limit when a Client sets none.
const DefaultMaxBody = 16 << 20

// maxRedirects bounds the redirects one request follows, as http.Client's default.
const maxRedirects = 10

// Client performs one HTTP request for an adapter and turns provider failures into
// errors: *StatusError for a non-2xx answer, a plain error for transport failures and
// oversized bodies. It does not retry.
//
// Whatever HTTP client it is given, Do follows a redirect only within the origin
// (scheme, host and port) of the request, so that the credentials an adapter put on
// the request (Authorization, Hawk) reach no other host; a redirect elsewhere is an
// error naming both origins.
type Client struct {
	HTTP *http.Client
	// MaxBody bounds every response body; DefaultMaxBody when 0.
	MaxBody int64
	// UserAgent is sent on every request.
	UserAgent string
	// BaseURL, when set, is the source's base_url: Do refuses a request to any other
	// origin before sending it.
	BaseURL string
}

// ClientOptions configure NewClient.
type ClientOptions struct {
	// BaseURL is the source's base_url; requests and redirects stay on its origin.
	BaseURL string
	// RootCAs, when not nil, are the only certificate authorities the source's TLS
	// connections trust (a source's ca_file): they replace the system's roots. Nil
	// trusts the system's roots. Certificates are verified either way.
	RootCAs *x509.CertPool
	// UserAgent is sent on every request.
	UserAgent string
	// MaxBody bounds every response body; DefaultMaxBody when 0.
	MaxBody int64
}

// NewClient returns the Client of one source: its own connection pool (a clone of
// http.DefaultTransport, so proxies from the environment apply), TLS 1.2 or later
// with certificate verification always on, and requests held to the origin of
// o.BaseURL. Per-request time limits come from the caller's context (the poller's
// request_timeout); the transport adds its own bounds on connecting (30s) and on the
// TLS handshake (10s).
func NewClient(o ClientOptions) *Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 4
	t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: o.RootCAs}
	return &Client{
		HTTP:      &http.Client{Transport: t},
		MaxBody:   o.MaxBody,
		UserAgent: o.UserAgent,
		BaseURL:   o.BaseURL,
	}
}

// ErrorDecoder extracts a provider's error message from an error body; it returns ""
// when the body is not in the provider's error shape.
type ErrorDecoder func(body []byte) string

// Do sends req and returns the body of a 2xx response. decode, which may be nil,
// turns an error body into the StatusError's message.
func (c *Client) Do(ctx context.Context, req *http.Request, decode ErrorDecoder) ([]byte, http.Header, error) {
	if c.BaseURL != "" {
		if base, err := url.Parse(c.BaseURL); err != nil || Origin(req.URL) != Origin(base) {
			return nil, nil, fmt.Errorf("%s %s: refused: the source's requests go only to base_url %s",
				req.Method, redactURL(req), originOf(c.BaseURL))
		}
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	// A shallow copy shares the transport and its connections; only the redirect
	// policy differs.
	sameOrigin := *hc
	sameOrigin.CheckRedirect = func(next *http.Request, via []*http.Request) error {
		if from := via[0].URL; Origin(next.URL) != Origin(from) {
			code := 0
			if next.Response != nil {
				code = next.Response.StatusCode
			}
			return fmt.Errorf("HTTP %d redirect to %s not followed: the source's requests and credentials go only to %s",
				code, redactTarget(next.URL), Origin(from))
		}
		if hc.CheckRedirect != nil {
			return hc.CheckRedirect(next, via)
		}
		if len(via) >= maxRedirects {
			return fmt.Errorf("stopped after %d redirects", maxRedirects)
		}
		return nil
	}
	if c.UserAgent != "" {
		req.Header.Set("User-Agent", c.UserAgent)
	}
	resp, err := sameOrigin.Do(req.WithContext(ctx))
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		err = unwrapURLError(err)
		var ua x509.UnknownAuthorityError
		if errors.As(err, &ua) {
			return nil, nil, fmt.Errorf("%s %s: %w (a provider behind a private CA needs the source's ca_file)", req.Method, redactURL(req), err)
		}
		return nil, nil, fmt.Errorf("%s %s: %w", req.Method, redactURL(req), err)
	}
	defer resp.Body.Close()
	limit := c.MaxBody
	if limit <= 0 {
		limit = DefaultMaxBody
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, fmt.Errorf("%s %s: reading body: %w", req.Method, redactURL(req), err)
	}
	if int64(len(body)) > limit {
		return nil, nil, fmt.Errorf("%s %s: response body exceeds %d bytes", req.Method, redactURL(req), limit)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		se := &StatusError{
			Code:       resp.StatusCode,
			RetryAfter: ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
			RequestID:  firstHeader(resp.Header, "X-Request-Id", "Request-Id"),
		}
		if decode != nil {
			se.Message = decode(body)
		}
		return nil, resp.Header, fmt.Errorf("%s %s: %w", req.Method, redactURL(req), se)
	}
	return body, resp.Header, nil
}

// ParseRetryAfter reads a Retry-After value in seconds or as an HTTP date; 0 when
// absent or unparsable.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n < 0 {
			return 0
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

func firstHeader(h http.Header, names ...string) string {
	for _, n := range names {
		if v := h.Get(n); v != "" {
			return v
		}
	}
	return ""
}

// redactURL prints the request URL without user info.
func redactURL(req *http.Request) string {
	u := *req.URL
	u.User = nil
	return u.String()
}

// Origin is u's scheme://host:port, the port made explicit and the host lowercased,
// so that https://API.example.com and https://api.example.com:443 compare equal. It is
// the origin that Client holds a source's requests and redirects to.
func Origin(u *url.URL) string {
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	if port == "" {
		switch scheme {
		case "https":
			port = "443"
		case "http":
			port = "80"
		}
	}
	return scheme + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// originOf is origin of a raw URL, for messages; the raw text when it does not parse.
func originOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return Origin(u)
}

// redactTarget prints a redirect target without user info, query or fragment, which
// the other host chose and may carry anything.
func redactTarget(u *url.URL) string {
	v := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}
	return v.String()
}

// unwrapURLError drops *url.Error's own copy of the method and URL, which Do prints.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
