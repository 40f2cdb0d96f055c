package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"mpath/lab/table"
	"mpath/relay"
	"mpath/socks"
	"mpath/tcp"
)

type nopLink struct{}

func (nopLink) Send(int, []tcp.Segment) error { return nil }

type idleSource struct{ done chan struct{} }

func (s idleSource) Read(func([]byte)) error { <-s.done; return net.ErrClosed }
func (s idleSource) Close() error            { close(s.done); return nil }

type nopSink struct{}

func (nopSink) Send(p [][]byte, _ []netip.Addr) (int, error) { return len(p), nil }

// roleRegistries builds each role's registry the way the roles do, over an engine with
// a link that sends nothing and fronts that serve nothing.
func roleRegistries(t *testing.T) map[string]*prometheus.Registry {
	t.Helper()
	stack, err := tcp.NewStack(tcp.Config{Addr: netip.MustParseAddr("10.0.0.1"),
		Paths:     []tcp.PathConfig{{Name: "c1>10.0.1.2", Weight: 1}, {Name: "c2>10.0.2.2", Weight: 1}},
		PortFirst: 61000, PortLast: 61100}, nopLink{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stack.Close() })
	dialer := &socks.DirectDialer{}
	s5, err := socks.NewSOCKSServer(socks.SOCKSConfig{Dialer: dialer})
	if err != nil {
		t.Fatal(err)
	}
	hs, err := socks.NewHTTPServer(socks.HTTPConfig{Dialer: dialer})
	if err != nil {
		t.Fatal(err)
	}
	x, err := socks.NewExit(socks.ExitConfig{Key: bytes.Repeat([]byte("k"), 32)})
	if err != nil {
		t.Fatal(err)
	}
	regs := map[string]*prometheus.Registry{}
	c := newNodeCollector("client", stack, nil)
	c.socks, c.http = s5, hs
	setup := setupHistogram("mpath_flow_setup_seconds", "flow setup")
	setup.Observe(0.02)
	if regs["client"], err = newRegistry(c, setup); err != nil {
		t.Fatal(err)
	}
	e := newNodeCollector("exit", stack, nil)
	e.exit = x
	if regs["exit"], err = newRegistry(e, setupHistogram("mpath_target_dial_seconds", "dial")); err != nil {
		t.Fatal(err)
	}
	allow, _ := relay.ParseAllowlist("10.0.0.0/8")
	src := idleSource{make(chan struct{})}
	r, err := relay.New(relay.Config{Allow: allow, Log: zap.NewNop()}, src, nopSink{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	if regs["relay"], err = relayRegistry(r, func() uint64 { return 3 }); err != nil {
		t.Fatal(err)
	}
	return regs
}

func scrape(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestMetricsPromtool runs `promtool check metrics` (Debian package prometheus) on
// every role's /metrics: names, units, types and help pass Prometheus's linter.
func TestMetricsPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("skipping: promtool not installed (apt-get install prometheus; make deps)")
	}
	for role, reg := range roleRegistries(t) {
		text := scrape(t, reg)
		for _, want := range []string{"go_goroutines", "process_cpu_seconds_total", "go_build_info", "mpath_build_info"} {
			if !strings.Contains(text, want) {
				t.Errorf("%s: no %s", role, want)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(text)
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			t.Errorf("%s: promtool check metrics: %v\n%s", role, err, out)
		}
	}
}

// TestMetricsContract: what the client and exit serve parses into lab/table's snapshot
// (the names are the contract with `mpath status`), with one family per unit.
func TestMetricsContract(t *testing.T) {
	regs := roleRegistries(t)
	for _, role := range []string{"client", "exit"} {
		text := scrape(t, regs[role])
		s, err := table.Parse(strings.NewReader(text), time.Now())
		if err != nil {
			t.Fatalf("%s: %v", role, err)
		}
		if s.Role != role || len(s.Paths) != 2 || s.Paths[1].Name != "c2>10.0.2.2" {
			t.Errorf("%s: role %q, paths %+v", role, s.Role, s.Paths)
		}
		for _, gone := range []string{"mpath_front_total", "mpath_exit_total", "mpath_path_share", "mpath_path_delivery_rate_bytes "} {
			if strings.Contains(text, gone) {
				t.Errorf("%s still serves %s", role, gone)
			}
		}
	}
	client := scrape(t, regs["client"])
	for _, want := range []string{`mpath_front_bytes_total{direction="up",front="socks",role="client"} 0`,
		`mpath_front_connections_total{event="accepted",front="http",role="client"} 0`,
		`mpath_flow_setup_seconds_bucket{le="0.025"} 1`, "mpath_path_delivered_ratio",
		`mpath_reorder_hold_seconds_bucket{role="client",le="0.0001"} 0`, `mpath_reorder_hold_seconds_bucket{role="client",le="2"} 0`,
		`mpath_reorder_hold_seconds_count{role="client"} 0`, "mpath_path_delivery_rate_bytes_per_second"} {
		if !strings.Contains(client, want) {
			t.Errorf("client metrics lack %s", want)
		}
	}
	exit := scrape(t, regs["exit"])
	for _, want := range []string{`mpath_exit_bytes_total{direction="to_target",role="exit"} 0`, `mpath_exit_connections_total{event="relayed",role="exit"} 0`} {
		if !strings.Contains(exit, want) {
			t.Errorf("exit metrics lack %s", want)
		}
	}
}

// TestAccessLog: one info line per finished connection, with the bytes each way, however
// often it is closed.
func TestAccessLog(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	a, b := net.Pipe()
	c := newLoggedConn(a, zap.New(core), "example.org:80", time.Now())
	go func() {
		buf := make([]byte, 100)
		n, _ := io.ReadFull(b, buf[:5])
		b.Write(buf[:n*2])
		b.Close()
	}()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(c)
	c.Close()
	c.Close()
	entries := logs.All()
	if len(got) != 10 || len(entries) != 1 {
		t.Fatalf("read %d bytes, %d log lines", len(got), len(entries))
	}
	f := entries[0].ContextMap()
	if entries[0].Message != "connection" || f["target"] != "example.org:80" || f["bytes_up"] != int64(5) || f["bytes_down"] != int64(10) {
		t.Errorf("log line %q %v", entries[0].Message, f)
	}
}

// pathsConn is a net.Conn that reports per-path bytes as the engine's Conn does.
type pathsConn struct {
	net.Conn
	paths []tcp.PathBytes
}

func (c pathsConn) Paths() []tcp.PathBytes { return c.paths }

// TestAccessLogPaths: over an engine connection the access log names each path's share of
// the bytes carried; a path that carried nothing is left out.
func TestAccessLogPaths(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	a, b := net.Pipe()
	defer b.Close()
	pc := pathsConn{a, []tcp.PathBytes{{Name: "wan1", Sent: 500, Received: 120}, {Name: "wan2", Sent: 380, Received: 0}, {Name: "wan3"}}}
	c := newLoggedConn(pc, zap.New(core), "example.org:80", time.Now())
	c.Close()
	entries := logs.All()
	if len(entries) != 1 {
		t.Fatalf("%d log lines", len(entries))
	}
	got, _ := entries[0].ContextMap()["paths"].([]any)
	if len(got) != 2 || got[0] != "wan1:62%" || got[1] != "wan2:38%" {
		t.Errorf("paths %v", entries[0].ContextMap()["paths"])
	}
}
