// Package simnet is an in-memory network for testing the tcp engine: two hosts joined
// by several paths, each with its own rate, queue, delay, jitter, loss, duplication and
// reordering, in both directions, and a switch that kills a path and brings it back.
//
// It keeps time with the standard time package, so inside a testing/synctest bubble the
// whole network and the engine run on virtual time: a 50 MB transfer over 10 Mbit/s
// paths takes seconds of virtual time and far less real time, and figures like goodput
// are reproducible. Random choices come from a seeded source per path and direction.
//
// Each direction of a path is a FIFO bottleneck: a packet leaves the queue at
// max(now, previous departure) + size/rate, is tail-dropped when the queue holds more
// than Queue bytes, and arrives Delay (± Jitter) after leaving. Safe for concurrent use.
package simnet

import (
	"container/heap"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"mpath/tcp"
)

// PathSpec describes one path, the same both ways.
type PathSpec struct {
	Rate    float64       // bits per second; 0 = unlimited
	Delay   time.Duration // one-way propagation delay
	Jitter  time.Duration // uniform extra delay in [0, Jitter); keeps FIFO order
	Loss    float64       // probability a packet is lost
	Dup     float64       // probability a packet is delivered twice
	Reorder float64       // probability a packet skips FIFO order (arrives late by Delay/2+1ms)
	Queue   int           // bottleneck queue in bytes; 0 = one bandwidth-delay product (min 64 KiB)
}

// Overhead is the bytes counted per packet beyond the TCP payload and options: outer and
// inner IPv4 headers (IPIP) and the TCP header.
const Overhead = 60

// Network joins host 0 and host 1.
type Network struct {
	dirs   [2][]*direction // dirs[from][path]
	hosts  [2]*Host
	closed chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
}

// Host is one end of the network; it implements tcp.Link for the stack attached to it.
type Host struct {
	n     *Network
	side  int
	stack atomic.Pointer[tcp.Stack]
}

// DirStats counts what one direction of one path did.
type DirStats struct {
	Sent, Delivered, Lost, Dropped, Duplicated uint64 // packets
	DeliveredBytes                             uint64 // TCP payload bytes
}

type direction struct {
	n    *Network
	spec PathSpec
	to   int

	mu          sync.Mutex // guards the fields below
	rng         *rand.Rand
	down        bool
	lastDepart  time.Time
	lastArrival time.Time
	queue       pktHeap
	seq         uint64
	stats       DirStats
	notify      chan struct{}
}

type packet struct {
	at  time.Time
	seq uint64 // FIFO tie-break
	seg tcp.Segment
}

type pktHeap []packet

func (h pktHeap) Len() int { return len(h) }
func (h pktHeap) Less(i, j int) bool {
	if h[i].at.Equal(h[j].at) {
		return h[i].seq < h[j].seq
	}
	return h[i].at.Before(h[j].at)
}
func (h pktHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *pktHeap) Push(x any)   { *h = append(*h, x.(packet)) }
func (h *pktHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = packet{}
	*h = old[:len(old)-1]
	return x
}

// New returns a network with the given paths. Close it when done (it runs goroutines).
func New(seed uint64, paths []PathSpec) *Network {
	n := &Network{closed: make(chan struct{})}
	for side := 0; side < 2; side++ {
		n.hosts[side] = &Host{n: n, side: side}
		for i, spec := range paths {
			if spec.Queue <= 0 {
				bdp := int(spec.Rate / 8 * (2 * spec.Delay).Seconds())
				spec.Queue = max(bdp, 64<<10)
			}
			d := &direction{
				n:      n,
				spec:   spec,
				to:     1 - side,
				rng:    rand.New(rand.NewPCG(seed, uint64(i)<<1|uint64(side))),
				notify: make(chan struct{}, 1),
			}
			n.dirs[side] = append(n.dirs[side], d)
			n.wg.Add(1)
			go d.run(i)
		}
	}
	return n
}

// Host returns host 0 or 1.
func (n *Network) Host(side int) *Host { return n.hosts[side] }

// SetDown kills (true) or revives (false) a path in both directions. Packets queued on
// it are lost.
func (n *Network) SetDown(path int, down bool) {
	for side := 0; side < 2; side++ {
		d := n.dirs[side][path]
		d.mu.Lock()
		d.down = down
		if down {
			d.stats.Lost += uint64(d.queue.Len())
			d.queue = d.queue[:0]
		}
		d.mu.Unlock()
	}
}

// Stats returns the counters of path in the direction from side.
func (n *Network) Stats(from, path int) DirStats {
	d := n.dirs[from][path]
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats
}

// Close stops the network's goroutines; undelivered packets are dropped.
func (n *Network) Close() {
	n.once.Do(func() { close(n.closed) })
	n.wg.Wait()
}

// Attach connects a stack to the host: packets arriving at the host go to s.Input.
func (h *Host) Attach(s *tcp.Stack) { h.stack.Store(s) }

// Send implements tcp.Link.
func (h *Host) Send(path int, segs []tcp.Segment) error {
	d := h.n.dirs[h.side][path]
	now := time.Now()
	d.mu.Lock()
	for i := range segs {
		d.enqueue(now, &segs[i])
	}
	d.mu.Unlock()
	select {
	case d.notify <- struct{}{}:
	default:
	}
	return nil
}

func wireSize(s *tcp.Segment) int {
	n := Overhead + len(s.Payload)
	o := &s.Options
	if o.HasTimestamp {
		n += 12
	}
	if o.NSACK > 0 {
		n += 4 + 8*int(o.NSACK)
	}
	return n
}

// enqueue decides the packet's fate and arrival time. d.mu is held.
func (d *direction) enqueue(now time.Time, s *tcp.Segment) {
	d.stats.Sent++
	if d.down {
		d.stats.Lost++
		return
	}
	size := wireSize(s)
	depart := now
	if d.spec.Rate > 0 {
		if d.lastDepart.After(now) {
			backlog := d.lastDepart.Sub(now).Seconds() * d.spec.Rate / 8
			if int(backlog)+size > d.spec.Queue {
				d.stats.Dropped++
				return
			}
			depart = d.lastDepart
		}
		depart = depart.Add(time.Duration(float64(size*8) / d.spec.Rate * float64(time.Second)))
		d.lastDepart = depart
	}
	if d.spec.Loss > 0 && d.rng.Float64() < d.spec.Loss {
		d.stats.Lost++
		return
	}
	arrive := depart.Add(d.spec.Delay)
	if d.spec.Jitter > 0 {
		arrive = arrive.Add(time.Duration(d.rng.Int64N(int64(d.spec.Jitter))))
	}
	reordered := d.spec.Reorder > 0 && d.rng.Float64() < d.spec.Reorder
	if reordered {
		arrive = arrive.Add(d.spec.Delay/2 + time.Millisecond)
	} else {
		if arrive.Before(d.lastArrival) {
			arrive = d.lastArrival
		}
		d.lastArrival = arrive
	}
	cp := *s
	cp.Payload = append([]byte(nil), s.Payload...)
	d.seq++
	heap.Push(&d.queue, packet{at: arrive, seq: d.seq, seg: cp})
	if d.spec.Dup > 0 && d.rng.Float64() < d.spec.Dup {
		d.stats.Duplicated++
		d.seq++
		heap.Push(&d.queue, packet{at: arrive.Add(time.Microsecond), seq: d.seq, seg: cp})
	}
}

// run delivers packets when their arrival time comes, in batches.
func (d *direction) run(path int) {
	defer d.n.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var batch []tcp.Segment
	for {
		select {
		case <-d.n.closed:
			return
		case <-d.notify:
		case <-timer.C:
		}
		now := time.Now()
		d.mu.Lock()
		batch = batch[:0]
		for d.queue.Len() > 0 && !d.queue[0].at.After(now) {
			p := heap.Pop(&d.queue).(packet)
			p.seg.Path = path
			batch = append(batch, p.seg)
			d.stats.Delivered++
			d.stats.DeliveredBytes += uint64(len(p.seg.Payload))
		}
		var next time.Duration = -1
		if d.queue.Len() > 0 {
			next = d.queue[0].at.Sub(now)
		}
		d.mu.Unlock()
		if len(batch) > 0 {
			if s := d.n.hosts[d.to].stack.Load(); s != nil {
				s.Input(batch)
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		if next >= 0 {
			timer.Reset(next)
		}
	}
}
