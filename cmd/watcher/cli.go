package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// errVersionShown is what a command returns after --version printed the version
// line: the command stops there and main exits 0.
var errVersionShown = errors.New("version printed")

// commandLineError is a bad command line (an unknown flag or command, a malformed
// flag value) that the command has already reported on stderr with its usage. Like
// every error matching flag.ErrHelp other than flag.ErrHelp itself, main exits 2 for
// it without printing it again (see exitStatus).
type commandLineError struct{ err error }

func (e commandLineError) Error() string        { return e.err.Error() }
func (e commandLineError) Unwrap() error        { return e.err }
func (e commandLineError) Is(target error) bool { return target == flag.ErrHelp }

// exitStatus is the status main exits with when run returned err, and whether main
// prints err on stderr first:
//   - 0, nothing printed, for nil, for flag.ErrHelp itself (the usage was printed on
//     request: -h, --help, help) and for errVersionShown;
//   - 2, nothing printed, for any other error matching flag.ErrHelp: a bad command line
//     the command has already reported with its usage (commandLineError);
//   - 1, printed, for anything else: the command failed while it ran.
func exitStatus(err error) (code int, report bool) {
	switch {
	case err == nil, err == flag.ErrHelp, errors.Is(err, errVersionShown):
		return 0, false
	case errors.Is(err, flag.ErrHelp):
		return 2, false
	}
	return 1, true
}

// parseFlags parses args with fs, which gets a -version flag when it has none. Flags
// may be written with one dash or two. It returns
//   - flag.ErrHelp after printing fs's usage on stdout, for -h, -help or --help;
//   - errVersionShown after printing the version line on stdout, for -version or
//     --version;
//   - a commandLineError after printing what is wrong and fs's usage on stderr, for a
//     flag fs does not define or a value its flag refuses;
//   - nil otherwise; fs.Args() holds the arguments after the flags.
//
// fs.Usage must print to fs.Output(), as the flag package's default does. parseFlags
// may be called again on fs with the arguments left after a positional one. fs prints
// to stderr afterwards.
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) error {
	if fs.Lookup("version") == nil {
		fs.Bool("version", false, "print the version line and exit")
	}
	usage := fs.Usage
	// The flag package calls Usage both for -h and after reporting a bad flag; which
	// stream the usage belongs on is known only once Parse returns.
	fs.Usage = func() {}
	fs.SetOutput(stderr)
	err := fs.Parse(args)
	fs.Usage = usage
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(stdout)
		usage()
		fs.SetOutput(stderr)
		return flag.ErrHelp
	case err != nil:
		usage()
		return commandLineError{err}
	}
	if v := fs.Lookup("version"); v.Value.String() == "true" {
		printVersion(stdout)
		return errVersionShown
	}
	return nil
}

// badCommandLine prints msg and usage on stderr and returns msg as a commandLineError.
func badCommandLine(stderr io.Writer, usage string, msg error) error {
	fmt.Fprintf(stderr, "watcher: %v\n\n%s", msg, usage)
	return commandLineError{msg}
}
