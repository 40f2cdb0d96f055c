package benchlab

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"mpath/bench"
	"mpath/lab"
)

// The "pages" scenario (issue 11): many connections at once, as a browser loading a page
// opens them. Every fetch is its own connection (its own engine flow through the SOCKS
// front); all start together and the figure is the time until the last byte of the last
// one, beside kernel TCP on the best single path in the same run. A second table moves
// 100 x 1 MiB at once (the simnet many-flows case in the lab), with the share of the
// exit's packets that were re-sent.
//
//	pageLoad: files of each size in Apache's docroot ─► one bench.Run per size, all at
//	once, each with as many workers as fetches of that size (one connection each,
//	sha256 and length checked) ─► wall time from the start to the end of the last one

// pageLoad is what one page-load measurement fetches.
type pageLoad struct {
	Fetches int     // connections at once
	Sizes   []int64 // object sizes, assigned to the fetches in turn
}

// counts returns how many fetches get each size, in the order of Sizes.
func (p *pageLoad) counts() []int {
	n := make([]int, len(p.Sizes))
	for i := range p.Fetches {
		n[i%len(p.Sizes)]++
	}
	return n
}

func (p *pageLoad) bytes() int64 {
	var b int64
	for i, k := range p.counts() {
		b += int64(k) * p.Sizes[i]
	}
	return b
}

func (p *pageLoad) String() string {
	lo, hi := p.Sizes[0], p.Sizes[0]
	for _, s := range p.Sizes {
		lo, hi = min(lo, s), max(hi, s)
	}
	if lo == hi {
		return fmt.Sprintf("%d x %s", p.Fetches, sizeLabel(lo))
	}
	return fmt.Sprintf("%d x %s-%s", p.Fetches, sizeLabel(lo), sizeLabel(hi))
}

const mbit40 = 5_000_000 // 40 Mbit/s in bytes/s

// page is a small web page's objects: 50 fetches of 20-100 kB (3 MB in all).
var page = &pageLoad{Fetches: 50, Sizes: []int64{20_000, 40_000, 60_000, 80_000, 100_000}}

func buildPages(q bool) []*Table {
	pm := Measure{System: sysMpath, Kind: kindPage, Scheduler: "auto"}
	pk := Measure{System: sysSingle, Kind: kindPage, Path: 1}
	t := &Table{ID: "pages", Scenario: "pages", Chart: "none", RowHead: "paths",
		Title:   "Page load: parallel fetches of small objects through the SOCKS5 front, time to the last byte, vs kernel TCP on the best single path",
		Systems: []string{sysMpath, sysSingle},
		Target:  "mpath no later than kernel TCP on the best single path",
		Note: "Every fetch is its own connection (plain HTTP/1.0-style, no keep-alive), all started together " +
			"(bench.Run, one run per object size, as many workers as fetches); each body checked by length and sha256. " +
			"Best single path: the same fetches from the client namespace bound to path 1's address (kernel TCP through relay 1)."}
	col := "page load"
	t.Cols = []string{col}
	small := page
	if q {
		small = &pageLoad{Fetches: 10, Sizes: []int64{20_000, 60_000, 100_000}}
	}
	three := Topo{Paths: 3, Delay: repeatDelay(3, 5*time.Millisecond)}
	row := func(paths string) string { return paths + ", " + small.String() }
	pm.Page, pk.Page = small, small
	addCell(t, three, &Cell{Row: row("3 x 10 Mbit/s, RTT 10 ms"), Col: col, Series: col, Nodes: 3, Rates: repeatRate(3, mbit10)}, pm, pk)
	if !q {
		// The best single path here is the fastest one (RTT 10 ms).
		staggered := Topo{Paths: 3, Delay: []time.Duration{5 * time.Millisecond, 10 * time.Millisecond, 15 * time.Millisecond}}
		addCell(t, staggered, &Cell{Row: row("3 x 40 Mbit/s, RTT 10/20/30 ms"), Col: col, Series: col, Nodes: 3, Rates: repeatRate(3, mbit40)}, pm, pk)
	}
	for _, c := range t.Cells {
		t.Rows = append(t.Rows, c.Row)
	}
	if q {
		return []*Table{t}
	}
	many := &pageLoad{Fetches: 100, Sizes: []int64{1 << 20}}
	mm, mk := pm, pk
	mm.Page, mk.Page = many, many
	tm := &Table{ID: "manyflows", Scenario: "pages", Chart: "none", RowHead: "paths",
		Title:   "Many flows share the paths: 100 parallel 1 MiB downloads through the SOCKS5 front",
		Systems: []string{sysMpath, sysSingle},
		Target:  "mpath >= 90% of the sum, <= 5% of the exit's packets re-sent",
		Note: "As the page load, with 100 fetches of 1 MiB. Re-sent: the exit's mpath_path_retransmits_total over " +
			"mpath_path_tx_packets_total (all paths) during the run."}
	tm.Cols = []string{"100 x 1 MiB"}
	staggered := Topo{Paths: 3, Delay: []time.Duration{5 * time.Millisecond, 10 * time.Millisecond, 15 * time.Millisecond}}
	addCell(tm, staggered, &Cell{Row: "3 x 40 Mbit/s, RTT 10/20/30 ms", Col: tm.Cols[0], Series: tm.Cols[0], Nodes: 3, Rates: repeatRate(3, mbit40)}, mm, mk)
	tm.Rows = []string{tm.Cells[0].Row}
	return []*Table{t, tm}
}

// pageLoad runs m.Page's fetches at once, through the SOCKS front (mpath) or bound to
// path m.Path's address (kernel TCP), and times them to the last byte.
func (r *runner) pageLoad(ctx context.Context, c *Cell, m Measure) (*Outcome, error) {
	run := &Outcome{System: m.System}
	fail := func(err error) (*Outcome, error) {
		run.Err = err.Error()
		return run, err
	}
	p := m.Page
	files := make([]*file, len(p.Sizes))
	for i, s := range p.Sizes {
		f, err := r.fileOf(s)
		if err != nil {
			return fail(err)
		}
		files[i] = f
	}
	ns := r.lab.ClientNS()
	var local net.Addr
	if m.Kind == kindPage && m.Path > 0 {
		_, a, _ := r.lab.ClientPath(m.Path)
		local = &net.TCPAddr{IP: a.AsSlice()}
	}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		err := lab.Do(ns, func() (err error) {
			d := net.Dialer{LocalAddr: local}
			conn, err = d.DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
	mpath := m.Path == 0
	run.QuietWait = r.waitQuiet(ctx).Seconds()
	relayBefore := r.relayBytes(ctx)
	var txBefore, rtxBefore float64
	if mpath {
		txBefore, rtxBefore = r.exitCounters(ctx)
	}
	// Each request may take as long as the whole page over one path, three times over.
	timeout := r.timeCap()
	if rate := c.Rates[max(m.Path, 1)-1]; rate > 0 {
		timeout = max(timeout, 5*time.Second+time.Duration(3*float64(p.bytes())/float64(rate)*float64(time.Second)))
	}
	counts := p.counts()
	results := make([]bench.Result, len(files))
	errs := make([]error, len(files))
	var wg sync.WaitGroup
	start := time.Now()
	for i, f := range files {
		cfg := bench.Config{URL: r.apache.URL(f.name), Requests: counts[i], Concurrency: counts[i], Timeout: timeout,
			ExpectSHA256: hex.EncodeToString(f.sum[:]), ExpectLength: f.size, Dial: dial}
		if mpath {
			cfg.Proxy = "socks5h://" + lab.ClientSOCKS
		}
		wg.Go(func() { results[i], errs[i] = bench.Run(ctx, cfg) })
	}
	wg.Wait()
	wall := time.Since(start)
	for i, res := range results {
		err := errs[i]
		if err == nil && (res.Failed > 0 || res.Non2xx > 0 || res.Requests != int64(counts[i])) {
			err = fmt.Errorf("%s: %d of %d requests failed, %d non-2xx: %v", sizeLabel(p.Sizes[i]), res.Failed, res.Requests, res.Non2xx, res.Errors)
		}
		if err != nil {
			return fail(err)
		}
		run.Bytes += res.Bytes
	}
	if run.Bytes != p.bytes() {
		return fail(fmt.Errorf("%d body bytes, want %d", run.Bytes, p.bytes()))
	}
	run.Size = p.bytes()
	run.Fetches = p.Fetches
	run.Seconds = wall.Seconds()
	run.KBps = float64(run.Bytes) / wall.Seconds() / 1000
	run.Complete = true
	if after := r.relayBytes(ctx); relayBefore != nil && after != nil {
		run.PathBytes = make([]uint64, len(after))
		for i := range after {
			run.PathBytes[i] = after[i] - relayBefore[i]
		}
	}
	if mpath {
		if tx, rtx := r.exitCounters(ctx); tx > txBefore {
			f := (rtx - rtxBefore) / (tx - txBefore)
			run.Resent = &f
		}
	}
	return run, nil
}

// exitCounters reads the exit's packets sent and segments re-sent, over all paths (0, 0
// when its metrics cannot be read).
func (r *runner) exitCounters(ctx context.Context) (tx, rtx float64) {
	c := lab.HTTPClient(r.lab.ExitNS())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.lab.ExitMetricsAddr()+"/metrics", nil)
	if err != nil {
		return 0, 0
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, 0
	}
	defer resp.Body.Close()
	sums, err := sumMetrics(resp.Body, "mpath_path_tx_packets_total", "mpath_path_retransmits_total")
	if err != nil {
		return 0, 0
	}
	return sums[0], sums[1]
}

// sumMetrics sums each named Prometheus metric over its labels.
func sumMetrics(rd io.Reader, names ...string) ([]float64, error) {
	out := make([]float64, len(names))
	found := make([]bool, len(names))
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		for i, n := range names {
			if !strings.HasPrefix(line, n) || (len(line) > len(n) && line[len(n)] != '{' && line[len(n)] != ' ') {
				continue
			}
			j := strings.LastIndexByte(line, ' ')
			v, err := strconv.ParseFloat(line[j+1:], 64)
			if err != nil {
				return nil, fmt.Errorf("metrics: %q: %w", line, err)
			}
			out[i] += v
			found[i] = true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for i, ok := range found {
		if !ok {
			return nil, fmt.Errorf("metrics: no %s", names[i])
		}
	}
	return out, nil
}

// renderPages writes a page-load table: time to the last byte per system.
func renderPages(w io.Writer, t *Table) {
	var rows [][]string
	for _, c := range t.Cells {
		for _, s := range t.Systems {
			run := c.Runs[s]
			if run == nil {
				continue
			}
			if run.Err != "" {
				rows = append(rows, []string{c.Row, s, "FAILED: " + run.Err, "", "", "", ""})
				continue
			}
			resent := "-"
			if run.Resent != nil {
				resent = fmt.Sprintf("%.2f%%", 100**run.Resent)
			}
			rows = append(rows, []string{c.Row, s, fmt.Sprintf("%.3f", run.Seconds), fmt.Sprint(run.Fetches),
				sizeLabel(run.Bytes), kB(run.KBps * 1000), runFrac(c, run), resent})
		}
	}
	mdTable(w, []string{t.RowHead, "system", "last byte s", "fetches", "bytes", "kB/s", "of sum", "re-sent"}, rows)
	for _, f := range t.Findings {
		fmt.Fprintf(w, "\n- %s", f)
	}
	fmt.Fprintln(w)
}

// pagesFindings: mpath's time against the best single path's, and for many flows the
// share of the sum and the re-sent fraction against the targets.
func pagesFindings(t *Table) []string {
	var out []string
	for _, c := range t.Cells {
		m, k := c.Runs[sysMpath], c.Runs[sysSingle]
		if m == nil || m.Err != "" {
			continue
		}
		if k != nil && k.Err == "" && k.Seconds > 0 {
			out = append(out, fmt.Sprintf("%s: mpath %.3f s, best single path %.3f s: %.2f x its time (target <= 1: %s)",
				c.Row, m.Seconds, k.Seconds, m.Seconds/k.Seconds, met(m.Seconds <= k.Seconds)))
		}
		if t.ID == "manyflows" {
			f := frac(c, m)
			line := fmt.Sprintf("%s: mpath %s of the sum (target >= 90%%: %s)", c.Row, pct(f), met(f >= 0.9))
			if m.Resent != nil {
				line += fmt.Sprintf(", %.2f%% of the exit's packets re-sent (target <= 5%%: %s)", 100**m.Resent, met(*m.Resent <= 0.05))
			}
			out = append(out, line)
		}
	}
	return out
}

var errNoPage = errors.New("page-load measure without a page")
