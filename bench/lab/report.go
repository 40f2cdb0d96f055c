package benchlab

// Text tables (markdown-compatible), findings, results.json and report.md.

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
)

// mdTable writes a markdown table with a header row.
func mdTable(w io.Writer, head []string, rows [][]string) {
	width := make([]int, len(head))
	for i, h := range head {
		width[i] = len(h)
	}
	for _, r := range rows {
		for i, c := range r {
			if i < len(width) && len(c) > width[i] {
				width[i] = len(c)
			}
		}
	}
	line := func(cells []string) {
		var b strings.Builder
		b.WriteString("|")
		for i := range head {
			c := ""
			if i < len(cells) {
				c = cells[i]
			}
			fmt.Fprintf(&b, " %-*s |", width[i], c)
		}
		fmt.Fprintln(w, b.String())
	}
	line(head)
	sep := make([]string, len(head))
	for i := range sep {
		sep[i] = strings.Repeat("-", width[i])
	}
	line(sep)
	for _, r := range rows {
		line(r)
	}
}

// runCell formats a run as "kB/s" or a marker for what is missing.
func runKB(r *Outcome) string {
	switch {
	case r == nil:
		return "-"
	case r.Err != "":
		return "FAILED"
	}
	s := kB(r.KBps * 1000)
	if !r.Complete {
		s += "*"
	}
	return s
}

func runFrac(c *Cell, r *Outcome) string {
	if r == nil || r.Err != "" || c.Sum <= 0 {
		return "-"
	}
	return pct(r.KBps * 1000 / float64(c.Sum))
}

func thesisKB(c *Cell, id string) string {
	v, ok := c.Thesis[id]
	if !ok {
		return "-"
	}
	return fmt.Sprintf("%g", v)
}

func thesisFrac(c *Cell, id string) string {
	v, ok := c.Thesis[id]
	if !ok || c.Sum <= 0 {
		return "-"
	}
	return pct(v * 1000 / float64(c.Sum))
}

func sumKB(c *Cell) string {
	if c.Sum <= 0 {
		return "unlimited"
	}
	return kB(float64(c.Sum))
}

// renderTable writes t as text: the thesis-shaped matrices (when t has several rows and
// columns), every figure per cell, and the findings.
func renderTable(w io.Writer, t *Table) {
	fmt.Fprintf(w, "Table %s: %s\n", t.ID, t.Title)
	if t.Note != "" {
		fmt.Fprintf(w, "%s\n", t.Note)
	}
	if t.Target != "" {
		fmt.Fprintf(w, "Target: %s\n", t.Target)
	}
	fmt.Fprintf(w, "Load average (1 min) %.1f at the start, %.1f at the end, on %d CPUs; %.0f s.\n\n", t.LoadFrom, t.LoadTo, numCPU(), t.Seconds)
	if t.ID == "ttfb" {
		renderTTFB(w, t)
		return
	}
	if t.Scenario == "pages" {
		renderPages(w, t)
		return
	}
	if len(t.Rows) > 1 && len(t.Cols) > 1 {
		thesis := ""
		if len(t.Thesis) > 0 {
			thesis = t.Thesis[0]
		}
		names := slices.Clone(t.Systems)
		if thesis != "" {
			names = append(names, "thesis "+thesis)
		}
		fmt.Fprintf(w, "kB/s, each cell: %s\n\n", strings.Join(names, " / "))
		head := append([]string{t.RowHead}, t.Cols...)
		var rows, frows [][]string
		for _, row := range t.Rows {
			r := []string{row}
			fr := []string{row}
			for _, col := range t.Cols {
				c := t.cell(row, col)
				if c == nil {
					r, fr = append(r, ""), append(fr, "")
					continue
				}
				var v, f []string
				for _, s := range t.Systems {
					v = append(v, runKB(c.Runs[s]))
					f = append(f, runFrac(c, c.Runs[s]))
				}
				if thesis != "" {
					v = append(v, thesisKB(c, thesis))
					f = append(f, thesisFrac(c, thesis))
				}
				r = append(r, strings.Join(v, " / "))
				fr = append(fr, strings.Join(f, " / "))
			}
			rows, frows = append(rows, r), append(frows, fr)
		}
		mdTable(w, head, rows)
		fmt.Fprintf(w, "\nFraction of the sum of the path rates, each cell: %s\n\n", strings.Join(names, " / "))
		mdTable(w, head, frows)
		fmt.Fprintln(w)
	}
	// Every figure, one line per cell.
	head := []string{t.RowHead, "column", "sum kB/s"}
	if t.RowHead == "" {
		head[0] = "row"
	}
	for _, s := range t.Systems {
		head = append(head, s+" kB/s", "of sum")
	}
	for _, id := range t.Thesis {
		head = append(head, "thesis "+id, "of sum")
	}
	head = append(head, "paths used")
	var rows [][]string
	for _, c := range t.Cells {
		r := []string{c.Row, c.Col, sumKB(c)}
		var used []string
		for _, s := range t.Systems {
			run := c.Runs[s]
			r = append(r, runKB(run), runFrac(c, run))
			if run != nil && len(run.PathBytes) > 1 {
				u := fmt.Sprintf("%d/%d", run.PathsUsed(), len(run.PathBytes))
				if run.MPTCPConn != nil && !*run.MPTCPConn {
					u += " (TCP fallback)"
				}
				used = append(used, u)
			} else {
				used = append(used, "-")
			}
		}
		for _, id := range t.Thesis {
			r = append(r, thesisKB(c, id), thesisFrac(c, id))
		}
		r = append(r, strings.Join(used, " / "))
		rows = append(rows, r)
	}
	mdTable(w, head, rows)
	fmt.Fprintf(w, "\n* = cut at the time cap: the rate is over the bytes that arrived by then. "+
		"paths used: paths that carried >= 1%% of the bytes the relays forwarded (%s).\n", strings.Join(t.Systems, " / "))
	if len(t.Findings) > 0 {
		fmt.Fprintln(w)
		for _, f := range t.Findings {
			fmt.Fprintf(w, "- %s\n", f)
		}
	}
}

func renderTTFB(w io.Writer, t *Table) {
	var rows [][]string
	for _, c := range t.Cells {
		for _, s := range t.Systems {
			run := c.Runs[s]
			if run == nil {
				continue
			}
			if run.Err != "" {
				rows = append(rows, []string{c.Row, s, "FAILED: " + run.Err, "", ""})
				continue
			}
			rtt := "-"
			if run.RTTms > 0 {
				rtt = fmt.Sprintf("%.2f", run.RTTms)
			}
			rows = append(rows, []string{c.Row, s, fmt.Sprintf("%.2f", run.TTFBms), rtt, fmt.Sprint(run.Samples)})
		}
	}
	mdTable(w, []string{t.RowHead, "system", "median TTFB ms", "median connect (RTT) ms", "requests"}, rows)
	for _, f := range t.Findings {
		fmt.Fprintf(w, "\n- %s", f)
	}
	fmt.Fprintln(w)
}

// frac is a run's fraction of the cell's sum (NaN when there is none).
func frac(c *Cell, r *Outcome) float64 {
	if r == nil || r.Err != "" || c.Sum <= 0 {
		return math.NaN()
	}
	return r.KBps * 1000 / float64(c.Sum)
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

// findings derives the summary lines of a table: averages, targets, fallbacks.
func findings(t *Table) []string {
	var out []string
	// Mean fraction of the sum per system, and how often mpath beat the thesis.
	for _, s := range t.Systems {
		var sum float64
		n := 0
		for _, c := range t.Cells {
			if f := frac(c, c.Runs[s]); !math.IsNaN(f) {
				sum += f
				n++
			}
		}
		if n > 1 {
			out = append(out, fmt.Sprintf("%s: mean %s of the sum over %d cells", s, pct(sum/float64(n)), n))
		}
	}
	if len(t.Thesis) > 0 && len(t.Systems) > 0 {
		s, id := t.Systems[0], t.Thesis[0]
		beat, n := 0, 0
		for _, c := range t.Cells {
			v, ok := c.Thesis[id]
			run := c.Runs[s]
			if ok && run != nil && run.Err == "" {
				n++
				if run.KBps >= v {
					beat++
				}
			}
		}
		if n > 0 {
			out = append(out, fmt.Sprintf("%s reached at least the thesis's figure (%s) in %d of %d cells", s, id, beat, n))
		}
	}
	// MPTCP: did it really use every path?
	var single []string
	checked := 0
	for _, c := range t.Cells {
		for _, s := range t.Systems {
			run := c.Runs[s]
			if run == nil || run.Err != "" || run.SharedWith != "" || c.Nodes < 2 || !strings.HasPrefix(s, "MPTCP") {
				continue
			}
			checked++
			if (run.MPTCPConn != nil && !*run.MPTCPConn) || (len(run.PathBytes) > 1 && run.PathsUsed() < 2) {
				single = append(single, fmt.Sprintf("%s/%s", c.Row, c.Col))
			}
		}
	}
	if len(single) > 0 {
		out = append(out, fmt.Sprintf("MPTCP used one path only (fallback or no subflows) in %d cells: %s", len(single), strings.Join(single, ", ")))
	} else if checked > 0 {
		out = append(out, fmt.Sprintf("MPTCP: each of the %d multi-path measurements had an MPTCP connection whose traffic crossed at least two relays", checked))
	}
	switch t.ID {
	case "proxy":
		for _, c := range t.Cells {
			m, mp, single := c.Runs[sysMpath], c.Runs[sysMPTCP], c.Runs[sysSingle]
			target := 0.90
			if strings.Contains(c.Row, "RTT") {
				target = 0.85
			}
			f := frac(c, m)
			line := fmt.Sprintf("%s: mpath %s of the sum (target %s: %s), MPTCP %s, best single path %s",
				c.Row, pct(f), pct(target), met(f >= target), pct(frac(c, mp)), pct(frac(c, single)))
			if m != nil && single != nil && single.KBps > 0 && m.Err == "" {
				line += fmt.Sprintf("; mpath = %.2f x the best single path", m.KBps/single.KBps)
			}
			out = append(out, line)
		}
	case "direct":
		for _, c := range t.Cells {
			f := frac(c, c.Runs[sysMpath])
			if strings.HasPrefix(c.Row, "upload") {
				out = append(out, fmt.Sprintf("direct mode upload over 3 paths: %s of their sum (target 85%%: %s)", pct(f), met(f >= 0.85)))
			} else {
				out = append(out, fmt.Sprintf("direct mode download over 1 path: %s of the path's rate", pct(f)))
			}
		}
	case "unlimited":
		for _, c := range t.Cells {
			m, k := c.Runs[sysMpath], c.Runs[sysKernel]
			if m == nil || k == nil || m.Err != "" || k.Err != "" || k.KBps == 0 {
				continue
			}
			ratio := m.KBps / k.KBps
			out = append(out, fmt.Sprintf("engine / kernel TCP throughput over the same path, same run: %.2f (target 0.5: %s)", ratio, met(ratio >= 0.5)))
			for _, run := range []*Outcome{m, k} {
				if len(run.CPU) == 0 || run.Bytes == 0 {
					continue
				}
				gb := float64(run.Bytes) / 1e9
				var parts []string
				for _, g := range sortedKeys(run.CPU) {
					if g != cpuSystemWide {
						parts = append(parts, fmt.Sprintf("%s %.1f", g, run.CPU[g]/gb))
					}
				}
				out = append(out, fmt.Sprintf("%s: %.1f CPU s/GB in the lab's processes (%s); system-wide busy time %.1f s/GB",
					run.System, run.CPUTotal()/gb, strings.Join(parts, ", "), run.CPU[cpuSystemWide]/gb))
			}
		}
	case "fast", "fast-unlimited":
		out = append(out, fastFindings(t)...)
	case "uplinks":
		out = append(out, uplinksFindings(t)...)
	case "pages", "manyflows":
		out = append(out, pagesFindings(t)...)
	case "ttfb":
		for _, c := range t.Cells {
			m, d := c.Runs[sysTTFBMpath], c.Runs[sysTTFBDir]
			if m == nil || d == nil || m.Err != "" || d.Err != "" || d.RTTms <= 0 {
				continue
			}
			rt := (m.TTFBms - d.TTFBms) / d.RTTms
			out = append(out, fmt.Sprintf("time to first byte through mpath minus direct: %.2f ms = %.2f round trips of %.2f ms (target <= 1: %s)",
				m.TTFBms-d.TTFBms, rt, d.RTTms, met(rt <= 1)))
		}
	}
	return out
}

func numCPU() int { return runtime.NumCPU() }

// write saves results.json, the charts and report.md to the output directory.
func (r *runner) write() error {
	for _, t := range r.res.Tables {
		if t.Seconds == 0 {
			continue // not measured yet
		}
		names, err := writeCharts(r.opt.Out, t)
		if err != nil {
			return fmt.Errorf("bench lab: charts: %w", err)
		}
		t.Charts = names
	}
	b, err := json.MarshalIndent(r.res, "", "  ")
	if err != nil {
		return fmt.Errorf("bench lab: %w", err)
	}
	if err := os.WriteFile(filepath.Join(r.opt.Out, "results.json"), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("bench lab: %w", err)
	}
	f, err := os.Create(filepath.Join(r.opt.Out, "report.md"))
	if err != nil {
		return fmt.Errorf("bench lab: %w", err)
	}
	writeReport(f, r.res)
	return f.Close()
}

// writeReport writes the markdown report: method, then every measured table with its
// charts.
func writeReport(w io.Writer, res *Results) {
	fmt.Fprintf(w, "# mpath lab sweeps: the thesis's experiments beside kernel MPTCP\n\n")
	fmt.Fprintf(w, "Command: `%s`  \n", res.Command)
	fmt.Fprintf(w, "Started %s, finished %s; %d CPUs, Linux %s, kernel TCP congestion control %s; load average %s at the start, %s at the end.  \n",
		res.Started, orDash(res.Finished), res.CPUs, res.Kernel, orDash(res.TCPCongestion), res.LoadStart, orDash(res.LoadEnd))
	fmt.Fprintf(w, "Transfers sized for about %.0f s at the sum of the path rates (cut at %.1f s); %d measurement(s) per figure (median)",
		res.Seconds, max(3, 2.5*res.Seconds), res.Repeat)
	if res.Quick {
		fmt.Fprintf(w, "; QUICK subset (a smoke test, not figures to quote)")
	}
	fmt.Fprintf(w, ".\n\n")
	fmt.Fprint(w, reportMethod)
	if res.Failures > 0 {
		fmt.Fprintf(w, "\n**%d measurements failed:**\n\n", res.Failures)
		for _, e := range res.Errors {
			fmt.Fprintf(w, "- %s\n", e)
		}
	}
	for _, t := range res.Tables {
		if t.Seconds == 0 {
			continue
		}
		fmt.Fprintf(w, "\n## Table %s\n\n", t.ID)
		var b strings.Builder
		renderTable(&b, t)
		fmt.Fprintf(w, "%s\n", b.String())
		for _, c := range t.Charts {
			fmt.Fprintf(w, "\n![%s](%s)\n", c, c)
		}
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

const reportMethod = `## Method

- The lab: network namespaces on one machine (client, one relay per path, exit). Per-path rate
  limits are tbf qdiscs in both directions (client -> relay on the client's veth, relay -> client on
  the relay's veth); delay and loss are added by each relay (` + "`mpath relay --plain --impair`" + `), so RTT
  is twice the one-way delay. Every system below crosses the same relays and the same qdiscs.
- Units: kB/s = 1000 bytes of HTTP body per second (a 20 kB/s limit is 160 kbit/s). The limits count
  IP bytes, headers included; mpath also pays 20 bytes of IPIP per packet, so 100% of the sum is not
  reachable for a payload rate (about 96% for kernel TCP, a little less for mpath).
- mpath: ` + "`mpath exit`" + ` beside Apache in the exit namespace, ` + "`mpath client`" + ` in the client namespace;
  curl --socks5-hostname through the client's SOCKS5 front, the file from Apache.
- MPTCP: kernel MPTCP; client endpoints ` + "`ip mptcp endpoint add 10.B.i.1 dev c<i> subflow`" + ` for paths
  2..n, the first subflow from path 1's address (` + "`mptcpize run curl --interface 10.B.1.1`" + `); the server
  is a Go net/http server with ListenConfig.SetMultipathTCP(true) in the exit namespace serving the
  same files (Apache cannot be made MPTCP without LD_PRELOAD). Subflows are verified per measurement:
  the server records whether the accepted connection was MPTCP, and each relay's forwarded-byte
  counter shows which paths carried the traffic ("paths used").
- kernel TCP / best single path: curl bound to one path's address (policy routing sends it through
  that path's relay only), from Apache.
- Every body is compared byte for byte with the served file as it streams (sha256 and length too when
  complete); uploads are compared at the sink. A transfer still running at the time cap is cut and its
  rate is computed over the bytes that arrived (marked *).
- The uplinks scenario has no relays: lab/uplinks.sh puts each client uplink behind its own ISP
  router doing nftables masquerade, the exit behind a core router, tbf on the uplinks only; mpath
  runs relay-less paths to a learning exit, MPTCP's subflows cross the same NATs, and "paths used"
  counts the bytes on each ISP router's LAN side (its table's note has the details).
- Thesis figures: F. E. Watson, "Enhance TCP Performance with Multiple Path Routing", M.S. thesis,
  University of Colorado at Colorado Springs, 2005, chapter 4 (600 MHz Pentium III, 100 Mbit LAN,
  htb, apache bench). "Fraction of the sum" divides each figure by the sum of the rate limits of the
  paths in use.
`

// Render re-draws report.md and the charts in dir from its results.json (no lab, no
// root), recomputing the findings: for a report after a change to the rendering.
func Render(dir string) (*Results, error) {
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		return nil, fmt.Errorf("bench lab render: %w", err)
	}
	var res Results
	if err := json.Unmarshal(b, &res); err != nil {
		return nil, fmt.Errorf("bench lab render: %s: %w", filepath.Join(dir, "results.json"), err)
	}
	for _, t := range res.Tables {
		if t.Seconds > 0 {
			t.Findings = findings(t)
		}
	}
	r := &runner{opt: Options{Out: dir}, res: &res}
	return &res, r.write()
}
