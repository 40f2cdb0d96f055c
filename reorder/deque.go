package reorder

// deque is a ring buffer of blocks with insertion and removal at any index. Blocks move
// on the shorter side of the index, so the common cases are cheap: new far data lands
// at the back, a late segment filling the first gap lands at the front, and Pop takes
// the front. Blocks hold no pointers, so vacated slots need no clearing.
type deque struct {
	buf  []block // len is 0 or a power of two
	head int
	n    int
}

func (d *deque) len() int { return d.n }

// at returns the i-th block, 0 <= i < d.n.
func (d *deque) at(i int) *block { return &d.buf[(d.head+i)&(len(d.buf)-1)] }

func (d *deque) grow() {
	size := max(16, 2*len(d.buf))
	nb := make([]block, size)
	for i := 0; i < d.n; i++ {
		nb[i] = *d.at(i)
	}
	d.buf, d.head = nb, 0
}

// insert puts b at index i, 0 <= i <= d.n, shifting the shorter side.
func (d *deque) insert(i int, b block) {
	if d.n == len(d.buf) {
		d.grow()
	}
	mask := len(d.buf) - 1
	if i < d.n-i {
		d.head = (d.head - 1) & mask
		for j := 0; j < i; j++ {
			d.buf[(d.head+j)&mask] = d.buf[(d.head+j+1)&mask]
		}
	} else {
		for j := d.n; j > i; j-- {
			d.buf[(d.head+j)&mask] = d.buf[(d.head+j-1)&mask]
		}
	}
	d.buf[(d.head+i)&mask] = b
	d.n++
}

// remove deletes the k blocks at indexes [i, i+k), shifting the shorter side.
func (d *deque) remove(i, k int) {
	if k <= 0 {
		return
	}
	mask := len(d.buf) - 1
	if i < d.n-(i+k) {
		for j := i - 1; j >= 0; j-- {
			d.buf[(d.head+j+k)&mask] = d.buf[(d.head+j)&mask]
		}
		d.head = (d.head + k) & mask
	} else {
		for j := i; j+k < d.n; j++ {
			d.buf[(d.head+j)&mask] = d.buf[(d.head+j+k)&mask]
		}
	}
	d.n -= k
	if d.n == 0 {
		d.head = 0
	}
}
