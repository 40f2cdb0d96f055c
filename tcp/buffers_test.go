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
		soft := min(limit, sendAheadMin) // the model of the loop's allowance
		var model []byte
		next := byte(0)
		for step := 0; step < 3000; step++ {
			switch r.IntN(4) {
			case 3:
				v := r.IntN(2 * limit)
				b.setSoft(v)
				soft = min(max(v, sendAheadMin), limit)
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
				if want := min(len(p), max(soft-len(model), 0)); n != want {
					t.Fatalf("seed %d: write took %d of %d with %d held, limit %d, allowance %d", seed, n, len(p), len(model), limit, soft)
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
	b.setSoft(1 << 20)
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

// TestSendBufferAllowance: writes stop at the loop's allowance, not at the limit;
// raising the allowance wakes a blocked writer, lowering it does not; the allowance
// stays between sendAheadMin and the limit.
func TestSendBufferAllowance(t *testing.T) {
	const limit = 4 << 20
	b := newSendBuffer(limit)
	p := make([]byte, 1<<20)
	if n, _ := b.write(p); n != sendAheadMin {
		t.Fatalf("first write took %d, want the initial allowance %d", n, sendAheadMin)
	}
	signalled := func() bool {
		select {
		case <-b.space:
			return true
		default:
			return false
		}
	}
	signalled() // drop any earlier signal
	b.setSoft(sendAheadMin + 100_000)
	if !signalled() {
		t.Fatal("raising the allowance did not wake the writer")
	}
	if n, _ := b.write(p); n != 100_000 {
		t.Fatalf("write after raising the allowance took %d, want 100000", n)
	}
	b.setSoft(1) // below the floor: the allowance becomes sendAheadMin, lower than held
	if signalled() {
		t.Fatal("lowering the allowance woke the writer")
	}
	if n, _ := b.write(p); n != 0 {
		t.Fatalf("write above the allowance took %d, want 0", n)
	}
	b.consume(sendAheadMin)
	signalled()
	if n, _ := b.write(p); n != sendAheadMin-100_000 {
		t.Fatalf("write after consuming took %d, want %d", n, sendAheadMin-100_000)
	}
	b.setSoft(2 * limit)
	for range 8 {
		b.write(p)
	}
	if b.length() != limit {
		t.Fatalf("holding %d with an allowance above the limit, want the limit %d", b.length(), limit)
	}
}
