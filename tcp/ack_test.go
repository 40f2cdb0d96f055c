package tcp

import (
	"testing"
	"time"
)

// pureACKs returns the paths of the pure ACKs (no payload, no SYN/FIN/RST) in e.out and
// empties it.
func pureACKs(e *endpoint) []int {
	var paths []int
	for _, o := range e.out {
		if len(o.seg.Payload) == 0 && o.seg.Flags&(FlagSYN|FlagFIN|FlagRST) == 0 && o.seg.Flags&FlagACK != 0 {
			paths = append(paths, o.path)
		}
	}
	clear(e.out)
	e.out = e.out[:0]
	return paths
}

// TestACKPerBatch: in-order segments taken in one receive batch are acknowledged once
// per path they came by, when the batch ends (output), not every second segment;
// out-of-order data is still acknowledged at once, and a lone segment waits for the
// delayed-ACK timer.
func TestACKPerBatch(t *testing.T) {
	const iss, peerISS = 1, 1 << 30
	e, now := openActive(t, testConfig(2), iss, peerISS, fullOpts(1440, 7, 1), 65535, 10*time.Millisecond)
	pureACKs(e)
	mss := e.segSize
	seq := uint32(peerISS + 1)
	off := 0
	seg := func(path int) Segment {
		s := fromPeer(FlagACK, seq, iss+1, 65535, streamBytes(1, off, mss))
		s.Path = path
		seq += uint32(mss)
		off += mss
		return s
	}

	// A batch of 10 in-order segments, alternating paths: no ACK during the batch, then
	// one on each path, both acknowledging everything.
	for i := range 10 {
		s := seg(i % 2)
		e.input(now, &s, i%2)
	}
	if got := pureACKs(e); len(got) != 0 {
		t.Fatalf("ACKs during an in-order batch on paths %v, want none before output", got)
	}
	e.output(now)
	var acks []Segment
	var paths []int
	for _, o := range e.out {
		acks = append(acks, o.seg)
		paths = append(paths, o.path)
	}
	pureACKs(e)
	if len(acks) != 2 || paths[0] == paths[1] {
		t.Fatalf("after the batch: %d ACKs on paths %v, want one on each of paths 0 and 1", len(acks), paths)
	}
	for _, a := range acks {
		if a.Ack != seq {
			t.Fatalf("batch ACK acknowledges %d, want %d (everything taken)", a.Ack, seq)
		}
	}

	// A lone segment: no ACK at output; the delayed ACK timer is armed.
	s := seg(0)
	e.input(now, &s, 0)
	e.output(now)
	if got := pureACKs(e); len(got) != 0 {
		t.Fatalf("a lone segment was acknowledged at once (paths %v), want a delayed ACK", got)
	}
	if e.delAckAt.IsZero() {
		t.Fatal("no delayed-ACK deadline after a lone segment")
	}
	later := e.delAckAt
	e.output(later)
	if got := pureACKs(e); len(got) != 1 {
		t.Fatalf("at the delayed-ACK deadline %d ACKs, want 1", len(got))
	}

	// Out of order: a gap, then segments beyond it on two paths: no delayed-ACK wait,
	// one ACK per path when the batch ends, each with the SACK block.
	seg(0) // skipped: the gap
	s = seg(1)
	e.input(later, &s, 1)
	s = seg(0)
	e.input(later, &s, 0)
	if got := pureACKs(e); len(got) != 0 {
		t.Fatalf("out-of-order segments: ACKs on paths %v during input, want them with the batch", got)
	}
	e.output(later)
	var sacked []int
	for _, o := range e.out {
		if o.seg.Options.NSACK == 1 && o.seg.Options.SACK[0].Right == seq {
			sacked = append(sacked, o.path)
		}
	}
	if got := pureACKs(e); len(got) != 2 || len(sacked) != 2 {
		t.Fatalf("out-of-order batch: ACKs on paths %v (%v with the SACK block), want one on each path with it", got, sacked)
	}
}
