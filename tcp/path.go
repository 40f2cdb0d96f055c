package tcp

import (
	"sync"
	"sync/atomic"
	"time"

	"mpath/spray"
)

// Per-path transport state: RTT estimation (RFC 6298), delivery-rate estimation
// (draft-cheng-iccrg-delivery-rate-estimation), a model-based congestion controller in
// the manner of BBR (bottleneck bandwidth and min RTT per path, paced sends), and the
// RACK bookkeeping (RFC 8985) that keeps loss detection per path.
//
// Why model-based and per path: paths are disjoint relays with rates that differ by 10x
// or more, and the relays in the field (and the lab) lose packets at random. A loss-based
// controller halves a path's window on every random loss and, at 1% loss, keeps a 10
// Mbit/s path under 4 Mbit/s; a rate model does not. Control is uncoupled: each path
// runs its own controller, as DESIGN.md asks (the relays do not share a bottleneck).
//
// One controller per path and stack (pathCC), shared by the stack's connections; each
// connection keeps its own RTT, RACK and timer state for the path (pathState):
//
//	conn A ─┐ onSend / release / onAck ┌─ pathCC (path 1): model, window, pacing,
//	conn B ─┼──────────────────────────┤    bytes in flight of all, busy flows, counters
//	conn C ─┘ refresh: fair share      └─ each busy conn: window/n, pacing/n

const (
	minRTO         = 200 * time.Millisecond
	maxRTO         = 60 * time.Second
	initialRTO     = time.Second
	rtoGranularity = time.Millisecond

	startupGain    = 2.885 // 2/ln 2
	drainGain      = 1 / startupGain
	probeBWCwndGn  = 2.0
	bwWindowRounds = 10
	initialCwndSeg = 4
	minCwndSeg     = 2
	paceCredit     = 2 * time.Millisecond // burst allowance: Go timers sleep in whole milliseconds
)

// probeBWGains is the ProbeBW cycle: probe up for one min-RTT, drain for one, cruise six.
var probeBWGains = [8]float64{1.25, 0.75, 1, 1, 1, 1, 1, 1}

type ccMode uint8

const (
	modeStartup ccMode = iota
	modeDrain
	modeProbeBW
)

func (m ccMode) String() string {
	return [...]string{"startup", "drain", "probe_bw"}[m]
}

// pathCC is one path's congestion controller, shared by every connection of a stack
// that sends on the path: the path's bandwidth and min-RTT model, its rounds, mode and
// loss ceiling, its window and pacing rate, and the bytes all connections have in flight
// on it. Connections draw from it fairly: each busy connection (one with data in flight
// on the path, or more to send after having used it) gets an equal share of the window
// and of the pacing rate. A new connection starts from the path's model (its share of
// what the path is known to carry), not from an exponential startup of its own: a
// hundred flows each doubling into a full queue is what floods it. Losses and deliveries
// seen by any connection move the one model. With a single connection the share is the
// whole, and the controller behaves exactly as a per-connection one.
//
// Safe for concurrent use: connections live in several loops. mu is taken once per
// send, once per acknowledgement that delivered or lost bytes on the path, and once per
// output to read the share; nothing under it allocates.
type pathCC struct {
	mu sync.Mutex // guards the fields below

	mss      int
	inflight int // bytes in flight on the path, all connections together
	busy     int // connections drawing from the path

	// Delivery-rate estimation (path-wide: a sample measures what the path delivered).
	delivered     uint64
	deliveredTime time.Time
	firstSentTime time.Time
	lastDelivery  time.Time // when the path last delivered anything (any connection)
	appLimitedTo  uint64    // non-zero: samples until delivered passes this are app-limited
	down          bool      // a connection saw the path go down; the next to see it up resets the model

	// The model.
	minRTT             time.Duration
	mode               ccMode
	bw                 maxFilter
	round              uint64
	nextRoundDelivered uint64
	fullBw             float64
	fullBwCount        int
	filledPipe         bool
	cycleIdx           int
	cycleStart         time.Time
	pacingGain         float64
	cwndGain           float64
	pacingRate         float64 // bytes per second, the whole path
	cwnd               int     // bytes, the whole path
	roundLost          uint64
	roundDelivered     uint64
	roundRTT           time.Duration // largest RTT sample of the round: did a queue fill?
	randLoss           float64       // smoothed fraction of bytes lost at random (not to a queue)
	priorCwnd          int           // the window before a run of timeouts, restored by the next delivery
	inflightHi         int           // ceiling on the window after lossy rounds; 0: none
	lossFreeRounds     int

	// The path's counters, over every connection there was (kept here once; read
	// without the lock).
	retransmits, lost, spurious atomic.Uint64 // segments
	deliveredBytes              atomic.Uint64 // payload bytes the peer acknowledged
}

func newPathCC(mss int) *pathCC {
	c := &pathCC{mss: mss}
	c.start()
	return c
}

// start puts the model in its initial state (startup, a small window). Callers hold mu
// (or own c alone).
func (c *pathCC) start() {
	c.mode = modeStartup
	c.pacingGain, c.cwndGain = startupGain, startupGain
	c.cwnd = initialCwndSeg * c.mss
	c.bw = maxFilter{}
	c.fullBw, c.fullBwCount, c.filledPipe = 0, 0, false
	c.cycleIdx, c.cycleStart = 0, time.Time{}
	c.pacingRate = 0
	c.roundLost, c.roundDelivered, c.roundRTT = 0, 0, 0
	c.randLoss, c.priorCwnd = 0, 0
	c.inflightHi, c.lossFreeRounds = 0, 0
	c.appLimitedTo = 0
}

// ccSnapshot is a path controller's state for metrics.
type ccSnapshot struct {
	cwnd, inflight, busy int
	bw, pacing           float64
	mode                 ccMode
}

func (c *pathCC) snapshot() ccSnapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	return ccSnapshot{cwnd: c.cwnd, inflight: c.inflight, busy: c.busy, bw: c.bw.get(), pacing: c.pacingRate, mode: c.mode}
}

// pathShare is what one connection may use of a path for now.
type pathShare struct {
	cwnd   int
	pacing float64 // bytes per second
	bw     float64 // bytes per second
	shared bool    // other connections draw from the path too
}

// shareLocked is a connection's fair share: the path's window, pacing rate and bandwidth
// divided among the busy connections (counting the asker when it is not busy yet). The
// window share is whole segments, never below one: pacing, which adds up exactly, keeps
// the path's queue in check when a hundred flows each hold one.
func (c *pathCC) shareLocked(busy bool) pathShare {
	n := c.busy
	if !busy {
		n++
	}
	if n <= 1 {
		return pathShare{cwnd: c.cwnd, pacing: c.pacingRate, bw: c.arrivalRate()}
	}
	// Whole segments: a share of 1.6 segments is one segment in flight, and a hundred
	// flows each a fraction short left a window-limited path 30% short of its window.
	// So a share rounds up while the path has room for a segment, and down once it is
	// full (never below one segment).
	segs := c.cwnd / n / c.mss
	if c.inflight+c.mss <= c.cwnd {
		segs++
	}
	return pathShare{cwnd: max(segs, 1) * c.mss, pacing: c.pacingRate / float64(n), bw: c.arrivalRate() / float64(n), shared: true}
}

// arrivalRate is what the path delivers: the bandwidth model less the share lost at
// random (the schedulers' rate).
func (c *pathCC) arrivalRate() float64 { return c.bw.get() * (1 - c.randLoss) }

func (c *pathCC) bdp() float64 {
	bw := c.bw.get()
	if bw == 0 || c.minRTT == 0 {
		return 0
	}
	return bw * c.minRTT.Seconds()
}

// setPacingRateLocked sets the path's rate from the model; srtt (the asking connection's)
// prices the window while there is no bandwidth sample yet.
func (c *pathCC) setPacingRateLocked(srtt time.Duration) {
	bw := c.bw.get()
	var rate float64
	if bw > 0 {
		rate = c.pacingGain * bw
	} else {
		if srtt <= 0 {
			srtt = 100 * time.Millisecond
		}
		rate = c.pacingGain * float64(c.cwnd) / srtt.Seconds()
	}
	if c.mode == modeStartup && !c.filledPipe && rate < c.pacingRate {
		return // never slow down while still looking for the bandwidth
	}
	// No floor from the window: with many flows on a path, each flow's share can be well
	// under a segment per round trip. Only a rate that is no rate at all (a degenerate
	// sample) is lifted, to one segment per second.
	c.pacingRate = max(rate, float64(c.mss))
}

// rateSample is what one acknowledgement taught about one path.
type rateSample struct {
	delivered  int // bytes newly delivered on the path
	lost       int // bytes newly declared lost on the path
	prior      uint64
	priorTime  time.Time
	firstSent  time.Time
	sentAt     time.Time // send time of the most recently sent segment delivered
	appLimited bool
	rtt        time.Duration // RTT of that segment; 0 if it was retransmitted
	symRTT     time.Duration // the RTT again when the ACK came back over the same path
	has        bool
}

// take records a delivered segment into the sample, keeping the most recently sent one.
func (rs *rateSample) take(seg *txSeg, now time.Time, ackPath int) {
	n := int(seg.end - seg.seq)
	rs.delivered += n
	if rs.has && !seg.sentAt.After(rs.sentAt) {
		return
	}
	rs.has = true
	rs.prior, rs.priorTime, rs.firstSent = seg.dlvd, seg.dlvdTime, seg.firstSent
	rs.sentAt, rs.appLimited = seg.sentAt, seg.appLimited
	if seg.dlvdTime.IsZero() {
		// A SYN: it carries an RTT but no delivery-rate snapshot.
		rs.priorTime, rs.firstSent = seg.sentAt, seg.sentAt
		rs.appLimited = true
	}
	rs.rtt, rs.symRTT = 0, 0
	if seg.retrans == 0 {
		rs.rtt = now.Sub(seg.sentAt)
		if ackPath == seg.path {
			rs.symRTT = rs.rtt
		}
	}
}

// onAckLocked runs the model after an acknowledgement delivered or lost bytes on the
// path. srtt and minRTT are the acknowledged connection's (after this sample).
func (c *pathCC) onAckLocked(now time.Time, rs *rateSample, srtt, minRTT, rttvar time.Duration) {
	if minRTT > 0 && (c.minRTT == 0 || minRTT < c.minRTT) {
		c.minRTT = minRTT
	}
	if rs.delivered > 0 {
		c.delivered += uint64(rs.delivered)
		c.deliveredTime = now
		c.lastDelivery = now
	}
	c.roundDelivered += uint64(rs.delivered)
	c.roundLost += uint64(rs.lost)
	if c.appLimitedTo != 0 && c.delivered > c.appLimitedTo {
		c.appLimitedTo = 0
	}
	roundStart := false
	if rs.has {
		if rs.rtt > 0 {
			c.roundRTT = max(c.roundRTT, rs.rtt)
		}
		c.firstSentTime = rs.sentAt
		// A round trip ends when a segment sent after the previous round began is delivered.
		if rs.prior >= c.nextRoundDelivered {
			c.nextRoundDelivered = c.delivered
			c.round++
			roundStart = true
		}
		// Rate sample: delivered over the longer of the send and ack intervals.
		sendElapsed := rs.sentAt.Sub(rs.firstSent)
		ackElapsed := now.Sub(rs.priorTime)
		interval := max(sendElapsed, ackElapsed)
		if interval > 0 && c.minRTT > 0 && interval >= c.minRTT/2 && c.delivered >= rs.prior {
			// Bytes lost at random were carried by the path as far as the loss: the rate
			// the path takes is the delivered rate over the share that survives. Without
			// this, loss above 20% (1 - 1/1.25, the probe gain) shrinks every probe's
			// sample below the estimate it probed from, and the estimate decays to nothing
			// (30% loss on a 300 ms path: 7.1 -> 1.7 Mbit/s in 11 s, issue 13).
			rate := float64(c.delivered-rs.prior) / interval.Seconds() / (1 - c.randLoss)
			if !rs.appLimited || rate >= c.bw.get() {
				c.bw.update(rate, c.round, bwWindowRounds)
			}
		}
	}
	if roundStart {
		c.checkFullPipe(rs, srtt, rttvar)
		c.boundInflight(rttvar)
		c.roundLost, c.roundDelivered, c.roundRTT = 0, 0, 0
	}
	c.updateMode(now, rs)
	c.setPacingRateLocked(srtt)
	c.setCwnd(rs.delivered)
	if c.priorCwnd > 0 && rs.delivered > 0 {
		// The path delivers again after a timeout: back to the window it had (BBR's
		// restore of the window saved at a timeout), within the loss ceiling. A timeout
		// is often one lost last segment that nothing sent after it could reveal; the
		// bandwidth model did not change, and regrowing from two segments takes a long
		// path seconds.
		cw := c.priorCwnd
		if c.inflightHi > 0 {
			cw = min(cw, c.inflightHi)
		}
		c.cwnd = max(c.cwnd, cw)
		c.priorCwnd = 0
	}
}

func (c *pathCC) checkFullPipe(rs *rateSample, srtt, rttvar time.Duration) {
	if c.filledPipe {
		return
	}
	// Heavy loss in a round ends the search (a shallow buffer overflowed).
	if lossy, queued := c.roundLoss(rttvar); lossy && queued {
		c.filledPipe = true
		return
	}
	// A queue building up ends it too, once the bandwidth also stopped growing: with a
	// bandwidth-delay product in flight the RTT has grown well past the path's minimum.
	// This matters for paths the scheduler uses less than they could carry: their samples
	// are application-limited, so the bandwidth-growth test below never runs for them.
	// The margin (at least 4 ms) keeps capture-timer jitter on LAN paths from counting.
	bw := c.bw.get()
	if bdp := c.bdp(); bdp > 0 && float64(c.inflight) >= bdp && bw < c.fullBw*1.25 &&
		srtt > c.minRTT+max(c.minRTT/2, 4*time.Millisecond) {
		c.filledPipe = true
		return
	}
	if rs.appLimited {
		c.fullBw = max(c.fullBw, bw)
		return
	}
	if bw >= c.fullBw*1.25 {
		c.fullBw, c.fullBwCount = bw, 0
		return
	}
	c.fullBwCount++
	if c.fullBwCount >= 3 {
		c.filledPipe = true
	}
}

// boundInflight runs at the end of each round trip: a round that lost more than 2% of
// what it delivered while a queue built up (roundLoss) means the path's queue overflows
// (many flows share it, or a probe went too far), so the amount in flight gets a ceiling
// 30% below the window that lost; each other round raises the ceiling again, by 1, 2, 4
// ... 32 segments, and once it clears three bandwidth-delay products it is dropped.
// Random loss leaves the window alone (the reason for a model-based controller): below
// the threshold, and above it when the round's RTT shows no queue. This is BBRv2's
// inflight_hi in its simplest form, minus its collapse under random loss: at 30% loss
// on a 10 Mbit/s path every round is over 2%, and each cut made the next round's
// bandwidth sample (and so the BDP floor below) smaller, down to a few segments (0.5
// Mbit/s, issue 13's lossy rows).
func (c *pathCC) boundInflight(rttvar time.Duration) {
	total := c.roundDelivered + c.roundLost
	lossy, queued := c.roundLoss(rttvar)
	if total > 0 && (!lossy || !queued) {
		// Loss without a queue behind it is the path's own: smooth its fraction over
		// about four rounds (at most a half counts, so that a burst of losses cannot
		// double the estimate).
		c.randLoss = min((3*c.randLoss+float64(c.roundLost)/float64(total))/4, maxRandLoss)
	}
	if lossy && queued {
		base := c.cwnd
		if c.inflightHi > 0 {
			base = min(base, c.inflightHi)
		}
		// Never below one bandwidth-delay product: that much in flight fills the pipe
		// without queueing, so what overflowed was the excess. Without this floor a
		// short bottleneck queue (a few milliseconds, as AQM keeps it) ratchets a
		// long-RTT path's ceiling down at every probe: each probe-up loses a few
		// packets and takes 30%, while the ceiling grows back by at most 32 segments a
		// round (BBRv2 floors it likewise, at its target in flight).
		c.inflightHi = max(base*7/10, int(c.bdp()), c.minCwnd())
		c.lossFreeRounds = 0
		return
	}
	if c.inflightHi == 0 || total == 0 {
		return
	}
	c.lossFreeRounds++
	c.inflightHi += c.mss << min(c.lossFreeRounds-1, 5)
	if bdp := c.bdp(); bdp > 0 && float64(c.inflightHi) > 3*bdp+float64(3*c.mss) {
		c.inflightHi = 0
	}
}

// maxRandLoss bounds the random loss fraction the bandwidth model compensates for.
const maxRandLoss = 0.5

// roundLoss reports whether the round that just ended lost more than 2% of its bytes
// (at least two segments), and whether its largest RTT sample rose above the path's
// minimum by more than queueSignal plus the RTT variation (RFC 6298's RTTVAR, the
// asking connection's): congestion loss comes from a full queue, which delays what it
// does deliver; random loss (a lossy link, a relay dropping at random) comes at any
// RTT. RTTVAR keeps jitter that is not queueing (a loaded host's scheduling: 5-25 ms
// on a 300 ms lab path at load 4) from reading as a full queue. A round without an RTT
// sample counts as queued.
func (c *pathCC) roundLoss(rttvar time.Duration) (lossy, queued bool) {
	lossy = c.roundLost >= uint64(2*c.mss) && c.roundLost*50 > c.roundDelivered+c.roundLost
	queued = c.roundRTT == 0 || c.minRTT == 0 || c.roundRTT > c.minRTT+queueSignal(c.minRTT)+rttvar
	return lossy, queued
}

// queueSignal is how far above a path's minimum an RTT sample must be to show a queue:
// 2 ms (timer and scheduling jitter) plus a quarter of a percent of the minimum, so that
// a 5 ms queue (tbf latency 5ms, an AQM's target) still shows on a 600 ms path (at 1%,
// probes overflowing it there passed for random loss: 10/600 ms with a 5 ms queue fell
// from 82% to 75% of the sum in simnet).
func queueSignal(minRTT time.Duration) time.Duration {
	return 2*time.Millisecond + minRTT/400
}

func (c *pathCC) updateMode(now time.Time, rs *rateSample) {
	switch c.mode {
	case modeStartup:
		if c.filledPipe {
			c.mode = modeDrain
			c.pacingGain, c.cwndGain = drainGain, startupGain
		}
	case modeDrain:
		if float64(c.inflight) <= c.bdp() {
			c.enterProbeBW(now)
		}
	case modeProbeBW:
		gain := probeBWGains[c.cycleIdx]
		elapsed := now.Sub(c.cycleStart) > c.minRTT
		next := elapsed
		switch {
		case gain > 1:
			// Probe up until in flight reached the probe level, or stop at once on loss.
			next = (elapsed && float64(c.inflight) >= gain*c.bdp()) || rs.lost > 0 || now.Sub(c.cycleStart) > 2*c.minRTT+10*time.Millisecond
		case gain < 1:
			next = elapsed || float64(c.inflight) <= c.bdp()
		}
		if next {
			c.cycleIdx = (c.cycleIdx + 1) % len(probeBWGains)
			c.cycleStart = now
			c.pacingGain = probeBWGains[c.cycleIdx]
		}
	}
}

func (c *pathCC) enterProbeBW(now time.Time) {
	c.mode = modeProbeBW
	c.cwndGain = probeBWCwndGn
	c.cycleIdx = 2 // start cruising; the cycle brings the probe around
	c.cycleStart = now
	c.pacingGain = probeBWGains[c.cycleIdx]
}

func (c *pathCC) setCwnd(acked int) {
	target := c.cwndGain*c.bdp() + float64(3*c.mss)
	cw := c.cwnd
	if c.filledPipe {
		if bdp := c.bdp(); bdp > 0 {
			cw = min(cw+acked, int(target))
		}
	} else if c.bdp() == 0 || float64(cw) < target {
		cw += acked
	}
	if c.inflightHi > 0 {
		cw = min(cw, c.inflightHi)
	}
	c.cwnd = max(cw, c.minCwnd())
}

// minCwnd is the smallest window the path keeps: two segments.
func (c *pathCC) minCwnd() int { return minCwndSeg * c.mss }

// sentRef is one transmission on a path, in send order (the path's RACK queue).
type sentRef struct {
	seq    uint32
	sentAt time.Time
}

// pathState is one path of one connection: the connection's RTT estimate, RACK state,
// retransmission timer and counters, and its bytes in flight. Owned by the connection's
// loop. Congestion control is the path's (cc), shared with the stack's other
// connections; v shows the scheduler this connection's share of it.
//
// One owner per fact: the connection's bytes in flight on the path (v.InFlight, and
// their part of cc.inflight) change only through onSend and release.
type pathState struct {
	v    *spray.Path // the scheduler-visible part (cwnd share, in flight, RTTs, rate, pacing)
	mss  int
	cc   *pathCC
	busy bool // counted in cc.busy

	// RTT (RFC 6298).
	srtt, rttvar time.Duration
	minRTT       time.Duration
	samples      int           // RTT samples taken (the first replaces a hint)
	symSRTT      time.Duration // RTT from ACKs that came back over this path
	symMin       time.Duration
	backoff      uint
	rtoAt        time.Time // path timeout while it has data in flight; zero when idle
	rtoSince     time.Time // when rtoAt was last armed
	timeouts     int       // consecutive path timeouts without a delivery

	pacingRate float64   // this connection's share of the path's pacing rate, bytes per second
	paceFrom   time.Time // the last send's place on the pacing clock
	paceSize   int       // and its size
	share      pathShare // the share last applied to v

	// RACK, per path.
	rackXmit time.Time
	rackEnd  uint32
	rackRTT  time.Duration
	sent     []sentRef
	sentHead int

	// This connection's own traffic on the path (Conn.Paths); the path's counters over
	// all connections are cc's.
	txPackets, txBytes uint64
	rxPayload          uint64 // payload bytes that arrived on the path (duplicates included)
}

// init sets the connection up on path v, drawing from cc (nil: a controller of its own).
func (p *pathState) init(v *spray.Path, mss int, rttHint time.Duration, cc *pathCC) {
	p.v = v
	p.mss = mss
	if cc == nil {
		cc = newPathCC(mss)
	}
	p.cc = cc
	if rttHint > 0 {
		// A hint from the handshake or from other connections over the same path: it sets
		// the first pacing rate and RTO; the path still earns its own samples.
		p.srtt, p.rttvar = rttHint, rttHint/2
		// Not shown to the scheduler: a path it sees no sample for is probed; a hint
		// (perhaps inflated by another flow's queue) would make it look measured and
		// slow, and the scheduler might never send on it.
	}
	p.setPacingRate()
}

// setPacingRate refreshes the path's pacing rate with this connection's RTT (needed
// while the path has no bandwidth sample) and takes this connection's share.
func (p *pathState) setPacingRate() {
	c := p.cc
	c.mu.Lock()
	if p.minRTT > 0 && (c.minRTT == 0 || p.minRTT < c.minRTT) {
		c.minRTT = p.minRTT
	}
	c.setPacingRateLocked(p.srtt)
	sh := c.shareLocked(p.busy)
	c.mu.Unlock()
	p.apply(sh)
}

// refresh takes this connection's current share of the path (other connections come
// and go): called before the scheduler looks at the paths.
func (p *pathState) refresh() {
	c := p.cc
	c.mu.Lock()
	sh := c.shareLocked(p.busy)
	c.mu.Unlock()
	if sh != p.share {
		p.apply(sh)
	}
}

func (p *pathState) apply(sh pathShare) {
	p.share = sh
	if sh.shared && sh.pacing > p.pacingRate && p.paceSize > 0 {
		// The share grew (the path's rate rose, or other connections left): the wait
		// for the next send was priced at the old rate; price it at the new one, or a
		// connection that sent at a hundredth of a path in startup waits for ages.
		if next := p.paceFrom.Add(time.Duration(float64(p.paceSize) / sh.pacing * float64(time.Second))); next.Before(p.v.NextSend) {
			p.v.NextSend = next
		}
	}
	p.v.Cwnd, p.pacingRate, p.v.DeliveryRate = sh.cwnd, sh.pacing, sh.bw
}

// rto is the path's retransmission timeout with backoff.
func (p *pathState) rto() time.Duration {
	r := initialRTO
	if p.srtt > 0 {
		r = p.srtt + max(4*p.rttvar, rtoGranularity)
		r = max(r, minRTO)
	}
	r <<= min(p.backoff, 10)
	return min(r, maxRTO)
}

func (p *pathState) armRTO(now time.Time) {
	p.rtoAt, p.rtoSince = now.Add(p.rto()), now
}

// rttSample folds in one RTT measurement (RFC 6298 section 2).
func (p *pathState) rttSample(r time.Duration) {
	if r <= 0 {
		r = time.Microsecond
	}
	if p.minRTT == 0 || r < p.minRTT {
		p.minRTT = r
	}
	if p.srtt == 0 || p.samples == 0 {
		p.srtt, p.rttvar = r, r/2
	} else {
		d := p.srtt - r
		if d < 0 {
			d = -d
		}
		p.rttvar = (3*p.rttvar + d) / 4
		p.srtt = (7*p.srtt + r) / 8
	}
	p.samples++
	p.publishRTT()
}

// symSample folds in an RTT measured by an acknowledgement that came back over this
// same path. Delivery news usually arrives first over the fastest path (every ACK
// carries SACK blocks for all paths), so ordinary samples of a slow path measure its
// forward delay plus the fastest return delay; the scheduler's arrival model wants the
// path's own one-way delay, which these symmetric samples give (half of them).
func (p *pathState) symSample(r time.Duration) {
	if r <= 0 {
		return
	}
	if p.symMin == 0 || r < p.symMin {
		p.symMin = r
	}
	if p.symSRTT == 0 {
		p.symSRTT = r
	} else {
		p.symSRTT = (7*p.symSRTT + r) / 8
	}
	p.publishRTT()
}

// publishRTT shows the scheduler the path's RTT: symmetric samples when there are
// any, else the ordinary ones.
func (p *pathState) publishRTT() {
	if p.samples == 0 {
		p.v.SRTT, p.v.MinRTT = 0, 0 // only hints so far: let the scheduler probe the path
		return
	}
	if p.symSRTT > 0 {
		p.v.SRTT, p.v.MinRTT = max(p.symSRTT, p.srtt), max(p.symMin, p.minRTT)
		return
	}
	p.v.SRTT, p.v.MinRTT = p.srtt, p.minRTT
}

// onSend accounts a transmission of size bytes on the path starting now (it is in
// flight from here until release), advances this connection's pacing clock, and returns
// the path's rate-sample snapshot to store with the segment.
func (p *pathState) onSend(now time.Time, seq uint32, size int) (dlvd uint64, dlvdTime, firstSent time.Time, appLimited bool) {
	if p.v.InFlight == 0 {
		p.armRTO(now)
	}
	p.v.InFlight += size
	p.txPackets++
	p.txBytes += uint64(size)
	c := p.cc
	c.mu.Lock()
	if c.inflight == 0 {
		c.firstSentTime, c.deliveredTime = now, now
	}
	c.inflight += size
	if !p.busy {
		p.busy = true
		c.busy++
	}
	dlvd, dlvdTime, firstSent, appLimited = c.delivered, c.deliveredTime, c.firstSentTime, c.appLimitedTo != 0
	c.mu.Unlock()
	// Pacing: the next send may start size/rate later, with a small credit so that a
	// path idle for a while does not burst, and timer granularity does not starve it.
	// A connection drawing a share of a busy path may be late by up to one of its own
	// intervals (with a hundred flows on a path, each sends a segment every few tens of
	// milliseconds, each send its own timer wake-up: a credit of 2 ms lost each
	// wake-up's lateness for good, and the flows together fell well short of the path's
	// rate in the lab).
	if p.pacingRate > 0 {
		gap := time.Duration(float64(size) / p.pacingRate * float64(time.Second))
		credit := paceCredit
		if p.share.shared {
			credit = max(credit, gap)
		}
		start := p.v.NextSend
		if floor := now.Add(-credit); start.Before(floor) {
			start = floor
		}
		p.v.NextSend = start.Add(gap)
		p.paceFrom, p.paceSize = start, size
	}
	p.sent = append(p.sent, sentRef{seq: seq, sentAt: now})
	return dlvd, dlvdTime, firstSent, appLimited
}

// release takes n bytes out of flight on the path (delivered, declared lost, or moved
// to another path). When nothing is left in flight the path's timer stops.
func (p *pathState) release(n int) {
	if n <= 0 || p.v.InFlight <= 0 {
		return
	}
	n = min(n, p.v.InFlight)
	p.v.InFlight -= n
	c := p.cc
	c.mu.Lock()
	c.inflight = max(c.inflight-n, 0)
	c.mu.Unlock()
	if p.v.InFlight == 0 {
		p.rtoAt = time.Time{}
	}
}

// idle reports the connection has no more use for the path for now (nothing in flight
// on it, nothing more to send): it stops drawing a share.
func (p *pathState) idle() {
	if !p.busy || p.v.InFlight > 0 {
		return
	}
	p.busy = false
	c := p.cc
	c.mu.Lock()
	c.busy--
	c.mu.Unlock()
}

// leave returns everything the connection holds of the path (it ended).
func (p *pathState) leave() {
	p.release(p.v.InFlight)
	p.rtoAt = time.Time{}
	p.idle()
}

// markAppLimited notes that the connection could have sent on the path and had nothing
// to send: rate samples until what is in flight now is delivered must not lower the
// bandwidth model. While other connections draw from the path, they keep it busy and
// this one's lack of data says nothing about the path.
func (p *pathState) markAppLimited() {
	c := p.cc
	c.mu.Lock()
	others := c.busy
	if p.busy {
		others--
	}
	if others <= 0 {
		c.appLimitedTo = max(c.delivered+uint64(c.inflight), 1)
	}
	c.mu.Unlock()
}

// countRetransmit, countLost and countSpurious count a segment re-sent on the path, one
// declared lost on it, and one declared lost that was delivered after all.
func (p *pathState) countRetransmit() { p.cc.retransmits.Add(1) }
func (p *pathState) countLost()       { p.cc.lost.Add(1) }
func (p *pathState) countSpurious()   { p.cc.spurious.Add(1) }

// sendable reports whether pacing lets the path send at now.
func (p *pathState) sendable(now time.Time) bool { return !p.v.NextSend.After(now) }

// onAck takes what an acknowledgement taught about this path: this connection's RTT and
// timer, then the path's model, then the connection's new share.
func (p *pathState) onAck(now time.Time, rs *rateSample) {
	if rs.delivered > 0 {
		p.cc.deliveredBytes.Add(uint64(rs.delivered))
		p.timeouts, p.backoff = 0, 0
		if p.v.InFlight > 0 {
			p.armRTO(now)
		}
	}
	if rs.has {
		if rs.rtt > 0 {
			p.rttSample(rs.rtt)
		}
		if rs.symRTT > 0 {
			p.symSample(rs.symRTT)
		}
	}
	c := p.cc
	c.mu.Lock()
	c.mss = p.mss
	c.onAckLocked(now, rs, p.srtt, p.minRTT, p.rttvar)
	sh := c.shareLocked(p.busy)
	c.mu.Unlock()
	p.apply(sh)
}

// onTimeout is the path's retransmission timeout for this connection: everything it has
// in flight on the path is presumed lost (the caller re-sends it elsewhere). The path's
// window restarts small, and the timeout counts towards marking the path down, unless
// another connection had a delivery over the path since this timer was armed: then the
// path works, and this connection only lost its last segments on it (with a hundred
// flows on a path, each has a segment or two in flight, and a tail loss is common).
func (p *pathState) onTimeout(now time.Time) {
	p.backoff++
	p.rtoAt = time.Time{}
	c := p.cc
	c.mu.Lock()
	if !c.lastDelivery.After(p.rtoSince) {
		// The window restarts small until the path delivers again (then onAckLocked
		// restores the one it had). A path still in startup keeps searching for its
		// bandwidth: a timeout there says little about the rate (with a window of a few
		// segments, one lost last segment is enough, as nothing sent after it can
		// reveal the loss), and ending startup from a window of a few segments left a
		// 300 ms path at 30% random loss under 50 kB/s for 15 s in the lab (the probe
		// cycle grows the estimate by a quarter every 8 round trips). Startup still ends
		// on a bandwidth plateau or a lossy round with a queue (checkFullPipe).
		p.timeouts++
		if c.priorCwnd == 0 {
			c.priorCwnd = c.cwnd
		}
		c.cwnd = c.minCwnd()
		c.appLimitedTo = 0
	}
	sh := c.shareLocked(p.busy)
	c.mu.Unlock()
	p.apply(sh)
}

// wentDown tells the path's controller that the path was seen dead.
func (p *pathState) wentDown() {
	p.cc.mu.Lock()
	p.cc.down = true
	p.cc.mu.Unlock()
}

// reset restarts this connection's use of the path after it came back from down; the
// first connection to see it back restarts the path's model too.
func (p *pathState) reset(now time.Time) {
	p.backoff, p.timeouts = 0, 0
	p.samples = 0 // the next sample replaces the old estimate
	p.rttvar = p.srtt / 2
	p.rackXmit, p.rackEnd, p.rackRTT = time.Time{}, 0, 0
	p.rtoAt, p.rtoSince = time.Time{}, time.Time{}
	if p.v.InFlight > 0 {
		// Segments sent while the path was down (probes) stay in flight.
		p.armRTO(now)
	}
	p.v.DeliveryRate = 0
	p.v.NextSend = now
	p.pacingRate = 0
	c := p.cc
	c.mu.Lock()
	if c.down {
		// delivered, round and nextRoundDelivered stay: they are monotonic, and segments
		// in flight hold snapshots of them.
		c.down = false
		c.mss = p.mss
		c.start()
	}
	c.setPacingRateLocked(p.srtt)
	sh := c.shareLocked(p.busy)
	c.mu.Unlock()
	p.apply(sh)
	p.v.DeliveryRate = 0
}

// reoWnd is the RACK reordering window for this path: a quarter of its min RTT. Only
// reordering within the path counts here; reordering between paths never makes a loss.
func (p *pathState) reoWnd() time.Duration {
	if p.minRTT == 0 {
		return 0
	}
	return min(p.minRTT/4, p.srtt)
}

// maxFilter is a windowed maximum over rounds (Kathleen Nichols' three-sample filter,
// as BBR uses for the bottleneck bandwidth).
type maxFilter struct {
	s [3]struct {
		v float64
		t uint64
	}
}

func (f *maxFilter) get() float64 { return f.s[0].v }

func (f *maxFilter) update(v float64, t, win uint64) {
	set := func(i int) { f.s[i].v, f.s[i].t = v, t }
	if v >= f.s[0].v || t-f.s[2].t > win {
		set(0)
		set(1)
		set(2)
		return
	}
	if v >= f.s[1].v {
		set(1)
		set(2)
	} else if v >= f.s[2].v {
		set(2)
	}
	dt := t - f.s[0].t
	switch {
	case dt > win:
		f.s[0], f.s[1] = f.s[1], f.s[2]
		set(2)
		if t-f.s[0].t > win {
			f.s[0], f.s[1] = f.s[1], f.s[2]
			set(2)
		}
	case f.s[1].t == f.s[0].t && dt > win/4:
		set(1)
		set(2)
	case f.s[2].t == f.s[1].t && dt > win/2:
		set(2)
	}
}
