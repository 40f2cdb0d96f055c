package relay

// The relay loop:
//
//	Source (AF_PACKET, inbound IPIP [+ plain IPv4])
//	  --> receive goroutine: copy into a pooled buffer, Classify (allowlist, TTL,
//	      forward/reencap in place), Impairer.Schedule (drop | release time(s))
//	  --> release heap (mutex + notify channel of capacity 1); without impairments the
//	      heap is skipped: the packets of one receive batch go out in one Send
//	      from the receive goroutine
//	  --> release goroutine: wait for the earliest release time (Go timer, then a
//	      precise nanosleep for the last 2 ms), pop everything due, one Sink.Send
//	      (sendmmsg) per batch, return the buffers to the pool.
//
// Counters are atomics read by the Prometheus collectors and by Stats.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"mpath/raw"
)

// Source is where the relay reads packets from: raw's AF_PACKET receiver in production,
// a fake in tests.
type Source interface {
	// Read blocks until packets arrive or the source is closed, and calls fn once per
	// packet with its bytes from the IPv4 header on. pkt is only valid during the call.
	// It returns an error (net.ErrClosed or one wrapping it) after Close.
	Read(fn func(pkt []byte)) error
	// Close stops a blocked Read.
	Close() error
}

// Sink sends packets: raw's raw-socket sender in production.
type Sink interface {
	// Send sends pkts[i] (whole IPv4 packets) routed towards dsts[i], in one batch if it
	// can, and returns how many were sent before the first error. The buffers are the
	// caller's again when Send returns.
	Send(pkts [][]byte, dsts []netip.Addr) (int, error)
}

// Config configures a Relay.
type Config struct {
	// Allow is the shorthand for both lists; From (who may send) and To (where inner
	// packets may go) override it where set (see Policy).
	Allow, From, To Allowlist
	// InnerUDPPorts: see Policy (the UDP encapsulation hook).
	InnerUDPPorts []uint16
	Mode          Mode
	Plain         bool
	Impair        ImpairSpec
	// UDPPort, when not 0, makes the relay take IPv4-in-UDP (fou) to this port as well as
	// IPIP, and send UDP in reencap mode (Policy.UDPPort).
	UDPPort uint16
	// LocalAddrs returns the relay's own addresses; it is called at start and every
	// AddrRefresh. Default: the addresses of every interface (net.InterfaceAddrs).
	LocalAddrs  func() ([]netip.Addr, error)
	AddrRefresh time.Duration // default 2s
	// SourceFor returns the relay's address toward dst for reencap outer headers.
	// Default: the source the kernel would pick (a connected UDP socket, cached).
	SourceFor func(dst netip.Addr) (netip.Addr, error)
	// MaxQueued bounds the packets held for release; more are dropped (overload).
	// Default 16384.
	MaxQueued int
	Log       *zap.Logger
}

// Stats are the relay's counters.
type Stats struct {
	Forwarded      [3]uint64 // packets by forwardKind: forward, reencap, plain
	ForwardedBytes [3]uint64
	Dropped        [numReasons]uint64 // by Reason (index 0 unused)
	Ignored        uint64             // captured but not the relay's business (local traffic)
	ReturnMoves    uint64             // reencap: return endpoints that changed address
	Returns        int                // reencap: inner addresses with a learned return endpoint
}

// Forward kinds, the "mode" label of the forwarded counters.
const (
	KindForward = 0 // IPIP decapsulated and routed
	KindReencap = 1 // IPIP re-encapsulated
	KindPlain   = 2 // plain transit (--plain)
)

// KindNames are the mode label values by kind.
var KindNames = [3]string{"forward", "reencap", "plain"}

// Total returns all forwarded packets and bytes.
func (s Stats) Total() (pkts, bytes uint64) {
	for i := range s.Forwarded {
		pkts += s.Forwarded[i]
		bytes += s.ForwardedBytes[i]
	}
	return
}

// Fields renders the counters as zap fields (for the exit log line).
func (s Stats) Fields() []zap.Field {
	fs := []zap.Field{}
	for k, n := range KindNames {
		fs = append(fs, zap.Uint64("forwarded_"+n+"_packets", s.Forwarded[k]), zap.Uint64("forwarded_"+n+"_bytes", s.ForwardedBytes[k]))
	}
	for _, r := range Reasons() {
		if s.Dropped[r] > 0 {
			fs = append(fs, zap.Uint64("dropped_"+r.String(), s.Dropped[r]))
		}
	}
	return append(fs, zap.Uint64("ignored", s.Ignored))
}

type counters struct {
	fwd, fwdBytes [3]atomic.Uint64
	dropped       [numReasons]atomic.Uint64
	ignored       atomic.Uint64
	returnMoves   atomic.Uint64
	returns       atomic.Int64
}

// packet is a pooled buffer travelling from receive to release.
type packet struct {
	buf     [bufSize]byte
	out     []byte // the bytes to send, a subslice of buf
	dst     netip.Addr
	release time.Time
	kind    uint8
}

// bufSize holds any packet of a 1500-byte MTU link with room to spare; larger captures
// (jumbo frames, GRO) are dropped as malformed.
const bufSize = 2048

// Relay is one relay instance. Create with New, run with Run. Stats and the Prometheus
// collectors are safe for concurrent use; Run may be called once.
type Relay struct {
	cfg    Config
	src    Source
	sink   Sink
	log    *zap.Logger
	policy atomic.Pointer[Policy]
	ctr    counters

	// Owned by the receive goroutine.
	ret       *returns
	retLookup func(netip.Addr) (netip.AddrPort, bool)
	im        *Impairer
	srcAddr   map[netip.Addr]netip.Addr
	srcPol    *Policy // policy the srcAddr cache belongs to
	times     []time.Time
	// direct collects forwarded packets when there is no impairment (nil otherwise).
	direct     []*packet
	directPkts [][]byte
	directDsts []netip.Addr
	superBuf   [bufSize]byte // one inner packet of a UDP super-packet at a time (receiveSuper)

	free chan *packet // pool of buffers; capacity MaxQueued

	// mu guards the release heap below.
	mu     sync.Mutex
	heap   releaseHeap
	notify chan struct{} // capacity 1: the earliest release time changed
}

// New returns a relay reading from src and sending to sink.
func New(cfg Config, src Source, sink Sink) (*Relay, error) {
	if len(cfg.Allow.nets) == 0 && (len(cfg.From.nets) == 0 || len(cfg.To.nets) == 0) {
		return nil, errors.New("relay: empty allowlist (want Allow, or From and To)")
	}
	if cfg.LocalAddrs == nil {
		cfg.LocalAddrs = InterfaceAddrs
	}
	if cfg.AddrRefresh <= 0 {
		cfg.AddrRefresh = 2 * time.Second
	}
	if cfg.SourceFor == nil {
		cfg.SourceFor = RouteSource
	}
	if cfg.MaxQueued <= 0 {
		cfg.MaxQueued = 16384
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	r := &Relay{
		cfg:     cfg,
		src:     src,
		sink:    sink,
		log:     cfg.Log,
		im:      NewImpairer(cfg.Impair),
		ret:     newReturns(),
		srcAddr: map[netip.Addr]netip.Addr{},
		free:    make(chan *packet, cfg.MaxQueued),
		notify:  make(chan struct{}, 1),
		times:   make([]time.Time, 0, 2),
	}
	r.retLookup = r.ret.lookup
	if !cfg.Impair.Active() {
		r.direct = make([]*packet, 0, maxBatch)
		r.directPkts = make([][]byte, 0, maxBatch)
		r.directDsts = make([]netip.Addr, 0, maxBatch)
	}
	if err := r.refreshAddrs(); err != nil {
		return nil, fmt.Errorf("relay: local addresses: %w", err)
	}
	return r, nil
}

// Policy returns the policy in force (allowlist, local addresses, mode).
func (r *Relay) Policy() *Policy { return r.policy.Load() }

func (r *Relay) refreshAddrs() error {
	addrs, err := r.cfg.LocalAddrs()
	if err != nil {
		return err
	}
	old := r.policy.Load()
	if old != nil && sameAddrs(old.Local, addrs) {
		return nil
	}
	r.policy.Store(&Policy{Allow: r.cfg.Allow, From: r.cfg.From, To: r.cfg.To, InnerUDPPorts: r.cfg.InnerUDPPorts,
		Local: NewLocalSet(addrs), Mode: r.cfg.Mode, Plain: r.cfg.Plain, UDPPort: r.cfg.UDPPort})
	if old != nil {
		r.log.Info("local addresses changed", zap.Int("count", len(addrs)))
	}
	return nil
}

func sameAddrs(s *LocalSet, addrs []netip.Addr) bool {
	n := NewLocalSet(addrs)
	if len(n.addrs) != len(s.addrs) {
		return false
	}
	for _, a := range n.addrs {
		if !s.Has(a) {
			return false
		}
	}
	return true
}

// InterfaceAddrs returns the IPv4 addresses of every interface of this host (namespace).
func InterfaceAddrs() ([]netip.Addr, error) {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range as {
		if ipn, ok := a.(*net.IPNet); ok {
			if ad, ok := netip.AddrFromSlice(ipn.IP); ok && ad.Unmap().Is4() {
				out = append(out, ad.Unmap())
			}
		}
	}
	return out, nil
}

// RouteSource returns the source address the kernel picks for dst, by connecting a UDP
// socket (no packet is sent).
func RouteSource(dst netip.Addr) (netip.Addr, error) {
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 9)))
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}

// Stats returns a snapshot of the counters.
func (r *Relay) Stats() Stats {
	var s Stats
	for k := range s.Forwarded {
		s.Forwarded[k] = r.ctr.fwd[k].Load()
		s.ForwardedBytes[k] = r.ctr.fwdBytes[k].Load()
	}
	for i := range s.Dropped {
		s.Dropped[i] = r.ctr.dropped[i].Load()
	}
	s.Ignored = r.ctr.ignored.Load()
	s.ReturnMoves = r.ctr.returnMoves.Load()
	s.Returns = int(r.ctr.returns.Load())
	return s
}

func (r *Relay) drop(reason Reason) { r.ctr.dropped[reason].Add(1) }

// dropPkt counts a drop and logs the 1st, 2nd, 4th, 8th... of each reason at debug level.
func (r *Relay) dropPkt(reason Reason, pkt []byte) {
	n := r.ctr.dropped[reason].Add(1)
	if n&(n-1) == 0 && r.log.Core().Enabled(zap.DebugLevel) {
		head := pkt
		if len(head) > 48 {
			head = head[:48]
		}
		r.log.Debug("drop", zap.Stringer("reason", reason), zap.Uint64("count", n), zap.Int("len", len(pkt)), zap.Binary("head", head))
	}
}

// Run moves packets until ctx is done or the source fails, then closes the source,
// releases nothing more (held packets are discarded) and returns. A cancelled ctx
// returns nil.
func (r *Relay) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.releaseLoop(ctx) }()
	go func() {
		defer wg.Done()
		t := time.NewTicker(r.cfg.AddrRefresh)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := r.refreshAddrs(); err != nil {
					r.log.Warn("refresh local addresses", zap.Error(err))
				}
			}
		}
	}()
	closed := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-closed:
		}
		_ = r.src.Close()
	}()
	var err error
	recv := r.receive // one method value, not one per batch
	for err == nil {
		err = r.src.Read(recv)
		r.flushDirect()
	}
	stopped := ctx.Err() != nil
	close(closed)
	cancel()
	wg.Wait()
	if stopped && (errors.Is(err, net.ErrClosed) || errors.Is(err, context.Canceled)) {
		return nil
	}
	return fmt.Errorf("relay: read: %w", err)
}

func (r *Relay) getPacket() *packet {
	select {
	case p := <-r.free:
		return p
	default:
	}
	// Allocate until MaxQueued buffers exist (counted by the heap length check in
	// receive); after warm-up every buffer comes from the pool.
	return new(packet)
}

func (r *Relay) putPacket(p *packet) {
	select {
	case r.free <- p:
	default:
	}
}

// receiveSuper takes a UDP datagram holding several inner packets back to back (a
// sender's GSO datagram that crossed a veth whole, or a GRO merge) as the datagrams it
// stands for: each inner packet behind a copy of the outer IPv4 and UDP headers (hdr),
// lengths and header checksum fixed, UDP checksum 0 (the inner packet carries its own).
func (r *Relay) receiveSuper(hdr, inner []byte) {
	for len(inner) >= ipv4HeaderLen {
		total := int(binary.BigEndian.Uint16(inner[2:4]))
		if total < ipv4HeaderLen || total > len(inner) || len(hdr)+total > bufSize {
			r.dropPkt(ReasonMalformed, inner)
			return
		}
		b := r.superBuf[:len(hdr)+total]
		copy(b, hdr)
		copy(b[len(hdr):], inner[:total])
		hl := len(hdr) - 8
		binary.BigEndian.PutUint16(b[2:4], uint16(len(b)))
		b[10], b[11] = 0, 0
		binary.BigEndian.PutUint16(b[10:12], checksum(b[:hl]))
		binary.BigEndian.PutUint16(b[hl+4:hl+6], uint16(len(b)-hl))
		b[hl+6], b[hl+7] = 0, 0
		r.receive(b)
		inner = inner[total:]
	}
}

// receive handles one captured packet (receive goroutine).
func (r *Relay) receive(pkt []byte) {
	now := time.Now()
	pol := r.policy.Load()
	if pol.UDPPort != 0 && len(pkt) > ipv4HeaderLen+8+ipv4HeaderLen {
		if outer, _, inner, ok := raw.UDPSuperPacket(pkt, pol.UDPPort); ok {
			r.receiveSuper(pkt[:outer.HeaderLen+8], inner)
			return
		}
	}
	if len(pkt) > bufSize {
		// Loopback traffic (64 KB MTU) to this host is none of our business; anything
		// else this big cannot have come over a 1500-byte link.
		if len(pkt) >= ipv4HeaderLen && pol.Local.Has(binary.BigEndian.Uint32(pkt[16:20])) {
			r.ctr.ignored.Add(1)
			return
		}
		r.dropPkt(ReasonMalformed, pkt)
		return
	}
	p := r.getPacket()
	n := copy(p.buf[:], pkt)
	r.ret.now = now
	v := ClassifyWith(pol, p.buf[:n], Env{Src: func(dst netip.Addr) netip.Addr { return r.sourceFor(pol, dst) }, Return: r.retLookup})
	if v.Learn.IsValid() {
		r.ret.learn(v.Learn, v.LearnFrom)
		r.ctr.returnMoves.Store(r.ret.moves)
		r.ctr.returns.Store(int64(len(r.ret.m)))
	}
	switch v.Action {
	case ActIgnore:
		r.ctr.ignored.Add(1)
		r.putPacket(p)
		return
	case ActDrop:
		r.dropPkt(v.Reason, pkt)
		r.putPacket(p)
		return
	}
	p.out, p.dst = v.Out, v.Dst
	p.kind = KindPlain
	if v.Tunnel {
		p.kind = KindForward
		if pol.Mode == ModeReencap {
			p.kind = KindReencap
		}
	}
	if r.direct != nil {
		// No impairment: no release times to wait for, so skip the heap and the release
		// goroutine; the packets of one receive batch leave in one Send.
		r.direct = append(r.direct, p)
		if len(r.direct) == maxBatch {
			r.flushDirect()
		}
		return
	}
	times, fate := r.im.Schedule(now, len(p.out), r.times[:0])
	switch fate {
	case FateLoss:
		r.drop(ReasonImpairLoss)
		r.putPacket(p)
		return
	case FateQueueFull:
		r.drop(ReasonQueueFull)
		r.putPacket(p)
		return
	}
	p.release = times[0]
	var dup *packet
	if len(times) > 1 {
		dup = r.getPacket()
		off := len(p.buf) - cap(p.out) // where out starts inside buf
		copy(dup.buf[:], p.buf[:])
		dup.out = dup.buf[off : off+len(p.out)]
		dup.dst, dup.kind, dup.release = p.dst, p.kind, times[1]
	}
	r.mu.Lock()
	if r.heap.Len() >= r.cfg.MaxQueued {
		r.mu.Unlock()
		r.drop(ReasonOverload)
		r.putPacket(p)
		if dup != nil {
			r.putPacket(dup)
		}
		return
	}
	earliest := r.heap.Len() == 0 || p.release.Before(r.heap.peek().release)
	r.heap.push(p)
	if dup != nil {
		r.heap.push(dup)
	}
	r.mu.Unlock()
	if earliest {
		select {
		case r.notify <- struct{}{}:
		default:
		}
	}
}

// flushDirect sends the packets collected on the no-impairment path (receive goroutine).
func (r *Relay) flushDirect() {
	if len(r.direct) == 0 {
		return
	}
	r.sendBatch(r.direct, r.directPkts[:0], r.directDsts[:0])
	clear(r.direct)
	r.direct = r.direct[:0]
}

// sendBatch sends batch with one Send, counts, and returns the buffers to the pool.
// pkts and dsts are scratch slices of capacity maxBatch.
func (r *Relay) sendBatch(batch []*packet, pkts [][]byte, dsts []netip.Addr) {
	for _, p := range batch {
		pkts = append(pkts, p.out)
		dsts = append(dsts, p.dst)
	}
	sent, err := r.sink.Send(pkts, dsts)
	if err != nil {
		r.log.Debug("send", zap.Error(err), zap.Int("sent", sent), zap.Int("batch", len(batch)))
	}
	for i, p := range batch {
		if i < sent {
			r.ctr.fwd[p.kind].Add(1)
			r.ctr.fwdBytes[p.kind].Add(uint64(len(p.out)))
		} else {
			r.drop(ReasonSendError)
		}
		r.putPacket(p)
	}
	clear(pkts)
}

// sourceFor returns (and caches) the relay's address toward dst (receive goroutine).
func (r *Relay) sourceFor(pol *Policy, dst netip.Addr) netip.Addr {
	if r.srcPol != pol {
		clear(r.srcAddr)
		r.srcPol = pol
	}
	if a, ok := r.srcAddr[dst]; ok {
		return a
	}
	a, err := r.cfg.SourceFor(dst)
	if err != nil {
		r.log.Warn("no route source for reencap; leaving the source to the kernel", zap.Stringer("dst", dst), zap.Error(err))
	}
	r.srcAddr[dst] = a
	return a
}

// precise is how close to a release time the loop stops trusting Go timers (about 1 ms
// granularity here) and sleeps in the kernel instead (about 0.15 ms).
const precise = 2 * time.Millisecond

// maxBatch is the most packets one Send carries.
const maxBatch = 64

func (r *Relay) releaseLoop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	batch := make([]*packet, 0, maxBatch)
	pkts := make([][]byte, 0, maxBatch)
	dsts := make([]netip.Addr, 0, maxBatch)
	for {
		r.mu.Lock()
		var next time.Time
		if r.heap.Len() > 0 {
			next = r.heap.peek().release
		}
		r.mu.Unlock()
		if next.IsZero() {
			select {
			case <-ctx.Done():
				return
			case <-r.notify:
			}
			continue
		}
		wait := time.Until(next)
		if wait > precise {
			timer.Reset(wait - precise)
			select {
			case <-ctx.Done():
				return
			case <-r.notify:
			case <-timer.C:
			}
			timer.Stop()
			continue
		}
		if wait > 0 {
			ts := syscall.NsecToTimespec(int64(wait))
			_ = syscall.Nanosleep(&ts, nil)
		}
		// Release everything due, in batches.
		now := time.Now()
		for {
			batch = batch[:0]
			r.mu.Lock()
			for r.heap.Len() > 0 && len(batch) < maxBatch && !r.heap.peek().release.After(now) {
				batch = append(batch, r.heap.pop())
			}
			r.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			r.sendBatch(batch, pkts, dsts)
			clear(batch)
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// releaseHeap is a min-heap of packets by release time (ties: insertion order, so
// packets with the same release time leave in arrival order).
type releaseHeap struct {
	items []*packet
	seq   []uint64
	n     uint64
}

func (h *releaseHeap) Len() int      { return len(h.items) }
func (h *releaseHeap) peek() *packet { return h.items[0] }
func (h *releaseHeap) less(i, j int) bool {
	a, b := h.items[i].release, h.items[j].release
	if a.Equal(b) {
		return h.seq[i] < h.seq[j]
	}
	return a.Before(b)
}
func (h *releaseHeap) swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.seq[i], h.seq[j] = h.seq[j], h.seq[i]
}

func (h *releaseHeap) push(p *packet) {
	h.items = append(h.items, p)
	h.seq = append(h.seq, h.n)
	h.n++
	i := len(h.items) - 1
	for i > 0 {
		parent := (i - 1) / 2
		if !h.less(i, parent) {
			break
		}
		h.swap(i, parent)
		i = parent
	}
}

func (h *releaseHeap) pop() *packet {
	top := h.items[0]
	last := len(h.items) - 1
	h.swap(0, last)
	h.items[last] = nil
	h.items = h.items[:last]
	h.seq = h.seq[:last]
	i := 0
	for {
		l, rr := 2*i+1, 2*i+2
		m := i
		if l < last && h.less(l, m) {
			m = l
		}
		if rr < last && h.less(rr, m) {
			m = rr
		}
		if m == i {
			break
		}
		h.swap(i, m)
		i = m
	}
	return top
}
