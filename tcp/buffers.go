package tcp

import (
	"sync"
	"time"
)

// sendBuffer holds a connection's unacknowledged and unsent bytes in a ring. The
// application's Write copies in at the end; the connection's loop takes ranges for
// segments and drops acknowledged bytes from the front. The ring grows (doubling, up to
// limit) only when it is full, so a long transfer neither reallocates nor moves bytes:
// an earlier append-and-compact buffer churned 143 MB of garbage per 30 MB sent, and
// the collector's pauses stalled the receive loop for hundreds of milliseconds.
//
// Buffer-sharing rule: Write only copies into free space, and growing copies into a new
// array (old slices keep pointing at the old one); only the loop consumes. A range the
// loop takes stays valid until the loop next calls consume. A range that wraps round
// the end of the ring comes back as a copy in one of a few scratch buffers, which stay
// valid for the rest of the loop's iteration (a batch holds at most two such ranges).
type sendBuffer struct {
	mu     sync.Mutex // guards the fields below
	ring   []byte
	start  int  // index in ring of the first held byte
	n      int  // bytes held
	limit  int  // Write blocks while n >= limit
	soft   int  // ... or while n >= soft: the loop's running allowance (see setSoft)
	closed bool // no more writes (CloseWrite, Close or reset)
	// pressed: a write found no room for all it had (the application has more to send
	// than the buffer shows; Linux's SOCK_NOSPACE). Cleared by a write that fit and
	// left the buffer under half full (the application no longer keeps it full).
	pressed bool
	err     error
	space   chan struct{} // capacity 1: signalled when bytes were consumed or closed

	scratch  [4][]byte // loop-owned: copies of ranges that wrap
	scratchI int
}

const sendBufferMin = 64 << 10

// sendAheadMin is the least the application may write beyond what has been sent: the
// allowance before the paths' windows say more (see endpoint.sendAllowance).
const sendAheadMin = 256 << 10

func newSendBuffer(limit int) *sendBuffer {
	return &sendBuffer{limit: limit, soft: min(limit, sendAheadMin), space: make(chan struct{}, 1)}
}

// setSoft sets how many bytes the buffer may hold for now (at most limit). The loop
// keeps it at what is outstanding plus a few windows of unsent data, so that a fast
// source does not pour the whole limit in at once: filling 16 MiB in the first few
// hundred milliseconds of a flow (ring growth, copying, the collector) stalled the
// connection's loop for 40-50 ms at a time, just when startup measures the paths, and
// startup ended at a fifth of the path rates. Raising it wakes a blocked writer.
func (b *sendBuffer) setSoft(n int) {
	b.mu.Lock()
	n = min(max(n, sendAheadMin), b.limit)
	grew := n > b.soft
	b.soft = n
	b.mu.Unlock()
	if grew {
		select {
		case b.space <- struct{}{}:
		default:
		}
	}
}

// write copies as much of p as fits and returns how many bytes it took.
func (b *sendBuffer) write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	if b.closed {
		return 0, errWriteClosed
	}
	room := min(b.limit, b.soft) - b.n
	if len(p) > room {
		b.pressed = true
	} else if 2*(b.n+len(p)) < min(b.limit, b.soft) {
		b.pressed = false
	}
	if room <= 0 {
		return 0, nil
	}
	if len(p) > room {
		p = p[:room]
	}
	if b.n+len(p) > len(b.ring) {
		b.grow(b.n + len(p))
	}
	end := (b.start + b.n) % len(b.ring)
	k := copy(b.ring[end:], p)
	copy(b.ring, p[k:])
	b.n += len(p)
	return len(p), nil
}

// grow makes the ring at least need bytes long (doubling, capped at limit) and lays the
// held bytes out from index 0. b.mu is held.
func (b *sendBuffer) grow(need int) {
	size := max(len(b.ring), sendBufferMin)
	for size < need {
		size *= 2
	}
	size = min(size, max(b.limit, need))
	ring := make([]byte, size)
	if b.n > 0 {
		k := copy(ring, b.ring[b.start:min(b.start+b.n, len(b.ring))])
		copy(ring[k:], b.ring[:b.n-k])
	}
	b.ring, b.start = ring, 0
}

// lengthPressed is length and whether the application's last write did not fit: it
// has more to send than the buffer shows (one lock for both, on the output path).
func (b *sendBuffer) lengthPressed() (int, bool) {
	b.mu.Lock()
	n, pressed := b.n, b.pressed && !b.closed
	b.mu.Unlock()
	return n, pressed
}

// length is the number of bytes held (unacked plus unsent).
func (b *sendBuffer) length() int {
	b.mu.Lock()
	n := b.n
	b.mu.Unlock()
	return n
}

// slice returns the bytes [off, off+n) counted from the first held byte (see the
// buffer-sharing rule for how long it stays valid). Loop only.
func (b *sendBuffer) slice(off, n int) []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	i := (b.start + off) % len(b.ring)
	if i+n <= len(b.ring) {
		return b.ring[i : i+n : i+n]
	}
	s := b.scratch[b.scratchI][:0]
	b.scratchI = (b.scratchI + 1) % len(b.scratch)
	s = append(s, b.ring[i:]...)
	s = append(s, b.ring[:n-(len(b.ring)-i)]...)
	b.scratch[(b.scratchI+len(b.scratch)-1)%len(b.scratch)] = s
	return s[:n:n]
}

// consume drops n bytes from the front (they were acknowledged).
func (b *sendBuffer) consume(n int) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	n = min(n, b.n)
	b.n -= n
	if b.n == 0 {
		b.start = 0
	} else {
		b.start = (b.start + n) % len(b.ring)
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
