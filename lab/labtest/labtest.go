// Package labtest helps root tests build and remove labs: it skips cleanly when not
// root, builds the mpath binary once per test binary, and hands out a unique prefix
// and base octet per test (unique across test binaries running in parallel, through
// flock'ed files under /run/lock), with the lab always torn down by t.Cleanup.
package labtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"mpath/lab"
)

// RequireRoot skips the test unless it runs as root (network namespaces, veth, tc,
// nftables and raw sockets all need it).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root (network namespaces, veth, tc, nftables, raw sockets); run the tests as root")
	}
	for _, tool := range []string{"ip", "tc", "ethtool", "sysctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s not installed (apt-get install iproute2 ethtool procps)", tool)
		}
	}
}

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Mpath builds ./cmd/mpath once per test binary into a temporary directory and returns
// the binary's path. The binary is left in a fresh directory under os.TempDir (a test
// binary has no hook to remove it at exit).
func Mpath(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		gomod, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			buildErr = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		root := filepath.Dir(strings.TrimSpace(string(gomod)))
		dir, err := os.MkdirTemp("", "mpath-labtest-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "mpath")
		cmd := exec.Command("go", "build", "-o", buildPath, "./cmd/mpath")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/mpath: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("labtest: %v", buildErr)
	}
	return buildPath
}

// Base octets handed to tests: 10.B.0.0/16 with B in this range (77, the default of
// `mpath lab up`, is outside it).
const (
	firstBase = 150
	lastBase  = 249
)

// Reserve returns a base octet and prefix ("lt<B>") nobody else holds, across
// processes, until the test ends.
func Reserve(t testing.TB) (base int, prefix string) {
	t.Helper()
	if err := os.MkdirAll("/run/lock", 0o755); err != nil {
		t.Fatalf("labtest: %v", err)
	}
	for b := firstBase; b <= lastBase; b++ {
		path := fmt.Sprintf("/run/lock/mpath-lab-%d.lock", b)
		fd, err := unix.Open(path, unix.O_CREAT|unix.O_RDWR|unix.O_CLOEXEC, 0o644)
		if err != nil {
			t.Fatalf("labtest: %s: %v", path, err)
		}
		if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
			unix.Close(fd)
			continue
		}
		t.Cleanup(func() { unix.Close(fd) }) // closing drops the lock
		return b, fmt.Sprintf("lt%d", b)
	}
	t.Fatalf("labtest: all base octets %d..%d are in use", firstBase, lastBase)
	return 0, ""
}

// New builds a lab for the test with a unique prefix and base (cfg.Prefix and cfg.Base
// are overwritten), using the binary from Mpath unless cfg.MpathBin is set, and logs
// under the test's temp dir unless cfg.LogDir is set. The lab is torn down when the
// test ends, also on failure; the relay logs are printed when the test failed.
func New(t testing.TB, cfg lab.Config) *lab.Lab {
	t.Helper()
	RequireRoot(t)
	cfg.Base, cfg.Prefix = Reserve(t)
	if cfg.MpathBin == "" {
		cfg.MpathBin = Mpath(t)
	}
	if cfg.LogDir == "" {
		cfg.LogDir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	prefix := cfg.Prefix
	// Registered before Up so that a half-built lab is removed too.
	t.Cleanup(func() {
		if err := lab.Down(prefix); err != nil {
			t.Errorf("labtest: lab down %s: %v", prefix, err)
		}
	})
	l, err := lab.Up(ctx, cfg)
	if err != nil {
		t.Fatalf("labtest: lab up: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for i := 1; i <= l.N(); i++ {
				b, _ := os.ReadFile(l.RelayLog(i))
				t.Logf("relay %d log (%s):\n%s", i, l.RelayLog(i), lastLines(string(b), 40))
			}
		}
	})
	return l
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Get fetches http://addr/path from inside namespace ns (the connection is opened in
// ns) and returns the body. It fails the test on error.
func Get(t testing.TB, ns, addr, path string) string {
	t.Helper()
	var conn net.Conn
	err := lab.Do(ns, func() error {
		var err error
		conn, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	})
	if err != nil {
		t.Fatalf("labtest: get http://%s%s in %s: %v", addr, path, ns, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, addr)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("labtest: get http://%s%s in %s: %v", addr, path, ns, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("labtest: get http://%s%s in %s: %s %v", addr, path, ns, resp.Status, err)
	}
	return string(body)
}

// RelayMetrics scrapes relay i's Prometheus text and returns every sample by its full
// name with labels as printed, e.g. `mpath_relay_dropped_packets_total{reason="fragment"}`.
func RelayMetrics(t testing.TB, l *lab.Lab, i int) map[string]float64 {
	t.Helper()
	return ParseMetrics(Get(t, l.RelayNS(i), l.RelayMetricsAddr(i), "/metrics"))
}

// ParseMetrics reads Prometheus text format samples (comments skipped).
func ParseMetrics(text string) map[string]float64 {
	m := map[string]float64{}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m
}
