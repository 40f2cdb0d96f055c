// Package benchtest holds test helpers for package bench and for `mpath bench`: a server
// network namespace joined to the test's namespace by a veth pair (optionally
// rate-limited with tbf, so that every client measures the same bottleneck instead of
// its own CPU), an Apache instance serving files from a temporary directory inside it,
// SOCKS5/HTTP proxy fronts in a process of their own (frontd), and runners for the
// reference tools ab and curl with parsers for their output.
//
// Everything that needs root skips the test with a clear message when not root or when
// a tool is missing, uses names and addresses reserved for the test alone (through
// labtest.Reserve: 10.B.250.0/24 of a base octet B nobody else holds) and is removed by
// t.Cleanup, also when the test fails. Traffic goes only to addresses inside the
// namespace made here. Helpers are safe to call from one test goroutine at a time.
package benchtest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"mpath/lab/labtest"
)

// RequireApache skips the test unless it runs as root with ip, tc, apache2, ab and curl
// installed.
func RequireApache(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root (its own network namespace, veth and tbf, and Apache as www-data); run the tests as root")
	}
	labtest.RequireRoot(t) // and ip, tc, ...
	for _, tool := range []string{"apache2", "ab", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s not installed (apt-get install apache2 apache2-utils curl)", tool)
		}
	}
}

// Net is a server namespace joined to the test's namespace by a veth pair:
// ClientAddr (10.B.250.1) on Dev here, ServerAddr (10.B.250.2) on eth0 in NS.
type Net struct {
	NS         string
	Dev        string // the veth end in the test's namespace
	ClientAddr string
	ServerAddr string
	Rate       string // tbf rate on the server's egress (the download direction); "" none
}

// NewNet makes a Net whose download direction is limited to rate (a tc rate such as
// "200mbit"; "" for no limit) and removes it when the test ends.
func NewNet(t testing.TB, rate string) *Net {
	t.Helper()
	RequireApache(t)
	base, prefix := labtest.Reserve(t)
	n := &Net{
		NS:         prefix + "-web",
		Dev:        prefix + "web",
		ClientAddr: fmt.Sprintf("10.%d.250.1", base),
		ServerAddr: fmt.Sprintf("10.%d.250.2", base),
		Rate:       rate,
	}
	// A namespace or veth left by a killed earlier run with the same reserved base.
	_ = exec.Command("ip", "netns", "del", n.NS).Run()
	_ = exec.Command("ip", "link", "del", n.Dev).Run()
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", n.NS).CombinedOutput(); err != nil {
			t.Errorf("benchtest: ip netns del %s: %v: %s", n.NS, err, out)
		}
		// Deleting the namespace destroys the pair; this only catches a half-built one.
		_ = exec.Command("ip", "link", "del", n.Dev).Run()
	})
	steps := [][]string{
		{"ip", "netns", "add", n.NS},
		{"ip", "link", "add", n.Dev, "type", "veth", "peer", "name", "eth0", "netns", n.NS},
		{"ip", "addr", "add", n.ClientAddr + "/24", "dev", n.Dev},
		{"ip", "link", "set", n.Dev, "up"},
		{"ip", "-n", n.NS, "addr", "add", n.ServerAddr + "/24", "dev", "eth0"},
		{"ip", "-n", n.NS, "link", "set", "eth0", "up"},
		{"ip", "-n", n.NS, "link", "set", "lo", "up"},
	}
	if rate != "" {
		// burst 64 KiB: at most 1.5% of a 4 MiB transfer passes unpaced; latency bounds the
		// queue (TCP sees backpressure, not loss, at these sizes).
		steps = append(steps, []string{"ip", "netns", "exec", n.NS, "tc", "qdisc", "add", "dev", "eth0",
			"root", "tbf", "rate", rate, "burst", "64kb", "latency", "50ms"})
	}
	for _, s := range steps {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("benchtest: %s: %v: %s", strings.Join(s, " "), err, out)
		}
	}
	return n
}

// Apache is an Apache httpd serving Dir on Addr ("host:port") inside a Net's namespace.
type Apache struct {
	Addr string
	Dir  string // document root
	conf string
}

// URL returns the http URL of path on the server.
func (a *Apache) URL(path string) string {
	return "http://" + a.Addr + "/" + strings.TrimPrefix(path, "/")
}

// StartApache starts Apache (in the foreground, as a child of the test) in n's namespace
// on port 80 of n.ServerAddr serving files (name -> content), waits until it accepts
// connections and stops it when the test ends. Keep-alive is on with no limit on requests per connection.
func StartApache(t testing.TB, n *Net, files map[string][]byte) *Apache {
	t.Helper()
	dir := t.TempDir()
	docs := filepath.Join(dir, "htdocs")
	if err := os.Mkdir(docs, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		path := filepath.Join(docs, name)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		// Apache sends a weak ETag (W/"...", 2 bytes longer) for a file modified in the
		// same second as the request: backdate files so every response head is the same.
		old := time.Now().Add(-time.Hour)
		if err := os.Chtimes(path, old, old); err != nil {
			t.Fatal(err)
		}
	}
	// The workers run as www-data: they need to traverse to the document root.
	for d := docs; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	a := &Apache{Addr: net.JoinHostPort(n.ServerAddr, "80"), Dir: docs, conf: filepath.Join(dir, "httpd.conf")}
	conf := fmt.Sprintf(`ServerRoot /etc/apache2
LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
LoadModule dir_module /usr/lib/apache2/modules/mod_dir.so
LoadModule mime_module /usr/lib/apache2/modules/mod_mime.so
User www-data
Group www-data
ServerName %[1]s
Listen %[2]s
PidFile %[3]s/httpd.pid
ErrorLog %[3]s/error.log
LogLevel warn
TypesConfig /etc/mime.types
DocumentRoot %[4]s
KeepAlive On
MaxKeepAliveRequests 0
StartServers 1
ServerLimit 2
ThreadsPerChild 16
MaxRequestWorkers 32
MinSpareThreads 8
MaxSpareThreads 32
<Directory %[4]s>
  Require all granted
</Directory>
`, n.ServerAddr, a.Addr, dir, docs)
	if err := os.WriteFile(a.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// In the foreground, as the test's own child: the test waits for it and reaps it.
	cmd := exec.Command("ip", "netns", "exec", n.NS, "apache2", "-f", a.conf, "-DFOREGROUND")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("benchtest: start apache2: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	errorLog := func() string {
		b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		return fmt.Sprintf("output: %s\nerror.log:\n%s", out.Bytes(), b)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM) // graceful stop; the workers follow the parent
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("benchtest: apache did not stop within 10s of SIGTERM; killed")
		}
		if t.Failed() {
			t.Logf("apache %s", errorLog())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", a.Addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case werr := <-exited:
			exited <- werr // for the cleanup
			t.Fatalf("benchtest: apache2 exited at start: %v\n%s", werr, errorLog())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("benchtest: apache on %s not accepting after 15s: %v\n%s", a.Addr, err, errorLog())
		}
		time.Sleep(20 * time.Millisecond) // polling an observable condition with a deadline
	}
	return a
}

// AB runs ab with args (the URL last), fails the test if it fails, and returns its
// report parsed by ParseAB.
func AB(t testing.TB, args ...string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ab", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("benchtest: ab %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return ParseAB(string(out))
}

var abLine = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9 -]*):\s+(\S+)`)

// ParseAB reads the "Name:   value" lines of an ab report (and of bench's WriteText,
// laid out the same) into name -> first word of the value; the second "Time per
// request" line is stored as "Time per request (across)" and the percentile rows as
// "P50" .. "P100".
func ParseAB(report string) map[string]string {
	m := make(map[string]string)
	pct := regexp.MustCompile(`^\s+(\d+)%\s+(\d+)`)
	for _, line := range strings.Split(report, "\n") {
		if g := pct.FindStringSubmatch(line); g != nil {
			m["P"+g[1]] = g[2]
			continue
		}
		g := abLine.FindStringSubmatch(line)
		if g == nil {
			continue
		}
		key := g[1]
		if _, dup := m[key]; dup && key == "Time per request" {
			key = "Time per request (across)"
		}
		if _, dup := m[key]; !dup {
			m[key] = g[2]
		}
	}
	return m
}

// Float returns m[key] as a number, failing the test when it is missing or not one.
func Float(t testing.TB, m map[string]string, key string) float64 {
	t.Helper()
	v, ok := m[key]
	if !ok {
		t.Fatalf("benchtest: report has no %q line (have %v)", key, m)
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		t.Fatalf("benchtest: %q is %q: %v", key, v, err)
	}
	return f
}

// CurlResult is one curl download.
type CurlResult struct {
	Speed  float64 // %{speed_download}: body bytes per second
	Size   int64   // %{size_download}
	SHA256 string  // of the body curl wrote
}

// Curl downloads url with curl (extra args before it, e.g. "--proxy", "socks5h://...")
// into a temporary file and returns curl's own speed and size figures and the sha256
// of what it wrote. It fails the test if curl fails or the status is not 200.
func Curl(t testing.TB, url string, args ...string) CurlResult {
	t.Helper()
	f := filepath.Join(t.TempDir(), "curl.out")
	argv := append([]string{"-sS", "--fail", "-o", f, "-w", "%{speed_download} %{size_download} %{http_code}"}, args...)
	argv = append(argv, url)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "curl", argv...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("benchtest: curl %s: %v: %s %s", strings.Join(argv, " "), err, out, stderr.Bytes())
	}
	var r CurlResult
	var code int
	if _, err := fmt.Sscanf(string(out), "%g %d %d", &r.Speed, &r.Size, &code); err != nil || code != 200 {
		t.Fatalf("benchtest: curl output %q: %v (status %d)", out, err, code)
	}
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != r.Size {
		t.Fatalf("benchtest: curl reports %d bytes, wrote %d", r.Size, len(b))
	}
	sum := sha256.Sum256(b)
	r.SHA256 = hex.EncodeToString(sum[:])
	return r
}

// ErrNotClose is returned by Within for values further apart than the tolerance.
var ErrNotClose = errors.New("not within tolerance")

// Within returns nil when got/want is within 1±tol, else an error saying by how much.
func Within(got, want, tol float64) error {
	if want <= 0 || got <= 0 {
		return fmt.Errorf("%w: got %g, want %g (both must be positive)", ErrNotClose, got, want)
	}
	r := got / want
	if r < 1-tol || r > 1+tol {
		return fmt.Errorf("%w: got %.4g, want %.4g: ratio %.3f outside 1±%.2f", ErrNotClose, got, want, r, tol)
	}
	return nil
}

var (
	frontdOnce sync.Once
	frontdPath string
	frontdErr  error
)

// Front is a SOCKS5 or HTTP proxy front (package socks, dialing directly) running in a
// process of its own (benchtest/frontd, built without the race detector), so that it
// serves every tool under test alike.
type Front struct {
	Addr   string // 127.0.0.1:port
	cmd    *exec.Cmd
	stdin  io.Closer
	out    *bufio.Reader
	done   bool
	result string
}

// StartFront builds frontd (once per test binary) and starts a front of kind "socks" or
// "http"; the front is stopped when the test ends, if Stop was not called.
func StartFront(t testing.TB, kind string) *Front {
	t.Helper()
	frontdOnce.Do(func() {
		dir, err := os.MkdirTemp("", "mpath-frontd-")
		if err != nil {
			frontdErr = err
			return
		}
		frontdPath = filepath.Join(dir, "frontd")
		out, err := exec.Command("go", "build", "-o", frontdPath, "mpath/bench/benchtest/frontd").CombinedOutput()
		if err != nil {
			frontdErr = fmt.Errorf("go build frontd: %w\n%s", err, out)
		}
	})
	if frontdErr != nil {
		t.Fatalf("benchtest: %v", frontdErr)
	}
	cmd := exec.Command(frontdPath, "-kind", kind)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("benchtest: start frontd: %v", err)
	}
	f := &Front{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	t.Cleanup(func() { f.Stop(t) })
	line, err := f.out.ReadString('\n')
	if err != nil {
		t.Fatalf("benchtest: frontd -kind %s: %v", kind, err)
	}
	f.Addr = strings.TrimSpace(line)
	return f
}

// Stop ends the front and returns how many connections it relayed and how many bytes it
// sent toward the clients.
func (f *Front) Stop(t testing.TB) (relayed, down int64) {
	t.Helper()
	if !f.done {
		f.done = true
		f.stdin.Close()
		line, _ := f.out.ReadString('\n')
		f.result = strings.TrimSpace(line)
		if err := f.cmd.Wait(); err != nil {
			t.Errorf("benchtest: frontd: %v", err)
		}
	}
	if _, err := fmt.Sscanf(f.result, "relayed=%d down=%d", &relayed, &down); err != nil {
		t.Errorf("benchtest: frontd's counters %q: %v", f.result, err)
	}
	return relayed, down
}
