package main

// Wiring shared by `mpath client` and `mpath exit`: the --path flag, the config file,
// the raw IPIP link under the tcp engine, metrics, and signal-driven shutdown.
//
//	flags/config ──► raw.Link (paths, guard) ──Run──► tcp.Stack.Input
//	                 tcp.Stack ──Send(path, segs)──► raw.Link ──► relays

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"mpath/raw"
	"mpath/tcp"
)

// pathSpec is one --path: dev=IFACE,relay=ADDR[,weight=N][,local=ADDR].
type pathSpec struct {
	dev    string
	relay  netip.Addr
	local  netip.Addr
	weight int
}

type pathList []pathSpec

func (l *pathList) String() string {
	var s []string
	for _, p := range *l {
		s = append(s, fmt.Sprintf("dev=%s,relay=%s,weight=%d", p.dev, p.relay, p.weight))
	}
	return strings.Join(s, " ")
}

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
			a, err := netip.ParseAddr(val)
			if err != nil || !a.Is4() {
				return p, fmt.Errorf("path %q: relay %q is not an IPv4 address", v, val)
			}
			p.relay = a
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
	return p, nil // no relay=: straight to the exit (the client fills in --exit's address)
}

const encapHelp = "encapsulation `ipip|udp[:PORT]`: ipip (IP protocol 4, the default) or udp, IPv4 in UDP to PORT " +
	"(default 5555; the format of Linux fou with ipproto 4), which crosses NAT and carries keepalives every 25 s on idle paths. " +
	"With udp the host kernel never sees the inner TCP: the guard drops inbound UDP to PORT instead of IPIP, and raw sockets " +
	"(CAP_NET_RAW, CAP_NET_ADMIN for the guard) are still needed"

const pathHelp = "a path to spray over, repeatable: `dev=IFACE[,relay=ADDR][,weight=N][,local=ADDR]` " +
	"(IFACE: the interface towards the relay; ADDR: the relay's IPv4 address, default (client) the exit itself: a relay-less path; weight for --scheduler weighted; " +
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

// withConfigFile expands --config FILE into the flags it holds, placed before the
// command line's own (which therefore win). The file has one flag per line, written as on
// the command line without the dashes: "path dev=c1,relay=10.77.1.2" or "scheduler=auto";
// blank lines and lines starting with # are ignored.
func withConfigFile(args []string) ([]string, error) {
	var file string
	rest := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--config" || a == "-config":
			if i+1 >= len(args) {
				return nil, errors.New("--config needs a file name")
			}
			file = args[i+1]
			i++
		case strings.HasPrefix(a, "--config=") || strings.HasPrefix(a, "-config="):
			_, file, _ = strings.Cut(a, "=")
		default:
			rest = append(rest, a)
		}
	}
	if file == "" {
		return args, nil
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, hasV := strings.Cut(line, "=")
		if sp := strings.IndexAny(line, " \t"); sp >= 0 && (!hasV || sp < len(k)) {
			k, v, hasV = line[:sp], strings.TrimSpace(line[sp+1:]), true
		}
		k = strings.TrimLeft(strings.TrimSpace(k), "-")
		if k == "" || k == "config" {
			return nil, fmt.Errorf("config %s:%d: bad line %q", file, n, line)
		}
		if hasV {
			out = append(out, "--"+k+"="+strings.TrimSpace(v))
		} else {
			out = append(out, "--"+k)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("config %s: %w", file, err)
	}
	return append(out, rest...), nil
}

// engineFlags are the flags client and exit share.
type engineFlags struct {
	paths      pathList
	addr       string
	scheduler  string
	ports      string
	metrics    string
	recvWindow int
	mss        int
	keepalive  time.Duration
	mssSet     bool // --mss was given (else it follows the paths' MTU)
	debug      bool
	noGuard    bool
	encap      string
	learn      bool // exit without --path: paths learned per client
	drain      time.Duration
	pprof      string
}

func (f *engineFlags) register(fs *flag.FlagSet) {
	fs.Var(&f.paths, "path", pathHelp)
	fs.StringVar(&f.scheduler, "scheduler", "auto", "how segments are spread over the paths: `auto` (earliest expected arrival, weights from measured rates), weighted (static weights, the thesis's 1:k), rr (strict alternation, the thesis baseline)")
	fs.StringVar(&f.ports, "ports", "61000-65535", "local `range` for engine flows, kept out of the kernel's way by the nftables guard (keep it outside net.ipv4.ip_local_port_range)")
	fs.StringVar(&f.metrics, "metrics", "", "serve Prometheus metrics at http://`ADDR`/metrics, e.g. 127.0.0.1:9090 (empty: off)")
	fs.IntVar(&f.recvWindow, "recv-window", 16<<20, "receive window bound per flow in `bytes` (at least 2 x sum of path rates x largest RTT)")
	fs.IntVar(&f.mss, "mss", 1440, "TCP MSS the engine announces and sends (`bytes`); default: the smallest path MTU less the encapsulation (20 ipip, 28 udp) and 40 (inner IPv4, TCP), 1440 for 1500-byte paths with ipip")
	fs.DurationVar(&f.keepalive, "keepalive", time.Minute, "probe a flow idle this `long` and reset it when three probes go unanswered (0: off)")
	fs.BoolVar(&f.debug, "debug", false, "debug logging")
	fs.StringVar(&f.encap, "encap", "ipip", encapHelp)
	fs.BoolVar(&f.noGuard, "no-guard", false, "do not install the nftables guard (the kernel would then answer engine flows with RSTs): for tests only")
	fs.StringVar(&f.pprof, "pprof", "", "serve Go's net/http/pprof at `ADDR` (profiling; empty: off)")
	fs.DurationVar(&f.drain, "drain", 10*time.Second, "on SIGTERM/SIGINT, how long open flows may take to finish before they are reset")
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
func startNode(log *zap.Logger, f *engineFlags, addr netip.Addr, extraPorts []raw.PortRange, acceptSYNData bool) (*node, error) {
	if len(f.paths) == 0 && !f.learn {
		return nil, errors.New("at least one --path is needed")
	}
	encap, err := raw.ParseEncap(f.encap)
	if err != nil {
		return nil, err
	}
	pr, err := parsePortRange(f.ports)
	if err != nil {
		return nil, err
	}
	if f.mss < 536 || f.mss > 9000-60 {
		return nil, fmt.Errorf("--mss %d: want 536..8940", f.mss)
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
		return nil, err
	}
	stack, err := tcp.NewStack(tcp.Config{
		Addr:          addr,
		Paths:         tpaths,
		Scheduler:     f.scheduler,
		RecvWindow:    f.recvWindow,
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
	if f.pprof != "" {
		go http.ListenAndServe(f.pprof, nil) // net/http/pprof registers on the default mux
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

// serve runs until SIGINT/SIGTERM (or the link fails): metrics on ef.metrics, a ready
// line with fields, then shutdown(ctx) with --drain to let flows finish. The caller's
// deferred n.close resets what is left.
func (n *node) serve(coll *nodeCollector, ef engineFlags, shutdown func(context.Context), fields ...zap.Field) error {
	ctx, cancel := signalContext()
	defer cancel()
	reg := prometheus.NewRegistry()
	reg.MustRegister(coll)
	if err := serveMetrics(ctx, n.log, ef.metrics, reg); err != nil {
		return err
	}
	n.log.Info(coll.role+" ready", append(fields, zap.Strings("paths", n.stack.Paths()))...)
	select {
	case <-ctx.Done():
	case err := <-n.done:
		return fmt.Errorf("link stopped: %w", err)
	}
	n.log.Info("shutting down: no new flows, open ones get --drain to finish", zap.Duration("drain", ef.drain))
	sctx, scancel := context.WithTimeout(context.Background(), ef.drain)
	defer scancel()
	shutdown(sctx)
	return nil
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

// serveMetrics serves reg on addr until ctx ends.
func serveMetrics(ctx context.Context, log *zap.Logger, addr string, reg *prometheus.Registry) error {
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	context.AfterFunc(ctx, func() { srv.Close() })
	log.Info("metrics", zap.String("addr", ln.Addr().String()))
	return nil
}

// signalContext is cancelled by SIGINT or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
}
