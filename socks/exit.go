package socks

// The exit, per flow:
//
//	accept --> ReadRequest (exactly one request, RequestTimeout)
//	       --> Verifier.Verify (MAC, ±window, replay)
//	       --> resolve (names) --> every address checked against Allow/Deny
//	       --> kernel TCP dial (DialTimeout, addresses in resolver order)
//	       --> status byte --> relay with half-close
//
// Any refusal: one status byte, a lingering close, and a count under its reason.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Resolver looks names up for the exit. *net.Resolver implements it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// DefaultDeny is the deny list an Exit uses when ExitConfig.Deny is nil: loopback,
// link-local, unspecified ("this network"), multicast and broadcast, IPv4 and IPv6.
func DefaultDeny() []netip.Prefix {
	return []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/8"),
		netip.MustParsePrefix("127.0.0.0/8"),
		netip.MustParsePrefix("169.254.0.0/16"),
		netip.MustParsePrefix("224.0.0.0/4"),
		netip.MustParsePrefix("255.255.255.255/32"),
		netip.MustParsePrefix("::/128"),
		netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("fe80::/10"),
		netip.MustParsePrefix("ff00::/8"),
	}
}

// MetadataAddrs are the cloud metadata and platform-agent addresses an Exit refuses to
// dial whatever its lists say, unless ExitConfig.Allow names one exactly (a /32 or /128
// prefix). A client that reaches one could read the exit host's cloud credentials.
// IPv4-mapped and NAT64 (64:ff9b::/96) forms of the IPv4 ones are refused too.
func MetadataAddrs() []netip.Addr {
	return []netip.Addr{
		netip.MustParseAddr("169.254.169.254"), // AWS, GCP, Azure IMDS, OpenStack, DigitalOcean, Oracle, Hetzner, Linode...
		netip.MustParseAddr("169.254.170.2"),   // AWS ECS task metadata and credentials
		netip.MustParseAddr("169.254.170.23"),  // AWS EKS Pod Identity agent
		netip.MustParseAddr("169.254.0.23"),    // Tencent Cloud metadata
		netip.MustParseAddr("169.254.42.42"),   // Scaleway metadata
		netip.MustParseAddr("100.100.100.200"), // Alibaba Cloud metadata
		netip.MustParseAddr("168.63.129.16"),   // Azure WireServer (platform agent, certificates)
		netip.MustParseAddr("192.0.0.192"),     // Oracle Cloud (older metadata address)
		netip.MustParseAddr("fd00:ec2::254"),   // AWS IMDS over IPv6
		netip.MustParseAddr("fd00:ec2::23"),    // AWS EKS Pod Identity agent over IPv6
		netip.MustParseAddr("fd20:ce::254"),    // GCP metadata over IPv6
		netip.MustParseAddr("fd00:42::42"),     // Scaleway metadata over IPv6
	}
}

var (
	metadataSet = func() map[netip.Addr]bool {
		m := make(map[netip.Addr]bool)
		for _, a := range MetadataAddrs() {
			m[a] = true
		}
		return m
	}()
	nat64 = netip.MustParsePrefix("64:ff9b::/96")
	// thisHost are the addresses that reach the exit host itself through its loopback:
	// denied always (ExitConfig.AllowLoopback aside), whatever the lists say.
	thisHost = []netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"),
		netip.MustParsePrefix("0.0.0.0/8"), // connect(0.0.0.0) reaches the local host on Linux
		netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("::/128"),
	}
)

// isMetadata reports a cloud metadata address, also inside a NAT64 prefix.
func isMetadata(a netip.Addr) bool {
	if metadataSet[a] {
		return true
	}
	if nat64.Contains(a) {
		b := a.As16()
		return metadataSet[netip.AddrFrom4([4]byte(b[12:16]))]
	}
	return false
}

func isThisHost(a netip.Addr) bool {
	for _, p := range thisHost {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ExitConfig configures an Exit. Only Key is required.
//
// Target policy, in order: loopback and unspecified addresses (the exit host through its
// loopback) are refused always; an address Allow names exactly (a /32 or /128) is
// allowed; cloud metadata addresses (MetadataAddrs) are refused; then Deny, then Allow.
// Private ranges (RFC 1918, 100.64/10, fc00::/7) and the exit host's own non-loopback
// addresses are not denied by default: a jump host into a private network is the point.
// Deny them with Deny (--deny-target) where that is not wanted.
type ExitConfig struct {
	Key []byte // pre-shared key, at least MinKeyLen bytes

	// Allow, if not empty, lists the only prefixes targets may be in. Deny lists prefixes
	// targets may not be in; it wins over Allow, except for addresses Allow names
	// exactly. Deny nil means DefaultDeny(); a non-nil empty slice denies nothing beyond
	// the always-refused addresses (see above). IPv4-mapped IPv6 addresses and prefixes
	// are compared as IPv4.
	Allow, Deny []netip.Prefix
	// AllowLoopback lifts the always-on loopback refusal. For tests whose targets live on
	// loopback; no flag sets it.
	AllowLoopback bool

	// Dial dials a checked address ("ip:port"); net.Dialer.DialContext when nil.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Resolver resolves name targets; net.DefaultResolver when nil. Every address it
	// returns is checked against Allow/Deny and only checked addresses are dialled, so
	// a name cannot be used to reach a denied address (no DNS rebinding way round).
	Resolver Resolver

	RequestTimeout  time.Duration    // reading the request; DefaultHandshakeTimeout when 0
	DialTimeout     time.Duration    // resolving + dialing the target; 10 s when 0
	IdleTimeout     time.Duration    // relay ends after this long without a byte; 0: never
	Window          time.Duration    // timestamp tolerance; DefaultWindow when 0
	ReplayCacheSize int              // nonces remembered; DefaultReplayCacheSize when 0
	MaxConns        int              // concurrent flows; DefaultMaxConns when 0
	Now             func() time.Time // time.Now when nil
	Logger          *zap.Logger      // nil: no logs

	// OnAuthenticated, if set, is called with a flow whose request verified (MAC,
	// timestamp, nonce), before the target is dialled; the function it returns is called
	// when the flow ends. A learning link uses it to let only authenticated flows move a
	// client's return endpoints.
	OnAuthenticated func(c net.Conn) (done func())
}

// ExitStats are an Exit's counters since it was made.
type ExitStats struct {
	Accepted        uint64            // flows accepted from the listeners
	OverLimit       uint64            // closed at once: MaxConns flows were active
	Relayed         uint64            // requests verified, target dialled, StatusOK sent
	Refused         map[string]uint64 // refusals by reason (Reason* constants)
	Active          int64             // flows being handled now
	BytesToTarget   uint64
	BytesFromTarget uint64
}

// Exit is the far end of the tunnel: it accepts flows, verifies their exit request,
// dials the target with the kernel's TCP and relays. Safe for concurrent use; Serve may
// run on several listeners at once.
type Exit struct {
	cfg      ExitConfig
	exact    map[netip.Addr]bool // single addresses Allow names: exempt from Deny and metadata
	verifier *Verifier
	tr       *tracker
	log      *zap.Logger
	refLog   *zap.Logger // sampled: refusals can be driven by anyone who reaches the port

	relayed  atomic.Uint64
	toTarget atomic.Uint64
	fromTgt  atomic.Uint64

	mu      sync.Mutex // guards refused
	refused map[string]uint64
}

// NewExit checks cfg and returns an Exit.
func NewExit(cfg ExitConfig) (*Exit, error) {
	if len(cfg.Key) < MinKeyLen {
		return nil, fmt.Errorf("new exit: key shorter than %d bytes", MinKeyLen)
	}
	if cfg.Deny == nil {
		cfg.Deny = DefaultDeny()
	}
	cfg.Allow = normalizePrefixes(cfg.Allow)
	cfg.Deny = normalizePrefixes(cfg.Deny)
	exact := make(map[netip.Addr]bool)
	for _, p := range cfg.Allow {
		if p.IsSingleIP() {
			exact[p.Addr()] = true
		}
	}
	if cfg.Dial == nil {
		cfg.Dial = (&net.Dialer{}).DialContext
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultHandshakeTimeout
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultTunnelTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	log = log.Named("exit")
	return &Exit{
		cfg:      cfg,
		exact:    exact,
		verifier: newStartedVerifier(cfg),
		tr:       newTracker(cfg.MaxConns, -1, log),
		log:      log,
		refLog: log.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
			return zapcore.NewSamplerWithOptions(c, time.Second, 10, 100)
		})),
		refused: make(map[string]uint64),
	}, nil
}

// normalizePrefixes turns IPv4-mapped IPv6 prefixes into IPv4 ones and masks them.
func normalizePrefixes(ps []netip.Prefix) []netip.Prefix {
	if ps == nil {
		return nil
	}
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out
}

// Allowed reports whether the exit may dial addr under its target policy (see
// ExitConfig).
func (e *Exit) Allowed(addr netip.Addr) bool {
	addr = addr.Unmap().WithZone("")
	if isThisHost(addr) && !e.cfg.AllowLoopback {
		return false
	}
	if e.exact[addr] {
		return true
	}
	if isMetadata(addr) {
		return false
	}
	for _, p := range e.cfg.Deny {
		if p.Contains(addr) {
			return false
		}
	}
	if len(e.cfg.Allow) == 0 {
		return true
	}
	for _, p := range e.cfg.Allow {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// Serve accepts flows on l until l is closed or Shutdown/Close is called. It returns
// ErrServerClosed after Shutdown/Close, else the accept error.
func (e *Exit) Serve(l net.Listener) error { return e.tr.serve(l, e.handle) }

// Shutdown stops accepting, waits for running flows until ctx is done, then closes the
// rest.
func (e *Exit) Shutdown(ctx context.Context) error { return e.tr.shutdown(ctx) }

// Close stops accepting and closes every flow at once.
func (e *Exit) Close() error {
	e.tr.shutdown(closedContext())
	return nil
}

// Stats returns a snapshot of the counters.
func (e *Exit) Stats() ExitStats {
	s := ExitStats{
		Accepted:        e.tr.accepted.Load(),
		OverLimit:       e.tr.overLimit.Load(),
		Relayed:         e.relayed.Load(),
		Active:          e.tr.active(),
		BytesToTarget:   e.toTarget.Load(),
		BytesFromTarget: e.fromTgt.Load(),
		Refused:         make(map[string]uint64),
	}
	e.mu.Lock()
	for k, v := range e.refused {
		s.Refused[k] = v
	}
	e.mu.Unlock()
	return s
}

func (e *Exit) handle(ctx context.Context, c net.Conn) {
	c.SetReadDeadline(time.Now().Add(e.cfg.RequestTimeout))
	req, err := ReadRequest(c)
	var target string
	if err == nil {
		target, err = e.verifier.Verify(req, FlowOf(c), e.cfg.Now())
	}
	if err != nil {
		e.refuse(c, "", err)
		return
	}
	c.SetReadDeadline(time.Time{})
	if e.cfg.OnAuthenticated != nil {
		if done := e.cfg.OnAuthenticated(c); done != nil {
			defer done()
		}
	}

	t, err := e.dial(ctx, target)
	if err != nil {
		e.refuse(c, target, err)
		return
	}
	c.SetWriteDeadline(time.Now().Add(e.cfg.RequestTimeout))
	if _, err := c.Write([]byte{byte(StatusOK)}); err != nil {
		t.Close()
		e.log.Debug("write status", zap.String("target", target), zap.Error(err))
		return
	}
	c.SetWriteDeadline(time.Time{})
	e.relayed.Add(1)
	e.log.Debug("relaying", zap.Stringer("client", c.RemoteAddr()), zap.String("target", target))
	err = relay(end{c, c}, end{t, t}, e.cfg.IdleTimeout, &e.toTarget, &e.fromTgt)
	e.log.Debug("flow done", zap.String("target", target), zap.Error(err))
}

// refuse counts err (an *ExitError) under its reason, answers its status and closes c.
func (e *Exit) refuse(c net.Conn, target string, err error) {
	var xerr *ExitError
	if !errors.As(err, &xerr) {
		xerr = refusal(StatusGeneralFailure, "internal", err)
	}
	e.mu.Lock()
	e.refused[xerr.Reason]++
	e.mu.Unlock()
	e.refLog.Info("refused flow", zap.Stringer("client", c.RemoteAddr()), zap.String("target", target),
		zap.String("reason", xerr.Reason), zap.Error(xerr.Err))
	c.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte{byte(xerr.Status)}); err != nil {
		return
	}
	lingerClose(c)
}

// lingerClose half-closes c and reads what the peer still sends (briefly, boundedly)
// before the tracker closes it, so a close with unread data does not turn into a reset
// that could overtake the status byte.
func lingerClose(c net.Conn) {
	if cw, ok := c.(closeWriter); ok {
		cw.CloseWrite()
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	io.CopyN(io.Discard, c, 64<<10)
}

// dial resolves target, checks every address and dials the first that answers.
// Errors are *ExitError.
func (e *Exit) dial(ctx context.Context, target string) (net.Conn, error) {
	host, ps, _ := net.SplitHostPort(target) // Verify returned it: well formed
	port, _ := strconv.ParseUint(ps, 10, 16)
	ctx, cancel := context.WithTimeout(ctx, e.cfg.DialTimeout)
	defer cancel()

	var addrs []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{ip}
	} else {
		addrs, err = e.cfg.Resolver.LookupNetIP(ctx, "ip", host)
		if err != nil || len(addrs) == 0 {
			if err == nil {
				err = errors.New("no addresses")
			}
			st := StatusHostUnreachable
			if isTimeout(err) && ctx.Err() != nil {
				st = StatusTimeout
			}
			return nil, refusal(st, ReasonResolve, fmt.Errorf("resolve %q: %w", host, err))
		}
	}
	for _, a := range addrs {
		if !e.Allowed(a) || a.Zone() != "" {
			return nil, refusal(StatusNotAllowed, ReasonDenied, fmt.Errorf("target %s: address %s not allowed", target, a))
		}
	}
	var last error
	for _, a := range addrs {
		addr := netip.AddrPortFrom(a.Unmap(), uint16(port)).String()
		c, err := e.cfg.Dial(ctx, "tcp", addr)
		if err == nil {
			return c, nil
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, refusal(dialStatus(last), ReasonDial, fmt.Errorf("dial %s: %w", target, last))
}
