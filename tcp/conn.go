package tcp

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Conn is one engine connection; it implements net.Conn (and CloseWrite, like
// *net.TCPConn). Safe for concurrent use: one reader and one writer at a time, plus
// Close from anywhere.
type Conn struct {
	s        *Stack
	l        *loop
	e        *endpoint // owned by the loop: only sb, rb and the addresses are touched here
	sb       *sendBuffer
	rb       *recvBuffer
	local    netip.AddrPort
	remote   netip.AddrPort
	listener *Listener // loop-owned: set for accepted connections

	established chan struct{} // closed when the handshake finished or failed (Dial)
	signalled   bool          // loop-owned
	done        chan struct{} // closed when the endpoint is gone
	failMu      sync.Mutex
	failErr     error

	kickPending atomic.Bool
	winLow      atomic.Bool // the advertised window is small: reads should tell the loop
	closed      atomic.Bool
	closeOnce   sync.Once
	rdl, wdl    deadline
	final       []PathBytes // set by the loop before done is closed
}

func newConn(s *Stack, l *loop, e *endpoint) *Conn {
	return &Conn{
		s: s, l: l, e: e, sb: e.sb, rb: e.rb, local: e.local, remote: e.remote,
		established: make(chan struct{}),
		done:        make(chan struct{}),
		rdl:         makeDeadline(),
		wdl:         makeDeadline(),
	}
}

func (c *Conn) setFailure(err error) {
	c.failMu.Lock()
	if c.failErr == nil {
		c.failErr = err
	}
	c.failMu.Unlock()
}

func (c *Conn) failure() error {
	c.failMu.Lock()
	defer c.failMu.Unlock()
	return c.failErr
}

// finished is called by the loop when the endpoint is gone.
func (c *Conn) finished(err error) {
	if err != nil {
		c.setFailure(err)
	}
	select {
	case <-c.done:
	default:
		close(c.done)
	}
}

func (c *Conn) kick() {
	if c.kickPending.CompareAndSwap(false, true) {
		c.l.command(loopCmd{kind: cmdKick, c: c})
	}
}

func (c *Conn) abort() { c.l.command(loopCmd{kind: cmdAbort, c: c}) }

func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// Read reads in-order bytes; io.EOF after the peer's FIN.
func (c *Conn) Read(p []byte) (int, error) {
	if c.closed.Load() {
		return 0, c.opError("read", net.ErrClosed)
	}
	if isClosedChan(c.rdl.wait()) {
		return 0, c.opError("read", errDeadline) // a passed deadline fails even with data there
	}
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, err, ok := c.rb.read(p)
		if ok {
			if n > 0 && c.winLow.Load() {
				c.winLow.Store(false)
				c.kick() // the window grew: the loop decides whether to advertise it
			}
			if err != nil {
				if err == errEOF {
					return n, err
				}
				return n, c.opError("read", err)
			}
			return n, nil
		}
		select {
		case <-c.rb.ready:
		case <-c.rdl.wait():
			return 0, c.opError("read", errDeadline)
		}
		if c.closed.Load() {
			return 0, c.opError("read", net.ErrClosed)
		}
	}
}

// Write queues p for sending, blocking while the send buffer is full.
func (c *Conn) Write(p []byte) (int, error) {
	if c.closed.Load() {
		return 0, c.opError("write", net.ErrClosed)
	}
	if isClosedChan(c.wdl.wait()) {
		return 0, c.opError("write", errDeadline)
	}
	written := 0
	for {
		n, err := c.sb.write(p[written:])
		written += n
		if n > 0 {
			c.kick()
		}
		if err != nil {
			return written, c.opError("write", err)
		}
		if written == len(p) {
			return written, nil
		}
		select {
		case <-c.sb.space:
		case <-c.wdl.wait():
			return written, c.opError("write", errDeadline)
		}
		if c.closed.Load() {
			return written, c.opError("write", net.ErrClosed)
		}
	}
}

// CloseWrite sends FIN after the data already written (half-close).
func (c *Conn) CloseWrite() error {
	if c.closed.Load() {
		return c.opError("close", net.ErrClosed)
	}
	c.sb.close(nil)
	c.kick()
	return nil
}

// Close closes the connection: FIN after pending data, or a reset when received data
// was left unread.
func (c *Conn) Close() error {
	err := c.opError("close", net.ErrClosed)
	c.closeOnce.Do(func() {
		err = nil
		c.closed.Store(true)
		c.rb.signal()
		select {
		case c.sb.space <- struct{}{}:
		default:
		}
		c.l.command(loopCmd{kind: cmdClose, c: c})
	})
	return err
}

// Done is closed when the connection is completely gone (closed, reset or timed out);
// Err then says why (nil for an orderly close).
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err is the reason the connection ended, or nil.
func (c *Conn) Err() error { return c.failure() }

// LocalAddr is a *net.TCPAddr (SOCKS servers need the concrete type).
func (c *Conn) LocalAddr() net.Addr { return net.TCPAddrFromAddrPort(c.local) }

// RemoteAddr is a *net.TCPAddr.
func (c *Conn) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(c.remote) }

func (c *Conn) SetDeadline(t time.Time) error {
	c.rdl.set(t)
	c.wdl.set(t)
	return nil
}

func (c *Conn) SetReadDeadline(t time.Time) error  { c.rdl.set(t); return nil }
func (c *Conn) SetWriteDeadline(t time.Time) error { c.wdl.set(t); return nil }

var _ net.Conn = (*Conn)(nil)

// Listener accepts engine connections on one port. Safe for concurrent use.
type Listener struct {
	s       *Stack
	port    uint16
	queue   chan *Conn
	pending atomic.Int32 // handshakes in progress
	verify  func(src, dst netip.AddrPort, payload []byte) bool
	done    chan struct{}
	once    sync.Once
}

// Accept waits for the next connection whose handshake completed.
func (ln *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-ln.queue:
		return c, nil
	case <-ln.done:
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: ln.Addr(), Err: net.ErrClosed}
	}
}

// offer hands an established connection to Accept; false when the backlog is full.
func (ln *Listener) offer(c *Conn) bool {
	if ln.isClosed() {
		return false
	}
	select {
	case ln.queue <- c:
		return true
	default:
		ln.s.drops.backlog.Add(1)
		return false
	}
}

func (ln *Listener) isClosed() bool { return isClosedChan(ln.done) }

// Close stops listening; connections not yet accepted are reset.
func (ln *Listener) Close() error {
	ln.s.mu.Lock()
	ln.closeLocked()
	ln.s.mu.Unlock()
	for {
		select {
		case c := <-ln.queue:
			c.abort()
		default:
			return nil
		}
	}
}

func (ln *Listener) closeLocked() {
	ln.once.Do(func() {
		close(ln.done)
		if ln.s.listeners[ln.port] == ln {
			delete(ln.s.listeners, ln.port)
		}
	})
}

// Addr is the listening address (*net.TCPAddr).
func (ln *Listener) Addr() net.Addr {
	return net.TCPAddrFromAddrPort(netip.AddrPortFrom(ln.s.cfg.Addr, ln.port))
}

var _ net.Listener = (*Listener)(nil)

// PathBytes is one path's part in a connection.
type PathBytes struct {
	Name     string
	Sent     uint64 // payload bytes sent on the path, retransmissions included
	Received uint64 // payload bytes that arrived on the path, duplicates included
}

// Paths returns the connection's per-path byte counts, in the stack's path order. Safe
// for concurrent use; while the connection lives it asks its loop (one round trip), after
// it is gone it returns the final counts.
func (c *Conn) Paths() []PathBytes {
	ch := make(chan []PathBytes, 1)
	c.l.command(loopCmd{kind: cmdPaths, c: c, paths: ch})
	select {
	case p := <-ch:
		return p
	case <-c.done:
		return append([]PathBytes(nil), c.final...)
	}
}

// pathBytes is the endpoint's per-path byte counts (loop-owned).
func (e *endpoint) pathBytes() []PathBytes {
	out := make([]PathBytes, len(e.paths))
	for p := range e.paths {
		out[p] = PathBytes{Name: e.cfg.paths[p].Name, Sent: e.paths[p].txBytes, Received: e.paths[p].rxPayload}
	}
	return out
}
