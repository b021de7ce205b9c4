package providertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller/provider"
)

// The suite runs here against a minimal offset-paged provider, unlike any real one, to
// show that it assumes nothing provider-specific.

type toyItem struct {
	ID      string `json:"id"`
	Status  string `json:"status"`
	Created int64  `json:"created"` // unix seconds
}

var toyStatus = diff.Mapping{"open": {State: diff.Pending}, "done": {State: diff.Completed, Terminal: true}}

// toySource lists GET /items?offset=N&limit=L answered {"items":[...],"more":bool}.
type toySource struct {
	base, key string
	limit     int
	client    provider.Client
}

func (s *toySource) fetch(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.key)
	body, _, err := s.client.Do(ctx, req, nil)
	if err != nil {
		var se *provider.StatusError
		if errors.As(err, &se) && se.Code == http.StatusNotFound {
			return fmt.Errorf("%w: %w", provider.ErrNotFound, err)
		}
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return &provider.MalformedError{Err: err}
	}
	return nil
}

func (s *toySource) item(t toyItem) diff.Item {
	st, _ := toyStatus.Status(t.Status, "")
	raw, _ := json.Marshal(t)
	return diff.Item{Kind: "toy", ID: t.ID, Status: st, CreatedAt: time.Unix(t.Created, 0).UTC(), Raw: raw}
}

func (s *toySource) Page(ctx context.Context, req provider.Request) (provider.Page, error) {
	offset := 0
	if req.Cursor != "" {
		offset, _ = strconv.Atoi(req.Cursor)
	}
	var resp struct {
		Items *[]toyItem `json:"items"`
		More  bool       `json:"more"`
	}
	if err := s.fetch(ctx, fmt.Sprintf("/items?offset=%d&limit=%d", offset, s.limit), &resp); err != nil {
		return provider.Page{}, err
	}
	if resp.Items == nil {
		return provider.Page{}, &provider.MalformedError{Err: errors.New("no items")}
	}
	var p provider.Page
	for _, t := range *resp.Items {
		p.Items = append(p.Items, s.item(t))
	}
	if resp.More {
		p.Next = strconv.Itoa(offset + len(*resp.Items))
	}
	return p, nil
}

func (s *toySource) Get(ctx context.Context, id string) (diff.Item, error) {
	var t toyItem
	if err := s.fetch(ctx, "/items/"+id, &t); err != nil {
		return diff.Item{}, err
	}
	return s.item(t), nil
}

func toyHandler(n int, key string) (http.Handler, []string) {
	items := make([]toyItem, n)
	ids := make([]string, n)
	for i := range items {
		ids[i] = "toy" + strconv.Itoa(i)
		items[i] = toyItem{ID: ids[i], Status: []string{"open", "done"}[i%2], Created: 1_750_000_000 - int64(i)*60}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+key {
			toyError(w, http.StatusUnauthorized)
			return
		}
		if id, ok := strings.CutPrefix(r.URL.Path, "/items/"); ok {
			for _, it := range items {
				if it.ID == id {
					json.NewEncoder(w).Encode(it)
					return
				}
			}
			toyError(w, http.StatusNotFound)
			return
		}
		offset, _ := strconv.Atoi(r.URL.Query().Get("offset"))
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		end := min(offset+limit, len(items))
		offset = min(offset, end)
		json.NewEncoder(w).Encode(map[string]any{"items": items[offset:end], "more": end < len(items)})
	}), ids
}

func toyError(w http.ResponseWriter, code int) {
	w.WriteHeader(code)
	fmt.Fprintf(w, `{"error":%q}`, http.StatusText(code))
}

func TestCheckSourceOnAnOffsetPagedProvider(t *testing.T) {
	CheckSource(t, func(baseURL, key string) provider.Source {
		return &toySource{base: baseURL, key: key, limit: 3}
	}, Fake{
		PageSize:   3,
		Handler:    toyHandler,
		WriteError: toyError,
		Malformed:  []string{`{"more":true}`},
	})
}
