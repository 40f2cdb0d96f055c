package tcp

import (
	"container/heap"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"mpath/tcp/seqnum"
)

type cmdKind uint8

const (
	cmdDial   cmdKind = iota // register c's endpoint and send its SYN
	cmdKick                  // the application wrote, read, or closed its write side
	cmdClose                 // the application closed the connection
	cmdAbort                 // reset the connection (Dial cancelled, deadline policy)
	cmdStats                 // fill in a snapshot
	cmdHealth                // path health changed: every endpoint re-syncs (and may give up)
	cmdPaths                 // send c's per-path byte counts on paths
)

type loopCmd struct {
	kind    cmdKind
	c       *Conn
	synData bool
	stats   *statsReq
	paths   chan []PathBytes // cmdPaths: capacity 1
}

// loop is one event loop: it owns a shard of the stack's endpoints. Other goroutines
// hand it segments and commands through inq/cmds plus the notify channel.
type loop struct {
	s *Stack

	mu      sync.Mutex // guards inq, inBufs and cmds
	inq     []Segment  // arrived segments
	inBufs  []*rxBuf   // inBufs[i] holds inq[i]'s payload (nil: none); see buffers.go
	inBytes int        // payload bytes in inq (bounded by Config.InputQueue)
	cmds    []loopCmd
	notify  chan struct{} // capacity 1
	runs    atomic.Uint64 // loop iterations (tests: a spinning timer shows here)

	// Owned by run.
	eps       map[flowKey]*endpoint
	conns     map[*endpoint]*Conn
	timers    timerHeap
	batches   [][]Segment
	dirty     []*endpoint
	inSpare   []Segment
	bufSpare  []*rxBuf
	cmdSpare  []loopCmd
	rstBucket tokenBucket
}

// rstRate and rstBurst bound the resets a loop sends in answer to segments for no
// connection (like Linux's tcp_challenge_ack_limit for challenge ACKs): they go to
// whatever source a segment claims, so they must not become a reflector.
const (
	rstRate  = 100
	rstBurst = 50
)

// tokenBucket is a rate limiter driven by the caller's clock. The zero value starts full.
type tokenBucket struct {
	tokens  float64
	last    time.Time
	started bool
}

func (b *tokenBucket) take(now time.Time) bool {
	if !b.started {
		b.started, b.tokens, b.last = true, rstBurst, now
	}
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.tokens+d.Seconds()*rstRate, rstBurst)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func newLoop(s *Stack) *loop {
	return &loop{
		s:       s,
		notify:  make(chan struct{}, 1),
		eps:     make(map[flowKey]*endpoint),
		conns:   make(map[*endpoint]*Conn),
		batches: make([][]Segment, len(s.cfg.Paths)),
	}
}

func (l *loop) wake() {
	select {
	case l.notify <- struct{}{}:
	default:
	}
}

// copyPayload copies seg's payload into a pooled buffer (nil when there is none): the
// only copy of in-order bytes before Read. The caller owns the buffer.
func copyPayload(seg *Segment) *rxBuf {
	if len(seg.Payload) == 0 {
		return nil
	}
	buf := getRxBuf(len(seg.Payload))
	buf.b = append(buf.b, seg.Payload...)
	return buf
}

// enqueueLocked appends seg to the loop's input queue with its payload in buf, which the
// loop owns from now on. l.mu is held.
func (l *loop) enqueueLocked(seg *Segment, buf *rxBuf) {
	l.inq = append(l.inq, *seg)
	if buf != nil {
		l.inq[len(l.inq)-1].Payload = buf.b
	} else {
		l.inq[len(l.inq)-1].Payload = nil
	}
	l.inBufs = append(l.inBufs, buf)
}

// inqMaxSegs bounds the segments waiting in a loop's input queue (with the byte bound
// Config.InputQueue).
const inqMaxSegs = 1 << 16

// admitLocked reports whether a segment with n payload bytes fits the loop's input
// queue, and counts its bytes when it does. l.mu is held.
func (l *loop) admitLocked(n int) bool {
	if len(l.inq) >= inqMaxSegs || l.inBytes+n > l.s.cfg.InputQueue {
		return false
	}
	l.inBytes += n
	return true
}

func (l *loop) command(c loopCmd) {
	l.mu.Lock()
	l.cmds = append(l.cmds, c)
	l.mu.Unlock()
	l.wake()
}

func (l *loop) run() {
	defer l.s.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-l.notify:
		case <-timer.C:
		case <-l.s.closed:
			l.shutdown()
			return
		}
		l.runs.Add(1)
		now := time.Now()
		l.mu.Lock()
		in, bufs, cmds := l.inq, l.inBufs, l.cmds
		l.inq, l.inBufs, l.cmds = l.inSpare[:0], l.bufSpare[:0], l.cmdSpare[:0]
		l.inBytes = 0
		l.mu.Unlock()

		for i := range cmds {
			l.handleCmd(now, &cmds[i])
		}
		for i := range in {
			if !l.handleSegment(now, &in[i], bufs[i]) && bufs[i] != nil {
				bufs[i].release()
			}
		}
		for l.timers.Len() > 0 && !l.timers[0].at.After(now) {
			t := heap.Pop(&l.timers).(timerEntry)
			if t.e.timerAt.Equal(t.at) && !t.e.done {
				t.e.timerAt = time.Time{}
				t.e.timerRan = true
				t.e.timer(now)
				l.markDirty(t.e)
			}
		}
		for _, e := range l.dirty {
			l.finishEndpoint(now, e)
		}
		l.dirty = l.dirty[:0]
		for p := range l.batches {
			if len(l.batches[p]) > 0 {
				l.s.send(p, l.batches[p])
				clear(l.batches[p])
				l.batches[p] = l.batches[p][:0]
			}
		}
		clear(in)
		clear(bufs)
		clear(cmds)
		l.inSpare, l.bufSpare, l.cmdSpare = in[:0], bufs[:0], cmds[:0]

		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		for l.timers.Len() > 0 {
			t := l.timers[0]
			if t.e.timerAt.Equal(t.at) && !t.e.done {
				timer.Reset(max(t.at.Sub(time.Now()), 0))
				break
			}
			heap.Pop(&l.timers)
		}
	}
}

func (l *loop) markDirty(e *endpoint) {
	if !e.dirty {
		e.dirty = true
		l.dirty = append(l.dirty, e)
	}
}

func (l *loop) handleCmd(now time.Time, cmd *loopCmd) {
	c := cmd.c
	switch cmd.kind {
	case cmdStats:
		l.fillStats(cmd.stats)
		return
	case cmdPaths:
		cmd.paths <- c.e.pathBytes()
		return
	case cmdHealth:
		for e := range l.conns {
			if !e.done {
				l.markDirty(e)
			}
		}
		return
	case cmdDial:
		e := c.e
		l.eps[keyOf(e.local, e.remote)] = e
		l.conns[e] = c
		e.connect(now, cmd.synData)
		l.markDirty(e)
		return
	}
	e := c.e
	if _, ok := l.conns[e]; !ok {
		return // already finished
	}
	switch cmd.kind {
	case cmdKick:
		c.kickPending.Store(false)
	case cmdClose:
		e.appClosed, e.readClosed = true, true
		switch {
		case e.state == stateSynSent || e.state == stateSynRcvd && c.listener == nil:
			e.abortReason = "closed during the handshake"
			e.abort(now)
		case e.rb.length() > 0:
			// Unread data on close: reset, so the peer knows it was not consumed.
			e.abortReason = "closed with unread data"
			e.abort(now)
		default:
			e.closeWrite()
			if e.state == stateFinWait2 {
				e.finWaitAt = now.Add(e.cfg.finTimeout)
			}
		}
	case cmdAbort:
		e.abortReason = "aborted by the application"
		e.abort(now)
	}
	l.markDirty(e)
}

// handleSegment processes one arrived segment whose payload lives in buf (may be nil)
// and reports whether a receive buffer took buf (else the caller hands it back).
func (l *loop) handleSegment(now time.Time, seg *Segment, buf *rxBuf) (taken bool) {
	k := keyOf(seg.Dst, seg.Src)
	e := l.eps[k]
	if e != nil && e.state == stateTimeWait && seg.Flags&(FlagSYN|FlagACK|FlagRST) == FlagSYN && seqnum.GT(seg.Seq, e.rcvNxt) {
		// A new incarnation of a connection in TIME-WAIT (RFC 9293 3.6.1): let it in.
		e.finish(nil)
		l.finishEndpoint(now, e)
		e = nil
	}
	if e != nil {
		if buf != nil {
			e.rb.offer(buf)
		}
		e.input(now, seg, seg.Path)
		if buf != nil {
			taken = e.rb.withdraw()
		}
		l.markDirty(e)
		return taken
	}
	if seg.Flags&(FlagSYN|FlagACK|FlagRST) == FlagSYN {
		if ln := l.s.listener(seg.Dst.Port()); ln != nil && !ln.isClosed() {
			if int(ln.pending.Load()) >= l.s.cfg.Backlog {
				l.s.drops.backlog.Add(1)
				return
			}
			t := tuple{local: seg.Dst, remote: seg.Src}
			if l.s.ep.budget.room() < newFlowReserve {
				l.s.drops.memory.Add(1)
				return
			}
			if ln.verify != nil && !ln.verify(seg.Src, seg.Dst, seg.Payload) {
				// Not authenticated: nothing allocated, nothing sent (a reset would be
				// reflected at whatever source the SYN claims).
				l.s.drops.unauth.Add(1)
				return
			}
			l.s.mu.Lock()
			l.s.tuples[t] = struct{}{}
			l.s.mu.Unlock()
			e := newEndpoint(&l.s.ep, t.local, t.remote, l.s.isn(t.local, t.remote), now)
			c := newConn(l.s, l, e)
			c.listener = ln
			ln.pending.Add(1)
			l.s.probeTarget.Store(&t.remote)
			l.eps[k] = e
			l.conns[e] = c
			e.accept(now, seg, seg.Path)
			l.markDirty(e)
			return
		}
	}
	l.s.drops.noConn.Add(1)
	if seg.Flags&FlagRST != 0 {
		return
	}
	if seg.Flags&(FlagSYN|FlagACK) == FlagSYN {
		if ln := l.s.listener(seg.Dst.Port()); ln != nil && ln.verify != nil {
			return // a closed verifying listener: silence, as for an unverified SYN
		}
	}
	if !l.rstBucket.take(now) {
		// Resets to segments for no connection go to whatever source the segment
		// claims: at most rstRate a second per loop.
		l.s.drops.rstLimit.Add(1)
		return
	}
	// RFC 9293 3.10.7.1: a segment for no connection draws a reset.
	rst := Segment{Src: seg.Dst, Dst: seg.Src, Flags: FlagRST}
	if seg.Flags&FlagACK != 0 {
		rst.Seq = seg.Ack
	} else {
		rst.Flags |= FlagACK
		rst.Ack = seg.Seq + seg.Len()
	}
	p := seg.Path
	if p < 0 || p >= len(l.batches) {
		p = 0
	}
	l.batches[p] = append(l.batches[p], rst)
	return false
}

// finishEndpoint runs after an endpoint did work: sync path health both ways, produce
// its output, signal the application, retire it when done, re-arm its timer.
func (l *loop) finishEndpoint(now time.Time, e *endpoint) {
	e.dirty = false
	c := l.conns[e]
	if !e.done {
		e.output(now)
		l.noteRTT(e)
	}
	for i := range e.out {
		o := &e.out[i]
		l.batches[o.path] = append(l.batches[o.path], o.seg)
	}
	clear(e.out)
	e.out = e.out[:0]
	e.account()
	if c == nil {
		return
	}
	if !c.signalled && (e.state.synchronized() || e.done || e.state == stateSynRcvd && e.synDataTaken && c.listener != nil) {
		c.signalled = true
		if e.done {
			c.setFailure(e.err)
		}
		if c.listener != nil {
			c.listener.pending.Add(-1)
			if !e.done && !c.listener.offer(c) {
				e.abortReason = "listener backlog full"
				e.abort(now)
				l.finishEndpoint(now, e)
				return
			}
		} else {
			close(c.established)
		}
	}
	if e.state.synchronized() && !e.done {
		wnd := int(seqnum.Diff(e.rcvNxt, e.rcvRight))
		c.winLow.Store(wnd < e.cfg.rcvLimit/2)
	}
	if e.done {
		if e.abortReason != "" {
			l.s.log.Debug("reset sent", zap.Stringer("local", e.local), zap.Stringer("remote", e.remote), zap.String("reason", e.abortReason))
		} else if e.err != nil {
			l.s.log.Debug("connection failed", zap.Stringer("local", e.local), zap.Stringer("remote", e.remote), zap.Error(e.err))
		}
		e.account()
		delete(l.conns, e)
		t := tuple{e.local, e.remote}
		if k := keyOf(e.local, e.remote); l.eps[k] == e {
			delete(l.eps, k)
			l.s.releaseTuple(t)
		}
		c.final = e.pathBytes()
		c.finished(e.err)
		return
	}
	d := e.deadline()
	if e.timerRan {
		e.timerRan = false
		if !d.IsZero() && !d.After(now) {
			// The timer ran and left a deadline it did not handle: a bug (see timer's
			// invariant). Count it and push the deadline out, so the bug costs a wake-up
			// every stuckTimerDelay instead of a core spinning.
			l.s.drops.stuckTimers.Add(1)
			l.s.log.Error("timer left a deadline in the past", zap.Stringer("state", e.state), zap.Stringer("remote", e.remote))
			d = now.Add(stuckTimerDelay)
		}
	}
	if !d.IsZero() && !d.Equal(e.timerAt) {
		e.timerAt = d
		heap.Push(&l.timers, timerEntry{at: d, e: e})
	}
}

// noteRTT shares the endpoint's path RTTs with the stack (hints for new connections).
func (l *loop) noteRTT(e *endpoint) {
	for p := range e.paths {
		if ps := &e.paths[p]; ps.minRTT > 0 {
			l.s.health[p].rtt.Store(int64(ps.srtt))
		}
	}
}

func (l *loop) shutdown() {
	now := time.Now()
	for e, c := range l.conns {
		if !e.done {
			e.abortReason = "stack closed"
			e.abort(now)
		}
		for i := range e.out {
			o := &e.out[i]
			l.batches[o.path] = append(l.batches[o.path], o.seg)
		}
		e.out = e.out[:0]
		if !c.signalled {
			c.signalled = true
			c.setFailure(ErrAborted)
			if c.listener == nil {
				close(c.established)
			}
		}
		c.final = e.pathBytes()
		c.finished(ErrAborted)
	}
	for p := range l.batches {
		l.s.send(p, l.batches[p])
	}
	// Drain commands that raced with the shutdown so no Stats caller waits forever.
	l.mu.Lock()
	cmds := l.cmds
	l.cmds = nil
	l.mu.Unlock()
	for i := range cmds {
		if cmds[i].kind == cmdStats {
			cmds[i].stats.wg.Done()
		}
	}
}

// flowKey identifies a flow within a stack: every local address is the stack's, and
// every remote one is IPv4 (Stack.Input drops the rest), so the remote address and both
// ports fit in a word, which the map hashes much faster than a tuple of two AddrPorts.
type flowKey uint64

func keyOf(local, remote netip.AddrPort) flowKey {
	a := remote.Addr().As4()
	return flowKey(uint64(a[0])<<56 | uint64(a[1])<<48 | uint64(a[2])<<40 | uint64(a[3])<<32 |
		uint64(remote.Port())<<16 | uint64(local.Port()))
}

// stuckTimerDelay is how far a deadline the timer failed to move is pushed out.
const stuckTimerDelay = 10 * time.Millisecond

type timerEntry struct {
	at time.Time
	e  *endpoint
}

type timerHeap []timerEntry

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)        { *h = append(*h, x.(timerEntry)) }
func (h *timerHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = timerEntry{}
	*h = old[:len(old)-1]
	return x
}
