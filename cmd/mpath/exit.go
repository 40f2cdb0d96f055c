package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"go.uber.org/zap"

	"mpath/raw"
	"mpath/socks"
	"mpath/tcp"
)

const exitMore = `
The exit accepts engine flows on --listen (its own inner address and port, guarded from
its kernel by an nftables table owned by the process), reads each flow's request (magic,
version, timestamp, nonce, target, HMAC-SHA256 with the key in --psk-file), refuses bad
MACs, timestamps off by more than 30 s, replayed nonces and denied targets, dials the
target with the kernel's TCP (IPv4, IPv6 or a name it resolves) and copies bytes both
ways with half-close. Its own segments go back sprayed over its --path list, or, with no
--path, over each client's own paths: the exit learns, per client and path (a tag in
every packet), the outer address (and port, with --encap udp) that the path's
authenticated packets last came from, so clients behind NATs with changing addresses
need no configuration here (forward-mode relays, which strip the encapsulation, need a
--path list).

It is never an open proxy: requests without the key are refused and counted. A SYN
must carry a valid request (its MAC binds the flow's addresses and ports; timestamps
older than the exit's start are refused, so replays do not survive a restart): other
SYNs are dropped before anything is kept for them and draw no answer. Loopback and
unspecified targets are refused always; cloud metadata addresses (169.254.169.254,
fd00:ec2::254, fd20:ce::254, 100.100.100.200, 168.63.129.16, ...) always unless
--allow-target names one exactly (a /32 or /128, which also wins over --deny-target).
Link-local, multicast and broadcast are denied by default (--deny-target adds to that
list; --allow-target, when given, is the only space allowed). Private ranges and this
host's own addresses stay reachable; to close them:
  --deny-target 10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,fc00::/7

Examples:
  mpath exit --listen 10.77.255.2:7000 --psk-file /etc/mpath/psk \
      --path dev=x1,relay=10.77.101.2 --path dev=x2,relay=10.77.102.2
  mpath exit --listen 10.77.255.2:7000 --psk-file /etc/mpath/psk --encap udp
  mpath exit ... --allow-target 10.0.0.0/8 --deny-target 10.9.0.0/16 --metrics 127.0.0.1:9465
`

type prefixList []netip.Prefix

func (l *prefixList) String() string {
	var s []string
	for _, p := range *l {
		s = append(s, p.String())
	}
	return strings.Join(s, ",")
}

func (l *prefixList) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil {
				return fmt.Errorf("%q is not a CIDR prefix or address", f)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		*l = append(*l, p.Masked())
	}
	return nil
}

// authorizeFlow lets a learning link learn return endpoints from c's packets while the
// flow lasts (only flows whose request verified may move a client's paths).
func authorizeFlow(l *raw.Link) func(c net.Conn) func() {
	if !l.Learning() {
		return nil
	}
	return func(c net.Conn) func() {
		la, ok1 := c.LocalAddr().(*net.TCPAddr)
		ra, ok2 := c.RemoteAddr().(*net.TCPAddr)
		if !ok1 || !ok2 {
			return nil
		}
		local, remote := la.AddrPort(), ra.AddrPort()
		local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
		remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
		l.Authorize(local, remote)
		return func() { l.Deauthorize(local, remote) }
	}
}

func init() {
	register("exit", "far end of the tunnel: accepts authenticated flows, dials the real servers", runExit)
}

func runExit(args []string) error {
	fs := newFlagSet("exit", "--listen ADDR:PORT --psk-file FILE [--encap udp] [--path dev=IFACE,relay=ADDR[,weight=N] ...] [flags]", exitMore)
	var ef engineFlags
	ef.register(fs, defaultExitMetrics)
	listen := fs.String("listen", "", "the exit's inner IPv4 `ADDR:PORT` that clients' --exit names (required)")
	pskFile := fs.String("psk-file", "", "`FILE` whose first line is the pre-shared key (32 random bytes: 64 hex digits, 43+ base64 characters or 32 raw bytes; required; 'mpath genkey FILE' makes one)")
	var allow, deny prefixList
	fs.Var(&allow, "allow-target", "only these target `CIDRS` may be dialled (comma-separated, repeatable; default: all not denied); a single address named here is exempt from --deny-target and the metadata refusal")
	fs.Var(&deny, "deny-target", "target `CIDRS` never dialled, added to the default list (link-local, multicast, broadcast; loopback and metadata are refused always)")
	noDefaultDeny := fs.Bool("no-default-deny", false, "drop the default deny list (link-local, multicast, broadcast); loopback and cloud metadata stay refused")
	maxConns := fs.Int("max-conns", 4096, "most flows relayed at once")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	ef.mssSet = flagGiven(fs, "mss")
	ef.learn = len(ef.paths) == 0 // no --path: every client's paths are learned
	if *listen == "" || *pskFile == "" {
		return usageErrorf("--listen and --psk-file are required")
	}
	la, err := netip.ParseAddrPort(*listen)
	if err != nil || !la.Addr().Is4() || la.Port() == 0 {
		return usageErrorf("--listen %q: want IPv4:port", *listen)
	}
	if *maxConns < 1 {
		return usageErrorf("--max-conns must be positive")
	}
	if err := ef.check(); err != nil {
		return err
	}
	if pr := ef.portRange; pr.First <= la.Port() && la.Port() <= pr.Last {
		return usageErrorf("--listen port %d lies inside --ports %s", la.Port(), ef.ports)
	}
	key, err := socks.LoadKey(*pskFile)
	if err != nil {
		return err
	}
	denyList := append([]netip.Prefix{}, deny...)
	if !*noDefaultDeny {
		denyList = append(socks.DefaultDeny(), deny...)
	}

	root := ef.logger("")
	defer root.Sync()
	log := root.Named("exit")
	n, err := startNode(log, &ef, la.Addr(), []raw.PortRange{{First: la.Port(), Last: la.Port()}}, true)
	if err != nil {
		return err
	}
	defer n.close()
	setup := setupHistogram("mpath_target_dial_seconds", "Time the exit took to resolve and dial a verified request's target.")
	dialer := &net.Dialer{}
	x, err := socks.NewExit(socks.ExitConfig{Key: key, Allow: allow, Deny: denyList, MaxConns: *maxConns,
		Logger:          root, // names itself "exit"
		OnAuthenticated: authorizeFlow(n.link),
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			start := time.Now()
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			setup.Observe(time.Since(start).Seconds())
			return newLoggedConn(c, log, addr, start), nil
		}})
	if err != nil {
		return err
	}
	// A SYN without a valid request in its payload is dropped before the engine keeps
	// anything for it (issue 10).
	ln, err := n.stack.ListenOptions(la.Port(), tcp.ListenOptions{VerifySYN: x.VerifySYN})
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go serveLoop("exit", func() error { return x.Serve(ln) }, errc)
	coll := newNodeCollector("exit", n.stack, n.link)
	coll.exit = x
	reg, err := newRegistry(coll, setup)
	if err != nil {
		return err
	}
	return n.serve(reg, &ef, errc, func(ctx context.Context) { x.Shutdown(ctx) },
		"exit", zap.Stringer("listen", la), zap.String("scheduler", ef.scheduler))
}
