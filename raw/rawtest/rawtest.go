// Package rawtest holds helpers for tests that need root and network namespaces: a skip
// helper, throw-away namespaces and veth pairs that are always removed, and a way to run
// code (socket creation) inside a namespace. It owns nothing outside tests.
package rawtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// SkipUnlessRoot skips t unless the test runs as root (network namespaces, raw sockets,
// AF_PACKET and nftables all need it).
func SkipUnlessRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root and network namespaces: run as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command (iproute2)")
	}
}

var seq atomic.Uint32

// UniqueName returns prefix followed by the process id and a counter, unique on the
// machine while this process lives.
func UniqueName(prefix string) string {
	return fmt.Sprintf("%s%d-%d", prefix, os.Getpid(), seq.Add(1))
}

// Netns is a named network namespace made for one test and deleted when it ends.
type Netns struct {
	Name string
	fd   int
}

// NewNetns creates a namespace named UniqueName(prefix) with loopback up. It is deleted
// (with everything in it) by t.Cleanup, also when the test fails.
func NewNetns(t testing.TB, prefix string) *Netns {
	t.Helper()
	name := UniqueName(prefix)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	n := &Netns{Name: name, fd: -1}
	t.Cleanup(func() {
		if n.fd >= 0 {
			unix.Close(n.fd)
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	n.fd = fd
	n.MustRun(t, "ip", "link", "set", "lo", "up")
	return n
}

// Run runs a command inside the namespace (ip netns exec) and returns its combined output.
func (n *Netns) Run(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...).CombinedOutput()
	return string(out), err
}

// MustRun is Run that fails the test on error.
func (n *Netns) MustRun(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.Run(args...)
	if err != nil {
		t.Fatalf("in %s: %s: %v: %s", n.Name, strings.Join(args, " "), err, out)
	}
	return out
}

// Command returns an exec.Cmd that runs inside the namespace.
func (n *Netns) Command(args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...)
}

// Do runs fn on an OS thread switched into the namespace. Sockets fn creates stay in the
// namespace after Do returns. The thread is switched back afterwards; if that fails it is
// never reused (the goroutine exits with it locked, so the runtime discards it).
func (n *Netns) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open own netns: %w", err)
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(n.fd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", n.Name, err)
			return
		}
		ferr := fn()
		if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

// Veth connects two namespaces with a veth pair: aName in a with address aAddr (CIDR,
// e.g. "10.1.1.1/24"), bName in b with bAddr. Both ends are brought up with offloads
// left as the kernel sets them. The pair goes away with the namespaces.
func Veth(t testing.TB, a *Netns, aName, aAddr string, b *Netns, bName, bAddr string) {
	t.Helper()
	// Both ends are created directly in their namespaces, so the names only need to be
	// unique there.
	if out, err := exec.Command("ip", "link", "add", "name", aName, "netns", a.Name, "type", "veth", "peer", "name", bName, "netns", b.Name).CombinedOutput(); err != nil {
		t.Fatalf("veth %s/%s: %v: %s", aName, bName, err, out)
	}
	a.MustRun(t, "ip", "addr", "add", aAddr, "dev", aName)
	a.MustRun(t, "ip", "link", "set", aName, "up")
	b.MustRun(t, "ip", "addr", "add", bAddr, "dev", bName)
	b.MustRun(t, "ip", "link", "set", bName, "up")
}

// CountLines counts lines of out that contain substr.
func CountLines(out []byte, substr string) int {
	n := 0
	for _, l := range bytes.Split(out, []byte("\n")) {
		if bytes.Contains(l, []byte(substr)) {
			n++
		}
	}
	return n
}
