// Command mpath is a multipath TCP proxy: one binary, one subcommand per role. This file
// only dispatches; each role's flags and wiring live in its own file (client.go,
// exit.go, relay.go, lab.go, bench.go, demo.go, status.go).
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"
)

type command struct {
	summary string
	run     func(args []string) error
}

// commands is filled in init: the subcommands' flag sets refer back to it for --help,
// which a package-level initializer would turn into an initialization cycle.
var commands map[string]command

func init() {
	commands = map[string]command{
		"client": {"SOCKS5/HTTP proxy that sprays each connection over several paths", runClient},
		"exit":   {"far end of the tunnel: accepts authenticated flows, dials the real servers", runExit},
		"relay":  {"userspace IPIP forwarder with an allowlist and impairments", runRelay},
		"lab":    {"one-machine network-namespace lab: lab up|down|status", runLab},
		"bench":  {"apache-bench-like load through the proxy; --lab runs the thesis sweeps", runBench},
		"demo":   {"lab up, a real download through mpath, a per-path table, lab down", runDemo},
		"status": {"live per-path table from a running node's metrics endpoint", runStatus},
	}
}

func usage() {
	w := flag.CommandLine.Output()
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
	flag.CommandLine.Usage = usage
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	name := os.Args[1]
	if name == "-h" || name == "--help" || name == "help" {
		usage()
		return
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "mpath: unknown command %q\n\n", name)
		usage()
		os.Exit(2)
	}
	if err := cmd.run(os.Args[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintf(os.Stderr, "mpath %s: %v\n", name, err)
		os.Exit(1)
	}
}

// newFlagSet returns a flag set for a subcommand whose --help prints synopsis, then the
// flags, then more (free text, may be empty).
func newFlagSet(name, synopsis, more string) *flag.FlagSet {
	fs := flag.NewFlagSet("mpath "+name, flag.ContinueOnError)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage: mpath %s %s\n\n%s\n\nflags:\n", name, synopsis, commands[name].summary)
		fs.PrintDefaults()
		if more != "" {
			fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(more))
		}
	}
	return fs
}

// newLogger returns the process logger: console encoding on a terminal, JSON otherwise.
func newLogger(debug bool) *zap.Logger {
	level := zapcore.InfoLevel
	if debug {
		level = zapcore.DebugLevel
	}
	var cfg zap.Config
	if isTerminal(os.Stderr) {
		cfg = zap.NewDevelopmentConfig()
		cfg.DisableStacktrace = true
	} else {
		cfg = zap.NewProductionConfig()
	}
	cfg.Level = zap.NewAtomicLevelAt(level)
	l, err := cfg.Build()
	if err != nil {
		return zap.NewNop()
	}
	return l
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
