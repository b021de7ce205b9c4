// Command watcher turns payment providers' list endpoints into a stream of
// status-transition events on NATS JetStream.
//
// Usage:
//
//	watcher demo                           embedded NATS + provider simulator + watcher, printing every event
//	watcher run --config watcher.yaml      poll the configured sources and publish events
//	watcher config check --config FILE     validate a file and print the effective config (secrets redacted)
//	watcher probe --config FILE [SOURCE…]  check live provider accounts against the adapters' assumptions (read-only)
//	watcher tail [--config FILE] …         print the event stream, connecting as the daemon does
//	watcher sim --listen ADDR              serve the simulated provider APIs
//	watcher state sources|get|open|…       inspect the state file, or ask the running watcher
//	watcher bench                          measure watcher's cost beside bbolt's and JetStream's limits
//	watcher healthcheck [--url URL]        exit 0 when watcher's HTTP endpoint answers 200 (container health checks)
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
	"syscall"

	"github.com/payments-watcher/watcher/config"
)

// version and commit are set at build time with
// -ldflags "-X main.version=… -X main.commit=…"; commit "" falls back to Go's VCS
// stamp (buildCommit).
var version = "dev"

var commit = ""

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	code, report := exitStatus(err)
	if report {
		fmt.Fprintln(os.Stderr, "watcher:", err)
	}
	os.Exit(code)
}

const usage = `watcher turns payment providers' list endpoints into status-transition events on NATS JetStream.

Usage:
  watcher demo                         embedded NATS + provider simulator + watcher, printing every event
  watcher run --config FILE            poll the configured sources and publish events
  watcher config check --config FILE   validate FILE and print the effective configuration (secrets redacted)
  watcher probe --config FILE [SOURCE...] [--json]
                                       check each source's live account before polling it (read-only, exit 1 on a failed check)
  watcher tail [--nats URL | --config FILE] [--source S] [--state failed] [--since 1h | --all] [--json]
                                       print the event stream as it arrives; connects as the daemon does with
                                       --config, else to $NATS_URL; --creds, --token-file, --tls-ca, …: 'watcher tail -h'
  watcher sim [--listen 127.0.0.1:8089] [--scenario FILE] [--truth FILE] [--quirk PROVIDER:NAME[=VALUE]] [--hawk-query either|query|path]
                                       serve the simulated provider APIs
  watcher state sources|get|open|export|outbox|check|rebaseline [--config FILE | --state FILE]
                                       inspect the state file (or ask the running watcher); 'watcher state -h'
  watcher bench [-out BENCHMARKS.md]   measure watcher's own cost beside bbolt's and JetStream's on this machine
  watcher healthcheck [--url URL]      exit 0 when URL (default http://127.0.0.1:9464/healthz) answers 200
  watcher version                      print version, commit and Go version (also --version, after any command)

Run 'watcher COMMAND -h' or 'watcher help COMMAND' for the flags of a command. Exit status: 0 on success
and for -h and --version, 1 when a command fails, 2 for a bad command line.
`

// run dispatches a command line; ctx is cancelled on SIGINT/SIGTERM. Help (-h, --help
// or help, before or after a command) goes to stdout and returns flag.ErrHelp;
// --version prints the version line and returns errVersionShown; a bad command line
// is reported on stderr with the usage and returned as an error matching
// flag.ErrHelp. exitStatus maps the result to main's exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return commandLineError{errors.New("no command given")}
	}
	switch args[0] {
	case "run":
		return runCommand(ctx, args[1:], stdout, stderr)
	case "config":
		return configCommand(args[1:], stdout, stderr)
	case "probe":
		return probeCommand(ctx, args[1:], stdout, stderr)
	case "demo":
		return demoCommand(ctx, args[1:], stdout, stderr)
	case "sim":
		return simCommand(ctx, args[1:], stdout, stderr)
	case "tail":
		return tailCommand(ctx, args[1:], stdout, stderr)
	case "state":
		return stateCommand(ctx, args[1:], stdout, stderr)
	case "bench":
		return benchCommand(ctx, args[1:], stdout, stderr)
	case "healthcheck":
		return healthcheckCommand(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-version":
		return versionCommand(args[1:], stdout, stderr)
	case "help", "-h", "--help", "-help":
		if len(args) > 1 && isCommand(args[1]) {
			return run(ctx, []string{args[1], "-h"}, stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
		return flag.ErrHelp
	default:
		return badCommandLine(stderr, usage, fmt.Errorf("unknown command %q", args[0]))
	}
}

// isCommand reports whether name is a command that 'watcher help name' describes with
// the command's own usage.
func isCommand(name string) bool {
	switch name {
	case "run", "config", "probe", "demo", "sim", "tail", "state", "bench", "healthcheck":
		return true
	}
	return false
}

// versionCommand prints the version line; its only flags are -h and --version.
func versionCommand(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("watcher version", flag.ContinueOnError)
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return badCommandLine(stderr, "Usage: watcher version\n", fmt.Errorf("version: unexpected argument %q", fs.Arg(0)))
	}
	printVersion(stdout)
	return nil
}

const configUsage = `Usage: watcher config check [--config FILE]

Validates FILE (default watcher.yaml) and prints the effective configuration, secrets
redacted, with the defaults filled in. Exit status 1 when FILE is not valid.
`

// configCommand runs `watcher config SUBCOMMAND`; check is the only subcommand.
func configCommand(args []string, stdout, stderr io.Writer) error {
	switch {
	case len(args) > 0 && args[0] == "check":
		return configCheck(args[1:], stdout, stderr)
	case len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help"):
		fmt.Fprint(stdout, configUsage)
		return flag.ErrHelp
	case len(args) == 0:
		return badCommandLine(stderr, configUsage, errors.New("config: missing subcommand (want: watcher config check --config FILE)"))
	}
	return badCommandLine(stderr, configUsage, fmt.Errorf("config: unknown subcommand %q (want: watcher config check --config FILE)", args[0]))
}

func runCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("watcher run", flag.ContinueOnError)
	path := fs.String("config", "watcher.yaml", "configuration `file`")
	format := fs.String("log-format", "text", "log format: text or json")
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return badCommandLine(stderr, "Usage: watcher run [--config FILE] [--log-format text|json] [--log-level LEVEL]\n", fmt.Errorf("run: unexpected argument %q", fs.Arg(0)))
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
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), configUsage+"\nFlags:\n")
		fs.PrintDefaults()
	}
	path := fs.String("config", "watcher.yaml", "configuration `file`")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
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
	fmt.Fprintf(w, "watcher %s (commit %s, %s %s/%s)\n", version, buildCommit(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
