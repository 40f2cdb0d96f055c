package tcp

import (
	"time"

	"mpath/tcp/seqnum"
)

// txSeg is one entry of the transmit log: a range of sequence space sent (and maybe
// re-sent) as one segment, with where and when its latest transmission went.
type txSeg struct {
	seq, end uint32 // [seq, end): includes the SYN and FIN bits
	syn, fin bool
	path     int
	retrans  int  // number of retransmissions
	sacked   bool // selectively acknowledged
	lost     bool // declared lost and not yet re-sent
	inflight bool // counted in its path's in-flight bytes
	sentAt   time.Time

	// Delivery-rate snapshot of the path at send time.
	dlvd       uint64
	dlvdTime   time.Time
	firstSent  time.Time
	appLimited bool
}

func (s *txSeg) size() int { return int(s.end - s.seq) }

// txQueue is the transmit log in sequence order, from snd.una to snd.nxt: a deque.
type txQueue struct {
	segs []txSeg
	head int
}

func (q *txQueue) len() int { return len(q.segs) - q.head }

func (q *txQueue) at(i int) *txSeg { return &q.segs[q.head+i] }

func (q *txQueue) front() *txSeg { return &q.segs[q.head] }

func (q *txQueue) push(s txSeg) { q.segs = append(q.segs, s) }

func (q *txQueue) popFront() {
	q.segs[q.head] = txSeg{}
	q.head++
	if q.head == len(q.segs) {
		q.segs, q.head = q.segs[:0], 0
	} else if q.head >= 1024 && q.head > len(q.segs)/2 {
		n := copy(q.segs, q.segs[q.head:])
		clear(q.segs[n:])
		q.segs, q.head = q.segs[:n], 0
	}
}

// find returns the index of the segment that starts at seq, or -1.
func (q *txQueue) find(seq uint32) int {
	i := q.search(seq)
	if i < q.len() && q.at(i).seq == seq {
		return i
	}
	return -1
}

// search returns the index of the first segment whose end is after seq (the segment
// that contains seq, or the next one).
func (q *txQueue) search(seq uint32) int {
	lo, hi := 0, q.len()
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if seqnum.LEQ(q.at(m).end, seq) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}
