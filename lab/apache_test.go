package lab_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"mpath/lab"
	"mpath/lab/labtest"
)

func requireApache(t *testing.T) {
	t.Helper()
	labtest.RequireRoot(t)
	if _, err := lab.ApacheBinary(); err != nil {
		t.Skipf("skipping: %v (make deps installs it)", err)
	}
}

// pidsInNS lists the live (non-zombie) processes in network namespace ns.
func pidsInNS(t *testing.T, ns string) []int {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join("/run/netns", ns), &st); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("net:[%d]", st.Ino)
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if link, err := os.Readlink(filepath.Join("/proc", e.Name(), "ns", "net")); err != nil || link != want {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if i := strings.LastIndexByte(string(stat), ')'); err == nil && i >= 0 && i+2 < len(stat) && stat[i+2] != 'Z' {
			pids = append(pids, pid)
		}
	}
	return pids
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestWriteRandomFile(t *testing.T) {
	dir := t.TempDir()
	sum, err := lab.WriteRandomFile(dir, "f", 100_003)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "f"))
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 100_003 || sha256.Sum256(b) != sum {
		t.Fatalf("file has %d bytes, sha256 %x; WriteRandomFile said 100003 and %x", len(b), sha256.Sum256(b), sum)
	}
	sum2, err := lab.WriteRandomFile(dir, "g", 100_003)
	if err != nil {
		t.Fatal(err)
	}
	if sum2 == sum {
		t.Fatal("two random files have the same content")
	}
	st, _ := os.Stat(filepath.Join(dir, "f"))
	if st.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v, want 0644 (Apache's workers read it)", st.Mode().Perm())
	}
	if _, err := lab.WriteRandomFile(dir, "../x", 1); err == nil {
		t.Fatal("a name with a slash was accepted")
	}
}

// httpGet downloads url from inside ns with net/http and returns the body's sha256 and
// length.
func httpGet(t *testing.T, ns, url string) ([32]byte, int64) {
	t.Helper()
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = lab.Do(ns, func() error {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		t.Fatalf("GET %s in %s: %v", url, ns, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s in %s: %s", url, ns, resp.Status)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		t.Fatalf("GET %s in %s: body: %v", url, ns, err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, n
}

func TestApacheServesFileInLab(t *testing.T) {
	requireApache(t)
	l := labtest.New(t, lab.Config{Paths: []lab.PathSpec{{Rate: "50mbit"}}})
	docroot, err := lab.MakeDocroot()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(docroot) })
	const size = 3<<20 + 17
	want, err := lab.WriteRandomFile(docroot, "file.bin", size)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := lab.StartApache(ctx, l.ExitNS(), l.ExitAddr(), 80, docroot)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Stop() })
	if a.URL("file.bin") != "http://"+l.ExitAddr().String()+"/file.bin" {
		t.Fatalf("URL = %q", a.URL("file.bin"))
	}
	if pids := pidsInNS(t, l.ExitNS()); !contains(pids, a.PID()) {
		t.Fatalf("apache pid %d not among the exit namespace's processes %v", a.PID(), pids)
	}

	// From the exit namespace itself, and from the client namespace through relay 1
	// (kernel TCP end to end, the relay forwarding).
	for _, ns := range []string{l.ExitNS(), l.ClientNS()} {
		got, n := httpGet(t, ns, a.URL("/file.bin"))
		if n != size || got != want {
			t.Fatalf("from %s: %d bytes sha256 %s, want %d bytes %s", ns, n, hex.EncodeToString(got[:]), size, hex.EncodeToString(want[:]))
		}
	}
	dir, pid := a.Dir(), a.PID()
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := a.Stop(); err != nil { // twice is fine
		t.Fatal(err)
	}
	if left := pidsInNS(t, l.ExitNS()); len(left) > 0 {
		t.Fatalf("processes left in the exit namespace after Stop (apache was %d): %v", pid, left)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temp dir %s not removed: %v", dir, err)
	}
	err = lab.Do(l.ExitNS(), func() error {
		c, err := net.DialTimeout("tcp", a.Addr().String(), time.Second)
		if err == nil {
			c.Close()
			return fmt.Errorf("%s still accepting after Stop", a.Addr())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestApacheStartFailsCleanly(t *testing.T) {
	requireApache(t)
	l := labtest.New(t, lab.Config{})
	docroot, err := lab.MakeDocroot()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(docroot) })
	// Someone else holds the port: Apache cannot bind and StartApache must say so,
	// with the log, and leave nothing running.
	addr := netip.AddrPortFrom(l.ExitAddr(), 8080)
	var ln net.Listener
	if err := lab.Do(l.ExitNS(), func() (err error) {
		ln, err = net.Listen("tcp4", addr.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := lab.StartApache(ctx, l.ExitNS(), l.ExitAddr(), 8080, docroot)
	if err == nil {
		a.Stop()
		t.Fatal("StartApache succeeded on a port already in use")
	}
	if !strings.Contains(err.Error(), "in use") {
		t.Errorf("error does not carry Apache's reason: %v", err)
	}
	if left := pidsInNS(t, l.ExitNS()); len(left) > 0 {
		t.Fatalf("processes left in the exit namespace after a failed start: %v", left)
	}

	// A docroot www-data cannot read is refused before anything starts.
	private := t.TempDir() // mode 0700
	if _, err := lab.StartApache(ctx, l.ExitNS(), l.ExitAddr(), 8081, private); err == nil || !strings.Contains(err.Error(), "docroot") {
		t.Fatalf("private docroot: err = %v, want a docroot error", err)
	}
}
