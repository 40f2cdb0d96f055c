package benchlab

import (
	"fmt"
	"slices"
	"strconv"
	"time"
)

// Link rates in bytes/s.
const (
	lanRate = 12_500_000 // the thesis's 100 Mbit/s LAN: its "unlimited" paths
	mbit10  = 1_250_000
	mbit1   = 125_000
	kB100   = 100_000 // table 4.20/4.22's "other nodes 100 kB/s"
	mss     = 1440    // the engine's MSS: one reorder-buffer "packet" of table 4.24
)

// scenario is a named group of tables.
type scenario struct {
	name  string
	about string
	build func(q bool) []*Table // q: the --quick subset
}

// scenarios are the sweeps `mpath bench --lab` knows, in the order "all" runs them.
var scenarios = []scenario{
	{"rates", "tables 4.4/4.6, 4.8 (and 5.2): per-path rate x number of paths", buildRates},
	{"weights", "tables 4.12, 4.14 (and 5.4): path 1 slow, the others a 100 Mbit/s LAN, weight ratios 1:k", buildWeights},
	{"firstvar", "tables 4.20, 4.22: path 1 variable, the others 100 kB/s, weight ratios 1:k", buildFirstVar},
	{"buffer", "table 4.24: reorder buffer (receive window) size swept, one path; and three paths", buildBuffer},
	{"rtt", "beyond the thesis: two equal paths with different RTTs; long RTT differences with short and long bottleneck queues (issue 13)", buildRTT},
	{"loss", "beyond the thesis: three equal paths with random loss", buildLoss},
	{"proxy", "the proxy issue's figures: aggregate through the SOCKS front vs MPTCP vs best single path; time to first byte", buildProxy},
	{"transport", "the transport issue's figures: direct mode download and upload; engine vs kernel TCP on an unlimited path, CPU per GB", buildTransport},
	{"fast", "the speed issue's figures: 4 x 500 Mbit/s and one unlimited path, mpath vs kernel MPTCP vs kernel TCP, CPU s/GB per process role", buildFast},
	{"uplinks", "the real-uplinks issue's figures: 2 and 3 x 10 Mbit/s uplinks each behind a masquerading ISP router, relay-less mpath (udp/ipip) vs kernel MPTCP vs the best single uplink, download and upload", buildUplinks},
	{"pages", "the speed issue's many flows: a page load (50 parallel fetches of 20-100 kB) and 100 parallel 1 MiB downloads, vs kernel TCP on the best single path", buildPages},
}

// ScenarioNames lists the scenario names in the order "all" runs them.
func ScenarioNames() []string {
	var out []string
	for _, s := range scenarios {
		out = append(out, s.name)
	}
	return out
}

// ScenarioHelp describes every scenario, one per line.
func ScenarioHelp() string {
	var b []byte
	for _, s := range scenarios {
		b = fmt.Appendf(b, "  %-10s %s\n", s.name, s.about)
	}
	return string(b)
}

func rateCols(q bool) []int {
	if q {
		return []int{50, 200}
	}
	return thesisRates
}

func pick[T any](q bool, full []T, quick ...T) []T {
	if q {
		return quick
	}
	return full
}

func repeatRate(n int, r int64) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = r
	}
	return out
}

func ratioLabel(k int) string { return "1:" + strconv.Itoa(k) }

var (
	mpathAuto = Measure{System: sysMpath, Kind: kindMpath, Scheduler: "auto"}
	mptcp     = Measure{System: sysMPTCP, Kind: kindMPTCP}
)

func kernelOn(path int, system string) Measure {
	return Measure{System: system, Kind: kindKernel, Path: path}
}

func addCell(t *Table, topo Topo, c *Cell, ms ...Measure) {
	c.topo = topo
	c.measures = ms
	c.Runs = map[string]*Outcome{}
	if c.Sum == 0 && !slices.Contains(c.Rates, 0) {
		for _, r := range c.Rates[:c.Nodes] {
			c.Sum += r
		}
	}
	for i := range topo.Paths {
		if d := topo.delay(i); d > 0 || len(topo.Delay) > 0 {
			c.Delay = append(c.Delay, d.String())
		}
		if len(topo.Loss) > 0 {
			c.Loss = append(c.Loss, topo.loss(i))
		}
	}
	t.Cells = append(t.Cells, c)
}

func buildRates(q bool) []*Table {
	topo := Topo{Paths: 5}
	rates := rateCols(q)
	t44 := &Table{ID: "4.4/4.6", Scenario: "rates", Chart: "bars",
		Title:   "One rate-limited path, kernel TCP through one relay (the thesis's direct connection and IP tunnel)",
		RowHead: "", Systems: []string{sysKernel}, Thesis: []string{"4.4", "4.6"},
		Note: "kernel TCP: curl bound to path 1's address, through relay 1 (a userspace forwarder): our analogue of " +
			"the thesis's IP tunnel (4.6); 4.4 had no relay at all."}
	t48 := &Table{ID: "4.8", Scenario: "rates", Chart: "lines", XLabel: "nodes (paths)",
		Title:   "Multipath with every path rate-limited: throughput by number of paths (5.2 is the 150 kB/s column)",
		RowHead: "nodes", Systems: []string{sysMpath, sysMPTCP}, Thesis: []string{"4.8", "4.10"},
		Note: "mpath: scheduler auto, through the SOCKS5 front and the exit; MPTCP: kernel MPTCP, one subflow per path. " +
			"Thesis 4.8 is without its reorder buffer, 4.10 with it."}
	row44 := "kernel TCP, 1 path"
	t44.Rows = []string{row44}
	for _, r := range rates {
		col := fmt.Sprintf("%d kB/s", r)
		t44.Cols = append(t44.Cols, col)
		t48.Cols = append(t48.Cols, col)
		th := map[string]float64{}
		if v, ok := thesisAt(thesis44, r); ok {
			th["4.4"] = v
			th["4.6"], _ = thesisAt(thesis46, r)
		}
		addCell(t44, topo, &Cell{Row: row44, Col: col, X: float64(r), Series: col, Nodes: 1,
			Rates: []int64{int64(r) * 1000}, Thesis: th}, kernelOn(1, sysKernel))
	}
	nodes := pick(q, []int{1, 2, 3, 4, 5}, 1, 2)
	for _, n := range nodes {
		row := strconv.Itoa(n)
		t48.Rows = append(t48.Rows, row)
		for _, r := range rates {
			col := fmt.Sprintf("%d kB/s", r)
			th := map[string]float64{}
			if v, ok := thesisAt(thesis48[n-1], r); ok {
				th["4.8"] = v
				th["4.10"], _ = thesisAt(thesis410[n-1], r)
			}
			addCell(t48, topo, &Cell{Row: row, Col: col, X: float64(n), Series: col, Nodes: n,
				Rates: repeatRate(n, int64(r)*1000), Thesis: th}, mpathAuto, mptcp)
		}
	}
	return []*Table{t44, t48}
}

// weightsFor returns the per-path weights for ratio 1:k over n paths: path 1 gets one
// packet for every k spread evenly over the others (so path 1 weighs n-1 against k each).
func weightsFor(n, k int) []int {
	w := make([]int, n)
	w[0] = max(n-1, 1)
	for i := 1; i < n; i++ {
		w[i] = k
	}
	return w
}

// weightedTable builds a 1:k table: path 1 at the column's rate, the others at other.
func weightedTable(id, scen, title, note string, n int, other int64, ratios, rates []int, thesis map[int]thesisRow) *Table {
	topo := Topo{Paths: 5}
	t := &Table{ID: id, Scenario: scen, Title: title, Note: note, Chart: "lines", XLabel: "weight ratio 1:k",
		RowHead: "weight ratio", Systems: []string{sysWeighted, sysAuto, sysMPTCP}, Thesis: []string{id}}
	for _, r := range rates {
		t.Cols = append(t.Cols, fmt.Sprintf("%d kB/s", r))
	}
	for _, k := range ratios {
		row := ratioLabel(k)
		t.Rows = append(t.Rows, row)
		for _, r := range rates {
			col := fmt.Sprintf("%d kB/s", r)
			rates := append([]int64{int64(r) * 1000}, repeatRate(n-1, other)...)
			th := map[string]float64{}
			if v, ok := thesisAt(thesis[k], r); ok && thesis[k] != (thesisRow{}) {
				th[id] = v
			}
			w := Measure{System: sysWeighted, Kind: kindMpath, Scheduler: "weighted", Weights: weightsFor(n, k)}
			a := Measure{System: sysAuto, Kind: kindMpath, Scheduler: "auto"}
			addCell(t, topo, &Cell{Row: row, Col: col, X: float64(k), Series: col, Nodes: n, Rates: rates, Thesis: th}, w, a, mptcp)
		}
	}
	return t
}

func buildWeights(q bool) []*Table {
	note := "Path 1 is limited to the column's rate, the other paths to 100 Mbit/s (the thesis's LAN). " +
		"mpath weighted: 1:k = path 1 gets one packet for every k spread evenly over the others; mpath auto " +
		"and MPTCP take no weights (one measurement per column, shown in every row)."
	if q {
		return []*Table{weightedTable("4.12", "weights", "Two paths, one slow, weighted distribution", note, 2, lanRate, []int{5}, []int{50}, thesis412)}
	}
	return []*Table{
		weightedTable("4.12", "weights", "Two paths, one slow, weighted distribution", note, 2, lanRate, thesisRatios, thesisRates, thesis412),
		weightedTable("4.14", "weights", "Five paths, one slow, weighted distribution (5.4 is the 150 kB/s column)", note, 5, lanRate, thesisRatios[1:], thesisRates, thesis414),
	}
}

func buildFirstVar(q bool) []*Table {
	note := "Path 1 is limited to the column's rate, the other paths to 100 kB/s. Weights as in 4.12. " +
		"Thesis 4.20 is without its buffer, 4.22 with it."
	if q {
		return []*Table{weightedTable("4.20", "firstvar", "Two paths, path 1 variable, path 2 at 100 kB/s", note, 2, kB100, []int{5}, []int{50}, thesis420)}
	}
	return []*Table{
		weightedTable("4.20", "firstvar", "Two paths, path 1 variable, path 2 at 100 kB/s", note, 2, kB100, thesisRatios, thesisRates, thesis420),
		weightedTable("4.22", "firstvar", "Five paths, path 1 variable, paths 2-5 at 100 kB/s", note, 5, kB100, thesisRatios[1:], thesisRates, thesis422),
	}
}

func bufferTable(id, title string, n int, buffers, rates []int, thesis bool) *Table {
	topo := Topo{Paths: 5}
	t := &Table{ID: id, Scenario: "buffer", Title: title, Chart: "lines", XLabel: "reorder buffer (packets of 1440 bytes)",
		RowHead: "buffer (packets)", Systems: []string{sysMpath, sysMPTCP},
		Note: "mpath: --recv-window = buffer x 1440 bytes on both nodes (the engine's reorder queue is bounded by " +
			"the receive window); MPTCP keeps the kernel's default buffers (one measurement per column)."}
	if thesis {
		t.Thesis = []string{"4.24"}
	}
	for _, r := range rates {
		t.Cols = append(t.Cols, fmt.Sprintf("%d kB/s", r))
	}
	for _, b := range buffers {
		row := strconv.Itoa(b)
		t.Rows = append(t.Rows, row)
		for _, r := range rates {
			col := fmt.Sprintf("%d kB/s", r)
			th := map[string]float64{}
			if v, ok := thesisAt(thesis424[b], r); ok && thesis {
				th["4.24"] = v
			}
			m := Measure{System: sysMpath, Kind: kindMpath, Scheduler: "auto", RecvWindow: b * mss}
			addCell(t, topo, &Cell{Row: row, Col: col, X: float64(b), Series: col, Nodes: n,
				Rates: repeatRate(n, int64(r)*1000), Thesis: th}, m, mptcp)
		}
	}
	return t
}

func buildBuffer(q bool) []*Table {
	if q {
		return []*Table{bufferTable("4.24", "Reorder buffer size, one path", 1, []int{1, 20}, []int{100}, true)}
	}
	return []*Table{
		bufferTable("4.24", "Reorder buffer size, one path", 1, thesisBuffers, thesisRates, true),
		bufferTable("4.24x3", "Reorder buffer size, three paths (beyond the thesis)", 3, thesisBuffers, []int{50, 100, 500}, false),
	}
}

func buildRTT(q bool) []*Table {
	t := &Table{ID: "rtt", Scenario: "rtt", Chart: "bars", RowHead: "RTTs",
		Title:   "Two 10 Mbit/s paths with different RTTs (beyond the thesis)",
		Systems: []string{sysMpath, sysMPTCP, sysSingle},
		Note:    "RTT = twice the one-way delay each relay adds; best single path: kernel TCP over path 1 (the short RTT)."}
	col := "2 x 10 Mbit/s"
	t.Cols = []string{col}
	for _, d2 := range pick(q, []int{5, 20, 40, 80}, 40) {
		row := fmt.Sprintf("%d / %d ms", 10, 2*d2)
		t.Rows = append(t.Rows, row)
		topo := Topo{Paths: 2, Delay: []time.Duration{5 * time.Millisecond, time.Duration(d2) * time.Millisecond}}
		addCell(t, topo, &Cell{Row: row, Col: col, X: float64(2 * d2), Series: col, Nodes: 2, Rates: repeatRate(2, mbit10)},
			mpathAuto, mptcp, kernelOn(1, sysSingle))
	}
	return []*Table{t, rttQueueTable(q)}
}

// rttQueues are the bottleneck queues of the long-RTT table: short as an AQM keeps it
// (tbf latency 5 ms) and long (200 ms).
var rttQueues = []struct {
	col string
	q   time.Duration
}{{"short queue (5 ms)", 5 * time.Millisecond}, {"long queue (200 ms)", 200 * time.Millisecond}}

// rttQueueTable: issue 13's rows, RTT differences of 150 ms and more (10/160, 10/300,
// 10/600 ms), with the long path also losing 30% of its packets, each with a short and
// a long bottleneck queue.
func rttQueueTable(q bool) *Table {
	t := &Table{ID: "rtt-queue", Scenario: "rtt", Chart: "bars", RowHead: "RTTs",
		Title:   "Two 10 Mbit/s paths, long RTT differences, short and long bottleneck queues (beyond the thesis)",
		Systems: []string{sysMpath, sysMPTCP, sysSingle},
		Note: "RTT = twice the one-way delay each relay adds; the queue is the tbf limit on both paths as time at " +
			"the path's rate; loss is per packet and direction on path 2, added by its relay; best single path: " +
			"kernel TCP over path 1 (the short RTT)."}
	for _, qc := range pick(q, rttQueues, rttQueues[0]) {
		t.Cols = append(t.Cols, qc.col)
	}
	type rc struct {
		d2   int // path 2's one-way delay, ms
		loss float64
	}
	rows := pick(q, []rc{{80, 0}, {150, 0}, {300, 0}, {80, 0.3}, {150, 0.3}, {300, 0.3}}, rc{150, 0})
	for i, r := range rows {
		row := fmt.Sprintf("%d / %d ms", 10, 2*r.d2)
		var loss []float64
		if r.loss > 0 {
			row += fmt.Sprintf(", path 2 loses %.0f%%", 100*r.loss)
			loss = []float64{0, r.loss}
		}
		t.Rows = append(t.Rows, row)
		for _, qc := range pick(q, rttQueues, rttQueues[0]) {
			topo := Topo{Paths: 2, Delay: []time.Duration{5 * time.Millisecond, time.Duration(r.d2) * time.Millisecond}, Loss: loss, Queue: qc.q}
			addCell(t, topo, &Cell{Row: row, Col: qc.col, X: float64(i), Series: qc.col, Nodes: 2, Rates: repeatRate(2, mbit10)},
				mpathAuto, mptcp, kernelOn(1, sysSingle))
		}
	}
	return t
}

func buildLoss(q bool) []*Table {
	t := &Table{ID: "loss", Scenario: "loss", Chart: "bars", RowHead: "loss",
		Title:   "Three 10 Mbit/s paths, RTT 20 ms, with random loss (beyond the thesis)",
		Systems: []string{sysMpath, sysMPTCP, sysSingle},
		Note:    "Loss is per packet and direction, added by the relay; best single path: kernel TCP over path 1."}
	col := "3 x 10 Mbit/s"
	t.Cols = []string{col}
	type lc struct {
		row  string
		loss []float64
	}
	cases := []lc{{"none", nil}, {"path 3: 0.5%", []float64{0, 0, 0.005}}, {"path 3: 2%", []float64{0, 0, 0.02}}, {"all: 0.5%", []float64{0.005, 0.005, 0.005}}}
	if q {
		cases = cases[2:3]
	}
	for i, c := range cases {
		t.Rows = append(t.Rows, c.row)
		d := 10 * time.Millisecond
		topo := Topo{Paths: 3, Delay: []time.Duration{d, d, d}, Loss: c.loss}
		addCell(t, topo, &Cell{Row: c.row, Col: col, X: float64(i), Series: col, Nodes: 3, Rates: repeatRate(3, mbit10)},
			mpathAuto, mptcp, kernelOn(1, sysSingle))
	}
	return []*Table{t}
}

func buildProxy(q bool) []*Table {
	t := &Table{ID: "proxy", Scenario: "proxy", Chart: "bars", RowHead: "paths",
		Title:   "Aggregate download through the SOCKS5 front vs kernel MPTCP vs the best single path",
		Systems: []string{sysMpath, sysMPTCP, sysSingle},
		Target:  "mpath >= 90% of the sum on 5 x 10 and on 1 + 4 x 10 Mbit/s (MPTCP roughly 35-60% there); >= 85% with RTTs 10 and 80 ms",
		Note:    "RTT 10 ms on every path unless the row says otherwise; best single path: kernel TCP over the fastest path."}
	col := "download"
	t.Cols = []string{col}
	five := Topo{Paths: 5, Delay: repeatDelay(5, 5*time.Millisecond)}
	if !q {
		addCell(t, five, &Cell{Row: "5 x 10 Mbit/s", Col: col, X: 0, Series: col, Nodes: 5, Rates: repeatRate(5, mbit10)},
			mpathAuto, mptcp, kernelOn(1, sysSingle))
		addCell(t, five, &Cell{Row: "1 + 4 x 10 Mbit/s", Col: col, X: 1, Series: col, Nodes: 5,
			Rates: append([]int64{mbit1}, repeatRate(4, mbit10)...)}, mpathAuto, mptcp, kernelOn(2, sysSingle))
	}
	addCell(t, Topo{Paths: 2, Delay: []time.Duration{5 * time.Millisecond, 40 * time.Millisecond}},
		&Cell{Row: "2 x 10 Mbit/s, RTT 10 / 80 ms", Col: col, X: 2, Series: col, Nodes: 2, Rates: repeatRate(2, mbit10)},
		mpathAuto, mptcp, kernelOn(1, sysSingle))
	for _, c := range t.Cells {
		t.Rows = append(t.Rows, c.Row)
	}
	tt := &Table{ID: "ttfb", Scenario: "proxy", Chart: "none", RowHead: "paths",
		Title:   "Time to first byte of a small page: through mpath minus direct, in round trips",
		Systems: []string{sysTTFBMpath, sysTTFBDir},
		Target:  "mpath's extra time to first byte <= 1 round trip",
		Note: "bench.Run, 20 sequential requests of a 1 kB page, a new connection each; direct: kernel TCP from the " +
			"client namespace (through relay 1); RTT: the direct runs' median TCP connect time."}
	tt.Cols = []string{"1 kB page"}
	tt.Rows = []string{"5 x 10 Mbit/s, RTT 10 ms"}
	addCell(tt, five, &Cell{Row: tt.Rows[0], Col: tt.Cols[0], Series: tt.Cols[0], Nodes: 5, Rates: repeatRate(5, mbit10)},
		Measure{System: sysTTFBMpath, Kind: kindTTFB, Scheduler: "auto"}, Measure{System: sysTTFBDir, Kind: kindTTFB, Direct: true})
	return []*Table{t, tt}
}

func repeatDelay(n int, d time.Duration) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = d
	}
	return out
}

func buildTransport(q bool) []*Table {
	td := &Table{ID: "direct", Scenario: "transport", Chart: "bars", RowHead: "direction",
		Title:   "Direct mode (no exit: engine flows straight to an unmodified kernel server), 3 x 10 Mbit/s, RTT 10 ms",
		Systems: []string{sysMpath, sysKernel},
		Target:  "upload over 3 equal paths >= 85% of their sum",
		Note: "Download: the server's kernel sends everything through relay 1 (its route back), so the sum is one " +
			"path's rate. Upload: the engine sprays over all three paths to a kernel sink (sha256 and byte count checked " +
			"at the sink). kernel TCP: curl bound to path 1."}
	td.Cols = []string{"3 x 10 Mbit/s"}
	topo3 := Topo{Paths: 3, Delay: repeatDelay(3, 5*time.Millisecond)}
	direct := Measure{System: sysMpath, Kind: kindMpath, Scheduler: "auto", Direct: true}
	directUp := direct
	directUp.Upload = true
	if !q {
		addCell(td, topo3, &Cell{Row: "download (1 path)", Col: td.Cols[0], X: 0, Series: td.Cols[0], Nodes: 3,
			Rates: repeatRate(3, mbit10), Sum: mbit10}, direct, kernelOn(1, sysKernel))
	}
	addCell(td, topo3, &Cell{Row: "upload (3 paths)", Col: td.Cols[0], X: 1, Series: td.Cols[0], Nodes: 3,
		Rates: repeatRate(3, mbit10)}, directUp, Measure{System: sysKernel, Kind: kindKernel, Path: 1, Upload: true})
	for _, c := range td.Cells {
		td.Rows = append(td.Rows, c.Row)
	}
	tu := &Table{ID: "unlimited", Scenario: "transport", Chart: "bars", RowHead: "path",
		Title:   "One path with no rate limit: the engine against kernel TCP over the same path, with CPU cost",
		Systems: []string{sysMpath, sysKernel},
		Target:  "mpath >= 0.5 x kernel TCP",
		Note: "mpath: tunnel mode through the SOCKS5 front (client, relay, exit, Apache); kernel TCP: curl bound to the " +
			"path's address to the same Apache through the same relay. CPU: utime+stime from /proc/PID/stat of every " +
			"process in the lab's namespaces (mpath client, mpath exit, relay, Apache) before and after, plus curl's " +
			"own rusage; the system-wide busy time from /proc/stat is shown apart (it includes everything else on the machine)."}
	tu.Cols = []string{"unlimited"}
	tu.Rows = []string{"1 path"}
	addCell(tu, Topo{Paths: 1}, &Cell{Row: "1 path", Col: "unlimited", Series: "unlimited", Nodes: 1, Rates: []int64{0}},
		Measure{System: sysMpath, Kind: kindMpath, Scheduler: "auto", CPU: true},
		Measure{System: sysKernel, Kind: kindKernel, Path: 1, CPU: true})
	return []*Table{td, tu}
}
