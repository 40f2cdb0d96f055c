package reorder

import (
	"math/bits"
	"sync"
)

// Held bytes live in fixed-size pages addressed by sequence number: byte s is at
// offset s%pageSize of page s/pageSize, and that page sits in slot
// (s/pageSize) % len(slots). Every held byte lies in [rcv.nxt, rcv.nxt+limit), which
// spans at most ceil(limit/pageSize)+1 pages, so with at least that many slots (a power
// of two, which divides 2^32/pageSize and so survives wraparound) two live pages never
// share a slot. Pages come from a pool shared by all queues and go back to it as soon
// as they hold no byte.
const (
	pageShift = 13
	pageSize  = 1 << pageShift
)

// PageSize is the size of the pages held bytes live in.
const PageSize = pageSize

type page [pageSize]byte

// pagePool is shared by every queue (sync.Pool is safe for concurrent use).
var pagePool = sync.Pool{New: func() any { return new(page) }}

type pages struct {
	slots []*page  // made on first store
	refs  []uint16 // held bytes per slot; a page is returned when it drops to 0
	n     int      // number of slots, a power of two
	used  int      // pages taken from the pool and not yet returned
}

// missing counts the pages [seq, end) touches that are not allocated yet: what storing
// bytes there would take from the pool (an upper bound when part is held already).
func (p *pages) missing(seq, end uint32) int {
	const wrap = 1<<(32-pageShift) - 1 // page numbers wrap with the sequence space
	span := int(((end-1)>>pageShift-seq>>pageShift)&wrap) + 1
	if p.slots == nil {
		return span
	}
	mask := uint32(p.n - 1)
	n := 0
	for k, pg := 0, seq>>pageShift; k < span; k, pg = k+1, pg+1 {
		if p.slots[pg&mask] == nil {
			n++
		}
	}
	return n
}

func (p *pages) init(limit int) {
	need := (limit+pageSize-1)/pageSize + 1
	p.n = 1 << bits.Len(uint(need-1))
}

// store copies data to sequence number seq onwards. The bytes must not be held already.
func (p *pages) store(seq uint32, data []byte) {
	if p.slots == nil {
		p.slots = make([]*page, p.n)
		p.refs = make([]uint16, p.n)
	}
	mask := uint32(p.n - 1)
	for len(data) > 0 {
		slot := (seq >> pageShift) & mask
		off := seq & (pageSize - 1)
		pg := p.slots[slot]
		if pg == nil {
			pg = pagePool.Get().(*page)
			p.slots[slot] = pg
			p.used++
		}
		k := copy(pg[off:], data)
		p.refs[slot] += uint16(k)
		seq += uint32(k)
		data = data[k:]
	}
}

// load appends the n held bytes from seq onwards to dst.
func (p *pages) load(dst []byte, seq, n uint32) []byte {
	mask := uint32(p.n - 1)
	for n > 0 {
		slot := (seq >> pageShift) & mask
		off := seq & (pageSize - 1)
		k := min(n, pageSize-off)
		dst = append(dst, p.slots[slot][off:off+k]...)
		seq += k
		n -= k
	}
	return dst
}

// release forgets the n held bytes from seq onwards, returning emptied pages.
func (p *pages) release(seq, n uint32) {
	mask := uint32(p.n - 1)
	for n > 0 {
		slot := (seq >> pageShift) & mask
		off := seq & (pageSize - 1)
		k := min(n, pageSize-off)
		p.refs[slot] -= uint16(k)
		if p.refs[slot] == 0 {
			pagePool.Put(p.slots[slot])
			p.slots[slot] = nil
			p.used--
		}
		seq += k
		n -= k
	}
}
