package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeExitMetrics serves exit metrics for two paths whose tx counters grow by 1 MB per
// scrape on path 1 and 0.5 MB on path 2.
func fakeExitMetrics(scrapes *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := scrapes.Add(1)
		fmt.Fprintf(w, "# TYPE mpath_path_tx_bytes_total counter\n")
		fmt.Fprintf(w, "mpath_path_tx_bytes_total{index=\"0\",path=\"x1>10.77.101.2\",role=\"exit\"} %d\n", 1_000_000*n)
		fmt.Fprintf(w, "mpath_path_tx_bytes_total{index=\"1\",path=\"x2>10.77.102.2\",role=\"exit\"} %d\n", 500_000*n)
		fmt.Fprintf(w, "# TYPE mpath_path_up gauge\n")
		fmt.Fprintf(w, "mpath_path_up{index=\"0\",path=\"x1>10.77.101.2\",role=\"exit\"} 1\n")
		fmt.Fprintf(w, "mpath_path_up{index=\"1\",path=\"x2>10.77.102.2\",role=\"exit\"} 0\n")
		fmt.Fprintf(w, "# TYPE mpath_path_srtt_seconds gauge\n")
		fmt.Fprintf(w, "mpath_path_srtt_seconds{index=\"0\",path=\"x1>10.77.101.2\",role=\"exit\"} 0.0234\n")
		fmt.Fprintf(w, "mpath_path_srtt_seconds{index=\"1\",path=\"x2>10.77.102.2\",role=\"exit\"} 0.1317\n")
		fmt.Fprintf(w, "# TYPE mpath_path_retransmits_total counter\n")
		fmt.Fprintf(w, "mpath_path_retransmits_total{index=\"0\",path=\"x1>10.77.101.2\",role=\"exit\"} 41\n")
		fmt.Fprintf(w, "mpath_path_retransmits_total{index=\"1\",path=\"x2>10.77.102.2\",role=\"exit\"} 9\n")
		fmt.Fprintf(w, "# TYPE mpath_exit_connections_total counter\nmpath_exit_connections_total{event=\"relayed\",role=\"exit\"} 12\n")
		fmt.Fprintf(w, "# TYPE mpath_exit_refused_total counter\nmpath_exit_refused_total{reason=\"bad_mac\",role=\"exit\"} 2\n")
		fmt.Fprintf(w, "# TYPE mpath_flows gauge\nmpath_flows{role=\"exit\"} 5\n")
		// A learning exit: two paths of one client that share the exit's address (two
		// relay-less uplinks), told apart by path index and endpoint.
		fmt.Fprintf(w, "# TYPE mpath_link_learned_endpoint_changed_seconds gauge\n")
		fmt.Fprintf(w, "mpath_link_learned_endpoint_changed_seconds{client=\"192.168.1.2\",endpoint=\"100.64.2.2:5555\",path=\"1\",role=\"exit\"} %d\n", learnedAt)
		fmt.Fprintf(w, "mpath_link_learned_endpoint_changed_seconds{client=\"192.168.1.2\",endpoint=\"100.64.1.3:5555\",path=\"0\",role=\"exit\"} %d.5\n", learnedAt+60)
		fmt.Fprintf(w, "# TYPE mpath_link_endpoint_moves_total counter\nmpath_link_endpoint_moves_total{role=\"exit\"} 1\n")
		fmt.Fprintf(w, "# TYPE mpath_link_learned_client_paths gauge\nmpath_link_learned_client_paths{client=\"192.168.1.2\",role=\"exit\"} 2\n")
	})
}

// learnedAt is when the fake exit's path 2 endpoint was learned (unix seconds).
const learnedAt = 1796400000

func TestStatusOnce(t *testing.T) {
	var scrapes atomic.Int64
	srv := httptest.NewServer(fakeExitMetrics(&scrapes))
	defer srv.Close()
	var out bytes.Buffer
	if err := statusMain([]string{"--metrics", strings.TrimPrefix(srv.URL, "http://")}, &out, false); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	t.Log("\n" + s)
	for _, want := range []string{"mpath exit at ", "1 x1>10.77.101.2", "2 x2>10.77.102.2", "DOWN", "1.0M/0",
		"500.0k/0", "23.4 ms", "131.7 ms", "41", "flows 5", "relayed 12", "refused bad_mac=2",
		"learned return endpoints (1 moves)", time.Unix(learnedAt, 0).Format("15:04:05"), time.Unix(learnedAt+60, 0).Format("15:04:05")} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if scrapes.Load() != 1 {
		t.Errorf("%d scrapes, want 1", scrapes.Load())
	}
	// One line per client path, in path order, each with its own endpoint.
	i1, i2 := strings.Index(s, "192.168.1.2  1 of 2  100.64.1.3:5555"), strings.Index(s, "192.168.1.2  2 of 2  100.64.2.2:5555")
	if i1 < 0 || i2 < i1 {
		t.Errorf("learned endpoints not one line per path in path order")
	}
}

func TestStatusWatch(t *testing.T) {
	var scrapes atomic.Int64
	srv := httptest.NewServer(fakeExitMetrics(&scrapes))
	defer srv.Close()
	var out bytes.Buffer
	err := statusMain([]string{"--metrics", srv.URL + "/metrics", "--watch", "20ms", "--count", "3"}, &out, false)
	if err != nil {
		t.Fatal(err)
	}
	s := out.String()
	if n := strings.Count(s, "mpath exit at "); n != 3 || scrapes.Load() != 3 {
		t.Fatalf("%d tables, %d scrapes, want 3:\n%s", n, scrapes.Load(), s)
	}
	// The first sample has no rates; later ones do: 1 MB per interval on path 1's tx.
	tables := strings.Split(s, "mpath exit at ")[1:]
	for i, tb := range tables {
		f := rowFields(t, tb, "1 x1>")
		total, rate := f[4], f[5]
		if total != fmt.Sprintf("%d.0M/0", i+1) {
			t.Errorf("sample %d: total %q", i+1, total)
		}
		if i == 0 && rate != "-" {
			t.Errorf("first sample shows rate %q", rate)
		}
		var tx, rx float64
		if _, err := fmt.Sscanf(rate, "%f/%f", &tx, &rx); i > 0 && (err != nil || tx <= 0 || rx != 0) {
			t.Errorf("sample %d: rate %q, want tx > 0 and rx 0", i+1, rate)
		}
	}
}

// rowFields returns the whitespace-separated fields of the line in tb starting with
// prefix.
func rowFields(t *testing.T, tb, prefix string) []string {
	t.Helper()
	for _, l := range strings.Split(tb, "\n") {
		if strings.HasPrefix(l, prefix) {
			return strings.Fields(l)
		}
	}
	t.Fatalf("no row %q in\n%s", prefix, tb)
	return nil
}

func TestStatusErrors(t *testing.T) {
	var out bytes.Buffer
	if err := statusMain(nil, &out, false); err == nil || !strings.Contains(err.Error(), "--metrics") {
		t.Errorf("no --metrics: err = %v", err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "mpath_relay_forwarded_packets_total 5")
	}))
	defer srv.Close()
	if err := statusMain([]string{"--metrics", srv.URL}, &out, false); err == nil || !strings.Contains(err.Error(), "client or exit") {
		t.Errorf("relay endpoint: err = %v", err)
	}
}

// TestStatusDefaultAddress: with no --metrics, status reads the client's default
// endpoint (or the exit's when no client answers).
func TestStatusDefaultAddress(t *testing.T) {
	for _, addr := range []string{defaultClientMetrics, defaultExitMetrics} {
		t.Run(addr, func(t *testing.T) {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				t.Skipf("skipping: %s is in use: %v", addr, err)
			}
			var scrapes atomic.Int64
			srv := &http.Server{Handler: fakeExitMetrics(&scrapes)}
			go srv.Serve(ln)
			defer srv.Close()
			var out bytes.Buffer
			if err := statusMain(nil, &out, false); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), "mpath exit at "+addr) {
				t.Errorf("output:\n%s", out.String())
			}
		})
	}
}
