package sim

import (
	"runtime"
	"testing"
	"time"
)

// BenchmarkHistoryMillion builds 200,000 history items for each of the five providers
// (a million in all) and reports the heap they keep.
func BenchmarkHistoryMillion(b *testing.B) {
	cfg := Config{Seed: 1, History: 200_000, HistorySpan: 30 * 24 * time.Hour, OpenShare: 0.05, FailureRate: 0.1,
		Now: func() time.Time { return testStart }}
	var before, after runtime.MemStats
	for b.Loop() {
		runtime.GC()
		runtime.ReadMemStats(&before)
		s, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "heap-MB")
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/1e6, "bytes/item")
		runtime.KeepAlive(s)
	}
}
