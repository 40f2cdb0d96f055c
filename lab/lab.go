// Package lab owns mpath's one-machine network-namespace topology: a client namespace,
// N relay namespaces each linked by veth to the client and to an exit namespace, tbf
// rate limits in both directions per path, policy routing so that traffic from the
// client's path-i address leaves through relay i, and one `mpath relay --plain` process
// per relay namespace that forwards (and delays, drops, reorders) everything crossing it.
//
// Addressing for prefix P, base octet B and paths i = 1..N:
//
//	P-c   host address 10.B.255.1/32 on lo; veth c<i> 10.B.i.1/24
//	P-ri  veth rc 10.B.i.2/24 (to P-c); veth re 10.B.(100+i).2/24 (to P-x)
//	P-x   host address 10.B.255.2/32 on lo; veth x<i> 10.B.(100+i).1/24
//
// (The host addresses sit on lo, not on a dummy device: this kernel has no dummy
// module. Routes between the hosts carry "src" so that they are the default source.)
//
//	client -> c<i> [tbf] -> rc | mpath relay (impair) | re -> x<i> -> exit
//	client <- c<i> <- [tbf] rc | mpath relay (impair) | re <- x<i> <- exit
//
// The package builds, inspects and removes that topology by running iproute2, tc,
// ethtool and sysctl, and records what it made in a state file so that another process
// can tear it down, also after a crash. It does not own the relay (package relay) nor
// what runs on the client and exit hosts. Everything here needs root.
package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// PathSpec is one path's link characteristics.
type PathSpec struct {
	Rate    string        // tbf rate like "10mbit" in both directions ("" = unlimited)
	Delay   time.Duration // one-way delay added by the relay (RTT grows by twice this)
	Jitter  time.Duration // ± around Delay, without reordering
	Loss    float64       // fraction 0..1 of packets the relay drops (each direction)
	Reorder float64       // fraction 0..1 of packets the relay reorders
}

// Config describes a lab. The zero value of each field picks its default.
type Config struct {
	Prefix    string     // namespace prefix, default "mpath"
	Base      int        // second octet B of every address, default 77
	Paths     []PathSpec // one per relay; default one unlimited path
	RelayMode string     // "forward" (default) or "reencap"
	MpathBin  string     // the mpath binary the relays run (default os.Executable())
	Seed      int64      // relay i gets --impair seed=Seed+i
	LogDir    string     // relay logs, default /run/mpath/<prefix>
	// RelayArgs are extra flags for every relay (e.g. "--debug").
	RelayArgs []string
}

// RelayMetricsPort is the port every relay serves Prometheus metrics on, on all of its
// addresses (so from the client namespace: http://10.B.i.2:9100/metrics).
const RelayMetricsPort = 9100

// StateDir holds the state files of running labs.
const StateDir = "/run/mpath"

var (
	errConfig   = errors.New("bad lab config")
	prefixRE    = regexp.MustCompile(`^[a-z][a-z0-9]{0,8}$`)
	readyMarker = "relay ready"
)

func (c *Config) fill() error {
	if c.Prefix == "" {
		c.Prefix = "mpath"
	}
	if !prefixRE.MatchString(c.Prefix) {
		return fmt.Errorf("%w: prefix %q: want 1-9 lower-case letters/digits starting with a letter", errConfig, c.Prefix)
	}
	if c.Base == 0 {
		c.Base = 77
	}
	if c.Base < 1 || c.Base > 254 {
		return fmt.Errorf("%w: base %d out of 1..254", errConfig, c.Base)
	}
	if len(c.Paths) == 0 {
		c.Paths = []PathSpec{{}}
	}
	if len(c.Paths) > 99 {
		return fmt.Errorf("%w: %d paths, at most 99", errConfig, len(c.Paths))
	}
	switch c.RelayMode {
	case "":
		c.RelayMode = "forward"
	case "forward", "reencap":
	default:
		return fmt.Errorf("%w: relay mode %q: want forward or reencap", errConfig, c.RelayMode)
	}
	for i, p := range c.Paths {
		if p.Loss < 0 || p.Loss > 1 || p.Reorder < 0 || p.Reorder > 1 || p.Delay < 0 || p.Jitter < 0 {
			return fmt.Errorf("%w: path %d: %+v", errConfig, i+1, p)
		}
	}
	if c.MpathBin == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("lab: find mpath binary: %w", err)
		}
		c.MpathBin = exe
	}
	if c.LogDir == "" {
		c.LogDir = filepath.Join(StateDir, c.Prefix)
	}
	return nil
}

// impairSpec renders a path's relay --impair flag.
func (p PathSpec) impairSpec(seed int64) string {
	parts := []string{}
	if p.Delay > 0 {
		parts = append(parts, "delay="+p.Delay.String())
	}
	if p.Jitter > 0 {
		parts = append(parts, "jitter="+p.Jitter.String())
	}
	if p.Loss > 0 {
		parts = append(parts, "loss="+strconv.FormatFloat(p.Loss*100, 'g', -1, 64)+"%")
	}
	if p.Reorder > 0 {
		parts = append(parts, "reorder="+strconv.FormatFloat(p.Reorder*100, 'g', -1, 64)+"%")
	}
	parts = append(parts, "seed="+strconv.FormatInt(seed, 10))
	return strings.Join(parts, ",")
}

// Lab is a running topology. Its methods only compute names and addresses, so they are
// safe for concurrent use; Down must be called once.
type Lab struct {
	cfg    Config
	relays []*relayProc
}

type relayProc struct {
	pid  int
	cmd  *exec.Cmd     // nil when the lab was loaded from a state file
	done chan struct{} // closed when cmd has been waited for
}

// state is what the state file records.
type state struct {
	Config     Config   `json:"config"`
	RelayPIDs  []int    `json:"relay_pids"`
	Namespaces []string `json:"namespaces"`
	Created    string   `json:"created"`
	CreatorPID int      `json:"creator_pid"`
}

func stateFile(prefix string) string { return filepath.Join(StateDir, "lab-"+prefix+".json") }

// Config returns the lab's configuration with defaults filled in.
func (l *Lab) Config() Config { return l.cfg }

// N is the number of paths.
func (l *Lab) N() int { return len(l.cfg.Paths) }

// ClientNS is the client namespace, P-c.
func (l *Lab) ClientNS() string { return l.cfg.Prefix + "-c" }

// ExitNS is the exit namespace, P-x.
func (l *Lab) ExitNS() string { return l.cfg.Prefix + "-x" }

// RelayNS is relay i's namespace, P-ri (i from 1).
func (l *Lab) RelayNS(i int) string { return l.cfg.Prefix + "-r" + strconv.Itoa(i) }

// Namespaces lists every namespace of the lab: client, relays, exit.
func (l *Lab) Namespaces() []string { return namespaces(l.cfg.Prefix, len(l.cfg.Paths)) }

func namespaces(prefix string, n int) []string {
	ns := []string{prefix + "-c"}
	for i := 1; i <= n; i++ {
		ns = append(ns, prefix+"-r"+strconv.Itoa(i))
	}
	return append(ns, prefix+"-x")
}

func (l *Lab) addr(c, d int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(l.cfg.Base), byte(c), byte(d)})
}

// ClientAddr is the client's host address, 10.B.255.1.
func (l *Lab) ClientAddr() netip.Addr { return l.addr(255, 1) }

// ExitAddr is the exit's host address, 10.B.255.2 (Apache and mpath exit use it).
func (l *Lab) ExitAddr() netip.Addr { return l.addr(255, 2) }

// ClientPath returns path i's device and address in the client namespace and the
// relay's address on that link: c<i>, 10.B.i.1, 10.B.i.2.
func (l *Lab) ClientPath(i int) (dev string, local, relay netip.Addr) {
	return "c" + strconv.Itoa(i), l.addr(i, 1), l.addr(i, 2)
}

// ExitPath returns path i's device and address in the exit namespace and the relay's
// address on that link: x<i>, 10.B.(100+i).1, 10.B.(100+i).2.
func (l *Lab) ExitPath(i int) (dev string, local, relay netip.Addr) {
	return "x" + strconv.Itoa(i), l.addr(100+i, 1), l.addr(100+i, 2)
}

// RelayMetricsAddr is relay i's metrics endpoint as seen from the client namespace (and
// from the relay's own namespace).
func (l *Lab) RelayMetricsAddr(i int) string {
	_, _, r := l.ClientPath(i)
	return netip.AddrPortFrom(r, RelayMetricsPort).String()
}

// RelayLog is the path of relay i's log file.
func (l *Lab) RelayLog(i int) string {
	return filepath.Join(l.cfg.LogDir, "relay"+strconv.Itoa(i)+".log")
}

// RelayPID is relay i's process id.
func (l *Lab) RelayPID(i int) int {
	if i < 1 || i > len(l.relays) {
		return 0
	}
	return l.relays[i-1].pid
}

// Command returns a command that runs name in namespace ns (ip netns exec).
func (l *Lab) Command(ns string, name string, args ...string) *exec.Cmd {
	return Command(ns, name, args...)
}

// Command returns a command that runs name in namespace ns (ip netns exec).
func Command(ns string, name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// Do runs fn on an OS thread that has entered namespace ns, and returns its error.
// Sockets fn opens belong to ns and stay there after Do returns; goroutines fn starts
// run in the caller's namespace. The thread is discarded afterwards.
func Do(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread goes back to its own namespace afterwards and is unlocked. Leaving
		// it in ns and letting the locked goroutine exit is not enough: when the thread
		// is the process's main thread the runtime cannot discard it, and the whole
		// process then shows up as living in ns.
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- fmt.Errorf("lab: enter %s: %w", ns, err)
			return // exits locked: the thread is discarded
		}
		defer orig.Close()
		f, err := os.Open(filepath.Join("/run/netns", ns))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("lab: enter %s: %w", ns, err)
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("lab: enter %s: setns: %w", ns, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err == nil {
			runtime.UnlockOSThread()
		} // else: stay locked, so the runtime discards the thread still in ns
		errc <- ferr
	}()
	return <-errc
}

// run runs a command and returns its combined output in the error when it fails.
func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ipBatch runs iproute2 commands (one per line, without the leading "ip") in ns
// (ns "" = current namespace).
func ipBatch(ctx context.Context, ns string, lines []string) error {
	args := []string{"-batch", "-"}
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip -n %s -batch: %w: %s", ns, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// tbfArgs returns the tc arguments of a tbf qdisc for rate: a burst of 10 ms at the
// rate (at least 16 KB, enough for the timer granularity) and 50 ms of queue.
func tbfArgs(rate string) ([]string, error) {
	bps, err := parseRate(rate)
	if err != nil {
		return nil, err
	}
	burst := bps / 8 / 100
	if burst < 16<<10 {
		burst = 16 << 10
	}
	return []string{"rate", rate, "burst", strconv.FormatInt(burst, 10), "latency", "50ms"}, nil
}

// parseRate reads tc rate units into bits per second (same units as relay.ParseRate,
// kept here so the lab does not depend on the relay package).
func parseRate(v string) (int64, error) {
	s := strings.ToLower(strings.TrimSpace(v))
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	f, err := strconv.ParseFloat(s[:i], 64)
	mult := map[string]float64{"": 1, "bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9,
		"bps": 8, "kbps": 8e3, "mbps": 8e6, "gbps": 8e9}[s[i:]]
	if err != nil || mult == 0 || f <= 0 {
		return 0, fmt.Errorf("%w: rate %q: want e.g. 10mbit", errConfig, v)
	}
	return int64(f * mult), nil
}

// Up builds the lab described by cfg and starts its relays. A lab of the same prefix
// left over from an earlier run is torn down first. On failure everything made so far
// is removed.
func Up(ctx context.Context, cfg Config) (*Lab, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	for _, p := range cfg.Paths {
		if p.Rate != "" {
			if _, err := parseRate(p.Rate); err != nil {
				return nil, err
			}
		}
	}
	if _, err := os.Stat(cfg.MpathBin); err != nil {
		return nil, fmt.Errorf("lab up: mpath binary: %w", err)
	}
	if err := Down(cfg.Prefix); err != nil {
		return nil, fmt.Errorf("lab up: remove stale lab: %w", err)
	}
	l := &Lab{cfg: cfg}
	if err := l.build(ctx); err != nil {
		_ = l.Down()
		return nil, fmt.Errorf("lab up: %w", err)
	}
	return l, nil
}

func (l *Lab) build(ctx context.Context) error {
	cfg := l.cfg
	if err := os.MkdirAll(cfg.LogDir, 0o755); err != nil {
		return err
	}
	// Record the namespaces before making them, so a crash half way is cleaned up too.
	if err := l.writeState(); err != nil {
		return err
	}
	for _, ns := range l.Namespaces() {
		if err := run(ctx, "ip", "netns", "add", ns); err != nil {
			return err
		}
		// No IPv6 (no DAD, no router solicitations), no reverse-path filtering: paths
		// are asymmetric by design. The kernel never forwards: relays do (--plain).
		if err := run(ctx, "ip", "netns", "exec", ns, "sysctl", "-q",
			"-w", "net.ipv6.conf.all.disable_ipv6=1",
			"-w", "net.ipv6.conf.default.disable_ipv6=1",
			"-w", "net.ipv4.conf.all.rp_filter=0",
			"-w", "net.ipv4.conf.default.rp_filter=0",
			"-w", "net.ipv4.ip_forward=0"); err != nil {
			return err
		}
	}
	c, x := l.ClientNS(), l.ExitNS()
	root := []string{}
	// The host addresses live on lo: this kernel has no dummy module. Routes to the
	// other host name them as the source, so plain connections use them by default.
	cl := []string{"link set lo up", "addr add " + l.ClientAddr().String() + "/32 dev lo"}
	ex := []string{"link set lo up", "addr add " + l.ExitAddr().String() + "/32 dev lo"}
	for i := 1; i <= l.N(); i++ {
		r := l.RelayNS(i)
		cdev, clocal, crelay := l.ClientPath(i)
		xdev, xlocal, xrelay := l.ExitPath(i)
		root = append(root,
			fmt.Sprintf("link add %s netns %s type veth peer name rc netns %s", cdev, c, r),
			fmt.Sprintf("link add %s netns %s type veth peer name re netns %s", xdev, x, r))
		cl = append(cl,
			fmt.Sprintf("addr add %s/24 dev %s", clocal, cdev),
			fmt.Sprintf("link set %s up", cdev),
			fmt.Sprintf("route add default via %s dev %s table %d", crelay, cdev, 100+i),
			fmt.Sprintf("rule add from %s lookup %d pref %d", clocal, 100+i, 1000+i))
		ex = append(ex,
			fmt.Sprintf("addr add %s/24 dev %s", xlocal, xdev),
			fmt.Sprintf("link set %s up", xdev),
			fmt.Sprintf("route add %s via %s dev %s", l.addr(i, 0).String()+"/24", xrelay, xdev),
			fmt.Sprintf("route add default via %s dev %s table %d", xrelay, xdev, 100+i),
			fmt.Sprintf("rule add from %s lookup %d pref %d", xlocal, 100+i, 1000+i))
	}
	_, _, relay1 := l.ClientPath(1)
	_, _, xrelay1 := l.ExitPath(1)
	cl = append(cl, fmt.Sprintf("route add %s/32 via %s src %s", l.ExitAddr(), relay1, l.ClientAddr()))
	ex = append(ex, fmt.Sprintf("route add %s/32 via %s src %s", l.ClientAddr(), xrelay1, l.ExitAddr()))
	if err := ipBatch(ctx, "", root); err != nil {
		return err
	}
	for i := 1; i <= l.N(); i++ {
		_, clocal, crelay := l.ClientPath(i)
		_, xlocal, xrelay := l.ExitPath(i)
		rl := []string{"link set lo up",
			fmt.Sprintf("addr add %s/24 dev rc", crelay),
			fmt.Sprintf("addr add %s/24 dev re", xrelay),
			"link set rc up", "link set re up",
			fmt.Sprintf("route add %s/32 via %s dev rc", l.ClientAddr(), clocal),
			fmt.Sprintf("route add %s/32 via %s dev re", l.ExitAddr(), xlocal)}
		if err := ipBatch(ctx, l.RelayNS(i), rl); err != nil {
			return err
		}
	}
	if err := ipBatch(ctx, c, cl); err != nil {
		return err
	}
	if err := ipBatch(ctx, x, ex); err != nil {
		return err
	}
	// Offloads off on every veth: with TSO/GSO a sender hands 64 KB super-packets to the
	// veth, which the relay's AF_PACKET capture would see whole; with TX checksum
	// offload the captured TCP checksum is only partial and a relayed copy is corrupt.
	for i := 1; i <= l.N(); i++ {
		cdev, _, _ := l.ClientPath(i)
		xdev, _, _ := l.ExitPath(i)
		for _, nd := range [][2]string{{c, cdev}, {x, xdev}, {l.RelayNS(i), "rc"}, {l.RelayNS(i), "re"}} {
			if err := run(ctx, "ip", "netns", "exec", nd[0], "ethtool", "-K", nd[1],
				"tx", "off", "tso", "off", "gso", "off", "gro", "off"); err != nil {
				return err
			}
			if err := run(ctx, "ip", "netns", "exec", nd[0], "sysctl", "-q", "-w",
				"net.ipv4.conf."+nd[1]+".rp_filter=0"); err != nil {
				return err
			}
		}
		if rate := l.cfg.Paths[i-1].Rate; rate != "" {
			tbf, err := tbfArgs(rate)
			if err != nil {
				return err
			}
			if err := run(ctx, "tc", append([]string{"-n", c, "qdisc", "replace", "dev", cdev, "root", "tbf"}, tbf...)...); err != nil {
				return err
			}
			if err := run(ctx, "tc", append([]string{"-n", l.RelayNS(i), "qdisc", "replace", "dev", "rc", "root", "tbf"}, tbf...)...); err != nil {
				return err
			}
		}
	}
	for i := 1; i <= l.N(); i++ {
		if err := l.startRelay(i); err != nil {
			return err
		}
	}
	if err := l.writeState(); err != nil {
		return err
	}
	return l.waitReady(ctx)
}

// RelayArgs returns the relay command line (after the binary) for path i.
func (l *Lab) RelayArgs(i int) []string {
	args := []string{"relay",
		"--allow", fmt.Sprintf("10.%d.0.0/16", l.cfg.Base),
		"--plain",
		"--mode", l.cfg.RelayMode,
		"--impair", l.cfg.Paths[i-1].impairSpec(l.cfg.Seed + int64(i)),
		"--metrics", fmt.Sprintf("0.0.0.0:%d", RelayMetricsPort), "--metrics-public",
	}
	return append(args, l.cfg.RelayArgs...)
}

func (l *Lab) startRelay(i int) error {
	logf, err := os.OpenFile(l.RelayLog(i), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := Command(l.RelayNS(i), l.cfg.MpathBin, l.RelayArgs(i)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own session: the relays outlive `mpath lab up` and ignore its terminal's signals.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start relay %d: %w", i, err)
	}
	p := &relayProc{pid: cmd.Process.Pid, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	l.relays = append(l.relays, p)
	return nil
}

// waitReady polls each relay's log for its ready line, failing early if a relay exits.
func (l *Lab) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(15 * time.Second)
	for i := 1; i <= l.N(); i++ {
		for {
			b, _ := os.ReadFile(l.RelayLog(i))
			if strings.Contains(string(b), readyMarker) {
				break
			}
			select {
			case <-l.relays[i-1].done:
				return fmt.Errorf("relay %d exited before it was ready; log %s:\n%s", i, l.RelayLog(i), tail(b, 2000))
			default:
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("relay %d not ready after 15s; log %s:\n%s", i, l.RelayLog(i), tail(b, 2000))
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond): // poll interval, not synchronisation
			}
		}
	}
	return nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func (l *Lab) writeState() error {
	st := state{Config: l.cfg, Namespaces: l.Namespaces(), Created: time.Now().UTC().Format(time.RFC3339), CreatorPID: os.Getpid()}
	for _, r := range l.relays {
		st.RelayPIDs = append(st.RelayPIDs, r.pid)
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(StateDir, 0o755); err != nil {
		return err
	}
	tmp := stateFile(l.cfg.Prefix) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, stateFile(l.cfg.Prefix))
}

// Down stops the relays and removes everything the lab made.
func (l *Lab) Down() error {
	err := Down(l.cfg.Prefix)
	for _, r := range l.relays {
		if r.done != nil {
			select {
			case <-r.done:
			case <-time.After(5 * time.Second):
			}
		}
	}
	return err
}

var downMu sync.Mutex

// Down removes the lab with this prefix: it stops every process inside the lab's
// namespaces (relays and anything else started there), deletes the namespaces (which
// deletes the veths and qdiscs with them) and the state file. It finds the namespaces
// by name, so it works after a crash and without a state file, and it is a no-op when
// there is nothing to remove.
func Down(prefix string) error {
	if !prefixRE.MatchString(prefix) {
		return fmt.Errorf("lab down: %w: prefix %q", errConfig, prefix)
	}
	downMu.Lock()
	defer downMu.Unlock()
	nss, err := labNamespaces(prefix)
	if err != nil {
		return fmt.Errorf("lab down: %w", err)
	}
	var errs []error
	// Stop processes: SIGTERM first (relays remove their nftables guard), then SIGKILL.
	pids := map[int]bool{}
	for _, ns := range nss {
		for _, pid := range nsPIDs(ns) {
			pids[pid] = true
		}
	}
	for pid := range pids {
		_ = unix.Kill(pid, unix.SIGTERM)
	}
	deadline := time.Now().Add(3 * time.Second)
	for len(pids) > 0 && time.Now().Before(deadline) {
		for pid := range pids {
			if !alive(pid) {
				delete(pids, pid)
			}
		}
		if len(pids) > 0 {
			time.Sleep(10 * time.Millisecond) // polling for exit, not synchronisation
		}
	}
	for pid := range pids {
		_ = unix.Kill(pid, unix.SIGKILL)
	}
	for _, ns := range nss {
		if err := run(context.Background(), "ip", "netns", "del", ns); err != nil {
			// Deleted meanwhile (another Down) is fine.
			if _, serr := os.Stat(filepath.Join("/run/netns", ns)); serr == nil {
				errs = append(errs, err)
			}
		}
	}
	if err := os.Remove(stateFile(prefix)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lab down: %w", err)
	}
	return nil
}

// labNamespaces lists existing namespaces that belong to the lab with prefix.
func labNamespaces(prefix string) ([]string, error) {
	entries, err := os.ReadDir("/run/netns")
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(prefix) + `-(c|x|r[0-9]+)$`)
	var out []string
	for _, e := range entries {
		if re.MatchString(e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// nsPIDs lists the processes whose network namespace is ns (like `ip netns pids`).
func nsPIDs(ns string) []int {
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join("/run/netns", ns), &st); err != nil {
		return nil
	}
	want := fmt.Sprintf("net:[%d]", st.Ino)
	procs, _ := os.ReadDir("/proc")
	var pids []int
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if link, err := os.Readlink(filepath.Join("/proc", p.Name(), "ns", "net")); err == nil && link == want {
			pids = append(pids, pid)
		}
	}
	return pids
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	// Field 3 (after "(comm)") is the state; Z is a zombie.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}
