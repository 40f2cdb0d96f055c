package reorder

import (
	"bytes"
	"crypto/sha256"
	"slices"
	"testing"
	"time"
)

// streamByte is the byte at sequence number s of the test stream: a function of the
// sequence number, so any copy at the wrong offset shows up.
func streamByte(s uint32) byte { return byte(s*2654435761>>24) ^ byte(s) }

func stream(seq uint32, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = streamByte(seq + uint32(i))
	}
	return b
}

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// step is one operation of a table test. Sequence numbers are relative to the case's
// base. kind: 'i' insert [seq, seq+n) with next; 'p' pop at next.
type step struct {
	kind       byte
	next, seq  uint32
	n          int
	at         time.Duration // time of the operation since t0
	fill       byte          // 0: stream content; else every byte is fill
	wantStored int           // insert: bytes stored; pop: bytes delivered
	wantBlocks []Block       // Blocks(nil, 4) afterwards, relative to base; nil: not checked
}

func TestQueueTable(t *testing.T) {
	type tcase struct {
		name  string
		base  uint32
		limit int
		steps []step
		check func(t *testing.T, q *Queue, base uint32)
	}
	cases := []tcase{
		{name: "in order", limit: 1 << 16, steps: []step{
			{kind: 'i', next: 0, seq: 0, n: 10, wantStored: 10},
			{kind: 'p', next: 0, wantStored: 10, wantBlocks: []Block{}},
			{kind: 'i', next: 10, seq: 10, n: 5, wantStored: 5},
			{kind: 'p', next: 10, wantStored: 5, wantBlocks: []Block{}},
		}},
		{name: "gap then fill", limit: 1 << 16, steps: []step{
			{kind: 'i', next: 0, seq: 10, n: 10, wantStored: 10, wantBlocks: []Block{{10, 20}}},
			{kind: 'p', next: 0, wantStored: 0},
			{kind: 'i', next: 0, seq: 0, n: 10, wantStored: 10},
			{kind: 'p', next: 0, wantStored: 20, wantBlocks: []Block{}},
		}, check: func(t *testing.T, q *Queue, _ uint32) {
			if q.Bytes() != 0 || q.Len() != 0 || q.Holes() != 0 {
				t.Errorf("after draining: Bytes %d Len %d Holes %d", q.Bytes(), q.Len(), q.Holes())
			}
		}},
		{name: "overlap on the left", limit: 1 << 16, steps: []step{
			{kind: 'i', next: 0, seq: 10, n: 10, wantStored: 10},
			{kind: 'i', next: 0, seq: 5, n: 10, wantStored: 5, wantBlocks: []Block{{5, 20}}},
		}},
		{name: "overlap on the right", limit: 1 << 16, steps: []step{
			{kind: 'i', next: 0, seq: 10, n: 10, wantStored: 10},
			{kind: 'i', next: 0, seq: 15, n: 10, wantStored: 5, wantBlocks: []Block{{10, 25}}},
		}},
		{name: "touching blocks merge", limit: 1 << 16, steps: []step{
			{kind: 'i', next: 0, seq: 10, n: 10, wantStored: 10},
			{kind: 'i', next: 0, seq: 30, n: 10, wantStored: 10},
			{kind: 'i', next: 0, seq: 20, n: 10, wantStored: 10, wantBlocks: []Block{{10, 40}}},
		}},
		{name: "exact duplicate", limit: 1 << 16, steps: []step{
			{kind: 'i', next: 0, seq: 10, n: 10, wantStored: 10},
			{kind: 'i', next: 0, seq: 10, n: 10, wantStored: 0},
			{kind: 'i', next: 0, seq: 12, n: 3, wantStored: 0, wantBlocks: []Block{{10, 20}}},
		}, check: func(t *testing.T, q *Queue, _ uint32) {
			st := q.Stats()
			if st.Duplicates != 2 || st.Trimmed != 13 || st.Inserted != 1 || q.Len() != 1 {
				t.Errorf("stats %+v Len %d, want 2 duplicates, 13 trimmed, 1 inserted, 1 held", st, q.Len())
			}
		}},
		{name: "segment spanning several holes", limit: 1 << 16, steps: []step{
			{kind: 'i', next: 0, seq: 10, n: 10, wantStored: 10},
			{kind: 'i', next: 0, seq: 30, n: 10, wantStored: 10},
			{kind: 'i', next: 0, seq: 50, n: 10, wantStored: 10, wantBlocks: []Block{{50, 60}, {30, 40}, {10, 20}}},
			{kind: 'i', next: 0, seq: 5, n: 60, wantStored: 30, wantBlocks: []Block{{5, 65}}},
			{kind: 'i', next: 0, seq: 0, n: 5, wantStored: 5},
			{kind: 'p', next: 0, wantStored: 65},
		}, check: func(t *testing.T, q *Queue, _ uint32) {
			st := q.Stats()
			if st.Inserted != 5 || st.Trimmed != 30 || st.MaxDepth != 5 || st.HoldCount != 5 {
				t.Errorf("stats %+v, want 5 inserted, 30 trimmed, depth 5, 5 delivered", st)
			}
		}},
		{name: "bytes before next", limit: 1 << 16, steps: []step{
			{kind: 'i', next: 100, seq: 90, n: 5, wantStored: 0},
			{kind: 'i', next: 100, seq: 90, n: 15, wantStored: 5, wantBlocks: []Block{}},
			{kind: 'p', next: 100, wantStored: 5},
		}, check: func(t *testing.T, q *Queue, _ uint32) {
			if st := q.Stats(); st.Duplicates != 1 || st.Trimmed != 15 {
				t.Errorf("stats %+v, want 1 duplicate and 15 trimmed", st)
			}
		}},
		{name: "next moves past held bytes", limit: 1 << 16, steps: []step{
			{kind: 'i', next: 0, seq: 10, n: 10, wantStored: 10},
			{kind: 'i', next: 0, seq: 30, n: 10, wantStored: 10},
			// The engine delivered [0,15) itself; Insert with the new next trims.
			{kind: 'i', next: 15, seq: 50, n: 10, wantStored: 10, wantBlocks: []Block{{50, 60}, {30, 40}}},
			{kind: 'p', next: 15, wantStored: 5},
			// Pop with a next beyond a whole block drops it.
			{kind: 'p', next: 45, wantStored: 0, wantBlocks: []Block{{50, 60}}},
		}, check: func(t *testing.T, q *Queue, _ uint32) {
			if st := q.Stats(); st.Trimmed != 15 || q.Bytes() != 10 || q.Len() != 1 {
				t.Errorf("stats %+v Bytes %d Len %d, want 15 trimmed, 10 bytes, 1 segment", st, q.Bytes(), q.Len())
			}
		}},
		{name: "wraparound", base: 1<<32 - 15, limit: 1 << 16, steps: []step{
			{kind: 'i', next: 0, seq: 10, n: 20, wantStored: 20, wantBlocks: []Block{{10, 30}}},
			{kind: 'i', next: 0, seq: 40, n: 8200, wantStored: 8200},
			{kind: 'i', next: 0, seq: 5, n: 40, wantStored: 15, wantBlocks: []Block{{5, 8240}}},
			{kind: 'i', next: 0, seq: 0, n: 5, wantStored: 5},
			{kind: 'p', next: 0, wantStored: 8240, wantBlocks: []Block{}},
		}},
		{name: "wraparound at a page edge", base: 1<<32 - pageSize - 3, limit: 3 * pageSize, steps: []step{
			{kind: 'i', next: 0, seq: 100, n: 2 * pageSize, wantStored: 2 * pageSize},
			{kind: 'i', next: 0, seq: 0, n: 100, wantStored: 100},
			{kind: 'p', next: 0, wantStored: 2*pageSize + 100},
			{kind: 'i', next: 2*pageSize + 100, seq: 2*pageSize + 200, n: 3 * pageSize, wantStored: 3*pageSize - 100},
		}, check: func(t *testing.T, q *Queue, _ uint32) {
			if st := q.Stats(); st.Dropped != 100 {
				t.Errorf("Dropped %d, want 100", st.Dropped)
			}
		}},
		{name: "limit reached", limit: 100, steps: []step{
			{kind: 'i', next: 0, seq: 50, n: 100, wantStored: 50, wantBlocks: []Block{{50, 100}}},
			{kind: 'i', next: 0, seq: 200, n: 10, wantStored: 0},
			// Near bytes are still taken: the limit is on sequence space, not arrival order.
			{kind: 'i', next: 0, seq: 0, n: 10, wantStored: 10},
			{kind: 'p', next: 0, wantStored: 10},
			{kind: 'i', next: 10, seq: 10, n: 100, wantStored: 50},
			{kind: 'p', next: 10, wantStored: 100},
		}, check: func(t *testing.T, q *Queue, _ uint32) {
			if st := q.Stats(); st.Dropped != 60 || st.MaxBytes != 100 {
				t.Errorf("stats %+v, want 60 dropped, MaxBytes 100", st)
			}
		}},
		{name: "zero limit refuses", limit: 0, steps: []step{
			{kind: 'i', next: 0, seq: 0, n: 10, wantStored: 0},
			{kind: 'p', next: 0, wantStored: 0},
		}},
		{name: "first copy wins", limit: 1 << 16, steps: []step{
			{kind: 'i', next: 0, seq: 10, n: 10, fill: 'A', wantStored: 10},
			{kind: 'i', next: 0, seq: 0, n: 30, fill: 'B', wantStored: 20},
		}, check: func(t *testing.T, q *Queue, base uint32) {
			got := string(q.Pop(nil, base, t0))
			if want := "BBBBBBBBBBAAAAAAAAAABBBBBBBBBB"; got != want {
				t.Errorf("popped %q, want %q", got, want)
			}
		}},
		{name: "SACK order", limit: 1 << 16, steps: []step{
			{kind: 'i', next: 0, seq: 10, n: 10, wantStored: 10},
			{kind: 'i', next: 0, seq: 30, n: 10, wantStored: 10},
			{kind: 'i', next: 0, seq: 50, n: 10, wantStored: 10},
			{kind: 'i', next: 0, seq: 70, n: 10, wantStored: 10},
			{kind: 'i', next: 0, seq: 90, n: 10, wantStored: 10, wantBlocks: []Block{{90, 100}, {70, 80}, {50, 60}, {30, 40}}},
			{kind: 'i', next: 0, seq: 35, n: 10, wantStored: 5, wantBlocks: []Block{{30, 45}, {90, 100}, {70, 80}, {50, 60}}},
			{kind: 'i', next: 0, seq: 12, n: 2, wantStored: 0, wantBlocks: []Block{{10, 20}, {30, 45}, {90, 100}, {70, 80}}},
			{kind: 'i', next: 0, seq: 0, n: 10, wantStored: 10},
			{kind: 'p', next: 0, wantStored: 20, wantBlocks: []Block{{30, 45}, {90, 100}, {70, 80}, {50, 60}}},
		}},
		{name: "hold times", limit: 1 << 16, steps: []step{
			{kind: 'i', next: 0, seq: 10, n: 10, at: 0, wantStored: 10},
			{kind: 'i', next: 0, seq: 20, n: 10, at: time.Millisecond, wantStored: 10},
			{kind: 'i', next: 0, seq: 0, n: 10, at: 3 * time.Millisecond, wantStored: 10},
			{kind: 'p', next: 0, at: 5 * time.Millisecond, wantStored: 30},
		}, check: func(t *testing.T, q *Queue, _ uint32) {
			st := q.Stats()
			if st.HoldCount != 3 || st.HoldTotal != 11*time.Millisecond || st.HoldMax != 5*time.Millisecond {
				t.Errorf("hold count %d total %v max %v, want 3, 11ms, 5ms", st.HoldCount, st.HoldTotal, st.HoldMax)
			}
			if st.MaxDepth != 3 || st.MaxBytes != 30 || st.MaxDist != 30 {
				t.Errorf("depth %d bytes %d dist %d, want 3, 30, 30", st.MaxDepth, st.MaxBytes, st.MaxDist)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q := New(tc.limit)
			t.Cleanup(q.Reset)
			m := newModel(tc.limit)
			for k, s := range tc.steps {
				now := t0.Add(s.at)
				next, seq := tc.base+s.next, tc.base+s.seq
				switch s.kind {
				case 'i':
					data := stream(seq, s.n)
					if s.fill != 0 {
						data = bytes.Repeat([]byte{s.fill}, s.n)
					}
					got := q.Insert(next, seq, data, now)
					if want := m.insert(next, seq, data); want != got || got != s.wantStored {
						t.Fatalf("step %d: Insert(%d+%d, len %d) stored %d, want %d (model %d)", k, s.seq, s.n, s.n, got, s.wantStored, want)
					}
				case 'p':
					got := q.Pop([]byte("x"), next, now)
					want := m.pop([]byte("x"), next)
					if !bytes.Equal(got, want) || len(got)-1 != s.wantStored {
						t.Fatalf("step %d: Pop(%d) gave %d bytes, want %d (model %d, equal %v)", k, s.next, len(got)-1, s.wantStored, len(want)-1, bytes.Equal(got, want))
					}
					if s.fill == 0 && !bytes.Equal(got[1:], stream(next, len(got)-1)) {
						t.Fatalf("step %d: Pop(%d) content is not the stream", k, s.next)
					}
				}
				if err := compare(q, m); err != nil {
					t.Fatalf("step %d: %v", k, err)
				}
				if s.wantBlocks != nil {
					got := q.Blocks(nil, 4)
					want := make([]Block, len(s.wantBlocks))
					for i, b := range s.wantBlocks {
						want[i] = Block{tc.base + b.Left, tc.base + b.Right}
					}
					if !slices.Equal(got, want) {
						t.Fatalf("step %d: Blocks = %v, want %v (base %d)", k, got, want, tc.base)
					}
				}
			}
			if tc.check != nil {
				tc.check(t, q, tc.base)
			}
		})
	}
}

// TestBlocksAppend checks that Blocks appends after existing entries and honours n.
func TestBlocksAppend(t *testing.T) {
	q := New(1 << 16)
	for _, s := range []uint32{10, 30, 50} {
		q.Insert(0, s, stream(s, 5), t0)
	}
	dst := q.Blocks([]Block{{1, 2}}, 2)
	want := []Block{{1, 2}, {50, 55}, {30, 35}}
	if !slices.Equal(dst, want) {
		t.Fatalf("Blocks = %v, want %v", dst, want)
	}
	if got := q.Blocks(nil, 0); len(got) != 0 {
		t.Fatalf("Blocks(n=0) = %v", got)
	}
}

// TestReset checks that Reset returns every page and leaves a working queue.
func TestReset(t *testing.T) {
	q := New(1 << 20)
	for s := uint32(1000); s < 200000; s += 3000 {
		q.Insert(0, s, stream(s, 1440), t0)
	}
	q.Reset()
	if err := q.check(); err != nil {
		t.Fatal(err)
	}
	if q.Bytes() != 0 || q.Len() != 0 || q.Holes() != 0 {
		t.Fatalf("after Reset: Bytes %d Len %d Holes %d", q.Bytes(), q.Len(), q.Holes())
	}
	for i, p := range q.pages.slots {
		if p != nil {
			t.Fatalf("slot %d still has a page after Reset", i)
		}
	}
	q.Insert(0, 0, stream(0, 100), t0)
	if got := q.Pop(nil, 0, t0); !bytes.Equal(got, stream(0, 100)) {
		t.Fatalf("queue unusable after Reset")
	}
}

// TestTransferSHA256 pushes a 4 MiB stream through the queue in a 3-path reordering
// pattern with retransmitted duplicates, and checks the delivered stream byte for byte.
func TestTransferSHA256(t *testing.T) {
	const total = 4 << 20
	const mss = 1440
	src := make([]byte, total)
	for i := range src {
		src[i] = streamByte(uint32(i) * 7)
	}
	isn := uint32(1<<32 - 3*mss - 17) // wraps early on
	order := threePathOrder(total/mss+1, mss)
	q := New(1 << 20)
	t.Cleanup(q.Reset)
	next := isn
	var out []byte
	now := t0
	for k, idx := range order {
		off := idx * mss
		if off >= total {
			continue
		}
		end := min(off+mss, total)
		now = now.Add(10 * time.Microsecond)
		q.Insert(next, isn+uint32(off), src[off:end], now)
		if k%7 == 0 { // a retransmission of something recent
			o := max(0, off-3*mss)
			q.Insert(next, isn+uint32(o), src[o:min(o+mss, total)], now)
		}
		before := len(out)
		out = q.Pop(out, next, now)
		next += uint32(len(out) - before)
	}
	if len(out) != total {
		t.Fatalf("delivered %d bytes, want %d (held %d)", len(out), total, q.Bytes())
	}
	if sha256.Sum256(out) != sha256.Sum256(src) {
		t.Fatal("delivered stream differs from the source (sha256)")
	}
	st := q.Stats()
	if st.MaxDepth < 2 || st.HoldCount == 0 || st.Duplicates == 0 {
		t.Fatalf("stats %+v: the test did not exercise reordering", st)
	}
	t.Logf("stats: %+v", st)
}

// threePathOrder returns the arrival order of n segments sprayed round robin over three
// paths whose one-way delays are 0, 4 and 12 segment times: a reordering depth like a
// 1:1:1 spray over paths of different RTT.
func threePathOrder(n, _ int) []int { return orderFor(n, [3]int{0, 4, 12}) }

func TestNewLimits(t *testing.T) {
	for _, tc := range []struct{ in, want int }{{-5, 0}, {0, 0}, {1000, 1000}, {MaxLimit + 1, MaxLimit}} {
		q := New(tc.in)
		if q.Limit() != tc.want {
			t.Errorf("New(%d).Limit() = %d, want %d", tc.in, q.Limit(), tc.want)
		}
		if n := q.Insert(0, 0, nil, t0); n != 0 || q.Stats() != (Stats{}) {
			t.Errorf("New(%d): empty insert stored %d, stats %+v", tc.in, n, q.Stats())
		}
	}
}
