package main

// What every subcommand's flags share: the flag set and its --help layout, usage errors
// (exit status 2), and the configuration sources of the serving roles:
//
//	command line ──► flags set there win
//	MPATH_<FLAG> environment variables ──► flags the command line left alone
//	--config FILE (or MPATH_CONFIG) ──► flags neither of the above set
//
// All of it happens before a role looks at its values, so a bad value anywhere is
// reported (naming the flag, the variable or FILE:LINE) before a socket is opened.

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// usageError is a mistake in what the user asked for (flag, argument, environment
// variable, configuration line): main prints it with a pointer to --help and exits 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// usageErrorf returns a usage error; %w wraps as in fmt.Errorf.
func usageErrorf(format string, a ...any) error {
	return &usageError{fmt.Errorf(format, a...)}
}

func isUsageError(err error) bool {
	var u *usageError
	return errors.As(err, &u)
}

// configHelp is the --help text of the commands that read the environment and --config.
const configHelp = `
Configuration: every flag can also be given as an environment variable MPATH_<FLAG>
(upper case, '-' as '_': MPATH_PSK_FILE=/etc/mpath/psk; a repeatable flag takes several
values separated by spaces: MPATH_PATH="dev=wan1,relay=r1 dev=wan2,relay=r2") or as a
line of the --config file (or $MPATH_CONFIG), one flag per line as on the command line
without the dashes: "path dev=wan1,relay=r1.example.net", "scheduler weighted",
"no-guard" for a boolean; '#' starts a comment line. Precedence: command line, then
environment, then file; a repeatable flag given in a higher source replaces the lower
sources' values.`

// newFlagSet returns a flag set for a subcommand whose --help prints synopsis, then the
// flags, then more (free text, may be empty). Parse it with parseFlags.
func newFlagSet(name, synopsis, more string) *flag.FlagSet {
	fs := flag.NewFlagSet("mpath "+name, flag.ContinueOnError)
	fs.SetOutput(os.Stdout) // --help is asked for: it goes to stdout, like wg and curl
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage: mpath %s %s\n\n%s\n\nflags:\n", name, synopsis, commands[name].summary)
		printFlags(w, fs)
		if more != "" {
			fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(more))
		}
		if fs.Lookup("config") != nil {
			fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(configHelp))
		}
	}
	return fs
}

// printFlags lists fs's flags as "--name PLACEHOLDER" with their help and default. The
// placeholder is the back-quoted word of the help text, else the value's type.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		name, help := flag.UnquoteUsage(f)
		if _, isBool := f.Value.(interface{ IsBoolFlag() bool }); isBool {
			name = ""
		} else if name == "" || name == "value" {
			name = "VALUE"
		} else if isLowerWord(name) {
			name = strings.ToUpper(name) // a type name: "duration" -> DURATION
		}
		line := "  --" + f.Name
		if len(f.Name) == 1 {
			line = "  -" + f.Name // ab-style single letters: -n, -c
		}
		if name != "" {
			line += " " + name
		}
		fmt.Fprintf(w, "%s\n    \t%s", line, strings.ReplaceAll(help, "\n", "\n    \t"))
		if d := f.DefValue; d != "" && d != "false" && d != "0" && d != "[]" {
			fmt.Fprintf(w, " (default %s)", d)
		}
		fmt.Fprintln(w)
	})
}

func isLowerWord(s string) bool {
	for _, r := range s {
		if r < 'a' || r > 'z' {
			return false
		}
	}
	return s != ""
}

// parseFlags parses args into fs without printing anything: --help prints the usage to
// fs's output and returns flag.ErrHelp; a bad flag is a usage error. Flags the command
// line did not set are then taken from the environment (MPATH_<FLAG>) and, when fs has a
// "config" flag, from that file (see configHelp).
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if err := applyEnv(fs, set, os.Getenv); err != nil {
		return err
	}
	if fs.Lookup("config") == nil {
		return nil
	}
	file := fs.Lookup("config").Value.String()
	if file == "" {
		return nil
	}
	return applyConfigFile(fs, set, file)
}

// parseArgs is fs.Parse with the flag package's own printing turned off.
func parseArgs(fs *flag.FlagSet, args []string) error {
	out, usage := fs.Output(), fs.Usage
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.SetOutput(out)
	fs.Usage = usage
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.Usage()
		return flag.ErrHelp
	case err != nil:
		return &usageError{err}
	}
	return nil
}

// repeatable is implemented by flag values that collect every occurrence (--path):
// several values in one environment variable are separated by spaces.
type repeatable interface{ repeatable() }

// envName is the environment variable for flag name: "psk-file" -> "MPATH_PSK_FILE".
func envName(name string) string {
	return "MPATH_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// applyEnv sets the flags not in set from MPATH_<FLAG> and adds them to set.
func applyEnv(fs *flag.FlagSet, set map[string]bool, getenv func(string) string) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] {
			return
		}
		v := getenv(envName(f.Name))
		if v == "" {
			return
		}
		vals := []string{v}
		if _, ok := f.Value.(repeatable); ok {
			vals = strings.Fields(v)
		}
		for _, v := range vals {
			if e := fs.Set(f.Name, v); e != nil {
				err = usageErrorf("$%s: %v", envName(f.Name), e)
				return
			}
		}
		set[f.Name] = true
	})
	return err
}

// applyConfigFile sets the flags not in set from file: one flag per line, "name value",
// "name=value" or "name" (a boolean), blank lines and '#' comments ignored. Errors name
// the file and line.
func applyConfigFile(fs *flag.FlagSet, set map[string]bool, file string) error {
	f, err := os.Open(file)
	if err != nil {
		return usageErrorf("--config: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, hasV := line, "", false
		if i := strings.IndexAny(line, " \t="); i >= 0 {
			k, v, hasV = line[:i], strings.TrimSpace(line[i+1:]), true
		}
		k = strings.TrimLeft(k, "-")
		fl := fs.Lookup(k)
		switch {
		case k == "config":
			return usageErrorf("%s:%d: a configuration file cannot name another (config)", file, n)
		case fl == nil:
			return usageErrorf("%s:%d: unknown flag %q", file, n, k)
		case set[k]:
			continue // the command line or the environment set it
		}
		if !hasV {
			if _, isBool := fl.Value.(interface{ IsBoolFlag() bool }); !isBool {
				return usageErrorf("%s:%d: %s needs a value", file, n, k)
			}
			v = "true"
		}
		if err := fs.Set(k, v); err != nil {
			return usageErrorf("%s:%d: %s: %v", file, n, k, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("--config %s: %w", file, err)
	}
	return nil
}

// noArgs is the usual check after parseFlags for commands that take no arguments.
func noArgs(fs *flag.FlagSet) error {
	if fs.NArg() > 0 {
		return usageErrorf("unexpected argument %q", fs.Arg(0))
	}
	return nil
}
