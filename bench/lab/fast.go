package benchlab

import (
	"fmt"
	"strings"
)

// The "fast" scenario (issue 11): paths fast enough that CPU per byte, not the links,
// decides. mpath beside kernel MPTCP and kernel TCP in one run, with the CPU time of
// every process role per GB moved.

const mbit500 = 62_500_000 // 500 Mbit/s in bytes/s

func buildFast(q bool) []*Table {
	cpu := func(m Measure) Measure { m.CPU = true; return m }
	t := &Table{ID: "fast", Scenario: "fast", Chart: "bars", RowHead: "paths",
		Title:   "Fast paths: 4 x 500 Mbit/s, download through the SOCKS5 front vs kernel MPTCP vs kernel TCP on one path",
		Systems: []string{sysMpath, sysMPTCP, sysSingle},
		Target:  "mpath >= kernel MPTCP; client and exit <= 3 CPU s/GB each, relays <= 1.5 CPU s/GB per direction",
		Note: "No added delay. CPU: utime+stime from /proc/PID/stat of every process in the lab's namespaces " +
			"(mpath client, mpath exit, relays, Apache) before and after each transfer, plus curl's rusage; kernel " +
			"work done in softirq context is charged to whichever process was running, so the system-wide busy " +
			"time from /proc/stat is shown too."}
	col := "download"
	t.Cols = []string{col}
	t.Rows = []string{"4 x 500 Mbit/s"}
	addCell(t, Topo{Paths: 4}, &Cell{Row: t.Rows[0], Col: col, Series: col, Nodes: 4, Rates: repeatRate(4, mbit500)},
		cpu(mpathAuto), cpu(mptcp), cpu(kernelOn(1, sysSingle)))
	tu := &Table{ID: "fast-unlimited", Scenario: "fast", Chart: "bars", RowHead: "paths",
		Title:   "Fast paths: one path with no rate limit, mpath vs kernel TCP, with CPU cost",
		Systems: []string{sysMpath, sysKernel},
		Target:  "mpath >= 1.0 x kernel TCP",
		Note:    t.Note}
	tu.Cols = []string{"unlimited"}
	tu.Rows = []string{"1 path"}
	addCell(tu, Topo{Paths: 1}, &Cell{Row: tu.Rows[0], Col: tu.Cols[0], Series: tu.Cols[0], Nodes: 1, Rates: []int64{0}},
		cpu(mpathAuto), cpu(kernelOn(1, sysKernel)))
	return []*Table{t, tu}
}

// fastFindings: each system's rate against mpath's, and CPU seconds per GB by role.
func fastFindings(t *Table) []string {
	var out []string
	for _, c := range t.Cells {
		m := c.Runs[sysMpath]
		if m == nil || m.Err != "" {
			continue
		}
		for _, s := range t.Systems[1:] {
			if o := c.Runs[s]; o != nil && o.Err == "" && o.KBps > 0 {
				out = append(out, fmt.Sprintf("%s: mpath / %s = %.2f (%.1f vs %.1f MB/s)", c.Row, s, m.KBps/o.KBps, m.KBps/1000, o.KBps/1000))
			}
		}
		for _, s := range t.Systems {
			run := c.Runs[s]
			if run == nil || run.Err != "" || len(run.CPU) == 0 || run.Bytes == 0 {
				continue
			}
			gb := float64(run.Bytes) / 1e9
			var parts []string
			for _, g := range sortedKeys(run.CPU) {
				if g != cpuSystemWide {
					parts = append(parts, fmt.Sprintf("%s %.2f", g, run.CPU[g]/gb))
				}
			}
			out = append(out, fmt.Sprintf("%s, %s: CPU s/GB %s; lab processes %.2f, system-wide busy time %.2f",
				c.Row, s, strings.Join(parts, ", "), run.CPUTotal()/gb, run.CPU[cpuSystemWide]/gb))
		}
	}
	return out
}
