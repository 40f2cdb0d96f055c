package socks

// The relay: two copy loops, one per direction.
//
//	a.r --copy--> b.c      (EOF on a: b.c.CloseWrite, keep copying the other way)
//	a.c <--copy-- b.r      (EOF on b: a.c.CloseWrite)
//
// Both loops ended: close both conns. Any error other than EOF (reset, write failure,
// idle timeout, Close from Shutdown) closes both conns at once, which ends the other loop.

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

const relayBufSize = 32 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, relayBufSize); return &b }}

// closeWriter is implemented by conns that can half-close (*net.TCPConn, the engine's
// conns, the fronts' wrappers).
type closeWriter interface {
	CloseWrite() error
}

// end is one side of a relay: r is where its bytes are read (a bufio.Reader that may
// already hold bytes, or the conn itself), c the conn for writes, deadlines and close.
type end struct {
	r io.Reader
	c net.Conn
}

// relay copies a->b and b->a until both directions have ended, then closes both conns.
// aToB and bToA count the bytes written (either may be nil). idle > 0 aborts the relay
// when neither direction has moved a byte for idle. It returns the first error other
// than EOF, if any.
func relay(a, b end, idle time.Duration, aToB, bToA *atomic.Uint64) error {
	var last atomic.Int64 // UnixNano of the last byte moved in either direction
	last.Store(time.Now().UnixNano())
	// An error in either direction (a reset, a flow that timed out) ends both at once:
	// the other direction may be blocked reading a peer that has nothing more to say.
	errc := make(chan error, 2)
	go func() { errc <- copyHalf(a.c, b, idle, &last, bToA) }()
	go func() { errc <- copyHalf(b.c, a, idle, &last, aToB) }()
	var err error
	for range 2 {
		if e := <-errc; e != nil {
			if err == nil {
				err = e
			}
			a.c.Close()
			b.c.Close()
		}
	}
	a.c.Close()
	b.c.Close()
	return err
}

// copyHalf copies src to dst until src's EOF (then half-closes dst) or an error.
func copyHalf(dst net.Conn, src end, idle time.Duration, last *atomic.Int64, count *atomic.Uint64) error {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		if idle > 0 {
			src.c.SetReadDeadline(time.Now().Add(idle))
		}
		nr, rerr := src.r.Read(buf)
		if nr > 0 {
			last.Store(time.Now().UnixNano())
			if idle > 0 {
				dst.SetWriteDeadline(time.Now().Add(idle))
			}
			nw, werr := dst.Write(buf[:nr])
			if count != nil && nw > 0 {
				count.Add(uint64(nw))
			}
			if werr != nil {
				return werr
			}
			if nw != nr {
				return io.ErrShortWrite
			}
		}
		if rerr == nil {
			continue
		}
		if errors.Is(rerr, io.EOF) {
			if cw, ok := dst.(closeWriter); ok {
				// An error here means the peer is gone already; the other direction
				// finds out by itself.
				cw.CloseWrite()
				return nil
			}
			return dst.Close() // cannot half-close: the peer sees EOF; the other way ends too
		}
		if idle > 0 && isTimeout(rerr) && time.Since(time.Unix(0, last.Load())) < idle {
			continue // this direction is quiet but the other one is moving
		}
		return rerr
	}
}
