package benchlab

import (
	"strings"
	"testing"
)

func TestPageLoadShape(t *testing.T) {
	m := tablesOf(t, false, "pages")
	pg := m["pages"]
	for _, c := range pg.Cells {
		for _, ms := range c.measures {
			if ms.Kind != kindPage || ms.Page == nil {
				t.Fatalf("pages %s: measure %+v", c.Row, ms)
			}
		}
		p := c.measures[0].Page
		if p.Fetches != 50 || p.bytes() != 3_000_000 {
			t.Errorf("pages %s: %d fetches, %d bytes; want the 50-object 3 MB page", c.Row, p.Fetches, p.bytes())
		}
		// mpath through the SOCKS front (needs nodes); the single path bound to path 1.
		if mp, k := c.measures[0], c.measures[1]; !needsNodes(mp) || needsNodes(k) || k.Path != 1 {
			t.Errorf("pages %s: mpath %+v, single path %+v", c.Row, mp, k)
		}
	}
	mf := m["manyflows"].Cells[0]
	if p := mf.measures[0].Page; p.Fetches != 100 || p.bytes() != 100<<20 || mf.Sum != 3*mbit40 {
		t.Errorf("manyflows: %d fetches, %d bytes, sum %d", p.Fetches, p.bytes(), mf.Sum)
	}
	// The two tables' mpath runs are not one measurement.
	if cacheKey(pg.Cells[1], pg.Cells[1].measures[0]) == cacheKey(mf, mf.measures[0]) {
		t.Error("page load and many flows share a cache key")
	}
}

func TestPageLoadCounts(t *testing.T) {
	p := &pageLoad{Fetches: 7, Sizes: []int64{10, 20, 30}}
	got := p.counts()
	if len(got) != 3 || got[0] != 3 || got[1] != 2 || got[2] != 2 || p.bytes() != 3*10+2*20+2*30 {
		t.Errorf("counts %v bytes %d", got, p.bytes())
	}
	if s := page.String(); s != "50 x 20 kB-100 kB" {
		t.Errorf("page %q", s)
	}
}

func TestSumMetrics(t *testing.T) {
	in := `# TYPE mpath_path_tx_packets_total counter
mpath_path_tx_packets_total{index="0",path="x1",role="exit"} 100
mpath_path_tx_packets_total{index="1",path="x2",role="exit"} 50
mpath_path_tx_packets_total_extra 7
mpath_path_retransmits_total{index="0",path="x1",role="exit"} 3
mpath_path_retransmits_total{index="1",path="x2",role="exit"} 1.5e1
`
	got, err := sumMetrics(strings.NewReader(in), "mpath_path_tx_packets_total", "mpath_path_retransmits_total")
	if err != nil || got[0] != 150 || got[1] != 18 {
		t.Fatalf("sums %v, %v", got, err)
	}
	if _, err := sumMetrics(strings.NewReader(in), "mpath_nothing"); err == nil {
		t.Error("a missing metric is not an error")
	}
}
