package pipeline

import (
	"bufio"
	"bytes"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Figures are what one measured phase cost.
type Figures struct {
	// Items are the items the phase handled, Transitions the events it produced and
	// delivered (acknowledged by JetStream, or committed where nothing publishes).
	Items, Transitions int
	// Commits counts the write transactions of a raw measurement; 0 elsewhere.
	Commits int
	Wall    time.Duration
	// CPU is the process's CPU time (user + system) during the phase: every goroutine,
	// the in-process NATS server and simulator included.
	CPU time.Duration
	// PeakRSS is the process's resident set high-water mark during the phase (0 when
	// the system cannot reset and read it); PeakHeap the largest Go heap in use sampled
	// during it (spans holding objects, as runtime.MemStats.HeapInuse).
	PeakRSS, PeakHeap uint64
}

// ItemsPerSec returns Items / Wall.
func (f Figures) ItemsPerSec() float64 { return per(f.Items, f.Wall) }

// TransitionsPerSec returns Transitions / Wall.
func (f Figures) TransitionsPerSec() float64 { return per(f.Transitions, f.Wall) }

// CommitsPerSec returns Commits / Wall.
func (f Figures) CommitsPerSec() float64 { return per(f.Commits, f.Wall) }

// CPUPer1000 returns the CPU seconds spent per 1,000 items; 0 without items.
func (f Figures) CPUPer1000() float64 {
	if f.Items == 0 {
		return 0
	}
	return f.CPU.Seconds() * 1000 / float64(f.Items)
}

func per(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// cpuTime returns the CPU time (user + system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// meter measures one phase: wall and CPU time between start and stop, the peak Go
// heap in use sampled every few milliseconds, and the resident set high-water mark.
type meter struct {
	began    time.Time
	cpu      time.Duration
	stop     chan struct{}
	done     sync.WaitGroup
	mu       sync.Mutex
	peakHeap uint64
	rssReset bool
}

// heapSamples read the heap in use: objects plus the unused part of their spans.
var heapSamples = []metrics.Sample{
	{Name: "/memory/classes/heap/objects:bytes"},
	{Name: "/memory/classes/heap/unused:bytes"},
}

func heapInUse(s []metrics.Sample) uint64 {
	metrics.Read(s)
	var n uint64
	for _, v := range s {
		if v.Value.Kind() == metrics.KindUint64 {
			n += v.Value.Uint64()
		}
	}
	return n
}

// startMeter collects garbage (so that a phase does not pay for its predecessor's),
// resets the resident set high-water mark and starts measuring.
func startMeter() *meter {
	runtime.GC()
	m := &meter{stop: make(chan struct{}), rssReset: resetPeakRSS()}
	samples := make([]metrics.Sample, len(heapSamples))
	copy(samples, heapSamples)
	m.peakHeap = heapInUse(samples)
	m.done.Go(func() {
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
			h := heapInUse(samples)
			m.mu.Lock()
			m.peakHeap = max(m.peakHeap, h)
			m.mu.Unlock()
		}
	})
	m.began, m.cpu = time.Now(), cpuTime()
	return m
}

// finish stops measuring and fills the time and memory fields of f.
func (m *meter) finish(f *Figures) {
	f.Wall, f.CPU = time.Since(m.began), cpuTime()-m.cpu
	close(m.stop)
	m.done.Wait()
	final := make([]metrics.Sample, len(heapSamples))
	copy(final, heapSamples)
	m.mu.Lock()
	f.PeakHeap = max(m.peakHeap, heapInUse(final))
	m.mu.Unlock()
	if m.rssReset {
		f.PeakRSS = peakRSS()
	}
}

// resetPeakRSS resets the kernel's resident set high-water mark of the process
// (Linux: "5" to /proc/self/clear_refs); false when that is not possible.
func resetPeakRSS() bool {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil && peakRSS() > 0
}

// peakRSS returns the resident set high-water mark (VmHWM) of the process in bytes,
// 0 when it cannot be read.
func peakRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("VmHWM:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0
		}
		kb, err := strconv.ParseUint(string(f[0]), 10, 64)
		if err != nil {
			return 0
		}
		return kb * 1024
	}
	return 0
}
