package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"go.uber.org/zap"

	"mpath/raw"
	"mpath/socks"
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

It is never an open proxy: requests without the key are refused and counted. Loopback,
link-local, multicast and unspecified targets are denied by default (--deny-target adds
to that list; --allow-target, when given, is the only space allowed).

Examples:
  mpath exit --listen 10.77.255.2:7000 --psk-file /etc/mpath/psk \
      --path dev=x1,relay=10.77.101.2 --path dev=x2,relay=10.77.102.2
  mpath exit --listen 10.77.255.2:7000 --psk-file /etc/mpath/psk --encap udp
  mpath exit ... --allow-target 10.0.0.0/8 --deny-target 10.9.0.0/16 --metrics 127.0.0.1:9091
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

func runExit(args []string) error {
	args, err := withConfigFile(args)
	if err != nil {
		return err
	}
	fs := newFlagSet("exit", "--listen ADDR:PORT --psk-file FILE [--encap udp] [--path dev=IFACE,relay=ADDR[,weight=N] ...] [flags]", exitMore)
	var ef engineFlags
	ef.register(fs)
	listen := fs.String("listen", "", "the exit's inner IPv4 `address:port` that clients' --exit names (required)")
	pskFile := fs.String("psk-file", "", "`file` whose first line is the pre-shared key (at least 16 bytes; required)")
	var allow, deny prefixList
	fs.Var(&allow, "allow-target", "only these target `CIDRs` may be dialled (comma-separated, repeatable; default: all not denied)")
	fs.Var(&deny, "deny-target", "target `CIDRs` never dialled, added to the default list (loopback, link-local, multicast, unspecified)")
	noDefaultDeny := fs.Bool("no-default-deny", false, "drop the default deny list (loopback targets become reachable: tests only)")
	maxConns := fs.Int("max-conns", 4096, "most flows relayed at once")
	fs.String("config", "", "read flags from `file`, one per line; command-line flags win")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *listen == "" || *pskFile == "" {
		return errors.New("--listen and --psk-file are required")
	}
	la, err := netip.ParseAddrPort(*listen)
	if err != nil || !la.Addr().Is4() || la.Port() == 0 {
		return fmt.Errorf("--listen %q: want IPv4:port", *listen)
	}
	key, err := socks.LoadKey(*pskFile)
	if err != nil {
		return err
	}
	pr, err := parsePortRange(ef.ports)
	if err != nil {
		return err
	}
	if pr.First <= la.Port() && la.Port() <= pr.Last {
		return fmt.Errorf("--listen port %d lies inside --ports %s", la.Port(), ef.ports)
	}
	denyList := append([]netip.Prefix{}, deny...)
	if !*noDefaultDeny {
		denyList = append(socks.DefaultDeny(), deny...)
	}

	ef.mssSet = flagGiven(fs, "mss")
	ef.learn = len(ef.paths) == 0 // no --path: every client's paths are learned
	log := newLogger(ef.debug).Named("exit")
	defer log.Sync()
	n, err := startNode(log, &ef, la.Addr(), []raw.PortRange{{First: la.Port(), Last: la.Port()}}, true)
	if err != nil {
		return err
	}
	defer n.close()
	ln, err := n.stack.Listen(la.Port())
	if err != nil {
		return err
	}
	x, err := socks.NewExit(socks.ExitConfig{Key: key, Allow: allow, Deny: denyList, MaxConns: *maxConns, Logger: log.Named("exit"),
		OnAuthenticated: authorizeFlow(n.link)})
	if err != nil {
		return err
	}
	go x.Serve(ln)
	coll := newNodeCollector("exit", n.stack, n.link)
	coll.exit = x
	return n.serve(coll, ef, func(ctx context.Context) { x.Shutdown(ctx) },
		zap.Stringer("listen", la), zap.String("scheduler", ef.scheduler))
}
