package main

// Wiring shared by `mpath client` and `mpath exit`: the --path flag and the engine's
// flags, the raw IPIP link under the tcp engine, and signal-driven shutdown.
//
//	flags/config ──► raw.Link (paths, guard) ──Run──► tcp.Stack.Input
//	                 tcp.Stack ──Send(path, segs)──► raw.Link ──► relays

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"mpath/raw"
	"mpath/socks"
	"mpath/spray"
	"mpath/tcp"
)

// pathSpec is one --path: dev=IFACE,relay=ADDR[,weight=N][,local=ADDR].
type pathSpec struct {
	dev       string
	relayName string     // as given: an IPv4 address or a host name
	relay     netip.Addr // relayName resolved (resolvePaths)
	local     netip.Addr
	weight    int
}

type pathList []pathSpec

func (l *pathList) String() string {
	var s []string
	for _, p := range *l {
		s = append(s, fmt.Sprintf("dev=%s,relay=%s,weight=%d", p.dev, p.relayName, p.weight))
	}
	return strings.Join(s, " ")
}

func (l *pathList) repeatable() {}

func (l *pathList) Set(v string) error {
	p, err := parsePath(v)
	if err != nil {
		return err
	}
	*l = append(*l, p)
	return nil
}

func parsePath(v string) (pathSpec, error) {
	p := pathSpec{weight: 1}
	for _, kv := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return p, fmt.Errorf("path %q: %q is not key=value (want dev=IFACE,relay=ADDR[,weight=N][,local=ADDR])", v, kv)
		}
		switch k {
		case "dev":
			p.dev = val
		case "relay":
			if a, err := netip.ParseAddr(val); err == nil {
				if !a.Is4() {
					return p, fmt.Errorf("path %q: relay %q is not an IPv4 address", v, val)
				}
				p.relay = a
			} else if !isHostName(val) {
				return p, fmt.Errorf("path %q: relay %q is neither an IPv4 address nor a host name", v, val)
			}
			p.relayName = val
		case "local":
			a, err := netip.ParseAddr(val)
			if err != nil || !a.Is4() {
				return p, fmt.Errorf("path %q: local %q is not an IPv4 address", v, val)
			}
			p.local = a
		case "weight":
			w, err := strconv.Atoi(val)
			if err != nil || w < 1 || w > 1000 {
				return p, fmt.Errorf("path %q: weight %q is not an integer in 1..1000", v, val)
			}
			p.weight = w
		default:
			return p, fmt.Errorf("path %q: unknown key %q (want dev, relay, weight, local)", v, k)
		}
	}
	if p.dev == "" {
		return p, fmt.Errorf("path %q: dev= is required", v)
	}
	return p, nil // no relay=: straight to the exit (the client fills in --exit's address)
}

// isHostName reports whether s looks like a DNS name (letters, digits, '-', '.').
func isHostName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

// resolveIPv4 returns host's first IPv4 address (host may be an IPv4 literal). Names are
// resolved once, at start.
func resolveIPv4(ctx context.Context, host string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		if !a.Is4() {
			return netip.Addr{}, fmt.Errorf("%s is not an IPv4 address", host)
		}
		return a, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip4", host)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("resolve %s: %w", host, err)
	}
	return ips[0].Unmap(), nil
}

// resolvePaths resolves the relays given by name.
func resolvePaths(paths pathList) error {
	for i := range paths {
		if paths[i].relay.IsValid() || paths[i].relayName == "" {
			continue
		}
		a, err := resolveIPv4(context.Background(), paths[i].relayName)
		if err != nil {
			return fmt.Errorf("--path relay=%s: %w", paths[i].relayName, err)
		}
		paths[i].relay = a
	}
	return nil
}

const encapHelp = "encapsulation `ipip|udp[:PORT]`: ipip (IP protocol 4, the default) or udp, IPv4 in UDP to PORT " +
	"(default 5555; the format of Linux fou with ipproto 4), which crosses NAT and carries keepalives every 25 s on idle paths. " +
	"With udp the host kernel never sees the inner TCP: the guard drops inbound UDP to PORT instead of IPIP, and raw sockets " +
	"(CAP_NET_RAW, CAP_NET_ADMIN for the guard) are still needed"

const pathHelp = "a path to spray over, repeatable: `dev=IFACE[,relay=ADDR][,weight=N][,local=ADDR]` " +
	"(IFACE: the interface towards the relay; ADDR: the relay's IPv4 address or host name, resolved at start; default (client) the exit itself: a relay-less path; weight for --scheduler weighted; " +
	"local: outer source, default IFACE's first IPv4 address)"

// portRange parses "FIRST-LAST".
func parsePortRange(v string) (raw.PortRange, error) {
	a, b, ok := strings.Cut(v, "-")
	f, err1 := strconv.ParseUint(a, 10, 16)
	l, err2 := strconv.ParseUint(b, 10, 16)
	if !ok || err1 != nil || err2 != nil || f == 0 || l <= f {
		return raw.PortRange{}, fmt.Errorf("port range %q: want FIRST-LAST with 0 < FIRST < LAST <= 65535", v)
	}
	return raw.PortRange{First: uint16(f), Last: uint16(l)}, nil
}

// engineFlags are the flags client and exit share.
type engineFlags struct {
	opsFlags
	paths      pathList
	addr       string
	scheduler  string
	ports      string
	recvWindow int
	memBudget  int
	mss        int
	keepalive  time.Duration
	mssSet     bool // --mss was given (else it follows the paths' MTU)
	noGuard    bool
	encap      string
	learn      bool // exit without --path: paths learned per client
	drain      time.Duration
	config     string

	portRange raw.PortRange // ports, parsed by check
}

func (f *engineFlags) register(fs *flag.FlagSet, defaultMetrics string) {
	fs.StringVar(&f.config, "config", "", "read flags from `FILE`, one per line (\"path dev=wan1,relay=r1.example.net\"); see Configuration below")
	fs.Var(&f.paths, "path", pathHelp)
	fs.StringVar(&f.scheduler, "scheduler", "auto", "how segments are spread over the paths, `NAME`: auto (earliest expected arrival, weights from measured rates), weighted (static weights, the thesis's 1:k), rr (strict alternation, the thesis baseline)")
	fs.StringVar(&f.ports, "ports", "61000-65535", "local port `RANGE` for engine flows, kept out of the kernel's way by the nftables guard (keep it outside net.ipv4.ip_local_port_range)")
	fs.IntVar(&f.recvWindow, "recv-window", 16<<20, "receive window bound per flow in `BYTES` (at least 2 x sum of path rates x largest RTT)")
	fs.IntVar(&f.memBudget, "mem-budget", tcp.DefaultMemoryBudget, "most `BYTES` all flows' buffers may hold (receive, reorder pages, send, input queues); when spent, windows stop opening and new flows are refused")
	fs.IntVar(&f.mss, "mss", 1440, "TCP maximum segment size the engine announces and sends, in `BYTES`, 536..8940; default: the smallest path MTU less the encapsulation (20 ipip, 28 udp) and 40 (inner IPv4, TCP), 1440 for 1500-byte paths with ipip")
	fs.DurationVar(&f.keepalive, "keepalive", time.Minute, "probe a flow idle this `DURATION` and reset it when three probes go unanswered (0: off)")
	fs.StringVar(&f.encap, "encap", "ipip", encapHelp)
	fs.BoolVar(&f.noGuard, "no-guard", false, "do not install the nftables guard (the kernel would then answer engine flows with RSTs): for tests only")
	fs.DurationVar(&f.drain, "drain", 10*time.Second, "on SIGTERM/SIGINT, how long (`DURATION`) open flows may take to finish before they are reset")
	f.opsFlags.register(fs, defaultMetrics)
}

// check validates the shared flags and resolves relay names: everything that can be
// wrong with them is reported before a socket or table exists.
func (f *engineFlags) check() error {
	if err := f.opsFlags.check(); err != nil {
		return err
	}
	if !slices.Contains(spray.Names, f.scheduler) {
		return usageErrorf("--scheduler %q: want one of %s", f.scheduler, strings.Join(spray.Names, ", "))
	}
	if len(f.paths) == 0 && !f.learn {
		return usageErrorf("at least one --path is needed")
	}
	if _, err := raw.ParseEncap(f.encap); err != nil {
		return usageErrorf("--encap: %w", err)
	}
	pr, err := parsePortRange(f.ports)
	if err != nil {
		return usageErrorf("--ports: %w", err)
	}
	f.portRange = pr
	if f.mss < 536 || f.mss > 9000-60 {
		return usageErrorf("--mss %d: want 536..8940", f.mss)
	}
	if f.recvWindow < 2*f.mss {
		return usageErrorf("--recv-window %d: want at least two segments (%d)", f.recvWindow, 2*f.mss)
	}
	if f.keepalive < 0 || f.drain < 0 {
		return usageErrorf("--keepalive and --drain must not be negative")
	}
	return resolvePaths(f.paths)
}

// node is a running engine over raw IPIP.
type node struct {
	log   *zap.Logger
	link  *raw.Link
	stack *tcp.Stack
	stop  context.CancelFunc
	done  chan error
}

// startNode builds the link and the stack. extraPorts are ports besides the engine range
// the node receives on (the exit's listen port).
// f must have passed check.
func startNode(log *zap.Logger, f *engineFlags, addr netip.Addr, extraPorts []raw.PortRange, acceptSYNData bool) (*node, error) {
	pr := f.portRange
	encap, err := raw.ParseEncap(f.encap)
	if err != nil {
		return nil, err
	}
	var lpaths []raw.PathConfig
	var tpaths []tcp.PathConfig
	for _, p := range f.paths {
		if !p.relay.IsValid() {
			return nil, fmt.Errorf("path dev=%s: relay= is required here", p.dev)
		}
		lpaths = append(lpaths, raw.PathConfig{Dev: p.dev, Local: p.local, Relay: p.relay})
		tpaths = append(tpaths, tcp.PathConfig{Name: fmt.Sprintf("%s>%s", p.dev, p.relay), Weight: p.weight})
	}
	const learnSlots = 4
	if f.learn {
		for i := 0; i < learnSlots; i++ {
			tpaths = append(tpaths, tcp.PathConfig{Name: fmt.Sprintf("learned%d", i), Weight: 1})
		}
	}
	if !f.mssSet {
		f.mss = pathMSS(f, encap)
	}
	ports := append([]raw.PortRange{pr}, extraPorts...)
	link, err := raw.NewLink(raw.LinkConfig{
		Paths:      lpaths,
		Addr:       addr,
		Ports:      ports,
		Guard:      !f.noGuard,
		Encap:      encap,
		Learn:      f.learn,
		LearnSlots: learnSlots,
		Logger:     log.Named("link"),
		// A deep ring: on a busy host the receive goroutine can miss a few milliseconds of
		// CPU, and a full ring drops packets the engine then has to recover as losses.
		RingBytes: 32 << 20,
	})
	if err != nil {
		return nil, capabilityHint(err)
	}
	var usable func(netip.Addr, int) bool
	if f.learn {
		usable = link.PathUsable // a client's flows use only the slots it has paths for
	}
	stack, err := tcp.NewStack(tcp.Config{
		PathUsable:    usable,
		Addr:          addr,
		Paths:         tpaths,
		Scheduler:     f.scheduler,
		RecvWindow:    f.recvWindow,
		MemoryBudget:  f.memBudget,
		MSS:           f.mss,
		KeepAlive:     f.keepalive,
		PortFirst:     pr.First,
		PortLast:      pr.Last,
		AcceptSYNData: acceptSYNData,
		Logger:        log.Named("tcp"),
	}, link)
	if err != nil {
		link.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{log: log, link: link, stack: stack, stop: cancel, done: make(chan error, 1)}
	go func() { n.done <- link.Run(ctx, stack.Input) }()
	return n, nil
}

// pathMSS is the MSS when --mss is not given: the smallest path MTU (each --path's
// device; 1500 where unknown, and for a learning exit, whose clients announce theirs)
// less the encapsulation, inner IPv4 and TCP headers. One MSS for the whole stack: the
// engine does not size segments per path.
func pathMSS(f *engineFlags, encap raw.Encap) int {
	mtu := 1500
	for i, p := range f.paths {
		m := 1500
		if ifi, err := net.InterfaceByName(p.dev); err == nil && ifi.MTU > 0 {
			m = ifi.MTU
		}
		if i == 0 || m < mtu {
			mtu = m
		}
	}
	return max(encap.MSSFor(mtu), 536)
}

// close resets what is left and removes the guard.
func (n *node) close() {
	n.stack.Close()
	n.stop()
	<-n.done
	n.link.Close()
}

// serve runs until SIGINT/SIGTERM, a serving goroutine's error on errc, or a link
// failure: metrics and pprof as ef asks, a ready line with fields (and READY=1 to
// systemd), then shutdown(ctx) with --drain to let flows finish. The caller's deferred
// n.close resets what is left.
func (n *node) serve(reg *prometheus.Registry, ef *engineFlags, errc chan error, shutdown func(context.Context), role string, fields ...zap.Field) error {
	ctx, cancel := signalContext()
	defer cancel()
	if err := ef.startEndpoints(ctx, n.log, reg, errc); err != nil {
		return err
	}
	n.log.Info(role+" ready", append(fields, zap.Strings("paths", n.stack.Paths()))...)
	if err := sdNotify("READY=1"); err != nil {
		n.log.Warn("readiness notification", zap.Error(err))
	}
	var runErr error
	select {
	case <-ctx.Done():
	case err := <-n.done:
		runErr = fmt.Errorf("link stopped: %w", err)
	case runErr = <-errc:
	}
	_ = sdNotify("STOPPING=1")
	if runErr != nil {
		n.log.Error("stopping", zap.Error(runErr))
		return runErr
	}
	n.log.Info("shutting down: no new flows, open ones get --drain to finish", zap.Duration("drain", ef.drain))
	sctx, scancel := context.WithTimeout(context.Background(), ef.drain)
	defer scancel()
	shutdown(sctx)
	return nil
}

// serveLoop runs serve (a front's or the exit's accept loop) and sends its error to errc
// unless the server was shut down: a dead accept loop ends the process.
func serveLoop(what string, serve func() error, errc chan<- error) {
	if err := serve(); err != nil && !errors.Is(err, socks.ErrServerClosed) {
		sendErr(errc, fmt.Errorf("%s: %w", what, err))
	}
}

// defaultAddr is the first path's outer source: the inner address when --addr is unset.
func defaultAddr(f *engineFlags) (netip.Addr, error) {
	p := f.paths[0]
	if p.local.IsValid() {
		return p.local, nil
	}
	ifi, err := net.InterfaceByName(p.dev)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("path dev %q: %w", p.dev, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("path dev %q: %w", p.dev, err)
	}
	for _, a := range addrs {
		if pfx, err := netip.ParsePrefix(a.String()); err == nil && pfx.Addr().Is4() {
			return pfx.Addr(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("path dev %q has no IPv4 address: give --addr", p.dev)
}

// signalContext is cancelled by SIGINT or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
}
