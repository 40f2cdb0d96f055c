package e2e

// mpath client and mpath exit started in a lab, and their metrics.

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"mpath/lab"
	"mpath/lab/labtest"
)

const (
	exitPort       = 7000
	exitMetricPort = 9091
	clientMetrics  = "127.0.0.1:9090"
	socksAddr      = "127.0.0.1:1080"
	httpProxyAddr  = "127.0.0.1:8080"
	readyTimeout   = 15 * time.Second
	drainFlag      = "--drain=2s" // SIGTERM waits at most this long for open flows
)

// mpathBin is the mpath binary under test: $MPATH_E2E_BIN when set (a binary built
// beforehand, e.g. from a clean checkout), else labtest.Mpath's build of ./cmd/mpath.
func mpathBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("MPATH_E2E_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("MPATH_E2E_BIN: %v", err)
		}
		return p
	}
	return labtest.Mpath(t)
}

// newLab builds a lab for the test (labtest.New) running mpathBin's relays.
func newLab(t *testing.T, cfg lab.Config) *lab.Lab {
	t.Helper()
	labtest.RequireRoot(t)
	cfg.MpathBin = mpathBin(t)
	return labtest.New(t, cfg)
}

// node is a running mpath client or exit.
type node struct {
	*proc
	metrics string // metrics address inside ns
}

// scrape returns the node's metrics by full sample name (labels as printed).
func (n *node) scrape(t *testing.T) map[string]float64 {
	t.Helper()
	return labtest.ParseMetrics(labtest.Get(t, n.ns, n.metrics, "/metrics"))
}

// metric sums the samples of metric name whose label text contains every one of labels
// (e.g. `reason="bad_mac"`).
func metric(m map[string]float64, name string, labels ...string) float64 {
	var sum float64
	for k, v := range m {
		rest, ok := strings.CutPrefix(k, name)
		if !ok || (rest != "" && rest[0] != '{') {
			continue
		}
		all := true
		for _, l := range labels {
			all = all && strings.Contains(rest, l)
		}
		if all {
			sum += v
		}
	}
	return sum
}

// pathMetric returns metric name for path index i (0-based) of a node.
func pathMetric(m map[string]float64, name string, i int) float64 {
	return metric(m, name, `index="`+strconv.Itoa(i)+`"`)
}

// writeSecret writes a fresh random secret (hex, 64 characters) to a file in dir.
func writeSecret(t *testing.T, dir, name string) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(hex.EncodeToString(b)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// startExit starts `mpath exit` in the lab's exit namespace on ExitAddr:7000 with one
// path per relay, and waits until it is ready.
func startExit(t *testing.T, l *lab.Lab, psk string, extra ...string) *node {
	t.Helper()
	listen := fmt.Sprintf("%s:%d", l.ExitAddr(), exitPort)
	metrics := fmt.Sprintf("%s:%d", l.ExitAddr(), exitMetricPort)
	args := []string{mpathBin(t), "exit", "--listen", listen, "--psk-file", psk, "--metrics", metrics, "--metrics-public", drainFlag}
	for i := 1; i <= l.N(); i++ {
		dev, _, relay := l.ExitPath(i)
		args = append(args, "--path", fmt.Sprintf("dev=%s,relay=%s", dev, relay))
	}
	p := startProc(t, l.ExitNS(), "exit", append(args, extra...)...)
	p.waitLog(t, "exit ready", readyTimeout)
	return &node{proc: p, metrics: metrics}
}

// clientOpts configures startClient.
type clientOpts struct {
	direct   bool   // --direct (no exit)
	psk      string // tunnel mode key file
	http     bool   // also serve the HTTP front on httpProxyAddr
	user     string // --socks-user
	passFile string // --socks-password-file
	name     string // process name in logs (default "client")
	extra    []string
}

// startClient starts `mpath client` in the lab's client namespace (SOCKS front on
// socksAddr, inner address ClientAddr, one path per relay) and waits until it is ready.
func startClient(t *testing.T, l *lab.Lab, o clientOpts) *node {
	t.Helper()
	args := []string{mpathBin(t), "client", "--socks", socksAddr, "--addr", l.ClientAddr().String(),
		"--metrics", clientMetrics, drainFlag}
	if o.direct {
		args = append(args, "--direct")
	} else {
		args = append(args, "--exit", fmt.Sprintf("%s:%d", l.ExitAddr(), exitPort), "--psk-file", o.psk)
	}
	if o.http {
		args = append(args, "--http", httpProxyAddr)
	}
	if o.user != "" {
		args = append(args, "--socks-user", o.user, "--socks-password-file", o.passFile)
	}
	for i := 1; i <= l.N(); i++ {
		dev, _, relay := l.ClientPath(i)
		args = append(args, "--path", fmt.Sprintf("dev=%s,relay=%s", dev, relay))
	}
	name := o.name
	if name == "" {
		name = "client"
	}
	p := startProc(t, l.ClientNS(), name, append(args, o.extra...)...)
	p.waitLog(t, "client ready", readyTimeout)
	return &node{proc: p, metrics: clientMetrics}
}

// sumRates returns the sum of the lab's path rates in bit/s (0 when any is unlimited).
func sumRates(t *testing.T, l *lab.Lab) float64 {
	t.Helper()
	var sum float64
	for _, p := range l.Config().Paths {
		if p.Rate == "" {
			return 0
		}
		v, ok := strings.CutSuffix(p.Rate, "mbit")
		f, err := strconv.ParseFloat(v, 64)
		if !ok || err != nil {
			t.Fatalf("rate %q: the tests write rates as <N>mbit", p.Rate)
		}
		sum += f * 1e6
	}
	return sum
}

// pathRate returns path i's rate (1-based) in bit/s.
func pathRate(t *testing.T, l *lab.Lab, i int) float64 {
	t.Helper()
	r := l.Config().Paths[i-1].Rate
	v, ok := strings.CutSuffix(r, "mbit")
	f, err := strconv.ParseFloat(v, 64)
	if !ok || err != nil {
		t.Fatalf("rate %q: the tests write rates as <N>mbit", r)
	}
	return f * 1e6
}

// logPathCounters logs, for each of a node's n paths, the segments sent, retransmitted,
// declared lost and found spurious between two scrapes.
func logPathCounters(t *testing.T, who string, n int, before, after map[string]float64) {
	t.Helper()
	var b strings.Builder
	for i := range n {
		d := func(name string) float64 { return pathMetric(after, name, i) - pathMetric(before, name, i) }
		fmt.Fprintf(&b, " path%d: tx %.0f retx %.0f lost %.0f spurious %.0f;", i+1,
			d("mpath_path_tx_packets_total"), d("mpath_path_retransmits_total"), d("mpath_path_lost_total"), d("mpath_path_spurious_total"))
	}
	t.Logf("%s segments:%s", who, b.String())
}
