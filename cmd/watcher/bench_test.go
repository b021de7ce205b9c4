package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"testing"
)

// benchSimEnv makes TestHelperBenchSim run `watcher sim` with the arguments after
// "--": the simulator process of TestBenchCommand.
const benchSimEnv = "WATCHER_TEST_BENCH_SIM"

// TestHelperBenchSim does nothing unless benchSimEnv is set.
func TestHelperBenchSim(t *testing.T) {
	if os.Getenv(benchSimEnv) == "" {
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, append([]string{"sim"}, flag.Args()...), os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "simulator:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// TestBenchCommand runs `watcher bench` at a tiny scale, the simulator in a process of
// its own as by default, and checks that the report has every figure and lands in the
// -out file; how fast anything went is not checked.
func TestBenchCommand(t *testing.T) {
	t.Setenv(benchSimEnv, "1")
	saved := benchSimCommand
	benchSimCommand = func() ([]string, error) {
		return []string{os.Args[0], "-test.run=^TestHelperBenchSim$", "--"}, nil
	}
	t.Cleanup(func() { benchSimCommand = saved })

	out := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	if err := os.WriteFile(out, []byte("# Benchmarks\n\nkept\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"bench", "-pages", "2", "-page-size", "10", "-messages", "20", "-repeat", "1",
		"-scales", "50,100", "-open", "10", "-idle-cycles", "1", "-dir", t.TempDir(), "-out", out, "-section", "pipeline"}
	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), args, &stdout, &stderr); err != nil {
		t.Fatalf("watcher bench: %v\n%s", err, stderr.String())
	}
	report := stdout.String()
	for _, want := range []string{
		"CPUs (nproc)", "watcher bench -pages 2", "JetStream: 20 async publishes", "bbolt: a transaction per page",
		"minimal loop, every item changed", "minimal loop, 10% changed", "pipeline, every item changed",
		"pipeline, 10% changed", "of the minimal loop", "items/s", "transitions/s", "CPU s / 1,000 items",
		"peak RSS", "Go heap in use", "state file", "bytes / tracked item", "idle cycle CPU", "| 50 (", "| 100 (",
		"baseline of 100 items under", "idle cycle CPU flat across scales", "simulator in a process of its own",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	doc, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	begin, end := benchMarkers("pipeline")
	if !strings.HasPrefix(string(doc), "# Benchmarks\n\nkept\n") || !strings.Contains(string(doc), begin+"\n\n"+report) ||
		!strings.Contains(string(doc), end) {
		t.Errorf("-out file:\n%s", doc)
	}

	// A second run replaces the section instead of appending another.
	if err := run(t.Context(), append(args[:len(args)-4], "-scales", "", "-skip-raw", "-out", out), &stdout, &stderr); err != nil {
		t.Fatalf("second run: %v\n%s", err, stderr.String())
	}
	if doc, _ = os.ReadFile(out); strings.Count(string(doc), begin) != 1 || strings.Contains(string(doc), "| 50 (") {
		t.Errorf("-out file after a second run:\n%s", doc)
	}
}

func TestBenchCommandRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "-scales", "10,x"},
		{"bench", "-pages", "0", "-scales", ""},
		{"bench", "extra"},
	} {
		var stdout, stderr bytes.Buffer
		err := run(t.Context(), args, &stdout, &stderr)
		if err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}
