package spray

import (
	"math"
	"time"
)

// Auto is the "auto" scheduler, mpath's default: each new segment goes to the path on
// which it is expected to arrive first (see estimate.go for the model; rates come from
// the measured delivery rate). If that path cannot send right now — its window is full
// or pacing holds it — the segment waits for it rather than taking a slower path: that
// is what keeps a slow path from holding the whole connection back, the failure of the
// thesis's alternation and of kernel MPTCP's default scheduler.
//
// Waiting for the earliest path alone would never use a slower path while the fast
// one has a full window, even for a bulk transfer where the fast path cannot carry the
// backlog any sooner. So a slower path that can send now takes the segment when its
// arrival is no later than the earliest arrival plus the time the better paths need to
// carry the backlog (the ECF rule, "earliest completion first"):
//
//	arrival(cand) <= arrival(best) + backlog/rate(paths earlier than cand)
//
// PickBacklog takes the backlog from the engine: the flow's data still to send, which
// for a bulk sender (an application pressing on a full send buffer) is what the peer's
// window lets into flight, so a long path with spare window is used whenever it
// finishes the data sooner, however long its delay (issue 13: counting only the few
// windows the send buffer held left a path 150 ms longer idle); near the end of a flow
// it is the exact remainder, and the last segments wait for the fast path. Pick, which
// does not know it, assumes
// one congestion window of the better paths is waiting (a bulk sender keeps at least
// that much queued), so a slower path is used when its extra delay is within about one
// RTT of the better paths. The allowance is at least an eighth of the best arrival
// time: a small hysteresis so that two nearly equal paths both carry data instead of
// the flow idling on whichever is marginally ahead.
//
// Paths without an RTT sample get one segment at a time while they have room (so they
// get measured) and are otherwise ignored; when no path is measured yet, segments go
// to the least loaded path with room. A measured path that sits idle because its
// estimate prices it out, though its propagation delay alone would pass the rule, also
// gets one segment at a time (idleProbe): an idle path's estimates never change, and a
// rate from one probe segment or a window cut by one timeout would otherwise keep it
// idle for the rest of the flow.
//
// Not safe for concurrent use; the zero value is ready.
type Auto struct {
	at     []float64 // per-path expected arrival (s from now) for the current Pick
	counts Counts
}

// NewAuto returns an "auto" scheduler.
func NewAuto() *Auto { return &Auto{} }

// Name returns "auto".
func (a *Auto) Name() string { return "auto" }

// Counts returns the decisions so far.
func (a *Auto) Counts() Counts { return a.counts }

// Pick is PickBacklog with the backlog unknown.
func (a *Auto) Pick(now time.Time, paths []Path, size int) int {
	return a.PickBacklog(now, paths, size, -1)
}

// BacklogPicker is implemented by schedulers that make better choices when told how
// many bytes are queued behind the segment being scheduled (not yet sent, not
// counting this segment). The engine may type-assert its Scheduler to it.
type BacklogPicker interface {
	PickBacklog(now time.Time, paths []Path, size, backlog int) int
}

// PickBacklog is Pick for a flow with backlog bytes queued behind this segment
// (negative: unknown). A large backlog lets slower paths take segments even when they
// arrive well after the fastest path would have; a backlog of 0 (the last segment)
// waits for the earliest arrival.
func (a *Auto) PickBacklog(now time.Time, paths []Path, size, backlog int) int {
	if cap(a.at) < len(paths) {
		a.at = make([]float64, len(paths))
	}
	at := a.at[:len(paths)]

	best, cand := -1, -1
	probe := -1
	for i := range paths {
		p := &paths[i]
		at[i] = math.Inf(1)
		if !p.Up {
			continue
		}
		t, ok := p.arrival(now, size)
		if !ok {
			// Unmeasured: one segment at a time, for a sample.
			if probe < 0 && p.InFlight == 0 && p.Sendable(now, size) {
				probe = i
			}
			continue
		}
		at[i] = t
		if best < 0 || t < at[best] {
			best = i
		}
		if p.Sendable(now, size) && (cand < 0 || t < at[cand]) {
			cand = i
		}
	}
	switch {
	case probe >= 0:
		a.counts.Probes++
		a.counts.Picks++
		return probe
	case best < 0:
		return a.unmeasured(now, paths, size)
	case cand < 0:
		a.counts.Waits++
		return -1
	case cand == best:
		a.counts.Picks++
		return cand
	}

	// The earliest path cannot send now; cand can, but later. Take cand when waiting
	// for the better paths would not get the backlog delivered any sooner.
	var rate, window float64
	for i := range paths {
		if at[i] < at[cand] {
			rate += paths[i].rateOrWindow(size)
			window += float64(max(paths[i].Cwnd, size))
		}
	}
	b := float64(backlog)
	if backlog < 0 {
		b = window
	}
	slack := max(b/rate, at[best]/8)
	if at[cand] <= at[best]+slack {
		a.counts.Detours++
		a.counts.Picks++
		return cand
	}
	// An idle path that the rule leaves out may be priced out by what it measured
	// long ago or from too little (a single probe segment's delivery rate, a window cut
	// by a timeout): with nothing in flight its estimates never change. When its
	// propagation delay alone would have qualified it, it gets one segment at a time, so
	// it is measured again rather than left idle for good.
	if i := idleProbe(now, paths, size, at, best, at[best]+slack); i >= 0 {
		a.counts.Probes++
		a.counts.Picks++
		return i
	}
	a.counts.Waits++
	return -1
}

// idleProbe returns the sendable path with nothing in flight, other than best, whose
// one-way propagation delay (MinRTT/2) is within limit seconds (the shortest such), or -1.
func idleProbe(now time.Time, paths []Path, size int, at []float64, best int, limit float64) int {
	pick := -1
	for i := range paths {
		p := &paths[i]
		if i == best || math.IsInf(at[i], 1) || p.InFlight > 0 || !p.Sendable(now, size) {
			continue
		}
		if d := p.MinRTT.Seconds() / 2; d > 0 && d <= limit && (pick < 0 || p.MinRTT < paths[pick].MinRTT) {
			pick = i
		}
	}
	return pick
}

// unmeasured picks when no up path has an RTT sample: the least loaded path that can
// send, lowest index first.
func (a *Auto) unmeasured(now time.Time, paths []Path, size int) int {
	pick := -1
	for i := range paths {
		if paths[i].Sendable(now, size) && (pick < 0 || paths[i].InFlight < paths[pick].InFlight) {
			pick = i
		}
	}
	if pick < 0 {
		a.counts.Waits++
		return -1
	}
	a.counts.Probes++
	a.counts.Picks++
	return pick
}

// rateOrWindow is the rate the arrival model uses for a measured path: Rate, or one
// segment per RTT when the path has no window to speak of. Never 0 for a measured path.
func (p *Path) rateOrWindow(size int) float64 {
	if r := p.Rate(); r > 0 {
		return r
	}
	rtt := p.SRTT
	if rtt <= 0 {
		rtt = p.MinRTT
	}
	return float64(max(size, 1)) / rtt.Seconds()
}
