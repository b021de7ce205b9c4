package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// runCLI runs a command line that ends by itself and returns what it printed and the
// status main would exit with.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(t.Context(), args, &out, &errOut)
	code, report := exitStatus(err)
	if report {
		fmt.Fprintln(&errOut, "watcher:", err)
	}
	return out.String(), errOut.String(), code
}

func TestHelpGoesToStdoutAndExitsZero(t *testing.T) {
	for _, args := range [][]string{
		{"-h"}, {"--help"}, {"-help"}, {"help"},
		{"help", "tail"}, {"help", "state"},
		{"run", "-h"}, {"run", "--help"}, {"run", "--config", "x.yaml", "-help"},
		{"config", "-h"}, {"config", "check", "--help"},
		{"state", "-h"}, {"state", "--help"}, {"state", "help"}, {"state", "sources", "-h"}, {"state", "get", "cpn", "--help"},
		{"sim", "--help"}, {"sim", "-h"},
		{"tail", "-h"}, {"tail", "--state", "failed", "--help"},
		{"demo", "-h"}, {"bench", "--help"}, {"version", "-h"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			out, errOut, code := runCLI(t, args...)
			if code != 0 {
				t.Errorf("exit %d, want 0; stderr:\n%s", code, errOut)
			}
			if errOut != "" {
				t.Errorf("stderr %q, want nothing", errOut)
			}
			if !strings.Contains(out, "Usage") {
				t.Errorf("stdout lacks the usage:\n%s", out)
			}
		})
	}
}

func TestHelpOfACommandIsItsOwn(t *testing.T) {
	for _, c := range []struct {
		args []string
		says []string
	}{
		{[]string{"tail", "-h"}, []string{"watcher tail", "-tls-ca", "-token-file", "$NATS_URL", "-config"}},
		{[]string{"help", "tail"}, []string{"watcher tail", "-tls-ca"}},
		{[]string{"sim", "--help"}, []string{"--quirk PROVIDER:NAME[=VALUE]", "-hawk-query"}},
		{[]string{"run", "-h"}, []string{"watcher run", "-log-level"}},
		{[]string{"state", "-h"}, []string{"watcher state sources"}},
		{[]string{"config", "-h"}, []string{"watcher config check"}},
	} {
		out, _, _ := runCLI(t, c.args...)
		for _, s := range c.says {
			if !strings.Contains(out, s) {
				t.Errorf("%q: usage lacks %q:\n%s", c.args, s, out)
			}
		}
	}
}

func TestVersionFlagAnywhere(t *testing.T) {
	for _, args := range [][]string{
		{"version"}, {"--version"}, {"-version"},
		{"run", "--version"}, {"run", "-version"}, {"tail", "--version"}, {"sim", "--version"},
		{"config", "check", "--version"}, {"state", "--version"}, {"state", "sources", "--version"},
		{"bench", "--version"}, {"demo", "--version"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			out, errOut, code := runCLI(t, args...)
			if code != 0 || errOut != "" {
				t.Errorf("exit %d, stderr %q; want 0 and nothing", code, errOut)
			}
			want := "watcher " + version + " (commit " + buildCommit() + ", "
			if !strings.HasPrefix(out, want) || strings.Count(out, "\n") != 1 {
				t.Errorf("stdout %q, want one line starting %q", out, want)
			}
		})
	}
}

func TestUsageErrorsExitTwoOnStderr(t *testing.T) {
	for _, c := range []struct {
		args []string
		says string
	}{
		{nil, "Usage:"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"--bogus"}, `unknown command "--bogus"`},
		{[]string{"run", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"run", "extra"}, `unexpected argument "extra"`},
		{[]string{"config"}, "missing subcommand"},
		{[]string{"config", "lint"}, `unknown subcommand "lint"`},
		{[]string{"config", "check", "--bogus"}, "flag provided but not defined"},
		{[]string{"tail", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"tail", "--since", "yesterday"}, `invalid value "yesterday" for flag -since`},
		{[]string{"tail", "extra"}, `unexpected argument "extra"`},
		{[]string{"sim", "--rate", "fast"}, "invalid value"},
		{[]string{"state"}, "missing subcommand"},
		{[]string{"state", "frob"}, `unknown subcommand "frob"`},
		{[]string{"state", "sources", "--bogus"}, "flag provided but not defined"},
		{[]string{"state", "get", "cpn"}, "want 2 argument(s), got 1"},
		{[]string{"bench", "--pages", "many"}, "invalid value"},
		{[]string{"version", "extra"}, `unexpected argument "extra"`},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			out, errOut, code := runCLI(t, c.args...)
			if code != 2 {
				t.Errorf("exit %d, want 2; stderr:\n%s", code, errOut)
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing", out)
			}
			if !strings.Contains(errOut, c.says) || !strings.Contains(errOut, "Usage") {
				t.Errorf("stderr does not say %q and show the usage:\n%s", c.says, errOut)
			}
			if strings.Count(errOut, c.says) > 1 {
				t.Errorf("stderr says %q more than once:\n%s", c.says, errOut)
			}
		})
	}
}

func TestExitOneForFailuresWhileRunning(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.yaml")
	for _, args := range [][]string{
		{"config", "check", "--config", missing},
		{"run", "--config", missing},
		{"tail", "--all", "--since", "1h"},
		{"tail", "--nats", "nats://127.0.0.1:1"},
	} {
		out, errOut, code := runCLI(t, args...)
		if code != 1 || out != "" || !strings.HasPrefix(errOut, "watcher: ") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 1 and the error on stderr", args, code, out, errOut)
		}
	}
}

func TestExitStatus(t *testing.T) {
	for _, c := range []struct {
		err    error
		code   int
		report bool
	}{
		{nil, 0, false},
		{flag.ErrHelp, 0, false},
		{errVersionShown, 0, false},
		{commandLineError{errors.New("flag provided but not defined: -x")}, 2, false},
		{fmt.Errorf("state: %w", commandLineError{errors.New("bad")}), 2, false},
		{errors.New("config: open watcher.yaml: no such file or directory"), 1, true},
		{fmt.Errorf("tail: %w", errors.New("connection refused")), 1, true},
	} {
		code, report := exitStatus(c.err)
		if code != c.code || report != c.report {
			t.Errorf("exitStatus(%v) = %d, %t; want %d, %t", c.err, code, report, c.code, c.report)
		}
	}
}

// The usage of `watcher -h` lists every command with the flags it documents.
func TestUsageListsCommands(t *testing.T) {
	for _, s := range []string{
		"watcher sim [--listen 127.0.0.1:8089] [--scenario FILE] [--truth FILE] [--quirk PROVIDER:NAME[=VALUE]] [--hawk-query either|query|path]",
		"watcher tail [--nats URL | --config FILE]",
		"watcher probe", "watcher healthcheck", "watcher state", "watcher config check", "watcher version",
	} {
		if !strings.Contains(usage, s) {
			t.Errorf("usage lacks %q", s)
		}
	}
}
