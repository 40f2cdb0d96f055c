package spray

import "time"

// The arrival model shared by auto and Earliest. For a segment of size bytes handed to
// path p at now (all times relative to now, in seconds):
//
//	start   = 0 with cwnd room, else (InFlight+size-Cwnd)/rate: when enough of what is
//	          in flight has been delivered to open room
//	start   = max(start, NextSend-now)                      pacing
//	queue   = max(ahead-rate*MinRTT, 0)/rate                bytes beyond one BDP wait in
//	          the bottleneck queue ahead of ours; at least half the RTT inflation
//	          (SRTT-MinRTT)/2, for queueing the engine's own bytes do not explain
//	arrival = start + MinRTT/2 + queue + size/rate
//
// rate is DeliveryRate when measured, else Cwnd/SRTT.

// Rate returns the rate in bytes/s the schedulers assume for the path: DeliveryRate
// when measured, else Cwnd/SRTT (MinRTT before the first smoothed sample), 0 when
// neither is known.
func (p *Path) Rate() float64 {
	if p.DeliveryRate > 0 {
		return p.DeliveryRate
	}
	rtt := p.SRTT
	if rtt <= 0 {
		rtt = p.MinRTT
	}
	if rtt <= 0 || p.Cwnd <= 0 {
		return 0
	}
	return float64(p.Cwnd) / rtt.Seconds()
}

// ExpectedArrival returns how long after now a segment of size bytes handed to the
// path at now is expected to reach the receiver, by the model auto and Earliest use.
// ok is false when the path is down or has no RTT sample. For metrics and logs.
func (p *Path) ExpectedArrival(now time.Time, size int) (d time.Duration, ok bool) {
	at, ok := p.arrival(now, size)
	if !ok {
		return 0, false
	}
	return time.Duration(at * 1e9), true
}

// arrival is ExpectedArrival in seconds.
func (p *Path) arrival(now time.Time, size int) (float64, bool) {
	if !p.Up || !p.Measured() {
		return 0, false
	}
	srtt, minRTT := p.SRTT, p.MinRTT
	if srtt <= 0 {
		srtt = minRTT
	}
	if minRTT <= 0 || minRTT > srtt {
		minRTT = srtt
	}
	r := p.rateOrWindow(size)
	start := 0.0
	ahead := float64(p.InFlight)
	if over := p.InFlight + size - p.Cwnd; over > 0 {
		start = float64(over) / r
		ahead = float64(max(p.Cwnd-size, 0))
	}
	if d := p.NextSend.Sub(now); d > 0 {
		start = max(start, d.Seconds())
	}
	base := minRTT.Seconds()
	queue := max((ahead-r*base)/r, (srtt-minRTT).Seconds()/2, 0)
	return start + base/2 + queue + float64(size)/r, true
}
