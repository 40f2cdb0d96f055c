package tcp

import (
	"sync/atomic"
	"time"
)

// HoldBuckets are the upper bounds of the reorder hold-time histogram, 0.1 ms .. 2 s.
var HoldBuckets = [...]time.Duration{
	100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2 * time.Second,
}

// HoldHistogram counts how long segments waited in reorder queues before delivery,
// stack-wide. Observe is lock-free and allocates nothing; every loop writes to it.
type HoldHistogram struct {
	counts [len(HoldBuckets) + 1]atomic.Uint64 // per bucket (not cumulative); last: beyond 2 s
	sum    atomic.Int64                        // ns, summed over segments
}

// Observe counts segs segments held for d each (a reorder.Queue hold sink).
func (h *HoldHistogram) Observe(d time.Duration, segs int) {
	i := 0
	for i < len(HoldBuckets) && d > HoldBuckets[i] {
		i++
	}
	h.counts[i].Add(uint64(segs))
	h.sum.Add(int64(d) * int64(segs))
}

// HoldSnapshot is a HoldHistogram read at one time.
type HoldSnapshot struct {
	Buckets [len(HoldBuckets)]uint64 // cumulative: segments held at most HoldBuckets[i]
	Count   uint64
	Sum     time.Duration
}

// Snapshot reads the histogram. The fields are read one by one, so a snapshot taken
// while segments are observed may be off by those segments.
func (h *HoldHistogram) Snapshot() HoldSnapshot {
	var s HoldSnapshot
	var cum uint64
	for i := range h.counts {
		cum += h.counts[i].Load()
		if i < len(s.Buckets) {
			s.Buckets[i] = cum
		}
	}
	s.Count = cum
	s.Sum = time.Duration(h.sum.Load())
	return s
}
