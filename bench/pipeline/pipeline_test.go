package pipeline

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/payments-watcher/watcher/diff"
	"github.com/payments-watcher/watcher/poller/provider"
	"github.com/payments-watcher/watcher/publish"
)

// tiny is a run of every step small enough for a test: what it checks holds at any
// scale (every event delivered, every item tracked, nothing left in an outbox), never
// how fast.
func tiny(t *testing.T) Options {
	return Options{
		Dir: t.TempDir(), PageSize: 10, Pages: 3, Messages: 50, Repeat: 2,
		Scales: []int{50, 200}, Open: 20, IdleCycles: 2, Seed: 7,
	}
}

func TestRun(t *testing.T) {
	o := tiny(t)
	r, err := Run(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	items := o.Pages * o.PageSize
	if f := r.RawPublish; f.Transitions != o.Messages || f.Wall <= 0 {
		t.Errorf("raw JetStream: %+v, want %d messages", f, o.Messages)
	}
	for mix, want := range map[int]int{AllChanged: items, TenthChanged: items / 10} {
		for name, f := range map[string]Figures{"raw bbolt": r.RawBolt[mix], "minimal loop": r.Minimal[mix], "pipeline": r.Pipeline[mix]} {
			if f.Items != items || f.Transitions != want || f.Wall <= 0 || f.PeakHeap == 0 {
				t.Errorf("%s, %s: %+v; want %d items, %d transitions", name, MixName(mix), f, items, want)
			}
		}
		if c := r.RawBolt[mix].Commits; c != o.Pages {
			t.Errorf("raw bbolt, %s: %d commits, want one per page (%d)", MixName(mix), c, o.Pages)
		}
		if r.Ratio(mix) <= 0 {
			t.Errorf("%s: no ratio to the minimal loop", MixName(mix))
		}
	}
	if r.EventBytes < 500 {
		t.Errorf("events of %d bytes: not the size of watcher's", r.EventBytes)
	}
	if len(r.Scales) != len(o.Scales) {
		t.Fatalf("%d scale runs, want %d", len(r.Scales), len(o.Scales))
	}
	for i, sc := range r.Scales {
		// The simulator's history spans a little less than the lookback, so watcher
		// tracks every item it holds.
		if sc.Target != o.Scales[i] || sc.Tracked != o.Scales[i] {
			t.Errorf("scale %d: tracked %d items", o.Scales[i], sc.Tracked)
		}
		if sc.Open == 0 || sc.Open > sc.Tracked {
			t.Errorf("scale %d: %d open items", o.Scales[i], sc.Open)
		}
		if sc.FileSize == 0 || sc.Baseline.Items != sc.Tracked || sc.Baseline.Wall <= 0 {
			t.Errorf("scale %d: baseline %+v, file %d bytes", o.Scales[i], sc.Baseline, sc.FileSize)
		}
		// An idle cycle reads one page per source: the newest, down to the high-water
		// mark, and nothing is due. Coindirect documents no page limit, so until its
		// server has served a full page (a history shorter than one page never does)
		// a short page is followed by the empty page that proves the list's end.
		perCycle := len(scaleSources)
		if sc.IdleCycles != o.IdleCycles || (sc.IdleRequests != o.IdleCycles*perCycle && sc.IdleRequests != o.IdleCycles*(perCycle+1)) {
			t.Errorf("scale %d: %d requests in %d idle cycles, want one per source per cycle (two for coindirect)", o.Scales[i], sc.IdleRequests, sc.IdleCycles)
		}
	}

	md := r.Markdown("watcher bench -test")
	for _, want := range []string{
		"2 interleaved runs", "JetStream: 50 async publishes", "bbolt: a transaction per page, every item changed",
		"bbolt: a transaction per page, 10% changed", "minimal loop, every item changed", "minimal loop, 10% changed",
		"pipeline, every item changed", "pipeline, 10% changed", "of the minimal loop", "CPU s / 1,000 items", "peak RSS",
		"Go heap in use", "bytes / tracked item", "idle cycle CPU", "| 50 (", "| 200 (", "baseline of 200 items under",
		"state file under 200 bytes per tracked item", "idle cycle CPU flat across scales", "`sync_interval`",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

func TestOptionsAreChecked(t *testing.T) {
	o := tiny(t)
	o.Pages, o.Scales, o.Dir = 0, []int{3}, ""
	_, err := Run(t.Context(), o)
	if err == nil {
		t.Fatal("Run accepted bad options")
	}
	for _, want := range []string{"dir: empty", "pages 0", "scale 3"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
}

func TestItemRounds(t *testing.T) {
	s := newItemSet(1, 25, time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC))
	before := make([]diff.Status, len(s.status))
	copy(before, s.status)
	pages, changed := s.next(10, 10, 3)
	if len(pages) != 3 || len(pages[2]) != 5 || changed != 3 { // items 3, 13, 23
		t.Fatalf("round of 25 items, pages of 10, every tenth: %d pages, %d changed", len(pages), changed)
	}
	for i := range s.status {
		if moved := s.status[i] != before[i]; moved != (i%10 == 3) {
			t.Errorf("item %d moved: %t", i, moved)
		}
	}
	if it := pages[1][3]; it.ID != s.ids[13] || it.Status != statusProcessing || len(it.Raw) == 0 || it.Amount == nil {
		t.Errorf("item 13 as served: %+v", it)
	}
	if _, changed = s.next(10, 1, 0); changed != 25 {
		t.Errorf("every item: %d changed", changed)
	}

	src := &pagedSource{}
	src.set(pages)
	ctx := context.Background()
	p, err := src.Page(ctx, provider.Request{})
	if err != nil || p.Next != "1" || len(p.Items) != 10 {
		t.Fatalf("first page: %+v, %v", p, err)
	}
	if p, err = src.Page(ctx, provider.Request{Cursor: "2"}); err != nil || p.Next != "" || len(p.Items) != 5 {
		t.Fatalf("last page: next %q, %d items, %v", p.Next, len(p.Items), err)
	}
	if _, err := src.Page(ctx, provider.Request{Cursor: "3"}); err == nil {
		t.Error("a cursor past the last page was accepted")
	}
}

// BenchmarkPipeline runs watcher's pipeline (poller, state file with fsync, publisher
// and the embedded NATS server, as Run's step 2) over 20 pages of 100 items per
// iteration, with every item or a tenth of them changing.
func BenchmarkPipeline(b *testing.B) {
	for mix := range numMixes {
		b.Run(strings.ReplaceAll(MixName(mix), " ", "-"), func(b *testing.B) {
			ncfg, err := daemonNATS()
			if err != nil {
				b.Fatal(err)
			}
			emb := ncfg.Embedded
			emb.Listen, emb.StoreDir = "127.0.0.1:0", b.TempDir()
			srv, err := publish.StartEmbedded(emb, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
			nc, err := publish.Connect(srv.ClientURL(), ncfg, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				b.Fatal(err)
			}
			const pageSize, pages = 100, 20
			fl, err := startFlow(b.Context(), filepath.Join(b.TempDir(), "watcher.db"), js, withStream(ncfg, "BENCH", "bench"), pageSize, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			defer fl.close()
			items := newItemSet(1, pages*pageSize, time.Now().UTC())
			if _, err := fl.cycle(b.Context(), items.round(pageSize, func(i int) diff.Status { return items.status[i] }), 0); err != nil {
				b.Fatal(err)
			}
			transitions := 0
			for round := 0; b.Loop(); round++ {
				b.StopTimer()
				pg, want := items.next(pageSize, every[mix], round)
				b.StartTimer()
				if _, err := fl.cycle(b.Context(), pg, want); err != nil {
					b.Fatal(err)
				}
				transitions += want
			}
			b.ReportMetric(float64(transitions)/b.Elapsed().Seconds(), "transitions/s")
			b.ReportMetric(float64(b.N*pages*pageSize)/b.Elapsed().Seconds(), "items/s")
		})
	}
}

func TestBurst(t *testing.T) {
	r, err := RunBurst(t.Context(), BurstOptions{Dir: t.TempDir(), Items: 3000, PageSize: 500, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if r.Retained != 3000 || r.RetainedBytes <= 0 || r.RetainedBytes > r.NATS.RetainAckedMaxBytes || r.Capped != 0 {
		t.Errorf("retained %d events, %d bytes, %d capped; want all 3000 within %d bytes", r.Retained, r.RetainedBytes, r.Capped, r.NATS.RetainAckedMaxBytes)
	}
	if r.Compacted > r.Burst || r.SnapshotOnly >= r.Compacted {
		t.Errorf("files: burst %d, compacted %d, snapshot only %d; want each smaller", r.Burst, r.Compacted, r.SnapshotOnly)
	}
	if r.AgedOut < r.Burst || r.AgedOutFree <= r.BurstFree {
		t.Errorf("uncompacted file once the retained events aged out: %d bytes, %d free; want at least the burst's %d, more free than its %d",
			r.AgedOut, r.AgedOutFree, r.Burst, r.BurstFree)
	}
	if r.NATS.MaxOutbox <= 0 || r.NATS.OutboxPace <= 0 || r.PeakOutbox <= 0 || r.PeakOutbox > r.Items {
		t.Errorf("max_outbox %d, outbox_pace %d, largest outbox seen %d: want the daemon's limits and a count the poller read",
			r.NATS.MaxOutbox, r.NATS.OutboxPace, r.PeakOutbox)
	}
	if md := r.Markdown("watcher bench -burst 3000"); !strings.Contains(md, "snapshot only") {
		t.Errorf("markdown:\n%s", md)
	}
}
