package bench

// How a run flows:
//
//	Run ──> newPlan (validate, defaults) ──> C workers, each with its own http.Transport
//	          │                                   │ (own keep-alive conn with KeepAlive)
//	          │    ticket = issued.Add(1) <= N ───┤
//	          │                                   v
//	          │                     do(): GET with an httptrace, body read to EOF
//	          │                     (hashed when a sha256 is expected), classified
//	          │                                   │
//	          │     worker's own []Sample  <──────┤──> Config.OnRequest(sample)
//	          v
//	     all workers done ──> summarize(samples) ──> Result
//
// Every TCP connection the transports open goes through countConn, which adds what it
// reads to one counter (ab's "Total transferred").

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/proxy"
)

// Failure says why a request failed; FailNone for a request that succeeded or got a
// non-2xx response (which ab, and Result, count apart from failures).
type Failure int

// Failure kinds. Connect, Receive and Length are ab's; Timeout is ab's "Exceptions" for
// the one exception a client sees; SHA256 is ours.
const (
	FailNone    Failure = iota
	FailConnect         // no connection: dial, proxy handshake or TLS failed
	FailReceive         // the connection broke while writing the request or reading the reply
	FailTimeout         // the request took longer than Config.Timeout
	FailLength          // the body was shorter than its Content-Length, or differs from the expected length
	FailSHA256          // the body's sha256 differs from the expected one
)

var failureNames = [...]string{"none", "connect", "receive", "timeout", "length", "sha256"}

func (f Failure) String() string {
	if f >= 0 && int(f) < len(failureNames) {
		return failureNames[f]
	}
	return "Failure(" + strconv.Itoa(int(f)) + ")"
}

// Sample is one counted request.
type Sample struct {
	Start   time.Time     // when the request was started
	Connect time.Duration // getting a connection (dial, proxy handshake, TLS); 0 when reused
	Waiting time.Duration // request written to first response byte (ab's "Waiting"); 0 without a response
	TTFB    time.Duration // start to first response byte; 0 without a response
	Total   time.Duration // start to the end of the body (or to the failure)
	Reused  bool          // went over a kept-alive connection
	Status  int           // HTTP status; 0 without a response
	Bytes   int64         // body bytes read
	Failure Failure
	Err     error // what went wrong, for a failure
}

// Responded reports whether the request got a response whose body ended (2xx or not,
// possibly short of its Content-Length or failing a length or sha256 check), so its
// times go into the latency statistics. Connect, receive and timeout failures do not.
func (s Sample) Responded() bool {
	return s.Status != 0 && (s.Failure == FailNone || s.Failure == FailLength || s.Failure == FailSHA256)
}

// Run runs the load cfg describes and returns what it measured. It returns an error
// without running for a Config it cannot use (ErrBadURL, ErrBadProxy, ErrBadConfig).
// If ctx ends first, it returns the Result so far together with ctx's error (wrapped);
// requests in flight then are not counted. Failed requests are counted in the Result,
// never returned as an error.
func Run(ctx context.Context, cfg Config) (Result, error) {
	p, err := newPlan(cfg)
	if err != nil {
		return Result{}, fmt.Errorf("bench: %w", err)
	}
	r := &runner{plan: p, log: cfg.Logger, docLen: -1}
	if r.log == nil {
		r.log = zap.NewNop()
	}
	if err := r.setupDial(ctx); err != nil {
		return Result{}, fmt.Errorf("bench: %w", err)
	}

	runCtx, cancel := ctx, context.CancelFunc(func() {})
	if cfg.Duration > 0 {
		runCtx, cancel = context.WithTimeout(ctx, cfg.Duration)
	}
	defer cancel()

	perWorker := make([][]Sample, p.concurrency)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range p.concurrency {
		wg.Go(func() { perWorker[i] = r.worker(runCtx) })
	}
	wg.Wait()
	end := time.Now()

	var all []Sample
	for _, s := range perWorker {
		all = append(all, s...)
	}
	res := r.summarize(all, start, end)
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("bench: interrupted after %d requests: %w", res.Requests, err)
	}
	return res, nil
}

// runner is the state shared by a run's workers. Fields are set before the workers
// start and read-only after, except the atomics and mu's.
type runner struct {
	*plan
	log    *zap.Logger
	dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	issued atomic.Int64 // tickets handed out
	wire   atomic.Int64 // bytes read from every connection
	docLen int64        // first 2xx body length, -1 until then; atomic
	mu     sync.Mutex   // guards the fields below
	server string       // Server header of the first response
	errs   []string     // first distinct failure messages, at most maxErrors
}

const maxErrors = 5

// setupDial builds the dial function the transports use: the base dialer (Config.Dial
// or net.Dialer) through countConn, behind the SOCKS5 handshake when the proxy is one.
func (r *runner) setupDial(ctx context.Context) error {
	base := r.cfg.Dial
	if base == nil {
		base = (&net.Dialer{}).DialContext
	}
	counted := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := base(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &countConn{Conn: c, n: &r.wire}, nil
	}
	r.dial = counted
	if r.proxy == nil || (r.proxy.Scheme != "socks5" && r.proxy.Scheme != "socks5h") {
		return nil
	}
	var auth *proxy.Auth
	if r.proxy.User != nil {
		pw, _ := r.proxy.User.Password()
		auth = &proxy.Auth{User: r.proxy.User.Username(), Password: pw}
	}
	d, err := proxy.SOCKS5("tcp", r.proxy.Host, auth, dialFunc(counted))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadProxy, err)
	}
	socks := d.(proxy.ContextDialer)
	// socks5:// resolves the target here, once (as ab does), and tries its addresses in
	// order, IPv4 first; socks5h:// sends the name for the proxy to resolve.
	var resolved []string
	if r.proxy.Scheme == "socks5" {
		host := r.target.Hostname()
		if _, err := netip.ParseAddr(host); err != nil {
			addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
			if err != nil || len(addrs) == 0 {
				return fmt.Errorf("resolve %s for socks5 (use socks5h:// to resolve at the proxy): %v", host, err)
			}
			slices.SortStableFunc(addrs, func(a, b netip.Addr) int {
				return cmp.Compare(boolInt(!a.Unmap().Is4()), boolInt(!b.Unmap().Is4()))
			})
			for _, a := range addrs {
				resolved = append(resolved, a.Unmap().String())
			}
		}
	}
	r.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if len(resolved) == 0 {
			return socks.DialContext(ctx, network, addr)
		}
		_, port, _ := net.SplitHostPort(addr)
		var firstErr error
		for _, ip := range resolved {
			c, err := socks.DialContext(ctx, network, net.JoinHostPort(ip, port))
			if err == nil {
				return c, nil
			}
			if firstErr == nil {
				firstErr = err
			}
			if ctx.Err() != nil {
				break
			}
		}
		return nil, firstErr
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// dialFunc adapts a dial function to proxy.Dialer and proxy.ContextDialer.
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

func (f dialFunc) Dial(network, addr string) (net.Conn, error) {
	return f(context.Background(), network, addr)
}

func (f dialFunc) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return f(ctx, network, addr)
}

// countConn adds every byte read to n.
type countConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countConn) Read(b []byte) (int, error) {
	k, err := c.Conn.Read(b)
	c.n.Add(int64(k))
	return k, err
}

func (r *runner) transport() *http.Transport {
	t := &http.Transport{
		DialContext:         r.dial,
		DisableKeepAlives:   !r.cfg.KeepAlive,
		DisableCompression:  true, // count the bytes the server sent, as ab does
		MaxIdleConnsPerHost: 1,
		TLSClientConfig:     r.cfg.TLS,
		// HTTP/1.1 only, like ab: a non-nil empty map turns HTTP/2 off.
		// Default 4 KiB read buffer: body reads into the worker's 64 KiB buffer bypass it.
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	if r.proxy != nil && (r.proxy.Scheme == "http" || r.proxy.Scheme == "https") {
		t.Proxy = http.ProxyURL(r.proxy)
	}
	return t
}

// worker runs requests until the tickets or the time run out and returns its samples.
func (r *runner) worker(ctx context.Context) []Sample {
	tr := r.transport()
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	buf := make([]byte, 64<<10)
	var h hash.Hash
	if r.wantSum != nil {
		h = sha256.New()
	}
	var out []Sample
	for ctx.Err() == nil {
		if r.requests > 0 && r.issued.Add(1) > r.requests {
			break
		}
		s, counted := r.do(ctx, client, buf, h)
		if !counted {
			break // the run ended while this request was in flight
		}
		out = append(out, s)
		if s.Failure != FailNone {
			r.noteError(s)
		}
		if r.cfg.OnRequest != nil {
			r.cfg.OnRequest(s)
		}
	}
	return out
}

// reqTrace records a request's milestones; the transport calls it from its own
// goroutines, so mu guards the fields.
type reqTrace struct {
	mu                             sync.Mutex
	getConn, gotConn, wrote, first time.Time
	reused                         bool
}

func (t *reqTrace) clientTrace() *httptrace.ClientTrace {
	set := func(f func()) { t.mu.Lock(); f(); t.mu.Unlock() }
	return &httptrace.ClientTrace{
		GetConn: func(string) { set(func() { t.getConn = time.Now() }) },
		GotConn: func(i httptrace.GotConnInfo) {
			set(func() { t.gotConn, t.reused = time.Now(), i.Reused })
		},
		WroteRequest:         func(httptrace.WroteRequestInfo) { set(func() { t.wrote = time.Now() }) },
		GotFirstResponseByte: func() { set(func() { t.first = time.Now() }) },
	}
}

// do runs one request. counted is false when the run's context ended while it was in
// flight (the request is abandoned, not a failure).
func (r *runner) do(runCtx context.Context, client *http.Client, buf []byte, h hash.Hash) (s Sample, counted bool) {
	ctx, cancel := context.WithTimeout(runCtx, r.timeout)
	defer cancel()
	var tr reqTrace
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, tr.clientTrace()), r.method, r.target.String(), nil)
	if err != nil {
		// newPlan checked the URL; this cannot happen short of a bug.
		panic(fmt.Sprintf("bench: build request: %v", err))
	}
	for k, v := range r.cfg.Header {
		if http.CanonicalHeaderKey(k) == "Host" && len(v) > 0 {
			req.Host = v[0]
			continue
		}
		req.Header[http.CanonicalHeaderKey(k)] = v
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", UserAgent)
	}
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", "*/*")
	}

	s.Start = time.Now()
	resp, err := client.Do(req)
	var readErr error
	if err == nil {
		s.Status = resp.StatusCode
		if h != nil {
			h.Reset()
			s.Bytes, readErr = io.CopyBuffer(h, onlyReader{resp.Body}, buf)
		} else {
			s.Bytes, readErr = io.CopyBuffer(io.Discard, onlyReader{resp.Body}, buf)
		}
		resp.Body.Close()
	}
	end := time.Now()
	s.Total = end.Sub(s.Start)

	tr.mu.Lock()
	connected := !tr.gotConn.IsZero()
	if connected && !tr.reused {
		s.Connect = tr.gotConn.Sub(tr.getConn)
	}
	s.Reused = tr.reused
	if !tr.first.IsZero() && s.Status != 0 {
		s.TTFB = tr.first.Sub(s.Start)
		if !tr.wrote.IsZero() && tr.first.After(tr.wrote) {
			s.Waiting = tr.first.Sub(tr.wrote)
		}
	}
	tr.mu.Unlock()

	if err == nil {
		err = readErr
	}
	if err != nil {
		if runCtx.Err() != nil {
			return s, false
		}
		s.Err = err
		switch {
		case isTimeout(err) || errors.Is(ctx.Err(), context.DeadlineExceeded):
			s.Failure = FailTimeout
		case !connected:
			s.Failure = FailConnect
		case errors.Is(err, io.ErrUnexpectedEOF) && s.Status != 0:
			s.Failure = FailLength
			s.Err = fmt.Errorf("body shorter than its Content-Length (%d of %d bytes): %w", s.Bytes, resp.ContentLength, err)
		default:
			s.Failure = FailReceive
		}
		return s, true
	}

	if s.Status >= 200 && s.Status < 300 {
		r.setServer(resp)
		r.check(&s, h)
	}
	return s, true
}

// onlyReader hides any WriterTo so io.CopyBuffer uses our buffer.
type onlyReader struct{ io.Reader }

// check applies the length and sha256 expectations to a complete 2xx response.
func (r *runner) check(s *Sample, h hash.Hash) {
	first := atomic.CompareAndSwapInt64(&r.docLen, -1, s.Bytes)
	switch {
	case r.cfg.ExpectLength > 0 && s.Bytes != r.cfg.ExpectLength:
		s.Failure, s.Err = FailLength, fmt.Errorf("body is %d bytes, expected %d", s.Bytes, r.cfg.ExpectLength)
	case !first && !r.cfg.VariableLength && s.Bytes != atomic.LoadInt64(&r.docLen):
		s.Failure, s.Err = FailLength, fmt.Errorf("body is %d bytes, the first response's %d (accept with VariableLength, -l)", s.Bytes, atomic.LoadInt64(&r.docLen))
	case h != nil && !bytes.Equal(h.Sum(nil), r.wantSum):
		s.Failure, s.Err = FailSHA256, fmt.Errorf("body sha256 %x, expected %x", h.Sum(nil), r.wantSum)
	}
}

func (r *runner) setServer(resp *http.Response) {
	r.mu.Lock()
	if r.server == "" {
		r.server = resp.Header.Get("Server")
	}
	r.mu.Unlock()
}

// noteError keeps the first maxErrors distinct failure messages and logs each once.
func (r *runner) noteError(s Sample) {
	msg := s.Failure.String() + ": " + s.Err.Error()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs) >= maxErrors || slices.Contains(r.errs, msg) {
		return
	}
	r.errs = append(r.errs, msg)
	r.log.Debug("request failed", zap.Stringer("kind", s.Failure), zap.Error(s.Err))
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout())
}
