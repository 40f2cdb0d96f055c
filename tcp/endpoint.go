package tcp

// The endpoint is one connection's transmission control block: RFC 9293's state
// machine plus the multipath sender and the reordering receiver. It does no I/O and
// reads no clock: every entry point takes now, and segments to send are appended to
// e.out for the caller to hand to the Link. One goroutine (the connection's loop) owns
// an endpoint; the application's side reaches it only through sendBuffer/recvBuffer
// (which have their own locks) and through the loop.
//
//   input(seg) ──► acceptability / RST / SYN checks ──► ACK: transmit log, SACK,
//                  per-path RTT, delivery rate, RACK loss per path, congestion model
//              └─► data: in order → recvBuffer; beyond rcv.nxt → reorder.Queue; FIN
//   output()   ──► lost segments first (spray.Earliest), then new data (scheduler),
//                  FIN, pure ACKs (with SACK), window updates, probes → e.out
//   timer()    ──► SYN retries, per-path timeouts and path health, RACK reorder timers,
//                  delayed ACK, zero-window probes, keepalive, TIME_WAIT

import (
	"net/netip"
	"sort"
	"time"

	"mpath/reorder"
	"mpath/spray"
	"mpath/tcp/seqnum"
)

type state uint8

const (
	stateClosed state = iota
	stateSynSent
	stateSynRcvd
	stateEstablished
	stateFinWait1
	stateFinWait2
	stateCloseWait
	stateClosing
	stateLastAck
	stateTimeWait
)

func (s state) String() string {
	return [...]string{"CLOSED", "SYN-SENT", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1",
		"FIN-WAIT-2", "CLOSE-WAIT", "CLOSING", "LAST-ACK", "TIME-WAIT"}[s]
}

// synchronized reports whether the handshake is complete (RFC 9293 terminology).
func (s state) synchronized() bool { return s >= stateEstablished }

// pathHealth is the stack-wide view of path health that endpoints share.
type pathHealth interface {
	pathUp(p int) bool
	// pathReport tells the stack that p looked dead (up=false) or delivered (up=true).
	pathReport(p int, up bool)
	// rttHint returns a recent RTT seen on p by any connection, or 0.
	rttHint(p int) time.Duration
}

// epConfig is what every endpoint of a stack shares. Read-only after creation.
type epConfig struct {
	mss           int // largest payload+options we accept and send (per segment TCP MSS)
	rcvLimit      int // receive window bound (bytes)
	sndLimit      int // send buffer bound (bytes)
	paths         []spray.Path
	scheduler     string
	epoch         time.Time
	userTimeout   time.Duration // abort after this long without progress on outstanding data
	synTimeout    time.Duration // give up on a handshake after this long
	timeWait      time.Duration
	finTimeout    time.Duration // FIN-WAIT-2 of a closed connection
	keepAlive     time.Duration // 0: off
	acceptSYNData bool
	health        pathHealth
	ccs           []*pathCC      // per path, shared by the stack's connections; nil: one per connection
	reorderHold   *HoldHistogram // stack-wide reorder hold times; may be nil
	budget        *memBudget     // the stack's memory budget; nil: unlimited

	pathUsable func(remote netip.Addr, path int) bool // Config.PathUsable; may be nil
}

// outSeg is a segment to send on a path. Payload slices point into the send buffer and
// are valid until the endpoint next processes an acknowledgement.
type outSeg struct {
	path int
	seg  Segment
}

type endpoint struct {
	cfg           *epConfig
	local, remote netip.AddrPort
	state         state
	out           []outSeg

	// Send side.
	iss, sndUna, sndNxt uint32
	sndWnd, maxSndWnd   uint32
	sndWl1, sndWl2      uint32
	sndShift, rcvShift  uint8
	wsOK, sackOK, tsOK  bool
	noTS                bool // do not offer timestamps (DialOptions.NoTimestamps)
	synDataTaken        bool // we took data from the peer's SYN (we may answer before the handshake ends)
	segSize             int  // payload bytes per data segment (MSS less options)
	tsOffset, tsRecent  uint32
	sb                  *sendBuffer
	bufSeq              uint32 // sequence number of the send buffer's first byte
	allowance           int    // the last sendAllowance handed to sb.setSoft
	synData             int    // bytes of the send buffer carried by our SYN
	finPending          bool   // the application closed the write side
	finSent             bool
	finSeq              uint32
	tx                  txQueue
	rtx                 []uint32 // sequence numbers of lost segments awaiting re-send, sorted lazily
	rtxSorted           bool
	paths               []pathState
	view                []spray.Path
	sched               spray.Scheduler
	backlogPicker       spray.BacklogPicker // sched, when it weighs the send backlog
	rotor               int                 // path rotation for SYNs and pure ACKs without a better choice
	synAt               time.Time
	synRetries          int
	rexmitAt            time.Time // SYN / connection-level retransmission deadline
	connBackoff         uint
	lastProgress        time.Time
	allDownSince        time.Time // every path has been down since then (zero: some path is up)
	persistAt           time.Time
	persistBackoff      uint
	paceAt              time.Time
	rackAt              time.Time

	// Receive side.
	irs, rcvNxt  uint32
	rcvRight     uint32 // right edge of the window we advertised (never moves left)
	rq           *reorder.Queue
	rb           *recvBuffer
	peerFin      bool // FIN seen (maybe out of order)
	peerFinSeq   uint32
	finRcvd      bool // FIN consumed in order
	ackNow       bool
	ackDue       uint64 // paths (bit p) owed an ACK at the end of the receive batch (receiveData, output)
	unacked      int
	delAckAt     time.Time
	ackPathHint  int
	ackFrom      int    // the path the acknowledgement being processed came by (-1: unknown)
	readSeen     uint64 // rb.consumed() when we last considered a window update
	sackScratch  []reorder.Block
	lastRecv     time.Time
	kaAt         time.Time
	kaProbes     int
	challengeAt  time.Time
	challengeCnt int

	// Close.
	abortReason string // why we reset the connection, for the log
	readClosed  bool   // Close was called: arriving data resets the connection
	appClosed   bool
	twAt        time.Time
	finWaitAt   time.Time
	err         error
	done        bool // finished: the loop removes it

	// Loop bookkeeping.
	dirty      bool      // queued for finishEndpoint in this loop iteration
	timerAt    time.Time // deadline currently in the loop's timer heap
	timerRan   bool      // timer() ran in this loop iteration (finishEndpoint checks the invariant)
	memCounted int       // bytes this endpoint has counted against cfg.budget

	// Stats.
	retransSegs, spuriousSegs uint64
	established               time.Time

	usable   []bool    // per path, Config.PathUsable's last answer (nil: not asked)
	usableAt time.Time // when it was asked
}

// newEndpoint returns an endpoint for local<->remote in CLOSED state.
func newEndpoint(cfg *epConfig, local, remote netip.AddrPort, iss uint32, now time.Time) *endpoint {
	e := &endpoint{
		cfg:         cfg,
		local:       local,
		remote:      remote,
		iss:         iss,
		sndUna:      iss,
		sndNxt:      iss,
		bufSeq:      iss + 1,
		sb:          newSendBuffer(cfg.sndLimit),
		rb:          newRecvBuffer(),
		rq:          reorder.New(cfg.rcvLimit),
		lastRecv:    now,
		ackPathHint: -1,
	}
	if cfg.reorderHold != nil {
		e.rq.SetHoldSink(cfg.reorderHold.Observe)
	}
	e.rcvShift = windowShift(cfg.rcvLimit)
	e.tsOffset = iss * 2654435761 // per-connection offset (RFC 7323 section 5.4)
	e.view = make([]spray.Path, len(cfg.paths))
	copy(e.view, cfg.paths)
	e.paths = make([]pathState, len(cfg.paths))
	for i := range e.paths {
		e.view[i].Up = cfg.health.pathUp(i) && e.pathUsable(i, now)
		e.view[i].InFlight, e.view[i].NextSend = 0, time.Time{}
		var cc *pathCC
		if i < len(cfg.ccs) {
			cc = cfg.ccs[i]
		}
		e.paths[i].init(&e.view[i], cfg.mss, cfg.health.rttHint(i), cc)
	}
	sched, err := spray.New(cfg.scheduler)
	if err != nil {
		sched, _ = spray.New("auto")
	}
	e.sched = sched
	e.backlogPicker, _ = sched.(spray.BacklogPicker)
	return e
}

// windowShift is the smallest window scale that can advertise limit bytes.
func windowShift(limit int) uint8 {
	var s uint8
	for s < 14 && (65535<<s) < limit {
		s++
	}
	return s
}

func (e *endpoint) tsNow(now time.Time) uint32 {
	return uint32(now.Sub(e.cfg.epoch)/time.Millisecond) + e.tsOffset
}

// ---------------------------------------------------------------------------------
// Opening.

// connect starts an active open: the SYN (carrying up to one segment of the send
// buffer when synData) goes out on the first up path.
func (e *endpoint) connect(now time.Time, synData bool) {
	e.state = stateSynSent
	e.synAt = now
	if synData {
		e.synData = min(e.sb.length(), e.cfg.mss-40)
	}
	e.tx.push(txSeg{seq: e.iss, end: e.iss + 1 + uint32(e.synData), syn: true, path: -1})
	e.sndNxt = e.iss + 1 + uint32(e.synData)
	e.lastProgress = now
	e.sendSYN(now, false)
}

// accept handles a SYN that arrived for a listener: the endpoint goes to SYN-RECEIVED
// and answers with a SYN-ACK.
func (e *endpoint) accept(now time.Time, seg *Segment, path int) {
	e.state = stateSynRcvd
	e.synAt = now
	e.lastProgress = now
	e.irs = seg.Seq
	e.rcvNxt = seg.Seq + 1
	e.negotiate(seg)
	e.sndWnd = uint32(seg.Window) // never scaled in a SYN
	e.maxSndWnd = e.sndWnd
	e.sndWl1, e.sndWl2 = seg.Seq, seg.Ack
	if len(seg.Payload) > 0 && e.cfg.acceptSYNData {
		n := min(len(seg.Payload), e.cfg.rcvLimit)
		e.rb.push(seg.Payload[:n])
		e.rcvNxt += uint32(n)
		e.synDataTaken = true
	}
	if seg.Flags&FlagFIN != 0 && len(seg.Payload) == 0 {
		// A SYN+FIN with nothing else: take the FIN once established.
		e.peerFin, e.peerFinSeq = true, e.rcvNxt
	}
	e.rcvRight = e.rcvNxt + uint32(min(e.freeWindow(), 65535))
	e.tx.push(txSeg{seq: e.iss, end: e.iss + 1, syn: true, path: -1})
	e.sndNxt = e.iss + 1
	e.ackPathHint = path
	e.lastRecv = now
	e.sendSYN(now, false)
}

// negotiate takes the peer's SYN options.
func (e *endpoint) negotiate(seg *Segment) {
	o := &seg.Options
	peerMSS := 536
	if o.MSS != 0 {
		peerMSS = int(o.MSS)
	}
	e.wsOK = o.HasWScale
	if e.wsOK {
		e.sndShift = min(o.WScale, 14)
	} else {
		e.sndShift, e.rcvShift = 0, 0
	}
	e.sackOK = o.SACKPermitted
	e.tsOK = o.HasTimestamp
	if e.tsOK {
		e.tsRecent = o.TSVal
	}
	mss := min(peerMSS, e.cfg.mss)
	if e.tsOK {
		mss -= 12
	}
	e.segSize = max(mss, 64)
	for i := range e.paths {
		e.paths[i].mss = e.segSize
	}
}

// sendSYN (re)transmits our SYN or SYN-ACK. Retries rotate over the paths, so a dead
// relay costs one retry, not the connection.
func (e *endpoint) sendSYN(now time.Time, retry bool) {
	p := e.pickSYNPath(retry)
	seg := Segment{Src: e.local, Dst: e.remote, Seq: e.iss, Flags: FlagSYN}
	seg.Options.MSS = uint16(e.cfg.mss)
	if e.state == stateSynSent || e.wsOK {
		seg.Options.HasWScale, seg.Options.WScale = true, e.rcvShift
	}
	if e.state == stateSynSent || e.sackOK {
		seg.Options.SACKPermitted = true
	}
	if (e.state == stateSynSent && !e.noTS) || e.tsOK {
		seg.Options.HasTimestamp = true
		seg.Options.TSVal = e.tsNow(now)
		seg.Options.TSEcr = e.tsRecent
	}
	seg.Window = uint16(min(e.freeWindow(), 65535))
	if e.state == stateSynRcvd {
		seg.Flags |= FlagACK
		seg.Ack = e.rcvNxt
	} else if e.synData > 0 {
		seg.Payload = e.sb.slice(0, e.synData)
	}
	f := e.tx.front()
	f.path, f.sentAt = p, now
	if retry {
		f.retrans++
	}
	e.out = append(e.out, outSeg{path: p, seg: seg})
	e.rexmitAt = now.Add(e.synRTO(p))
}

func (e *endpoint) synRTO(p int) time.Duration {
	base := initialRTO
	if h := e.cfg.health.rttHint(p); h > 0 {
		base = max(3*h, minRTO)
	}
	return min(base<<min(e.synRetries, 6), maxRTO)
}

func (e *endpoint) pickSYNPath(retry bool) int {
	n := len(e.view)
	if e.state == stateSynRcvd && !retry {
		// Answer on the path the SYN came by: it works, and the RTT covers one relay.
		if p := e.ackPathHint; p >= 0 && p < n && e.view[p].Up {
			e.rotor = p
			return p
		}
	}
	if retry {
		e.rotor++
	}
	for k := 0; k < n; k++ {
		p := (e.rotor + k) % n
		if e.view[p].Up {
			e.rotor = p
			return p
		}
	}
	return e.rotor % n
}

// ---------------------------------------------------------------------------------
// Input.

// input processes one arriving segment (RFC 9293 section 3.10.7). path is the path it
// arrived on, or -1 when unknown.
func (e *endpoint) input(now time.Time, seg *Segment, path int) {
	e.lastRecv = now
	e.kaProbes = 0
	switch e.state {
	case stateClosed:
		return
	case stateSynSent:
		e.inputSynSent(now, seg, path)
		return
	}

	// Segments that repeat the peer's SYN or FIN fall before rcv.nxt and fail the
	// acceptability test below; these answers come first.
	if e.state == stateSynRcvd && seg.Flags&(FlagSYN|FlagRST) == FlagSYN && seg.Seq == e.irs {
		if seg.Flags&FlagACK != 0 && seqnum.LT(e.sndUna, seg.Ack) && seqnum.LEQ(seg.Ack, e.sndNxt) {
			// Simultaneous open (RFC 9293 figure 8): the peer's SYN-ACK acknowledges our SYN.
			e.sndWnd = uint32(seg.Window)
			e.maxSndWnd = max(e.maxSndWnd, e.sndWnd)
			e.sndWl1, e.sndWl2 = seg.Seq, seg.Ack
			e.established = now
			e.state = stateEstablished
			e.processACK(now, seg)
			e.sendACK(now, e.ackPath())
			return
		}
		// Our SYN-ACK was lost: answer the retransmitted SYN, but not more often than
		// minRTO (copies of a SYN, replayed or duplicated, must not make us a reflector).
		if f := e.tx.front(); now.Sub(f.sentAt) >= minRTO {
			e.sendSYN(now, true)
		}
		return
	}
	if e.state == stateTimeWait && seg.Flags&FlagFIN != 0 && seg.Flags&FlagRST == 0 {
		// A retransmitted FIN: our last ACK was lost. ACK again, restart the timer.
		e.twAt = now.Add(e.cfg.timeWait)
		e.sendACK(now, e.ackPath())
		return
	}

	// 1. Sequence acceptability (RFC 9293 3.10.7.4, first check).
	if !e.acceptable(seg) {
		if seg.Flags&FlagRST == 0 {
			// RFC 9293: answer an unacceptable segment with an ACK.
			e.sendACK(now, e.ackPath())
		}
		return
	}
	// 2. RST (RFC 5961 section 3): exact match resets, in-window draws a challenge ACK.
	if seg.Flags&FlagRST != 0 {
		if seg.Seq == e.rcvNxt {
			switch e.state {
			case stateSynRcvd:
				e.fail(ErrRefused)
			case stateTimeWait:
				// Both directions ended cleanly (every byte and both FINs acknowledged):
				// the reset only deletes the TCB (RFC 9293 3.10.7.4, no "connection
				// reset" signal). It is routine: a late duplicate drew our ACK, and
				// the peer, already CLOSED, answered that with a reset.
				e.finish(nil)
			default:
				e.fail(ErrReset)
			}
		} else {
			e.challengeACK(now)
		}
		return
	}
	// 4. SYN in a synchronized state (RFC 5961 section 4): challenge ACK.
	if seg.Flags&FlagSYN != 0 {
		e.challengeACK(now)
		return
	}
	// 5. ACK.
	if seg.Flags&FlagACK == 0 {
		return
	}
	if e.state == stateSynRcvd {
		if !seqnum.LT(e.sndUna, seg.Ack) || seqnum.GT(seg.Ack, e.sndNxt) {
			e.sendRST(seg.Ack, 0, false)
			return
		}
		e.established = now
		e.state = stateEstablished
		e.sndWnd = uint32(seg.Window) << e.sndShift
		e.maxSndWnd = max(e.maxSndWnd, e.sndWnd)
		e.sndWl1, e.sndWl2 = seg.Seq, seg.Ack
	}
	if seqnum.GT(seg.Ack, e.sndNxt) {
		e.challengeACK(now) // acks something not yet sent
		return
	}
	if seqnum.LT(seg.Ack, e.sndUna-e.maxSndWnd) {
		e.challengeACK(now) // RFC 5961 section 5: too old
		return
	}
	if e.tsOK && seg.Options.HasTimestamp && seqnum.LEQ(seg.Seq, e.rcvNxt) && seqnum.GEQ(seg.Options.TSVal, e.tsRecent) {
		e.tsRecent = seg.Options.TSVal
	}
	e.processACK(now, seg)
	if e.state == stateClosed {
		return
	}

	// 7. Data.
	if len(seg.Payload) > 0 {
		switch e.state {
		case stateEstablished, stateFinWait1, stateFinWait2:
			if e.readClosed && seqnum.GT(seg.Seq+uint32(len(seg.Payload)), e.rcvNxt) {
				// New data for an application that closed: RFC 9293 3.10.4, reset. (A
				// duplicate of data already taken, which multipath retransmissions often
				// are, is not new: it gets an ACK below.)
				e.abortReason = "new data after close"
				e.abort(now)
				return
			}
			e.receiveData(now, seg, path)
		default:
			// CLOSE-WAIT, CLOSING, LAST-ACK, TIME-WAIT: the peer already sent FIN.
		}
	}
	// 8. FIN.
	if seg.Flags&FlagFIN != 0 {
		fs := seg.Seq + uint32(len(seg.Payload))
		if !e.peerFin {
			e.peerFin, e.peerFinSeq = true, fs
		}
		e.ackNow = true
	}
	if e.peerFin && !e.finRcvd && e.rcvNxt == e.peerFinSeq {
		e.takeFIN(now)
	}
	if path >= 0 {
		e.ackPathHint = path
	}
	// Acknowledge at once on the path the segment came by, so the sender's RTT for that
	// path covers the same relay both ways (a batch of arrivals from several paths gets
	// one ACK per path, not one on whichever path came last).
	if e.ackNow && e.state != stateClosed && !e.done {
		p := path
		if p < 0 || p >= len(e.view) || !e.view[p].Up {
			p = e.ackPath()
		}
		e.sendACK(now, p)
	}
}

// acceptable is RFC 9293's segment acceptability test on the receive window.
func (e *endpoint) acceptable(seg *Segment) bool {
	wnd := e.rcvRight - e.rcvNxt
	if seqnum.LT(e.rcvRight, e.rcvNxt) {
		wnd = 0
	}
	n := uint32(len(seg.Payload))
	if seg.Flags&FlagSYN != 0 {
		n++
	}
	if seg.Flags&FlagFIN != 0 {
		n++
	}
	switch {
	case n == 0 && wnd == 0:
		return seg.Seq == e.rcvNxt
	case n == 0:
		return seqnum.InRange(seg.Seq, e.rcvNxt, e.rcvNxt+wnd)
	case wnd == 0:
		// Zero window: still process ACK/RST/FIN-only information at rcv.nxt.
		return seg.Seq == e.rcvNxt
	default:
		end := seg.Seq + n - 1
		return seqnum.InRange(seg.Seq, e.rcvNxt, e.rcvNxt+wnd) || seqnum.InRange(end, e.rcvNxt, e.rcvNxt+wnd) ||
			(seqnum.LT(seg.Seq, e.rcvNxt) && seqnum.GT(end, e.rcvNxt))
	}
}

func (e *endpoint) inputSynSent(now time.Time, seg *Segment, path int) {
	if seg.Flags&FlagACK != 0 {
		if seqnum.LEQ(seg.Ack, e.iss) || seqnum.GT(seg.Ack, e.sndNxt) {
			if seg.Flags&FlagRST == 0 {
				e.sendRST(seg.Ack, 0, false)
			}
			return
		}
	}
	if seg.Flags&FlagRST != 0 {
		if seg.Flags&FlagACK != 0 {
			e.fail(ErrRefused)
		}
		return
	}
	if seg.Flags&FlagSYN == 0 {
		return
	}
	e.irs = seg.Seq
	e.rcvNxt = seg.Seq + 1
	e.negotiate(seg)
	e.rcvRight = e.rcvNxt + uint32(min(e.freeWindow(), 65535<<e.rcvShift))
	if seg.Flags&FlagACK == 0 {
		// Simultaneous open.
		e.state = stateSynRcvd
		e.sndWnd = uint32(seg.Window)
		e.sendSYN(now, false)
		return
	}
	// Our SYN is acknowledged. The SYN-ACK's window is not scaled.
	e.sndWnd = uint32(seg.Window)
	e.maxSndWnd = e.sndWnd
	e.sndWl1, e.sndWl2 = seg.Seq, seg.Ack
	e.state = stateEstablished
	e.established = now
	syn := e.tx.front()
	if syn.path >= 0 {
		e.view[syn.path].Up = true
		e.cfg.health.pathReport(syn.path, true)
	}
	if syn.retrans == 0 && syn.path >= 0 {
		e.paths[syn.path].rttSample(now.Sub(syn.sentAt))
		// Other paths start from the handshake RTT until they earn samples.
		for i := range e.paths {
			if i != syn.path && e.paths[i].srtt == 0 {
				e.paths[i].srtt, e.paths[i].rttvar = e.paths[syn.path].srtt, e.paths[syn.path].srtt/2
				e.paths[i].publishRTT()
				e.paths[i].setPacingRate()
			}
		}
		e.paths[syn.path].setPacingRate()
	}
	acked := seqnum.Diff(e.iss+1, seg.Ack) // SYN data the peer took
	e.tx.popFront()
	e.sndUna = seg.Ack
	if acked > 0 {
		e.sb.consume(int(acked))
		e.bufSeq += uint32(acked)
	}
	if e.synData > int(max(acked, 0)) {
		// The peer did not take (all of) our SYN data: send it again as ordinary data.
		e.sndNxt = e.sndUna
	}
	e.rexmitAt = time.Time{}
	e.lastProgress = now
	e.ackNow = true
	e.ackPathHint = path
	if len(seg.Payload) > 0 {
		e.receiveData(now, seg, path)
	}
	if seg.Flags&FlagFIN != 0 {
		e.peerFin, e.peerFinSeq = true, seg.Seq+1+uint32(len(seg.Payload))
		if e.rcvNxt == e.peerFinSeq {
			e.takeFIN(now)
		}
	}
}

// processACK handles the acknowledgement fields of a segment in a synchronized state.
func (e *endpoint) processACK(now time.Time, seg *Segment) {
	e.ackFrom = seg.Path
	var samples [8]rateSample
	rs := samples[:0]
	if n := len(e.paths); n <= len(samples) {
		rs = samples[:n]
	} else {
		rs = make([]rateSample, n)
	}
	progress := false

	// Cumulative acknowledgement.
	if seqnum.GT(seg.Ack, e.sndUna) {
		for e.tx.len() > 0 {
			f := e.tx.front()
			if seqnum.LEQ(f.end, seg.Ack) {
				if !f.sacked {
					e.delivered(now, f, rs)
				}
				if f.fin && e.finSent {
					e.finAcked(now)
				}
				e.tx.popFront()
				continue
			}
			if seqnum.GT(seg.Ack, f.seq) {
				// Partial acknowledgement of a segment (peer re-segmented): trim it.
				if f.inflight {
					e.paths[f.path].release(int(seg.Ack - f.seq))
				}
				f.seq = seg.Ack
			}
			break
		}
		dataAcked := seqnum.Diff(e.bufSeq, seg.Ack)
		if e.finSent && seqnum.GEQ(seg.Ack, e.finSeq+1) {
			dataAcked--
		}
		if dataAcked > 0 {
			dataAcked = min(dataAcked, int32(e.sb.length()))
			e.sb.consume(int(dataAcked))
			e.bufSeq += uint32(dataAcked)
		}
		e.sndUna = seg.Ack
		progress = true
		e.connBackoff = 0
		e.rexmitAt = time.Time{}
		if e.state == stateSynRcvd {
			e.state = stateEstablished
		}
	}

	// Selective acknowledgements.
	if e.sackOK {
		for _, b := range seg.Options.SACKBlocks() {
			if !seqnum.LT(b.Left, b.Right) || seqnum.LEQ(b.Right, e.sndUna) || seqnum.GT(b.Right, e.sndNxt) {
				continue // D-SACK or garbage
			}
			for i := e.tx.search(b.Left); i < e.tx.len(); i++ {
				s := e.tx.at(i)
				if seqnum.GT(s.end, b.Right) {
					break
				}
				if seqnum.LT(s.seq, b.Left) || s.sacked {
					continue
				}
				s.sacked = true
				e.delivered(now, s, rs)
				progress = true
			}
		}
	}

	// Window update (RFC 9293 3.10.7.4, the SND.WL1/WL2 rule).
	if e.sndWnd == 0 && seg.Ack == e.sndUna {
		// The peer answers while its window is closed: it is alive, only slow to read
		// (zero-window probing must not run into the user timeout).
		progress = true
	}
	if seqnum.LT(e.sndWl1, seg.Seq) || (e.sndWl1 == seg.Seq && seqnum.LEQ(e.sndWl2, seg.Ack)) {
		e.sndWnd = uint32(seg.Window) << e.sndShift
		e.maxSndWnd = max(e.maxSndWnd, e.sndWnd)
		e.sndWl1, e.sndWl2 = seg.Seq, seg.Ack
		if e.sndWnd > 0 {
			e.persistAt, e.persistBackoff = time.Time{}, 0
		}
	}

	if progress {
		e.lastProgress = now
	}
	// Loss detection and congestion control, per path.
	for p := range rs {
		if rs[p].delivered > 0 {
			e.view[p].Up = true
			e.cfg.health.pathReport(p, true)
			rs[p].lost += e.detectLoss(now, p)
		}
	}
	for p := range rs {
		if rs[p].delivered > 0 || rs[p].lost > 0 {
			e.paths[p].onAck(now, &rs[p])
		}
	}
}

// takeShares brings each path's view up to this connection's current share of the
// path's controller (other connections of the stack start and end meanwhile).
func (e *endpoint) takeShares() {
	for p := range e.paths {
		e.paths[p].refresh()
	}
}

// idlePaths stops drawing a share of the paths this connection has nothing in flight
// on, once it has nothing more to send (it is done, or waits for its application).
func (e *endpoint) idlePaths() {
	any := false
	for p := range e.paths {
		if e.paths[p].busy && e.view[p].InFlight == 0 {
			any = true
		}
	}
	if !any || len(e.rtx) > 0 || (e.finPending && !e.finSent) {
		return
	}
	if seqnum.LT(e.sndNxt, e.bufSeq+uint32(e.sb.length())) {
		return // more to send
	}
	for p := range e.paths {
		e.paths[p].idle()
	}
}

// delivered accounts for a segment reaching the peer (cumulatively or by SACK).
func (e *endpoint) delivered(now time.Time, s *txSeg, rs []rateSample) {
	p := s.path
	if p < 0 || p >= len(e.paths) {
		return // a SYN not yet sent
	}
	if s.lost {
		// Declared lost, but the original arrived after all: nothing to re-send.
		s.lost = false
		e.spuriousSegs++
		e.paths[p].countSpurious()
	}
	if s.inflight {
		s.inflight = false
		e.paths[p].release(s.size())
	}
	ps := &e.paths[p]
	if s.sentAt.After(ps.rackXmit) || (s.sentAt.Equal(ps.rackXmit) && seqnum.GT(s.end, ps.rackEnd)) {
		rtt := now.Sub(s.sentAt)
		if s.retrans == 0 || ps.minRTT == 0 || rtt >= ps.minRTT {
			ps.rackXmit, ps.rackEnd, ps.rackRTT = s.sentAt, s.end, rtt
		}
	}
	rs[p].take(s, now, e.ackFrom)
}

// detectLoss is RACK for path p: a segment sent on p is lost once a segment sent on p
// after it has been delivered and the reordering window has passed. Segments on other
// paths are never compared, so reordering between paths causes no retransmission.
func (e *endpoint) detectLoss(now time.Time, p int) int {
	ps := &e.paths[p]
	if ps.rackXmit.IsZero() {
		return 0
	}
	lost := 0
	reo := ps.reoWnd()
	for ps.sentHead < len(ps.sent) {
		r := ps.sent[ps.sentHead]
		i := e.tx.find(r.seq)
		if i < 0 {
			ps.sentHead++
			continue
		}
		s := e.tx.at(i)
		if s.path != p || !s.sentAt.Equal(r.sentAt) || s.sacked || !s.inflight {
			ps.sentHead++
			continue
		}
		if !(s.sentAt.Before(ps.rackXmit) || (s.sentAt.Equal(ps.rackXmit) && seqnum.LT(s.end, ps.rackEnd))) {
			break
		}
		deadline := s.sentAt.Add(ps.rackRTT + reo)
		if deadline.After(now) {
			if e.rackAt.IsZero() || deadline.Before(e.rackAt) {
				e.rackAt = deadline
			}
			break
		}
		lost += e.markLost(s)
		ps.sentHead++
	}
	if ps.sentHead > 256 && ps.sentHead > len(ps.sent)/2 {
		n := copy(ps.sent, ps.sent[ps.sentHead:])
		ps.sent, ps.sentHead = ps.sent[:n], 0
	}
	return lost
}

// markLost declares a segment lost: it leaves its path's in-flight count and waits for
// a re-send on whichever path will deliver it first.
func (e *endpoint) markLost(s *txSeg) int {
	if s.sacked || s.lost {
		return 0
	}
	n := s.size()
	if s.inflight {
		s.inflight = false
		e.paths[s.path].release(n)
	}
	s.lost = true
	e.paths[s.path].countLost()
	e.rtx = append(e.rtx, s.seq)
	e.rtxSorted = false
	return n
}

// receiveData takes the payload of an acceptable segment.
func (e *endpoint) receiveData(now time.Time, seg *Segment, path int) {
	data := seg.Payload
	seq := seg.Seq
	if path >= 0 && path < len(e.paths) {
		e.paths[path].rxPayload += uint64(len(data))
	}
	// Trim what lies before rcv.nxt.
	if seqnum.LT(seq, e.rcvNxt) {
		skip := e.rcvNxt - seq
		if int(skip) >= len(data) {
			e.ackNow = true // a duplicate: tell the sender (it may be probing)
			return
		}
		data, seq = data[skip:], e.rcvNxt
	}
	// Trim what lies beyond the window we advertised.
	if room := seqnum.Diff(seq, e.rcvRight); room < int32(len(data)) {
		if room <= 0 {
			e.ackNow = true
			return
		}
		data = data[:room]
	}
	if seq == e.rcvNxt {
		free := e.cfg.rcvLimit - e.rb.length()
		if free <= 0 {
			e.ackNow = true
			return
		}
		data = data[:min(len(data), free)]
		e.rb.push(data)
		e.rcvNxt += uint32(len(data))
		if e.rq.Bytes() > 0 {
			before := e.rcvNxt
			e.popReorder(now)
			if e.rcvNxt != before || e.rq.Bytes() > 0 {
				e.ackDue |= pathBit(path) // a gap filled, or data still held: ACK with this batch
			}
		}
		e.unacked++
		if e.unacked >= 2 || seg.Flags&FlagPSH != 0 && e.unacked > 1 {
			// Every 2nd segment calls for an ACK (RFC 5681 4.2), sent when the loop has
			// taken the whole receive batch (output): a batch of in-order segments gets
			// one ACK per path it came by, not one per two segments. Duplicates and
			// window edges ACK at once (ackNow); out-of-order data and filled gaps
			// without waiting for the delayed-ACK timer, at the end of the batch.
			e.ackDue |= pathBit(path)
		} else if e.delAckAt.IsZero() {
			e.delAckAt = now.Add(e.delAckTimeout())
		}
	} else {
		// Reorder pages count against the window and the stack's budget: a peer
		// strewing tiny segments across the window cannot pin a page per byte.
		// The pages are counted at once (not when the loop next accounts for the
		// endpoint): a batch of segments must not outrun the budget.
		held := e.rq.Mem()
		e.rq.SetMemLimit(max(min(e.cfg.rcvLimit-e.rb.length()+reorderEdge, held+e.cfg.budget.room()), 1))
		e.rq.Insert(e.rcvNxt, seq, data, now)
		if d := e.rq.Mem() - held; d != 0 {
			e.cfg.budget.add(d)
			e.memCounted += d
		}
		// Out of order: ACK without delay, with SACK (RFC 5681 4.2: at once), at the end
		// of this receive batch: paths interleave, so a batch holds many out-of-order
		// segments, and one ACK per path with the batch's SACK blocks tells the sender
		// more than one per segment (loss detection is per path RACK, not dupACKs).
		e.ackDue |= pathBit(path)
	}
}

func (e *endpoint) delAckTimeout() time.Duration {
	return 5 * time.Millisecond
}

// popReorder moves contiguous bytes from the reorder queue to the application.
func (e *endpoint) popReorder(now time.Time) {
	n := e.rb.pushFunc(func(dst []byte) []byte { return e.rq.Pop(dst, e.rcvNxt, now) })
	e.rcvNxt += uint32(n)
}

// takeFIN consumes the peer's FIN once everything before it has arrived.
func (e *endpoint) takeFIN(now time.Time) {
	e.finRcvd = true
	e.rcvNxt++
	e.ackNow = true
	e.rb.setEOF()
	switch e.state {
	case stateSynRcvd, stateEstablished:
		e.state = stateCloseWait
	case stateFinWait1:
		if e.finSent && seqnum.GT(e.sndUna, e.finSeq) {
			e.enterTimeWait(now)
		} else {
			e.state = stateClosing
		}
	case stateFinWait2:
		e.enterTimeWait(now)
	}
}

func (e *endpoint) finAcked(now time.Time) {
	switch e.state {
	case stateFinWait1:
		e.state = stateFinWait2
		if e.appClosed {
			e.finWaitAt = now.Add(e.cfg.finTimeout)
		}
	case stateClosing:
		e.enterTimeWait(now)
	case stateLastAck:
		e.finish(nil)
	}
}

func (e *endpoint) enterTimeWait(now time.Time) {
	e.state = stateTimeWait
	e.twAt = now.Add(e.cfg.timeWait)
	// Only TIME-WAIT's own timer lives on: the others belong to states left behind.
	e.finWaitAt, e.persistAt, e.rexmitAt, e.rackAt, e.paceAt, e.kaAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}, time.Time{}, time.Time{}
	e.sb.close(nil)
	for p := range e.paths {
		e.paths[p].leave() // everything was acknowledged: the paths' shares go to other flows
	}
}

// challengeACK sends an ACK in answer to a suspicious segment, at most 10 a second
// (RFC 5961 section 7).
func (e *endpoint) challengeACK(now time.Time) {
	if now.Sub(e.challengeAt) > time.Second {
		e.challengeAt, e.challengeCnt = now, 0
	}
	if e.challengeCnt >= 10 {
		return
	}
	e.challengeCnt++
	e.ackNow = true
}

// ---------------------------------------------------------------------------------
// Closing and failure.

// closeWrite queues a FIN after the data already written.
func (e *endpoint) closeWrite() {
	e.sb.close(nil)
	e.finPending = true
}

// fail ends the connection with err (a reset received, a timeout).
func (e *endpoint) fail(err error) {
	e.finish(err)
}

// abort resets the connection from our side.
func (e *endpoint) abort(now time.Time) {
	if e.state.synchronized() || e.state == stateSynRcvd {
		e.sendRST(e.sndNxt, e.rcvNxt, true)
	}
	e.finish(ErrAborted)
}

func (e *endpoint) finish(err error) {
	if e.done {
		return
	}
	e.done = true
	e.state = stateClosed
	if err != nil {
		e.err = err
		e.rb.setErr(err)
		e.sb.close(err)
	} else {
		e.rb.setEOF()
		e.sb.close(nil)
	}
	for p := range e.paths {
		e.paths[p].leave()
	}
	e.rq.Reset()
}

// sendRST emits a reset with the given sequence number (and ACK when withAck).
func (e *endpoint) sendRST(seq, ack uint32, withAck bool) {
	seg := Segment{Src: e.local, Dst: e.remote, Seq: seq, Flags: FlagRST}
	if withAck {
		seg.Flags |= FlagACK
		seg.Ack = ack
	}
	e.out = append(e.out, outSeg{path: e.ackPath(), seg: seg})
}

// ---------------------------------------------------------------------------------
// Output.

// freeWindow is the receive space left: the bound less unread bytes and reorder pages
// (memory, not bytes: see reorder.Queue.SetMemLimit), and no more than the stack's
// memory budget has room for.
func (e *endpoint) freeWindow() int {
	free := e.cfg.rcvLimit - e.rb.length() - max(e.rq.Bytes(), e.rq.Mem()-reorderEdge)
	return max(min(free, e.cfg.budget.room()), 0)
}

// reorderEdge is the page memory a window may cost beyond its bytes: held ranges start
// and end inside pages, so a window of n bytes can touch two pages more than n fills.
const reorderEdge = 2 * reorder.PageSize

// windowField computes the window to advertise, moving the right edge only forward and
// only by worthwhile amounts (receiver-side silly window avoidance).
func (e *endpoint) windowField() uint16 {
	free := min(e.freeWindow(), 65535<<e.rcvShift)
	right := e.rcvNxt + uint32(free)
	step := min(e.cfg.rcvLimit/4, e.segSize)
	if seqnum.GT(right, e.rcvRight) && (int(seqnum.Diff(e.rcvRight, right)) >= step || seqnum.LEQ(e.rcvRight, e.rcvNxt)) {
		e.rcvRight = right
	}
	w := uint32(0)
	if seqnum.GT(e.rcvRight, e.rcvNxt) {
		w = e.rcvRight - e.rcvNxt
	}
	w >>= e.rcvShift
	return uint16(min(w, 65535))
}

// windowUpdateDue reports whether the application has read enough that the peer should
// hear about the larger window now.
func (e *endpoint) windowUpdateDue() bool {
	if !e.state.synchronized() || e.finRcvd {
		return false
	}
	if n := e.rb.consumed(); n == e.readSeen {
		return false // only reading opens the window; the next ACK carries other changes
	} else {
		e.readSeen = n
	}
	limit := min(e.cfg.rcvLimit, 65535<<e.rcvShift)
	free := min(e.freeWindow(), limit)
	cur := int(seqnum.Diff(e.rcvNxt, e.rcvRight))
	return free-cur >= max(2*e.segSize, limit/4) || (cur < e.segSize && free >= e.segSize)
}

// header fills the fields every segment we send after the handshake carries.
func (e *endpoint) header(now time.Time, seq uint32, flags Flags) Segment {
	seg := Segment{Src: e.local, Dst: e.remote, Seq: seq, Ack: e.rcvNxt, Flags: flags | FlagACK}
	seg.Window = e.windowField()
	if e.tsOK {
		seg.Options.HasTimestamp = true
		seg.Options.TSVal = e.tsNow(now)
		seg.Options.TSEcr = e.tsRecent
	}
	return seg
}

// ackPath picks the path for a pure ACK: the path the data came in on when known (so
// each path's RTT is measured over the same relay both ways), else a rotation over the
// up paths.
func (e *endpoint) ackPath() int {
	if p := e.ackPathHint; p >= 0 && p < len(e.view) && e.view[p].Up {
		return p
	}
	n := len(e.view)
	for k := 1; k <= n; k++ {
		p := (e.rotor + k) % n
		if e.view[p].Up {
			e.rotor = p
			return p
		}
	}
	e.rotor = (e.rotor + 1) % n
	return e.rotor
}

// syncHealth brings the endpoint's idea of each path in line with the stack's: a path
// the stack marked down loses its in-flight data to the others; a path that came back
// starts afresh.
func (e *endpoint) syncHealth(now time.Time) {
	for p := range e.view {
		up := e.cfg.health.pathUp(p) && e.pathUsable(p, now)
		switch {
		case e.view[p].Up && !up:
			e.view[p].Up = false
			e.paths[p].wentDown()
			for i := 0; i < e.tx.len(); i++ {
				if s := e.tx.at(i); s.path == p && s.inflight {
					e.markLost(s)
				}
			}
		case !e.view[p].Up && up:
			e.view[p].Up = true
			e.paths[p].reset(now)
		}
	}
}

// pathUsable reports whether the stack's Config.PathUsable lets this connection use
// path p at all, asking again every 100 ms (always true without one).
func (e *endpoint) pathUsable(p int, now time.Time) bool {
	if e.cfg.pathUsable == nil {
		return true
	}
	if e.usable == nil || now.Sub(e.usableAt) >= 100*time.Millisecond {
		if e.usable == nil {
			e.usable = make([]bool, len(e.view))
		}
		for i := range e.usable {
			e.usable[i] = e.cfg.pathUsable(e.remote.Addr(), i)
		}
		e.usableAt = now
	}
	return e.usable[p]
}

// output appends to e.out every segment due at now.
func (e *endpoint) output(now time.Time) {
	if e.done {
		return
	}
	e.syncHealth(now)
	if e.anyPathUp() {
		e.allDownSince = time.Time{}
	} else if e.allDownSince.IsZero() {
		e.allDownSince = now
	}
	if e.state == stateSynSent && !e.allDownSince.IsZero() && e.synRetries > 0 {
		// Every path is known dead and our SYN went unanswered: fail now rather than at
		// the handshake timeout.
		e.fail(ErrNoPath)
		return
	}
	switch e.state {
	case stateSynRcvd:
		e.ackNow = false
		if e.synDataTaken {
			// As in TCP Fast Open (RFC 7413 section 4.2.2): having taken the data in the
			// SYN, answer it before the handshake's last ACK arrives. The exit's status
			// byte then costs no extra round trip.
			e.sendNew(now)
		}
		return
	case stateClosed, stateSynSent:
		return
	}
	sentData := false
	if e.state != stateTimeWait {
		e.takeShares()
		sentData = e.sendRetransmissions(now)
		if e.sendNew(now) {
			sentData = true
		}
		if e.reinjectTail(now) {
			sentData = true
		}
		if a := e.sendAllowance(); a != e.allowance {
			e.allowance = a // the buffer's lock only when the allowance moved
			e.sb.setSoft(a)
		}
		e.idlePaths()
	}
	if !e.delAckAt.IsZero() && !now.Before(e.delAckAt) {
		e.ackNow = true
	}
	if !e.ackNow && e.windowUpdateDue() {
		e.ackNow = true
	}
	due := e.ackDue
	if due != 0 {
		e.ackNow = true
	}
	// Data segments carried the acknowledgement; send a pure ACK when none went out, or
	// when there are SACK blocks to report (data segments carry no SACK option). A
	// batch's due ACKs go one per path the data came by, so each path's RTT sample
	// covers the same relay both ways.
	if e.ackNow && (!sentData || e.rq.Bytes() > 0) {
		sent := false
		for p := 0; due != 0 && p < len(e.view); p++ {
			if due&pathBit(p) != 0 && e.view[p].Up {
				e.sendACK(now, p)
				sent = true
			}
		}
		if !sent {
			e.sendACK(now, e.ackPath())
		}
	}
	if e.ackNow || sentData {
		e.ackNow = false
		e.ackDue = 0
		e.unacked = 0
		e.delAckAt = time.Time{}
	}
	if e.tx.len() > 0 && len(e.rtx) == 0 && e.state.synchronized() && e.state != stateTimeWait && !e.anyInFlight() {
		// Everything sent was SACKed, yet the cumulative ACK does not move: only the
		// connection timer can find out that the receiver dropped what it SACKed.
		e.armConnRTO(now)
	}
}

func (e *endpoint) anyInFlight() bool {
	for i := range e.view {
		if e.view[i].InFlight > 0 {
			return true
		}
	}
	return false
}

// sendACK emits a pure acknowledgement (with SACK blocks when data is held out of
// order) on path p.
func (e *endpoint) sendACK(now time.Time, p int) {
	seg := e.header(now, e.sndNxt, 0)
	if e.sackOK && e.rq.Bytes() > 0 {
		n := 4
		if e.tsOK {
			n = 3
		}
		e.sackScratch = e.rq.Blocks(e.sackScratch[:0], n)
		for i, b := range e.sackScratch {
			seg.Options.SACK[i] = SACKBlock{Left: b.Left, Right: b.Right}
		}
		seg.Options.NSACK = uint8(len(e.sackScratch))
	}
	e.out = append(e.out, outSeg{path: p, seg: seg})
	e.ackNow = false
	e.ackDue &^= pathBit(p)
	e.unacked = 0
	e.delAckAt = time.Time{}
}

// pathBit is path p's bit in ackDue; paths beyond 63 (and -1, unknown) share bit 63,
// which output answers on ackPath.
func pathBit(p int) uint64 {
	if p < 0 || p > 63 {
		return 1 << 63
	}
	return 1 << uint(p)
}

// sendRetransmissions re-sends lost segments, lowest sequence first, each on the path
// expected to deliver it soonest. It reports whether anything was sent.
func (e *endpoint) sendRetransmissions(now time.Time) bool {
	if len(e.rtx) == 0 {
		return false
	}
	if !e.rtxSorted {
		sort.Slice(e.rtx, func(i, j int) bool { return seqnum.LT(e.rtx[i], e.rtx[j]) })
		e.rtxSorted = true
	}
	sent := false
	k := 0
	for ; k < len(e.rtx); k++ {
		i := e.tx.find(e.rtx[k])
		if i < 0 {
			continue // acknowledged meanwhile
		}
		s := e.tx.at(i)
		if !s.lost || s.sacked {
			continue
		}
		p := e.pickPath(now, s.size(), s.path, true)
		if p < 0 {
			break
		}
		e.transmit(now, s, p)
		sent = true
	}
	e.rtx = e.rtx[:copy(e.rtx, e.rtx[k:])]
	return sent
}

// pickPath chooses a path for a segment: retransmissions go where they arrive first,
// new data where the scheduler says. Paths pacing forbids at now are hidden from the
// choice (and a pacing timer is armed).
func (e *endpoint) pickPath(now time.Time, size, avoid int, retrans bool) int {
	var p int
	switch {
	case retrans:
		p = spray.Earliest(now, e.view, size, avoid)
	case e.backlogPicker != nil:
		// avoid carries the bytes still waiting to be sent for new data.
		p = e.backlogPicker.PickBacklog(now, e.view, size, avoid)
	default:
		p = e.sched.Pick(now, e.view, size)
	}
	if p >= 0 && !e.paths[p].sendable(now) {
		e.armPace(e.view[p].NextSend)
		return -1
	}
	if p < 0 {
		// Whatever waits on pacing gets a timer; waits on the window end with an ACK.
		for i := range e.view {
			v := &e.view[i]
			if v.Up && v.Room(size) && v.NextSend.After(now) {
				e.armPace(v.NextSend)
			}
		}
	}
	return p
}

// sendAllowance is how many bytes the send buffer may hold for now: everything not yet
// acknowledged (holes and SACKed bytes included) plus two windows' worth of every up
// path, so the paths never wait for the application's next write, however fast the
// windows grow (they at most double in a round trip). sendBuffer.setSoft keeps it at
// least sendAheadMin and at most the buffer's limit.
func (e *endpoint) sendAllowance() int {
	ahead := 0
	for i := range e.view {
		if e.view[i].Up {
			ahead += 2 * e.view[i].Cwnd
		}
	}
	return int(seqnum.Diff(e.bufSeq, e.sndNxt)) + ahead
}

func (e *endpoint) armPace(t time.Time) {
	if e.paceAt.IsZero() || t.Before(e.paceAt) {
		e.paceAt = t
	}
}

// sendNew sends new data (and the FIN) while the peer's window, the paths' windows and
// pacing allow. It reports whether anything was sent.
func (e *endpoint) sendNew(now time.Time) bool {
	if e.sb.isClosed() && !e.finPending && e.err == nil && (e.state == stateEstablished || e.state == stateCloseWait) {
		e.finPending = true
	}
	sent := false
	held, pressed := e.sb.lengthPressed()
	end := e.bufSeq + uint32(held)
	for {
		avail := int(seqnum.Diff(e.sndNxt, end))
		fin := e.finPending && !e.finSent && e.state != stateSynRcvd
		if avail <= 0 && !fin {
			break
		}
		wndRight := e.sndUna + e.sndWnd
		room := int(seqnum.Diff(e.sndNxt, wndRight))
		n := min(avail, e.segSize)
		if n > 0 && room < n {
			if room <= 0 {
				e.armPersist(now)
				break
			}
			// Sender silly-window avoidance (RFC 9293 3.8.6.2.1): a segment smaller than
			// the data allows goes out only when at least half the largest window the
			// peer offered fits, or when nothing is in flight (no ACK would come to
			// unblock us: a lost window update or a window below the MSS).
			if room < int(e.maxSndWnd/2) && e.tx.len() > 0 {
				break
			}
			n = room
		}
		size := n
		withFin := fin && n == avail
		if withFin {
			size++
		}
		if size == 0 {
			break
		}
		p := e.pickPath(now, size, e.backlog(avail, room, pressed), false)
		if p < 0 {
			if !e.anyPathUp() {
				e.armConnRTO(now) // every path is down: retry on a rotation until one answers
			}
			break
		}
		s := txSeg{seq: e.sndNxt, end: e.sndNxt + uint32(size), fin: withFin}
		if withFin {
			e.finSent = true
			e.finSeq = e.sndNxt + uint32(n)
			switch e.state {
			case stateEstablished:
				e.state = stateFinWait1
			case stateCloseWait:
				e.state = stateLastAck
			}
		}
		e.sndNxt = s.end
		e.tx.push(s)
		e.transmit(now, e.tx.at(e.tx.len()-1), p)
		sent = true
	}
	// Paths that could have sent but were not asked are application-limited: their
	// rate samples must not lower the bandwidth model.
	for i := range e.view {
		v := &e.view[i]
		if v.Up && v.InFlight < v.Cwnd && e.paths[i].sendable(now) {
			e.paths[i].markAppLimited()
		}
	}
	return sent
}

// reinjectTail: at the end of a flow (the application closed its side and every byte
// is sent) a path that has room re-sends segments still in flight on a slower path when
// the copy is expected to be acknowledged before the original, or the original is
// overdue by a quarter of its path's RTT (likely lost, with nothing sent after it on
// that path to reveal it before the path's timeout): the flow then finishes
// with its fastest path instead of waiting out a long path's delay, or a long path's
// timeout when one of its last segments is lost (30% loss on a 300 ms path: the tail
// alone cost a transfer up to 2% against the best single path). Each segment is re-sent
// at most once this way; the original's path stops counting it in flight without
// counting a loss. It reports whether anything was sent.
func (e *endpoint) reinjectTail(now time.Time) bool {
	if !e.finSent || e.tx.len() == 0 || len(e.rtx) > 0 {
		return false
	}
	sent := false
	for i := 0; i < e.tx.len(); i++ {
		s := e.tx.at(i)
		if !s.inflight || s.sacked || s.retrans > 0 || s.fin || s.syn {
			continue
		}
		q := s.path
		p := spray.Earliest(now, e.view, s.size(), q)
		if p < 0 || p == q || !e.paths[p].sendable(now) {
			break
		}
		at, ok := e.view[p].ExpectedArrival(now, s.size())
		due := s.sentAt.Add(e.view[q].SRTT) // when the original's acknowledgement is expected
		overdue := now.After(due.Add(e.view[q].SRTT / 4))
		if !ok || !(overdue || now.Add(2*at).Before(due)) {
			continue
		}
		s.inflight = false
		e.paths[q].release(s.size())
		e.transmit(now, s, p)
		sent = true
	}
	return sent
}

// backlog is the scheduler's estimate of the flow's data still to send, for the
// decision whether a slower path finishes it sooner (spray.BacklogPicker): the unsent
// bytes in the buffer, or, while the application presses on a full buffer (it has more
// than the buffer shows), what the peer's window lets into flight; never more than the
// window's room. The window bounds it on purpose: data beyond it cannot be sent before
// the earlier data is acknowledged, so it cannot make a slow path worth its delay, and a
// small receive window thus keeps a flow off paths whose delay it cannot cover (BLEST's
// concern: 2 x 10 Mbit/s, RTT 10/160 ms, a 28.8 kB window made 1.5 Mbit/s when the
// buffer's 256 kB counted, 9.3 Mbit/s on the fast path alone).
func (e *endpoint) backlog(avail, room int, pressed bool) int {
	if pressed {
		return room
	}
	return min(avail, room)
}

func (e *endpoint) armPersist(now time.Time) {
	if e.persistAt.IsZero() && e.tx.len() == 0 {
		d := max(e.maxPathRTO(), minRTO) << min(e.persistBackoff, 6)
		e.persistAt = now.Add(min(d, maxRTO))
	}
}

// transmit sends (or re-sends) s on path p and records it in the transmit log.
func (e *endpoint) transmit(now time.Time, s *txSeg, p int) {
	flags := FlagPSH
	if s.fin {
		flags |= FlagFIN
	}
	seg := e.header(now, s.seq, flags)
	n := s.size()
	if s.fin {
		n--
	}
	if n > 0 {
		seg.Payload = e.sb.slice(int(s.seq-e.bufSeq), n)
	} else {
		seg.Flags &^= FlagPSH
	}
	if s.path >= 0 && s.sentAt.IsZero() == false {
		s.retrans++
		e.retransSegs++
		e.paths[p].countRetransmit()
	}
	s.lost = false
	s.path = p
	s.sentAt = now
	s.inflight = true
	s.dlvd, s.dlvdTime, s.firstSent, s.appLimited = e.paths[p].onSend(now, s.seq, s.size())
	e.out = append(e.out, outSeg{path: p, seg: seg})
}

// ---------------------------------------------------------------------------------
// Timers.

// deadline is the next time timer() has work, or the zero time.
func (e *endpoint) deadline() time.Time {
	var d time.Time
	take := func(t time.Time) {
		if !t.IsZero() && (d.IsZero() || t.Before(d)) {
			d = t
		}
	}
	if e.done {
		return d
	}
	if e.state == stateSynSent || e.state == stateSynRcvd {
		// timer() handles only the handshake's timers in these states. The others (a
		// path RTO or persist timer armed by data sent in SYN-RECEIVED after taking SYN
		// data, say) wait for the handshake: left in here they would be due, unhandled,
		// and the loop would run the timer again at once, forever.
		take(e.rexmitAt)
		take(e.paceAt)
		take(e.synAt.Add(e.cfg.synTimeout))
		return d
	}
	take(e.rexmitAt)
	take(e.delAckAt)
	take(e.persistAt)
	take(e.twAt)
	take(e.finWaitAt)
	if e.cfg.keepAlive > 0 && e.state.synchronized() && e.state != stateTimeWait && e.tx.len() == 0 {
		if e.kaProbes == 0 {
			take(e.lastRecv.Add(e.cfg.keepAlive))
		} else {
			take(e.kaAt)
		}
	}
	take(e.paceAt)
	take(e.rackAt)
	for i := range e.paths {
		if e.view[i].InFlight > 0 {
			take(e.paths[i].rtoAt)
		}
	}
	if e.state.synchronized() && e.tx.len() > 0 && e.cfg.userTimeout > 0 {
		take(e.lastProgress.Add(e.cfg.userTimeout))
	}
	if !e.allDownSince.IsZero() && e.cfg.userTimeout > 0 && e.state.synchronized() && e.state != stateTimeWait {
		take(maxTime(e.allDownSince, e.lastRecv).Add(e.cfg.userTimeout))
	}
	return d
}

// timer runs whatever timers are due at now. Invariant (asserted by the loop and the
// tests): once timer and then output have run at now, deadline() is after now or zero
// in every state, so a timer never fires twice at one instant.
func (e *endpoint) timer(now time.Time) {
	if e.done {
		return
	}
	if !e.paceAt.IsZero() && !now.Before(e.paceAt) {
		e.paceAt = time.Time{} // output() will send
	}
	switch e.state {
	case stateSynSent, stateSynRcvd:
		if !now.Before(e.synAt.Add(e.cfg.synTimeout)) {
			e.fail(ErrTimeout)
			return
		}
		if !e.rexmitAt.IsZero() && !now.Before(e.rexmitAt) {
			// A lost SYN says little about its path (one random loss): rotate to the next
			// path, but leave health decisions to the data phase and the prober.
			e.synRetries++
			e.sendSYN(now, true)
		}
		return
	case stateTimeWait:
		if !now.Before(e.twAt) {
			e.finish(nil)
		}
		if e.ackNow {
			e.output(now)
		}
		return
	}
	if !e.finWaitAt.IsZero() && !now.Before(e.finWaitAt) && e.state == stateFinWait2 {
		e.finish(nil)
		return
	}
	if e.tx.len() > 0 && e.cfg.userTimeout > 0 && now.Sub(e.lastProgress) >= e.cfg.userTimeout {
		e.sendRST(e.sndNxt, e.rcvNxt, true)
		e.fail(ErrTimeout)
		return
	}
	if !e.allDownSince.IsZero() && e.cfg.userTimeout > 0 && now.Sub(e.allDownSince) >= e.cfg.userTimeout &&
		now.Sub(e.lastRecv) >= e.cfg.userTimeout {
		// Every path has been dead for the user timeout and the peer silent as long: give
		// up even with nothing outstanding (the receiving side of a transfer would
		// otherwise wait forever).
		e.fail(ErrNoPath)
		return
	}
	if !e.rackAt.IsZero() && !now.Before(e.rackAt) {
		e.rackAt = time.Time{}
		for p := range e.paths {
			if n := e.detectLoss(now, p); n > 0 {
				rs := rateSample{lost: n}
				e.paths[p].onAck(now, &rs)
			}
		}
	}
	e.pathTimeouts(now)
	if !e.rexmitAt.IsZero() && !now.Before(e.rexmitAt) {
		e.connectionRTO(now)
	}
	if !e.persistAt.IsZero() && !now.Before(e.persistAt) {
		e.zeroWindowProbe(now)
	}
	e.keepalive(now)
}

// pathTimeouts handles paths whose in-flight data went unacknowledged for a path RTO:
// their segments are declared lost (and re-sent on other paths), the path restarts
// small, and after repeated timeouts it is marked down until a probe revives it.
func (e *endpoint) pathTimeouts(now time.Time) {
	for p := range e.paths {
		ps := &e.paths[p]
		if e.view[p].InFlight == 0 || ps.rtoAt.IsZero() || now.Before(ps.rtoAt) {
			continue
		}
		for i := 0; i < e.tx.len(); i++ {
			if s := e.tx.at(i); s.path == p && s.inflight {
				e.markLost(s)
			}
		}
		ps.sent, ps.sentHead = ps.sent[:0], 0
		ps.onTimeout(now)
		if ps.timeouts >= 2 {
			// Even the last path: a new connection should then fail at once, and the
			// stack's prober brings the path back when it answers again.
			e.view[p].Up = false
			e.paths[p].wentDown()
			e.cfg.health.pathReport(p, false)
		}
		if !e.anyPathUp() {
			// Nothing else to send on: fall back to the connection-level timer.
			e.armConnRTO(now)
		}
	}
	if e.anyPathUp() {
		return
	}
	e.armConnRTO(now)
}

func (e *endpoint) anyPathUp() bool {
	for i := range e.view {
		if e.view[i].Up {
			return true
		}
	}
	return false
}

func (e *endpoint) maxPathRTO() time.Duration {
	var r time.Duration
	for p := range e.paths {
		r = max(r, e.paths[p].rto())
	}
	return r
}

func (e *endpoint) armConnRTO(now time.Time) {
	if e.rexmitAt.IsZero() {
		e.rexmitAt = now.Add(min(e.maxPathRTO()<<min(e.connBackoff, 6), maxRTO))
	}
}

// connectionRTO: every path is down. Re-send the oldest unacknowledged segment on the
// next path in rotation, with exponential backoff, until something answers (a delivery
// marks its path up again) or the user timeout ends the connection.
func (e *endpoint) connectionRTO(now time.Time) {
	e.rexmitAt = time.Time{}
	if e.anyPathUp() && e.tx.len() == 0 {
		return // output() sends normally
	}
	e.connBackoff++
	if e.tx.len() == 0 {
		// Nothing in flight, data waiting, no path up: the next new segment is the probe.
		end := e.bufSeq + uint32(e.sb.length())
		n := min(int(seqnum.Diff(e.sndNxt, end)), e.segSize, int(seqnum.Diff(e.sndNxt, e.sndUna+e.sndWnd)))
		if n <= 0 {
			return
		}
		e.tx.push(txSeg{seq: e.sndNxt, end: e.sndNxt + uint32(n)})
		e.sndNxt += uint32(n)
	}
	// RFC 2018 section 8: after a retransmission timeout the SACK marks are void (the
	// receiver may have discarded what it SACKed). Everything not in flight is re-sent.
	for i := 0; i < e.tx.len(); i++ {
		if t := e.tx.at(i); t.sacked {
			t.sacked = false
			e.markLost(t)
		}
	}
	s := e.tx.front()
	if s.inflight {
		e.paths[s.path].release(s.size())
		s.inflight = false
	}
	s.lost = false
	n := len(e.view)
	e.rotor = (e.rotor + 1) % n
	p := e.rotor
	for k := 0; k < n; k++ {
		if e.cfg.health.pathUp((e.rotor + k) % n) {
			p = (e.rotor + k) % n
			break
		}
	}
	e.transmit(now, s, p)
	e.rexmitAt = now.Add(min(e.maxPathRTO()<<min(e.connBackoff, 6), maxRTO))
}

// zeroWindowProbe asks a peer whose window is closed for its window (RFC 9293
// 3.8.6.1): a segment one below snd.una, which the peer must answer with an ACK carrying
// its current window. It carries no data, so it is never "in flight" on a path and a
// long-closed window cannot make a path look dead. Backs off exponentially.
func (e *endpoint) zeroWindowProbe(now time.Time) {
	e.persistAt = time.Time{}
	if e.sndWnd > 0 {
		return
	}
	e.persistBackoff++
	seg := e.header(now, e.sndUna-1, 0)
	e.out = append(e.out, outSeg{path: e.ackPath(), seg: seg})
	d := max(e.maxPathRTO(), minRTO) << min(e.persistBackoff, 6)
	e.persistAt = now.Add(min(d, maxRTO))
}

// keepalive probes an idle connection (RFC 9293 3.8.4) when configured.
func (e *endpoint) keepalive(now time.Time) {
	ka := e.cfg.keepAlive
	if ka <= 0 || !e.state.synchronized() || e.state == stateTimeWait {
		e.kaAt = time.Time{}
		return
	}
	if e.tx.len() > 0 {
		e.kaAt = time.Time{}
		return
	}
	idle := now.Sub(e.lastRecv)
	if idle < ka {
		e.kaAt = e.lastRecv.Add(ka)
		return
	}
	interval := ka / 3
	if e.kaProbes >= 3 && idle >= ka+3*interval {
		e.fail(ErrTimeout)
		return
	}
	if !e.kaAt.IsZero() && now.Before(e.kaAt) {
		return
	}
	e.kaProbes++
	seg := e.header(now, e.sndNxt-1, 0) // seq one below: the peer must answer
	e.out = append(e.out, outSeg{path: (e.rotor + e.kaProbes) % len(e.view), seg: seg})
	e.kaAt = now.Add(interval)
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
