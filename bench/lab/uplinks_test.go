package benchlab

import (
	"strings"
	"testing"
)

// The uplinks table: every system on every cell, the MPTCP and single-uplink runs of
// the two topologies kept apart, and findings that hold mpath to 90% of the sum.
func TestUplinksScenario(t *testing.T) {
	tb := tablesOf(t, false, "uplinks")["uplinks"]
	if tb == nil || len(tb.Cells) != 6 {
		t.Fatalf("uplinks table: %+v", tb)
	}
	keys := map[string]string{}
	for _, c := range tb.Cells {
		for _, m := range c.measures {
			k := cacheKey(c, m)
			if prev, ok := keys[k]; ok {
				t.Errorf("%s %s shares its measurement with %s", c.Row, m.System, prev)
			}
			keys[k] = c.Row + " " + m.System
		}
	}
	c := tb.Cells[4] // 3 x 10 udp, download
	if c.Row != "3 x 10 udp, download" || c.Nodes != 3 || c.Sum != 3*mbit10 || c.topo.Drop4 != 2 {
		t.Fatalf("cell 4: %s, %d nodes, sum %d, drop4 %d", c.Row, c.Nodes, c.Sum, c.topo.Drop4)
	}
	tb.Cells = []*Cell{c}
	c.Runs = map[string]*Outcome{
		sysMpath:  {System: sysMpath, KBps: 3562.5, PathBytes: []uint64{1000, 1000, 1000}},
		sysMPTCP:  {System: sysMPTCP, KBps: 3000},
		sysSingle: {System: sysSingle, KBps: 1200},
	}
	got := strings.Join(uplinksFindings(tb), "\n")
	for _, want := range []string{"mpath 95% of the sum (target 90%: met)", "MPTCP 80%", "best single uplink 32%",
		"mpath = 1.19 x MPTCP", "split over the uplinks 33/33/33%"} {
		if !strings.Contains(got, want) {
			t.Errorf("findings lack %q:\n%s", want, got)
		}
	}
	c.Runs[sysMpath].KBps = 2375
	if got := strings.Join(uplinksFindings(tb), "\n"); !strings.Contains(got, "mpath 63% of the sum (target 90%: NOT met)") {
		t.Errorf("63%% of the sum not flagged:\n%s", got)
	}
}

func TestParseLinkBytes(t *testing.T) {
	js := `[{"ifindex":7,"ifname":"lan","mtu":1500,"stats64":{"rx":{"bytes":1200,"packets":3,"errors":0},"tx":{"bytes":34,"packets":1,"errors":0}}}]`
	if n, err := parseLinkBytes([]byte(js)); err != nil || n != 1234 {
		t.Fatalf("parseLinkBytes = %d, %v; want 1234", n, err)
	}
	for _, bad := range []string{``, `[]`, `{"x":1}`, js[:len(js)-1] + `,` + js[1:]} {
		if _, err := parseLinkBytes([]byte(bad)); err == nil {
			t.Errorf("parseLinkBytes(%q) accepted", bad)
		}
	}
}
