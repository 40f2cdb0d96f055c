package spray

import "time"

// Weighted is the "weighted" scheduler: smooth weighted round robin (nginx's credits)
// over the up paths with their static Weight, the thesis's 1:k ratios. Each pick adds
// every up path's weight to its credit and takes the path with the most credit, which
// then pays the total weight. Weights 1:3 give B A B B, repeating: the light path's
// turns spread evenly, and over every sum-of-weights picks each path gets exactly its
// weight.
//
// Like rr it waits (-1) when the chosen path cannot send, and a wait consumes no
// credit, so the sequence resumes where it stopped. A down path's credit is reset, so
// it comes back without a burst. Not safe for concurrent use; the zero value is ready.
type Weighted struct {
	credit []int
	counts Counts
}

// NewWeighted returns a "weighted" scheduler.
func NewWeighted() *Weighted { return &Weighted{} }

// Name returns "weighted".
func (w *Weighted) Name() string { return "weighted" }

// Counts returns the decisions so far.
func (w *Weighted) Counts() Counts { return w.counts }

// Pick returns the path with the most credit, or -1 when it cannot send now.
func (w *Weighted) Pick(now time.Time, paths []Path, size int) int {
	if len(w.credit) != len(paths) {
		// The path set changed: start over (allocates only when it grows).
		if cap(w.credit) >= len(paths) {
			w.credit = w.credit[:len(paths)]
			clear(w.credit)
		} else {
			w.credit = make([]int, len(paths))
		}
	}
	best, bestCredit, total := -1, 0, 0
	for i := range paths {
		if !paths[i].Up {
			w.credit[i] = 0
			continue
		}
		wt := paths[i].weight()
		total += wt
		if c := w.credit[i] + wt; best < 0 || c > bestCredit {
			best, bestCredit = i, c
		}
	}
	if best < 0 || !paths[best].Sendable(now, size) {
		w.counts.Waits++
		return -1
	}
	for i := range paths {
		if paths[i].Up {
			w.credit[i] += paths[i].weight()
		}
	}
	w.credit[best] -= total
	w.counts.Picks++
	return best
}
