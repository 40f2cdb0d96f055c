//go:build !slim

package main

// `mpath demo`: the one-command tour on one machine.
//
//	lab.Up (client, relays, exit namespaces; tbf rates, relay delays)
//	  ─► Apache in the exit namespace serving a random file
//	  ─► mpath exit (exit ns) and mpath client (client ns, SOCKS5 + HTTP fronts)
//	  ─► best single path: kernel TCP curl bound to the fastest path's address
//	  ─► the same file through mpath: curl --socks5-hostname, metrics sampled meanwhile
//	  ─► per-path table, aggregate vs best single path vs sum of the rates
//	  ─► cleanup: processes, namespaces (their nftables tables go with the processes
//	     that own them), temp dirs; unless --keep
//
// This file only wires lab, lab/table and the two node processes together.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"mpath/lab"
	"mpath/lab/table"
	"mpath/relay"
)

const demoMore = `
What it does (as root, all on this machine, nothing leaves it):
  1. builds the lab: namespaces P-c (client), P-r1..P-rN (relays), P-x (exit); per path a
     tbf rate limit both ways and a one-way delay added by the relay (RTT = 2 x delay)
  2. starts Apache in the exit namespace serving a random file (installs apache2 with
     apt-get first if it is missing)
  3. starts 'mpath exit' and 'mpath client' (SOCKS5 on 127.0.0.1:1080, HTTP proxy on
     127.0.0.1:8080, both in the client namespace), logs in a work dir
  4. measures the best single path: a kernel-TCP curl of the file bound to the fastest
     path's address, so it crosses only that path's relay
  5. downloads the same file through mpath (curl --socks5-hostname), sha256 checked
  6. prints a per-path table (bytes, share, rate, RTT, retransmits, state) and the
     aggregate against the best single path and the sum of the configured rates
  7. removes everything it made: processes, namespaces (with their nftables tables),
     temp files. Ctrl-C at any point cleans up too. --keep leaves a successful run up
     and prints how to use it and how to tear it down.

Per-path lists (--rate, --delay) are comma-separated, one value per path, or a single
value for all paths.

Examples:
  mpath demo
  mpath demo --paths 2 --rate 10mbit,10mbit --delay 5ms,5ms --size 20MB
  mpath demo --keep --prefix try --base 78
  mpath demo --mode reencap --scheduler weighted
`

// demo ports: the exit's engine port and metrics, the client's fronts and metrics, as
// lab.StartNodes places them.
const (
	demoExitPort    = lab.ExitPort
	demoExitMetrics = lab.ExitMetricsPort
	demoSOCKS       = lab.ClientSOCKS
	demoHTTP        = lab.ClientHTTP
	demoClientMet   = lab.ClientMetricsAddr
	demoFile        = "file"
	demoSizeSecs    = 12 // auto size: this many seconds at the sum of the path rates
)

type demo struct {
	out       io.Writer
	tty       bool
	bin       string
	specs     []lab.PathSpec
	rates     []int64 // bits/s per path, 0 = unlimited
	size      int64
	keep      bool
	prefix    string
	base      int
	mode      string
	scheduler string

	work     string
	docroot  string
	sum      [32]byte
	lab      *lab.Lab
	labTried bool
	apache   *lab.Apache
	nodes    *lab.Nodes
}

func init() {
	register("demo", "lab up, a real download through mpath, a per-path table, lab down", runDemo)
}

func runDemo(args []string) error {
	fs := newFlagSet("demo", "[--paths N] [--rate R,...] [--delay D,...] [--size BYTES] [--keep] [flags]", demoMore)
	paths := fs.Int("paths", 3, "number of paths (relays), e.g. 3")
	rate := fs.String("rate", "20mbit,10mbit,5mbit", "tbf rate per path, both directions, `RATE,...`, e.g. 20mbit,10mbit,5mbit (\"\" or 0: unlimited)")
	delay := fs.String("delay", "10ms,30ms,60ms", "one-way delay per path added by its relay, `DURATION,...`, e.g. 10ms,30ms,60ms (RTT = twice this)")
	size := fs.String("size", "auto", "`size` of the downloaded file, e.g. 64MB, 500kB, 1GiB; auto: about 12 s at the sum of the rates")
	keep := fs.Bool("keep", false, "leave the lab, Apache, exit and client running after a successful run and print how to use and tear them down, e.g. mpath demo --keep")
	prefix := fs.String("prefix", "mpath", "namespace `prefix`: P-c, P-r1..P-rN, P-x (a lab with this prefix is replaced), e.g. try")
	base := fs.Int("base", 77, "second address octet `B`: addresses are 10.B.x.y, e.g. 78")
	mode := fs.String("mode", "forward", "relay `mode`: forward (like a stock ipip host) or reencap, e.g. reencap")
	scheduler := fs.String("scheduler", "auto", "`scheduler` for client and exit: auto, weighted (weights from --rate) or rr, e.g. weighted")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up (and clean up) after this long, e.g. 5m")
	if err := parseArgs(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	d := &demo{out: os.Stdout, tty: isTerminal(os.Stdout), keep: *keep, prefix: *prefix, base: *base,
		mode: *mode, scheduler: *scheduler}
	if err := d.configure(*paths, *rate, *delay, *size); err != nil {
		return err
	}
	switch *scheduler {
	case "auto", "weighted", "rr":
	default:
		return usageErrorf("--scheduler %q: want auto, weighted or rr", *scheduler)
	}
	if *mode != "forward" && *mode != "reencap" {
		return usageErrorf("--mode %q: want forward or reencap", *mode)
	}
	if *timeout <= 0 {
		return usageErrorf("--timeout must be positive")
	}
	return d.run(*timeout)
}

// configure parses the per-path lists and the size.
func (d *demo) configure(n int, rates, delays, size string) error {
	if n < 1 || n > 99 {
		return usageErrorf("--paths %d: want 1..99", n)
	}
	d.specs = make([]lab.PathSpec, n)
	d.rates = make([]int64, n)
	each := func(name, list string, set func(i int, v string) error) error {
		return eachPath(name, list, n, set)
	}
	if err := each("rate", rates, func(i int, v string) error {
		bps, err := relay.ParseRate(v)
		if err != nil {
			return err
		}
		d.specs[i].Rate, d.rates[i] = v, bps
		return nil
	}); err != nil {
		return err
	}
	if err := each("delay", delays, func(i int, v string) error {
		dl, err := time.ParseDuration(v)
		if err != nil || dl < 0 {
			return fmt.Errorf("want a duration like 10ms")
		}
		d.specs[i].Delay = dl
		return nil
	}); err != nil {
		return err
	}
	if size == "auto" {
		sum, ok := d.sumRate()
		if !ok {
			d.size = 100e6
		} else {
			d.size = max(1e6, min(2e9, (sum/8*demoSizeSecs+999_999)/1e6*1e6))
		}
		return nil
	}
	s, err := parseSize(size)
	if err != nil {
		return usageErrorf("--size: %w", err)
	}
	d.size = s
	return nil
}

// parseSize reads "64MB", "500kB", "1GiB", "123" (bytes).
func parseSize(v string) (int64, error) {
	s := strings.TrimSpace(v)
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	f, err := strconv.ParseFloat(s[:i], 64)
	mult, ok := map[string]float64{"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9,
		"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}[strings.ToLower(strings.TrimSpace(s[i:]))]
	if err != nil || !ok || f <= 0 || f*mult > 1<<40 {
		return 0, fmt.Errorf("%q: want a size like 64MB, 500kB or 1GiB", v)
	}
	return int64(f * mult), nil
}

// sumRate is the sum of the configured rates in bits/s; false when a path is unlimited.
func (d *demo) sumRate() (int64, bool) {
	var sum int64
	for _, r := range d.rates {
		if r == 0 {
			return 0, false
		}
		sum += r
	}
	return sum, true
}

// fastest is the path (from 1) with the highest configured rate, unlimited first, the
// shortest delay breaking ties.
func (d *demo) fastest() int {
	best := 0
	better := func(i, j int) bool { // is i better than j
		ri, rj := d.rates[i], d.rates[j]
		if ri != rj {
			return ri == 0 || (rj != 0 && ri > rj)
		}
		return d.specs[i].Delay < d.specs[j].Delay
	}
	for i := range d.rates {
		if better(i, best) {
			best = i
		}
	}
	return best + 1
}

func (d *demo) printf(format string, a ...any) { fmt.Fprintf(d.out, format, a...) }

// run does the demo and cleans up (unless --keep and it went well).
func (d *demo) run(timeout time.Duration) error {
	// Ctrl-C and SIGTERM cancel the run; they stay caught until cleanup is done, so a
	// second Ctrl-C does not leave half a lab behind.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer func() { signal.Stop(sigs); close(sigs) }()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var gotSignal atomic.Value // os.Signal
	go func() {
		for s := range sigs {
			if gotSignal.CompareAndSwap(nil, s) {
				fmt.Fprintf(os.Stderr, "\nmpath demo: %v: stopping and cleaning up\n", s)
				cancel()
			}
		}
	}()

	err := d.steps(ctx)
	if err != nil {
		if gotSignal := gotSignal.Load(); gotSignal != nil {
			err = fmt.Errorf("interrupted by %v", gotSignal)
		} else {
			if ctx.Err() == context.DeadlineExceeded {
				err = fmt.Errorf("%w (--timeout %v)", err, timeout)
			}
			d.showLogs()
		}
	}
	if err == nil && d.keep {
		d.printKeep()
		return nil
	}
	if cerr := d.cleanup(err == nil); cerr != nil {
		return errors.Join(err, cerr)
	}
	return err
}

func (d *demo) steps(ctx context.Context) error {
	if err := d.preflight(ctx); err != nil {
		return err
	}
	sum, haveSum := d.sumRate()
	d.printf("mpath demo: %d paths, a %s file, scheduler %s, relay mode %s\n", len(d.specs), table.Bytes(uint64(d.size)), d.scheduler, d.mode)
	d.printf("  work dir %s (logs, the file, the key)\n", d.work)
	d.printf("  machine: %s\n", loadDesc())

	t0 := time.Now()
	if info, err := lab.Status(d.prefix); err == nil && info.Up() {
		d.printf("  a lab with prefix %q is up: replacing it (use --prefix to keep it)\n", d.prefix)
	}
	d.labTried = true
	l, err := lab.Up(ctx, lab.Config{Prefix: d.prefix, Base: d.base, Paths: d.specs, RelayMode: d.mode,
		MpathBin: d.bin, LogDir: d.work})
	if err != nil {
		return err
	}
	d.lab = l
	d.printf("[1/6] lab %q up: 10.%d.0.0/16, %d relays (%.1fs)\n", d.prefix, d.base, l.N(), time.Since(t0).Seconds())
	for i := 1; i <= l.N(); i++ {
		cdev, clocal, crelay := l.ClientPath(i)
		xdev, xlocal, _ := l.ExitPath(i)
		d.printf("      path %d  %-22s  %s %s -> relay %s -> %s %s\n", i, d.linkDesc(i), cdev, clocal, crelay, xdev, xlocal)
	}
	if haveSum {
		d.printf("      sum of the path rates: %s\n", table.Mbit(float64(sum)/8))
	}

	t0 = time.Now()
	if d.docroot, err = lab.MakeDocroot(); err != nil {
		return err
	}
	if d.sum, err = lab.WriteRandomFile(d.docroot, demoFile, d.size); err != nil {
		return err
	}
	d.apache, err = lab.StartApache(ctx, l.ExitNS(), l.ExitAddr(), 80, d.docroot)
	if err != nil {
		return err
	}
	url := d.apache.URL(demoFile)
	d.printf("[2/6] Apache in %s serving %s (%s of random bytes, sha256 %s...) (%.1fs)\n", l.ExitNS(), url,
		table.Bytes(uint64(d.size)), hex.EncodeToString(d.sum[:6]), time.Since(t0).Seconds())
	d.printf("      apache config and logs in %s\n", d.apache.Dir())

	t0 = time.Now()
	if err := d.startNodes(ctx); err != nil {
		return err
	}
	d.printf("[3/6] mpath exit on %s:%d in %s, mpath client in %s: SOCKS5 %s, HTTP proxy %s (%.1fs)\n",
		l.ExitAddr(), demoExitPort, l.ExitNS(), l.ClientNS(), demoSOCKS, demoHTTP, time.Since(t0).Seconds())

	best := d.fastest()
	_, bestAddr, _ := l.ClientPath(best)
	d.printf("[4/6] best single path: kernel TCP over path %d only (curl --interface %s)\n", best, bestAddr)
	single, err := d.curl(ctx, nil, "--interface", bestAddr.String(), url)
	if err != nil {
		return fmt.Errorf("single-path download: %w", err)
	}
	d.printf("      %s in %.1f s = %s, sha256 ok\n", table.Bytes(uint64(single.bytes)), single.secs, table.Mbit(single.rate()))

	d.printf("[5/6] through mpath, all %d paths (curl --socks5-hostname %s)\n", l.N(), demoSOCKS)
	exitHTTP, clientHTTP := nsHTTPClient(l.ExitNS()), nsHTTPClient(l.ClientNS())
	exitMet := netip.AddrPortFrom(l.ExitAddr(), demoExitMetrics).String()
	fetch := func(c *http.Client, addr string) (*table.Snapshot, error) {
		fctx, fcancel := context.WithTimeout(ctx, 3*time.Second)
		defer fcancel()
		return table.Fetch(fctx, c, addr)
	}
	exitBefore, err := fetch(exitHTTP, exitMet)
	if err != nil {
		return err
	}
	clientBefore, err := fetch(clientHTTP, demoClientMet)
	if err != nil {
		return err
	}
	var exitTr, clientTr table.Tracker
	sample := func() {
		if s, err := fetch(exitHTTP, exitMet); err == nil {
			exitTr.Observe(s)
		}
		if s, err := fetch(clientHTTP, demoClientMet); err == nil {
			clientTr.Observe(s)
		}
	}
	multi, err := d.curl(ctx, sample, "--socks5-hostname", demoSOCKS, url)
	if err != nil {
		return fmt.Errorf("download through mpath: %w", err)
	}
	exitAfter, err := fetch(exitHTTP, exitMet)
	if err != nil {
		return err
	}
	clientAfter, err := fetch(clientHTTP, demoClientMet)
	if err != nil {
		return err
	}
	d.printf("      %s in %.1f s = %s, sha256 ok\n\n", table.Bytes(uint64(multi.bytes)), multi.secs, table.Mbit(multi.rate()))

	d.report(single, multi, best, table.Diff(exitBefore, exitAfter), table.Diff(clientBefore, clientAfter), &exitTr, &clientTr)
	return nil
}

// linkDesc is path i's configured link: "20mbit, RTT 20ms".
func (d *demo) linkDesc(i int) string {
	s := d.specs[i-1]
	r := "unlimited"
	if d.rates[i-1] > 0 {
		r = table.Mbit(float64(d.rates[i-1]) / 8)
	}
	return fmt.Sprintf("%s, RTT %v", r, 2*s.Delay)
}

func (d *demo) preflight(ctx context.Context) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces, tc, nftables, raw sockets): run it as root, e.g. sudo make demo")
	}
	var missing []string
	for _, tool := range []string{"ip", "tc", "ethtool", "sysctl", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing tools %s: apt-get install iproute2 ethtool procps curl (make deps installs everything)", strings.Join(missing, ", "))
	}
	if _, err := lab.InstallApache(ctx, d.out); err != nil {
		return err
	}
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary: %w", err)
	}
	d.bin = bin
	if d.work, err = os.MkdirTemp("", "mpath-demo-"); err != nil {
		return err
	}
	return os.Chmod(d.work, 0o755)
}

// weights returns the per-path weights for --scheduler weighted (one per Mbit/s of the
// path's rate, 1000 for an unlimited path), nil for the other schedulers.
func (d *demo) weights() []int {
	if d.scheduler != "weighted" {
		return nil
	}
	w := make([]int, len(d.rates))
	for i, r := range d.rates {
		w[i] = int(max(1, min(1000, r/1_000_000)))
		if r == 0 {
			w[i] = 1000
		}
	}
	return w
}

func (d *demo) startNodes(ctx context.Context) error {
	n, err := d.lab.StartNodes(ctx, lab.NodesConfig{Bin: d.bin, Dir: d.work, Scheduler: d.scheduler, Weights: d.weights()})
	if err != nil {
		return err
	}
	d.nodes = n
	return nil
}

// download is one curl run's outcome.
type download struct {
	bytes int64
	secs  float64 // curl's time_total: connect, request and transfer
}

func (d download) rate() float64 {
	if d.secs <= 0 {
		return 0
	}
	return float64(d.bytes) / d.secs
}

// countingHash hashes what is written and counts it; n may be read while writes go on.
type countingHash struct {
	h hash.Hash
	n atomic.Int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	c.h.Write(p)
	c.n.Add(int64(len(p)))
	return len(p), nil
}

// curl downloads with curl from the client namespace (extra args before the URL),
// hashing the body as it arrives, calling tick (if not nil) every 500 ms meanwhile and
// showing progress on a terminal. The body must match the served file byte for byte.
func (d *demo) curl(ctx context.Context, tick func(), args ...string) (download, error) {
	const marker = "mpath-demo-curl"
	cargs := append([]string{"-sS", "--fail", "--max-time", "1800", "-o", "-",
		"-w", "%{stderr}" + marker + " %{size_download} %{time_total}\\n"}, args...)
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", d.lab.ClientNS(), "curl"}, cargs...)...)
	body := &countingHash{h: sha256.New()}
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = body, &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return download{}, fmt.Errorf("curl: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tk := time.NewTicker(500 * time.Millisecond)
	defer tk.Stop()
	var err error
wait:
	for {
		select {
		case err = <-done:
			break wait
		case <-tk.C:
			if tick != nil {
				tick()
			}
			if d.tty {
				n := body.n.Load()
				d.printf("\r      %s of %s, %s\033[K", table.Bytes(uint64(n)), table.Bytes(uint64(d.size)),
					table.Mbit(float64(n)/time.Since(start).Seconds()))
			}
		}
	}
	if d.tty {
		d.printf("\r\033[K")
	}
	if err != nil {
		if ctx.Err() != nil {
			return download{}, ctx.Err()
		}
		return download{}, fmt.Errorf("curl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	dl := download{bytes: body.n.Load(), secs: time.Since(start).Seconds()}
	sc := bufio.NewScanner(&stderr)
	for sc.Scan() {
		var size int64
		var secs float64
		if _, err := fmt.Sscanf(sc.Text(), marker+" %d %f", &size, &secs); err == nil && secs > 0 {
			dl.secs = secs
		}
	}
	var got [32]byte
	copy(got[:], body.h.Sum(nil))
	if dl.bytes != d.size || got != d.sum {
		return dl, fmt.Errorf("got %d bytes with sha256 %x, want %d bytes with sha256 %x", dl.bytes, got, d.size, d.sum)
	}
	return dl, nil
}

// report prints the per-path table and the aggregate comparison.
func (d *demo) report(single, multi download, best int, exitD, clientD []table.PathDelta, exitTr, clientTr *table.Tracker) {
	d.printf("Per path, for the download through mpath (exit -> client), from the exit's and the client's metrics:\n")
	t := &table.Table{Header: []string{"PATH", "LINK", "STATE", "SHARE", "DATA", "RATE", "SRTT", "MIN RTT",
		"RETRANS", "LOST", "CLIENT RX"}, Align: "llllrrrrrrr", Indent: "  "}
	var total, rx, retx, lost uint64
	for _, p := range exitD {
		total += p.DDelivered
	}
	for _, p := range exitD {
		var crx uint64
		cs := table.RTTSummary{}
		for _, c := range clientD {
			if c.Index == p.Index {
				crx = c.DRxBytes
				cs = clientTr.Summary(c.Index)
			}
		}
		es := exitTr.Summary(p.Index)
		state := "up"
		if es.WentDown || cs.WentDown || !p.Up {
			state = "went down"
		}
		share := 0.0
		if total > 0 {
			share = float64(p.DDelivered) / float64(total)
		}
		t.Add(strconv.Itoa(p.Index+1), d.linkDesc(p.Index+1), state, table.Pct(share), table.Bytes(p.DDelivered),
			table.Mbit(float64(p.DDelivered)/multi.secs), table.Ms(es.MeanSRTT), table.Ms(es.MinRTT),
			strconv.FormatUint(p.DRetransmits, 10), strconv.FormatUint(p.DLost, 10), table.Bytes(crx))
		rx += crx
		retx += p.DRetransmits
		lost += p.DLost
	}
	t.Add("all", "", "", "100.0%", table.Bytes(total), table.Mbit(float64(total)/multi.secs), "", "",
		strconv.FormatUint(retx, 10), strconv.FormatUint(lost, 10), table.Bytes(rx))
	t.Render(d.out)
	d.printf("  DATA: payload bytes the client acknowledged per path; RATE: DATA over the whole download (%.1f s).\n", multi.secs)
	d.printf("  SRTT (mean while data was in flight) and MIN RTT as the exit's engine measures them: data out on\n")
	d.printf("  the path, acknowledged by the first ACK back on any path, so a slow path can show less than its RTT.\n")
	d.printf("  CLIENT RX: what the client received per path, IP headers included.\n\n")

	sum, haveSum := d.sumRate()
	d.printf("Aggregate:\n")
	a := &table.Table{Header: []string{"", "RATE", "TIME", "vs BEST SINGLE", "of SUM"}, Indent: "  "}
	ofSum := func(r float64) string {
		if !haveSum {
			return "-"
		}
		return table.Pct(r * 8 / float64(sum))
	}
	a.Add(fmt.Sprintf("mpath, %d paths (SOCKS5, %s)", len(d.specs), d.scheduler), table.Mbit(multi.rate()),
		fmt.Sprintf("%.1f s", multi.secs), fmt.Sprintf("%.2fx", multi.rate()/single.rate()), ofSum(multi.rate()))
	a.Add(fmt.Sprintf("best single path (path %d, kernel TCP)", best), table.Mbit(single.rate()),
		fmt.Sprintf("%.1f s", single.secs), "1.00x", ofSum(single.rate()))
	if haveSum {
		a.Add("sum of the configured path rates", table.Mbit(float64(sum)/8), "",
			fmt.Sprintf("%.2fx", float64(sum)/8/single.rate()), "100.0%")
	} else {
		a.Add("sum of the configured path rates", "unlimited", "", "-", "-")
	}
	a.Render(d.out)
	ratio := multi.rate() / single.rate()
	switch {
	case ratio > 1:
		d.printf("  mpath moved the file %.2fx as fast as the best single path", ratio)
	default:
		d.printf("  mpath was NOT faster than the best single path in this run (%.2fx)", ratio)
	}
	if haveSum {
		d.printf(", %s of the sum of the path rates", ofSum(multi.rate()))
	}
	d.printf(".\n  (Rates are tbf link rates: IP headers count, and mpath also pays 20 bytes of IPIP per packet.)\n")
	d.printf("  Machine after the downloads: %s; mpath's engine and relays run in user space and need CPU.\n\n", loadDesc())

	l := d.lab
	fileURL := d.apache.URL(demoFile)
	if d.keep {
		d.printf("Point your own curl at it:\n")
	} else {
		d.printf("To try it yourself, run 'mpath demo --keep' (it leaves all this running), then:\n")
	}
	d.printf("  ip netns exec %s curl --socks5-hostname %s %s -o /dev/null -w '%%{size_download} bytes, %%{speed_download} bytes/s\\n'\n", l.ClientNS(), demoSOCKS, fileURL)
	d.printf("  ip netns exec %s curl --proxy http://%s %s -o /dev/null\n", l.ClientNS(), demoHTTP, fileURL)
	d.printf("  ip netns exec %s %s status --metrics %s --watch 1s\n", l.ClientNS(), d.bin, demoClientMet)
	d.printf("  ip netns exec %s %s status --metrics %s:%d --watch 1s\n", l.ExitNS(), d.bin, l.ExitAddr(), demoExitMetrics)
}

func (d *demo) printKeep() {
	d.printf("\nLeft running (--keep): namespaces %s, %s..%s, %s with the relays, mpath exit, mpath client and Apache.\n",
		d.lab.ClientNS(), d.lab.RelayNS(1), d.lab.RelayNS(d.lab.N()), d.lab.ExitNS())
	d.printf("Logs: %s/{client,exit,relay*}.log\n", d.work)
	d.printf("Tear it all down with:\n  %s lab down --prefix %s && rm -rf %s %s %s\n", d.bin, d.prefix, d.work, d.docroot, d.apache.Dir())
}

// showLogs prints the tails of the logs of what was started, after a failure.
func (d *demo) showLogs() {
	tailOf := func(name, path string) {
		b, err := os.ReadFile(path)
		if err != nil || len(b) == 0 {
			return
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(lines) > 20 {
			lines = lines[len(lines)-20:]
		}
		fmt.Fprintf(os.Stderr, "--- %s (%s), last lines:\n%s\n", name, path, strings.Join(lines, "\n"))
	}
	// The nodes write their logs to the work dir whether or not they became ready.
	if d.work != "" {
		tailOf("mpath client", filepath.Join(d.work, "client.log"))
		tailOf("mpath exit", filepath.Join(d.work, "exit.log"))
	}
	if d.lab != nil {
		for i := 1; i <= d.lab.N(); i++ {
			tailOf(fmt.Sprintf("relay %d", i), d.lab.RelayLog(i))
		}
	}
	if d.apache != nil {
		if s := d.apache.Logs(); s != "" {
			fmt.Fprint(os.Stderr, s)
		}
	}
}

// cleanup stops what the demo started and removes what it made, then checks that
// nothing of the lab is left.
func (d *demo) cleanup(success bool) error {
	var errs []error
	var done []string
	if d.nodes != nil {
		d.nodes.Stop(5 * time.Second)
		done = append(done, "mpath client", "mpath exit")
	}
	if d.apache != nil {
		if err := d.apache.Stop(); err != nil {
			errs = append(errs, err)
		}
		done = append(done, "Apache")
	}
	if d.labTried {
		if err := lab.Down(d.prefix); err != nil {
			errs = append(errs, err)
		}
		if d.lab != nil {
			done = append(done, fmt.Sprintf("%d relays", d.lab.N()))
		}
		if info, err := lab.Status(d.prefix); err != nil || info.Up() {
			errs = append(errs, fmt.Errorf("cleanup: lab %q still present after lab down (%v): run 'mpath lab down --prefix %s'", d.prefix, err, d.prefix))
		} else {
			done = append(done, fmt.Sprintf("namespaces %s-* with their nftables tables", d.prefix))
		}
	}
	for _, dir := range []string{d.docroot, d.work} {
		if dir == "" {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("cleanup: %w", err))
		} else {
			done = append(done, dir)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	step := "[6/6] "
	if !success {
		step = ""
	}
	if len(done) > 0 {
		d.printf("%scleaned up: %s\n", step, strings.Join(done, ", "))
	}
	return nil
}

// loadDesc describes the machine's CPU count and load average: the engine, the relays
// and Apache all share the CPUs, and a busy machine slows mpath more than kernel TCP.
func loadDesc() string {
	s := fmt.Sprintf("%d CPUs", runtime.NumCPU())
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			s += fmt.Sprintf(", load average %s %s %s (1, 5, 15 min)", f[0], f[1], f[2])
		}
	}
	return s
}

// nsHTTPClient is an HTTP client whose connections are opened in namespace ns.
func nsHTTPClient(ns string) *http.Client { return lab.HTTPClient(ns) }
