// Command watcher turns payment providers' list endpoints into a stream of
// status-transition events on NATS JetStream.
//
// Usage:
//
//	watcher demo                           embedded NATS + provider simulator + watcher, printing every event
//	watcher run --config watcher.yaml      poll the configured sources and publish events
//	watcher config check --config FILE     validate a file and print the effective config (secrets redacted)
//	watcher probe --config FILE [SOURCE…]  check live provider accounts against the adapters' assumptions (read-only)
//	watcher tail [--state failed] …        print the event stream
//	watcher sim --listen ADDR              serve the simulated provider APIs
//	watcher state sources|get|open|…       inspect the state file, or ask the running watcher
//	watcher bench                          measure watcher's cost beside bbolt's and JetStream's limits
//	watcher version                        print version, commit and Go version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/payments-watcher/watcher/config"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "watcher:", err)
		os.Exit(1)
	}
}

const usage = `watcher turns payment providers' list endpoints into status-transition events on NATS JetStream.

Usage:
  watcher demo                         embedded NATS + provider simulator + watcher, printing every event
  watcher run --config FILE            poll the configured sources and publish events
  watcher config check --config FILE   validate FILE and print the effective configuration (secrets redacted)
  watcher probe --config FILE [SOURCE...] [--json]
                                       check each source's live account before polling it (read-only, exit 1 on a failed check)
  watcher tail [--nats URL] [--source S] [--state failed] [--since 1h | --all] [--json]
                                       print the event stream as it arrives
  watcher sim [--listen 127.0.0.1:8089] [--scenario FILE] [--truth FILE]
                                       serve the simulated provider APIs
  watcher state sources|get|open|export|outbox|check|rebaseline [--config FILE | --state FILE]
                                       inspect the state file (or ask the running watcher); 'watcher state -h'
  watcher bench [-out BENCHMARKS.md]   measure watcher's own cost beside bbolt's and JetStream's on this machine
  watcher version                      print version, commit and Go version

Run 'watcher COMMAND -h' for the flags of a command.
`

// run dispatches a command line; ctx is cancelled on SIGINT/SIGTERM.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "run":
		return runCommand(ctx, args[1:], stderr)
	case "config":
		if len(args) < 2 || args[1] != "check" {
			return fmt.Errorf("config: unknown subcommand %q (want: watcher config check --config FILE)", strings.Join(args[1:], " "))
		}
		return configCheck(args[2:], stdout, stderr)
	case "probe":
		return probeCommand(ctx, args[1:], stdout, stderr)
	case "demo":
		return demoCommand(ctx, args[1:], stdout, stderr)
	case "sim":
		return simCommand(ctx, args[1:], stderr)
	case "tail":
		return tailCommand(ctx, args[1:], stdout, stderr)
	case "state":
		return stateCommand(ctx, args[1:], stdout, stderr)
	case "bench":
		return benchCommand(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-version":
		printVersion(stdout)
		return nil
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}

func runCommand(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("watcher run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "watcher.yaml", "configuration `file`")
	format := fs.String("log-format", "text", "log format: text or json")
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := newLogger(stderr, *format, *level)
	if err != nil {
		return err
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	for _, w := range cfg.Warnings {
		log.Warn("configuration warning", "config", *path, "warning", w)
	}
	return serve(ctx, cfg, log)
}

func configCheck(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("watcher config check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "watcher.yaml", "configuration `file`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	out, err := cfg.Effective()
	if err != nil {
		return err
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintf(stderr, "watcher config check: warning: %s\n", w)
	}
	fmt.Fprintf(stdout, "# %s is valid; effective configuration:\n%s", *path, out)
	return nil
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %q is not one of debug, info, warn, error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format: %q is not text or json", format)
	}
}

func printVersion(w io.Writer) {
	commit := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				commit = s.Value
			}
		}
	}
	fmt.Fprintf(w, "watcher %s (commit %s, %s %s/%s)\n", version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
