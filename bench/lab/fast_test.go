package benchlab

import (
	"strings"
	"testing"
)

// The fast scenario measures the three systems with CPU accounting on the same cells,
// and its findings report the rate ratios and CPU s/GB per role.
func TestFastScenario(t *testing.T) {
	m := tablesOf(t, true, "fast")
	ft, fu := m["fast"], m["fast-unlimited"]
	if ft == nil || fu == nil || len(m) != 2 {
		t.Fatalf("tables %v, want fast and fast-unlimited", m)
	}
	c := ft.Cells[0]
	if c.Nodes != 4 || c.Sum != 4*mbit500 {
		t.Fatalf("fast cell: %d nodes, sum %d", c.Nodes, c.Sum)
	}
	if len(c.measures) != 3 {
		t.Fatalf("fast cell measures %d systems, want 3", len(c.measures))
	}
	for _, tb := range []*Table{ft, fu} {
		for _, ms := range tb.Cells[0].measures {
			if !ms.CPU {
				t.Errorf("%s: %s measured without CPU accounting", tb.ID, ms.System)
			}
		}
	}
	c.Runs = map[string]*Outcome{
		sysMpath:  {System: sysMpath, KBps: 150_000, Bytes: 2e9, CPU: map[string]float64{"mpath client": 4, "mpath exit": 6, cpuSystemWide: 20}},
		sysMPTCP:  {System: sysMPTCP, KBps: 100_000, Bytes: 1e9, CPU: map[string]float64{"relay": 1, cpuSystemWide: 5}},
		sysSingle: {System: sysSingle, KBps: 50_000, Err: "curl failed"},
	}
	got := strings.Join(fastFindings(ft), "\n")
	for _, want := range []string{
		"mpath / MPTCP = 1.50 (150.0 vs 100.0 MB/s)",
		"mpath client 2.00, mpath exit 3.00; lab processes 5.00, system-wide busy time 10.00",
		"relay 1.00; lab processes 1.00, system-wide busy time 5.00",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("findings lack %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, sysSingle) {
		t.Errorf("findings use a failed run:\n%s", got)
	}
}
