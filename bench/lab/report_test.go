package benchlab

import (
	"bytes"
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fill gives every cell of t outcomes from f(cell, system) (kB/s; < 0 = failed).
func fill(t *Table, f func(c *Cell, sys string) float64) {
	for _, c := range t.Cells {
		for _, s := range t.Systems {
			v := f(c, s)
			o := &Outcome{System: s, KBps: v, Complete: true, Bytes: 1000, Seconds: 1}
			if v < 0 {
				o.KBps, o.Err = 0, "curl: exit status 7"
			}
			c.Runs[s] = o
		}
	}
	t.Seconds = 1
}

func TestRenderRatesTable(t *testing.T) {
	tb := tablesOf(t, true, "rates")["4.8"]
	fill(tb, func(c *Cell, s string) float64 {
		if s == sysMPTCP {
			return 40 * float64(c.Nodes)
		}
		return 45 * float64(c.Nodes)
	})
	// One incomplete and one failed run, with per-path bytes.
	c := tb.cell("2", "200 kB/s")
	c.Runs[sysMpath] = &Outcome{System: sysMpath, KBps: 350, Complete: false, PathBytes: []uint64{500, 500}}
	no := false
	c.Runs[sysMPTCP] = &Outcome{System: sysMPTCP, Err: "boom", MPTCPConn: &no}
	tb.Findings = findings(tb)
	var b bytes.Buffer
	renderTable(&b, tb)
	out := b.String()
	for _, want := range []string{
		"Table 4.8: Multipath",
		"kB/s, each cell: mpath / MPTCP / thesis 4.8",
		"| 1     | 45.0 / 40.0 / 18.94", // 1 node, 50 kB/s
		"350.0* / FAILED / 284.61",      // 2 nodes, 200 kB/s
		"| 2     | 90.0 / 80.0 / 75.72",
		"90% / 80% / 76%", // fractions of 100 kB/s
		"88% / - / 71%",   // 350 of 400 kB/s; failed; 284.61 of 400
		"| 2     | 200 kB/s | 400.0    | 350.0*",
		"2/2 / -", // paths used
		"mpath reached at least the thesis's figure (4.8) in 3 of 4 cells",
		"* = cut at the time cap",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table text lacks %q:\n%s", want, out)
		}
	}
}

func TestFindingsTargets(t *testing.T) {
	m := tablesOf(t, false, "proxy", "transport")
	p := m["proxy"]
	fill(p, func(c *Cell, s string) float64 {
		switch s {
		case sysMpath:
			if strings.HasPrefix(c.Row, "5 x") {
				return 0.95 * float64(c.Sum) / 1000 // target 90%: met
			}
			return 0.80 * float64(c.Sum) / 1000 // 90% / 85%: not met
		case sysMPTCP:
			return 0.5 * float64(c.Sum) / 1000
		}
		return 1200
	})
	f := strings.Join(findings(p), "\n")
	for _, want := range []string{
		"5 x 10 Mbit/s: mpath 95% of the sum (target 90%: met), MPTCP 50%, best single path 19%; mpath = 4.95 x the best single path",
		"1 + 4 x 10 Mbit/s: mpath 80% of the sum (target 90%: NOT met)",
		"2 x 10 Mbit/s, RTT 10 / 80 ms: mpath 80% of the sum (target 85%: NOT met)",
	} {
		if !strings.Contains(f, want) {
			t.Errorf("proxy findings lack %q:\n%s", want, f)
		}
	}

	d := m["direct"]
	fill(d, func(c *Cell, s string) float64 { return 0.9 * float64(c.Sum) / 1000 })
	f = strings.Join(findings(d), "\n")
	if !strings.Contains(f, "upload over 3 paths: 90% of their sum (target 85%: met)") ||
		!strings.Contains(f, "download over 1 path: 90% of the path's rate") {
		t.Errorf("direct findings:\n%s", f)
	}

	u := m["unlimited"]
	fill(u, func(c *Cell, s string) float64 { return map[string]float64{sysMpath: 20000, sysKernel: 50000}[s] })
	u.Cells[0].Runs[sysMpath].Bytes = 2e9
	u.Cells[0].Runs[sysMpath].CPU = map[string]float64{"mpath client": 10, "relay": 6, cpuSystemWide: 40}
	f = strings.Join(findings(u), "\n")
	if !strings.Contains(f, "same run: 0.40 (target 0.5: NOT met)") ||
		!strings.Contains(f, "mpath: 8.0 CPU s/GB in the lab's processes (mpath client 5.0, relay 3.0); system-wide busy time 20.0 s/GB") {
		t.Errorf("unlimited findings:\n%s", f)
	}

	tt := tablesOf(t, false, "proxy")["ttfb"]
	tt.Cells[0].Runs[sysTTFBMpath] = &Outcome{System: sysTTFBMpath, TTFBms: 35, Samples: 20}
	tt.Cells[0].Runs[sysTTFBDir] = &Outcome{System: sysTTFBDir, TTFBms: 25, RTTms: 10, Samples: 20}
	tt.Seconds = 1
	tt.Findings = findings(tt)
	var b bytes.Buffer
	renderTable(&b, tt)
	if !strings.Contains(b.String(), "10.00 ms = 1.00 round trips of 10.00 ms (target <= 1: met)") ||
		!strings.Contains(b.String(), "| TTFB direct | 25.00") {
		t.Errorf("ttfb:\n%s", b.String())
	}
}

// An MPTCP run that fell back to TCP, or whose bytes crossed one relay only, is named.
func TestFindingsMPTCPFallback(t *testing.T) {
	tb := tablesOf(t, true, "rates")["4.8"]
	fill(tb, func(c *Cell, s string) float64 { return 10 })
	yes := true
	tb.cell("2", "50 kB/s").Runs[sysMPTCP].PathBytes = []uint64{1e6, 100}
	tb.cell("2", "50 kB/s").Runs[sysMPTCP].MPTCPConn = &yes
	f := strings.Join(findings(tb), "\n")
	if !strings.Contains(f, "MPTCP used one path only (fallback or no subflows) in 1 cells: 2/50 kB/s") {
		t.Errorf("findings:\n%s", f)
	}
	tb.cell("2", "50 kB/s").Runs[sysMPTCP].PathBytes = []uint64{1e6, 1e6}
	f = strings.Join(findings(tb), "\n")
	if !strings.Contains(f, "each of the 2 multi-path measurements had an MPTCP connection") {
		t.Errorf("findings:\n%s", f)
	}
}

// write produces results.json that round-trips, report.md that embeds every chart, and
// PNGs that decode.
func TestWriteOutputs(t *testing.T) {
	dir := t.TempDir()
	m := tablesOf(t, true, "rates", "weights", "proxy")
	res := &Results{Command: "mpath bench --lab rates --quick", Quick: true, Seconds: 1, Repeat: 1}
	for _, id := range []string{"4.4/4.6", "4.8", "4.12", "proxy"} {
		tb := m[id]
		fill(tb, func(c *Cell, s string) float64 { return 30 * float64(c.Nodes) * float64(len(s)) / 5 })
		res.Tables = append(res.Tables, tb)
	}
	r := &runner{opt: Options{Out: dir}, res: res}
	if err := r.write(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back Results
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Tables) != 4 || back.Tables[1].Cells[3].Runs[sysMpath].KBps != 60 {
		t.Fatalf("results.json round trip: %d tables", len(back.Tables))
	}
	report, err := os.ReadFile(filepath.Join(dir, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"table-4.4-4.6.png": true, "table-4.8.png": true, "table-4.8-fraction.png": true,
		"table-4.12.png": true, "table-4.12-fraction.png": true, "table-proxy.png": true}
	for name := range want {
		if !strings.Contains(string(report), "![") || !strings.Contains(string(report), "("+name+")") {
			t.Errorf("report.md does not embed %s", name)
		}
		svg, err := os.ReadFile(filepath.Join(dir, strings.TrimSuffix(name, ".png")+".svg"))
		if err != nil || !strings.Contains(string(svg), "<svg") || !strings.Contains(string(svg), "</svg>") {
			t.Errorf("chart %s: no SVG beside it (%v)", name, err)
		}
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("chart %s: %v", name, err)
			continue
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Errorf("chart %s: %v", name, err)
			continue
		}
		// Something was drawn: not every pixel is the white background.
		bd := img.Bounds()
		coloured := 0
		for y := bd.Min.Y; y < bd.Max.Y; y += 3 {
			for x := bd.Min.X; x < bd.Max.X; x += 3 {
				r, g, b, _ := img.At(x, y).RGBA()
				if r != g || g != b {
					coloured++
				}
			}
		}
		if bd.Dx() < 400 || bd.Dy() < 300 || coloured < 10 {
			t.Errorf("chart %s: %dx%d, %d coloured samples", name, bd.Dx(), bd.Dy(), coloured)
		}
	}
	for _, s := range []string{"## Table 4.8", "## Table proxy", "## Method", "QUICK subset"} {
		if !strings.Contains(string(report), s) {
			t.Errorf("report.md lacks %q", s)
		}
	}
}

// Render re-draws a report from results.json alone, with the findings of the current code.
func TestRender(t *testing.T) {
	dir := t.TempDir()
	tb := tablesOf(t, true, "proxy")["proxy"]
	fill(tb, func(c *Cell, s string) float64 { return 0.95 * float64(c.Sum) / 1000 })
	b, err := json.Marshal(&Results{Tables: []*Table{tb}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := Render(dir)
	if err != nil {
		t.Fatal(err)
	}
	report, _ := os.ReadFile(filepath.Join(dir, "report.md"))
	if len(res.Tables[0].Findings) == 0 || !strings.Contains(string(report), "(target 85%: met)") ||
		!strings.Contains(string(report), "](table-proxy.png)") {
		t.Errorf("rendered report:\n%s", report)
	}
	if _, err := os.Stat(filepath.Join(dir, "table-proxy.png")); err != nil {
		t.Error(err)
	}
	if _, err := Render(t.TempDir()); err == nil {
		t.Error("rendered without results.json")
	}
}
