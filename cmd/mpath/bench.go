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
	"strconv"
	"strings"
	"syscall"
	"time"

	"mpath/bench"
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

examples:
  mpath bench -n 100 -c 4 http://10.77.255.2/big.bin
  mpath bench -n 20 -c 2 --proxy socks5h://127.0.0.1:1080 --json http://10.77.255.2/big.bin
  mpath bench -t 30 -c 8 -k --proxy http://127.0.0.1:8080 http://example.test/
  mpath bench -n 10 --expect ./big.bin --proxy socks5://127.0.0.1:1080 http://10.77.255.2/big.bin
`

// benchFlagSet is newFlagSet, assigned in init to break the initialization cycle
// commands -> runBench -> newFlagSet -> commands (as relay.go and lab.go do).
var benchFlagSet func(name, synopsis, more string) *flag.FlagSet

func init() { benchFlagSet = newFlagSet }

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
	fs := benchFlagSet("bench", "[flags] URL", benchMore)
	fs.SetOutput(stderr)
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
	fs.StringVar(&cfg.ProxyUser, "proxy-user", "", "proxy credentials `user:password` (SOCKS5 RFC 1929 or HTTP Basic)")
	fs.StringVar(&cfg.ExpectSHA256, "sha256", "", "every 2xx body must have this sha256 (`HEX`), else it is a failure")
	fs.StringVar(&expect, "expect", "", "every 2xx body must equal this `FILE` (its length and sha256)")
	fs.BoolVar(&cfg.VariableLength, "l", false, "accept bodies whose length differs from the first response's (ab -l)")
	fs.BoolVar(&insec, "insecure", false, "https: do not verify the server's certificate (ab never does)")
	fs.BoolVar(&jsonOut, "json", false, "print one JSON object instead of the ab-style report")
	fs.BoolVar(&quiet, "q", false, "no progress bar even on a terminal")
	fs.BoolVar(&debug, "debug", false, "log the first occurrence of each distinct failure")

	// Flags may come before or after the URL.
	var pos []string
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(pos) != 1 {
		fs.Usage()
		return fmt.Errorf("want exactly one URL, got %d arguments", len(pos))
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
		log := newLogger(true).Named("bench")
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
