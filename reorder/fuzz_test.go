package reorder

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"
	"time"
)

// runOps interprets b as a sequence of queue operations and checks the queue against
// the model after each one. Encoding:
//
//	b[0:4]  initial rcv.nxt (big endian), so wraparound gets explored
//	b[4]    limit = (b[4]%4+1) * 5000 bytes (spans several pages)
//	then 4 bytes per operation, kind = op[0] % 8:
//	  0..4  Insert at next + (op[1]<<8|op[2]) % (limit+600) - 300, length op[3]*9+1
//	  5     Pop
//	  6     the engine took op[1]*16+1 in-order bytes itself (next moves on)
//	  7     Blocks(op[1]%5) and check the first block holds the last insert
//
// Data is the test stream (a function of the sequence number), so the delivered bytes
// must be exactly stream[isn, next): in order, never twice, nothing invented.
func runOps(t testing.TB, b []byte) {
	var hdr [5]byte
	copy(hdr[:], b)
	if len(b) > 5 {
		b = b[5:]
	} else {
		b = nil
	}
	isn := binary.BigEndian.Uint32(hdr[:4])
	limit := (int(hdr[4])%4 + 1) * 5000
	q := New(limit)
	defer q.Reset()
	m := newModel(limit)
	next := isn
	var delivered []byte
	checked := 0 // delivered[:checked] is known to match the stream
	now := t0
	lastIns, haveIns := uint32(0), false
	for len(b) >= 4 {
		op := b[:4]
		b = b[4:]
		now = now.Add(time.Microsecond)
		switch k := op[0] % 8; {
		case k <= 4:
			off := int(binary.BigEndian.Uint16(op[1:3]))%(limit+600) - 300
			seq := next + uint32(off)
			data := stream(seq, int(op[3])*9+1)
			got, want := q.Insert(next, seq, data, now), m.insert(next, seq, data)
			if got != want {
				t.Fatalf("Insert(next %d, seq %d, len %d) stored %d, model %d", next, seq, len(data), got, want)
			}
			if got > 0 || q.find(seq) >= 0 {
				lastIns, haveIns = seq, true
			}
		case k == 5:
			before := len(delivered)
			delivered = q.Pop(delivered, next, now)
			want := m.pop(nil, next)
			if !bytes.Equal(delivered[before:], want) {
				t.Fatalf("Pop(%d) gave %d bytes, model %d", next, len(delivered)-before, len(want))
			}
			next += uint32(len(delivered) - before)
		case k == 6:
			n := int(op[1])*16 + 1
			delivered = append(delivered, stream(next, n)...)
			next += uint32(n)
			// The queue and the model hear of it on their next call.
		case k == 7:
			bs := q.Blocks(nil, int(op[1])%5)
			if haveIns && len(bs) > 0 {
				if i := q.find(lastIns); i >= 0 && q.blocks.at(i).left != q.base {
					if f := q.blocks.at(i); bs[0] != (Block{f.left, f.right}) {
						t.Fatalf("first SACK block %v does not hold the last insert at %d (block [%d,%d))", bs[0], lastIns, f.left, f.right)
					}
				}
			}
		}
		if err := compare(q, m); err != nil {
			t.Fatalf("after op %v: %v", op, err)
		}
		if !bytes.Equal(delivered[checked:], stream(isn+uint32(checked), len(delivered)-checked)) {
			t.Fatalf("delivered stream differs from the source after byte %d", checked)
		}
		checked = len(delivered)
	}
	// Fill every gap up to the last held byte: everything must come out, once.
	before := len(delivered)
	delivered = q.Pop(delivered, next, now)
	if want := m.pop(nil, next); !bytes.Equal(delivered[before:], want) {
		t.Fatalf("final Pop(%d) gave %d bytes, model %d", next, len(delivered)-before, len(want))
	}
	next += uint32(len(delivered) - before)
	runs := m.runs()
	if len(runs) > 0 {
		end := runs[len(runs)-1].Right
		for s := next; s != end; {
			n := min(int(end-s), 1000)
			q.Insert(next, s, stream(s, n), now)
			s += uint32(n)
		}
		before = len(delivered)
		delivered = q.Pop(delivered, next, now)
		if got := uint32(len(delivered) - before); got != end-next {
			t.Fatalf("drain delivered %d bytes, want %d", got, end-next)
		}
		if q.Bytes() != 0 || q.Len() != 0 {
			t.Fatalf("after drain: Bytes %d Len %d", q.Bytes(), q.Len())
		}
		if !bytes.Equal(delivered, stream(isn, len(delivered))) {
			t.Fatalf("delivered stream differs from the source after drain")
		}
	}
	if err := q.check(); err != nil {
		t.Fatal(err)
	}
}

func FuzzQueue(f *testing.F) {
	op := func(kind byte, off uint16, n byte) []byte { return []byte{kind, byte(off >> 8), byte(off), n} }
	seed := func(isn uint32, limSel byte, ops ...[]byte) []byte {
		b := binary.BigEndian.AppendUint32(nil, isn)
		b = append(b, limSel)
		for _, o := range ops {
			b = append(b, o...)
		}
		return b
	}
	// In order.
	f.Add(seed(0, 0, op(0, 300, 10), op(5, 0, 0), op(0, 390, 10), op(5, 0, 0)))
	// Gaps, overlap, fill, pop, near the wrap.
	f.Add(seed(1<<32-500, 1, op(0, 800, 50), op(1, 1500, 50), op(2, 600, 200), op(7, 3, 0), op(3, 300, 40), op(5, 0, 0)))
	// Spanning several holes, then a page-crossing insert.
	f.Add(seed(1<<32-8192-7, 2, op(0, 400, 5), op(0, 500, 5), op(0, 600, 5), op(1, 350, 40), op(7, 4, 0), op(2, 300, 255), op(5, 0, 0)))
	// Limit reached, engine advances past held bytes.
	f.Add(seed(12345, 0, op(0, 4900, 255), op(0, 5500, 255), op(6, 40<<8, 0), op(7, 2, 0), op(5, 0, 0)))
	// Duplicates and data before next.
	f.Add(seed(7, 3, op(0, 310, 3), op(0, 310, 3), op(0, 0, 100), op(7, 1, 0), op(5, 0, 0)))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 4096 {
			b = b[:4096] // keep each input cheap; the interesting states need few ops
		}
		runOps(t, b)
	})
}

// TestQueueModel runs random operation sequences through runOps, so the property test
// covers what the fuzz target covers even without -fuzz.
func TestQueueModel(t *testing.T) {
	seeds := uint64(24)
	if raceEnabled {
		seeds = 6
	}
	for seed := uint64(1); seed <= seeds; seed++ {
		r := rand.New(rand.NewPCG(seed, 0x5eed))
		b := make([]byte, 5+4*300)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if seed%4 == 0 {
			binary.BigEndian.PutUint32(b, -uint32(1+r.IntN(20000))) // start just below the wrap
		}
		runOps(t, b)
	}
}

// TestQueueModelRandomContent compares against the model with different bytes in each
// copy of a range (as a broken peer might send): the first copy stored must win.
func TestQueueModelRandomContent(t *testing.T) {
	seeds := uint64(10)
	if raceEnabled {
		seeds = 3
	}
	for seed := uint64(1); seed <= seeds; seed++ {
		r := rand.New(rand.NewPCG(seed, 42))
		limit := 1000 + r.IntN(20000)
		q := New(limit)
		m := newModel(limit)
		next := r.Uint32()
		var got, want []byte
		now := t0
		for i := 0; i < 600; i++ {
			now = now.Add(time.Duration(r.IntN(1000)) * time.Microsecond)
			switch r.IntN(6) {
			case 0:
				before := len(got)
				got = q.Pop(got, next, now)
				want = m.pop(want, next)
				next += uint32(len(got) - before)
			default:
				seq := next + uint32(r.IntN(limit+2000)-1000)
				data := make([]byte, 1+r.IntN(2000))
				for j := range data {
					data[j] = byte(r.Uint32())
				}
				if a, b := q.Insert(next, seq, data, now), m.insert(next, seq, data); a != b {
					t.Fatalf("seed %d op %d: stored %d, model %d", seed, i, a, b)
				}
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("seed %d op %d: delivered bytes differ from the model", seed, i)
			}
			if err := compare(q, m); err != nil {
				t.Fatalf("seed %d op %d: %v", seed, i, err)
			}
		}
		if len(got) == 0 {
			t.Fatalf("seed %d: nothing delivered; the test exercised nothing", seed)
		}
		q.Reset()
	}
}
