package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"go.uber.org/zap"

	"mpath/socks"
	"mpath/tcp"
)

const clientMore = `
Each connection accepted by a front becomes one engine flow. In tunnel mode (the
default) the flow goes to an 'mpath exit' (--exit), which checks the request's HMAC
(--psk-file, the same key file as the exit's) and dials the real target; names are
resolved at the exit. In direct mode (--direct) the flow goes straight to the target,
an unmodified server, through relays in forward mode; names are resolved here.

Every segment of a flow is wrapped in IPIP and sprayed over the --path list; what comes
back is captured with AF_PACKET and reordered per flow. An nftables table (owned by the
process, gone when it ends) keeps this host's kernel from answering engine flows.

Listening on a non-loopback address needs --socks-user/--socks-password-file, or
--force-open to run an open proxy on purpose.

Examples:
  mpath client --exit 10.77.255.2:7000 --psk-file /etc/mpath/psk \
      --path dev=c1,relay=10.77.1.2 --path dev=c2,relay=10.77.2.2 --addr 10.77.255.1
  mpath client --config /etc/mpath/client.conf
  curl --socks5-hostname 127.0.0.1:1080 http://example.org/
  mpath client --direct --path dev=c1,relay=10.77.1.2 --path dev=c2,relay=10.77.2.2
`

func init() {
	register("client", "SOCKS5/HTTP proxy that sprays each connection over several paths", runClient)
}

func runClient(args []string) error {
	fs := newFlagSet("client", "[--socks ADDR:PORT] [--http ADDR:PORT] (--exit HOST:PORT --psk-file FILE | --direct) --path dev=IFACE,relay=ADDR[,weight=N] ... [flags]", clientMore)
	var ef engineFlags
	ef.register(fs, defaultClientMetrics)
	socksAddr := fs.String("socks", "127.0.0.1:1080", "SOCKS5 front listen `ADDR:PORT` (empty: off)")
	httpAddr := fs.String("http", "", "HTTP proxy front listen `ADDR:PORT` for http_proxy/https_proxy, e.g. 127.0.0.1:8080 (empty: off)")
	exitAddr := fs.String("exit", "", "the exit's engine `HOST:PORT` (tunnel mode; a host name is resolved once, at start, to IPv4)")
	pskFile := fs.String("psk-file", "", "`FILE` whose first line is the pre-shared key shared with the exit (32 random bytes; 'mpath genkey FILE' makes one)")
	direct := fs.Bool("direct", false, "direct mode: flows go straight to their targets (unmodified servers), no exit")
	fs.StringVar(&ef.addr, "addr", "", "inner source `IPv4` address of the flows (default: the first path's address)")
	user := fs.String("socks-user", "", "require this user `NAME` on the fronts (RFC 1929 for SOCKS, Basic for HTTP)")
	passFile := fs.String("socks-password-file", "", "`FILE` whose first line is the password for --socks-user")
	forceOpen := fs.Bool("force-open", false, "allow listening on a non-loopback address without authentication (an open proxy)")
	maxConns := fs.Int("max-conns", 1024, "most proxy connections at once per front")
	perClient := fs.Int("max-conns-per-client", socks.DefaultMaxConnsPerClient, "most proxy connections at once per front from one client: a remote address (IPv6: its /64) or one local user (-1: no limit)")
	handshake := fs.Duration("handshake-timeout", 10*time.Second, "time (`DURATION`) a proxy client has to finish its handshake")
	dialTimeout := fs.Duration("dial-timeout", 10*time.Second, "time (`DURATION`) to open a flow and hear the exit's answer")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if *socksAddr == "" && *httpAddr == "" {
		return usageErrorf("no front: give --socks and/or --http")
	}
	if *maxConns < 1 || *handshake <= 0 || *dialTimeout <= 0 {
		return usageErrorf("--max-conns, --handshake-timeout and --dial-timeout must be positive")
	}
	var users map[string]string
	var err error
	if *user != "" || *passFile != "" {
		if users, err = socks.LoadUsers(*user, *passFile); err != nil {
			return err
		}
	}
	for _, a := range []string{*socksAddr, *httpAddr} {
		if a != "" {
			if err := socks.CheckListen(a, users != nil, *forceOpen); err != nil {
				return &usageError{err}
			}
		}
	}
	var key []byte
	if *direct {
		if *exitAddr != "" || *pskFile != "" {
			return usageErrorf("--direct takes no --exit or --psk-file")
		}
	} else {
		if *exitAddr == "" {
			return usageErrorf("--exit is required (or --direct)")
		}
		if *pskFile == "" {
			return usageErrorf("--psk-file is required in tunnel mode")
		}
	}
	ef.mssSet = flagGiven(fs, "mss")
	for _, p := range ef.paths {
		if *direct && p.relayName == "" && !p.relay.IsValid() {
			return usageErrorf("path dev=%s: relay= is required in direct mode", p.dev)
		}
	}
	var addr netip.Addr
	if ef.addr != "" {
		if addr, err = netip.ParseAddr(ef.addr); err != nil || !addr.Is4() {
			return usageErrorf("--addr %q: want an IPv4 address", ef.addr)
		}
	}
	if err := ef.check(); err != nil {
		return err
	}
	var exit netip.AddrPort
	if !*direct {
		host, port, err := net.SplitHostPort(*exitAddr)
		pn, perr := strconv.ParseUint(port, 10, 16)
		if err != nil || perr != nil || pn == 0 {
			return usageErrorf("--exit %q: want HOST:PORT", *exitAddr)
		}
		a, err := resolveIPv4(context.Background(), host)
		if err != nil {
			return fmt.Errorf("--exit: %w", err)
		}
		exit = netip.AddrPortFrom(a, uint16(pn))
		for i := range ef.paths {
			if !ef.paths[i].relay.IsValid() { // a relay-less path: straight to the exit
				ef.paths[i].relay = exit.Addr()
			}
		}
		if key, err = socks.LoadKey(*pskFile); err != nil {
			return err
		}
	}
	if !addr.IsValid() {
		if addr, err = defaultAddr(&ef); err != nil {
			return err
		}
	}

	log := ef.logger("client")
	defer log.Sync()
	n, err := startNode(log, &ef, addr, nil, false)
	if err != nil {
		return err
	}
	defer n.close()

	var dialer socks.Dialer
	if *direct {
		dialer = &socks.DirectDialer{Timeout: *dialTimeout, Dial: engineDialer(n)}
	} else {
		dialer = &socks.TunnelDialer{
			Key:     key,
			Timeout: *dialTimeout,
			Logger:  log.Named("tunnel"),
			Flow: func(ctx context.Context, first func(socks.FlowAddrs) []byte) (net.Conn, error) {
				// No timestamps between engines: the engine takes RTT samples from its
				// transmit log, not from TSecr, so the option would only cost 12 bytes
				// of every segment (0.8% of a path) and one SACK block of every ACK.
				return n.stack.DialOptions(ctx, exit, tcp.DialOptions{NoTimestamps: true,
					SYNDataFunc: func(local, remote netip.AddrPort) []byte {
						return first(socks.FlowAddrs{Client: local, Exit: remote})
					}})
			},
		}
	}
	setup := setupHistogram("mpath_flow_setup_seconds", "Time from a front's request to a flow ready for its bytes (flow open and, in tunnel mode, the exit's answer).")
	coll := newNodeCollector("client", n.stack, n.link)
	reg, err := newRegistry(coll, setup)
	if err != nil {
		return err
	}
	type front interface {
		Serve(net.Listener) error
		Shutdown(context.Context) error
	}
	errc := make(chan error, 1)
	var fronts []front
	if *socksAddr != "" {
		s, err := socks.NewSOCKSServer(socks.SOCKSConfig{Dialer: &accessDialer{dialer, log.With(zap.String("front", "socks")), setup},
			Users: users, HandshakeTimeout: *handshake, MaxConns: *maxConns, MaxConnsPerClient: *perClient, Logger: log})
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", *socksAddr)
		if err != nil {
			return fmt.Errorf("socks front: %w", err)
		}
		coll.socks = s
		fronts = append(fronts, s)
		go serveLoop("socks front", func() error { return s.Serve(ln) }, errc)
		log.Info("socks5 front", zap.String("addr", ln.Addr().String()))
	}
	if *httpAddr != "" {
		s, err := socks.NewHTTPServer(socks.HTTPConfig{Dialer: &accessDialer{dialer, log.With(zap.String("front", "http")), setup},
			Users: users, HandshakeTimeout: *handshake, MaxConns: *maxConns, MaxConnsPerClient: *perClient, Logger: log})
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", *httpAddr)
		if err != nil {
			return fmt.Errorf("http front: %w", err)
		}
		coll.http = s
		fronts = append(fronts, s)
		go serveLoop("http front", func() error { return s.Serve(ln) }, errc)
		log.Info("http front", zap.String("addr", ln.Addr().String()))
	}
	mode := "tunnel"
	if *direct {
		mode = "direct"
	}
	return n.serve(reg, &ef, errc, func(ctx context.Context) {
		for _, f := range fronts {
			f.Shutdown(ctx)
		}
	}, "client", zap.String("mode", mode), zap.Stringer("addr", addr), zap.String("scheduler", ef.scheduler))
}

// engineDialer dials targets (IPv4 literals; names resolved here) with engine flows.
func engineDialer(n *node) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip4", host)
		if err != nil {
			return nil, err
		}
		pn, err := net.LookupPort("tcp", port)
		if err != nil {
			return nil, err
		}
		var last error
		for _, ip := range ips {
			// Kernel peers: no timestamps, or Linux's PAWS check drops sprayed segments
			// that arrive after a retransmission with a newer timestamp filled a hole.
			c, err := n.stack.DialOptions(ctx, netip.AddrPortFrom(ip.Unmap(), uint16(pn)), tcp.DialOptions{NoTimestamps: true})
			if err == nil {
				return c, nil
			}
			last = err
		}
		return nil, last
	}
}
