package benchlab

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func tablesOf(t *testing.T, quick bool, names ...string) map[string]*Table {
	t.Helper()
	ts, err := Tables(Options{Scenarios: names, Quick: quick, Bin: "/bin/true"})
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]*Table{}
	for _, tb := range ts {
		if m[tb.ID] != nil {
			t.Fatalf("table %s twice", tb.ID)
		}
		m[tb.ID] = tb
	}
	return m
}

// The tables carry the thesis's figures in the right cells: spot checks against
// THESIS-TABLES.md, including the chapter 5 tables that are columns of chapter 4's.
func TestThesisFiguresInCells(t *testing.T) {
	m := tablesOf(t, false, "all")
	for _, c := range []struct {
		table, row, col, thesis string
		want                    float64
	}{
		{"4.4/4.6", "kernel TCP, 1 path", "20 kB/s", "4.4", 19.16},
		{"4.4/4.6", "kernel TCP, 1 path", "150 kB/s", "4.6", 148.8},
		{"4.8", "1", "20 kB/s", "4.8", 18.59},
		{"4.8", "5", "150 kB/s", "4.8", 700.82}, // table 5.2's 5 nodes
		{"4.8", "2", "150 kB/s", "4.10", 122.87},
		{"4.8", "3", "500 kB/s", "4.8", 1145.6},
		{"4.12", "1:1", "500 kB/s", "4.12", 615.69},
		{"4.12", "1:50", "20 kB/s", "4.12", 6735.84},
		{"4.14", "1:20", "150 kB/s", "4.14", 5525.86}, // table 5.4
		{"4.14", "1:5", "250 kB/s", "4.14", 2471.8},
		{"4.20", "1:15", "250 kB/s", "4.20", 121.61},
		{"4.22", "1:25", "100 kB/s", "4.22", 315.31},
		{"4.24", "10", "500 kB/s", "4.24", 223.16},
		{"4.24", "50", "50 kB/s", "4.24", 47.1},
	} {
		tb := m[c.table]
		if tb == nil {
			t.Fatalf("no table %s", c.table)
		}
		cell := tb.cell(c.row, c.col)
		if cell == nil {
			t.Fatalf("table %s has no cell %s/%s", c.table, c.row, c.col)
		}
		if got := cell.Thesis[c.thesis]; got != c.want {
			t.Errorf("table %s %s/%s thesis %s = %v, want %v", c.table, c.row, c.col, c.thesis, got, c.want)
		}
	}
	// 4.14 starts at 1:5 (the thesis has no 1:1 row for five nodes); 4.24x3 has no thesis.
	if m["4.14"].cell("1:1", "20 kB/s") != nil || len(m["4.24x3"].cell("1", "50 kB/s").Thesis) != 0 {
		t.Error("cells the thesis does not have")
	}
}

func TestTableShapes(t *testing.T) {
	m := tablesOf(t, false, "all")
	want := map[string]int{"4.4/4.6": 7, "4.8": 35, "4.12": 49, "4.14": 42, "4.20": 49, "4.22": 42, "4.24": 49,
		"4.24x3": 21, "rtt": 4, "rtt-queue": 12, "loss": 4, "proxy": 3, "ttfb": 1, "direct": 2, "unlimited": 1,
		"fast": 1, "fast-unlimited": 1, "pages": 2, "manyflows": 1, "uplinks": 6}
	for id, n := range want {
		tb := m[id]
		if tb == nil {
			t.Errorf("no table %s", id)
			continue
		}
		if len(tb.Cells) != n {
			t.Errorf("table %s: %d cells, want %d", id, len(tb.Cells), n)
		}
		for _, c := range tb.Cells {
			if len(c.measures) != len(tb.Systems) {
				t.Errorf("table %s cell %s/%s: %d measures for %d systems", id, c.Row, c.Col, len(c.measures), len(tb.Systems))
			}
			for i, ms := range c.measures {
				if ms.System != tb.Systems[i] {
					t.Errorf("table %s: measure %q in the place of system %q", id, ms.System, tb.Systems[i])
				}
			}
			if len(c.Rates) < c.Nodes || c.Nodes > c.topo.Paths {
				t.Errorf("table %s cell %s/%s: %d rates, %d nodes, %d lab paths", id, c.Row, c.Col, len(c.Rates), c.Nodes, c.topo.Paths)
			}
			if !slices.Contains(tb.Rows, c.Row) || !slices.Contains(tb.Cols, c.Col) {
				t.Errorf("table %s: cell %s/%s outside its rows/cols", id, c.Row, c.Col)
			}
		}
	}
	if len(m) != len(want) {
		t.Errorf("%d tables, want %d", len(m), len(want))
	}
	// Sums: nodes x rate in 4.8; the slow path plus the LAN in 4.12; one path for the
	// direct-mode download.
	if c := m["4.8"].cell("3", "200 kB/s"); c.Sum != 600_000 {
		t.Errorf("4.8 3 nodes x 200 kB/s: sum %d", c.Sum)
	}
	if c := m["4.14"].cell("1:10", "50 kB/s"); c.Sum != 50_000+4*lanRate {
		t.Errorf("4.14: sum %d", c.Sum)
	}
	if c := m["4.22"].cell("1:10", "50 kB/s"); c.Sum != 50_000+4*kB100 {
		t.Errorf("4.22: sum %d", c.Sum)
	}
	if c := m["direct"].cell("download (1 path)", "3 x 10 Mbit/s"); c.Sum != mbit10 {
		t.Errorf("direct download: sum %d, want one path's %d", c.Sum, mbit10)
	}
	if c := m["unlimited"].Cells[0]; c.Sum != 0 {
		t.Errorf("unlimited path: sum %d, want none", c.Sum)
	}
	// Proxy: the 1 Mbit/s path is path 1, and the best single path is then path 2.
	p := m["proxy"].cell("1 + 4 x 10 Mbit/s", "download")
	if p.Rates[0] != mbit1 || p.measures[2].Path != 2 {
		t.Errorf("proxy 1 + 4 x 10: rates %v, single path %d", p.Rates, p.measures[2].Path)
	}
	// RTT rows: the relays' one-way delays give the row's RTTs.
	if c := m["rtt"].cell("10 / 80 ms", "2 x 10 Mbit/s"); c.topo.delay(0) != 5*time.Millisecond || c.topo.delay(1) != 40*time.Millisecond {
		t.Errorf("rtt 10/80: delays %v", c.topo.Delay)
	}
	// Issue 13's rows: the long path's delay, its loss, and the column's queue.
	if c := m["rtt-queue"].cell("10 / 300 ms, path 2 loses 30%", "short queue (5 ms)"); c.topo.delay(1) != 150*time.Millisecond ||
		c.topo.loss(1) != 0.3 || c.topo.loss(0) != 0 || c.topo.Queue != 5*time.Millisecond {
		t.Errorf("rtt-queue 10/300 30%%, short queue: topo %+v", c.topo)
	}
	// Uplinks: the NAT topology, ISP 2 dropping protocol 4 where mpath uses udp, and
	// the upload rows measure uploads with every system.
	for _, c := range m["uplinks"].Cells {
		mp := c.measures[0]
		if !c.topo.NAT || (mp.Encap == "udp") != (c.topo.Drop4 == 2) || c.Sum != int64(c.Nodes)*mbit10 {
			t.Errorf("uplinks %s: topo %+v, encap %q, sum %d", c.Row, c.topo, mp.Encap, c.Sum)
		}
		for _, ms := range c.measures {
			if ms.Upload != strings.HasSuffix(c.Row, "upload") {
				t.Errorf("uplinks %s: %s upload=%v", c.Row, ms.System, ms.Upload)
			}
		}
	}
	if c := m["rtt-queue"].cell("10 / 600 ms", "long queue (200 ms)"); c.topo.delay(1) != 300*time.Millisecond || c.topo.Queue != 200*time.Millisecond {
		t.Errorf("rtt-queue 10/600, long queue: topo %+v", c.topo)
	}
}

func TestQuickIsSmall(t *testing.T) {
	full, quick := tablesOf(t, false, "all"), tablesOf(t, true, "all")
	total := 0
	for id, tb := range quick {
		total += len(tb.Cells)
		if len(tb.Cells) > len(full[id].Cells) || len(tb.Cells) == 0 {
			t.Errorf("quick table %s: %d cells (full %d)", id, len(tb.Cells), len(full[id].Cells))
		}
	}
	if total > 24 {
		t.Errorf("quick runs %d cells", total)
	}
	o := Options{Scenarios: []string{"rates"}, Quick: true, Bin: "/bin/true"}
	if err := o.fill(); err != nil || o.Seconds != 1 {
		t.Errorf("quick seconds %v (%v)", o.Seconds, err)
	}
}

func TestOptionsErrors(t *testing.T) {
	for _, sc := range [][]string{nil, {"bogus"}, {"rates", "nope"}} {
		if _, err := Tables(Options{Scenarios: sc, Bin: "/bin/true"}); err == nil {
			t.Errorf("scenarios %q accepted", sc)
		}
	}
	all, err := Tables(Options{Scenarios: []string{"all"}, Bin: "/bin/true"})
	if err != nil {
		t.Fatal(err)
	}
	ts, err := Tables(Options{Scenarios: []string{"rates", "all", "rates"}, Bin: "/bin/true"})
	if err != nil || len(ts) != len(all) {
		t.Errorf("rates,all,rates: %d tables, %v; all alone: %d", len(ts), err, len(all))
	}
	names := ScenarioNames()
	for _, n := range []string{"rates", "rtt", "fast"} {
		if !slices.Contains(names, n) || !strings.Contains(ScenarioHelp(), n) {
			t.Errorf("scenario %q missing from %v or the help", n, names)
		}
	}
	if !strings.Contains(ScenarioHelp(), "4.12") {
		t.Error("scenario help")
	}
}

// --cells and --systems: a few cells of a sweep, only the systems asked for.
func TestCellsFilter(t *testing.T) {
	ts, err := Tables(Options{Scenarios: []string{"rtt"}, Bin: "/bin/true",
		Cells: `rtt-queue: 10 / 160 ms(, path 2 loses 30%)?, short`, Systems: `^mpath$`})
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 1 || ts[0].ID != "rtt-queue" {
		t.Fatalf("got %d tables, want rtt-queue alone", len(ts))
	}
	tb := ts[0]
	if len(tb.Cells) != 2 || len(tb.Rows) != 2 || len(tb.Cols) != 1 || tb.Cols[0] != "short queue (5 ms)" {
		t.Fatalf("cells %d, rows %q, cols %q", len(tb.Cells), tb.Rows, tb.Cols)
	}
	for _, c := range tb.Cells {
		if !strings.HasPrefix(c.Row, "10 / 160 ms") || len(c.measures) != 1 || c.measures[0].System != sysMpath {
			t.Errorf("cell %q/%q measures %v", c.Row, c.Col, c.measures)
		}
	}
	for _, o := range []Options{{Cells: "no such cell"}, {Cells: "("}, {Systems: "("}} {
		o.Scenarios, o.Bin = []string{"rtt"}, "/bin/true"
		if _, err := Tables(o); err == nil {
			t.Errorf("cells %q systems %q accepted", o.Cells, o.Systems)
		}
	}
}

// Weight ratio 1:k: path 1 gets one packet for every k over the other paths together.
func TestWeightsFor(t *testing.T) {
	for _, n := range []int{2, 5} {
		for _, k := range thesisRatios {
			w := weightsFor(n, k)
			others := 0
			for _, x := range w[1:] {
				others += x
				if x != w[1] {
					t.Errorf("n=%d k=%d: uneven %v", n, k, w)
				}
			}
			if others != k*w[0] || len(w) != n {
				t.Errorf("n=%d k=%d: weights %v: path 1 : others = %d : %d", n, k, w, w[0], others)
			}
			for _, x := range w {
				if x < 1 || x > 1000 {
					t.Errorf("weight %d outside --path's 1..1000", x)
				}
			}
		}
	}
}

func TestExpectedRateAndSizes(t *testing.T) {
	c := &Cell{Nodes: 2, Rates: []int64{50_000, lanRate}, Sum: 50_000 + lanRate}
	// 1:5: path 1 carries a sixth of the packets, so 6 x 50 kB/s at most.
	if got := expectedRate(c, Measure{Kind: kindMpath, Weights: []int{1, 5}}); got != 300_000 {
		t.Errorf("1:5 bound %d", got)
	}
	if got := expectedRate(c, Measure{Kind: kindMpath}); got != c.Sum {
		t.Errorf("auto: %d", got)
	}
	if got := expectedRate(c, Measure{Kind: kindKernel, Path: 2}); got != lanRate {
		t.Errorf("kernel path 2: %d", got)
	}
	r := &runner{opt: Options{Seconds: 5}}
	for _, c := range []struct{ rate, want int64 }{{20_000, 100_000}, {100_000, 500_000}, {130_000, 700_000}, {1, 70_000}, {0, 200_000_000}, {1e9, 200_000_000}} {
		if got := r.sizeFor(c.rate); got != c.want {
			t.Errorf("sizeFor(%d) = %d, want %d", c.rate, got, c.want)
		}
	}
	for _, c := range []struct{ in, want int64 }{{1000, 1000}, {1001, 1500}, {2500, 3000}, {6000, 7000}, {7001, 10000}} {
		if got := niceSize(c.in); got != c.want {
			t.Errorf("niceSize(%d) = %d, want %d", c.in, got, c.want)
		}
	}
	if r.timeCap() != 12500*time.Millisecond {
		t.Errorf("time cap %v", r.timeCap())
	}
}

func TestTBFArgs(t *testing.T) {
	got := strings.Join(tbfArgs(20_000, 0), " ")
	if got != "rate 160000bit burst 4096 limit 32768" {
		t.Errorf("20 kB/s: %s", got)
	}
	got = strings.Join(tbfArgs(lanRate, 0), " ")
	if got != "rate 100000000bit burst 125000 limit 1375000" {
		t.Errorf("100 Mbit/s: %s", got)
	}
	// A queue of 5 ms at 10 Mbit/s: 6250 bytes on top of the 12500-byte bucket.
	got = strings.Join(tbfArgs(mbit10, 5*time.Millisecond), " ")
	if got != "rate 10000000bit burst 12500 limit 18750" {
		t.Errorf("10 Mbit/s, 5 ms queue: %s", got)
	}
}

// The schedule visits each node configuration once (no restart back and forth), keeps
// every measurement, and puts a cell's MPTCP right after the cell's first mpath measure.
func TestSchedule(t *testing.T) {
	m := tablesOf(t, false, "all")
	for _, id := range []string{"4.8", "4.12", "4.22", "4.24", "proxy", "loss"} {
		tb := m[id]
		jobs := schedule(tb)
		n := 0
		for _, c := range tb.Cells {
			n += len(c.measures)
		}
		if len(jobs) != n {
			t.Fatalf("%s: %d jobs for %d measures", id, len(jobs), n)
		}
		seenTopo, seenNodes := map[string]bool{}, map[string]bool{}
		lastTopo, lastNodes := "", ""
		for i, j := range jobs {
			if k := j.c.topo.key(); k != lastTopo {
				if seenTopo[k] {
					t.Errorf("%s: topology %s revisited at job %d", id, k, i)
				}
				seenTopo[k], lastTopo = true, k
			}
			if needsNodes(j.m) {
				k := lastTopo + j.m.nodesKey(j.c.Nodes)
				if k != lastNodes {
					if seenNodes[k] {
						t.Errorf("%s: node configuration %s restarted again at job %d", id, k, i)
					}
					seenNodes[k], lastNodes = true, k
				}
			}
			if j.m.Kind == kindMPTCP && i > 0 && (jobs[i-1].c != j.c || jobs[i-1].m.Kind != kindMpath) {
				// Allowed only when the cell's first mpath measure is a shared one
				// (measured earlier); then MPTCP follows the cell's other measure.
				if jobs[i-1].c != j.c {
					t.Errorf("%s: MPTCP of %s/%s not next to its cell's mpath measure", id, j.c.Row, j.c.Col)
				}
			}
		}
	}
}

// Measurements that do not depend on the row are shared: MPTCP and mpath auto in a
// weights table, MPTCP in a buffer table; mpath with different weights or windows is not.
func TestCacheKeys(t *testing.T) {
	m := tablesOf(t, false, "all")
	w := m["4.12"]
	a, b := w.cell("1:1", "50 kB/s"), w.cell("1:20", "50 kB/s")
	if cacheKey(a, a.measures[0]) == cacheKey(b, b.measures[0]) {
		t.Error("weighted 1:1 and 1:20 share a key")
	}
	for i := 1; i <= 2; i++ {
		if cacheKey(a, a.measures[i]) != cacheKey(b, b.measures[i]) {
			t.Errorf("%s differs between rows", a.measures[i].System)
		}
	}
	if c := w.cell("1:1", "100 kB/s"); cacheKey(a, a.measures[2]) == cacheKey(c, c.measures[2]) {
		t.Error("MPTCP at 50 and 100 kB/s share a key")
	}
	bf := m["4.24"]
	x, y := bf.cell("1", "200 kB/s"), bf.cell("50", "200 kB/s")
	if cacheKey(x, x.measures[0]) == cacheKey(y, y.measures[0]) || cacheKey(x, x.measures[1]) != cacheKey(y, y.measures[1]) {
		t.Error("buffer table keys")
	}
}
