// Command mpath is a multipath TCP proxy: one binary, one subcommand per role. This file
// only dispatches; each role's flags and wiring live in its own file (client.go,
// exit.go, relay.go, lab.go, bench.go, demo.go, status.go, genkey.go, version.go) and
// registers itself in an init function. cli.go holds what every command's flags share
// (parsing, configuration file, environment, errors); ops.go what the serving roles
// share (logs, metrics endpoint, readiness, capability hints).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

type command struct {
	summary string
	run     func(args []string) error
}

// commands holds the subcommands; each file adds its own with register in an init
// function (a build tag can leave some out: see slim.go).
var commands = map[string]command{}

func register(name, summary string, run func(args []string) error) {
	commands[name] = command{summary, run}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "mpath: multipath TCP proxy (userspace TCP over IPIP, sprayed across relays)\n\n")
	fmt.Fprintf(w, "usage: mpath <command> [flags]\n\ncommands:\n")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-7s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(w, "\nRun 'mpath <command> --help' for the flags of a command.\n")
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is mpath with its arguments (without the program name) and returns the exit
// status: 0 on success or --help, 2 for a usage error (a bad flag, argument,
// environment variable or configuration line), 1 for anything else. Errors are printed
// to stderr as one line.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) < 1 {
		usage(stderr)
		return 2
	}
	name := args[0]
	switch name {
	case "-h", "--help", "-help", "help":
		usage(stdout)
		return 0
	case "-V", "--version", "-version":
		name = "version"
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "mpath: unknown command %q (see 'mpath --help')\n", name)
		return 2
	}
	err := cmd.run(args[1:])
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case isUsageError(err):
		fmt.Fprintf(stderr, "mpath %s: %s (see 'mpath %s --help')\n", name, oneLine(err), name)
		return 2
	default:
		fmt.Fprintf(stderr, "mpath %s: %s\n", name, oneLine(err))
		return 1
	}
}

// oneLine is err's message on one line (errors.Join puts one error per line).
func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
}
