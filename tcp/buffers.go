package tcp

import (
	"sync"
	"time"
)

// sendBuffer holds a connection's unacknowledged and unsent bytes. The application's
// Write appends at the end; the connection's loop reads ranges for segments and drops
// acknowledged bytes from the front.
//
// Buffer-sharing rule: Write only ever appends (which never moves bytes the loop has
// sliced: a reallocation leaves old slices pointing at the old array), and only the loop
// drops or compacts. Payload slices the loop takes are used before the loop next calls
// consume, so they stay valid.
type sendBuffer struct {
	mu     sync.Mutex // guards the fields below
	buf    []byte     // buf[head:] are the bytes from sequence number base on
	head   int
	limit  int  // Write blocks while len(buf)-head >= limit
	closed bool // no more writes (CloseWrite, Close or reset)
	err    error
	space  chan struct{} // capacity 1: signalled when bytes were consumed or closed
}

func newSendBuffer(limit int) *sendBuffer {
	return &sendBuffer{limit: limit, space: make(chan struct{}, 1)}
}

// write appends as much of p as fits and returns how many bytes it took.
func (b *sendBuffer) write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	if b.closed {
		return 0, errWriteClosed
	}
	room := b.limit - (len(b.buf) - b.head)
	if room <= 0 {
		return 0, nil
	}
	if len(p) > room {
		p = p[:room]
	}
	if b.buf == nil {
		b.buf = make([]byte, 0, min(b.limit, max(len(p), 64<<10)))
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

// length is the number of bytes held (unacked plus unsent).
func (b *sendBuffer) length() int {
	b.mu.Lock()
	n := len(b.buf) - b.head
	b.mu.Unlock()
	return n
}

// slice returns the bytes [off, off+n) counted from the first held byte. The slice is
// valid until the next consume.
func (b *sendBuffer) slice(off, n int) []byte {
	b.mu.Lock()
	p := b.buf[b.head+off : b.head+off+n : b.head+off+n]
	b.mu.Unlock()
	return p
}

// consume drops n bytes from the front (they were acknowledged).
func (b *sendBuffer) consume(n int) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	b.head += n
	if b.head == len(b.buf) {
		b.buf, b.head = b.buf[:0], 0
	} else if b.head > cap(b.buf)/2 {
		k := copy(b.buf, b.buf[b.head:])
		b.buf, b.head = b.buf[:k], 0
	}
	b.mu.Unlock()
	select {
	case b.space <- struct{}{}:
	default:
	}
}

// close marks the write side closed; with err non-nil, writers get err.
func (b *sendBuffer) close(err error) {
	b.mu.Lock()
	b.closed = true
	if err != nil && b.err == nil {
		b.err = err
	}
	b.mu.Unlock()
	select {
	case b.space <- struct{}{}:
	default:
	}
}

func (b *sendBuffer) isClosed() bool {
	b.mu.Lock()
	c := b.closed
	b.mu.Unlock()
	return c
}

// recvBuffer holds in-order bytes the application has not read yet.
type recvBuffer struct {
	mu    sync.Mutex // guards the fields below
	buf   []byte
	head  int
	nread uint64        // bytes the application has read so far
	eof   bool          // peer's FIN reached: Read returns io.EOF once drained
	err   error         // connection failed: Read returns it
	ready chan struct{} // capacity 1: signalled when data, EOF or an error arrived
}

func newRecvBuffer() *recvBuffer { return &recvBuffer{ready: make(chan struct{}, 1)} }

func (b *recvBuffer) signal() {
	select {
	case b.ready <- struct{}{}:
	default:
	}
}

// push appends in-order bytes.
func (b *recvBuffer) push(p []byte) {
	if len(p) == 0 {
		return
	}
	b.mu.Lock()
	if b.head > 0 && b.head == len(b.buf) {
		b.buf, b.head = b.buf[:0], 0
	} else if b.head > cap(b.buf)/2 && len(b.buf)+len(p) > cap(b.buf) {
		k := copy(b.buf, b.buf[b.head:])
		b.buf, b.head = b.buf[:k], 0
	}
	b.buf = append(b.buf, p...)
	b.mu.Unlock()
	b.signal()
}

// pushFunc lets f append in-order bytes directly to the buffer (no intermediate copy)
// and returns how many it appended.
func (b *recvBuffer) pushFunc(f func(dst []byte) []byte) int {
	b.mu.Lock()
	if b.head > 0 && b.head == len(b.buf) {
		b.buf, b.head = b.buf[:0], 0
	} else if b.head > cap(b.buf)/2 {
		k := copy(b.buf, b.buf[b.head:])
		b.buf, b.head = b.buf[:k], 0
	}
	before := len(b.buf)
	b.buf = f(b.buf)
	n := len(b.buf) - before
	b.mu.Unlock()
	if n > 0 {
		b.signal()
	}
	return n
}

// consumed is how many bytes the application has read in all.
func (b *recvBuffer) consumed() uint64 {
	b.mu.Lock()
	n := b.nread
	b.mu.Unlock()
	return n
}

// length is the number of unread bytes.
func (b *recvBuffer) length() int {
	b.mu.Lock()
	n := len(b.buf) - b.head
	b.mu.Unlock()
	return n
}

// read copies unread bytes into p. It returns (0, nil, false) when nothing is there yet.
func (b *recvBuffer) read(p []byte) (n int, err error, done bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.head < len(b.buf) {
		n = copy(p, b.buf[b.head:])
		b.head += n
		b.nread += uint64(n)
		return n, nil, true
	}
	if b.err != nil {
		return 0, b.err, true
	}
	if b.eof {
		return 0, errEOF, true
	}
	return 0, nil, false
}

func (b *recvBuffer) setEOF() {
	b.mu.Lock()
	b.eof = true
	b.mu.Unlock()
	b.signal()
}

func (b *recvBuffer) setErr(err error) {
	b.mu.Lock()
	if b.err == nil {
		b.err = err
	}
	b.mu.Unlock()
	b.signal()
}

// deadline is a settable point in time with a channel that is closed once it passes
// (the net.Pipe pattern). Safe for concurrent use.
type deadline struct {
	mu     sync.Mutex // guards the fields below
	timer  *time.Timer
	cancel chan struct{} // closed when the deadline passes
}

func makeDeadline() deadline { return deadline{cancel: make(chan struct{})} }

// set arms the deadline; the zero time disarms it.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer fired and closed cancel
	}
	d.timer = nil
	closed := isClosedChan(d.cancel)
	if t.IsZero() {
		if closed {
			d.cancel = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed {
			d.cancel = make(chan struct{})
		}
		c := d.cancel
		d.timer = time.AfterFunc(dur, func() { close(c) })
		return
	}
	if !closed {
		close(d.cancel)
	}
}

func (d *deadline) wait() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}

func isClosedChan(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
