//go:build !slim

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"mpath/lab"
	"mpath/relay"
)

const labMore = `
Subcommands:
  up      build the lab (tears down a stale lab of the same prefix first)
  down    remove everything a lab made: processes in its namespaces, the namespaces
          (veths, qdiscs, routes go with them), its state file; safe to run twice or
          after a crash
  status  print namespaces, addresses, paths and relay PIDs

Layout for prefix P, base B and paths i=1..N (needs root):
  P-c   client: host 10.B.255.1/32 on lo, c<i> 10.B.i.1/24 (tbf egress), table 100+i for
        "from 10.B.i.1"
  P-ri  relay i: rc 10.B.i.2/24 (tbf egress), re 10.B.(100+i).2/24, runs
        "mpath relay --plain" with the path's delay/loss, metrics on :9100
  P-x   exit: host 10.B.255.2/32 on lo, x<i> 10.B.(100+i).1/24

Per-path lists (--rate, --delay, --jitter, --loss, --reorder) are comma-separated, one
value per path; a single value applies to every path; empty or 0 means none.

Examples:
  mpath lab up --paths 3 --rate 10mbit,10mbit,1mbit --delay 10ms,40ms,80ms --loss 0,0,1%
  mpath lab status
  ip netns exec mpath-x ncat -lk 10.77.255.2 5000 >/dev/null &
  ip netns exec mpath-c ncat -s 10.77.2.1 10.77.255.2 5000 </etc/services   # via relay 2
  ip netns exec mpath-r2 curl -s 10.77.2.2:9100/metrics | grep forwarded
  mpath lab down
`

func init() {
	register("lab", "one-machine network-namespace lab: lab up|down|status", runLab)
}

func runLab(args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fs := newFlagSet("lab", "up|down|status [flags]", labMore)
		if err := parseArgs(fs, args); err != nil {
			return err
		}
		return usageErrorf("want a subcommand: up, down or status")
	}
	switch args[0] {
	case "up":
		return runLabUp(args[1:])
	case "down":
		fs := newFlagSet("lab", "down [--prefix P]", labMore)
		prefix := fs.String("prefix", "mpath", "namespace `PREFIX` of the lab to remove")
		if err := parseArgs(fs, args[1:]); err != nil {
			return err
		}
		if err := noArgs(fs); err != nil {
			return err
		}
		if err := lab.Down(*prefix); err != nil {
			return err
		}
		fmt.Printf("lab %q down\n", *prefix)
		return nil
	case "status":
		fs := newFlagSet("lab", "status [--prefix P]", labMore)
		prefix := fs.String("prefix", "mpath", "namespace `PREFIX` of the lab")
		if err := parseArgs(fs, args[1:]); err != nil {
			return err
		}
		if err := noArgs(fs); err != nil {
			return err
		}
		info, err := lab.Status(*prefix)
		if err != nil {
			return err
		}
		info.Print(os.Stdout)
		return nil
	}
	return usageErrorf("unknown lab subcommand %q: want up, down or status", args[0])
}

// eachPath parses a per-path list flag (--rate, --delay, ...): comma-separated, one
// value per path or a single value for all n paths; set is called for each path whose
// value is not empty or "0". Errors name the flag.
func eachPath(flagName, list string, n int, set func(i int, v string) error) error {
	if list == "" {
		return nil
	}
	vals := strings.Split(list, ",")
	if len(vals) != 1 && len(vals) != n {
		return usageErrorf("--%s %q: want 1 or %d values", flagName, list, n)
	}
	for i := range n {
		v := strings.TrimSpace(vals[0])
		if len(vals) > 1 {
			v = strings.TrimSpace(vals[i])
		}
		if v == "" || v == "0" {
			continue
		}
		if err := set(i, v); err != nil {
			return usageErrorf("--%s %q: %w", flagName, v, err)
		}
	}
	return nil
}

func runLabUp(args []string) error {
	fs := newFlagSet("lab", "up [--paths N] [--rate R,...] [--delay D,...] [--loss L,...] [--mode M] [--prefix P] [--base B]", labMore)
	paths := fs.Int("paths", 3, "number of paths (relays), e.g. 3")
	rate := fs.String("rate", "", "tbf rate per path, both directions, `RATE,...`, e.g. 10mbit,10mbit,1mbit (empty: unlimited)")
	delay := fs.String("delay", "", "one-way delay per path added by its relay, `DURATION,...`, e.g. 10ms,40ms,80ms (RTT grows by twice this)")
	jitter := fs.String("jitter", "", "jitter per path (± around the delay, never reorders), `DURATION,...`, e.g. 1ms,5ms,10ms")
	loss := fs.String("loss", "", "random loss per path and direction, `FRACTION,...`, e.g. 0,0,1%")
	reorder := fs.String("reorder", "", "reordered fraction per path, `FRACTION,...`, e.g. 0,0,0.5%")
	mode := fs.String("mode", "forward", "relay `mode`: forward or reencap")
	prefix := fs.String("prefix", "mpath", "namespace `prefix`: namespaces are P-c, P-r1..P-rN, P-x")
	base := fs.Int("base", 77, "second address octet `B`: addresses are 10.B.x.y")
	seed := fs.Int64("seed", 1, "impairment seed; relay i uses seed+i")
	logDir := fs.String("logdir", "", "relay log `directory` (default /run/mpath/<prefix>)")
	bin := fs.String("mpath", "", "mpath `binary` the relays run (default: this one)")
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if *paths < 1 || *paths > 99 {
		return usageErrorf("--paths %d: want 1..99", *paths)
	}
	specs := make([]lab.PathSpec, *paths)
	each := func(flagName, list string, set func(i int, v string) error) error {
		return eachPath(flagName, list, *paths, set)
	}
	dur := func(dst func(i int) *time.Duration) func(int, string) error {
		return func(i int, v string) error {
			d, err := time.ParseDuration(v)
			if err == nil && d < 0 {
				err = errors.New("negative")
			}
			*dst(i) = d
			return err
		}
	}
	frac := func(dst func(i int) *float64) func(int, string) error {
		return func(i int, v string) error {
			f, err := relay.ParseFraction(v)
			*dst(i) = f
			return err
		}
	}
	for _, e := range []error{
		each("rate", *rate, func(i int, v string) error {
			if _, err := relay.ParseRate(v); err != nil {
				return err
			}
			specs[i].Rate = v
			return nil
		}),
		each("delay", *delay, dur(func(i int) *time.Duration { return &specs[i].Delay })),
		each("jitter", *jitter, dur(func(i int) *time.Duration { return &specs[i].Jitter })),
		each("loss", *loss, frac(func(i int) *float64 { return &specs[i].Loss })),
		each("reorder", *reorder, frac(func(i int) *float64 { return &specs[i].Reorder })),
	} {
		if e != nil {
			return e
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := lab.Up(ctx, lab.Config{Prefix: *prefix, Base: *base, Paths: specs, RelayMode: *mode,
		MpathBin: *bin, Seed: *seed, LogDir: *logDir})
	if err != nil {
		return err
	}
	info, err := lab.Status(l.Config().Prefix)
	if err != nil {
		return err
	}
	info.Print(os.Stdout)
	fmt.Printf("\nclient: ip netns exec %s ...   exit: ip netns exec %s ...   down: mpath lab down --prefix %s\n",
		l.ClientNS(), l.ExitNS(), l.Config().Prefix)
	return nil
}
