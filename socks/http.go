package socks

// The HTTP proxy front, per client connection (so http_proxy/https_proxy work for curl,
// apt and browsers):
//
//	accept (MaxConns) --> read request head (HandshakeTimeout; keep-alive idle after)
//	  --> Proxy-Authorization (when Users is set; 407 otherwise)
//	  --> CONNECT host:port: Dialer.DialTarget --> "200 Connection established"
//	      --> relay with half-close (the connection is the tunnel from then on)
//	  --> GET http://host/path (absolute form): hop-by-hop headers removed, forwarded in
//	      origin form over a dialled conn kept per client conn while the host stays the
//	      same, response streamed back (re-chunked when its length is unknown), repeat
//	  --> anything else: 400
//
// Dialer errors: 403 (target not allowed), 504 (timeout), 502 (the rest), each with a
// short text body.
//
// Heads are bounded before they are parsed: a request head may take MaxRequestHead
// bytes (more: 431 and close, before the credentials are even looked at), a response
// head from the target MaxResponseHead bytes (more: 502). The bound is counted on the
// bytes read from the socket while a head is being read, so it holds for one endless
// header line as for many short ones.

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// HTTPConfig configures an HTTPServer. Dialer is required.
type HTTPConfig struct {
	Dialer Dialer
	// Users, when not empty, requires Proxy-Authorization: Basic with one of them.
	Users            map[string]string
	HandshakeTimeout time.Duration // reading the first request head; DefaultHandshakeTimeout when 0
	MaxConns         int           // beyond it new conns are closed at once; DefaultMaxConns when 0
	// MaxConnsPerClient and AuthFailDelay: as in SOCKSConfig.
	MaxConnsPerClient int
	AuthFailDelay     time.Duration
	// IdleTimeout ends a CONNECT tunnel after this long without a byte (0: never) and
	// bounds the wait for the next request on a keep-alive connection (90 s when 0).
	IdleTimeout time.Duration
	Logger      *zap.Logger // nil: no logs
}

const defaultKeepAliveIdle = 90 * time.Second

// Head size bounds of the HTTP front.
const (
	MaxRequestHead  = 64 << 10 // bytes of a client's request head (request line + headers)
	MaxResponseHead = 1 << 20  // bytes of a target's response head(s), 1xx interim ones included
	// headSlack is what the bufio.Reader may read past a head in one fill.
	headSlack = 4 << 10
)

var errHeadTooLarge = errors.New("head too large")

// headLimiter passes at most n more bytes of r, then fails with errHeadTooLarge; n < 0
// means no limit. It sits under the bufio.Reader a head is parsed from, armed while a
// head is read and disarmed for bodies and tunnels. Not safe for concurrent use: the
// connection's goroutine owns it.
type headLimiter struct {
	r   io.Reader
	n   int64
	hit bool
}

func (l *headLimiter) arm(n int64) { l.n, l.hit = n, false }
func (l *headLimiter) disarm()     { l.n = -1 }

func (l *headLimiter) Read(p []byte) (int, error) {
	if l.n < 0 {
		return l.r.Read(p)
	}
	if l.n == 0 {
		l.hit = true
		return 0, errHeadTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// HTTPServer is the HTTP proxy front. Safe for concurrent use; Serve may run on several
// listeners at once.
type HTTPServer struct {
	cfg      HTTPConfig
	tr       *tracker
	log      *zap.Logger
	users    userTable
	throttle *authThrottle
	stats    frontCounters
}

// NewHTTPServer checks cfg and returns an HTTPServer.
func NewHTTPServer(cfg HTTPConfig) (*HTTPServer, error) {
	if cfg.Dialer == nil {
		return nil, errors.New("new http proxy server: no Dialer")
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	log = log.Named("http")
	return &HTTPServer{cfg: cfg, log: log, tr: newTracker(cfg.MaxConns, cfg.MaxConnsPerClient, log),
		users: newUserTable(cfg.Users), throttle: newAuthThrottle(authFailDelay(cfg.AuthFailDelay))}, nil
}

// Serve accepts on l until l is closed or Shutdown/Close is called. It returns
// ErrServerClosed after Shutdown/Close, else the accept error.
func (s *HTTPServer) Serve(l net.Listener) error { return s.tr.serve(l, s.handle) }

// Shutdown stops accepting, waits for running connections until ctx is done, then
// closes the rest.
func (s *HTTPServer) Shutdown(ctx context.Context) error { return s.tr.shutdown(ctx) }

// Close stops accepting and closes every connection at once.
func (s *HTTPServer) Close() error {
	s.tr.shutdown(closedContext())
	return nil
}

// Stats returns a snapshot of the counters.
func (s *HTTPServer) Stats() FrontStats { return s.stats.snapshot(s.tr) }

// upstream is the dialled conn an absolute-form request went over, kept for the next
// request to the same target.
type upstream struct {
	target string
	conn   net.Conn
	lim    *headLimiter // under br: bounds the response heads
	br     *bufio.Reader
	stop   func() bool // stops the close-on-cancel hook
}

func (u *upstream) close() {
	u.stop()
	u.conn.Close()
}

func (s *HTTPServer) handle(ctx context.Context, c net.Conn) {
	lim := &headLimiter{r: c, n: -1}
	br := bufio.NewReader(lim)
	var up *upstream
	defer func() {
		if up != nil {
			up.close()
		}
	}()
	idle := s.cfg.IdleTimeout
	if idle <= 0 {
		idle = defaultKeepAliveIdle
	}
	for n := 0; ; n++ {
		wait := s.cfg.HandshakeTimeout
		if n > 0 {
			wait = idle
		}
		c.SetReadDeadline(time.Now().Add(wait))
		lim.arm(MaxRequestHead + headSlack)
		req, err := http.ReadRequest(br)
		lim.disarm()
		if err != nil && lim.hit {
			s.stats.handshakeFailed.Add(1)
			s.log.Debug("request head too large", zap.Stringer("client", c.RemoteAddr()))
			writeHTTPError(c, http.StatusRequestHeaderFieldsTooLarge,
				fmt.Sprintf("request head larger than %d bytes", MaxRequestHead), nil, true)
			lingerClose(c)
			return
		}
		if err != nil {
			quiet := n > 0 && (errors.Is(err, io.EOF) || isTimeout(err))
			if !quiet {
				s.stats.handshakeFailed.Add(1)
				s.log.Debug("bad request", zap.Stringer("client", c.RemoteAddr()), zap.Error(err))
				if !errors.Is(err, io.EOF) && !isTimeout(err) {
					writeHTTPError(c, http.StatusBadRequest, "malformed request", nil, true)
				}
			}
			return
		}
		c.SetReadDeadline(time.Time{})
		bodyless := req.Body == http.NoBody
		if !s.authorized(ctx, c, req) {
			s.stats.authFailed.Add(1)
			writeHTTPError(c, http.StatusProxyAuthRequired, "proxy authentication required",
				map[string]string{"Proxy-Authenticate": `Basic realm="mpath"`}, !bodyless || req.Close)
			if bodyless && !req.Close {
				continue
			}
			return
		}
		if req.Method == http.MethodConnect {
			if up != nil {
				up.close()
				up = nil
			}
			s.connect(ctx, c, br, req)
			return
		}
		if !req.URL.IsAbs() || req.URL.Scheme != "http" || req.URL.Host == "" {
			s.stats.handshakeFailed.Add(1)
			writeHTTPError(c, http.StatusBadRequest, "this is a proxy: send CONNECT host:port or an absolute http:// URL", nil, true)
			return
		}
		if !s.forward(ctx, c, req, &up) {
			return
		}
	}
}

// authorized checks Proxy-Authorization: Basic against the user table. A request that
// carries credentials is an attempt: it waits out the client's throttle first and a
// failure is recorded (one without is the challenge round, neither slowed nor counted
// against the client).
func (s *HTTPServer) authorized(ctx context.Context, c net.Conn, req *http.Request) bool {
	if s.users == nil {
		return true
	}
	h := req.Header.Get("Proxy-Authorization")
	if h == "" {
		return false
	}
	k := s.tr.client(c)
	if !s.throttle.wait(ctx, k) {
		return false
	}
	if !s.checkBasic(h) {
		s.throttle.failed(k, time.Now())
		s.log.Info("authentication failed", zap.Stringer("client", k))
		return false
	}
	s.throttle.succeeded(k)
	return true
}

func (s *HTTPServer) checkBasic(h string) bool {
	scheme, cred, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return false
	}
	dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
	if err != nil {
		return false
	}
	user, pass, ok := strings.Cut(string(dec), ":")
	return ok && s.users.valid(user, pass)
}

// dial asks the Dialer for target, answering the client with an error response when it
// fails.
func (s *HTTPServer) dial(ctx context.Context, c net.Conn, target string) (net.Conn, bool) {
	if _, _, err := splitTarget(target); err != nil {
		s.stats.handshakeFailed.Add(1)
		writeHTTPError(c, http.StatusBadRequest, "bad target "+target, nil, true)
		return nil, false
	}
	t, err := s.cfg.Dialer.DialTarget(ctx, target)
	if err != nil {
		s.stats.dialFailed.Add(1)
		code := replyCode(err)
		status := http.StatusBadGateway
		switch {
		case code == ReplyNotAllowed:
			status = http.StatusForbidden
		case code == ReplyTTLExpired:
			status = http.StatusGatewayTimeout
		}
		level := zap.InfoLevel
		if errors.Is(err, ErrExitAuth) {
			level = zap.ErrorLevel
		}
		s.log.Log(level, "connect failed", zap.Stringer("client", c.RemoteAddr()), zap.String("target", target),
			zap.Int("status", status), zap.Error(err))
		writeHTTPError(c, status, fmt.Sprintf("mpath: %s: %s", target, ReplyText(code)), nil, true)
		return nil, false
	}
	return t, true
}

func (s *HTTPServer) connect(ctx context.Context, c net.Conn, br *bufio.Reader, req *http.Request) {
	target := req.URL.Host
	if target == "" {
		target = req.RequestURI
	}
	t, ok := s.dial(ctx, c, target)
	if !ok {
		return
	}
	c.SetWriteDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		t.Close()
		return
	}
	c.SetWriteDeadline(time.Time{})
	s.stats.relayed.Add(1)
	s.log.Debug("tunnel", zap.Stringer("client", c.RemoteAddr()), zap.String("target", target))
	// br may already hold the first bytes of the tunnel (a TLS ClientHello sent eagerly).
	err := relay(end{br, c}, end{t, t}, s.cfg.IdleTimeout, &s.stats.up, &s.stats.down)
	s.log.Debug("tunnel done", zap.String("target", target), zap.Error(err))
}

// forward sends one absolute-form request in origin form and streams the response back.
// It reports whether the client connection can carry another request.
func (s *HTTPServer) forward(ctx context.Context, c net.Conn, req *http.Request, upp **upstream) bool {
	target := req.URL.Host
	if req.URL.Port() == "" {
		target = net.JoinHostPort(req.URL.Hostname(), "80")
	}
	clientKeep := !req.Close
	expect := req.ProtoAtLeast(1, 1) && strings.EqualFold(req.Header.Get("Expect"), "100-continue")
	req.Header.Del("Expect")
	removeHopHeaders(req.Header)
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header["User-Agent"] = []string{""} // keep net/http from adding its own
	}
	req.RequestURI = ""
	hasBody := req.Body != http.NoBody

	if up := *upp; up != nil && up.target != target {
		up.close()
		*upp = nil
	}
	reused := *upp != nil
	if !reused {
		if !s.dialUpstream(ctx, c, target, upp) {
			return false
		}
	}
	if expect {
		io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
	}
	resp, werrc, err := s.roundTrip(*upp, req, hasBody)
	if err != nil && reused && !hasBody && isClosedConn(err) {
		// The kept conn was closed by the server while idle: once more on a new one.
		(*upp).close()
		*upp = nil
		if !s.dialUpstream(ctx, c, target, upp) {
			return false
		}
		resp, werrc, err = s.roundTrip(*upp, req, hasBody)
	}
	if err != nil {
		(*upp).close()
		*upp = nil
		status := http.StatusBadGateway
		if isTimeout(err) {
			status = http.StatusGatewayTimeout
		}
		s.log.Info("upstream failed", zap.String("target", target), zap.Error(err))
		msg := "bad or no response from the server"
		if status == http.StatusGatewayTimeout {
			msg = "the server did not answer in time"
		}
		writeHTTPError(c, status, fmt.Sprintf("mpath: %s: %s", target, msg), nil, true)
		return false
	}
	s.stats.relayed.Add(1)

	upKeep := !resp.Close
	removeHopHeaders(resp.Header)
	bodyAllowed := req.Method != http.MethodHead && resp.StatusCode != http.StatusNoContent &&
		resp.StatusCode != http.StatusNotModified
	if bodyAllowed && resp.ContentLength < 0 && !isChunked(resp.TransferEncoding) {
		// Length unknown (the server will close): chunk it so the client conn can stay.
		if req.ProtoAtLeast(1, 1) {
			resp.TransferEncoding = []string{"chunked"}
		} else {
			clientKeep = false
		}
	}
	resp.Proto, resp.ProtoMajor, resp.ProtoMinor = "HTTP/1.1", 1, 1
	resp.Close = !clientKeep
	werr := resp.Write(&countWriter{w: c, n: &s.stats.down})
	resp.Body.Close()
	// The response is complete; the request write normally is too (or ends in a
	// moment). If it does not, the server answered before taking the whole request
	// body and the client is still sending it: neither conn is at a request boundary.
	timer := time.NewTimer(s.cfg.HandshakeTimeout)
	select {
	case err := <-werrc:
		if err != nil {
			upKeep = false
		}
	case <-timer.C:
		upKeep, clientKeep = false, false
	}
	timer.Stop()
	if !upKeep {
		(*upp).close()
		*upp = nil
	}
	if werr != nil {
		s.log.Debug("write response", zap.Stringer("client", c.RemoteAddr()), zap.Error(werr))
		return false
	}
	return clientKeep
}

func (s *HTTPServer) dialUpstream(ctx context.Context, c net.Conn, target string, upp **upstream) bool {
	t, ok := s.dial(ctx, c, target)
	if !ok {
		return false
	}
	lim := &headLimiter{r: t, n: -1}
	*upp = &upstream{
		target: target,
		conn:   t,
		lim:    lim,
		br:     bufio.NewReader(lim),
		stop:   context.AfterFunc(ctx, func() { t.Close() }),
	}
	return true
}

// roundTrip writes req to up (in its own goroutine, so a server that answers early cannot
// deadlock us) and reads the final response (1xx interim responses are dropped; the
// front already told the client to continue). The returned channel yields the write's
// result.
func (s *HTTPServer) roundTrip(up *upstream, req *http.Request, hasBody bool) (*http.Response, <-chan error, error) {
	werrc := make(chan error, 1)
	go func() { werrc <- req.Write(&countWriter{w: up.conn, n: &s.stats.up}) }()
	fail := func(err error) (*http.Response, <-chan error, error) {
		up.conn.Close()
		if !hasBody {
			<-werrc // nothing else to wait for: the write ends with the conn
		}
		return nil, nil, err
	}
	up.lim.arm(MaxResponseHead + headSlack)
	defer up.lim.disarm()
	for {
		resp, err := http.ReadResponse(up.br, req)
		if err != nil && up.lim.hit {
			err = fmt.Errorf("response head larger than %d bytes: %w", MaxResponseHead, errHeadTooLarge)
		}
		if err != nil {
			return fail(fmt.Errorf("read response from %s: %w", up.target, err))
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 {
			resp.Body.Close()
			if resp.StatusCode == http.StatusSwitchingProtocols {
				return fail(fmt.Errorf("read response from %s: %w", up.target,
					errors.New("protocol upgrade not supported on absolute-form requests; use CONNECT")))
			}
			continue
		}
		return resp, werrc, nil
	}
}

func isClosedConn(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func isChunked(te []string) bool { return len(te) > 0 && te[0] == "chunked" }

// hopHeaders are the hop-by-hop headers (RFC 9110 section 7.6.1) and their older
// proxy cousins; a proxy must not forward them.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func removeHopHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for _, f := range strings.Split(v, ",") {
			if f = textproto.TrimString(f); f != "" {
				h.Del(f)
			}
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}

// writeHTTPError writes a short text/plain response (within a few seconds, or not).
func writeHTTPError(c net.Conn, status int, msg string, extra map[string]string, closeConn bool) {
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	defer c.SetWriteDeadline(time.Time{})
	var b strings.Builder
	body := msg + "\n"
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", status, http.StatusText(status))
	for k, v := range extra {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	fmt.Fprintf(&b, "Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n", len(body))
	if closeConn {
		b.WriteString("Connection: close\r\n")
	}
	b.WriteString("\r\n")
	b.WriteString(body)
	io.WriteString(c, b.String())
}

// countWriter counts the bytes written through it.
type countWriter struct {
	w io.Writer
	n *atomic.Uint64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(uint64(n))
	return n, err
}
