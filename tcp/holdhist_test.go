package tcp

import (
	"testing"
	"time"

	"mpath/reorder"
)

// TestReorderHoldHistogram drives out-of-order delivery through a reorder queue with a
// manual clock and checks the hold times land in the right buckets.
func TestReorderHoldHistogram(t *testing.T) {
	h := new(HoldHistogram)
	q := reorder.New(1 << 20)
	q.SetHoldSink(h.Observe)
	t0 := time.Unix(1000, 0)
	seg := make([]byte, 100)
	var buf []byte
	next := uint32(0)
	// Segment i arrives before the gap in front of it is filled; the gap is filled
	// holds[i] later, so the segment is held exactly that long.
	holds := []time.Duration{50 * time.Microsecond, 300 * time.Microsecond, 3 * time.Millisecond,
		3 * time.Millisecond, 40 * time.Millisecond, 1500 * time.Millisecond, 5 * time.Second}
	now := t0
	for _, d := range holds {
		q.Insert(next, next+100, seg, now) // beyond the gap [next, next+100)
		now = now.Add(d)
		// The gap's bytes arrive in order: the receiver takes them directly, then pops.
		next += 100
		buf = q.Pop(buf[:0], next, now)
		if len(buf) != 100 {
			t.Fatalf("popped %d bytes after hold %v", len(buf), d)
		}
		next += 100
	}
	s := h.Snapshot()
	// Cumulative counts at 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2000 ms.
	want := [len(HoldBuckets)]uint64{1, 1, 2, 2, 2, 4, 4, 4, 5, 5, 5, 5, 5, 6}
	if s.Buckets != want || s.Count != 7 {
		t.Errorf("buckets %v count %d, want %v count 7", s.Buckets, s.Count, want)
	}
	var sum time.Duration
	for _, d := range holds {
		sum += d
	}
	if s.Sum != sum {
		t.Errorf("sum %v, want %v", s.Sum, sum)
	}
}

// TestReorderHoldMergedBlock: two segments merged into one block report their mean
// hold, counted twice.
func TestReorderHoldMergedBlock(t *testing.T) {
	h := new(HoldHistogram)
	q := reorder.New(1 << 20)
	q.SetHoldSink(h.Observe)
	t0 := time.Unix(1000, 0)
	seg := make([]byte, 100)
	q.Insert(0, 100, seg, t0)
	q.Insert(0, 200, seg, t0.Add(2*time.Millisecond))
	if got := q.Pop(nil, 100, t0.Add(4*time.Millisecond)); len(got) != 200 {
		t.Fatalf("popped %d bytes", len(got))
	}
	s := h.Snapshot()
	// Held 4 ms and 2 ms: mean 3 ms, in the 5 ms bucket, not the 2.5 ms one.
	if s.Count != 2 || s.Buckets[4] != 0 || s.Buckets[5] != 2 || s.Sum != 6*time.Millisecond {
		t.Errorf("snapshot %+v", s)
	}
}
