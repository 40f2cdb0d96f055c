package e2e

// mpath in a lab it did not build: lab/byhand.sh makes the namespaces with iproute2 and
// tc only (kernel-forwarding relay hosts, offloads as the kernel sets them, addresses
// and names of its own), and the test runs the mpath binary there with nothing but
// command-line flags, as an operator would.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"mpath/lab/labtest"
	"mpath/socks/sockstest"
)

const (
	hbServer      = "172.31.1.2" // the jump host's address on path 1
	hbRelayMetric = "127.0.0.1:9100"
)

// byhandScript returns the absolute path of lab/byhand.sh.
func byhandScript(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no caller information")
	}
	p := filepath.Join(filepath.Dir(file), "..", "byhand.sh")
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// handLab is a lab made by lab/byhand.sh.
type handLab struct {
	script string
	prefix string
	rates  []float64 // bit/s per path
}

func (h *handLab) cli() string        { return h.prefix + "-cli" }
func (h *handLab) srv() string        { return h.prefix + "-srv" }
func (h *handLab) relay(i int) string { return fmt.Sprintf("%s-rly%d", h.prefix, i) }
func (h *handLab) n() int             { return len(h.rates) }

// sum is the sum of the path rates in bit/s.
func (h *handLab) sum() (s float64) {
	for _, r := range h.rates {
		s += r
	}
	return s
}

// mustRun runs a command in this namespace and fails the test if it fails.
func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// setRate changes path i's rate (both directions) to mbits Mbit/s with tc, by hand.
func (h *handLab) setRate(t *testing.T, i int, mbits float64) {
	t.Helper()
	rate := fmt.Sprintf("%gmbit", mbits)
	mustRun(t, "tc", "-n", h.cli(), "qdisc", "change", "dev", fmt.Sprintf("wan%d", i), "root", "tbf",
		"rate", rate, "burst", "32kb", "latency", "100ms")
	mustRun(t, "tc", "-n", h.relay(i), "qdisc", "change", "dev", "lan", "root", "tbf",
		"rate", rate, "burst", "32kb", "latency", "100ms")
	h.rates[i-1] = mbits * 1e6
}

// startRelays starts `mpath relay` in every relay namespace in mode.
func (h *handLab) startRelays(t *testing.T, mode string) []*proc {
	t.Helper()
	var ps []*proc
	for i := 1; i <= h.n(); i++ {
		p := startProc(t, h.relay(i), fmt.Sprintf("relay%d-%s", i, mode), mpathBin(t), "relay",
			"--allow", "172.30.0.0/15", "--mode", mode, "--metrics", hbRelayMetric)
		p.waitLog(t, "relay ready", readyTimeout)
		ps = append(ps, p)
	}
	return ps
}

// startNode starts `mpath exit` (ns srv) or `mpath client` (ns cli) with one path per
// relay and waits for its ready line.
func (h *handLab) startNode(t *testing.T, role string, extra ...string) *node {
	t.Helper()
	ns, dev, relayNet, metrics := h.cli(), "wan", "172.30", clientMetrics
	if role == "exit" {
		ns, dev, relayNet, metrics = h.srv(), "eth", "172.31", "127.0.0.1:9091"
	}
	args := []string{mpathBin(t), role, "--metrics", metrics, drainFlag}
	for i := 1; i <= h.n(); i++ {
		args = append(args, "--path", fmt.Sprintf("dev=%s%d,relay=%s.%d.1", dev, i, relayNet, i))
	}
	p := startProc(t, ns, role, append(args, extra...)...)
	p.waitLog(t, role+" ready", readyTimeout)
	return &node{proc: p, metrics: metrics}
}

// stopAll stops processes with SIGTERM and checks that no mpath nftables table is left
// in their namespaces.
func stopAll(t *testing.T, ps ...*proc) {
	t.Helper()
	for _, p := range ps {
		if ended, err := p.stop(syscall.SIGTERM, 15*time.Second); !ended {
			t.Errorf("%s did not stop on SIGTERM: %v", p.name, err)
		}
		if tables := nftTables(t, p.ns); hasMpathTable(tables) {
			t.Errorf("%s: nftables table left in %s after SIGTERM: %v", p.name, p.ns, tables)
		}
	}
}

// TestHandBuiltLab: five 10 Mbit/s paths built by lab/byhand.sh. Tunnel mode through
// relays in reencap mode (equal paths, then path 5 ten times slower), the HTTP front,
// then direct mode through relays in forward mode (download from Apache, upload to a
// kernel sink). Every transfer is checked by sha256; the rates are logged as FIGURE
// lines (the benchmarks, not this test, hold the targets).
func TestHandBuiltLab(t *testing.T) {
	labtest.RequireRoot(t)
	needTool(t, "curl", "curl")
	_, p := labtest.Reserve(t)
	h := &handLab{script: byhandScript(t), prefix: "hb" + strings.TrimPrefix(p, "lt"),
		rates: []float64{10e6, 10e6, 10e6, 10e6, 10e6}}
	t.Cleanup(func() { mustRun(t, "bash", h.script, "down", h.prefix) })
	mustRun(t, "bash", h.script, "up", h.prefix, "10mbit", "10mbit", "10mbit", "10mbit", "10mbit")
	size := int64(24 << 20)
	ap := startApache(t, h.srv(), hbServer+":80", []string{"big.bin", "small.bin"}, []int64{size, 1 << 20})
	psk := writeSecret(t, t.TempDir(), "psk")

	download := func(t *testing.T, what string, env []string, args ...string) {
		t.Helper()
		r := runHashed(h.cli(), env, nil, 2*time.Minute, "curl", append([]string{"-sS", "--fail", "-o", "-"}, args...)...)
		name := filepath.Base(args[len(args)-1])
		want := ap.files[name]
		if r.err != nil || r.n != want.size || r.sum != want.sum {
			t.Fatalf("%s: curl %v: %d bytes sha256 %s, want %d %s\n%s", what, r.err, r.n, r.sum, want.size, want.sum, r.stderr)
		}
		rate := float64(r.n) * 8 / r.dur.Seconds()
		t.Logf("FIGURE byhand %s: %d B in %v: %s = %.0f%% of the sum of path rates (%s)",
			what, r.n, r.dur.Round(time.Millisecond), fmtRate(r.n, r.dur), 100*rate/h.sum(), h.mbits())
	}

	t.Run("tunnel-reencap", func(t *testing.T) {
		relays := h.startRelays(t, "reencap")
		exit := h.startNode(t, "exit", "--listen", hbServer+":7000", "--psk-file", psk)
		client := h.startNode(t, "client", "--socks", socksAddr, "--http", httpProxyAddr,
			"--exit", hbServer+":7000", "--psk-file", psk)
		download(t, "socks5 5x10mbit", nil, "--socks5-hostname", socksAddr, "http://"+hbServer+"/big.bin")
		download(t, "http_proxy", []string{"http_proxy=http://" + httpProxyAddr}, "http://"+hbServer+"/small.bin")
		h.setRate(t, 5, 1)
		download(t, "socks5 4x10mbit+1mbit", nil, "--socks5-hostname", socksAddr, "http://"+hbServer+"/big.bin")
		h.setRate(t, 5, 10)
		m := labtest.ParseMetrics(labtest.Get(t, h.relay(1), hbRelayMetric, "/metrics"))
		if fwd := metric(m, "mpath_relay_forwarded_packets_total", `mode="reencap"`); fwd < 1000 {
			t.Errorf("relay 1 forwarded %v packets in reencap mode, want thousands", fwd)
		}
		stopAll(t, append([]*proc{client.proc, exit.proc}, relays...)...)
	})

	t.Run("direct-forward", func(t *testing.T) {
		relays := h.startRelays(t, "forward")
		n := int64(8 << 20)
		sinkServer(t, h.srv(), hbServer+":5001", nil)
		client := h.startNode(t, "client", "--direct", "--socks", socksAddr)
		// The download's return path is the server's kernel TCP through relay 1 alone.
		download(t, "direct download (1 return path)", nil, "--socks5-hostname", socksAddr, "http://"+hbServer+"/small.bin")
		got, dur := uploadSOCKS(t, h.cli(), "", "", hbServer+":5001", n, 31)
		if want := fmt.Sprintf("%d %s", n, sockstest.PayloadSHA256(n, 31)); got != want {
			t.Fatalf("sink saw %q, want %q", got, want)
		}
		rate := float64(n) * 8 / dur.Seconds()
		t.Logf("FIGURE byhand direct upload: %d B in %v: %s = %.0f%% of the sum of path rates",
			n, dur.Round(time.Millisecond), fmtRate(n, dur), 100*rate/h.sum())
		stopAll(t, append([]*proc{client.proc}, relays...)...)
	})
}

// mbits lists the path rates like "10+10+10+10+1 Mbit/s".
func (h *handLab) mbits() string {
	s := make([]string, len(h.rates))
	for i, r := range h.rates {
		s[i] = fmt.Sprintf("%g", r/1e6)
	}
	return strings.Join(s, "+") + " Mbit/s"
}
