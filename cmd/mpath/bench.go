//go:build !slim

package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap/zapcore"

	"mpath/bench"
	benchlab "mpath/bench/lab"
	"mpath/raw"
)

const benchMore = `
Every request is an HTTP/1.1 GET (or HEAD with -m HEAD). Without -k each request opens
its own connection, as plain ab does; with -k each worker keeps one connection alive.
Failed requests (connect, receive, timeout, length, sha256) and non-2xx responses are
counted, not fatal: the report is printed, then the exit status is 1 if any request
failed or got a non-2xx response, 0 otherwise.

The report is laid out like ab's, plus a time-to-first-byte line. --json prints one
object instead: url, requests, failed, failures{connect,receive,timeout,length,sha256},
non_2xx, bytes (bodies), total_bytes (headers too), seconds, bytes_per_second (bodies),
requests_per_second, latency_ms, ttfb_ms and connect_ms {p50,p90,p99,min,mean,max},
concurrency, ... A progress bar is drawn on stderr when it is a terminal, never when piped.

--lab SCENARIO[,...] runs the thesis's experiments in a namespace lab instead (as root):
see 'mpath bench --lab all --help'.

examples:
  mpath bench -n 100 -c 4 http://10.77.255.2/big.bin
  mpath bench -n 20 -c 2 --proxy socks5h://127.0.0.1:1080 --json http://10.77.255.2/big.bin
  mpath bench -t 30 -c 8 -k --proxy http://127.0.0.1:8080 http://example.test/
  mpath bench -n 10 --expect ./big.bin --proxy socks5://127.0.0.1:1080 http://10.77.255.2/big.bin
`

func init() {
	register("bench", "apache-bench-like load through the proxy; --lab runs the thesis sweeps", runBench)
}

func runBench(args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return benchMain(ctx, args, os.Stdout, os.Stderr)
}

// headerList collects repeated -H "Name: value" flags.
type headerList []string

func (h *headerList) String() string { return strings.Join(*h, ", ") }
func (h *headerList) Set(v string) error {
	if name, _, ok := strings.Cut(v, ":"); !ok || strings.TrimSpace(name) == "" {
		return fmt.Errorf("header %q: want \"Name: value\"", v)
	}
	*h = append(*h, v)
	return nil
}

// secondsValue is a duration given as seconds ("30", "0.5") or as a Go duration ("30s").
type secondsValue struct{ d *time.Duration }

func (s secondsValue) String() string {
	if s.d == nil {
		return "0"
	}
	return strconv.FormatFloat(s.d.Seconds(), 'f', -1, 64)
}

func (s secondsValue) Set(v string) error {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if f < 0 {
			return errors.New("negative")
		}
		*s.d = time.Duration(f * float64(time.Second))
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return fmt.Errorf("%q: want seconds (30, 0.5) or a duration (30s)", v)
	}
	*s.d = d
	return nil
}

// benchMain is mpath bench with its outputs passed in: stdout gets the report, stderr the
// progress bar (when it is a terminal) and nothing else.
func benchMain(ctx context.Context, args []string, stdout io.Writer, stderr *os.File) error {
	if wantsLab(args) {
		return benchLabMain(ctx, args, stdout, stderr)
	}
	fs := newFlagSet("bench", "[flags] URL", benchMore)
	fs.SetOutput(stdout) // --help
	var (
		cfg     bench.Config
		headers headerList
		expect  string
		jsonOut bool
		quiet   bool
		debug   bool
		insec   bool
	)
	cfg.Timeout = bench.DefaultTimeout
	fs.IntVar(&cfg.Requests, "n", 1, "number of requests (with -t and no -n: as many as fit in the time)")
	fs.IntVar(&cfg.Concurrency, "c", 1, "concurrent requests (workers), at most -n")
	fs.Var(secondsValue{&cfg.Duration}, "t", "time limit in `SECONDS` (or 30s); requests in flight at the end are not counted")
	fs.Var(secondsValue{&cfg.Timeout}, "timeout", "per-request time limit in `SECONDS`, connect to end of body")
	fs.BoolVar(&cfg.KeepAlive, "k", false, "keep-alive: each worker reuses one connection (default: one connection per request)")
	fs.StringVar(&cfg.Method, "m", "GET", "method: GET or HEAD")
	fs.Var(&headers, "H", "extra request header `\"Name: value\"` (repeatable)")
	fs.StringVar(&cfg.Proxy, "proxy", "", "proxy `URL`: socks5://HOST:PORT (resolve here), socks5h://HOST:PORT (resolve at the proxy) or http://HOST:PORT")
	fs.StringVar(&cfg.ProxyUser, "proxy-user", "", "proxy credentials `USER:PASSWORD` (SOCKS5 RFC 1929 or HTTP Basic)")
	fs.StringVar(&cfg.ExpectSHA256, "sha256", "", "every 2xx body must have this sha256 (`HEX`), else it is a failure")
	fs.StringVar(&expect, "expect", "", "every 2xx body must equal this `FILE` (its length and sha256)")
	fs.BoolVar(&cfg.VariableLength, "l", false, "accept bodies whose length differs from the first response's (ab -l)")
	fs.BoolVar(&insec, "insecure", false, "https: do not verify the server's certificate (ab never does)")
	fs.BoolVar(&jsonOut, "json", false, "print one JSON object instead of the ab-style report")
	fs.BoolVar(&quiet, "q", false, "no progress bar even on a terminal")
	fs.BoolVar(&debug, "debug", false, "log the first occurrence of each distinct failure")
	fs.String("lab", "", "run the lab sweeps `SCENARIO[,...]` instead of loading a URL (see --lab all --help)")

	// Flags may come before or after the URL.
	var pos []string
	rest := args
	for {
		if err := parseArgs(fs, rest); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(pos) != 1 {
		return usageErrorf("want exactly one URL, got %d arguments", len(pos))
	}
	cfg.URL = pos[0]
	if !flagGiven(fs, "n") && cfg.Duration > 0 {
		cfg.Requests = 0 // -t alone: run for the time
	}
	if len(headers) > 0 {
		cfg.Header = make(http.Header)
		for _, h := range headers {
			name, value, _ := strings.Cut(h, ":")
			cfg.Header.Add(strings.TrimSpace(name), strings.TrimSpace(value))
		}
	}
	if expect != "" {
		sum, size, err := bench.HashFile(expect)
		if err != nil {
			return err
		}
		if cfg.ExpectSHA256 != "" && !strings.EqualFold(cfg.ExpectSHA256, sum) {
			return fmt.Errorf("--sha256 %s and --expect %s (sha256 %s) disagree", cfg.ExpectSHA256, expect, sum)
		}
		cfg.ExpectSHA256, cfg.ExpectLength = sum, size
	}
	if insec {
		cfg.TLS = &tls.Config{InsecureSkipVerify: true}
	}
	if debug {
		log := newLogger(zapcore.DebugLevel, "auto").Named("bench")
		defer log.Sync()
		cfg.Logger = log
	}

	var bar *bench.Progress // nil (draws nothing) unless stderr is a terminal
	if !quiet {
		bar = bench.NewProgress(stderr, int64(cfg.Requests))
	}
	if bar != nil {
		cfg.OnRequest = bar.Add
	}
	res, runErr := bench.Run(ctx, cfg)
	bar.Finish()
	if runErr != nil && res.Requests == 0 && ctx.Err() == nil {
		return runErr // nothing ran: a bad URL, proxy or flag
	}

	if jsonOut {
		b, err := json.Marshal(res)
		if err != nil {
			return fmt.Errorf("encode result: %w", err)
		}
		if _, err := fmt.Fprintf(stdout, "%s\n", b); err != nil {
			return fmt.Errorf("write result: %w", err)
		}
	} else {
		if _, err := fmt.Fprintf(stdout, "Benchmarking %s (be patient)...done\n\n", res.ServerHost); err != nil {
			return fmt.Errorf("write result: %w", err)
		}
		if err := res.WriteText(stdout); err != nil {
			return fmt.Errorf("write result: %w", err)
		}
	}
	switch {
	case runErr != nil:
		return runErr
	case res.Failed > 0 || res.Non2xx > 0:
		return fmt.Errorf("%d of %d requests failed, %d non-2xx responses", res.Failed, res.Requests, res.Non2xx)
	case res.Requests == 0:
		return errors.New("no request completed")
	}
	return nil
}

func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			given = true
		}
	})
	return given
}

// wantsLab reports whether the command line asks for the lab sweeps (--lab).
func wantsLab(args []string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		if a == "--lab" || a == "-lab" || strings.HasPrefix(a, "--lab=") || strings.HasPrefix(a, "-lab=") {
			return true
		}
	}
	return false
}

const benchLabMore = `
Builds a lab (network namespaces: client, one relay per path, exit with Apache), runs
the scenarios' tables cell by cell with mpath (SOCKS5 front, exit, Apache), kernel MPTCP
over the same paths and kernel TCP over one path, then tears everything down (also on
Ctrl-C). Each table is printed as it completes, and --out gets report.md (tables, method,
charts embedded), results.json (every figure, per-path bytes, load averages) and PNG
charts. Needs root, curl, mptcpize (Debian package mptcpize) and apache2.

Scenarios (tables of chapter 4 of F. E. Watson's thesis, Enhance TCP Performance with
Multiple Path Routing, 2005):
` + "%s" + `
Rates are per path in kB/s (1 kB = 1000 bytes; 20 kB/s = 160 kbit/s), as in the thesis.
Transfers are sized for about --seconds at the sum of the path rates and cut at 2.5
times that. The full 'all' sweep takes about an hour; --quick runs a few cells of each
scenario with tiny transfers (a smoke test: a minute or two).

Examples:
  mpath bench --lab all --out /tmp/bench-out
  mpath bench --lab rates,weights --quick
  mpath bench --lab proxy --repeat 3 --seconds 8
  mpath bench --lab all --list
`

// benchLabMain is `mpath bench --lab`: flags, then benchlab.Run.
func benchLabMain(ctx context.Context, args []string, stdout io.Writer, stderr *os.File) error {
	fs := newFlagSet("bench", "--lab SCENARIO[,...]|all [--quick] [--out DIR] [flags]",
		fmt.Sprintf(benchLabMore, benchlab.ScenarioHelp()))
	fs.SetOutput(stdout) // --help
	var opt benchlab.Options
	scen := fs.String("lab", "", "comma-separated `scenarios` to run, or all, e.g. rates,weights")
	fs.BoolVar(&opt.Quick, "quick", false, "a few cells of each scenario with tiny transfers (for tests), e.g. --quick")
	fs.StringVar(&opt.Out, "out", "bench-out", "output `directory` for report.md, results.json, the PNGs and logs/")
	fs.StringVar(&opt.Prefix, "prefix", "bench", "lab namespace `prefix` (a lab with this prefix is replaced), e.g. b2")
	fs.IntVar(&opt.Base, "base", 76, "second address `octet` B of the lab: 10.B.x.y")
	fs.Float64Var(&opt.Seconds, "seconds", 5, "target `seconds` per transfer (1 with --quick unless given)")
	fs.IntVar(&opt.Repeat, "repeat", 1, "measure each figure `N` times and keep the median")
	fs.StringVar(&opt.Cells, "cells", "", "only the cells whose \"TABLE: ROW, COL\" matches this `regexp` (see --list), e.g. 'rtt-queue: 10 / 160 ms, short'")
	fs.StringVar(&opt.Systems, "systems", "", "measure only the systems whose name matches this `regexp`, e.g. '^mpath$'")
	fs.StringVar(&opt.Encap, "encap", "ipip", "mpath's encapsulation in the lab (client, exit and relays): `ipip|udp[:PORT]`, e.g. --encap udp")
	list := fs.Bool("list", false, "print the tables and cells the scenarios would measure, and exit")
	render := fs.Bool("render", false, "no lab: re-draw report.md and the charts in --out from its results.json, e.g. --lab all --render --out bench-out")
	debug := fs.Bool("debug", false, "debug logging")
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("--lab takes no URL (unexpected %q)", fs.Args())
	}
	if *scen == "" {
		return usageErrorf("--lab needs scenarios: %s or all", strings.Join(benchlab.ScenarioNames(), ", "))
	}
	opt.Scenarios = strings.Split(*scen, ",")
	if _, err := raw.ParseEncap(opt.Encap); err != nil {
		return usageErrorf("--encap: %v", err)
	}
	if opt.Quick && !flagGiven(fs, "seconds") {
		opt.Seconds = 0 // the quick default
	}
	opt.Stdout = stdout
	opt.Command = "mpath bench " + strings.Join(args, " ")
	if *render {
		if _, err := benchlab.Render(opt.Out); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "re-drew %s\n", filepath.Join(opt.Out, "report.md"))
		return nil
	}
	if *list {
		tables, err := benchlab.Tables(opt)
		if err != nil {
			return err
		}
		for _, t := range tables {
			fmt.Fprintf(stdout, "%-9s %-9s %3d cells  %s\n", t.ID, t.Scenario, len(t.Cells), t.Title)
			if opt.Cells != "" {
				for _, c := range t.Cells {
					fmt.Fprintf(stdout, "  %s: %s, %s\n", t.ID, c.Row, c.Col)
				}
			}
		}
		return nil
	}
	level := zapcore.InfoLevel
	if *debug {
		level = zapcore.DebugLevel
	}
	log := newLogger(level, "auto").Named("bench")
	defer log.Sync()
	opt.Logger = log
	_, err := benchlab.Run(ctx, opt)
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("interrupted: the lab is torn down; tables completed so far are in %s", opt.Out)
	}
	return err
}
