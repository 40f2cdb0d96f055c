package reorder

import (
	"fmt"
	"math"

	"mpath/tcp/seqnum"
)

// check verifies the queue's internal invariants: blocks sorted, non-overlapping and
// non-adjacent, inside [base, base+limit); byte and segment counts consistent; page
// reference counts equal to the held bytes per page; a page present iff it holds bytes.
func (q *Queue) check() error {
	total := 0
	segs := 0
	for i := 0; i < q.blocks.len(); i++ {
		b := q.blocks.at(i)
		if !seqnum.LT(b.left, b.right) {
			return fmt.Errorf("block %d [%d,%d) empty or inverted", i, b.left, b.right)
		}
		if seqnum.LT(b.left, q.base) || seqnum.GT(b.right, q.base+q.limit) {
			return fmt.Errorf("block %d [%d,%d) outside [%d,%d+%d)", i, b.left, b.right, q.base, q.base, q.limit)
		}
		if i > 0 {
			p := q.blocks.at(i - 1)
			if !seqnum.LT(p.right, b.left) {
				return fmt.Errorf("blocks %d [%d,%d) and %d [%d,%d) overlap or touch", i-1, p.left, p.right, i, b.left, b.right)
			}
		}
		if b.segs < 1 {
			return fmt.Errorf("block %d holds %d segments", i, b.segs)
		}
		total += int(b.right - b.left)
		segs += b.segs
	}
	if total != q.bytes {
		return fmt.Errorf("blocks hold %d bytes, Bytes says %d", total, q.bytes)
	}
	if segs != q.segs {
		return fmt.Errorf("blocks hold %d segments, Len says %d", segs, q.segs)
	}
	if q.slotsNil() {
		if total != 0 {
			return fmt.Errorf("%d bytes held without pages", total)
		}
		return nil
	}
	want := make([]int, q.pages.n)
	mask := uint32(q.pages.n - 1)
	for i := 0; i < q.blocks.len(); i++ {
		b := q.blocks.at(i)
		for s := b.left; s != b.right; s++ {
			want[(s>>pageShift)&mask]++
		}
	}
	for slot := range want {
		if int(q.pages.refs[slot]) != want[slot] {
			return fmt.Errorf("slot %d refs %d, want %d", slot, q.pages.refs[slot], want[slot])
		}
		if (q.pages.slots[slot] != nil) != (want[slot] > 0) {
			return fmt.Errorf("slot %d page present=%v with %d bytes", slot, q.pages.slots[slot] != nil, want[slot])
		}
	}
	if q.pages.n > math.MaxInt32 {
		return fmt.Errorf("absurd slot count %d", q.pages.n)
	}
	return nil
}

func (q *Queue) slotsNil() bool { return q.pages.slots == nil }
