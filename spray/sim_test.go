package spray

import (
	"testing"
	"time"
)

// A small deterministic closed-loop fluid model, to check that schedulers behave as
// designed over time, not just per decision. Each path is a bottleneck of a fixed rate
// (a FIFO serialising segments) plus a fixed propagation RTT split evenly both ways;
// its window is fixed at one BDP (rounded up to whole segments); ACKs come back one
// RTT after the segment was serialised; the sender always has data (bulk transfer)
// and asks the scheduler until it waits, then jumps to the next ACK or pacing
// deadline. SRTT and MinRTT come from the samples; DeliveryRate is the path's rate
// once it has a sample, and from then on sends on the path are paced at that rate (the
// engine paces; without it a path's whole window leaves in one burst and queues).
// Reordering is measured after a warm-up of a quarter of the run, like goodput.
//
// The engine's full simulated network (loss, jitter, real congestion control) is the
// tcp package's; this is only enough to see rates and reordering.

type simLink struct {
	rate float64       // bytes/s
	rtt  time.Duration // propagation RTT
}

type simResult struct {
	goodput    float64   // in-order bytes/s delivered after warm-up
	share      []float64 // fraction of segments sent on each path
	maxHold    time.Duration
	meanHold   time.Duration
	maxDepth   int // most segments held out of order at once at the receiver
	segsPerSec float64
}

type simSeg struct {
	path   int
	sent   time.Time
	arrive time.Time
}

func simulate(t *testing.T, s Scheduler, links []simLink, backlog int, dur time.Duration) simResult {
	t.Helper()
	paths := make([]Path, len(links))
	busy := make([]time.Time, len(links))
	type ack struct {
		at  time.Time
		seq int
	}
	pending := make([][]ack, len(links))
	for i, l := range links {
		rttEff := l.rtt + time.Duration(float64(mss)/l.rate*1e9)
		segs := int(l.rate*rttEff.Seconds()+mss-1) / mss
		paths[i] = Path{Name: string(rune('A' + i)), Up: true, Cwnd: max(segs, 1) * mss}
	}
	var segs []simSeg
	bp, _ := s.(BacklogPicker)
	now := t0
	end := t0.Add(dur)
	for now.Before(end) {
		for {
			var i int
			if bp != nil && backlog >= 0 {
				i = bp.PickBacklog(now, paths, mss, backlog)
			} else {
				i = s.Pick(now, paths, mss)
			}
			if i < 0 {
				break
			}
			l := links[i]
			dep := now
			if busy[i].After(dep) {
				dep = busy[i]
			}
			dep = dep.Add(time.Duration(float64(mss) / l.rate * 1e9))
			busy[i] = dep
			arrive := dep.Add(l.rtt / 2)
			pending[i] = append(pending[i], ack{arrive.Add(l.rtt / 2), len(segs)})
			segs = append(segs, simSeg{path: i, sent: now, arrive: arrive})
			paths[i].InFlight += mss
			if r := paths[i].DeliveryRate; r > 0 {
				paths[i].NextSend = now.Add(time.Duration(float64(mss) / r * 1e9))
			}
			if len(segs) > 1e6 {
				t.Fatalf("%s: runaway sender", s.Name())
			}
		}
		// Next event: the earliest ACK or pacing deadline.
		var at time.Time
		for i := range pending {
			if len(pending[i]) > 0 && (at.IsZero() || pending[i][0].at.Before(at)) {
				at = pending[i][0].at
			}
			if ns := paths[i].NextSend; ns.After(now) && (at.IsZero() || ns.Before(at)) {
				at = ns
			}
		}
		if at.IsZero() {
			t.Fatalf("%s waits with nothing in flight and no pacing deadline: deadlock", s.Name())
		}
		now = at
		for i := range pending {
			for len(pending[i]) > 0 && !pending[i][0].at.After(now) {
				a := pending[i][0]
				pending[i] = pending[i][1:]
				p := &paths[i]
				p.InFlight -= mss
				sample := a.at.Sub(segs[a.seq].sent)
				if p.SRTT == 0 {
					p.SRTT, p.MinRTT = sample, sample
				} else {
					p.SRTT += (sample - p.SRTT) / 8
					p.MinRTT = min(p.MinRTT, sample)
				}
				p.DeliveryRate = links[i].rate
			}
		}
	}

	// Receiver: in-order delivery of what arrived by end.
	res := simResult{share: make([]float64, len(links))}
	order := make([]int, 0, len(segs))
	for k, sg := range segs {
		res.share[sg.path]++
		if !sg.arrive.After(end) {
			order = append(order, k)
		}
	}
	for i := range res.share {
		res.share[i] /= float64(len(segs))
	}
	// Sort arrivals by time (insertion sort on a mostly sorted slice).
	for i := 1; i < len(order); i++ {
		for j := i; j > 0 && segs[order[j]].arrive.Before(segs[order[j-1]].arrive); j-- {
			order[j], order[j-1] = order[j-1], order[j]
		}
	}
	arrived := make([]bool, len(segs))
	nextSeq, held := 0, 0
	warm := t0.Add(dur / 4)
	var holdSum time.Duration
	var delivered, holdN int
	for _, k := range order {
		at := segs[k].arrive
		arrived[k] = true
		held++
		for nextSeq < len(segs) && arrived[nextSeq] {
			if at.After(warm) {
				h := at.Sub(segs[nextSeq].arrive)
				res.maxHold = max(res.maxHold, h)
				holdSum += h
				holdN++
				delivered++
			}
			nextSeq++
			held--
		}
		if at.After(warm) {
			res.maxDepth = max(res.maxDepth, held)
		}
	}
	res.goodput = float64(delivered*mss) / end.Sub(warm).Seconds()
	if holdN > 0 {
		res.meanHold = holdSum / time.Duration(holdN)
	}
	return res
}

func TestSimulatedSpray(t *testing.T) {
	const slowRate, fastRate = 125e3, 1.25e6 // 1 and 10 Mbit/s
	sum := slowRate + fastRate
	slowShare := slowRate / sum
	equal := []simLink{{fastRate, 40 * time.Millisecond}, {slowRate, 40 * time.Millisecond}}
	const dur = 4 * time.Second
	slowSer := time.Duration(mss / slowRate * 1e9)

	t.Run("auto 1:10 equal RTT", func(t *testing.T) {
		r := simulate(t, NewAuto(), equal, -1, dur)
		t.Logf("goodput %.0f B/s (sum %.0f), slow share %.3f (rate share %.3f), hold max %v mean %v, depth %d",
			r.goodput, sum, r.share[1], slowShare, r.maxHold, r.meanHold, r.maxDepth)
		if r.goodput < 0.9*sum {
			t.Errorf("goodput %.0f B/s, want at least 90%% of the sum of rates %.0f", r.goodput, sum)
		}
		if r.share[1] < 0.6*slowShare || r.share[1] > 1.4*slowShare {
			t.Errorf("slow path carried %.3f of the segments, want near its rate share %.3f", r.share[1], slowShare)
		}
		// A segment on the slow path takes slowSer (11.5 ms) to serialise, the fast
		// path 1.15 ms, so each slow segment inherently arrives about 10 ms after the
		// fast segments sent with it and holds them up that long: that is the floor.
		// More than twice that would mean the scheduler queues segments on the slow
		// path; the depth bound is twice the fast segments sent in one slowSer.
		if r.maxHold > 2*slowSer || r.meanHold > slowSer || r.maxDepth > 2*int(fastRate/slowRate) {
			t.Errorf("in-order delivery waited up to %v (mean %v, depth %d), want < %v (mean < %v, depth <= %d)",
				r.maxHold, r.meanHold, r.maxDepth, 2*slowSer, slowSer, 2*int(fastRate/slowRate))
		}
	})

	t.Run("rr 1:10 collapses to twice the slow rate", func(t *testing.T) {
		r := simulate(t, NewRoundRobin(), equal, -1, dur)
		t.Logf("goodput %.0f B/s (2 x slow = %.0f), shares %.3f/%.3f", r.goodput, 2*slowRate, r.share[0], r.share[1])
		if r.goodput < 1.6*slowRate || r.goodput > 2.4*slowRate {
			t.Errorf("rr goodput %.0f B/s, want about 2 x slow rate = %.0f", r.goodput, 2*slowRate)
		}
		if r.share[0] < 0.49 || r.share[0] > 0.51 {
			t.Errorf("rr shares %.3f/%.3f, want alternation", r.share[0], r.share[1])
		}
	})

	t.Run("weighted 10:1 matches the rates", func(t *testing.T) {
		s := NewWeighted()
		links := equal
		r := simulateWeighted(t, s, links, []int{10, 1}, dur)
		t.Logf("goodput %.0f B/s (sum %.0f), slow share %.3f, hold max %v", r.goodput, sum, r.share[1], r.maxHold)
		if r.goodput < 0.85*sum {
			t.Errorf("weighted goodput %.0f B/s with weights matching the rates, want near %.0f", r.goodput, sum)
		}
	})

	// Very different RTTs: the slow path's segments would arrive 40 ms after the fast
	// path's. Without a backlog hint auto keeps the flow on the fast path (never worse
	// than the fast path alone); told of a bulk backlog it uses both.
	far := []simLink{{fastRate, 20 * time.Millisecond}, {slowRate, 100 * time.Millisecond}}
	t.Run("auto far slow path, unknown backlog", func(t *testing.T) {
		r := simulate(t, NewAuto(), far, -1, dur)
		t.Logf("goodput %.0f B/s, slow share %.3f, hold max %v", r.goodput, r.share[1], r.maxHold)
		if r.goodput < 0.9*fastRate {
			t.Errorf("goodput %.0f B/s: the slow path held the flow back below the fast rate %.0f", r.goodput, fastRate)
		}
	})
	t.Run("auto far slow path, bulk backlog", func(t *testing.T) {
		r := simulate(t, NewAuto(), far, 64<<20, dur)
		t.Logf("goodput %.0f B/s (sum %.0f), slow share %.3f, hold max %v mean %v depth %d", r.goodput, sum, r.share[1], r.maxHold, r.meanHold, r.maxDepth)
		if r.goodput < 0.9*sum {
			t.Errorf("goodput %.0f B/s, want at least 90%% of the sum %.0f", r.goodput, sum)
		}
		// The floor is the one-way delay difference (40 ms) plus the serialisation
		// difference (10 ms); allow one more slow segment time of queueing.
		if limit := 40*time.Millisecond + 2*slowSer; r.maxHold > limit {
			t.Errorf("held up to %v, want < %v", r.maxHold, limit)
		}
	})

	three := []simLink{{fastRate, 30 * time.Millisecond}, {fastRate / 2, 40 * time.Millisecond}, {slowRate, 35 * time.Millisecond}}
	t.Run("auto three paths 10:5:1", func(t *testing.T) {
		sum3 := fastRate + fastRate/2 + slowRate
		r := simulate(t, NewAuto(), three, -1, dur)
		t.Logf("goodput %.0f B/s (sum %.0f), shares %.3f/%.3f/%.3f, hold max %v mean %v depth %d",
			r.goodput, sum3, r.share[0], r.share[1], r.share[2], r.maxHold, r.meanHold, r.maxDepth)
		if r.goodput < 0.9*sum3 {
			t.Errorf("goodput %.0f B/s, want at least 90%% of the sum %.0f", r.goodput, sum3)
		}
		for i, l := range three {
			if want := l.rate / sum3; r.share[i] < 0.6*want || r.share[i] > 1.4*want {
				t.Errorf("path %d share %.3f, want near %.3f", i, r.share[i], want)
			}
		}
	})
}

// simulateWeighted runs the simulation with static weights on the paths.
func simulateWeighted(t *testing.T, s *Weighted, links []simLink, weights []int, dur time.Duration) simResult {
	return simulate(t, weightSetter{s, weights}, links, -1, dur)
}

// weightSetter sets the static weights before delegating, as the engine would from
// the --path weight= flags.
type weightSetter struct {
	*Weighted
	weights []int
}

func (w weightSetter) Pick(now time.Time, paths []Path, size int) int {
	for i := range paths {
		paths[i].Weight = w.weights[i]
	}
	return w.Weighted.Pick(now, paths, size)
}
