package tcp

import (
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

// pathShare is what all connections of a stack learn together about one path: how much
// was lost and delivered lately, and whether the path is congested (many flows, or one
// that overran it). A connection starting on a congested path skips its exponential
// startup: a hundred flows doubling their rates into a full queue is what floods it.
// Safe for concurrent use.
type pathShare struct {
	lost, delivered atomic.Uint64 // bytes since the stack last looked
	congested       atomic.Bool
}

// congestedLoss is the loss fraction over a probe interval above which a path counts
// as congested.
const congestedLoss = 0.05

// review folds the counters of the last interval into the congested flag.
func (s *pathShare) review() {
	lost, dlv := s.lost.Swap(0), s.delivered.Swap(0)
	if lost+dlv == 0 {
		return
	}
	s.congested.Store(float64(lost) > congestedLoss*float64(lost+dlv))
}

// sentRef is one transmission on a path, in send order (the path's RACK queue).
type sentRef struct {
	seq    uint32
	sentAt time.Time
}

// pathState is one path of one connection. Owned by the connection's loop.
type pathState struct {
	v   *spray.Path // the scheduler-visible part (cwnd, in flight, RTTs, rate, pacing)
	mss int
	sh  *pathShare // the stack's view of the path; nil when driven alone

	// RTT (RFC 6298).
	srtt, rttvar time.Duration
	minRTT       time.Duration
	samples      int           // RTT samples taken (the first replaces a hint)
	symSRTT      time.Duration // RTT from ACKs that came back over this path
	symMin       time.Duration
	backoff      uint
	rtoAt        time.Time // path timeout while it has data in flight; zero when idle
	timeouts     int       // consecutive path timeouts without a delivery

	// Delivery-rate estimation.
	delivered     uint64
	deliveredTime time.Time
	firstSentTime time.Time
	appLimitedTo  uint64 // non-zero: samples until delivered passes this are app-limited

	// Model-based congestion control.
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
	pacingRate         float64 // bytes per second
	roundLost          uint64
	roundDelivered     uint64
	roundRTT           time.Duration // largest RTT sample of the round: did a queue fill?
	randLoss           float64       // smoothed fraction of bytes lost at random (not to a queue)
	priorCwnd          int           // the window before a run of timeouts, restored by the next delivery
	inflightHi         int           // ceiling on the window after lossy rounds; 0: none
	lossFreeRounds     int

	// RACK, per path.
	rackXmit time.Time
	rackEnd  uint32
	rackRTT  time.Duration
	sent     []sentRef
	sentHead int

	// Counters for metrics.
	txPackets, txBytes   uint64
	rtxPackets, rtxBytes uint64
	lostPackets          uint64
	deliveredPackets     uint64
	spurious             uint64
	rxPayload            uint64 // payload bytes that arrived on the path (duplicates included)
}

func (p *pathState) init(v *spray.Path, mss int, rttHint time.Duration, sh *pathShare) {
	p.v = v
	p.mss = mss
	p.sh = sh
	p.mode = modeStartup
	p.pacingGain, p.cwndGain = startupGain, startupGain
	v.Cwnd = initialCwndSeg * mss
	if sh != nil && sh.congested.Load() {
		// Other flows fill the path: start cruising instead of doubling.
		p.filledPipe = true
		p.mode = modeProbeBW
		p.cwndGain, p.cycleIdx, p.pacingGain = probeBWCwndGn, 2, 1
		v.Cwnd = p.minCwnd()
	}
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

// bdp is the path's estimated bandwidth-delay product in bytes (0 when unknown).
func (p *pathState) bdp() float64 {
	bw := p.bw.get()
	if bw == 0 || p.minRTT == 0 {
		return 0
	}
	return bw * p.minRTT.Seconds()
}

func (p *pathState) setPacingRate() {
	bw := p.bw.get()
	var rate float64
	if bw > 0 {
		rate = p.pacingGain * bw
	} else {
		rtt := p.srtt
		if rtt <= 0 {
			rtt = 100 * time.Millisecond
		}
		rate = p.pacingGain * float64(p.v.Cwnd) / rtt.Seconds()
	}
	if p.mode == modeStartup && !p.filledPipe && rate < p.pacingRate {
		return // never slow down while still looking for the bandwidth
	}
	// No floor from the window: with many flows on a path, each flow's fair share can be
	// well under a segment per round trip, and a floor of a few segments per RTT per flow
	// would overrun the path's queue by itself. Only a rate that is no rate at all (a
	// degenerate sample) is lifted, to one segment per second.
	p.pacingRate = max(rate, float64(p.mss))
}

// onSend updates pacing and delivery-rate state for a transmission of size bytes
// starting now, and returns the rate-sample snapshot to store with the segment.
func (p *pathState) onSend(now time.Time, seq uint32, size int) (dlvd uint64, dlvdTime, firstSent time.Time, appLimited bool) {
	if p.v.InFlight == 0 {
		p.firstSentTime, p.deliveredTime = now, now
		p.rtoAt = now.Add(p.rto())
	}
	p.v.InFlight += size
	p.txPackets++
	p.txBytes += uint64(size)
	// Pacing: the next send may start size/rate later, with a small credit so that a
	// path idle for a while does not burst, and timer granularity does not starve it.
	if p.pacingRate > 0 {
		start := p.v.NextSend
		if floor := now.Add(-paceCredit); start.Before(floor) {
			start = floor
		}
		p.v.NextSend = start.Add(time.Duration(float64(size) / p.pacingRate * float64(time.Second)))
	}
	p.sent = append(p.sent, sentRef{seq: seq, sentAt: now})
	return p.delivered, p.deliveredTime, p.firstSentTime, p.appLimitedTo != 0
}

// sendable reports whether pacing lets the path send at now.
func (p *pathState) sendable(now time.Time) bool { return !p.v.NextSend.After(now) }

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

// onAck runs the model after an acknowledgement delivered or lost bytes on this path.
func (p *pathState) onAck(now time.Time, rs *rateSample) {
	if rs.delivered > 0 {
		p.delivered += uint64(rs.delivered)
		p.deliveredTime = now
		p.deliveredPackets++
		p.timeouts, p.backoff = 0, 0
		if p.v.InFlight > 0 {
			p.rtoAt = now.Add(p.rto())
		}
	}
	p.roundDelivered += uint64(rs.delivered)
	p.roundLost += uint64(rs.lost)
	if p.appLimitedTo != 0 && p.delivered > p.appLimitedTo {
		p.appLimitedTo = 0
	}
	roundStart := false
	if rs.has {
		if rs.rtt > 0 {
			p.rttSample(rs.rtt)
			p.roundRTT = max(p.roundRTT, rs.rtt)
		}
		if rs.symRTT > 0 {
			p.symSample(rs.symRTT)
		}
		p.firstSentTime = rs.sentAt
		// A round trip ends when a segment sent after the previous round began is delivered.
		if rs.prior >= p.nextRoundDelivered {
			p.nextRoundDelivered = p.delivered
			p.round++
			roundStart = true
		}
		// Rate sample: delivered over the longer of the send and ack intervals.
		sendElapsed := rs.sentAt.Sub(rs.firstSent)
		ackElapsed := now.Sub(rs.priorTime)
		interval := max(sendElapsed, ackElapsed)
		if interval > 0 && p.minRTT > 0 && interval >= p.minRTT/2 && p.delivered >= rs.prior {
			// Bytes lost at random were carried by the path as far as the loss: the rate
			// the path takes is the delivered rate over the share that survives. Without
			// this, loss above 20% (1 - 1/1.25, the probe gain) shrinks every probe's
			// sample below the estimate it probed from, and the estimate decays to nothing
			// (30% loss on a 300 ms path: 7.1 -> 1.7 Mbit/s in 11 s, issue 13).
			rate := float64(p.delivered-rs.prior) / interval.Seconds() / (1 - p.randLoss)
			if !rs.appLimited || rate >= p.bw.get() {
				p.bw.update(rate, p.round, bwWindowRounds)
			}
		}
	}
	p.v.DeliveryRate = p.bw.get() * (1 - p.randLoss) // what arrives: the schedulers' rate
	if roundStart {
		p.checkFullPipe(rs)
		p.boundInflight()
		p.roundLost, p.roundDelivered, p.roundRTT = 0, 0, 0
	}
	p.updateMode(now, rs)
	p.setPacingRate()
	p.setCwnd(rs.delivered)
	if p.priorCwnd > 0 && rs.delivered > 0 {
		// The path delivers again after a timeout: back to the window it had (BBR's
		// restore of the window saved at a timeout), within the loss ceiling. A timeout
		// is often one lost last segment that nothing sent after it could reveal; the
		// bandwidth model did not change, and regrowing from two segments takes a long
		// path seconds.
		cw := p.priorCwnd
		if p.inflightHi > 0 {
			cw = min(cw, p.inflightHi)
		}
		p.v.Cwnd = max(p.v.Cwnd, cw)
		p.priorCwnd = 0
	}
}

func (p *pathState) checkFullPipe(rs *rateSample) {
	if p.filledPipe {
		return
	}
	// Heavy loss in a round ends the search (a shallow buffer overflowed).
	if lossy, queued := p.roundLoss(); lossy && queued {
		p.filledPipe = true
		return
	}
	// A queue building up ends it too, once the bandwidth also stopped growing: with a
	// bandwidth-delay product in flight the RTT has grown well past the path's minimum.
	// This matters for paths the scheduler uses less than they could carry: their samples
	// are application-limited, so the bandwidth-growth test below never runs for them.
	// The margin (at least 4 ms) keeps capture-timer jitter on LAN paths from counting.
	bw := p.bw.get()
	if bdp := p.bdp(); bdp > 0 && float64(p.v.InFlight) >= bdp && bw < p.fullBw*1.25 &&
		p.srtt > p.minRTT+max(p.minRTT/2, 4*time.Millisecond) {
		p.filledPipe = true
		return
	}
	if rs.appLimited {
		p.fullBw = max(p.fullBw, bw)
		return
	}
	if bw >= p.fullBw*1.25 {
		p.fullBw, p.fullBwCount = bw, 0
		return
	}
	p.fullBwCount++
	if p.fullBwCount >= 3 {
		p.filledPipe = true
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
func (p *pathState) boundInflight() {
	total := p.roundDelivered + p.roundLost
	lossy, queued := p.roundLoss()
	if p.sh != nil {
		if !lossy || queued {
			p.sh.lost.Add(p.roundLost) // random loss does not make the path congested
		}
		p.sh.delivered.Add(p.roundDelivered)
	}
	if total > 0 && (!lossy || !queued) {
		// Loss without a queue behind it is the path's own: smooth its fraction over
		// about four rounds (at most a half counts, so that a burst of losses cannot
		// double the estimate).
		p.randLoss = min((3*p.randLoss+float64(p.roundLost)/float64(total))/4, maxRandLoss)
	}
	if lossy && queued {
		base := p.v.Cwnd
		if p.inflightHi > 0 {
			base = min(base, p.inflightHi)
		}
		// Never below one bandwidth-delay product: that much in flight fills the pipe
		// without queueing, so what overflowed was the excess. Without this floor a
		// short bottleneck queue (a few milliseconds, as AQM keeps it) ratchets a
		// long-RTT path's ceiling down at every probe: each probe-up loses a few
		// packets and takes 30%, while the ceiling grows back by at most 32 segments a
		// round (BBRv2 floors it likewise, at its target in flight).
		p.inflightHi = max(base*7/10, int(p.bdp()), p.minCwnd())
		p.lossFreeRounds = 0
		return
	}
	if p.inflightHi == 0 || total == 0 {
		return
	}
	p.lossFreeRounds++
	p.inflightHi += p.mss << min(p.lossFreeRounds-1, 5)
	if bdp := p.bdp(); bdp > 0 && float64(p.inflightHi) > 3*bdp+float64(3*p.mss) {
		p.inflightHi = 0
	}
}

// maxRandLoss bounds the random loss fraction the bandwidth model compensates for.
const maxRandLoss = 0.5

// roundLoss reports whether the round that just ended lost more than 2% of its bytes
// (at least two segments), and whether its largest RTT sample rose above the path's
// minimum by more than queueSignal plus the RTT variation (RFC 6298's RTTVAR): congestion
// loss comes from a full queue, which delays what it does deliver; random loss (a lossy
// link, a relay dropping at random) comes at any RTT. RTTVAR keeps jitter that is not
// queueing (a loaded host's scheduling: 5-25 ms on a 300 ms lab path at load 4) from
// reading as a full queue. A round without an RTT sample counts as queued.
func (p *pathState) roundLoss() (lossy, queued bool) {
	lossy = p.roundLost >= uint64(2*p.mss) && p.roundLost*50 > p.roundDelivered+p.roundLost
	queued = p.roundRTT == 0 || p.minRTT == 0 || p.roundRTT > p.minRTT+queueSignal(p.minRTT)+p.rttvar
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

func (p *pathState) updateMode(now time.Time, rs *rateSample) {
	switch p.mode {
	case modeStartup:
		if p.filledPipe {
			p.mode = modeDrain
			p.pacingGain, p.cwndGain = drainGain, startupGain
		}
	case modeDrain:
		if float64(p.v.InFlight) <= p.bdp() {
			p.enterProbeBW(now)
		}
	case modeProbeBW:
		gain := probeBWGains[p.cycleIdx]
		elapsed := now.Sub(p.cycleStart) > p.minRTT
		next := elapsed
		switch {
		case gain > 1:
			// Probe up until in flight reached the probe level, or stop at once on loss.
			next = (elapsed && float64(p.v.InFlight) >= gain*p.bdp()) || rs.lost > 0 || now.Sub(p.cycleStart) > 2*p.minRTT+10*time.Millisecond
		case gain < 1:
			next = elapsed || float64(p.v.InFlight) <= p.bdp()
		}
		if next {
			p.cycleIdx = (p.cycleIdx + 1) % len(probeBWGains)
			p.cycleStart = now
			p.pacingGain = probeBWGains[p.cycleIdx]
		}
	}
}

func (p *pathState) enterProbeBW(now time.Time) {
	p.mode = modeProbeBW
	p.cwndGain = probeBWCwndGn
	p.cycleIdx = 2 // start cruising; the cycle brings the probe around
	p.cycleStart = now
	p.pacingGain = probeBWGains[p.cycleIdx]
}

func (p *pathState) setCwnd(acked int) {
	target := p.cwndGain*p.bdp() + float64(3*p.mss)
	cw := p.v.Cwnd
	if p.filledPipe {
		if bdp := p.bdp(); bdp > 0 {
			cw = min(cw+acked, int(target))
		}
	} else if p.bdp() == 0 || float64(cw) < target {
		cw += acked
	}
	if p.inflightHi > 0 {
		cw = min(cw, p.inflightHi)
	}
	p.v.Cwnd = max(cw, p.minCwnd())
}

// minCwnd is the smallest window the path keeps: two segments, or one while the stack
// sees the path congested (with a hundred flows on a path, two segments each can be
// more than the path and its queue hold together, and the floor alone floods it).
func (p *pathState) minCwnd() int {
	if p.sh != nil && p.sh.congested.Load() {
		return p.mss
	}
	return minCwndSeg * p.mss
}

// onTimeout is the path's retransmission timeout: everything in flight on it is
// presumed lost (the caller re-sends it elsewhere), the path restarts small until it
// delivers again (then onAck restores the window it had). A path
// still in startup keeps searching for its bandwidth: a timeout there says little
// about the rate (with a window of a few segments, one lost last segment is enough, as
// nothing sent after it can reveal the loss), and ending startup from a window of a
// few segments left a 300 ms path at 30% random loss under 50 kB/s for 15 s in the lab
// (the probe cycle grows the estimate by a quarter every 8 round trips). Startup still
// ends on a bandwidth plateau or a lossy round with a queue (checkFullPipe).
func (p *pathState) onTimeout(now time.Time) {
	p.timeouts++
	p.backoff++
	if p.priorCwnd == 0 {
		p.priorCwnd = p.v.Cwnd
	}
	p.v.Cwnd = p.minCwnd()
	p.rtoAt = time.Time{}
	p.appLimitedTo = 0
}

// reset returns the path to its starting state (it came back after being down).
func (p *pathState) reset(now time.Time) {
	v, mss, srtt := p.v, p.mss, p.srtt
	minRTT, symSRTT, symMin := p.minRTT, p.symSRTT, p.symMin
	tx, txb, rtx, rtxb, lost, dp, sp := p.txPackets, p.txBytes, p.rtxPackets, p.rtxBytes, p.lostPackets, p.deliveredPackets, p.spurious
	inflight := v.InFlight // segments sent while the path was down (probes) stay in flight
	sent, sentHead := p.sent, p.sentHead
	delivered, round, nextRound := p.delivered, p.round, p.nextRoundDelivered // monotonic: in-flight segments hold snapshots of them
	*p = pathState{}
	p.sent, p.sentHead = sent, sentHead
	p.delivered, p.round, p.nextRoundDelivered = delivered, round, nextRound
	p.init(v, mss, srtt, p.sh)
	p.minRTT, p.symSRTT, p.symMin = minRTT, symSRTT, symMin
	v.InFlight = inflight
	v.DeliveryRate = 0
	v.NextSend = now
	if inflight > 0 {
		p.rtoAt = now.Add(p.rto())
	}
	p.txPackets, p.txBytes, p.rtxPackets, p.rtxBytes, p.lostPackets, p.deliveredPackets, p.spurious = tx, txb, rtx, rtxb, lost, dp, sp
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
