package table_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"mpath/lab/table"
)

// exposition renders node metrics the way cmd/mpath's collector does (same names,
// labels and types), for two paths with the given per-path values.
func exposition(role string, p [2]map[string]float64, node map[string]float64) string {
	var b strings.Builder
	names := []string{"mpath_path_up", "mpath_path_tx_packets_total", "mpath_path_tx_bytes_total",
		"mpath_path_rx_packets_total", "mpath_path_rx_bytes_total", "mpath_path_delivered_bytes_total",
		"mpath_path_retransmits_total", "mpath_path_lost_total", "mpath_path_spurious_total",
		"mpath_path_send_errors_total", "mpath_path_srtt_seconds", "mpath_path_min_rtt_seconds",
		"mpath_path_cwnd_bytes", "mpath_path_inflight_bytes", "mpath_path_delivery_rate_bytes_per_second", "mpath_path_delivered_ratio"}
	devs := [2]string{"c1>10.77.1.2", "c2>10.77.2.2"}
	for _, n := range names {
		typ := "gauge"
		if strings.HasSuffix(n, "_total") {
			typ = "counter"
		}
		fmt.Fprintf(&b, "# HELP %s help text\n# TYPE %s %s\n", n, n, typ)
		for i := range 2 {
			fmt.Fprintf(&b, "%s{index=\"%d\",path=\"%s\",role=\"%s\"} %g\n", n, i, devs[i], role, p[i][n])
		}
	}
	fmt.Fprintf(&b, "# TYPE mpath_flows gauge\nmpath_flows{role=%q} %g\n", role, node["flows"])
	fmt.Fprintf(&b, "# TYPE mpath_reorder_max_depth gauge\nmpath_reorder_max_depth{role=%q} %g\n", role, node["depth"])
	fmt.Fprintf(&b, "# TYPE mpath_reorder_held_bytes gauge\nmpath_reorder_held_bytes{role=%q} %g\n", role, node["held"])
	fmt.Fprintf(&b, "# TYPE mpath_reorder_hold_max_seconds gauge\nmpath_reorder_hold_max_seconds{role=%q} %g\n", role, node["hold"])
	fmt.Fprintf(&b, "# TYPE mpath_engine_drops_total counter\nmpath_engine_drops_total{reason=\"no_connection\",role=%q} %g\nmpath_engine_drops_total{reason=\"not_ours\",role=%q} 0\n", role, node["noconn"], role)
	fmt.Fprintf(&b, "# TYPE mpath_link_drops_total counter\nmpath_link_drops_total{reason=\"ring-full\",role=%q} %g\nmpath_link_drops_total{reason=\"checksum\",role=%q} 0\n", role, node["ringfull"], role)
	fmt.Fprintf(&b, "# TYPE mpath_front_connections_total counter\n")
	for _, ev := range []string{"accepted", "relayed", "dial_failed"} {
		fmt.Fprintf(&b, "mpath_front_connections_total{event=%q,front=\"socks\",role=%q} %g\n", ev, role, node["socks_"+ev])
	}
	fmt.Fprintf(&b, "# TYPE mpath_front_bytes_total counter\n")
	for _, dir := range []string{"up", "down"} {
		fmt.Fprintf(&b, "mpath_front_bytes_total{direction=%q,front=\"socks\",role=%q} %g\n", dir, role, node["socks_bytes_"+dir])
	}
	// Go runtime series the real endpoint does not have but a default registry would:
	// ignored.
	fmt.Fprintf(&b, "# TYPE go_goroutines gauge\ngo_goroutines 12\n")
	return b.String()
}

func pathVals(up, tx, rx, del, retx, lost, srtt, minrtt, cwnd, infl, share float64) map[string]float64 {
	return map[string]float64{
		"mpath_path_up": up, "mpath_path_tx_bytes_total": tx, "mpath_path_rx_bytes_total": rx,
		"mpath_path_delivered_bytes_total": del, "mpath_path_retransmits_total": retx,
		"mpath_path_lost_total": lost, "mpath_path_srtt_seconds": srtt, "mpath_path_min_rtt_seconds": minrtt,
		"mpath_path_cwnd_bytes": cwnd, "mpath_path_inflight_bytes": infl, "mpath_path_delivered_ratio": share,
		"mpath_path_tx_packets_total": tx / 1000, "mpath_path_rx_packets_total": rx / 1000,
	}
}

var node = map[string]float64{"flows": 3, "depth": 17, "held": 45000, "hold": 0.0123, "noconn": 6, "ringfull": 387,
	"socks_accepted": 4, "socks_relayed": 3, "socks_bytes_up": 79, "socks_bytes_down": 40_000_213, "socks_dial_failed": 1}

func TestParse(t *testing.T) {
	text := exposition("exit", [2]map[string]float64{
		pathVals(1, 24_172_713, 643_506, 23_224_071, 405, 255, 0.056843183, 0.021, 183_000, 96_000, 0.75),
		pathVals(0, 1_000, 2_000, 900, 0, 1, 0, 0, 0, 0, 0.25),
	}, node)
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s, err := table.Parse(strings.NewReader(text), at)
	if err != nil {
		t.Fatal(err)
	}
	if s.Role != "exit" || !s.Time.Equal(at) || len(s.Paths) != 2 {
		t.Fatalf("role %q time %v paths %d", s.Role, s.Time, len(s.Paths))
	}
	p := s.Paths[0]
	want := table.Path{Index: 0, Name: "c1>10.77.1.2", Up: true, TxPackets: 24_173, TxBytes: 24_172_713, RxPackets: 644,
		RxBytes: 643_506, Delivered: 23_224_071, Retransmits: 405, Lost: 255,
		SRTT: 56_843_183 * time.Nanosecond, MinRTT: 21 * time.Millisecond, Cwnd: 183_000, InFlight: 96_000, Share: 0.75}
	if p != want {
		t.Fatalf("path 0:\n got %+v\nwant %+v", p, want)
	}
	if s.Paths[1].Up || s.Paths[1].Index != 1 || s.Paths[1].Name != "c2>10.77.2.2" || s.Paths[1].Lost != 1 {
		t.Fatalf("path 1: %+v", s.Paths[1])
	}
	if s.Flows != 3 || s.ReorderMaxDepth != 17 || s.ReorderHeldBytes != 45000 || s.ReorderHoldMax != 12300*time.Microsecond {
		t.Fatalf("node: %+v", s)
	}
	if s.EngineDrops["no_connection"] != 6 || s.LinkDrops["ring-full"] != 387 || s.Front["socks"]["bytes_down"] != 40_000_213 {
		t.Fatalf("drops/front: %v %v %v", s.EngineDrops, s.LinkDrops, s.Front)
	}
	if s.HasExit {
		t.Fatal("HasExit without exit series")
	}
}

func TestParseNotANode(t *testing.T) {
	relay := "# TYPE mpath_relay_forwarded_packets_total counter\nmpath_relay_forwarded_packets_total 12\n"
	if _, err := table.Parse(strings.NewReader(relay), time.Now()); !errors.Is(err, table.ErrNoPaths) {
		t.Fatalf("relay metrics: err = %v, want ErrNoPaths", err)
	}
	if _, err := table.Parse(strings.NewReader("mpath_path_up{index=\"0\" 1\n"), time.Now()); err == nil {
		t.Fatal("malformed text parsed")
	}
}

func TestDiffRates(t *testing.T) {
	t0 := time.Unix(1000, 0)
	prev := &table.Snapshot{Time: t0, Paths: []table.Path{
		{Index: 0, TxBytes: 1000, RxBytes: 500, Delivered: 800, Retransmits: 2},
		{Index: 1, TxBytes: 9000, RxBytes: 9000},
	}}
	cur := &table.Snapshot{Time: t0.Add(2 * time.Second), Paths: []table.Path{
		{Index: 0, TxBytes: 2_501_000, RxBytes: 100_500, Delivered: 2_000_800, Retransmits: 5, Lost: 1},
		{Index: 1, TxBytes: 100, RxBytes: 200}, // restarted: counts from zero
	}}
	d := table.Diff(prev, cur)
	if d[0].DTxBytes != 2_500_000 || d[0].TxRate != 1_250_000 || d[0].RxRate != 50_000 || d[0].DelRate != 1_000_000 ||
		d[0].DRetransmits != 3 || d[0].DLost != 1 || d[0].Elapsed != 2*time.Second {
		t.Fatalf("path 0: %+v", d[0])
	}
	if d[1].DTxBytes != 100 || d[1].DRxBytes != 200 {
		t.Fatalf("path 1 after restart: %+v", d[1])
	}
	if nd := table.Diff(nil, cur); nd[0].TxRate != 0 || nd[0].DTxBytes != 2_501_000 {
		t.Fatalf("no prev: %+v", nd[0])
	}
}

func TestTracker(t *testing.T) {
	var tr table.Tracker
	for i, p := range []table.Path{
		{Index: 0, Up: true, SRTT: 20 * time.Millisecond, MinRTT: 12 * time.Millisecond, InFlight: 1, Cwnd: 10},
		{Index: 0, Up: false, SRTT: 40 * time.Millisecond, MinRTT: 10 * time.Millisecond, InFlight: 1, Cwnd: 30},
		{Index: 0, Up: true, SRTT: 90 * time.Millisecond, MinRTT: 0, InFlight: 0, Cwnd: 20}, // idle: SRTT not counted
	} {
		tr.Observe(&table.Snapshot{Time: time.Unix(int64(i), 0), Paths: []table.Path{p}})
	}
	s := tr.Summary(0)
	want := table.RTTSummary{MeanSRTT: 30 * time.Millisecond, MinRTT: 10 * time.Millisecond, Samples: 2, WentDown: true, MaxCwnd: 30}
	if s != want {
		t.Fatalf("summary %+v, want %+v", s, want)
	}
	if (tr.Summary(5) != table.RTTSummary{}) {
		t.Fatal("unknown path has a summary")
	}
}

func TestRenderAlignment(t *testing.T) {
	tb := &table.Table{Header: []string{"NAME", "N"}, Indent: "  "}
	tb.Add("a", "1")
	tb.Add("longer", "12345")
	var b bytes.Buffer
	if err := tb.Render(&b); err != nil {
		t.Fatal(err)
	}
	want := "  NAME        N\n  a           1\n  longer  12345\n"
	if b.String() != want {
		t.Fatalf("got\n%q\nwant\n%q", b.String(), want)
	}
}

func TestFormat(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{table.Bytes(999), "999 B"}, {table.Bytes(12_345), "12.3 kB"}, {table.Bytes(45_600_000), "45.6 MB"},
		{table.Bytes(1_200_000_000), "1.20 GB"}, {table.Mbit(2_712_500), "21.7 Mbit/s"}, {table.Mbit(125_000), "1.00 Mbit/s"},
		{table.Ms(56_843_183), "56.8 ms"}, {table.Ms(0), "-"}, {table.Ms(1500 * time.Microsecond), "1.50 ms"},
		{table.Pct(0.5806), "58.1%"},
		{table.Short(999), "999"}, {table.Short(183_000), "183.0k"}, {table.Short(45_600_000), "45.6M"}, {table.Short(1_200_000_000), "1.20G"}, {table.State(false), "DOWN"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

// TestFetchStatusTable serves known values from an httptest endpoint, twice with
// counters moving, and checks the rendered status table and node lines carry them.
func TestFetchStatusTable(t *testing.T) {
	var scrapes atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		n := float64(scrapes.Add(1))
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprint(w, exposition("client", [2]map[string]float64{
			pathVals(1, 1_000_000*n, 30_000_000*n, 900_000*n, 405, 255, 0.0568, 0.0213, 183_000, 96_000, 0.6),
			pathVals(0, 500_000*n, 10_000_000*n, 600_000*n, 7, 3, 0.1384, 0.1201, 64_000, 0, 0.4),
		}, node))
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	ctx := context.Background()
	first, err := table.Fetch(ctx, nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	second, err := table.Fetch(ctx, srv.Client(), srv.URL+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	// Pin the interval so the rates are exact: 1 s between the scrapes.
	second.Time = first.Time.Add(time.Second)

	var b bytes.Buffer
	if err := table.StatusTable(second, first).Render(&b); err != nil {
		t.Fatal(err)
	}
	table.NodeLines(&b, second)
	out := b.String()
	t.Log("\n" + out)
	lines := strings.Split(out, "\n")
	row := func(prefix string) string {
		for _, l := range lines {
			if strings.HasPrefix(l, prefix) {
				return l
			}
		}
		t.Fatalf("no line starting %q in\n%s", prefix, out)
		return ""
	}
	for _, c := range []struct {
		line  string
		cells []string
	}{
		// share 60%, rx share 30/(30+10) = 75%, totals after two scrapes, rates: one
		// scrape's worth per second (1 MB/s = 8 Mbit/s tx, 30 MB/s = 240 Mbit/s rx).
		{row("1 c1>10.77.1.2"), []string{" up ", " 60.0%/75.0% ", " 2.0M/60.0M ", " 8.00/240.00 ",
			" 56.8 ms ", " 21.3 ms ", " 183.0k ", " 96.0k ", " 405 ", " 255"}},
		{row("2 c2>10.77.2.2"), []string{" DOWN ", " 40.0%/25.0% ", " 1.0M/20.0M ", " 4.00/80.00 ",
			" 138.4 ms ", " 120.1 ms ", " 64.0k ", " 0 ", " 7 ", " 3"}},
		{row("flows 3"), []string{"max depth 17", "held 45.0 kB", "longest hold 12.3 ms"}},
		{row("drops:"), []string{"engine no_connection=6", "link ring-full=387"}},
		{row("socks front:"), []string{"accepted 4", "relayed 3", "up 79 B", "down 40.0 MB", "dial 1"}},
	} {
		for _, cell := range c.cells {
			if !strings.Contains(c.line, cell) {
				t.Errorf("line %q lacks %q", c.line, cell)
			}
		}
	}
	if strings.Contains(out, "exit:") {
		t.Error("exit line for a client")
	}
	// Without a previous sample there is no rate.
	b.Reset()
	table.StatusTable(first, nil).Render(&b)
	if strings.Contains(b.String(), "8.00/") || !strings.Contains(b.String(), " - ") {
		t.Errorf("rates without a previous sample:\n%s", b.String())
	}

	// Errors say what went wrong.
	if _, err := table.Fetch(ctx, nil, addr+"/nothing-here"); err == nil {
		t.Error("fetch of a bad URL succeeded")
	}
	srv404 := httptest.NewServer(http.NotFoundHandler())
	defer srv404.Close()
	if _, err := table.Fetch(ctx, nil, strings.TrimPrefix(srv404.URL, "http://")); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("404 endpoint: err = %v", err)
	}
}
