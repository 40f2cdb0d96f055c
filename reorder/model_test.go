package reorder

import (
	"bytes"
	"fmt"
	"sort"

	"mpath/tcp/seqnum"
)

// model is the trivially correct queue: one slot per sequence number in
// [base, base+limit), each empty (-1) or holding a byte; advancing shifts the slots.
type model struct {
	limit   uint32
	started bool
	base    uint32
	slot    []int16
	n       int // held bytes
}

func newModel(limit int) *model {
	m := &model{limit: uint32(limit), slot: make([]int16, limit)}
	for i := range m.slot {
		m.slot[i] = -1
	}
	return m
}

func (m *model) advance(next uint32) {
	if !m.started {
		m.started, m.base = true, next
		return
	}
	if seqnum.LEQ(next, m.base) {
		return
	}
	d := int(next - m.base)
	m.base = next
	if d > len(m.slot) {
		d = len(m.slot)
	}
	for _, c := range m.slot[:d] {
		if c >= 0 {
			m.n--
		}
	}
	copy(m.slot, m.slot[d:])
	for i := len(m.slot) - d; i < len(m.slot); i++ {
		m.slot[i] = -1
	}
}

func (m *model) insert(next, seq uint32, data []byte) int {
	m.advance(next)
	stored := 0
	for i, c := range data {
		off := seqnum.Diff(m.base, seq+uint32(i))
		if off < 0 || int64(off) >= int64(m.limit) {
			continue
		}
		if m.slot[off] < 0 {
			m.slot[off] = int16(c)
			m.n++
			stored++
		}
	}
	return stored
}

func (m *model) get(s uint32) (byte, bool) {
	off := seqnum.Diff(m.base, s)
	if off < 0 || int64(off) >= int64(m.limit) || m.slot[off] < 0 {
		return 0, false
	}
	return byte(m.slot[off]), true
}

func (m *model) pop(dst []byte, next uint32) []byte {
	m.advance(next)
	if next != m.base {
		return dst
	}
	k := 0
	for k < len(m.slot) && m.slot[k] >= 0 {
		dst = append(dst, byte(m.slot[k]))
		k++
	}
	m.advance(next + uint32(k))
	return dst
}

// runs returns the maximal held ranges, sorted from base.
func (m *model) runs() []Block {
	var out []Block
	for i, c := range m.slot {
		if c < 0 {
			continue
		}
		s := m.base + uint32(i)
		if n := len(out); n > 0 && out[n-1].Right == s {
			out[n-1].Right++
			continue
		}
		out = append(out, Block{s, s + 1})
	}
	return out
}

// compare checks the queue against the model: same bytes held at the same places, and
// SACK blocks that are exactly model runs, distinct, at most n of them, beyond base.
func compare(q *Queue, m *model) error {
	if err := q.check(); err != nil {
		return err
	}
	if q.Bytes() != m.n {
		return fmt.Errorf("queue holds %d bytes, model %d", q.Bytes(), m.n)
	}
	runs := m.runs()
	if q.Holes() != len(runs) {
		return fmt.Errorf("queue has %d blocks, model %d", q.Holes(), len(runs))
	}
	for i, r := range runs {
		b := q.blocks.at(i)
		if b.left != r.Left || b.right != r.Right {
			return fmt.Errorf("block %d is [%d,%d), model [%d,%d)", i, b.left, b.right, r.Left, r.Right)
		}
		got := q.pages.load(nil, b.left, b.right-b.left)
		want := make([]byte, 0, len(got))
		for s := r.Left; s != r.Right; s++ {
			c, _ := m.get(s)
			want = append(want, c)
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("block %d [%d,%d) content differs from model", i, b.left, b.right)
		}
	}
	sackable := len(runs)
	if sackable > 0 && runs[0].Left == m.base {
		sackable-- // a block at rcv.nxt is acknowledged cumulatively, not SACKed
	}
	for _, n := range []int{1, 3, 4, 100} {
		bs := q.Blocks(nil, n)
		if len(bs) != min(n, sackable) {
			return fmt.Errorf("Blocks(%d) gave %d blocks, %d sackable held", n, len(bs), sackable)
		}
		seen := map[uint32]bool{}
		for _, b := range bs {
			if seen[b.Left] {
				return fmt.Errorf("Blocks(%d) repeats block at %d", n, b.Left)
			}
			seen[b.Left] = true
			if !seqnum.GT(b.Left, m.base) {
				return fmt.Errorf("block [%d,%d) not beyond next %d", b.Left, b.Right, m.base)
			}
			i := sort.Search(len(runs), func(i int) bool { return !seqnum.LT(runs[i].Right, b.Right) })
			if i == len(runs) || runs[i] != b {
				return fmt.Errorf("block [%d,%d) is not a held run", b.Left, b.Right)
			}
		}
	}
	return nil
}
