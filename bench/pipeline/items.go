package pipeline

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/shopspring/decimal"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller/provider"
)

// The pipeline measurements feed the poller CPN-like payments built in memory: what
// an adapter returns after parsing a page, so that no HTTP and no parsing is measured.
var (
	statusPending    = diff.Status{Raw: "CRYPTO_FUNDS_PENDING", State: diff.Pending}
	statusProcessing = diff.Status{Raw: "FIAT_PAYMENT_INITIATED", State: diff.Processing}
)

// itemSet is a source's items, newest first, and the status each has now.
type itemSet struct {
	ids     []string
	created []time.Time
	status  []diff.Status
}

// next moves the items every-th apart (every item for 1), starting at the round's
// offset, to their other open status, and returns the pages of every item in its
// status now and how many changed: each round changes the same share of items.
func (s *itemSet) next(pageSize, every, round int) ([][]diff.Item, int) {
	changed := 0
	for i := round % every; i < len(s.status); i += every {
		if s.status[i] == statusProcessing {
			s.status[i] = statusPending
		} else {
			s.status[i] = statusProcessing
		}
		changed++
	}
	return s.round(pageSize, func(i int) diff.Status { return s.status[i] }), changed
}

// newItemSet makes n item ids (random UUIDs, as Circle's) created one every few
// minutes before now, newest first.
func newItemSet(seed uint64, n int, now time.Time) *itemSet {
	r := rand.New(rand.NewPCG(seed, 0x17e5))
	s := &itemSet{ids: make([]string, n), created: make([]time.Time, n), status: make([]diff.Status, n)}
	for i := range n {
		s.ids[i] = uuid(r)
		s.created[i] = now.Add(-time.Duration(i+1) * 3 * time.Minute).Truncate(time.Second)
		s.status[i] = statusPending
	}
	return s
}

func uuid(r *rand.Rand) string {
	a, b := r.Uint64(), r.Uint64()
	a = a&^(0xf<<12) | 0x4<<12 // version 4
	b = b&^(0x3<<62) | 0x2<<62 // variant 10
	return fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", a>>32, a>>16&0xffff, a&0xffff, b>>48, b&0xffffffffffff)
}

// page returns the items [from, to) in the status status(i) gives item i, each with a
// provider object as an adapter keeps it (Raw, refs, amount).
func (s *itemSet) page(from, to int, status func(i int) diff.Status) []diff.Item {
	items := make([]diff.Item, 0, to-from)
	for i := from; i < to; i++ {
		st := status(i)
		amount := decimal.New(int64(1000+i%100000), -2)
		ref := "ref-" + strconv.Itoa(i)
		items = append(items, diff.Item{
			Kind: "payment", ID: s.ids[i], Status: st, CreatedAt: s.created[i],
			Amount: &diff.Money{Value: amount, Currency: "USDC"},
			Refs:   map[string]string{"customer_ref_id": ref, "quote_id": ref},
			Raw:    rawPayment(s.ids[i], st.Raw, s.created[i], amount.StringFixed(6), ref),
		})
	}
	return items
}

// rawPayment renders a CPN payment as the adapter passes it on (about 800 bytes).
func rawPayment(id, status string, created time.Time, amount, ref string) []byte {
	c := created.Format(time.RFC3339)
	return fmt.Appendf(nil, `{"type":"payment","id":%q,"quoteId":%q,"paymentMethodType":"SPEI","blockchain":"ETH",`+
		`"senderAddress":"0xe01be9cdd9e744ae6a709794bfe531ec3ec0671c","refCode":%q,"customerRefId":%q,"expireDate":%q,`+
		`"createDate":%q,"status":%q,"useCase":"B2B","reasonForPayment":"PMT001","sourceAmount":{"amount":%q,"currency":"USDC"},`+
		`"destinationAmount":{"amount":"183.24","currency":"MXN"},"fees":{"breakdown":[{"amount":{"amount":"0.240000","currency":"USDC"},`+
		`"type":"BFI_TRANSACTION_FEE"}],"totalAmount":{"amount":%q,"currency":"USDC"}},`+
		`"refundAddress":"0x7d9f3f9c2b7e4c0a5a9f3e8b4d2c1a0f5e6d7c8b","beneficiaryRefId":%q,`+
		`"fiatSettlementTime":{"max":"3","min":"1","unit":"DAYS"},"refunds":[],"metadata":{}}`,
		id, ref, ref, ref, c, c, status, amount, amount, ref)
}

// pagedSource serves pre-built pages, newest first, as a provider.Source: the cursor
// is the index of the next page. Set swaps in another round of pages.
type pagedSource struct {
	mu    sync.Mutex
	pages [][]diff.Item
}

func (s *pagedSource) set(pages [][]diff.Item) {
	s.mu.Lock()
	s.pages = pages
	s.mu.Unlock()
}

func (s *pagedSource) Page(_ context.Context, req provider.Request) (provider.Page, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := 0
	if req.Cursor != "" {
		var err error
		if i, err = strconv.Atoi(req.Cursor); err != nil || i < 0 || i >= len(s.pages) {
			return provider.Page{}, fmt.Errorf("bad cursor %q", req.Cursor)
		}
	}
	if len(s.pages) == 0 {
		return provider.Page{}, nil
	}
	p := provider.Page{Items: s.pages[i]}
	if i+1 < len(s.pages) {
		p.Next = strconv.Itoa(i + 1)
	}
	return p, nil
}

// round builds the pages of every item of s, pageSize items a page, in the statuses
// status gives.
func (s *itemSet) round(pageSize int, status func(i int) diff.Status) [][]diff.Item {
	var pages [][]diff.Item
	for from := 0; from < len(s.ids); from += pageSize {
		pages = append(pages, s.page(from, min(from+pageSize, len(s.ids)), status))
	}
	return pages
}
