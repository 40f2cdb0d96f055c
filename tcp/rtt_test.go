package tcp_test

// Issue 13's rows: two 10 Mbit/s paths whose RTTs differ a lot (10/160, 10/300 and
// 10/600 ms), with a short bottleneck queue (5 ms, as an AQM keeps it) and a long one
// (200 ms), and with the long path losing 30% of its packets. Virtual time (simnet in a
// synctest bubble), every transfer sha256-checked by runScenario.
//
//	TestRTTRows   the floors: >= 85% of the sum at 10/160 and 10/300, >= 75% at 10/600,
//	              and never below the best single path (measured in the same run); with
//	              30% loss on the long path >= 1.35 x the best single path (the lossy path
//	              carries a third of the bytes: 1.42-1.64 x); the receive window each row used (the
//	              receiver's largest out-of-order hold) is logged and must stay under
//	              the 2 x sum x RTT_max ceiling (RTT_max with a full queue).
//
// MPATH_RTT_TRACE=rtt_ms,queue_ms,loss[,seed] (e.g. 160,5,0) runs one row with the sender's
// per-path state logged every 500 ms (TestRTTTrace); MPATH_RTT_JITTER=10ms adds that much
// uniform jitter to path 2 (a tenth of it to path 1), as a loaded lab host has: 600,5,0.3
// then makes 9.7 Mbit/s instead of 13.9 (lossy rounds read as a full queue, the window
// stays at one BDP; issue 13's open end).

import (
	"cmp"
	"fmt"
	"os"
	"testing"
	"time"

	"mpath/tcp/simnet"
)

// rttPaths returns path 1 at 10 Mbit/s and RTT 10 ms, path 2 at 10 Mbit/s and RTT rtt
// with loss, both with a bottleneck queue of q (in time at the path's rate).
func rttPaths(rtt, q time.Duration, loss float64) []simnet.PathSpec {
	ten := 10 * mbit
	qb := max(int(ten/8*q.Seconds()), 3000)
	return []simnet.PathSpec{
		{Rate: ten, Delay: 5 * time.Millisecond, Queue: qb},
		{Rate: ten, Delay: rtt / 2, Queue: qb, Loss: loss},
	}
}

type rttRow struct {
	rtt    time.Duration
	loss   float64
	floor  float64 // of the sum of the path rates; 0: none
	single float64 // of the best single path; 0: singleMargin ("not below it")
}

func rttRows() []rttRow {
	return []rttRow{
		{160 * time.Millisecond, 0, 0.85, 0},
		{300 * time.Millisecond, 0, 0.85, 0},
		{600 * time.Millisecond, 0, 0.75, 0},
		{160 * time.Millisecond, 0.3, 0, lossySingle},
		{300 * time.Millisecond, 0.3, 0, lossySingle},
		{600 * time.Millisecond, 0.3, 0, lossySingle},
	}
}

var rttQueues = []struct {
	name string
	q    time.Duration
}{{"short queue", 5 * time.Millisecond}, {"long queue", 200 * time.Millisecond}}

// singleMargin: how close to the best single path a row must come. The target is "never
// below it"; one percent covers the end of a flow (its last segments wait for the fast
// path), a real regression (a slow path holding the flow back) costs far more.
const singleMargin = 0.99

// lossySingle: with 30% loss on the long path, what it must add. The path carries 7
// Mbit/s of a 10 Mbit/s bottleneck when its controller tells random loss from a full
// queue (1.42-1.64 x the best single path over the seeds and rows); before, every round
// over 2% loss cut its window and its bandwidth samples decayed (0.5 Mbit/s, 1.00-1.20
// x), and a timeout in startup (seed 2: a lost SYN-time segment) ended the bandwidth
// search at a few segments (1.24-1.34 x).
const lossySingle = 1.35

func TestRTTRows(t *testing.T) {
	size := scaled(20 * mib)
	for _, qc := range rttQueues {
		t.Run(qc.name, func(t *testing.T) {
			t.Parallel()
			// The best single path: path 1 alone (path 2 is as fast, but its RTT and
			// loss only make it worse), same queue, same size, same direction.
			single := scenario{paths: rttPaths(0, qc.q, 0)[:1], size: size, seed: 1, download: true}
			best := runScenario(t, single).goodput
			t.Logf("best single path: %.2f Mbit/s", best/mbit)
			for _, row := range rttRows() {
				seeds := 1
				if row.loss > 0 && !raceEnabled {
					seeds = 3
				}
				for seed := 1; seed <= seeds; seed++ {
					sc := scenario{paths: rttPaths(row.rtt, qc.q, row.loss), size: size, seed: uint64(seed), download: true}
					r := runScenario(t, sc)
					sum := sumRates(sc.paths)
					ceiling := 2 * sum / 8 * (row.rtt + qc.q).Seconds() // RTT_max with a full queue
					st := r.statsB
					var p2 float64
					if tot := st.Paths[0].Delivered + st.Paths[1].Delivered; tot > 0 {
						p2 = float64(st.Paths[1].Delivered) / float64(tot)
					}
					name := fmt.Sprintf("%s 10/%v loss %.0f%% seed %d", qc.name, row.rtt.Milliseconds(), 100*row.loss, seed)
					t.Logf("%-38s %6.2f Mbit/s = %5.1f%% of the sum, %4.2fx the best single path; path 2 carried %4.1f%%; receive window used %4.0f kB (ceiling 2 x sum x RTT_max %4.0f kB); longest stall %v",
						name, r.goodput/mbit, 100*r.ratio(sum), r.goodput/best, 100*p2,
						float64(r.statsA.ReorderMaxBytes)/1e3, ceiling/1e3, r.stalled.Round(time.Millisecond))
					if used := float64(r.statsA.ReorderMaxBytes); used > ceiling {
						t.Errorf("%s: the receiver held %.0f kB out of order, more than 2 x sum x RTT_max = %.0f kB", name, used/1e3, ceiling/1e3)
					}
					if !floorsChecked {
						continue
					}
					if row.floor > 0 && r.ratio(sum) < row.floor {
						t.Errorf("%s: %.1f%% of the sum, floor %.0f%%", name, 100*r.ratio(sum), 100*row.floor)
					}
					if want := cmp.Or(row.single, singleMargin); r.goodput < want*best {
						t.Errorf("%s: %.2f Mbit/s, %.2f x the best single path (%.2f Mbit/s), want >= %.2f x", name, r.goodput/mbit, r.goodput/best, best/mbit, want)
					}
				}
			}
		})
	}
}

func TestRTTTrace(t *testing.T) {
	v := os.Getenv("MPATH_RTT_TRACE")
	if v == "" {
		t.Skip("MPATH_RTT_TRACE=rtt_ms,queue_ms,loss[,seed] runs one row with a trace")
	}
	var rtt, q int
	var loss float64
	seed := uint64(1)
	if n, err := fmt.Sscanf(v, "%d,%d,%g,%d", &rtt, &q, &loss, &seed); n < 3 {
		t.Fatalf("MPATH_RTT_TRACE=%q: %v", v, err)
	}
	sc := scenario{paths: rttPaths(msd(rtt), msd(q), loss), size: 20 * mib, seed: seed, download: true, trace: 500 * time.Millisecond}
	if j := os.Getenv("MPATH_RTT_JITTER"); j != "" {
		d, _ := time.ParseDuration(j)
		sc.paths[1].Jitter = d
		sc.paths[0].Jitter = d / 10
	}
	r := runScenario(t, sc)
	logResult(t, "trace", sc, r)
}

// TestRTTRateSpread: what issue 13 must keep — a 1:20 rate spread (0.5 + 4 x 10 Mbit/s,
// equal RTTs) stays >= 90% of the sum with the long-RTT changes in place.
func TestRTTRateSpread(t *testing.T) {
	ten := 10 * mbit
	sc := scenario{paths: []simnet.PathSpec{spec(0.5*mbit, msd(10)), spec(ten, msd(10)), spec(ten, msd(10)), spec(ten, msd(10)), spec(ten, msd(10))},
		size: scaled(20 * mib), seed: 1}
	for _, download := range []bool{false, true} {
		sc.download = download
		r := runScenario(t, sc)
		logResult(t, fmt.Sprintf("0.5 + 4 x 10 Mbit/s, download %v", download), sc, r)
		if got := r.ratio(sumRates(sc.paths)); floorsChecked && got < 0.90 {
			t.Errorf("download %v: %.1f%% of the sum, want >= 90%%", download, 100*got)
		}
	}
}

// TestRTTSmallWindow: BLEST's concern. With a receive window far below what the long
// path's delay needs (20 segments, as in the thesis's table 4.24, and 64 KiB), a segment
// sent on the 160 ms path holds the window for its whole trip; the engine then counts
// only the window's room as the data still to send, so auto keeps to the fast path.
// Before (the buffer's 256 kB counted): 1.5 and 2.9 Mbit/s against 9.3 on the fast
// path alone. The floor is 90% of the best single path (startup on a 4 MB transfer).
func TestRTTSmallWindow(t *testing.T) {
	for _, w := range []int{20 * 1440, 64 << 10} {
		sc := scenario{paths: rttPaths(160*time.Millisecond, 200*time.Millisecond, 0), size: scaled(4 * mib), seed: 1, download: true, recvWindow: w}
		one := sc
		one.paths = sc.paths[:1]
		best := runScenario(t, one).goodput
		r := runScenario(t, sc)
		t.Logf("window %d bytes, 10/160 ms: %.2f Mbit/s, best single path %.2f Mbit/s (%.2fx)", w, r.goodput/mbit, best/mbit, r.goodput/best)
		if floorsChecked && r.goodput < 0.9*best {
			t.Errorf("window %d bytes: %.2f Mbit/s, below 90%% of the best single path (%.2f Mbit/s)", w, r.goodput/mbit, best/mbit)
		}
	}
}
