package provider

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DefaultMaxBody is the response size limit when a Client sets none.
const DefaultMaxBody = 16 << 20

// Client performs one HTTP request for an adapter and turns provider failures into
// errors: *StatusError for a non-2xx answer, a plain error for transport failures and
// oversized bodies. It does not retry.
type Client struct {
	HTTP *http.Client
	// MaxBody bounds every response body; DefaultMaxBody when 0.
	MaxBody int64
	// UserAgent is sent on every request.
	UserAgent string
}

// ErrorDecoder extracts a provider's error message from an error body; it returns ""
// when the body is not in the provider's error shape.
type ErrorDecoder func(body []byte) string

// Do sends req and returns the body of a 2xx response. decode, which may be nil,
// turns an error body into the StatusError's message.
func (c *Client) Do(ctx context.Context, req *http.Request, decode ErrorDecoder) ([]byte, http.Header, error) {
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	if c.UserAgent != "" {
		req.Header.Set("User-Agent", c.UserAgent)
	}
	resp, err := hc.Do(req.WithContext(ctx))
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, fmt.Errorf("%s %s: %w", req.Method, redactURL(req), unwrapURLError(err))
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

// unwrapURLError drops *url.Error's own copy of the method and URL, which Do prints.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
