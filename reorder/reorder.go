// Package reorder is the per-flow out-of-order queue of mpath's TCP receiver. Segments
// sprayed over several paths arrive out of order; the queue holds what lies beyond
// rcv.nxt inside the window, trims overlaps and duplicates, hands back contiguous bytes
// as soon as a gap fills, produces SACK blocks, and records how deep and how long
// reordering was. It is a pure data structure: no I/O, time is passed in.
//
// It does not own the receive window, acknowledgements or the socket buffer: the tcp
// receiver decides what to insert and what to do with popped bytes.
//
// Layout:
//
//	Insert(next, seq, data)
//	   |  trim bytes before next, refuse bytes at or beyond next+limit
//	   v
//	blocks: sorted, non-overlapping, non-adjacent held ranges [Left, Right)   (deque.go)
//	   |  only the gaps between held blocks are copied in; touched blocks merge
//	   v
//	pages: byte pages indexed by sequence number, pooled, freed when empty     (pages.go)
//	   |
//	Pop(dst, next): the block starting at next is appended to dst and dropped
//
// A block is what a SACK option reports, so Blocks needs no merging; a block also
// carries how many segments it holds and their insert times, for the hold-time stats.
package reorder

import (
	"time"

	"mpath/tcp/seqnum"
)

// MaxLimit is the largest limit New accepts; larger limits are clamped. Keeping held
// bytes within 2^30 of rcv.nxt keeps every comparison well inside serial arithmetic.
const MaxLimit = 1 << 30

// recentN is how many recently inserted sequence numbers the queue remembers to order
// SACK blocks (RFC 2018: the newest first, then the ones most recently reported).
const recentN = 8

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
	MemDropped uint64        // bytes refused because they would take pages beyond the memory limit
	MaxDepth   int           // most segments held at once
	MaxBytes   int           // most bytes held at once
	MaxDist    uint32        // largest distance (bytes) from rcv.nxt to a stored segment's end
	HoldCount  uint64        // segments delivered after being held
	HoldTotal  time.Duration // summed hold time of those segments
	HoldMax    time.Duration // longest hold
}

// block is one held range plus what the stats need about the segments merged into it.
// It holds no pointers, so the deque can move blocks freely.
type block struct {
	left, right uint32
	serial      uint64 // q.serial when the block last grew; orders SACK blocks
	segs        int    // segments (Insert calls) that stored bytes in this block
	oldest      int64  // earliest insert time of those segments, ns since q.epoch
	sumAt       int64  // sum of their insert times, ns since q.epoch
}

// Queue holds one flow's out-of-order bytes. Not safe for concurrent use; the zero
// value is not usable, call New.
//
// The limit bounds the sequence space held: bytes at or beyond next+limit are refused,
// so at most limit bytes are held and the buffer memory is at most limit rounded up to
// whole pages plus one page. Near bytes are never refused in favour of far ones, so a
// full queue can always take the segment that fills the first gap.
type Queue struct {
	limit   uint32
	memMax  int    // page memory bound (bytes); <= 0: none beyond limit
	started bool   // base is valid
	base    uint32 // latest rcv.nxt seen; every held byte lies in [base, base+limit)
	blocks  deque
	pages   pages
	bytes   int // bytes held
	segs    int // segments held (sum of blocks' segs)
	serial  uint64
	epoch   time.Time // first insert; block times are ns since then
	hasEp   bool

	recent  [recentN]uint32 // ring of recently inserted sequence numbers
	nrecent int
	rpos    int

	stats Stats
	hold  func(hold time.Duration, segs int) // optional sink for hold times (SetHoldSink)
}

// New returns an empty queue that holds at most limit bytes. limit <= 0 makes a queue
// that refuses everything; limits above MaxLimit are clamped to it.
func New(limit int) *Queue {
	if limit < 0 {
		limit = 0
	}
	if limit > MaxLimit {
		limit = MaxLimit
	}
	q := &Queue{limit: uint32(limit)}
	q.pages.init(limit)
	return q
}

// Limit is the queue's limit in bytes.
func (q *Queue) Limit() int { return int(q.limit) }

// SparseAllowance is the page memory a queue with a memory limit may always use, however
// sparse what it holds; beyond it, pages must be at least 1/SparseRatio full on
// average. (Two paths, one of them late, leave pages half full; tiny segments strewn
// across the window leave them nearly empty.)
const (
	SparseAllowance = 256 << 10
	SparseRatio     = 8
)

// SetMemLimit bounds the page memory the queue holds to max bytes (<= 0: no bound but
// the limit). Held bytes live in 8 KiB pages, so a peer sending a byte every 8 KiB
// would pin a page per byte: with a memory limit, an Insert that needs new pages is
// refused (counted in MemDropped) when the pages would exceed max, or exceed both
// SparseAllowance and SparseRatio times the bytes held. Refused bytes were never acknowledged;
// the sender sends them again. Bytes at rcv.nxt never reach the queue (the receiver
// takes them in order), so a full queue cannot block the flow. Lowering the limit
// below what is held frees nothing; it refuses new pages until enough are delivered.
func (q *Queue) SetMemLimit(max int) { q.memMax = max }

// Mem is the page memory the queue holds, in bytes.
func (q *Queue) Mem() int { return q.pages.used * pageSize }

// memRoom reports whether n more bytes needing k new pages fit the memory limit.
func (q *Queue) memRoom(k, n int) bool {
	if q.memMax <= 0 || k == 0 {
		return true
	}
	after := (q.pages.used + k) * pageSize
	return after <= q.memMax && (after <= SparseAllowance || after <= SparseRatio*(q.bytes+n))
}

// advance moves the queue's idea of rcv.nxt forward to next and discards whatever is
// held before it (the engine took those bytes another way: they count as Trimmed).
// next never moves backwards: an older next is ignored.
func (q *Queue) advance(next uint32) {
	if !q.started {
		q.started = true
		q.base = next
		return
	}
	if seqnum.LEQ(next, q.base) {
		return
	}
	q.base = next
	for q.blocks.len() > 0 {
		b := q.blocks.at(0)
		if seqnum.LEQ(b.right, next) {
			n := b.right - b.left
			q.pages.release(b.left, n)
			q.bytes -= int(n)
			q.segs -= b.segs
			q.stats.Trimmed += uint64(n)
			q.blocks.remove(0, 1)
			continue
		}
		if seqnum.LT(b.left, next) {
			n := next - b.left
			q.pages.release(b.left, n)
			q.bytes -= int(n)
			q.stats.Trimmed += uint64(n)
			b.left = next
		}
		return
	}
}

// Insert stores a copy of data, which starts at sequence number seq. next is the
// receiver's rcv.nxt: bytes before next are trimmed, bytes already held are trimmed,
// bytes that would take the queue over its limit are refused (counted in Dropped). The
// caller has already cut data to the receive window. Insert returns how many new bytes
// it stored (0: nothing new).
//
// Insert keeps no reference to data. Held bytes before next (delivered by the caller
// some other way) are discarded first. A segment stored into several gaps counts as one
// segment in the stats.
func (q *Queue) Insert(next, seq uint32, data []byte, now time.Time) int {
	if len(data) == 0 {
		return 0
	}
	if len(data) > MaxLimit {
		// Longer than any window; the tail is beyond any limit.
		q.stats.Dropped += uint64(len(data) - MaxLimit)
		data = data[:MaxLimit]
	}
	q.advance(next)
	base := q.base
	end := seq + uint32(len(data))

	if seqnum.LT(seq, base) {
		if seqnum.LEQ(end, base) {
			q.stats.Trimmed += uint64(len(data))
			q.stats.Duplicates++
			return 0
		}
		cut := base - seq
		q.stats.Trimmed += uint64(cut)
		data = data[cut:]
		seq = base
	}
	if lim := base + q.limit; seqnum.GT(end, lim) {
		if seqnum.GEQ(seq, lim) {
			q.stats.Dropped += uint64(len(data))
			return 0
		}
		drop := end - lim
		q.stats.Dropped += uint64(drop)
		data = data[:uint32(len(data))-drop]
		end = lim
	}

	if q.memMax > 0 && !q.memRoom(q.pages.missing(seq, end), len(data)) {
		q.stats.MemDropped += uint64(len(data))
		return 0
	}

	// Blocks [i, j) overlap or touch [seq, end); they merge with the new bytes.
	i := q.firstRightGEQ(seq)
	j := q.firstLeftGT(end, i)

	stored := uint32(0)
	cur := seq
	for k := i; k < j; k++ {
		b := q.blocks.at(k)
		if seqnum.LT(cur, b.left) {
			q.pages.store(cur, data[cur-seq:b.left-seq])
			stored += b.left - cur
		}
		if seqnum.GT(b.right, cur) {
			cur = b.right
		}
	}
	if seqnum.LT(cur, end) {
		q.pages.store(cur, data[cur-seq:])
		stored += end - cur
	}
	q.stats.Trimmed += uint64(uint32(len(data)) - stored)
	q.remember(seq)
	if stored == 0 {
		q.stats.Duplicates++
		return 0
	}

	if !q.hasEp {
		q.epoch, q.hasEp = now, true
	}
	at := int64(now.Sub(q.epoch))
	q.serial++
	nb := block{left: seq, right: end, serial: q.serial, segs: 1, oldest: at, sumAt: at}
	for k := i; k < j; k++ {
		b := q.blocks.at(k)
		if seqnum.LT(b.left, nb.left) {
			nb.left = b.left
		}
		if seqnum.GT(b.right, nb.right) {
			nb.right = b.right
		}
		nb.segs += b.segs
		nb.sumAt += b.sumAt
		nb.oldest = min(nb.oldest, b.oldest)
	}
	if i == j {
		q.blocks.insert(i, nb)
	} else {
		*q.blocks.at(i) = nb
		q.blocks.remove(i+1, j-i-1)
	}

	q.bytes += int(stored)
	q.segs++
	st := &q.stats
	st.Inserted++
	st.MaxDepth = max(st.MaxDepth, q.segs)
	st.MaxBytes = max(st.MaxBytes, q.bytes)
	st.MaxDist = max(st.MaxDist, end-base)
	return int(stored)
}

// remember notes seq as the most recently inserted sequence number, for Blocks.
func (q *Queue) remember(seq uint32) {
	q.recent[q.rpos] = seq
	q.rpos = (q.rpos + 1) % recentN
	if q.nrecent < recentN {
		q.nrecent++
	}
}

// firstRightGEQ returns the index of the first block whose right edge is at or after
// seq (the first block that overlaps or touches a range starting at seq).
func (q *Queue) firstRightGEQ(seq uint32) int {
	lo, hi := 0, q.blocks.len()
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if seqnum.LT(q.blocks.at(m).right, seq) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// firstLeftGT returns the index of the first block at or after from whose left edge is
// after end (the first block that neither overlaps nor touches a range ending at end).
func (q *Queue) firstLeftGT(end uint32, from int) int {
	lo, hi := from, q.blocks.len()
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if seqnum.LEQ(q.blocks.at(m).left, end) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// find returns the index of the block holding seq, or -1.
func (q *Queue) find(seq uint32) int {
	i := q.firstRightGEQ(seq + 1) // first block with right > seq
	if i < q.blocks.len() && seqnum.LEQ(q.blocks.at(i).left, seq) {
		return i
	}
	return -1
}

// Pop appends to dst the contiguous bytes held from next onwards, removes them from the
// queue and returns the extended slice (dst unchanged when nothing starts at next).
//
// Held bytes before next are discarded first. dst is appended to, so a caller that
// passes a slice with spare capacity avoids allocation.
func (q *Queue) Pop(dst []byte, next uint32, now time.Time) []byte {
	q.advance(next)
	if q.blocks.len() == 0 {
		return dst
	}
	b := *q.blocks.at(0)
	if b.left != next {
		return dst
	}
	n := b.right - b.left
	dst = q.pages.load(dst, b.left, n)
	q.pages.release(b.left, n)
	q.blocks.remove(0, 1)
	q.bytes -= int(n)
	q.segs -= b.segs
	q.base = b.right

	nowNs := int64(now.Sub(q.epoch))
	st := &q.stats
	st.HoldCount += uint64(b.segs)
	if total := int64(b.segs)*nowNs - b.sumAt; total > 0 {
		st.HoldTotal += time.Duration(total)
	}
	st.HoldMax = max(st.HoldMax, time.Duration(nowNs-b.oldest))
	if q.hold != nil && b.segs > 0 {
		q.hold(time.Duration(max(int64(b.segs)*nowNs-b.sumAt, 0)/int64(b.segs)), b.segs)
	}
	return dst
}

// SetHoldSink makes Pop report each delivered block to f: the mean time its segments
// were held and how many they were (the queue keeps the sum of a block's insert times,
// not each one). f runs on the caller's goroutine inside Pop; nil removes the sink.
func (q *Queue) SetHoldSink(f func(hold time.Duration, segs int)) { q.hold = f }

// Blocks appends up to n SACK blocks to dst, the block containing the most recently
// inserted segment first (RFC 2018 section 4), then the others.
//
// "The others" are ordered by how recently a segment landed in them, so a block stays
// in the option for several ACKs after it changed. A duplicate segment counts as an
// arrival in the block that holds it. A block starting at rcv.nxt (inserted but not
// popped yet) is not reported: it is not a SACK block, the cumulative ACK covers it.
func (q *Queue) Blocks(dst []Block, n int) []Block {
	if n <= 0 || q.blocks.len() == 0 {
		return dst
	}
	start := len(dst)
	for k := 1; k <= q.nrecent && len(dst)-start < n; k++ {
		seq := q.recent[(q.rpos-k+recentN)%recentN]
		i := q.find(seq)
		if i < 0 {
			continue
		}
		b := q.blocks.at(i)
		if b.left != q.base && !listed(dst[start:], b.left) {
			dst = append(dst, Block{b.left, b.right})
		}
	}
	// Fewer recent blocks than asked for: the rest by most recent change.
	for len(dst)-start < n {
		best := -1
		var bestSerial uint64
		for i := 0; i < q.blocks.len(); i++ {
			b := q.blocks.at(i)
			if (best < 0 || b.serial > bestSerial) && b.left != q.base && !listed(dst[start:], b.left) {
				best, bestSerial = i, b.serial
			}
		}
		if best < 0 {
			break
		}
		b := q.blocks.at(best)
		dst = append(dst, Block{b.left, b.right})
	}
	return dst
}

func listed(bs []Block, left uint32) bool {
	for _, b := range bs {
		if b.Left == left {
			return true
		}
	}
	return false
}

// Bytes is the number of bytes held.
func (q *Queue) Bytes() int { return q.bytes }

// Len is the number of segments held (a segment stored into several gaps counts once).
func (q *Queue) Len() int { return q.segs }

// Holes is the number of separate held blocks (each lies behind a gap).
func (q *Queue) Holes() int { return q.blocks.len() }

// Stats returns the counters so far.
func (q *Queue) Stats() Stats { return q.stats }

// Reset drops everything held and returns the buffers to the shared pool; the stats
// are kept. Call it when the flow ends so held pages are reused by other flows. The
// queue stays usable.
func (q *Queue) Reset() {
	for q.blocks.len() > 0 {
		b := q.blocks.at(0)
		q.pages.release(b.left, b.right-b.left)
		q.blocks.remove(0, 1)
	}
	q.bytes, q.segs = 0, 0
	q.nrecent, q.rpos = 0, 0
}
