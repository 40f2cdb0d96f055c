package relay

import (
	"math"
	"sort"
	"testing"
	"time"
)

func TestParseImpair(t *testing.T) {
	tests := []struct {
		in   string
		want ImpairSpec
		bad  bool
	}{
		{in: "", want: ImpairSpec{}},
		{in: "delay=30ms,jitter=5ms,loss=0.5%,dup=0.1%,reorder=1%,rate=10mbit,seed=7",
			want: ImpairSpec{Delay: 30 * time.Millisecond, Jitter: 5 * time.Millisecond, Loss: 0.005,
				Dup: 0.001, Reorder: 0.01, Rate: 10_000_000, Seed: 7}},
		{in: "loss=0.1", want: ImpairSpec{Loss: 0.1}},
		{in: "rate=2kbps,limit=3000,gap=2ms", want: ImpairSpec{Rate: 16000, Limit: 3000, Gap: 2 * time.Millisecond}},
		{in: " delay = 5ms ", bad: true}, // key with space is unknown
		{in: "delay=5ms", want: ImpairSpec{Delay: 5 * time.Millisecond}},
		{in: "delay=-5ms", bad: true},
		{in: "loss=101%", bad: true},
		{in: "loss=-1", bad: true},
		{in: "rate=10furlong", bad: true},
		{in: "bogus=1", bad: true},
		{in: "delay", bad: true},
		{in: "seed=x", bad: true},
	}
	for _, tc := range tests {
		got, err := ParseImpair(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("ParseImpair(%q) = %+v, want error", tc.in, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseImpair(%q): %v", tc.in, err)
			continue
		}
		if diff := floatEq(got.Loss, tc.want.Loss) && floatEq(got.Dup, tc.want.Dup) && floatEq(got.Reorder, tc.want.Reorder); !diff {
			t.Errorf("ParseImpair(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
		got.Loss, got.Dup, got.Reorder = tc.want.Loss, tc.want.Dup, tc.want.Reorder
		if got != tc.want {
			t.Errorf("ParseImpair(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
		// Round trip through String.
		back, err := ParseImpair(got.String())
		if err != nil || back != got {
			t.Errorf("round trip %q -> %q -> %+v, %v", tc.in, got.String(), back, err)
		}
	}
}

func floatEq(a, b float64) bool { return math.Abs(a-b) < 1e-12 }

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestImpairerDelayOnly(t *testing.T) {
	im := NewImpairer(ImpairSpec{Delay: 50 * time.Millisecond})
	var buf []time.Time
	for i := 0; i < 100; i++ {
		now := t0.Add(time.Duration(i) * 3 * time.Millisecond)
		rel, fate := im.Schedule(now, 1000, buf[:0])
		if fate != FateSend || len(rel) != 1 {
			t.Fatalf("packet %d: fate %v, %d releases", i, fate, len(rel))
		}
		if d := rel[0].Sub(now); d != 50*time.Millisecond {
			t.Fatalf("packet %d: delay %v, want 50ms", i, d)
		}
	}
}

func TestImpairerRate(t *testing.T) {
	// 8 Mbit/s = 1 byte/us: a 1000-byte packet takes 1 ms to serialise.
	im := NewImpairer(ImpairSpec{Rate: 8_000_000, Limit: 10_000})
	var rel []time.Time
	// A burst of 20 packets at the same instant: 10 fit in the 10 000-byte queue (the
	// bytes still waiting plus the new packet), the rest are tail-dropped.
	sent, dropped := 0, 0
	for i := 0; i < 20; i++ {
		var fate Fate
		n := len(rel)
		rel, fate = im.Schedule(t0, 1000, rel)
		switch fate {
		case FateSend:
			sent++
			if want := t0.Add(time.Duration(sent) * time.Millisecond); !rel[n].Equal(want) {
				t.Fatalf("packet %d released at +%v, want +%v", i, rel[n].Sub(t0), want.Sub(t0))
			}
		case FateQueueFull:
			dropped++
		default:
			t.Fatalf("packet %d: unexpected fate %v", i, fate)
		}
	}
	if sent != 10 || dropped != 10 {
		t.Fatalf("sent %d dropped %d, want 10 and 10", sent, dropped)
	}
	// After the queue drained, a packet goes straight through again.
	later := t0.Add(time.Second)
	rel, fate := im.Schedule(later, 500, rel[:0])
	if fate != FateSend || rel[0].Sub(later) != 500*time.Microsecond {
		t.Fatalf("after drain: fate %v release +%v", fate, rel[0].Sub(later))
	}
}

// TestImpairerRateThroughput offers twice the rate for a simulated second and checks
// that what is released matches the rate.
func TestImpairerRateThroughput(t *testing.T) {
	const rate = 10_000_000 // bits/s
	im := NewImpairer(ImpairSpec{Rate: rate, Seed: 3})
	var rel []time.Time
	sentBytes := 0
	var last time.Time
	interval := time.Duration(1500 * 8 * 1e9 / (2 * rate)) // offered load 2x rate
	for now := t0; now.Before(t0.Add(time.Second)); now = now.Add(interval) {
		var fate Fate
		rel, fate = im.Schedule(now, 1500, rel[:0])
		if fate == FateSend {
			sentBytes += 1500
			last = rel[0]
		}
	}
	got := float64(sentBytes*8) / last.Sub(t0).Seconds()
	if math.Abs(got-rate)/rate > 0.02 {
		t.Fatalf("released %.0f bit/s, want %d ±2%%", got, rate)
	}
}

func TestImpairerJitterKeepsOrder(t *testing.T) {
	im := NewImpairer(ImpairSpec{Delay: 20 * time.Millisecond, Jitter: 10 * time.Millisecond, Seed: 42})
	var rel []time.Time
	var prev time.Time
	var minD, maxD time.Duration = time.Hour, 0
	for i := 0; i < 5000; i++ {
		now := t0.Add(time.Duration(i) * 100 * time.Microsecond)
		var fate Fate
		rel, fate = im.Schedule(now, 100, rel[:0])
		if fate != FateSend {
			t.Fatal("dropped without loss")
		}
		if rel[0].Before(prev) {
			t.Fatalf("packet %d released before its predecessor: jitter reordered", i)
		}
		prev = rel[0]
		d := rel[0].Sub(now)
		minD, maxD = min(minD, d), max(maxD, d)
	}
	if minD < 10*time.Millisecond || maxD > 30*time.Millisecond {
		t.Fatalf("delays in [%v, %v], want within [10ms, 30ms]", minD, maxD)
	}
	if maxD-minD < 5*time.Millisecond {
		t.Fatalf("delays in [%v, %v]: jitter had no effect", minD, maxD)
	}
}

// binomialWithin checks count out of n against probability p with a 5-sigma band.
func binomialWithin(t *testing.T, what string, count, n int, p float64) {
	t.Helper()
	mean := float64(n) * p
	sd := math.Sqrt(float64(n) * p * (1 - p))
	if math.Abs(float64(count)-mean) > 5*sd+1 {
		t.Errorf("%s: %d of %d, want %.1f ± %.1f", what, count, n, mean, 5*sd)
	}
}

func TestImpairerProbabilities(t *testing.T) {
	const n = 20000
	for _, p := range []float64{0.01, 0.1, 0.5} {
		im := NewImpairer(ImpairSpec{Loss: p, Dup: p, Reorder: p, Delay: 10 * time.Millisecond, Seed: int64(p * 1000)})
		var rel []time.Time
		lost, dup, reordered, sent := 0, 0, 0, 0
		var last time.Time
		for i := 0; i < n; i++ {
			now := t0.Add(time.Duration(i) * time.Millisecond)
			var fate Fate
			rel, fate = im.Schedule(now, 100, rel[:0])
			switch fate {
			case FateLoss:
				lost++
				continue
			case FateSend:
			default:
				t.Fatalf("fate %v", fate)
			}
			sent++
			if len(rel) == 2 {
				dup++
				if !rel[0].Equal(rel[1]) {
					t.Fatal("duplicate released at a different time")
				}
			}
			// With delay > 0 a reordered packet goes out ahead of its slot (no delay).
			if rel[0].Sub(now) < 10*time.Millisecond {
				reordered++
			} else if rel[0].Before(last) {
				t.Fatal("in-order packet released before its predecessor")
			} else {
				last = rel[0]
			}
		}
		binomialWithin(t, "loss", lost, n, p)
		binomialWithin(t, "dup", dup, sent, p)
		binomialWithin(t, "reorder", reordered, sent, p)
	}
}

func TestImpairerReorderWithoutDelay(t *testing.T) {
	im := NewImpairer(ImpairSpec{Reorder: 0.2, Gap: 3 * time.Millisecond, Seed: 9})
	var rel []time.Time
	type ev struct {
		seq int
		at  time.Time
	}
	var evs []ev
	for i := 0; i < 1000; i++ {
		now := t0.Add(time.Duration(i) * time.Millisecond)
		rel, _ = im.Schedule(now, 100, rel[:0])
		evs = append(evs, ev{i, rel[0]})
	}
	sort.SliceStable(evs, func(a, b int) bool { return evs[a].at.Before(evs[b].at) })
	outOfOrder := 0
	for i := 1; i < len(evs); i++ {
		if evs[i].seq < evs[i-1].seq {
			outOfOrder++
		}
	}
	// Each held-back packet is overtaken by the ~3 that follow it.
	if outOfOrder < 100 || outOfOrder > 300 {
		t.Fatalf("%d out-of-order releases, want about 200 (20%% of 1000)", outOfOrder)
	}
}

func TestImpairerDeterministic(t *testing.T) {
	spec := ImpairSpec{Delay: 5 * time.Millisecond, Jitter: 2 * time.Millisecond, Loss: 0.1, Dup: 0.05, Reorder: 0.05, Rate: 1_000_000, Seed: 77}
	run := func() []time.Time {
		im := NewImpairer(spec)
		var out []time.Time
		for i := 0; i < 2000; i++ {
			var f Fate
			out, f = im.Schedule(t0.Add(time.Duration(i)*500*time.Microsecond), 100+i%1000, out)
			if f != FateSend {
				out = append(out, time.Time{})
			}
		}
		return out
	}
	a, b := run(), run()
	if len(a) != len(b) {
		t.Fatalf("runs differ in length %d vs %d", len(a), len(b))
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			t.Fatalf("runs differ at %d", i)
		}
	}
	spec.Seed = 78
	c := run()
	same := len(c) == len(a)
	for i := 0; same && i < len(a); i++ {
		same = a[i].Equal(c[i])
	}
	if same {
		t.Fatal("a different seed gave identical fates")
	}
}

func TestImpairerAllocs(t *testing.T) {
	im := NewImpairer(ImpairSpec{Delay: time.Millisecond, Jitter: time.Millisecond, Loss: 0.1, Dup: 0.1, Rate: 1e9})
	buf := make([]time.Time, 0, 4)
	now := t0
	allocs := testing.AllocsPerRun(1000, func() {
		now = now.Add(time.Microsecond)
		buf, _ = im.Schedule(now, 1000, buf[:0])
	})
	if allocs != 0 {
		t.Fatalf("Schedule allocates %.1f per packet", allocs)
	}
}

// FuzzImpairer drives the scheduler with arbitrary arrivals and checks its invariants:
// no release before arrival, in-order packets never overtake each other, the rate is
// never exceeded and the queue bound holds.
func FuzzImpairer(f *testing.F) {
	f.Add([]byte{1, 2, 3, 200, 0, 0, 9}, uint8(30), uint8(5), uint8(10), uint8(0), int64(7))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0}, uint8(0), uint8(0), uint8(0), uint8(50), int64(1))
	f.Fuzz(func(t *testing.T, ops []byte, delayMs, jitterMs, rateMbit, reorderPct uint8, seed int64) {
		spec := ImpairSpec{
			Delay:   time.Duration(delayMs) * time.Millisecond,
			Jitter:  time.Duration(jitterMs) * time.Millisecond,
			Rate:    int64(rateMbit) * 1_000_000,
			Reorder: float64(reorderPct%101) / 100,
			Loss:    0.05, Dup: 0.05, Seed: seed,
		}
		im := NewImpairer(spec)
		now := t0
		var rel []time.Time
		var lastInOrder time.Time
		for i, op := range ops {
			now = now.Add(time.Duration(op) * 37 * time.Microsecond)
			size := 40 + int(op)*5
			var fate Fate
			rel, fate = im.Schedule(now, size, rel[:0])
			if fate != FateSend {
				if len(rel) != 0 {
					t.Fatalf("op %d: dropped but returned releases", i)
				}
				continue
			}
			if len(rel) < 1 || len(rel) > 2 {
				t.Fatalf("op %d: %d releases", i, len(rel))
			}
			for _, r := range rel {
				if r.Before(now) {
					t.Fatalf("op %d: released %v before arrival", i, now.Sub(r))
				}
			}
			if spec.Reorder == 0 {
				if rel[0].Before(lastInOrder) {
					t.Fatalf("op %d: reordered without reorder", i)
				}
				lastInOrder = rel[0]
			}
			if spec.Rate > 0 && im.linkFree.Sub(now) > time.Duration(float64(im.limit+size)*im.nsPerByte)+time.Microsecond {
				t.Fatalf("op %d: queue holds more than the limit", i)
			}
		}
	})
}
