package spray

import (
	"testing"
	"time"
)

// benchPaths returns five paths of different rates and RTTs. mixed makes one full,
// one down and one paced; otherwise all have room.
func benchPaths(mixed bool) []Path {
	paths := []Path{
		mk("a", 10e6, 10*time.Millisecond),
		mk("b", 5e6, 20*time.Millisecond),
		mk("c", 1e6, 40*time.Millisecond),
		mk("d", 2e6, 30*time.Millisecond),
		mk("e", 8e6, 15*time.Millisecond),
	}
	for i := range paths {
		paths[i].Weight = i + 1
	}
	if mixed {
		paths[1] = full(paths[1])
		paths[2].Up = false
		paths[3].NextSend = t0.Add(time.Millisecond)
	}
	return paths
}

// BenchmarkPick measures one scheduling decision over five paths, the per-segment
// cost on the engine's hot path. "room": every path can send; "mixed": one full, one
// down, one paced (rr and weighted then wait whenever the full path's turn comes).
func BenchmarkPick(b *testing.B) {
	for _, state := range []string{"room", "mixed"} {
		paths := benchPaths(state == "mixed")
		for _, name := range Names {
			b.Run(name+"/"+state, func(b *testing.B) {
				s, _ := New(name)
				b.ReportAllocs()
				picked := 0
				for i := 0; i < b.N; i++ {
					if s.Pick(t0, paths, mss) >= 0 {
						picked++
					}
				}
				b.ReportMetric(float64(picked)/float64(b.N), "picked/op")
			})
		}
		b.Run("earliest/"+state, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				Earliest(t0, paths, mss, 0)
			}
		})
	}
}
