package reorder

import (
	"testing"
	"time"
)

// TestInsertPopAllocs checks the hot path allocates nothing once pages and the block
// ring have grown: Insert, Pop into a buffer with room, and Blocks into a slice with room.
func TestInsertPopAllocs(t *testing.T) {
	const mss = 1440
	order := threePathOrder(3000, mss)
	seg := stream(0, mss)
	q := New(1 << 22)
	t.Cleanup(q.Reset)
	out := make([]byte, 0, 1<<20)
	blocks := make([]Block, 0, 4)
	isn := uint32(1 << 31)
	next := isn
	k := 0
	round := uint32(0)
	step := func() {
		idx := order[k]
		k++
		if k == len(order) {
			k = 0
			round += uint32(len(order) * mss)
		}
		q.Insert(next, isn+round+uint32(idx*mss), seg, t0)
		blocks = q.Blocks(blocks[:0], 3)
		out = q.Pop(out[:0], next, t0)
		next += uint32(len(out))
	}
	for i := 0; i < 2*len(order); i++ { // warm up: pages in the pool, ring grown
		step()
	}
	if a := testing.AllocsPerRun(2000, step); a != 0 {
		t.Fatalf("Insert+Blocks+Pop allocates %.2f times per segment, want 0", a)
	}
	if q.Stats().MaxDepth < 3 {
		t.Fatalf("no reordering exercised (max depth %d)", q.Stats().MaxDepth)
	}
}

// BenchmarkInsertPop feeds MSS segments in a 3-path reordering pattern (one-way delays
// of 0, 4 and 12 segment times) and pops after each, like the receiver does, also
// building SACK blocks for each ACK.
func BenchmarkInsertPop(b *testing.B) {
	for _, tc := range []struct {
		name  string
		delay [3]int
	}{
		{"3path-0-4-12", [3]int{0, 4, 12}},
		{"3path-0-40-400", [3]int{0, 40, 400}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			const mss = 1440
			order := orderFor(4096, tc.delay)
			seg := stream(0, mss)
			q := New(1 << 24)
			defer q.Reset()
			out := make([]byte, 0, 1<<22)
			blocks := make([]Block, 0, 4)
			next := uint32(0)
			base := uint32(0)
			k := 0
			now := t0
			b.SetBytes(mss)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				now = now.Add(time.Microsecond)
				q.Insert(next, base+uint32(order[k]*mss), seg, now)
				blocks = q.Blocks(blocks[:0], 3)
				out = q.Pop(out[:0], next, now)
				next += uint32(len(out))
				k++
				if k == len(order) {
					k = 0
					base += uint32(len(order) * mss)
				}
			}
			b.StopTimer()
			st := q.Stats()
			b.ReportMetric(float64(st.MaxDepth), "maxdepth")
		})
	}
}

// orderFor is threePathOrder with configurable delays (in segment times).
func orderFor(n int, delay [3]int) []int {
	type arr struct{ at, idx int }
	as := make([]arr, n)
	for i := range as {
		as[i] = arr{i + delay[i%3], i}
	}
	// Insertion sort keeps it stable and dependency-free; n is small.
	for i := 1; i < len(as); i++ {
		for j := i; j > 0 && as[j].at < as[j-1].at; j-- {
			as[j], as[j-1] = as[j-1], as[j]
		}
	}
	out := make([]int, n)
	for i, a := range as {
		out[i] = a.idx
	}
	return out
}
