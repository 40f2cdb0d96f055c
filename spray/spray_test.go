package spray

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

const mss = 1440

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// mk returns an up, measured path with rate bytes/s and RTT rtt, a window of one BDP
// (at least two segments) and nothing in flight.
func mk(name string, rate float64, rtt time.Duration) Path {
	cwnd := max(int(rate*rtt.Seconds()), 2*mss)
	return Path{Name: name, Up: true, Cwnd: cwnd, SRTT: rtt, MinRTT: rtt, DeliveryRate: rate}
}

// full returns p with its window full (no room for one more segment).
func full(p Path) Path { p.InFlight = p.Cwnd; return p }

func TestNew(t *testing.T) {
	for _, name := range append([]string{""}, Names...) {
		s, err := New(name)
		if err != nil {
			t.Fatalf("New(%q): %v", name, err)
		}
		want := name
		if want == "" {
			want = "auto"
		}
		if s.Name() != want {
			t.Errorf("New(%q).Name() = %q", name, s.Name())
		}
		if _, ok := s.(Counter); !ok {
			t.Errorf("%s does not implement Counter", want)
		}
	}
	if _, err := New("minrtt"); !errors.Is(err, ErrUnknownScheduler) {
		t.Fatalf("New(minrtt) error = %v, want ErrUnknownScheduler", err)
	}
}

// picks runs n picks with the paths unchanged and returns the indexes chosen.
func picks(s Scheduler, paths []Path, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = s.Pick(t0, paths, mss)
	}
	return out
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRoundRobin(t *testing.T) {
	a, b, c := mk("a", 1e6, 10*time.Millisecond), mk("b", 1e6, 10*time.Millisecond), mk("c", 1e5, 50*time.Millisecond)
	down := b
	down.Up = false
	paced := c
	paced.NextSend = t0.Add(time.Millisecond)
	for _, tc := range []struct {
		name  string
		paths []Path
		want  []int
	}{
		{"alternates", []Path{a, b, c}, []int{0, 1, 2, 0, 1, 2}},
		{"skips down paths", []Path{a, down, c}, []int{0, 2, 0, 2}},
		{"waits for the full path's turn", []Path{a, full(b), c}, []int{0, -1, -1, -1}},
		{"waits for pacing", []Path{a, b, paced}, []int{0, 1, -1, -1}},
		{"all down", []Path{down, down}, []int{-1, -1}},
		{"no paths", nil, []int{-1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := picks(NewRoundRobin(), tc.paths, len(tc.want)); !equalInts(got, tc.want) {
				t.Fatalf("picks = %v, want %v", got, tc.want)
			}
		})
	}
	// After a wait the rotation resumes at the same path once it has room.
	s := NewRoundRobin()
	paths := []Path{a, full(b)}
	if got := picks(s, paths, 3); !equalInts(got, []int{0, -1, -1}) {
		t.Fatalf("picks = %v", got)
	}
	paths[1].InFlight = 0
	if got := picks(s, paths, 3); !equalInts(got, []int{1, 0, 1}) {
		t.Fatalf("after room opened: picks = %v, want [1 0 1]", got)
	}
	if c := s.Counts(); c.Picks != 4 || c.Waits != 2 {
		t.Fatalf("counts %+v, want 4 picks 2 waits", c)
	}
}

// weightedPaths returns up paths with the given weights, all with room.
func weightedPaths(ws ...int) []Path {
	ps := make([]Path, len(ws))
	for i, w := range ws {
		ps[i] = mk(string(rune('A'+i)), 1e6, 10*time.Millisecond)
		ps[i].Weight = w
	}
	return ps
}

func TestWeightedSequence(t *testing.T) {
	for _, ws := range [][]int{{1, 3}, {1, 5}, {2, 3, 5}, {3, 1}, {1, 1, 1}, {0, 2}} {
		paths := weightedPaths(ws...)
		total := 0
		for i := range paths {
			total += paths[i].weight()
		}
		seq := picks(NewWeighted(), paths, 4*total)
		counts := make([]int, len(ws))
		for k, i := range seq {
			if i < 0 {
				t.Fatalf("weights %v: wait at pick %d with every path free", ws, k)
			}
			counts[i]++
			// Smoothness: after k+1 picks every path is within one pick of its exact
			// share. A blocky A BBB CCCCC order would be off by up to w/2.
			for j := range paths {
				exact := float64((k+1)*paths[j].weight()) / float64(total)
				if d := float64(counts[j]) - exact; d > 1 || d < -1 {
					t.Fatalf("weights %v: after %d picks path %d has %d, exact share %.2f (sequence %v)", ws, k+1, j, counts[j], exact, seq)
				}
			}
			// Exact shares over each cycle of total picks.
			if (k+1)%total == 0 {
				for j := range paths {
					if counts[j] != (k+1)/total*paths[j].weight() {
						t.Fatalf("weights %v: after %d picks counts %v", ws, k+1, counts)
					}
				}
			}
		}
		// The light path's turns are spread: for 1:k, it never picks twice in a row.
		if ws[0] == 1 && len(ws) == 2 && ws[1] > 1 {
			for k := 1; k < len(seq); k++ {
				if seq[k] == 0 && seq[k-1] == 0 {
					t.Fatalf("weights %v: light path twice in a row: %v", ws, seq)
				}
			}
		}
	}
	// The 1:3 cycle, worked by hand: credits (1,3) -> B pays 4 -> (1,-1); (2,2) -> A
	// (first of equals) -> (-2,2); (-1,5) -> B -> (-1,1); (0,4) -> B -> (0,0).
	if got := picks(NewWeighted(), weightedPaths(1, 3), 8); !equalInts(got, []int{1, 0, 1, 1, 1, 0, 1, 1}) {
		t.Fatalf("1:3 sequence = %v, want B A B B B A B B", got)
	}
}

func TestWeightedWaitKeepsCredit(t *testing.T) {
	paths := weightedPaths(2, 3, 5)
	want := picks(NewWeighted(), paths, 20)

	s := NewWeighted()
	var got []int
	for k := 0; k < 20; k++ {
		if k%3 == 1 {
			// The path whose turn it is has no room for a while: waits, no skipping.
			i := want[k]
			paths[i].InFlight = paths[i].Cwnd
			for range 2 {
				if j := s.Pick(t0, paths, mss); j != -1 {
					t.Fatalf("pick %d: path %d full, got %d, want a wait", k, i, j)
				}
			}
			paths[i].InFlight = 0
		}
		got = append(got, s.Pick(t0, paths, mss))
	}
	if !equalInts(got, want) {
		t.Fatalf("with waits: %v\nwithout:    %v", got, want)
	}
}

func TestWeightedDownAndPaced(t *testing.T) {
	paths := weightedPaths(1, 3, 2)
	paths[1].Up = false
	seq := picks(NewWeighted(), paths, 9)
	counts := [3]int{}
	for _, i := range seq {
		if i < 0 {
			t.Fatalf("wait with free paths: %v", seq)
		}
		counts[i]++
	}
	if counts != [3]int{3, 0, 6} {
		t.Fatalf("with B down, counts %v over 9 picks, want [3 0 6]", counts)
	}
	paths = weightedPaths(1, 3)
	paths[1].NextSend = t0.Add(time.Millisecond)
	if got := picks(NewWeighted(), paths, 2); !equalInts(got, []int{-1, -1}) {
		t.Fatalf("paced heavy path: %v, want waits (not a skip to A)", got)
	}
}

func TestAuto(t *testing.T) {
	fast := mk("fast", 10e6, 10*time.Millisecond)
	slow := mk("slow", 1e6, 10*time.Millisecond)
	far := mk("far", 1e6, 100*time.Millisecond)
	lowRTT := mk("low", 1e6, 5*time.Millisecond)
	highRTT := mk("high", 1e6, 30*time.Millisecond)
	unmeasured := Path{Name: "new", Up: true, Cwnd: 10 * mss}
	down := fast
	down.Up = false
	pacedFast := fast
	pacedFast.NextSend = t0.Add(100 * time.Microsecond)
	// A near twin of fast, 0.1 ms better in RTT but paced for another 20 µs: its
	// expected arrival is 30 µs earlier, yet waiting for it would idle fast.
	pacedTwin := mk("twin", 10e6, 9900*time.Microsecond)
	pacedTwin.NextSend = t0.Add(20 * time.Microsecond)
	for _, tc := range []struct {
		name    string
		paths   []Path
		backlog int // -1: Pick
		want    int
	}{
		{"lower RTT when both have room", []Path{highRTT, lowRTT}, -1, 1},
		{"faster path when both have room", []Path{slow, fast}, -1, 1},
		{"never a down path", []Path{down, far}, -1, 1},
		{"never a full path", []Path{full(fast), full(slow)}, -1, -1},
		{"waits for a fast path that frees sooner than the slow one delivers", []Path{full(fast), far}, -1, -1},
		{"waits for pacing on the fast path", []Path{pacedFast, far}, -1, -1},
		{"slow path when it delivers within the fast path's window", []Path{full(fast), slow}, -1, 1},
		{"backlog 0: wait for the earliest", []Path{full(fast), highRTT}, 0, -1},
		{"big backlog: use the slower path", []Path{full(fast), highRTT}, 10 << 20, 1},
		{"big backlog: never a full path", []Path{full(fast), full(highRTT)}, 10 << 20, -1},
		{"hysteresis between near-equal paths", []Path{pacedTwin, fast}, 0, 1},
		{"unmeasured path gets a probe", []Path{fast, unmeasured}, -1, 1},
		{"no measured path: least loaded", []Path{func() Path { p := unmeasured; p.InFlight = mss; return p }(), unmeasured}, -1, 1},
		{"nothing up", []Path{down}, -1, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := NewAuto()
			got := a.PickBacklog(t0, tc.paths, mss, tc.backlog)
			if got != tc.want {
				for i := range tc.paths {
					d, ok := tc.paths[i].ExpectedArrival(t0, mss)
					t.Logf("path %d %s: arrival %v (%v) sendable %v", i, tc.paths[i].Name, d, ok, tc.paths[i].Sendable(t0, mss))
				}
				t.Fatalf("PickBacklog(backlog %d) = %d, want %d", tc.backlog, got, tc.want)
			}
		})
	}
}

// TestAutoProbesOnce checks an unmeasured path gets one segment, then nothing more
// until it has a sample, and then its fair use.
func TestAutoProbesOnce(t *testing.T) {
	paths := []Path{mk("fast", 10e6, 10*time.Millisecond), {Name: "new", Up: true, Cwnd: 10 * mss}}
	a := NewAuto()
	newPicks := 0
	for k := 0; k < 50; k++ {
		i := a.Pick(t0, paths, mss)
		if i < 0 {
			break
		}
		paths[i].InFlight += mss
		if i == 1 {
			newPicks++
		}
	}
	if newPicks != 1 {
		t.Fatalf("unmeasured path picked %d times before its first sample, want 1", newPicks)
	}
	if c := a.Counts(); c.Probes != 1 {
		t.Fatalf("counts %+v, want 1 probe", c)
	}
	// Once measured as good as the other, it takes segments like any path.
	paths[1] = mk("new", 10e6, 10*time.Millisecond)
	paths[0].InFlight = paths[0].Cwnd
	if i := a.Pick(t0, paths, mss); i != 1 {
		t.Fatalf("measured path not used: got %d", i)
	}
}

func TestEarliest(t *testing.T) {
	fast := mk("fast", 10e6, 10*time.Millisecond)
	slow := mk("slow", 1e6, 50*time.Millisecond)
	unmeasured := Path{Name: "new", Up: true, Cwnd: 10 * mss}
	down := fast
	down.Up = false
	paced := fast
	paced.NextSend = t0.Add(100 * time.Millisecond)
	for _, tc := range []struct {
		name  string
		paths []Path
		avoid int
		want  int
	}{
		{"earliest arrival", []Path{slow, fast}, -1, 1},
		{"avoid skipped", []Path{slow, fast}, 1, 0},
		{"avoid when it is the only one with room", []Path{full(slow), fast}, 1, 1},
		{"no room anywhere", []Path{full(slow), full(fast)}, -1, -1},
		{"down never", []Path{down, slow}, -1, 1},
		{"down never, even as the only one", []Path{down}, 0, -1},
		{"pacing delays the estimate", []Path{paced, slow}, -1, 1},
		{"unmeasured only when nothing measured has room", []Path{unmeasured, full(fast)}, -1, 0},
		{"measured before unmeasured", []Path{unmeasured, slow}, -1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Earliest(t0, tc.paths, mss, tc.avoid); got != tc.want {
				t.Fatalf("Earliest(avoid %d) = %d, want %d", tc.avoid, got, tc.want)
			}
		})
	}
}

// TestNeverUnsendable throws random path states at every scheduler and Earliest: a
// chosen path is always up with room, and (for Pick) allowed to send by pacing.
func TestNeverUnsendable(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	scheds := []Scheduler{NewRoundRobin(), NewWeighted(), NewAuto()}
	chosen := make([]int, len(scheds))
	for iter := 0; iter < 20000; iter++ {
		n := 1 + r.IntN(5)
		paths := make([]Path, n)
		for i := range paths {
			p := &paths[i]
			p.Up = r.IntN(5) != 0
			p.Weight = r.IntN(6) - 1
			p.Cwnd = r.IntN(40) * mss / 2
			p.InFlight = r.IntN(40) * mss / 2
			if r.IntN(4) != 0 {
				p.SRTT = time.Duration(1+r.IntN(200)) * time.Millisecond
				p.MinRTT = p.SRTT - time.Duration(r.Int64N(int64(p.SRTT)))
			}
			if r.IntN(3) == 0 {
				p.DeliveryRate = float64(r.IntN(20e6))
			}
			if r.IntN(4) == 0 {
				p.NextSend = t0.Add(time.Duration(r.IntN(2000)-1000) * time.Microsecond)
			}
		}
		for k, s := range scheds {
			i := s.Pick(t0, paths, mss)
			if i >= 0 {
				chosen[k]++
				if !paths[i].Up || !paths[i].Room(mss) || paths[i].NextSend.After(t0) {
					t.Fatalf("%s picked path %d: %+v", s.Name(), i, paths[i])
				}
			}
		}
		avoid := r.IntN(n+1) - 1
		if i := Earliest(t0, paths, mss, avoid); i >= 0 {
			if !paths[i].Up || !paths[i].Room(mss) {
				t.Fatalf("Earliest picked path %d: %+v", i, paths[i])
			}
			if i == avoid {
				for j := range paths {
					if j != avoid && paths[j].Room(mss) {
						t.Fatalf("Earliest picked avoid=%d though path %d has room", avoid, j)
					}
				}
			}
		} else {
			for j := range paths {
				if paths[j].Room(mss) {
					t.Fatalf("Earliest returned -1 though path %d has room", j)
				}
			}
		}
	}
	for k, s := range scheds {
		if chosen[k] < 1000 {
			t.Fatalf("%s chose a path only %d times: the test did not exercise it", s.Name(), chosen[k])
		}
	}
}

// TestPickAllocs: Pick allocates nothing once the scheduler has seen the path count.
func TestPickAllocs(t *testing.T) {
	paths := []Path{mk("a", 10e6, 10*time.Millisecond), full(mk("b", 1e6, 30*time.Millisecond)), mk("c", 5e6, 20*time.Millisecond)}
	for _, name := range Names {
		s, _ := New(name)
		s.Pick(t0, paths, mss)
		if a := testing.AllocsPerRun(1000, func() { s.Pick(t0, paths, mss) }); a != 0 {
			t.Errorf("%s: Pick allocates %.1f times", name, a)
		}
	}
	if a := testing.AllocsPerRun(1000, func() { Earliest(t0, paths, mss, 0) }); a != 0 {
		t.Errorf("Earliest allocates %.1f times", a)
	}
}

// TestExpectedArrival checks the arrival model against values worked by hand
// (size 1000 bytes; the model is in estimate.go).
func TestExpectedArrival(t *testing.T) {
	ms := time.Millisecond
	base := Path{Up: true, Cwnd: 10000, SRTT: 10 * ms, MinRTT: 10 * ms, DeliveryRate: 1e6}
	with := func(f func(p *Path)) Path { p := base; f(&p); return p }
	for _, tc := range []struct {
		name string
		p    Path
		want time.Duration // 0: not ok
	}{
		// MinRTT/2 + size/rate = 5ms + 1ms.
		{"idle", base, 6 * ms},
		// Full window: 1000 bytes over it free up in 1ms, then as idle.
		{"window full", with(func(p *Path) { p.InFlight = 10000 }), 7 * ms},
		// 15000 in flight with a 20000 window: 5000 beyond the BDP queue ahead, 5ms.
		{"queue ahead", with(func(p *Path) { p.Cwnd, p.InFlight = 20000, 15000 }), 11 * ms},
		// RTT inflation the in-flight bytes do not explain: half of it, 5ms.
		{"inflated RTT", with(func(p *Path) { p.SRTT = 20 * ms }), 11 * ms},
		{"paced", with(func(p *Path) { p.NextSend = t0.Add(3 * ms) }), 9 * ms},
		// No delivery rate: Cwnd/SRTT = 2e6 B/s, so 0.5ms on the wire.
		{"rate from window", with(func(p *Path) { p.DeliveryRate, p.Cwnd = 0, 20000 }), 5500 * time.Microsecond},
		// No window and no rate: one segment per SRTT (1e5 B/s): wait 10ms for room,
		// 5ms one way, 10ms on the wire.
		{"no window", with(func(p *Path) { p.DeliveryRate, p.Cwnd = 0, 0 }), 25 * ms},
		{"down", with(func(p *Path) { p.Up = false }), 0},
		{"unmeasured", with(func(p *Path) { p.SRTT, p.MinRTT = 0, 0 }), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, ok := tc.p.ExpectedArrival(t0, 1000)
			if ok != (tc.want > 0) {
				t.Fatalf("ok = %v, want %v", ok, tc.want > 0)
			}
			if diff := d - tc.want; diff > time.Microsecond || diff < -time.Microsecond {
				t.Fatalf("ExpectedArrival = %v, want %v", d, tc.want)
			}
		})
	}
}

func TestWeightedCounts(t *testing.T) {
	w := NewWeighted()
	paths := weightedPaths(1, 1)
	picks(w, paths, 3)
	paths[0], paths[1] = full(paths[0]), full(paths[1])
	picks(w, paths, 2)
	if c := w.Counts(); c.Picks != 3 || c.Waits != 2 {
		t.Fatalf("counts %+v, want 3 picks 2 waits", c)
	}
}

// TestAutoIdleProbe: issue 13. A long path (RTT 300 ms) whose only sample was one probe
// segment (a delivery rate of 9 kB/s) looks far too slow for the rule, yet its delay
// alone would pass it: while idle it gets one segment at a time; with a segment in
// flight it waits; with a delay that could not pass even at any rate it stays idle;
// and with an open-ended backlog (the application presses) the rule itself takes it.
func TestAutoIdleProbe(t *testing.T) {
	fast := full(mk("fast", 1.19e6, 10*time.Millisecond))
	long := mk("long", 9e3, 300*time.Millisecond)
	long.MinRTT = 150 * time.Millisecond // ACKs come back over the fast path
	far := long
	far.MinRTT, far.SRTT = 1200*time.Millisecond, 1200*time.Millisecond
	busy := long
	busy.InFlight = mss
	cases := []struct {
		name    string
		paths   []Path
		backlog int
		want    int
		probes  uint64
	}{
		{"idle long path probed", []Path{fast, long}, 256 << 10, 1, 1},
		{"one probe at a time", []Path{fast, busy}, 256 << 10, -1, 0},
		{"too far to ever pay off", []Path{fast, far}, 256 << 10, -1, 0},
		{"last segment waits", []Path{fast, long}, 0, -1, 0},
		{"open-ended backlog", []Path{fast, busy}, 16 << 20, 1, 0},
	}
	for _, tc := range cases {
		a := NewAuto()
		if got := a.PickBacklog(t0, tc.paths, mss, tc.backlog); got != tc.want || a.Counts().Probes != tc.probes {
			t.Errorf("%s: picked %d (%d probes), want %d (%d probes)", tc.name, got, a.Counts().Probes, tc.want, tc.probes)
		}
	}
}
