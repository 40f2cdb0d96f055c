package benchlab

// The sweep driver: scenarios become tables of cells; each cell is measured with every
// system its table compares, reusing one lab per topology.
//
//	Run ─► for each table ─► for each cell (grouped so that running nodes are reused)
//	        ensureTopo:  lab.Up (relays with the topology's delay/loss), Apache and the
//	                     in-process MPTCP/sink servers in the exit namespace, MPTCP limits
//	        setRates:    tbf on c<i> (P-c) and rc (P-ri), changed in place
//	        measure:     mpath   ─ ensureNodes (exit + client) ─ curl --socks5-hostname
//	                     MPTCP   ─ client endpoints for paths 2..n ─ mptcpize run curl --interface 10.B.1.1
//	                     kernel  ─ curl --interface 10.B.i.1
//	                     TTFB    ─ bench.Run through the SOCKS front and direct
//	                     relay counters and (when asked) process CPU before and after
//	        ─► table text to stdout, results.json, report.md and PNGs to --out
//	      ─► teardown on every exit path: nodes, Apache, servers, lab.Down, temp dirs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"mpath/bench"
	"mpath/lab"
)

// Options configure a sweep. The zero value of each field picks its default, except
// Scenarios, which is required.
type Options struct {
	Scenarios []string  // scenario names (ScenarioNames), or "all"
	Quick     bool      // the small subset of every scenario, tiny transfers (for tests)
	Out       string    // output directory for report.md, results.json, *.png, logs/ (default ./bench-out)
	Prefix    string    // lab namespace prefix (default "bench")
	Base      int       // lab address octet (default 76)
	Bin       string    // the mpath binary the lab runs (default: this executable)
	Seconds   float64   // target duration of one transfer (default 5; 1 with Quick)
	Repeat    int       // measurements per system and cell, the median is kept (default 1)
	Encap     string    // mpath's encapsulation: "" or "ipip" (default), "udp[:PORT]" (client, exit and relays)
	Stdout    io.Writer // progress lines and tables (default os.Stdout)
	Logger    *zap.Logger
	Command   string // the command line, recorded in the report
	// Cells, when set, keeps only the cells whose "TABLE: ROW, COL" (e.g. "rtt-queue: 10 /
	// 160 ms, short queue (5 ms)") the regular expression matches, and the tables that
	// keep any: to re-measure or trace a few cells of a sweep.
	Cells string
	// Systems, when set, measures only the systems (mpath, MPTCP, best single path ...)
	// the regular expression matches.
	Systems string
}

// Results is everything a sweep measured. Tables are filled in as the sweep goes; the
// value is written to results.json after every table.
type Results struct {
	Command   string `json:"command"`
	Started   string `json:"started"`
	Finished  string `json:"finished,omitempty"`
	CPUs      int    `json:"cpus"`
	Kernel    string `json:"kernel"`
	LoadStart string `json:"loadavg_start"`
	LoadEnd   string `json:"loadavg_end,omitempty"`
	Quick     bool   `json:"quick"`
	// TCPCongestion is the kernel's TCP congestion control in the lab's namespaces (kernel
	// TCP and each MPTCP subflow use it).
	TCPCongestion string   `json:"tcp_congestion_control"`
	Seconds       float64  `json:"seconds_per_transfer"`
	Repeat        int      `json:"repeat"`
	Failures      int      `json:"failures"`
	Errors        []string `json:"errors,omitempty"`
	Tables        []*Table `json:"tables"`
}

// ErrMeasure means at least one measurement failed; the report was still written.
var ErrMeasure = errors.New("measurements failed")

var errOptions = errors.New("bench lab: bad options")

func (o *Options) fill() error {
	if len(o.Scenarios) == 0 {
		return fmt.Errorf("%w: no scenario (want %s or all)", errOptions, strings.Join(ScenarioNames(), ", "))
	}
	var names []string
	for _, s := range o.Scenarios {
		if s == "all" {
			names = append(names, ScenarioNames()...)
			continue
		}
		if !slices.Contains(ScenarioNames(), s) {
			return fmt.Errorf("%w: unknown scenario %q (want %s or all)", errOptions, s, strings.Join(ScenarioNames(), ", "))
		}
		names = append(names, s)
	}
	o.Scenarios = nil
	for _, n := range names {
		if !slices.Contains(o.Scenarios, n) {
			o.Scenarios = append(o.Scenarios, n)
		}
	}
	if o.Out == "" {
		o.Out = "bench-out"
	}
	if o.Prefix == "" {
		o.Prefix = "bench"
	}
	if o.Base == 0 {
		o.Base = 76
	}
	if o.Seconds <= 0 {
		o.Seconds = 5
		if o.Quick {
			o.Seconds = 1
		}
	}
	if o.Repeat <= 0 {
		o.Repeat = 1
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("bench lab: find mpath binary: %w", err)
		}
		o.Bin = exe
	}
	return nil
}

// Tables returns the tables the options would run, unmeasured (for listing and tests).
func Tables(o Options) ([]*Table, error) {
	if err := o.fill(); err != nil {
		return nil, err
	}
	var keep *regexp.Regexp
	if o.Cells != "" {
		var err error
		if keep, err = regexp.Compile(o.Cells); err != nil {
			return nil, fmt.Errorf("%w: cells: %v", errOptions, err)
		}
	}
	var sys *regexp.Regexp
	if o.Systems != "" {
		var err error
		if sys, err = regexp.Compile(o.Systems); err != nil {
			return nil, fmt.Errorf("%w: systems: %v", errOptions, err)
		}
	}
	var out []*Table
	for _, name := range o.Scenarios {
		for _, s := range scenarios {
			if s.name != name {
				continue
			}
			for _, t := range s.build(o.Quick) {
				if sys != nil {
					for _, c := range t.Cells {
						c.measures = slices.DeleteFunc(c.measures, func(m Measure) bool { return !sys.MatchString(m.System) })
					}
				}
				if keep == nil || filterCells(t, keep) {
					out = append(out, t)
				}
			}
		}
	}
	if keep != nil && len(out) == 0 {
		return nil, fmt.Errorf("%w: no cell matches %q (see --list)", errOptions, o.Cells)
	}
	return out, nil
}

// filterCells keeps t's cells whose "ID: row, col" keep matches, and the rows and
// columns that still have cells. It reports whether any cell is left.
func filterCells(t *Table, keep *regexp.Regexp) bool {
	var cells []*Cell
	rows, cols := map[string]bool{}, map[string]bool{}
	for _, c := range t.Cells {
		if keep.MatchString(t.ID + ": " + c.Row + ", " + c.Col) {
			cells = append(cells, c)
			rows[c.Row], cols[c.Col] = true, true
		}
	}
	t.Cells = cells
	t.Rows = slices.DeleteFunc(t.Rows, func(r string) bool { return !rows[r] })
	t.Cols = slices.DeleteFunc(t.Cols, func(c string) bool { return !cols[c] })
	return len(cells) > 0
}

// runner holds the sweep's state. It is used by one goroutine.
type runner struct {
	opt     Options
	out     io.Writer
	sweep   *bench.SweepProgress // cell k of N on opt.Stdout
	log     *zap.Logger
	res     *Results
	work    string // temp dir: the key, node logs of failed starts
	logs    string // out/logs: relay, node and Apache logs of the current lab
	docroot string
	files   map[int64]*file

	lab      *lab.Lab
	topo     Topo
	topoKey  string
	apache   *lab.Apache
	srv      *servers
	nodes    *lab.Nodes
	nodesKey string
	rates    []int64    // current tbf rate per lab path, bytes/s; 0 none; -1 unknown
	endpts   int        // MPTCP endpoints configured for paths 2..endpts; -1 unknown
	up       *uplinkLab // the NATed-uplinks topology, when the current cell uses it

	cache map[string]*Outcome
	where map[string]string // cache key -> the cell that measured it
}

// requiredTools are the programs a sweep runs, with the Debian package of each (on
// Debian mptcpize is its own package: mptcpd does not contain it).
var requiredTools = []struct{ name, pkg string }{
	{"ip", "iproute2"}, {"tc", "iproute2"}, {"ethtool", "ethtool"}, {"sysctl", "procps"},
	{"curl", "curl"}, {"mptcpize", "mptcpize"},
}

// Run builds each scenario's lab, measures every table, writes the outputs to
// opt.Out after each table and tears everything down, also when ctx ends (Ctrl-C).
// It needs root. A failed measurement does not stop the sweep; Run then returns the
// results with an error wrapping ErrMeasure.
func Run(ctx context.Context, opt Options) (*Results, error) {
	if err := opt.fill(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("bench lab: needs root (network namespaces, tc, nftables, raw sockets)")
	}
	for _, tool := range requiredTools {
		if _, err := exec.LookPath(tool.name); err != nil {
			return nil, fmt.Errorf("bench lab: %s not installed: apt-get install %s (make deps installs everything)", tool.name, tool.pkg)
		}
	}
	if _, err := lab.ApacheBinary(); err != nil {
		return nil, fmt.Errorf("bench lab: %w", err)
	}
	tables, err := Tables(opt)
	if err != nil {
		return nil, err
	}
	r := &runner{opt: opt, out: opt.Stdout, log: opt.Logger, files: map[int64]*file{},
		cache: map[string]*Outcome{}, where: map[string]string{}}
	total := 0
	for _, t := range tables {
		total += len(schedule(t))
	}
	r.sweep = bench.NewSweepProgress(r.out, total, time.Now)
	defer r.sweep.Finish()
	r.res = &Results{Command: opt.Command, Started: time.Now().UTC().Format(time.RFC3339), CPUs: runtime.NumCPU(),
		Kernel: kernelRelease(), LoadStart: loadavg(), Quick: opt.Quick, Seconds: opt.Seconds, Repeat: opt.Repeat}
	if err := os.MkdirAll(opt.Out, 0o755); err != nil {
		return nil, fmt.Errorf("bench lab: %w", err)
	}
	r.logs = filepath.Join(opt.Out, "logs")
	if err := os.MkdirAll(r.logs, 0o755); err != nil {
		return nil, fmt.Errorf("bench lab: %w", err)
	}
	defer r.close()
	if r.work, err = os.MkdirTemp("", "mpath-benchlab-"); err != nil {
		return nil, fmt.Errorf("bench lab: %w", err)
	}
	if r.docroot, err = lab.MakeDocroot(); err != nil {
		return nil, fmt.Errorf("bench lab: %w", err)
	}
	r.printf("mpath bench --lab %s: %d tables, %.0f s per transfer, outputs in %s\n", strings.Join(opt.Scenarios, ","),
		len(tables), opt.Seconds, opt.Out)
	r.printf("machine: %d CPUs, load average %s\n", r.res.CPUs, r.res.LoadStart)
	for _, t := range tables {
		r.res.Tables = append(r.res.Tables, t)
		err := r.runTable(ctx, t)
		if werr := r.write(); werr != nil && err == nil {
			err = werr
		}
		if err != nil {
			r.res.Finished = time.Now().UTC().Format(time.RFC3339)
			return r.res, err
		}
	}
	r.res.Finished = time.Now().UTC().Format(time.RFC3339)
	r.res.LoadEnd = loadavg()
	if err := r.write(); err != nil {
		return r.res, err
	}
	r.printf("\nreport: %s\n", filepath.Join(opt.Out, "report.md"))
	if r.res.Failures > 0 {
		return r.res, fmt.Errorf("bench lab: %w: %d (see %s)", ErrMeasure, r.res.Failures, filepath.Join(opt.Out, "report.md"))
	}
	return r.res, nil
}

// printf writes the sweep's output (above the progress bar on a terminal).
func (r *runner) printf(format string, a ...any) { r.sweep.Printf(format, a...) }

// runTable measures every cell of t. Cells are visited so that mpath nodes are restarted
// as rarely as possible: grouped by topology, then by node configuration.
func (r *runner) runTable(ctx context.Context, t *Table) error {
	start := time.Now()
	t.Started = start.UTC().Format(time.RFC3339)
	t.LoadFrom = load1()
	r.printf("\n== %s: %s\n", t.ID, t.Title)
	jobs := schedule(t)
	for _, j := range jobs {
		if err := ctx.Err(); err != nil {
			return err
		}
		run, err := r.measureCell(ctx, t, j.c, j.m)
		if err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		j.c.Runs[j.m.System] = run
		r.sweep.Done()
	}
	t.Seconds = time.Since(start).Seconds()
	t.LoadTo = load1()
	t.Findings = findings(t)
	var b strings.Builder
	renderTable(&b, t)
	r.printf("\n%s", b.String())
	return nil
}

// job is one measurement of one cell.
type job struct {
	c *Cell
	m Measure
}

func needsNodes(m Measure) bool {
	return m.Kind == kindMpath || (m.Kind == kindTTFB && !m.Direct) || (m.Kind == kindPage && m.Path == 0)
}

// schedule orders t's measurements so that labs are rebuilt and mpath nodes restarted
// as rarely as possible: by topology (in order of first use), then by node
// configuration (in order of first use), then by cell. A measure without nodes (MPTCP,
// kernel TCP) goes with its cell's first mpath measure, so that the systems of a cell
// are measured close together in time.
func schedule(t *Table) []job {
	topoIdx, groupIdx := map[string]int{}, map[string]int{}
	for _, c := range t.Cells {
		if _, ok := topoIdx[c.topo.key()]; !ok {
			topoIdx[c.topo.key()] = len(topoIdx)
		}
		for _, m := range c.measures {
			if needsNodes(m) {
				if _, ok := groupIdx[m.nodesKey(c.Nodes)]; !ok {
					groupIdx[m.nodesKey(c.Nodes)] = len(groupIdx)
				}
			}
		}
	}
	type keyed struct {
		j                     job
		topo, group, cell, mi int
	}
	var ks []keyed
	for ci, c := range t.Cells {
		cellGroup := len(groupIdx)
		for _, m := range c.measures {
			if needsNodes(m) {
				cellGroup = groupIdx[m.nodesKey(c.Nodes)]
				break
			}
		}
		for mi, m := range c.measures {
			g := cellGroup
			if needsNodes(m) {
				g = groupIdx[m.nodesKey(c.Nodes)]
			}
			ks = append(ks, keyed{job{c, m}, topoIdx[c.topo.key()], g, ci, mi})
		}
	}
	sort.SliceStable(ks, func(a, b int) bool {
		x, y := ks[a], ks[b]
		if x.topo != y.topo {
			return x.topo < y.topo
		}
		if x.group != y.group {
			return x.group < y.group
		}
		if x.cell != y.cell {
			return x.cell < y.cell
		}
		return x.mi < y.mi
	})
	out := make([]job, len(ks))
	for i, k := range ks {
		out[i] = k.j
	}
	return out
}

// cacheKey identifies a measurement: the same key in one table is measured once.
func cacheKey(c *Cell, m Measure) string {
	rates := c.Rates[:min(c.Nodes, len(c.Rates))]
	switch m.Kind {
	case kindMPTCP:
		return fmt.Sprintf("%s|mptcp|%v|%v", c.topo.key(), rates, m.Upload)
	case kindKernel:
		return fmt.Sprintf("%s|kernel|%d|%d|%v|%v", c.topo.key(), m.Path, c.Rates[m.Path-1], m.Upload, m.CPU)
	case kindTTFB:
		return fmt.Sprintf("%s|ttfb|%v|%v", c.topo.key(), rates, m.Direct)
	case kindPage:
		return fmt.Sprintf("%s|page|%v|%d|%d|%v", c.topo.key(), rates, m.Path, m.Page.Fetches, m.Page.Sizes)
	}
	return fmt.Sprintf("%s|mpath|%s|%v|%v|%v", c.topo.key(), m.nodesKey(c.Nodes), rates, m.Upload, m.CPU)
}

func cellName(t *Table, c *Cell) string {
	if t.RowHead == "nodes" {
		return fmt.Sprintf("%s nodes, %s", c.Row, c.Col)
	}
	return fmt.Sprintf("%s, %s", c.Row, c.Col)
}

// measureCell measures m for c (or reuses the table's earlier identical measurement),
// repeating it opt.Repeat times and keeping the median. Errors are recorded in the run
// and counted; the returned error is only for the caller to notice cancellation.
func (r *runner) measureCell(ctx context.Context, t *Table, c *Cell, m Measure) (*Outcome, error) {
	key := t.ID + "|" + cacheKey(c, m)
	if prev, ok := r.cache[key]; ok {
		cp := *prev
		cp.SharedWith = r.where[key]
		return &cp, nil
	}
	var runs []*Outcome
	var err error
	for i := 0; i < r.opt.Repeat; i++ {
		var run *Outcome
		run, err = r.measureOnce(ctx, c, m)
		if ctx.Err() != nil {
			return run, ctx.Err()
		}
		run.Load1 = load1()
		r.progress(t, c, run)
		runs = append(runs, run)
		if run.Err != "" {
			break
		}
	}
	run := median(runs)
	if run.Err != "" {
		r.res.Failures++
		if needsNodes(m) {
			run.Err += r.keepNodeLogs(r.res.Failures)
		}
		if len(r.res.Errors) < 50 {
			r.res.Errors = append(r.res.Errors, fmt.Sprintf("%s %s %s: %s", t.ID, cellName(t, c), m.System, run.Err))
		}
	}
	r.cache[key] = run
	r.where[key] = cellName(t, c)
	return run, err
}

// keepNodeLogs copies the nodes' logs aside after a failed mpath measurement (the next
// start truncates them) and says where they are.
func (r *runner) keepNodeLogs(n int) string {
	var kept []string
	for _, name := range []string{"client.log", "exit.log"} {
		b, err := os.ReadFile(filepath.Join(r.logs, name))
		if err != nil {
			continue
		}
		dst := filepath.Join(r.logs, fmt.Sprintf("failure%d-%s", n, name))
		if os.WriteFile(dst, b, 0o644) == nil {
			kept = append(kept, dst)
		}
	}
	if len(kept) == 0 {
		return ""
	}
	return " (node logs: " + strings.Join(kept, ", ") + ")"
}

// median returns the run with the median rate (the failed one if any failed), with every
// repetition's rate recorded.
func median(runs []*Outcome) *Outcome {
	if len(runs) == 1 {
		return runs[0]
	}
	for _, r := range runs {
		if r.Err != "" {
			return r
		}
	}
	sorted := slices.Clone(runs)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].KBps < sorted[j].KBps })
	m := *sorted[len(sorted)/2]
	for _, r := range runs {
		m.Repeats = append(m.Repeats, r.KBps)
	}
	return &m
}

func (r *runner) progress(t *Table, c *Cell, run *Outcome) {
	var b strings.Builder
	fmt.Fprintf(&b, "  %-8s %-34s %-18s", t.ID, cellName(t, c), run.System)
	switch {
	case run.Err != "":
		fmt.Fprintf(&b, " FAILED: %s", run.Err)
	case run.Samples > 0:
		fmt.Fprintf(&b, " TTFB median %.1f ms", run.TTFBms)
		if run.RTTms > 0 {
			fmt.Fprintf(&b, ", connect (RTT) %.1f ms", run.RTTms)
		}
	default:
		fmt.Fprintf(&b, " %9s kB/s", kB(run.KBps*1000))
		if c.Sum > 0 {
			fmt.Fprintf(&b, " %5s of %s kB/s", pct(run.KBps*1000/float64(c.Sum)), kB(float64(c.Sum)))
		}
		fmt.Fprintf(&b, "  %s in %.1f s", sizeLabel(run.Bytes), run.Seconds)
		if !run.Complete {
			b.WriteString(" (cut at the time cap)")
		}
		if len(run.PathBytes) > 1 {
			var sh []string
			for _, s := range run.Shares() {
				sh = append(sh, fmt.Sprintf("%.0f", 100*s))
			}
			fmt.Fprintf(&b, "  paths %s%%", strings.Join(sh, "/"))
		}
		if run.MPTCPConn != nil && !*run.MPTCPConn {
			b.WriteString("  FELL BACK TO TCP")
		}
		if run.QuietWait >= 0.5 {
			fmt.Fprintf(&b, "  (waited %.1f s for leftover traffic)", run.QuietWait)
		}
		if cpu := run.CPUTotal(); cpu > 0 {
			fmt.Fprintf(&b, "  cpu %.2f s", cpu)
		}
	}
	fmt.Fprintf(&b, "  load %.1f", run.Load1)
	// Off a terminal the progress goes at the end of each line (lines keep starting with
	// the table ID); on one the bar below them shows it.
	if !r.sweep.Drawn() {
		fmt.Fprintf(&b, "  [%s]", r.sweep.Status())
	}
	b.WriteString("\n")
	r.printf("%s", b.String())
}

// measureOnce prepares the lab for c and m and measures once.
func (r *runner) measureOnce(ctx context.Context, c *Cell, m Measure) (*Outcome, error) {
	run := &Outcome{System: m.System}
	fail := func(err error) (*Outcome, error) {
		run.Err = err.Error()
		return run, err
	}
	if c.topo.NAT {
		return r.measureUplinks(ctx, c, m)
	}
	if err := r.ensureTopo(ctx, c.topo); err != nil {
		return fail(err)
	}
	if err := r.setRates(ctx, c.Rates); err != nil {
		return fail(err)
	}
	switch m.Kind {
	case kindMpath:
		if err := r.ensureNodes(ctx, c, m); err != nil {
			return fail(err)
		}
	case kindTTFB:
		if !m.Direct {
			if err := r.ensureNodes(ctx, c, m); err != nil {
				return fail(err)
			}
		}
		return r.ttfb(ctx, c, m)
	case kindPage:
		if m.Page == nil {
			return fail(errNoPage)
		}
		if m.Path == 0 {
			if err := r.ensureNodes(ctx, c, m); err != nil {
				return fail(err)
			}
		}
		return r.pageLoad(ctx, c, m)
	case kindMPTCP:
		if err := r.ensureEndpoints(ctx, c.Nodes); err != nil {
			return fail(err)
		}
	}
	return r.transfer(ctx, c, m)
}

// ensureTopo makes the current lab match topo, rebuilding it when it does not.
func (r *runner) ensureTopo(ctx context.Context, topo Topo) error {
	if r.lab != nil && r.topoKey == topo.key() {
		return nil
	}
	r.closeLab()
	specs := make([]lab.PathSpec, topo.Paths)
	var desc []string
	for i := range specs {
		specs[i] = lab.PathSpec{Delay: topo.delay(i), Loss: topo.loss(i)}
		desc = append(desc, fmt.Sprintf("path %d: delay %v loss %.1f%%", i+1, topo.delay(i), 100*topo.loss(i)))
	}
	t0 := time.Now()
	l, err := lab.Up(ctx, lab.Config{Prefix: r.opt.Prefix, Base: r.opt.Base, Paths: specs, MpathBin: r.opt.Bin,
		LogDir: r.logs, Seed: 1, RelayArgs: r.encapArgs()})
	if err != nil {
		return fmt.Errorf("lab up: %w", err)
	}
	r.lab, r.topo, r.topoKey = l, topo, topo.key()
	r.rates = repeatRate(topo.Paths, -1)
	r.endpts = -1
	if r.apache, err = lab.StartApache(ctx, l.ExitNS(), l.ExitAddr(), 80, r.docroot); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	if r.srv, err = startServers(l.ExitNS(), l.ExitAddr(), r.docroot); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	for _, ns := range []string{l.ClientNS(), l.ExitNS()} {
		if err := runCmd(ctx, "ip", "-n", ns, "mptcp", "limits", "set", "subflow", "8", "add_addr_accepted", "8"); err != nil {
			return fmt.Errorf("lab: mptcp limits: %w", err)
		}
	}
	if err := r.warmup(ctx); err != nil {
		return err
	}
	if r.res.TCPCongestion == "" {
		_ = lab.Do(l.ClientNS(), func() error {
			b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_congestion_control")
			r.res.TCPCongestion = strings.TrimSpace(string(b))
			return err
		})
	}
	r.printf("  lab %q up: %d paths (%s), Apache and the MPTCP server in %s (%.1f s)\n", r.opt.Prefix, topo.Paths,
		strings.Join(desc, "; "), l.ExitNS(), time.Since(t0).Seconds())
	return nil
}

// warmup fetches a small page over every path with kernel TCP, unmeasured, so that
// no measurement pays for a fresh lab's neighbour discovery (a first SYN lost there
// costs a 1 s retransmission timeout). A path that loses 30% of its packets over a
// 600 ms RTT (the rtt-queue table) can need longer than one 10 s try: three tries.
func (r *runner) warmup(ctx context.Context) error {
	f, err := r.fileOf(1000)
	if err != nil {
		return err
	}
	for i := 1; i <= r.lab.N(); i++ {
		_, a, _ := r.lab.ClientPath(i)
		args := []string{"netns", "exec", r.lab.ClientNS(), "curl", "-sS", "--fail", "-o", "/dev/null", "--max-time", "10",
			"--interface", a.String(), r.apache.URL(f.name)}
		var err error
		for try := 0; try < 3; try++ {
			if err = runCmd(ctx, "ip", args...); err == nil || ctx.Err() != nil {
				break
			}
		}
		if err != nil {
			return fmt.Errorf("lab: path %d does not carry a kernel TCP download: %w", i, err)
		}
	}
	return nil
}

// closeLab stops everything running in the current lab and removes it.
func (r *runner) closeLab() {
	if r.nodes != nil {
		r.nodes.Stop(5 * time.Second)
		r.nodes, r.nodesKey = nil, ""
	}
	if r.srv != nil {
		r.srv.close()
		r.srv = nil
	}
	if r.apache != nil {
		if err := r.apache.Stop(); err != nil {
			r.log.Warn("stop apache", zap.Error(err))
		}
		r.apache = nil
	}
	if r.lab != nil {
		if err := r.lab.Down(); err != nil {
			r.log.Warn("lab down", zap.Error(err))
		}
		r.lab, r.topoKey = nil, ""
	}
	r.closeUplinks()
}

// close tears everything down and removes the temporary directories.
func (r *runner) close() {
	r.closeLab()
	if err := lab.Down(r.opt.Prefix); err != nil {
		r.printf("bench lab: %v (run 'mpath lab down --prefix %s')\n", err, r.opt.Prefix)
	}
	// The nodes' key was in the logs directory with their logs.
	os.Remove(filepath.Join(r.logs, "psk"))
	for _, d := range []string{r.docroot, r.work} {
		if d != "" {
			os.RemoveAll(d)
		}
	}
}

// setRates sets the tbf rate of paths 1..len(rates) in both directions (0: no limit).
func (r *runner) setRates(ctx context.Context, rates []int64) error {
	for i, rate := range rates {
		if i >= len(r.rates) || r.rates[i] == rate {
			continue
		}
		cdev, _, _ := r.lab.ClientPath(i + 1)
		for _, nd := range [][2]string{{r.lab.ClientNS(), cdev}, {r.lab.RelayNS(i + 1), "rc"}} {
			if rate == 0 {
				// No qdisc to delete is fine: the path is unlimited either way.
				_ = runCmd(ctx, "tc", "-n", nd[0], "qdisc", "del", "dev", nd[1], "root")
				continue
			}
			args := append([]string{"-n", nd[0], "qdisc", "replace", "dev", nd[1], "root", "tbf"}, tbfArgs(rate, r.topo.Queue)...)
			if err := runCmd(ctx, "tc", args...); err != nil {
				return fmt.Errorf("set rate: %w", err)
			}
		}
		r.rates[i] = rate
	}
	return nil
}

// tbfArgs returns tc tbf arguments for rate bytes/s: a bucket of 10 ms at the rate but at
// least 4 KB (lab.Up's 16 KB floor would let a 20 kB/s path send 0.8 s worth at once,
// 20% of a 4 s transfer), and a queue of 100 ms at the rate on top of the bucket, at
// least 32 KB (about 22 full packets: the thesis's htb had a 1000-packet queue, and a
// few packets of queue at 20-50 kB/s turn every slow-start overshoot into timeouts).
// queue > 0 sets the queue instead, as time at the rate, with no floor (a short queue
// as an AQM keeps it, or a long one).
func tbfArgs(rate int64, queue time.Duration) []string {
	burst := max(rate/100, 4096)
	limit := max(rate/10+burst, 32768)
	if queue > 0 {
		limit = int64(float64(rate)*queue.Seconds()) + burst
	}
	return []string{"rate", strconv.FormatInt(rate*8, 10) + "bit", "burst", strconv.FormatInt(burst, 10),
		"limit", strconv.FormatInt(limit, 10)}
}

// ensureNodes (re)starts the mpath exit and client for m over paths 1..c.Nodes.
func (r *runner) ensureNodes(ctx context.Context, c *Cell, m Measure) error {
	key := m.nodesKey(c.Nodes)
	if r.nodes != nil && r.nodesKey == key && !r.nodes.Client.Exited() && (r.nodes.Exit == nil || !r.nodes.Exit.Exited()) {
		return nil
	}
	if r.nodes != nil {
		r.nodes.Stop(5 * time.Second)
		r.nodes, r.nodesKey = nil, ""
	}
	paths := make([]int, c.Nodes)
	for i := range paths {
		paths[i] = i + 1
	}
	n, err := r.lab.StartNodes(ctx, lab.NodesConfig{Bin: r.opt.Bin, Dir: r.logs, Paths: paths, Weights: m.Weights,
		Scheduler: m.Scheduler, RecvWindow: m.RecvWindow, Direct: m.Direct, ClientArgs: r.encapArgs(), ExitArgs: r.encapArgs()})
	if err != nil {
		return fmt.Errorf("mpath nodes: %w", err)
	}
	r.nodes, r.nodesKey = n, key
	return nil
}

// ensureEndpoints configures the client's MPTCP endpoints so that a connection from
// path 1's address opens one more subflow from each of paths 2..n.
func (r *runner) ensureEndpoints(ctx context.Context, n int) error {
	if r.endpts == n {
		return nil
	}
	ns := r.lab.ClientNS()
	if err := runCmd(ctx, "ip", "-n", ns, "mptcp", "endpoint", "flush"); err != nil {
		return fmt.Errorf("mptcp endpoints: %w", err)
	}
	for i := 2; i <= n; i++ {
		dev, addr, _ := r.lab.ClientPath(i)
		if err := runCmd(ctx, "ip", "-n", ns, "mptcp", "endpoint", "add", addr.String(), "dev", dev, "subflow"); err != nil {
			return fmt.Errorf("mptcp endpoints: %w", err)
		}
	}
	r.endpts = n
	return nil
}

// runCmd runs a command and returns its output in the error when it fails.
func runCmd(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// sizeFor picks a file size for about opt.Seconds at rate bytes/s (0: unlimited), rounded
// up to a 1-1.5-2-3-5-7 step so that cells share files.
func (r *runner) sizeFor(rate int64) int64 {
	minSize, maxSize := int64(64_000), int64(200_000_000)
	if r.opt.Quick {
		minSize, maxSize = 32_000, 32_000_000
	}
	if rate == 0 {
		return maxSize
	}
	want := int64(float64(rate) * r.opt.Seconds)
	want = max(minSize, min(maxSize, want))
	return niceSize(want)
}

func niceSize(n int64) int64 {
	steps := []float64{1, 1.5, 2, 3, 5, 7, 10}
	mag := math.Pow(10, math.Floor(math.Log10(float64(n))))
	for _, s := range steps {
		if v := int64(s * mag); v >= n {
			return v
		}
	}
	return int64(10 * mag)
}

// timeCap bounds one transfer (2.5 x --seconds, at least 3 s): a cell whose rate collapses is cut and measured over the
// bytes that arrived by then.
func (r *runner) timeCap() time.Duration {
	return time.Duration(max(3, 2.5*r.opt.Seconds) * float64(time.Second))
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func load1() float64 {
	f := strings.Fields(loadavg())
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

func kernelRelease() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// encapArgs are the flags that give every mpath role Options.Encap (none for the default).
func (r *runner) encapArgs() []string {
	if r.opt.Encap == "" || r.opt.Encap == "ipip" {
		return nil
	}
	return []string{"--encap", r.opt.Encap}
}
