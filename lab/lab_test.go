package lab_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"mpath/lab"
	"mpath/lab/labtest"
)

// listen opens a TCP listener in ns on addr.
func listen(t *testing.T, ns string, addr netip.AddrPort) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := lab.Do(ns, func() (err error) {
		ln, err = net.Listen("tcp4", addr.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// transfer sends data from local (in the client namespace) to the listener and returns
// the sha256 the far side computed and how long it took until the receiver had it all.
func transfer(t *testing.T, l *lab.Lab, ln net.Listener, local netip.Addr, data []byte) ([32]byte, time.Duration) {
	t.Helper()
	type result struct {
		sum [32]byte
		n   int64
		at  time.Time
		err error
	}
	res := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			res <- result{err: err}
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(60 * time.Second))
		h := sha256.New()
		n, err := io.Copy(h, c)
		var r result
		copy(r.sum[:], h.Sum(nil))
		r.n, r.at, r.err = n, time.Now(), err
		res <- r
	}()
	var conn net.Conn
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(local, 0)), Timeout: 5 * time.Second}
	if err := lab.Do(l.ClientNS(), func() (err error) {
		conn, err = d.Dial("tcp4", ln.Addr().String())
		return err
	}); err != nil {
		t.Fatalf("dial from %v: %v", local, err)
	}
	start := time.Now()
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := conn.Write(data); err != nil {
		t.Fatalf("write from %v: %v", local, err)
	}
	conn.(*net.TCPConn).CloseWrite()
	r := <-res
	conn.Close()
	if r.err != nil || r.n != int64(len(data)) {
		t.Fatalf("receive from %v: %d of %d bytes, %v", local, r.n, len(data), r.err)
	}
	return r.sum, r.at.Sub(start)
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestLabUp(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{Paths: []lab.PathSpec{{}, {Delay: 5 * time.Millisecond}, {}}})
	info, err := lab.Status(l.Config().Prefix)
	if err != nil {
		t.Fatal(err)
	}
	if !info.Recorded || len(info.Namespaces) != 5 || len(info.Relays) != 3 {
		t.Fatalf("status: %+v", info)
	}
	for _, r := range info.Relays {
		if !r.Alive {
			t.Fatalf("relay %d (pid %d) not alive", r.Path, r.PID)
		}
	}
	addrs := map[string]string{}
	for _, ns := range info.Namespaces {
		addrs[ns.Name] = strings.Join(ns.Addrs, " ")
	}
	B := l.Config().Base
	for ns, want := range map[string][]string{
		l.ClientNS(): {fmt.Sprintf("lo 10.%d.255.1/32", B), fmt.Sprintf("c1 10.%d.1.1/24", B), fmt.Sprintf("c3 10.%d.3.1/24", B)},
		l.RelayNS(2): {fmt.Sprintf("rc 10.%d.2.2/24", B), fmt.Sprintf("re 10.%d.102.2/24", B)},
		l.ExitNS():   {fmt.Sprintf("lo 10.%d.255.2/32", B), fmt.Sprintf("x3 10.%d.103.1/24", B)},
		l.RelayNS(3): {fmt.Sprintf("rc 10.%d.3.2/24", B)},
	} {
		for _, w := range want {
			if !strings.Contains(addrs[ns], w) {
				t.Errorf("%s: addresses %q lack %q", ns, addrs[ns], w)
			}
		}
	}
	// Policy routing in the client: from 10.B.2.1 via relay 2.
	out, err := exec.Command("ip", "-n", l.ClientNS(), "route", "get", l.ExitAddr().String(), "from", fmt.Sprintf("10.%d.2.1", B)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("via 10.%d.2.2 dev c2", B)) {
		t.Fatalf("route get from path 2: %s %v", out, err)
	}
	out, err = exec.Command("ip", "-n", l.ExitNS(), "route", "get", fmt.Sprintf("10.%d.3.1", B)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf("via 10.%d.103.2 dev x3", B)) {
		t.Fatalf("exit route to path 3: %s %v", out, err)
	}

	// Kernel TCP from each path address reaches the exit through that path's relay
	// (the relays forward plain traffic: ip_forward is 0 everywhere).
	ln := listen(t, l.ExitNS(), netip.AddrPortFrom(l.ExitAddr(), 5001))
	data := randomBytes(300_000, 1)
	want := sha256.Sum256(data)
	for i := 1; i <= l.N(); i++ {
		before := labtest.RelayMetrics(t, l, i)[`mpath_relay_forwarded_packets_total{mode="plain"}`]
		_, local, _ := l.ClientPath(i)
		got, _ := transfer(t, l, ln, local, data)
		if got != want {
			t.Fatalf("path %d: sha256 mismatch", i)
		}
		after := labtest.RelayMetrics(t, l, i)[`mpath_relay_forwarded_packets_total{mode="plain"}`]
		// 300 kB is at least 200 full segments one way plus the ACKs back.
		if after-before < 200 {
			t.Fatalf("path %d: relay %d forwarded only %v packets of the transfer", i, i, after-before)
		}
	}
	// The host address goes through path 1 by default.
	got, _ := transfer(t, l, ln, l.ClientAddr(), data)
	if got != want {
		t.Fatal("host address: sha256 mismatch")
	}
	// Relays started by the lab ignore their own traffic but see nothing dropped.
	m := labtest.RelayMetrics(t, l, 1)
	for k, v := range m {
		if strings.HasPrefix(k, "mpath_relay_dropped_packets_total") && v != 0 {
			t.Errorf("relay 1 dropped: %s = %v", k, v)
			b, _ := os.ReadFile(l.RelayLog(1))
			t.Logf("%s", b)
		}
	}
}

func TestLabRateLimit(t *testing.T) {
	labtest.RequireRoot(t)
	const rate = 8e6 // bits/s
	l := labtest.New(t, lab.Config{Paths: []lab.PathSpec{{Rate: "8mbit"}}})
	ln := listen(t, l.ExitNS(), netip.AddrPortFrom(l.ExitAddr(), 5002))
	data := randomBytes(2_000_000, 2)
	_, local, _ := l.ClientPath(1)
	sum, took := transfer(t, l, ln, local, data)
	if sum != sha256.Sum256(data) {
		t.Fatal("sha256 mismatch")
	}
	goodput := float64(len(data)*8) / took.Seconds()
	ratio := goodput / rate
	t.Logf("2 MB over an 8mbit path: %v, goodput %.2f Mbit/s, ratio %.2f", took, goodput/1e6, ratio)
	// Headers cost ~4%; slow start and the tbf burst move it a little either way.
	if ratio < 0.75 || ratio > 1.05 {
		t.Fatalf("goodput/rate = %.2f, want 0.75..1.05", ratio)
	}
}

// leftovers lists what of a lab still exists: namespaces, the state file, processes
// whose command line names the lab's allowlist.
func leftovers(prefix string, base int) []string {
	var out []string
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix+"-") {
			out = append(out, "netns "+e.Name())
		}
	}
	if _, err := os.Stat(filepath.Join(lab.StateDir, "lab-"+prefix+".json")); err == nil {
		out = append(out, "state file")
	}
	needle := []byte(fmt.Sprintf("10.%d.0.0/16", base))
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		stat, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "stat"))
		if bytes.Contains(cmd, needle) && !bytes.Contains(stat, []byte(") Z")) {
			out = append(out, "process "+p.Name())
		}
	}
	return out
}

func TestLabDown(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{Paths: []lab.PathSpec{{}, {}}})
	prefix, base := l.Config().Prefix, l.Config().Base
	if left := leftovers(prefix, base); len(left) != 4+1+2 {
		t.Fatalf("before down, expected 4 namespaces, a state file and 2 relays: %v", left)
	}
	if err := l.Down(); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(prefix, base); len(left) != 0 {
		t.Fatalf("after down: %v", left)
	}
	if err := lab.Down(prefix); err != nil {
		t.Fatalf("second down: %v", err)
	}
	info, err := lab.Status(prefix)
	if err != nil || info.Up() {
		t.Fatalf("status after down: %+v %v", info, err)
	}
}

// TestLabDownAfterCrash builds labs with `mpath lab up` in another process, kills it
// (or its relays) with SIGKILL, and checks that Down from this process removes all.
func TestLabDownAfterCrash(t *testing.T) {
	labtest.RequireRoot(t)
	bin := labtest.Mpath(t)
	base, prefix := labtest.Reserve(t)
	t.Cleanup(func() { _ = lab.Down(prefix) })
	up := func() *exec.Cmd {
		return exec.Command(bin, "lab", "up", "--paths", "2", "--prefix", prefix, "--base", strconv.Itoa(base),
			"--delay", "1ms", "--logdir", t.TempDir())
	}

	// 1. The creating process completes, then its relay is killed -9: down still works.
	if out, err := up().CombinedOutput(); err != nil {
		t.Fatalf("mpath lab up: %v\n%s", err, out)
	}
	info, err := lab.Status(prefix)
	if err != nil || len(info.Relays) != 2 || !info.Relays[0].Alive {
		t.Fatalf("status: %+v %v", info, err)
	}
	if err := syscall.Kill(info.Relays[0].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := lab.Down(prefix); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(prefix, base); len(left) != 0 {
		t.Fatalf("after down: %v", left)
	}

	// 2. The creating process is killed -9 half way (once its state file exists).
	cmd := up()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(lab.StateDir, "lab-"+prefix+".json")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("state file never appeared")
		}
		time.Sleep(time.Millisecond) // polling an observable condition
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if err := lab.Down(prefix); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(prefix, base); len(left) != 0 {
		t.Fatalf("after down following a crash: %v", left)
	}
	if err := lab.Down(prefix); err != nil {
		t.Fatalf("second down: %v", err)
	}
}

// TestLabUpReplacesStale checks that Up on a prefix whose lab exists tears it down first.
func TestLabUpReplacesStale(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{Paths: []lab.PathSpec{{}}})
	cfg := l.Config()
	old := l.RelayPID(1)
	cfg.Paths = []lab.PathSpec{{}, {}}
	l2, err := lab.Up(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if l2.RelayPID(1) == old {
		t.Fatal("relay 1 was not restarted")
	}
	info, err := lab.Status(cfg.Prefix)
	if err != nil || len(info.Namespaces) != 4 || len(info.Relays) != 2 {
		t.Fatalf("status after re-up: %+v %v", info, err)
	}
	if err := l2.Down(); err != nil {
		t.Fatal(err)
	}
}
