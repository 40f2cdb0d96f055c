package spray

import "time"

// RoundRobin is the "rr" scheduler: strict rotation over the up paths, the thesis's
// per-packet alternation. When the path whose turn it is cannot send (no cwnd room, or
// pacing), it waits rather than skipping the path. That reproduces, on purpose, the
// thesis's collapse when one path is slow: the flow runs at about N times the slowest
// path. Down paths are skipped. Not safe for concurrent use; the zero value is ready.
type RoundRobin struct {
	next   int // index of the path whose turn it is (or the first up one after it)
	counts Counts
}

// NewRoundRobin returns an "rr" scheduler.
func NewRoundRobin() *RoundRobin { return &RoundRobin{} }

// Name returns "rr".
func (r *RoundRobin) Name() string { return "rr" }

// Counts returns the decisions so far.
func (r *RoundRobin) Counts() Counts { return r.counts }

// Pick returns the path whose turn it is, or -1 when it cannot send now.
func (r *RoundRobin) Pick(now time.Time, paths []Path, size int) int {
	n := len(paths)
	if r.next >= n {
		r.next = 0
	}
	for k := 0; k < n; k++ {
		i := r.next + k
		if i >= n {
			i -= n
		}
		if !paths[i].Up {
			continue
		}
		if !paths[i].Sendable(now, size) {
			break
		}
		r.next = i + 1
		r.counts.Picks++
		return i
	}
	r.counts.Waits++
	return -1
}
