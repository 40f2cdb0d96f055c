// Package reorder is the per-flow out-of-order queue of mpath's TCP receiver. Segments
// sprayed over several paths arrive out of order; the queue holds what lies beyond
// rcv.nxt inside the window, trims overlaps and duplicates, hands back contiguous bytes
// as soon as a gap fills, produces SACK blocks, and records how deep and how long
// reordering was. It is a pure data structure: no I/O, time is passed in.
package reorder

import "time"

// Block is a held range of sequence space [Left, Right), as carried in a SACK option.
type Block struct {
	Left, Right uint32
}

// Stats describes the reordering a queue has seen.
type Stats struct {
	Inserted   uint64        // segments stored (at least one new byte)
	Duplicates uint64        // segments whose bytes were all held already
	Trimmed    uint64        // bytes dropped as overlaps/duplicates
	Dropped    uint64        // bytes refused because the queue was at its limit
	MaxDepth   int           // most segments held at once
	MaxBytes   int           // most bytes held at once
	MaxDist    uint32        // largest distance (bytes) from rcv.nxt to a stored segment's end
	HoldCount  uint64        // segments delivered after being held
	HoldTotal  time.Duration // summed hold time of those segments
	HoldMax    time.Duration // longest hold
}

// Queue holds one flow's out-of-order bytes. Not safe for concurrent use; the zero
// value is not usable, call New.
type Queue struct{}

// New returns an empty queue that holds at most limit bytes.
func New(limit int) *Queue { panic("reorder.New: not implemented yet") }

// Insert stores a copy of data, which starts at sequence number seq. next is the
// receiver's rcv.nxt: bytes before next are trimmed, bytes already held are trimmed,
// bytes that would take the queue over its limit are refused (counted in Dropped). The
// caller has already cut data to the receive window. Insert returns how many new bytes
// it stored (0: nothing new).
func (q *Queue) Insert(next, seq uint32, data []byte, now time.Time) int { panic("unimplemented") }

// Pop appends to dst the contiguous bytes held from next onwards, removes them from the
// queue and returns the extended slice (dst unchanged when nothing starts at next).
func (q *Queue) Pop(dst []byte, next uint32, now time.Time) []byte { panic("unimplemented") }

// Blocks appends up to n SACK blocks to dst, the block containing the most recently
// inserted segment first (RFC 2018 section 4), then the others.
func (q *Queue) Blocks(dst []Block, n int) []Block { panic("unimplemented") }

// Bytes is the number of bytes held.
func (q *Queue) Bytes() int { panic("unimplemented") }

// Stats returns the counters so far.
func (q *Queue) Stats() Stats { panic("unimplemented") }
