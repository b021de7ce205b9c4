package stateapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client asks a running daemon's admin listener; it is a Reader.
type Client struct {
	addr  string // as given, for messages
	base  string // URL of the /state/ endpoints
	token string
	http  *http.Client
}

// NewClient returns a Client of the admin listener at listen: host:port (an
// unspecified host is this machine) or unix:/path; token, when not "", is sent as the
// bearer token.
func NewClient(listen, token string) (*Client, error) {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		DialContext:           dialer.DialContext,
		ResponseHeaderTimeout: time.Minute, // counting a large source's records takes a while
	}
	c := &Client{addr: listen, token: token, http: &http.Client{Transport: tr}}
	if path, ok := strings.CutPrefix(listen, "unix:"); ok {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", path)
		}
		c.base = "http://watcher-admin/state/"
		return c, nil
	}
	addr, err := DialAddr(listen)
	if err != nil {
		return nil, err
	}
	c.addr, c.base = addr, "http://"+addr+"/state/"
	return c, nil
}

// DialAddr turns a listen address into one to connect to: an unspecified host is
// this machine. Port 0 cannot be dialled.
func DialAddr(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("%q: %w", listen, err)
	}
	if port == "0" {
		return "", fmt.Errorf("%q has port 0, so its address is unknown: give --addr", listen)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port), nil
}

// Addr is the address the Client asks, for messages.
func (c *Client) Addr() string { return c.addr }

func (c *Client) url(parts ...string) string {
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return c.base + strings.Join(parts, "/")
}

// answerError is a 4xx answer of the daemon: its own message, which names what is
// wrong, matching the sentinel of its status.
type answerError struct {
	msg  string
	kind error
}

func (e *answerError) Error() string { return e.msg }
func (e *answerError) Unwrap() error { return e.kind }

func kindOf(status int) error {
	switch status {
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusUnauthorized, http.StatusForbidden:
		return ErrUnauthorized
	}
	return ErrBadRequest
}

// do sends a request and returns the response of a 2xx answer; any other answer
// becomes an error carrying the daemon's message.
func (c *Client) do(ctx context.Context, method, u string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("the running watcher at %s: %w", c.addr, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var se streamError
	if json.Unmarshal(body, &se) == nil && se.Error != "" {
		if resp.StatusCode/100 == 4 {
			return nil, &answerError{msg: se.Error, kind: kindOf(resp.StatusCode)}
		}
		return nil, fmt.Errorf("the running watcher at %s answered %s: %s", c.addr, resp.Status, se.Error)
	}
	// Not a watcher's answer: another server, or a watcher without /state/ endpoints.
	return nil, fmt.Errorf("%s %s: %s: %s", method, u, resp.Status, clip(strings.TrimSpace(string(body)), 200))
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func (c *Client) getJSON(ctx context.Context, v any, parts ...string) error {
	resp, err := c.do(ctx, http.MethodGet, c.url(parts...))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("the running watcher at %s: reading its answer: %w", c.addr, err)
	}
	return nil
}

// lines decodes a JSON Lines answer into a T per line for fn; a final error line
// becomes the error returned.
func lines[T any](ctx context.Context, c *Client, u string, fn func(T) error) error {
	resp, err := c.do(ctx, http.MethodGet, u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if bytes.HasPrefix(line, []byte(`{"error":`)) {
			var se streamError
			if json.Unmarshal(line, &se) == nil {
				return fmt.Errorf("the running watcher at %s: %s", c.addr, se.Error)
			}
		}
		var v T
		if err := json.Unmarshal(line, &v); err != nil {
			return fmt.Errorf("the running watcher at %s: reading its answer: %w", c.addr, err)
		}
		if err := fn(v); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("the running watcher at %s: reading its answer: %w", c.addr, err)
	}
	return nil
}

// Sources asks GET /state/sources.
func (c *Client) Sources(ctx context.Context) ([]SourceInfo, error) {
	var out []SourceInfo
	return out, c.getJSON(ctx, &out, "sources")
}

// Record asks GET /state/items/{source}/{id}.
func (c *Client) Record(ctx context.Context, source, id string) (Record, error) {
	var out Record
	return out, c.getJSON(ctx, &out, "items", source, id)
}

// Open asks GET /state/open/{source}.
func (c *Client) Open(ctx context.Context, source string) ([]OpenItem, error) {
	var out []OpenItem
	return out, c.getJSON(ctx, &out, "open", source)
}

// Export asks GET /state/export/{source}.
func (c *Client) Export(ctx context.Context, source string, fn func(Record) error) error {
	return lines(ctx, c, c.url("export", source), fn)
}

// Outbox asks GET /state/outbox.
func (c *Client) Outbox(ctx context.Context, limit int, fn func(OutboxEntry) error) error {
	u := c.url("outbox")
	if limit > 0 {
		u += "?limit=" + strconv.Itoa(limit)
	}
	return lines(ctx, c, u, fn)
}

// Rebaseline sends POST /state/rebaseline/{source}.
func (c *Client) Rebaseline(ctx context.Context, source string) error {
	resp, err := c.do(ctx, http.MethodPost, c.url("rebaseline", source))
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// Compile-time checks that both implement Reader.
var (
	_ Reader = (*View)(nil)
	_ Reader = (*Client)(nil)
)
