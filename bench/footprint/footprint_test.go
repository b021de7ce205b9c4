package main

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/payments-watcher/watcher/bench/pipeline"
)

// TestSoakAgainstTheCurrentTree runs the whole harness for a few samples: it builds
// the current tree's watcher and nats-server, starts them and the simulator as
// processes of their own, and stops them all.
func TestSoakAgainstTheCurrentTree(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs watcher, the simulator and nats-server")
	}
	dir := t.TempDir()
	md := filepath.Join(dir, "BENCHMARKS.md")
	if err := os.WriteFile(md, []byte("# Benchmarks\n\nhand-written\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	err := mainErr(t.Context(), []string{"-soak", "3s", "-every", "1s", "-rate", "4", "-history", "20", "-dir", dir, "-out", md, "-section", "test"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}

	f, err := os.Open(filepath.Join(dir, "footprint.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := pipeline.ReadSeries(f)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(s.Columns, ",") != strings.Join(columns, ",") || len(s.Rows) < 3 {
		t.Fatalf("footprint.csv: columns %q, %d rows; want %q and at least 3 rows", s.Columns, len(s.Rows), columns)
	}
	for _, row := range s.Rows {
		if !(row[colRSSAnon] > 0) || !(row[colRSSFile] > 0) || !(row[colStateFile] > 0) || !(row[colGoroutines] > 0) || !(row[colHeap] > 0) || !(row[colFDs] > 0) {
			t.Errorf("at %gs: RSS anon %g, file %g, state file %g, goroutines %g, heap %g, fds %g; want all measured and above 0",
				row[colSeconds], row[colRSSAnon], row[colRSSFile], row[colStateFile], row[colGoroutines], row[colHeap], row[colFDs])
		}
		// The current tree exports its free pages.
		if math.IsNaN(row[colFree]) {
			t.Errorf("at %gs: no watcher_state_free_pages_bytes", row[colSeconds])
		}
	}
	first, last := s.Rows[0], s.Rows[len(s.Rows)-1]
	if !(last[colStreamMsgs] > nanZero(first[colStreamMsgs])) {
		t.Errorf("stream messages %g at the start, %g at the end; want growth", first[colStreamMsgs], last[colStreamMsgs])
	}

	svg, err := os.ReadFile(filepath.Join(dir, "footprint.svg"))
	if err != nil || !bytes.Contains(svg, []byte("<polyline")) {
		t.Errorf("footprint.svg: %v, %d bytes without a line", err, len(svg))
	}
	doc, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(doc, []byte("# Benchmarks\n\nhand-written\n")) || !bytes.Contains(doc, []byte("section test: begin")) ||
		!bytes.Contains(doc, []byte("| state file |")) || !bytes.Contains(doc, []byte("`nats.retain_acked` at its default (5m0s)")) {
		t.Errorf("-out file:\n%s", doc)
	}
	if !strings.Contains(stdout.String(), "| at | RSS anon |") {
		t.Errorf("summary on stdout:\n%s", stdout.String())
	}
	cfg, err := os.ReadFile(filepath.Join(dir, "watcher.yaml"))
	if err != nil || bytes.Contains(cfg, []byte("retain_acked")) {
		t.Errorf("the daemon's configuration sets retain_acked or is missing (%v):\n%s", err, cfg)
	}
}

// TestStopsWhatItStarted checks that a run whose daemon does not start leaves no
// process behind and names the failure.
func TestStopsWhatItStarted(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the simulator and nats-server")
	}
	dir := t.TempDir()
	// A "daemon" that answers version and config check but exits at once when run.
	fake := filepath.Join(dir, "fake-watcher")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\n[ \"$1\" = run ] && { echo 'no state for you' >&2; exit 3; }\necho fake 1.0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	r, err := run(t.Context(), options{Soak: time.Second, Every: time.Second, Rate: 1, History: 1, Seed: 1, Watcher: fake, Dir: dir, Label: "fake"})
	if err == nil || !strings.Contains(err.Error(), "watcher") || !strings.Contains(err.Error(), "no state for you") {
		t.Fatalf("err %v; want the daemon's exit and its log", err)
	}
	if r == nil || len(r.PIDs) != 3 {
		t.Fatalf("report %+v; want the three processes started", r)
	}
	for name, pid := range r.PIDs {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s (pid %d) still exists after the run: %v", name, pid, err)
		}
	}
}

func TestFlatnessCheck(t *testing.T) {
	r := &report{Options: options{Every: 10 * time.Second}, RetainAcked: "1m0s"}
	for sec := 0.0; sec <= 300; sec += 10 {
		row := make([]float64, len(columns))
		row[colSeconds] = sec
		row[colStateFile] = 100 + min(sec, 60)           // grows, then flat at 160 from 60s
		row[colRSSAnon], row[colRSSFile] = 50+sec, 10    // grows all along
		row[colGoroutines] = 30 + float64(int(sec/10)%2) // 30, 31, 30, …
		r.Series.Rows = append(r.Series.Rows, row)
	}
	got := map[string]flatness{}
	for _, f := range r.checks() {
		got[f.Name] = f
	}
	if f := got["state file"]; !f.Held || f.At != 90*time.Second || f.Settled != 160 {
		t.Errorf("state file %+v; want held at 160 from 1m30s (retain_acked plus 3 intervals)", f)
	}
	if f := got["RSS (anon + file)"]; f.Held || f.Max != 360 {
		t.Errorf("RSS %+v; want not held, up to 360", f)
	}
	if f := got["goroutines"]; !f.Held {
		t.Errorf("goroutines %+v; want held", f)
	}
	short := &report{Options: r.Options, RetainAcked: "1m0s", Series: pipeline.Series{Rows: r.Series.Rows[:3]}}
	for _, f := range short.checks() {
		if f.Measured || f.Held {
			t.Errorf("%s in a run shorter than the settle point: %+v", f.Name, f)
		}
	}
}

func TestCompareDrawsEachRun(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.csv"), filepath.Join(dir, "b.csv")
	row := make([]float64, len(columns))
	for i := range row {
		row[i] = float64(i + 1)
	}
	s := pipeline.Series{Columns: columns, Rows: [][]float64{row, row}}
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, s.CSV(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	svg := filepath.Join(dir, "both.svg")
	var out bytes.Buffer
	if err := mainErr(t.Context(), []string{"-compare", a + "," + b, "-compare-labels", "new,old", "-svg", svg}, &out, &out); err != nil {
		t.Fatal(err)
	}
	pic, err := os.ReadFile(svg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(pic, []byte(">new:<")) || !bytes.Contains(pic, []byte(">old:<")) {
		t.Errorf("the picture does not name both runs:\n%s", pic)
	}

	// A CSV of other columns is refused, naming the file.
	other := filepath.Join(dir, "other.csv")
	if err := os.WriteFile(other, []byte("seconds,x\n0,1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = mainErr(t.Context(), []string{"-compare", a + "," + other, "-svg", svg}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), other) {
		t.Errorf("err %v; want one naming %s", err, other)
	}
}
