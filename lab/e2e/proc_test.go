package e2e

// Processes the tests start inside lab namespaces (mpath client and exit, Apache,
// tcpdump), each logging to a file under the test's temp dir and always stopped by
// t.Cleanup, also when the test fails.

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"mpath/lab"
)

// pollEvery is the interval of every poll loop here: polling an observable condition
// with a deadline, never a sleep standing in for synchronisation.
const pollEvery = 20 * time.Millisecond

// proc is a process started in a namespace for one test. `ip netns exec` execs the
// program itself, so cmd's PID is the program's and signals reach it directly.
type proc struct {
	name    string
	ns      string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has been waited for
	waitErr error         // set before done is closed
}

// startProc starts argv in ns with stdout and stderr going to a log file. The process
// is stopped (SIGTERM, then SIGKILL after 10 s) when the test ends, and its log tail is
// printed when the test failed.
func startProc(t *testing.T, ns, name string, argv ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	cmd := lab.Command(ns, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	err = cmd.Start()
	f.Close() // the child holds its own descriptor
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, ns: ns, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() { p.waitErr = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(syscall.SIGTERM, 10*time.Second)
		if t.Failed() {
			t.Logf("%s (%s) log %s:\n%s", name, strings.Join(argv, " "), logPath, lastLines(p.log(), 40))
		}
	})
	return p
}

// log returns everything the process wrote so far.
func (p *proc) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitLog polls the log until it contains substr, failing the test if the process
// exits first or the deadline passes.
func (p *proc) waitLog(t *testing.T, substr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if strings.Contains(p.log(), substr) {
			return
		}
		if p.exited() {
			t.Fatalf("%s exited (%v) before logging %q; log:\n%s", p.name, p.waitErr, substr, lastLines(p.log(), 40))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not log %q within %v; log:\n%s", p.name, substr, timeout, lastLines(p.log(), 40))
		}
		time.Sleep(pollEvery) // poll interval, not synchronisation
	}
}

// stop sends sig and waits up to timeout for the process to end, then kills it. It
// returns whether the process ended by itself after sig, and its wait error.
func (p *proc) stop(sig syscall.Signal, timeout time.Duration) (bool, error) {
	if p.exited() {
		return true, p.waitErr
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return true, p.waitErr
	case <-time.After(timeout):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return false, p.waitErr
}

// exitCode is the process's exit status (-1 when killed by a signal or still running).
func (p *proc) exitCode() int {
	var ee *exec.ExitError
	if p.exited() && p.waitErr == nil {
		return 0
	}
	if errors.As(p.waitErr, &ee) {
		return ee.ExitCode()
	}
	return -1
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// nftTables lists the nftables tables of namespace ns ("ip mpath", ...).
func nftTables(t *testing.T, ns string) []string {
	t.Helper()
	out, err := lab.Command(ns, "nft", "list", "tables").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list tables in %s: %v: %s", ns, err, out)
	}
	var tables []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "table" {
			tables = append(tables, f[1]+" "+f[2])
		}
	}
	return tables
}

func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("skipping: %s not installed (apt-get install %s)", name, pkg)
	}
	return p
}

func fmtRate(bytes int64, d time.Duration) string {
	if d <= 0 {
		return "?"
	}
	return fmt.Sprintf("%.2f Mbit/s", float64(bytes)*8/d.Seconds()/1e6)
}
