package lab

// Running mpath's exit and client inside a lab (for `mpath demo`, `mpath bench --lab` and
// anything else that wants the whole system up on one machine).
//
//	StartNodes ──► <dir>/psk (fresh random key)
//	           ──► P-x: mpath exit --listen 10.B.255.2:7000 --metrics 10.B.255.2:9091 --path dev=x<i>,relay=10.B.(100+i).2 ...
//	           ──► P-c: mpath client --exit 10.B.255.2:7000 --socks 127.0.0.1:1080 --http 127.0.0.1:8080
//	                                 --metrics 127.0.0.1:9090 --path dev=c<i>,relay=10.B.i.2 ...
//	           ──► ready when each node's metrics endpoint serves mpath_path_* series
//	Nodes.Stop ──► SIGTERM (the node drains and removes its nftables table), SIGKILL after a grace
//
// Every process runs in its own session, so a terminal's Ctrl-C reaches only the caller,
// which stops the nodes in order. Down(prefix) also kills whatever is left in the lab's
// namespaces.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Where StartNodes puts the nodes' listeners. The exit's are on the exit host address
// (10.B.255.2); the client's are on loopback inside the client namespace.
const (
	ExitPort          = 7000             // the exit's engine listener
	ExitMetricsPort   = 9091             // the exit's Prometheus endpoint
	ClientSOCKS       = "127.0.0.1:1080" // the client's SOCKS5 front
	ClientHTTP        = "127.0.0.1:8080" // the client's HTTP proxy front
	ClientMetricsAddr = "127.0.0.1:9090" // the client's Prometheus endpoint
)

// NodesConfig describes the mpath exit and client StartNodes runs. Dir is required; the
// zero value of every other field picks its default.
type NodesConfig struct {
	Bin string // the mpath binary (default: the lab's MpathBin)
	Dir string // existing directory for the key file and the logs (exit.log, client.log)
	// Paths lists the paths (from 1) the nodes spray over, in this order (default: all
	// the lab's paths).
	Paths []int
	// Weights, when not nil, gives each entry of Paths its weight=N (1..1000), which the
	// weighted scheduler uses.
	Weights    []int
	Scheduler  string        // auto (default), weighted or rr
	RecvWindow int           // --recv-window of both nodes in bytes (0: their default)
	Direct     bool          // client in direct mode (flows go straight to their targets); no exit
	Drain      time.Duration // --drain of both nodes (default 2 s)
	ClientArgs []string      // extra client flags
	ExitArgs   []string      // extra exit flags
	// ReadyTimeout bounds the wait for each node's metrics endpoint (default 20 s).
	ReadyTimeout time.Duration
}

// Nodes are an exit and a client running in a lab. Its methods are safe for concurrent
// use; Stop may be called more than once.
type Nodes struct {
	Exit   *Proc // nil in direct mode
	Client *Proc
	PSK    string // the key file both nodes read
	lab    *Lab
}

// ExitEngineAddr is the exit's engine listener, 10.B.255.2:7000.
func (l *Lab) ExitEngineAddr() netip.AddrPort {
	return netip.AddrPortFrom(l.ExitAddr(), ExitPort)
}

// ExitMetricsAddr is the exit's metrics endpoint, reachable from the exit namespace.
func (l *Lab) ExitMetricsAddr() string {
	return netip.AddrPortFrom(l.ExitAddr(), ExitMetricsPort).String()
}

// PathFlags returns the --path flags of one side ("client" or "exit") for the given paths
// (from 1) and weights (nil: none).
func (l *Lab) PathFlags(side string, paths, weights []int) []string {
	var args []string
	for k, i := range paths {
		dev, _, relayAddr := l.ClientPath(i)
		if side == "exit" {
			dev, _, relayAddr = l.ExitPath(i)
		}
		p := fmt.Sprintf("dev=%s,relay=%s", dev, relayAddr)
		if weights != nil {
			p += fmt.Sprintf(",weight=%d", weights[k])
		}
		args = append(args, "--path", p)
	}
	return args
}

// StartNodes writes a fresh key to cfg.Dir and starts `mpath exit` in the exit namespace
// (unless cfg.Direct) and `mpath client` in the client namespace, then waits until both
// serve their metrics. On failure it stops whatever it started and the error names the
// logs.
func (l *Lab) StartNodes(ctx context.Context, cfg NodesConfig) (*Nodes, error) {
	if cfg.Dir == "" {
		return nil, fmt.Errorf("start nodes: %w: no directory for the key and logs", errConfig)
	}
	if cfg.Bin == "" {
		cfg.Bin = l.cfg.MpathBin
	}
	if cfg.Scheduler == "" {
		cfg.Scheduler = "auto"
	}
	if cfg.Drain <= 0 {
		cfg.Drain = 2 * time.Second
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 20 * time.Second
	}
	if len(cfg.Paths) == 0 {
		for i := 1; i <= l.N(); i++ {
			cfg.Paths = append(cfg.Paths, i)
		}
	}
	for _, i := range cfg.Paths {
		if i < 1 || i > l.N() {
			return nil, fmt.Errorf("start nodes: %w: path %d of a %d-path lab", errConfig, i, l.N())
		}
	}
	if cfg.Weights != nil && len(cfg.Weights) != len(cfg.Paths) {
		return nil, fmt.Errorf("start nodes: %w: %d weights for %d paths", errConfig, len(cfg.Weights), len(cfg.Paths))
	}
	n := &Nodes{lab: l, PSK: filepath.Join(cfg.Dir, "psk")}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("start nodes: %w", err)
	}
	if err := os.WriteFile(n.PSK, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("start nodes: %w", err)
	}
	common := []string{"--scheduler", cfg.Scheduler, "--drain", cfg.Drain.String()}
	if cfg.RecvWindow > 0 {
		common = append(common, "--recv-window", strconv.Itoa(cfg.RecvWindow))
	}
	exitAddr := l.ExitEngineAddr().String()
	if !cfg.Direct {
		args := append([]string{"exit", "--listen", exitAddr, "--psk-file", n.PSK, "--metrics", l.ExitMetricsAddr(), "--metrics-public"}, common...)
		args = append(append(args, l.PathFlags("exit", cfg.Paths, cfg.Weights)...), cfg.ExitArgs...)
		p, err := StartProc(l.ExitNS(), "exit", filepath.Join(cfg.Dir, "exit.log"), cfg.Bin, args...)
		if err != nil {
			return nil, fmt.Errorf("start nodes: %w", err)
		}
		n.Exit = p
	}
	args := []string{"client", "--addr", l.ClientAddr().String(),
		"--socks", ClientSOCKS, "--http", ClientHTTP, "--metrics", ClientMetricsAddr}
	if cfg.Direct {
		args = append(args, "--direct")
	} else {
		args = append(args, "--exit", exitAddr, "--psk-file", n.PSK)
	}
	args = append(append(append(args, common...), l.PathFlags("client", cfg.Paths, cfg.Weights)...), cfg.ClientArgs...)
	p, err := StartProc(l.ClientNS(), "client", filepath.Join(cfg.Dir, "client.log"), cfg.Bin, args...)
	if err != nil {
		n.Stop(5 * time.Second)
		return nil, fmt.Errorf("start nodes: %w", err)
	}
	n.Client = p
	// Ready when the metrics endpoint answers with path series: both nodes serve metrics
	// only after their link, engine and (client) fronts are up.
	type check struct {
		p    *Proc
		ns   string
		addr string
	}
	checks := []check{{n.Client, l.ClientNS(), ClientMetricsAddr}}
	if n.Exit != nil {
		checks = append([]check{{n.Exit, l.ExitNS(), l.ExitMetricsAddr()}}, checks...)
	}
	for _, c := range checks {
		if err := waitMetrics(ctx, c.p, c.ns, c.addr, cfg.ReadyTimeout); err != nil {
			n.Stop(5 * time.Second)
			return nil, fmt.Errorf("start nodes: %w", err)
		}
	}
	return n, nil
}

// waitMetrics polls http://addr/metrics from inside ns until it serves mpath_path_*
// series, failing early when p exits.
func waitMetrics(ctx context.Context, p *Proc, ns, addr string, limit time.Duration) error {
	c := HTTPClient(ns)
	deadline := time.Now().Add(limit)
	for {
		err := fetchPathMetrics(ctx, c, addr)
		if err == nil {
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("mpath %s exited during startup (log %s)", p.Name, p.Log)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mpath %s not ready after %v: %v (log %s)", p.Name, limit, err, p.Log)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.done:
		case <-time.After(50 * time.Millisecond): // poll interval, not synchronisation
		}
	}
}

func fetchPathMetrics(ctx context.Context, c *http.Client, addr string) error {
	fctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(fctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "mpath_path_up") {
		return fmt.Errorf("metrics %s: %s without mpath_path_up", addr, resp.Status)
	}
	return nil
}

// Stop stops the client, then the exit (SIGTERM, SIGKILL after grace each).
func (n *Nodes) Stop(grace time.Duration) {
	if n == nil {
		return
	}
	for _, p := range []*Proc{n.Client, n.Exit} {
		if p != nil {
			p.Stop(grace)
		}
	}
}

// Proc is a process started in a namespace with StartProc. Its methods are safe for
// concurrent use.
type Proc struct {
	Name string // what it is, for messages ("exit", "client")
	Log  string // the file its stdout and stderr go to
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has been waited for
}

// StartProc runs bin with args in namespace ns (ip netns exec execs it, so the pid is
// bin's), in its own session, with stdout and stderr appended to logPath (truncated
// first).
func StartProc(ns, name, logPath, bin string, args ...string) (*Proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer f.Close()
	cmd := Command(ns, bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	// Own session: it may outlive its starter (demo --keep), and a terminal's Ctrl-C
	// reaches the starter, which stops it in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

// PID is the process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM (an mpath node drains, removes its nftables table and exits), then
// SIGKILL after grace, and waits for the process.
func (p *Proc) Stop(grace time.Duration) {
	if p.Exited() {
		return
	}
	_ = unix.Kill(p.PID(), unix.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	_ = unix.Kill(p.PID(), unix.SIGKILL)
	<-p.done
}

// HTTPClient is an HTTP client (no keep-alive, 5 s timeout) whose connections are opened
// in namespace ns.
func HTTPClient(ns string) *http.Client {
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := Do(ns, func() (err error) {
				var dl net.Dialer
				c, err = dl.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

// NamespacePIDs lists the processes whose network namespace is ns (like `ip netns pids`),
// the caller excluded.
func NamespacePIDs(ns string) []int { return nsPIDs(ns) }

// errNoProc is returned by ProcCPU for a process that is gone.
var errNoProc = errors.New("no such process")

// ProcCPU returns the user and system CPU time a process has used so far, from
// /proc/PID/stat (fields 14 and 15, in clock ticks of 1/100 s on Linux).
func ProcCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, fmt.Errorf("proc cpu %d: %w", pid, errNoProc)
	}
	return parseStatCPU(string(b))
}

// parseStatCPU reads utime+stime from a /proc/PID/stat line.
func parseStatCPU(s string) (time.Duration, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("proc stat: no command field in %q", s)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("proc stat: %d fields after the command", len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("proc stat: bad utime/stime %q %q", f[11], f[12])
	}
	return time.Duration(ut+st) * (time.Second / clockTicks), nil
}

// clockTicks is USER_HZ, which Linux fixes at 100 for /proc on every architecture.
const clockTicks = 100
