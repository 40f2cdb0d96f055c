package socks

// The SOCKS5 front, per client connection:
//
//	accept (MaxConns) --> deadline = HandshakeTimeout
//	  --> first byte != 5: answer 05 FF, close
//	  --> go-socks5 ServeConn: methods (00, or 02 only when Users is set), RFC 1929
//	      auth, request parsing (bad address type: 08; unknown command: 07)
//	  --> CONNECT: handleConnect: Dialer.DialTarget (names unresolved) --> reply code
//	      --> relay with half-close
//	  --> BIND, UDP ASSOCIATE: 07
//
// go-socks5 is used for the protocol parsing and the method/auth negotiation; what its
// defaults get wrong for a tunnel is replaced: it would resolve names locally (here they
// go to the Dialer as they are), guess reply codes from error strings (here *ReplyError
// carries them), open a UDP relay for ASSOCIATE (here: 07), and has no handshake
// timeout, connection limit or half-close-preserving relay.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	socks5 "github.com/things-go/go-socks5"
	"github.com/things-go/go-socks5/statute"
	"go.uber.org/zap"
)

// SOCKSConfig configures a SOCKSServer. Dialer is required.
type SOCKSConfig struct {
	Dialer Dialer
	// Users, when not empty, requires RFC 1929 username/password (method 02) and
	// offers nothing else; nil or empty offers "no authentication" (method 00) only.
	Users            map[string]string
	HandshakeTimeout time.Duration // greeting to request; DefaultHandshakeTimeout when 0
	MaxConns         int           // beyond it new conns are closed at once; DefaultMaxConns when 0
	// MaxConnsPerClient bounds the connections from one client (remote address, IPv6
	// /64, or local user): DefaultMaxConnsPerClient (at most MaxConns) when 0, none when < 0.
	MaxConnsPerClient int
	// AuthFailDelay slows a client after a failed authentication: its next attempt waits
	// this long, doubling per consecutive failure up to 5 s. DefaultAuthFailDelay when
	// 0, none when < 0.
	AuthFailDelay time.Duration
	IdleTimeout   time.Duration // relay ends after this long without a byte; 0: never
	Logger        *zap.Logger   // nil: no logs
}

// FrontStats are a front's counters since it was made.
type FrontStats struct {
	Accepted        uint64 // connections accepted
	OverLimit       uint64 // closed at once: MaxConns connections were active
	OverClientLimit uint64 // closed at once: MaxConnsPerClient connections of that client were active
	HandshakeFailed uint64 // bad input, timeout, unsupported method or command
	AuthFailed      uint64 // wrong user or password
	DialFailed      uint64 // the Dialer refused or failed
	Relayed         uint64 // connections that reached the relay
	Active          int64  // connections being handled now
	BytesUp         uint64 // client -> target
	BytesDown       uint64 // target -> client
}

type frontCounters struct {
	handshakeFailed, authFailed, dialFailed, relayed, up, down atomic.Uint64
}

func (f *frontCounters) snapshot(tr *tracker) FrontStats {
	return FrontStats{
		Accepted:        tr.accepted.Load(),
		OverLimit:       tr.overLimit.Load(),
		OverClientLimit: tr.overClientLimit.Load(),
		HandshakeFailed: f.handshakeFailed.Load(),
		AuthFailed:      f.authFailed.Load(),
		DialFailed:      f.dialFailed.Load(),
		Relayed:         f.relayed.Load(),
		Active:          tr.active(),
		BytesUp:         f.up.Load(),
		BytesDown:       f.down.Load(),
	}
}

// SOCKSServer is the SOCKS5 front. Safe for concurrent use; Serve may run on several
// listeners at once.
type SOCKSServer struct {
	cfg      SOCKSConfig
	srv      *socks5.Server
	tr       *tracker
	log      *zap.Logger
	users    userTable
	throttle *authThrottle
	stats    frontCounters
}

// NewSOCKSServer checks cfg and returns a SOCKSServer.
func NewSOCKSServer(cfg SOCKSConfig) (*SOCKSServer, error) {
	if cfg.Dialer == nil {
		return nil, errors.New("new socks server: no Dialer")
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	log = log.Named("socks")
	s := &SOCKSServer{cfg: cfg, log: log, tr: newTracker(cfg.MaxConns, cfg.MaxConnsPerClient, log),
		users: newUserTable(cfg.Users), throttle: newAuthThrottle(authFailDelay(cfg.AuthFailDelay))}
	opts := []socks5.Option{
		socks5.WithLogger(socksLogger{log.Sugar()}),
		socks5.WithResolver(noResolve{}),
		socks5.WithConnectHandle(s.handleConnect),
		socks5.WithBindHandle(s.refuseCommand),
		socks5.WithAssociateHandle(s.refuseCommand),
	}
	if s.users != nil {
		opts = append(opts, socks5.WithAuthMethods([]socks5.Authenticator{userPassAuth{s}}))
	}
	s.srv = socks5.NewServer(opts...)
	return s, nil
}

// Serve accepts on l until l is closed or Shutdown/Close is called. It returns
// ErrServerClosed after Shutdown/Close, else the accept error.
func (s *SOCKSServer) Serve(l net.Listener) error { return s.tr.serve(l, s.handle) }

// Shutdown stops accepting, waits for running connections until ctx is done, then
// closes the rest.
func (s *SOCKSServer) Shutdown(ctx context.Context) error { return s.tr.shutdown(ctx) }

// Close stops accepting and closes every connection at once.
func (s *SOCKSServer) Close() error {
	s.tr.shutdown(closedContext())
	return nil
}

// Stats returns a snapshot of the counters.
func (s *SOCKSServer) Stats() FrontStats { return s.stats.snapshot(s.tr) }

// socksConn is the conn go-socks5 sees: it replays the version byte read before
// ServeConn, carries the connection's context to handleConnect, and half-closes.
type socksConn struct {
	net.Conn
	ctx       context.Context
	client    clientKey
	prefix    []byte
	connected bool // reached the relay (set and read by the connection's goroutine)
}

func (c *socksConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

func (c *socksConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

func (s *SOCKSServer) handle(ctx context.Context, c net.Conn) {
	c.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	var ver [1]byte
	if _, err := io.ReadFull(c, ver[:]); err != nil {
		s.stats.handshakeFailed.Add(1)
		s.log.Debug("handshake", zap.Stringer("client", c.RemoteAddr()), zap.Error(err))
		return
	}
	if ver[0] != statute.VersionSocks5 {
		s.stats.handshakeFailed.Add(1)
		c.Write([]byte{statute.VersionSocks5, statute.MethodNoAcceptable})
		s.log.Debug("handshake: not SOCKS5", zap.Stringer("client", c.RemoteAddr()), zap.Uint8("version", ver[0]))
		return
	}
	sc := &socksConn{Conn: c, ctx: ctx, client: s.tr.client(c), prefix: ver[:]}
	err := s.srv.ServeConn(sc)
	switch {
	case errors.Is(err, statute.ErrUserAuthFailed):
		// Counted by userPassAuth, before the client is told.
	case !sc.connected && err != nil:
		s.stats.handshakeFailed.Add(1)
	}
	if err != nil {
		s.log.Debug("connection", zap.Stringer("client", c.RemoteAddr()), zap.Error(err))
	}
}

// requestTarget turns the parsed request into "host:port", or the reply code for a
// target that cannot be one: an empty name or port 0 (01, general failure: RFC 1928 has
// no code for a malformed request).
func requestTarget(a *statute.AddrSpec) (string, byte) {
	host := a.FQDN
	if a.AddrType != statute.ATYPDomain {
		host = a.IP.String()
	}
	target := net.JoinHostPort(host, strconv.Itoa(a.Port))
	if _, _, err := splitTarget(target); err != nil {
		return "", ReplyGeneralFailure
	}
	return target, ReplySucceeded
}

func (s *SOCKSServer) handleConnect(_ context.Context, w io.Writer, req *socks5.Request) error {
	sc, ok := w.(*socksConn)
	if !ok {
		return fmt.Errorf("socks connect: unexpected writer %T", w)
	}
	target, code := requestTarget(req.RawDestAddr)
	if code != ReplySucceeded {
		writeSOCKSReply(sc, code, nil)
		return fmt.Errorf("socks connect: bad target %q", req.RawDestAddr.String())
	}
	// The handshake is over; the Dialer bounds its own time.
	sc.SetDeadline(time.Time{})
	t, err := s.cfg.Dialer.DialTarget(sc.ctx, target)
	if err != nil {
		s.stats.dialFailed.Add(1)
		code := replyCode(err)
		sc.SetWriteDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
		writeSOCKSReply(sc, code, nil)
		level := zap.InfoLevel
		if errors.Is(err, ErrExitAuth) {
			level = zap.ErrorLevel
		}
		s.log.Log(level, "connect failed", zap.Stringer("client", sc.RemoteAddr()), zap.String("target", target),
			zap.Uint8("reply", code), zap.Error(err))
		return nil
	}
	sc.SetWriteDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	if err := writeSOCKSReply(sc, ReplySucceeded, t.LocalAddr()); err != nil {
		t.Close()
		return fmt.Errorf("socks connect %s: reply: %w", target, err)
	}
	sc.SetWriteDeadline(time.Time{})
	sc.connected = true
	s.stats.relayed.Add(1)
	s.log.Debug("relaying", zap.Stringer("client", sc.RemoteAddr()), zap.String("target", target))
	// req.Reader is go-socks5's bufio.Reader on sc: it may hold bytes the client sent
	// right after its request.
	return relay(end{req.Reader, sc}, end{t, t}, s.cfg.IdleTimeout, &s.stats.up, &s.stats.down)
}

func (s *SOCKSServer) refuseCommand(_ context.Context, w io.Writer, req *socks5.Request) error {
	writeSOCKSReply(w, ReplyCommandNotSupported, nil)
	return fmt.Errorf("socks: command %d not supported", req.Command)
}

// writeSOCKSReply writes a SOCKS5 reply; bound is the BND address (0.0.0.0:0 when it is
// not a TCP address).
func writeSOCKSReply(w io.Writer, code byte, bound net.Addr) error {
	b := make([]byte, 0, 22)
	b = append(b, statute.VersionSocks5, code, 0)
	ta, _ := bound.(*net.TCPAddr)
	switch {
	case ta != nil && ta.IP.To4() != nil:
		b = append(b, statute.ATYPIPv4)
		b = append(b, ta.IP.To4()...)
	case ta != nil && len(ta.IP) == net.IPv6len:
		b = append(b, statute.ATYPIPv6)
		b = append(b, ta.IP...)
	default:
		ta = &net.TCPAddr{}
		b = append(b, statute.ATYPIPv4, 0, 0, 0, 0)
	}
	b = append(b, byte(ta.Port>>8), byte(ta.Port))
	_, err := w.Write(b)
	return err
}

// userPassAuth is RFC 1929 username/password authentication with the server's user
// table and its throttle: a client that failed recently waits before its credentials
// are checked, and a failure is recorded before the client is told.
type userPassAuth struct{ s *SOCKSServer }

func (userPassAuth) GetCode() uint8 { return statute.MethodUserPassAuth }

func (a userPassAuth) Authenticate(r io.Reader, w io.Writer, _ string) (*socks5.AuthContext, error) {
	sc, ok := w.(*socksConn)
	if !ok {
		return nil, fmt.Errorf("socks auth: unexpected writer %T", w)
	}
	if _, err := w.Write([]byte{statute.VersionSocks5, statute.MethodUserPassAuth}); err != nil {
		return nil, err
	}
	up, err := statute.ParseUserPassRequest(r)
	if err != nil {
		return nil, err
	}
	s := a.s
	if !s.throttle.wait(sc.ctx, sc.client) {
		return nil, sc.ctx.Err()
	}
	if !s.users.valid(string(up.User), string(up.Pass)) {
		s.stats.authFailed.Add(1)
		s.throttle.failed(sc.client, time.Now())
		s.log.Info("authentication failed", zap.Stringer("client", sc.client))
		w.Write([]byte{statute.UserPassAuthVersion, statute.AuthFailure})
		return nil, statute.ErrUserAuthFailed
	}
	s.throttle.succeeded(sc.client)
	if _, err := w.Write([]byte{statute.UserPassAuthVersion, statute.AuthSuccess}); err != nil {
		return nil, err
	}
	return &socks5.AuthContext{Method: statute.MethodUserPassAuth, Payload: map[string]string{"username": string(up.User)}}, nil
}

// authFailDelay maps a config's AuthFailDelay to the throttle's base (0: none).
func authFailDelay(d time.Duration) time.Duration {
	switch {
	case d == 0:
		return DefaultAuthFailDelay
	case d < 0:
		return 0
	}
	return d
}

// noResolve leaves names unresolved: the Dialer (the exit, in tunnel mode) resolves.
type noResolve struct{}

func (noResolve) Resolve(ctx context.Context, _ string) (context.Context, net.IP, error) {
	return ctx, nil, nil
}

// socksLogger routes go-socks5's messages (client errors, mostly) to zap at debug level.
type socksLogger struct{ l *zap.SugaredLogger }

func (z socksLogger) Errorf(format string, args ...any) { z.l.Debugf(format, args...) }
