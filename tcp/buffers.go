package tcp

import (
	"sync"
	"sync/atomic"
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

// Receive path, by ownership (issue 11: at most one copy between the capture ring and
// the reader):
//
//	Stack.Input: payload copied once, out of the link's buffer (the capture ring) into a
//	pooled rxBuf ──► loop inq ──► endpoint.input: in order? recvBuffer.push takes the
//	rxBuf itself (no copy) ──► Conn.Read copies into the application's buffer and hands
//	the rxBuf back to its pool.
//
// Out-of-order bytes are copied into the reorder queue (the loop's rxBuf goes back to the
// pool at once) and from there into a buffer the recvBuffer owns once the gap fills;
// small segments are copied too (see push) so that a slow reader cannot pin much more
// memory than the bytes it has not read.

// rxBuf is a pooled buffer holding one arriving segment's payload. Owner: the loop from
// Stack.Input until the segment is handled; then either the recvBuffer (which hands it
// back once every byte was read) or, if the endpoint did not take it, the loop hands it
// back at once. A buffer that is never handed back is left to the collector.
type rxBuf struct {
	b    []byte
	pool *sync.Pool // where it goes back; nil: owned by a recvBuffer (copies)
	refs int        // own buffers: how many chunks refer to it (under the recvBuffer's mu)
}

const (
	rxClassMin = 2048 // smallest pooled size: one full segment
	rxClasses  = 6    // 2 KiB .. 64 KiB (GRO'd packets from a local kernel peer)
)

var rxPools [rxClasses]sync.Pool

func init() {
	for i := range rxPools {
		size := rxClassMin << i
		p := &rxPools[i]
		p.New = func() any { return &rxBuf{b: make([]byte, 0, size), pool: p} }
	}
}

// getRxBuf returns a pooled buffer with room for n bytes (length 0).
func getRxBuf(n int) *rxBuf {
	for i := range rxPools {
		if n <= rxClassMin<<i {
			return rxPools[i].Get().(*rxBuf)
		}
	}
	return &rxBuf{b: make([]byte, 0, n)} // larger than any IPv4 packet: never pooled
}

func (r *rxBuf) release() {
	if r.pool != nil {
		r.b = r.b[:0]
		r.pool.Put(r)
	}
}

// rbChunk is a run of unread bytes: buf.b[off:end].
type rbChunk struct {
	buf      *rxBuf
	off, end int
}

const (
	rbOwnFirst = 4 << 10   // the first own buffer for copied bytes; each new one doubles ...
	rbOwnSize  = 64 << 10  // ... up to this, so a short flow holds little
	rbOwnKeep  = 256 << 10 // own buffers larger than this are left to the collector
	rbOwnFree  = 2         // own buffers kept for reuse
)

// recvBuffer holds in-order bytes the application has not read yet, as a ring of chunks,
// each a run of bytes in a buffer: rxBufs taken from the loop (no copy), or the
// recvBuffer's own buffers, filled in order, for bytes it was handed to copy. Nothing
// moves held bytes: push appends a chunk (or extends the last one), read consumes from
// the front and hands emptied buffers back. At steady state nothing is allocated.
//
// Memory: a taken rxBuf is at least half full (see push); own buffers are filled and
// read in order, so all but the oldest and the one being filled are full of unread
// bytes. What the buffer holds is at most about twice its unread bytes plus two own
// buffers.
type recvBuffer struct {
	mu    sync.Mutex    // guards the fields below, up to offered
	ring  []rbChunk     // power-of-two length
	head  int           // index of the first chunk
	n     int           // chunks held
	bytes atomic.Int64  // unread bytes (changed under mu, read without it)
	cur   *rxBuf        // own buffer being filled (nil: none yet)
	size  int           // size of the next own buffer made
	free  []*rxBuf      // own buffers ready for reuse
	nread atomic.Uint64 // bytes the application has read so far (changed under mu)
	eof   bool          // peer's FIN reached: Read returns io.EOF once drained
	err   error         // connection failed: Read returns it
	ready chan struct{} // capacity 1: signalled when data, EOF or an error arrived

	// Loop-owned (push runs on the loop): the buffer of the segment being input, which
	// push may take instead of copying (see offer).
	offered *rxBuf
	took    bool
}

func newRecvBuffer() *recvBuffer { return &recvBuffer{ready: make(chan struct{}, 1)} }

func (b *recvBuffer) signal() {
	select {
	case b.ready <- struct{}{}:
	default:
	}
}

// offer lends buf, the buffer holding the payload of the segment the loop is about to
// input: a push of bytes inside it takes the buffer instead of copying. withdraw ends
// the offer and reports whether the buffer was taken (then the recvBuffer owns it;
// otherwise the loop still does). Loop only.
func (b *recvBuffer) offer(buf *rxBuf) { b.offered, b.took = buf, false }

func (b *recvBuffer) withdraw() bool {
	t := b.took
	b.offered, b.took = nil, false
	return t
}

// within returns where p starts in o.b, or -1 if p is not a slice of it (p shares the
// end of o's array: subslices of a payload keep its capacity's end).
func within(o *rxBuf, p []byte) int {
	if o == nil || len(p) == 0 || cap(p) > cap(o.b) {
		return -1
	}
	full, pf := o.b[:cap(o.b)], p[:cap(p)]
	if &full[len(full)-1] != &pf[len(pf)-1] {
		return -1
	}
	off := cap(o.b) - cap(p)
	if off+len(p) > len(o.b) {
		return -1
	}
	return off
}

// push appends in-order bytes. When p lies in the offered buffer and fills at least half
// of it, the buffer is taken as it is; otherwise p is copied into an own buffer, so the
// memory held stays within about twice the unread bytes whatever the segment sizes.
func (b *recvBuffer) push(p []byte) {
	if len(p) == 0 {
		return
	}
	b.mu.Lock()
	if off := within(b.offered, p); off >= 0 && 2*len(p) >= cap(b.offered.b) {
		b.add(rbChunk{buf: b.offered, off: off, end: off + len(p)})
		b.took, b.offered = true, nil
	} else {
		if b.cur == nil || len(b.cur.b)+len(p) > cap(b.cur.b) {
			b.newCur(len(p))
		}
		start := len(b.cur.b)
		b.cur.b = append(b.cur.b, p...)
		b.addOwn(start)
	}
	was := b.bytes.Add(int64(len(p))) - int64(len(p))
	b.mu.Unlock()
	if was == 0 {
		// A reader waits only after finding the buffer empty under mu; the push that
		// ended that emptiness wakes it, later ones need not.
		b.signal()
	}
}

// pushFunc lets f append in-order bytes directly to an own buffer (no intermediate
// copy) and returns how many it appended.
func (b *recvBuffer) pushFunc(f func(dst []byte) []byte) int {
	b.mu.Lock()
	if b.cur == nil || len(b.cur.b) >= rbOwnSize/2 {
		b.newCur(0)
	}
	start := len(b.cur.b)
	b.cur.b = f(b.cur.b) // may grow cur: chunks refer to it by offsets, so that is fine
	n := len(b.cur.b) - start
	was := int64(-1)
	if n > 0 {
		b.addOwn(start)
		was = b.bytes.Add(int64(n)) - int64(n)
	}
	b.mu.Unlock()
	if was == 0 {
		b.signal()
	}
	return n
}

// newCur starts a new own buffer with room for n bytes. b.mu is held.
func (b *recvBuffer) newCur(n int) {
	if b.cur != nil && b.cur.refs == 0 {
		b.recycle(b.cur)
	}
	b.cur = nil
	if k := len(b.free); k > 0 && cap(b.free[k-1].b) >= n {
		b.cur, b.free[k-1] = b.free[k-1], nil
		b.free = b.free[:k-1]
		return
	}
	b.size = min(max(2*b.size, rbOwnFirst), rbOwnSize)
	b.cur = &rxBuf{b: make([]byte, 0, max(b.size, n))}
}

// addOwn records the bytes of cur from start on as unread: it extends the last chunk
// when that ends right there in cur, else adds a chunk. b.mu is held.
func (b *recvBuffer) addOwn(start int) {
	if b.n > 0 {
		if t := &b.ring[(b.head+b.n-1)&(len(b.ring)-1)]; t.buf == b.cur && t.end == start {
			t.end = len(b.cur.b)
			return
		}
	}
	b.cur.refs++
	b.add(rbChunk{buf: b.cur, off: start, end: len(b.cur.b)})
}

// add appends a chunk, doubling the ring when it is full. b.mu is held.
func (b *recvBuffer) add(c rbChunk) {
	if b.n == len(b.ring) {
		ring := make([]rbChunk, max(16, 2*len(b.ring)))
		for i := 0; i < b.n; i++ {
			ring[i] = b.ring[(b.head+i)&(len(b.ring)-1)]
		}
		b.ring, b.head = ring, 0
	}
	b.ring[(b.head+b.n)&(len(b.ring)-1)] = c
	b.n++
}

// done hands back the buffer of a chunk that has been read: a taken rxBuf to its pool;
// an own buffer, once no chunk refers to it, to the free list (or, when it is still
// being filled, it starts again from its beginning). b.mu is held.
func (b *recvBuffer) done(buf *rxBuf) {
	if buf.pool != nil {
		buf.release()
		return
	}
	if buf.refs--; buf.refs > 0 {
		return
	}
	if buf == b.cur {
		buf.b = buf.b[:0]
		return
	}
	b.recycle(buf)
}

// recycle keeps an own buffer no chunk refers to for reuse. b.mu is held.
func (b *recvBuffer) recycle(buf *rxBuf) {
	if len(b.free) < rbOwnFree && cap(buf.b) <= rbOwnKeep {
		buf.b = buf.b[:0]
		b.free = append(b.free, buf)
	}
}

// consumed is how many bytes the application has read in all.
func (b *recvBuffer) consumed() uint64 { return b.nread.Load() }

// length is the number of unread bytes.
func (b *recvBuffer) length() int { return int(b.bytes.Load()) }

// read copies unread bytes into p. It returns (0, nil, false) when nothing is there yet.
func (b *recvBuffer) read(p []byte) (n int, err error, done bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.bytes.Load() > 0 {
		for n < len(p) && b.n > 0 {
			c := &b.ring[b.head]
			k := copy(p[n:], c.buf.b[c.off:c.end])
			c.off += k
			n += k
			if c.off == c.end {
				b.done(c.buf)
				*c = rbChunk{}
				b.head = (b.head + 1) & (len(b.ring) - 1)
				b.n--
			}
		}
		b.bytes.Add(-int64(n))
		b.nread.Add(uint64(n))
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
