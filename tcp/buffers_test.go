package tcp

import (
	"bytes"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"testing"
)

// raceBuild reports a -race build (read from the build settings, like raceEnabled in
// the external tests): the race detector makes sync.Pool drop items at random, so
// allocation budgets that rely on a pool are not checked under it.
var raceBuild = func() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}()

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

// TestRecvBufferModel pushes (copied, or taken by ownership from an offered buffer),
// pushes through pushFunc, and reads at random against a plain byte slice as the model.
// Buffers the receive buffer hands back are scribbled over at once, so a chunk still
// pointing into a returned buffer shows up as a difference from the model; memory held
// must stay within twice the unread bytes plus the own buffers.
func TestRecvBufferModel(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		r := rand.New(rand.NewPCG(seed, 11))
		var returned sync.Pool // New is nil: Get returns nil once empty
		b := newRecvBuffer()
		var model []byte
		next := byte(0)
		stream := func(n int) []byte {
			p := make([]byte, n)
			for i := range p {
				p[i] = next
				next++
			}
			return p
		}
		out := make([]byte, 100_000)
		for step := 0; step < 4000; step++ {
			switch r.IntN(6) {
			case 0: // a copied push
				p := stream(r.IntN(3000))
				b.push(p)
				model = append(model, p...)
			case 1, 2: // a segment in a pooled buffer, offered; the endpoint pushes part of it
				size := 1 + r.IntN(2048)
				buf := &rxBuf{b: make([]byte, size, 2048), pool: &returned}
				skip := r.IntN(size)
				p := stream(size - skip)
				copy(buf.b[skip:], p)
				b.offer(buf)
				b.push(buf.b[skip:])
				taken := b.withdraw()
				if want := 2*len(p) >= 2048; taken != want {
					t.Fatalf("seed %d: %d bytes in a 2048-byte buffer: taken %v, want %v", seed, len(p), taken, want)
				}
				if !taken {
					buf.release()
				}
				model = append(model, p...)
			case 3: // bytes from the reorder queue
				p := stream(r.IntN(20_000))
				if n := b.pushFunc(func(dst []byte) []byte { return append(dst, p...) }); n != len(p) {
					t.Fatalf("seed %d: pushFunc took %d of %d", seed, n, len(p))
				}
				model = append(model, p...)
			default:
				n, err, ok := b.read(out[:1+r.IntN(len(out)-1)])
				if err != nil {
					t.Fatal(err)
				}
				if ok != (len(model) > 0) {
					t.Fatalf("seed %d: read ok %v with %d bytes held", seed, ok, len(model))
				}
				if !bytes.Equal(out[:n], model[:n]) {
					t.Fatalf("seed %d step %d: read %d bytes that differ from the model", seed, step, n)
				}
				model = model[n:]
			}
			for x := returned.Get(); x != nil; x = returned.Get() {
				rb := x.(*rxBuf)
				for i := range rb.b[:cap(rb.b)] {
					rb.b[:cap(rb.b)][i] = 0xee
				}
			}
			if b.length() != len(model) {
				t.Fatalf("seed %d: length %d, model %d", seed, b.length(), len(model))
			}
			held, seen := 0, map[*rxBuf]bool{b.cur: true}
			if b.cur != nil {
				held += cap(b.cur.b)
			}
			for i := 0; i < b.n; i++ {
				if c := b.ring[(b.head+i)&(len(b.ring)-1)]; !seen[c.buf] {
					seen[c.buf] = true
					held += cap(c.buf.b)
				}
			}
			if limit := 2*len(model) + 3*rbOwnSize; held > limit {
				t.Fatalf("seed %d: %d bytes of buffers hold %d unread bytes", seed, held, len(model))
			}
		}
	}
}

// TestRecvBufferNoGarbage: in-order segments taken by ownership, and copies, then read,
// allocate nothing at steady state.
func TestRecvBufferNoGarbage(t *testing.T) {
	b := newRecvBuffer()
	out := make([]byte, 64<<10)
	payload := make([]byte, 1440)
	small := make([]byte, 100)
	cycle := func() {
		for range 32 {
			buf := getRxBuf(len(payload))
			buf.b = append(buf.b, payload...)
			b.offer(buf)
			b.push(buf.b)
			if !b.withdraw() {
				buf.release()
			}
			b.push(small)
		}
		for b.length() > 0 {
			b.read(out)
		}
	}
	for range 100 {
		cycle()
	}
	if raceBuild {
		t.Skip("the race detector makes sync.Pool drop items at random")
	}
	if a := testing.AllocsPerRun(200, cycle); a > 0.5 { // sync.Pool may drop a buffer during a collection
		t.Errorf("%.1f allocations per cycle of 64 pushes and their reads, want 0", a)
	}
}
