package tcp

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// TestSendBufferRing writes, slices and consumes at random against a plain byte slice
// as the model: the ring must grow, wrap and hand back exactly the model's bytes, with
// ranges that wrap returned as copies.
func TestSendBufferRing(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		r := rand.New(rand.NewPCG(seed, 7))
		limit := 100_000 + r.IntN(300_000)
		b := newSendBuffer(limit)
		var model []byte
		next := byte(0)
		for step := 0; step < 3000; step++ {
			switch r.IntN(3) {
			case 0, 1:
				p := make([]byte, r.IntN(40_000))
				for i := range p {
					p[i] = next
					next++
				}
				n, err := b.write(p)
				if err != nil {
					t.Fatal(err)
				}
				if want := min(len(p), limit-len(model)); n != want {
					t.Fatalf("seed %d: write took %d of %d with %d held, limit %d", seed, n, len(p), len(model), limit)
				}
				model = append(model, p[:n]...)
			case 2:
				k := r.IntN(len(model) + 1)
				b.consume(k)
				model = model[k:]
			}
			if b.length() != len(model) {
				t.Fatalf("seed %d: length %d, model %d", seed, b.length(), len(model))
			}
			if len(model) > 0 {
				off := r.IntN(len(model))
				n := 1 + r.IntN(min(len(model)-off, 1500))
				if got := b.slice(off, n); !bytes.Equal(got, model[off:off+n]) {
					t.Fatalf("seed %d step %d: slice(%d, %d) differs from the model", seed, step, off, n)
				}
			}
			if len(b.ring) > max(limit, sendBufferMin) {
				t.Fatalf("seed %d: ring grew to %d past the limit %d", seed, len(b.ring), limit)
			}
		}
	}
}

// TestSendBufferNoGarbage: a long transfer through a full buffer allocates nothing once
// the ring has reached its size.
func TestSendBufferNoGarbage(t *testing.T) {
	b := newSendBuffer(1 << 20)
	p := make([]byte, 32<<10)
	for b.length() < 1<<20 {
		b.write(p)
	}
	allocs := testing.AllocsPerRun(200, func() {
		b.consume(32 << 10)
		b.write(p)
		b.slice(b.length()-1400, 1400)
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per write/consume cycle at steady state, want 0", allocs)
	}
}
