package tcp

// A Stack is one node's TCP engine: the endpoints of all its flows, spread over a fixed
// set of event loops by flow hash, fed by a Link.
//
//   Link receive goroutine ──Input(segs)──► copy payloads into pooled rxBufs
//                          ──► loop[hash(4-tuple)].inq (one lock per run of segments)
//   application ──Write/Read/Close──► send/recv buffers ──kick──► loop
//   loop goroutine: drain inq and kicks → endpoint.input / timers → endpoint.output
//                   → per-path batches → Link.Send(path, batch)
//
// Every endpoint is owned by exactly one loop goroutine, so endpoint state needs no
// locks; per-flow order holds because all of a flow's segments go to the same loop.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"mpath/spray"
)

// PathConfig names one path of a stack. The Link decides what a path index means on the
// wire (which relay, which interface); the stack only counts and schedules.
type PathConfig struct {
	Name   string
	Weight int // for the weighted scheduler; <= 0 counts as 1
}

// Config configures a Stack. The zero value of every field but Addr and Paths has a
// sensible default.
type Config struct {
	Addr      netip.Addr   // our inner IPv4 address
	Paths     []PathConfig // at least one
	Scheduler string       // "auto" (default), "weighted" or "rr"

	MSS        int // TCP MSS we announce and send; default 1440 (1500-byte MTU less IPIP)
	RecvWindow int // receive window bound per connection; default 16 MiB
	SendBuffer int // send buffer per connection; default 16 MiB

	PortFirst, PortLast uint16 // local ports for Dial (PortFirst is the probe port); default 61000-65535

	AcceptSYNData bool          // listeners take data carried in a SYN (engine peers only)
	UserTimeout   time.Duration // abort when outstanding data sees no progress this long; default 30s
	SYNTimeout    time.Duration // give up a handshake after this long; default 10s
	TimeWait      time.Duration // TIME-WAIT duration; default 10s
	KeepAlive     time.Duration // idle time before keepalive probes; 0 = off
	ProbeInterval time.Duration // how often a down path is probed; default 1s
	Loops         int           // event loops; default GOMAXPROCS
	Backlog       int           // per listener: connections not yet accepted; default 1024

	// MemoryBudget bounds the bytes all connections hold (unread, reorder pages, send
	// buffers) plus the input queues; default DefaultMemoryBudget. Windows stop opening
	// and new flows are refused when it is spent (see budget.go).
	MemoryBudget int
	// InputQueue bounds, per loop, the payload bytes of arrived segments waiting for
	// the loop; beyond it segments are dropped (Stats.DropsQueue). Default
	// DefaultInputQueue.
	InputQueue int

	// PathUsable, when set, says whether a connection to remote may use path at all
	// (a learning exit: the slots beyond the paths a client announces); asked again
	// every 100 ms per connection. Nil: every path.
	PathUsable func(remote netip.Addr, path int) bool

	Logger *zap.Logger
	Secret []byte // ISN secret (RFC 6528); default random
}

// Stack is a userspace TCP endpoint set over a multipath Link. Safe for concurrent use.
type Stack struct {
	cfg   Config
	ep    epConfig
	link  Link
	loops []*loop
	log   *zap.Logger
	start time.Time

	mu        sync.Mutex // guards the fields below
	tuples    map[tuple]struct{}
	listeners map[uint16]*Listener
	nextPort  uint16

	health      []pathHealthState
	probeTarget atomic.Pointer[netip.AddrPort] // a peer we dialled or that authenticated
	probeSent   atomic.Pointer[netip.AddrPort] // where the current round of probes went
	counters    []PathCounters
	drops       dropCounters

	closed chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
}

type tuple struct {
	local, remote netip.AddrPort
}

type pathHealthState struct {
	down      atomic.Bool
	rtt       atomic.Int64 // ns, last reported smoothed RTT
	downSince atomic.Int64
	probeAck  atomic.Uint32 // the ack number of the outstanding probe
	answered  atomic.Bool   // the outstanding probe was answered
	missed    atomic.Int32  // probes in a row without an answer or a delivery
}

// probeMisses is how many probes in a row a path may leave unanswered (with nothing
// delivered over it meanwhile) before it is marked down.
const probeMisses = 3

// PathCounters are the per-path totals of a stack, updated atomically.
type PathCounters struct {
	TxPackets, TxBytes atomic.Uint64
	RxPackets, RxBytes atomic.Uint64
	SendErrors         atomic.Uint64
}

type dropCounters struct {
	notOurs, noConn, backlog, closed atomic.Uint64
	memory                           atomic.Uint64 // SYNs refused: the memory budget had no room for a flow
	queue                            atomic.Uint64 // segments dropped: the loop's input queue was full
	unauth                           atomic.Uint64 // SYNs the listener's VerifySYN refused
	rstLimit                         atomic.Uint64 // resets not sent (rate limit)
	probeBad                         atomic.Uint64 // probe answers that did not match (source or value)
	// stuckTimers counts timer runs that left a deadline at or before now (a bug: the
	// loop pushes such a deadline out rather than spin; tests assert it stays 0).
	stuckTimers atomic.Uint64
}

// NewStack returns a running stack that sends through link. Feed it inbound segments
// with Input; stop it with Close.
func NewStack(cfg Config, link Link) (*Stack, error) {
	if !cfg.Addr.Is4() {
		return nil, fmt.Errorf("tcp: stack address %v: need an IPv4 address", cfg.Addr)
	}
	if len(cfg.Paths) == 0 {
		return nil, errors.New("tcp: stack needs at least one path")
	}
	if cfg.Scheduler == "" {
		cfg.Scheduler = "auto"
	}
	if _, err := spray.New(cfg.Scheduler); err != nil {
		return nil, fmt.Errorf("tcp: %w", err)
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&cfg.MSS, 1440)
	def(&cfg.RecvWindow, 16<<20)
	def(&cfg.SendBuffer, 16<<20)
	def(&cfg.Loops, runtime.GOMAXPROCS(0))
	def(&cfg.Backlog, 1024)
	def(&cfg.MemoryBudget, DefaultMemoryBudget)
	def(&cfg.InputQueue, DefaultInputQueue)
	if cfg.MemoryBudget < cfg.Loops*cfg.InputQueue+newFlowReserve {
		return nil, fmt.Errorf("tcp: memory budget %d: need more than the input queues' %d×%d", cfg.MemoryBudget, cfg.Loops, cfg.InputQueue)
	}
	defD(&cfg.UserTimeout, 30*time.Second)
	defD(&cfg.SYNTimeout, 10*time.Second)
	defD(&cfg.TimeWait, 10*time.Second)
	defD(&cfg.ProbeInterval, time.Second)
	if cfg.PortFirst == 0 && cfg.PortLast == 0 {
		cfg.PortFirst, cfg.PortLast = 61000, 65535
	}
	if cfg.PortLast <= cfg.PortFirst {
		return nil, fmt.Errorf("tcp: port range %d-%d: need at least two ports", cfg.PortFirst, cfg.PortLast)
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if len(cfg.Secret) == 0 {
		cfg.Secret = make([]byte, 32)
		if _, err := rand.Read(cfg.Secret); err != nil {
			return nil, fmt.Errorf("tcp: isn secret: %w", err)
		}
	}
	s := &Stack{
		cfg:       cfg,
		link:      link,
		log:       cfg.Logger,
		start:     time.Now(),
		tuples:    make(map[tuple]struct{}),
		listeners: make(map[uint16]*Listener),
		health:    make([]pathHealthState, len(cfg.Paths)),
		counters:  make([]PathCounters, len(cfg.Paths)),
		closed:    make(chan struct{}),
	}
	paths := make([]spray.Path, len(cfg.Paths))
	for i, p := range cfg.Paths {
		name := p.Name
		if name == "" {
			name = fmt.Sprintf("path%d", i)
		}
		paths[i] = spray.Path{Name: name, Weight: max(p.Weight, 1), Up: true}
	}
	s.ep = epConfig{
		mss:           cfg.MSS,
		rcvLimit:      cfg.RecvWindow,
		sndLimit:      cfg.SendBuffer,
		paths:         paths,
		scheduler:     cfg.Scheduler,
		epoch:         s.start,
		userTimeout:   cfg.UserTimeout,
		synTimeout:    cfg.SYNTimeout,
		timeWait:      cfg.TimeWait,
		finTimeout:    30 * time.Second,
		keepAlive:     cfg.KeepAlive,
		acceptSYNData: cfg.AcceptSYNData,
		health:        s,
		pathUsable:    cfg.PathUsable,
		ccs:           make([]*pathCC, len(cfg.Paths)),
		reorderHold:   new(HoldHistogram),
		budget:        &memBudget{limit: int64(cfg.MemoryBudget - cfg.Loops*cfg.InputQueue)},
	}
	for i := range s.ep.ccs {
		s.ep.ccs[i] = newPathCC(cfg.MSS)
	}
	s.nextPort = cfg.PortFirst + 1 + uint16(binary.BigEndian.Uint16(cfg.Secret)%uint16(cfg.PortLast-cfg.PortFirst))
	s.loops = make([]*loop, cfg.Loops)
	for i := range s.loops {
		s.loops[i] = newLoop(s)
		s.wg.Add(1)
		go s.loops[i].run()
	}
	s.wg.Add(1)
	go s.prober()
	return s, nil
}

// Addr is the stack's inner address.
func (s *Stack) Addr() netip.Addr { return s.cfg.Addr }

// Ports returns the local port range the stack's flows use (including the probe port).
func (s *Stack) Ports() (first, last uint16) { return s.cfg.PortFirst, s.cfg.PortLast }

// Paths returns the stack's path names, in index order.
func (s *Stack) Paths() []string {
	names := make([]string, len(s.ep.paths))
	for i := range s.ep.paths {
		names[i] = s.ep.paths[i].Name
	}
	return names
}

// PathUp reports the stack-wide health of path p.
func (s *Stack) PathUp(p int) bool { return s.pathUp(p) }

// Counters returns the per-path counters (live; read with their Load methods).
func (s *Stack) Counters() []PathCounters { return s.counters }

func (s *Stack) pathUp(p int) bool { return !s.health[p].down.Load() }

func (s *Stack) pathReport(p int, up bool) {
	h := &s.health[p]
	if up {
		h.missed.Store(0)
		if h.down.CompareAndSwap(true, false) {
			s.log.Info("path up", zap.Int("path", p), zap.String("name", s.ep.paths[p].Name))
		}
		return
	}
	if h.down.CompareAndSwap(false, true) {
		h.downSince.Store(time.Now().UnixNano())
		s.log.Warn("path down", zap.Int("path", p), zap.String("name", s.ep.paths[p].Name))
		// Idle endpoints (a receiver with nothing outstanding) would not notice otherwise:
		// wake them all to move their in-flight data and, if nothing is left, start the
		// clock that ends flows over dead paths.
		for _, l := range s.loops {
			l.command(loopCmd{kind: cmdHealth})
		}
	}
}

func (s *Stack) rttHint(p int) time.Duration { return time.Duration(s.health[p].rtt.Load()) }

func (s *Stack) anyPathUp() bool {
	for p := range s.health {
		if s.pathUp(p) {
			return true
		}
	}
	return false
}

// isn is RFC 6528: a 4 µs clock plus a keyed hash of the connection's 4-tuple.
func (s *Stack) isn(local, remote netip.AddrPort) uint32 {
	h := sha256.New()
	h.Write(s.cfg.Secret)
	b, _ := local.MarshalBinary()
	h.Write(b)
	b, _ = remote.MarshalBinary()
	h.Write(b)
	var sum [32]byte
	f := binary.BigEndian.Uint32(h.Sum(sum[:0]))
	m := uint32(time.Since(s.start) / (4 * time.Microsecond))
	return m + f
}

func (s *Stack) loopFor(t tuple) *loop {
	a := t.remote.Addr().As4()
	h := uint32(t.remote.Port())*2654435761 ^ uint32(t.local.Port())*40503 ^ binary.BigEndian.Uint32(a[:])
	h ^= h >> 16
	return s.loops[h%uint32(len(s.loops))]
}

// Input hands arriving segments to the stack. The stack copies what it keeps (each
// payload once, into a pooled buffer that later moves to the receive buffer without a
// copy); the caller may reuse segs and their payloads once Input returns. Consecutive
// segments for the same loop are queued under one lock, and each loop is woken once per
// call. Safe for concurrent use.
func (s *Stack) Input(segs []Segment) {
	var touched [8]*loop
	nt := 0
	var held *loop // the loop whose mu is held
	for i := range segs {
		seg := &segs[i]
		if seg.Dst.Addr() != s.cfg.Addr || !seg.Src.Addr().Is4() {
			s.drops.notOurs.Add(1)
			continue
		}
		if p := seg.Path; p >= 0 && p < len(s.counters) {
			s.counters[p].RxPackets.Add(1)
			s.counters[p].RxBytes.Add(uint64(len(seg.Payload)) + 40)
		} else {
			seg.Path = -1
		}
		if seg.Flags&FlagRST != 0 && seg.Dst.Port() == s.cfg.PortFirst {
			s.probeAnswer(seg)
			continue
		}
		l := s.loopFor(tuple{local: seg.Dst, remote: seg.Src})
		if l != held {
			if held != nil {
				held.mu.Unlock()
			}
			held = l
			l.mu.Lock()
		}
		if !l.admitLocked(len(seg.Payload)) {
			s.drops.queue.Add(1)
			continue
		}
		l.enqueueLocked(seg, copyPayload(seg))
		seen := false
		for _, t := range touched[:nt] {
			if t == l {
				seen = true
				break
			}
		}
		if !seen {
			if nt < len(touched) {
				touched[nt] = l
				nt++
			} else {
				l.wake()
			}
		}
	}
	if held != nil {
		held.mu.Unlock()
	}
	for _, l := range touched[:nt] {
		l.wake()
	}
}

// allocPort reserves a local port for a flow to remote.
func (s *Stack) allocPort(remote netip.AddrPort) (netip.AddrPort, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := int(s.cfg.PortLast - s.cfg.PortFirst) // ports PortFirst+1 .. PortLast
	for k := 0; k < n; k++ {
		port := s.nextPort
		s.nextPort++
		if s.nextPort > s.cfg.PortLast || s.nextPort <= s.cfg.PortFirst {
			s.nextPort = s.cfg.PortFirst + 1
		}
		t := tuple{local: netip.AddrPortFrom(s.cfg.Addr, port), remote: remote}
		if _, used := s.tuples[t]; !used {
			s.tuples[t] = struct{}{}
			return t.local, nil
		}
	}
	return netip.AddrPort{}, ErrPortsExhausted
}

func (s *Stack) releaseTuple(t tuple) {
	s.mu.Lock()
	delete(s.tuples, t)
	s.mu.Unlock()
}

// DialOptions are the optional parts of a Dial.
type DialOptions struct {
	// SYNData is sent in the SYN (up to one segment). A peer that does not take SYN data
	// (a kernel without TFO) gets it again right after the handshake.
	SYNData []byte
	// SYNDataFunc, when set (and SYNData is not), builds the SYN data once the local
	// address is chosen: a request that authenticates the flow's addresses and ports.
	// It runs on the caller's goroutine.
	SYNDataFunc func(local, remote netip.AddrPort) []byte
	// NoTimestamps leaves the timestamp option (RFC 7323) out of the SYN. Use it towards
	// kernel peers: Linux discards data whose timestamp is older than that of the last
	// in-order segment (PAWS), and sprayed segments routinely are: once a retransmission
	// (new timestamp) fills a hole, originals sent earlier on a slower path still arrive
	// with older timestamps and are dropped as if they were from a previous incarnation.
	NoTimestamps bool
}

// Dial opens a connection to remote and waits for the handshake.
func (s *Stack) Dial(ctx context.Context, remote netip.AddrPort) (*Conn, error) {
	return s.DialOptions(ctx, remote, DialOptions{})
}

// DialOptions is Dial with options.
func (s *Stack) DialOptions(ctx context.Context, remote netip.AddrPort, opts DialOptions) (*Conn, error) {
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Source: nil, Addr: net.TCPAddrFromAddrPort(remote), Err: err}
	}
	select {
	case <-s.closed:
		return nil, opErr(net.ErrClosed)
	default:
	}
	if !remote.Addr().Is4() {
		return nil, opErr(fmt.Errorf("engine flows are IPv4 only: %v", remote))
	}
	if !s.anyPathUp() {
		return nil, opErr(ErrNoPath)
	}
	if s.ep.budget.room() < newFlowReserve {
		return nil, opErr(ErrNoMemory)
	}
	local, err := s.allocPort(remote)
	if err != nil {
		return nil, opErr(err)
	}
	s.probeTarget.Store(&remote)
	now := time.Now()
	e := newEndpoint(&s.ep, local, remote, s.isn(local, remote), now)
	e.noTS = opts.NoTimestamps
	if len(opts.SYNData) == 0 && opts.SYNDataFunc != nil {
		opts.SYNData = opts.SYNDataFunc(local, remote)
	}
	if len(opts.SYNData) > 0 {
		if n, err := e.sb.write(opts.SYNData); err != nil || n < len(opts.SYNData) {
			s.releaseTuple(tuple{local, remote})
			return nil, opErr(errors.New("SYN data larger than the send buffer"))
		}
	}
	l := s.loopFor(tuple{local: local, remote: remote})
	c := newConn(s, l, e)
	l.command(loopCmd{kind: cmdDial, c: c, synData: len(opts.SYNData) > 0})
	select {
	case <-c.established:
		if err := c.failure(); err != nil {
			return nil, opErr(err)
		}
		return c, nil
	case <-ctx.Done():
		c.abort()
		return nil, opErr(ctx.Err())
	case <-s.closed:
		return nil, opErr(net.ErrClosed)
	}
}

// ListenOptions are the optional parts of a Listen.
type ListenOptions struct {
	// VerifySYN, when set, is asked about every SYN that would open a new connection,
	// before the stack allocates anything for it: src and dst are the SYN's addresses,
	// payload its data (valid only during the call). false drops the SYN silently: no
	// SYN-ACK, no reset, only Stats.DropsUnauth counts it. A retransmitted SYN of a
	// connection that exists goes to that connection and is not asked about again. It
	// runs on a loop goroutine, after the backlog and memory checks: it must be quick
	// and safe for concurrent use.
	VerifySYN func(src, dst netip.AddrPort, payload []byte) bool
}

// Listen returns a listener for port on the stack's address.
func (s *Stack) Listen(port uint16) (*Listener, error) {
	return s.ListenOptions(port, ListenOptions{})
}

// ListenOptions is Listen with options.
func (s *Stack) ListenOptions(port uint16, opts ListenOptions) (*Listener, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.listeners[port]; ok {
		return nil, &net.OpError{Op: "listen", Net: "tcp", Addr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(s.cfg.Addr, port)), Err: ErrAddrInUse}
	}
	ln := &Listener{s: s, port: port, queue: make(chan *Conn, s.cfg.Backlog), done: make(chan struct{}), verify: opts.VerifySYN}
	s.listeners[port] = ln
	return ln, nil
}

func (s *Stack) listener(port uint16) *Listener {
	s.mu.Lock()
	ln := s.listeners[port]
	s.mu.Unlock()
	return ln
}

// Close resets every connection, stops the loops and returns once they are gone.
// Callers wanting a graceful end close their listeners and wait for flows first.
func (s *Stack) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		for _, ln := range s.listeners {
			ln.closeLocked()
		}
		s.mu.Unlock()
		close(s.closed)
		s.wg.Wait()
	})
	return nil
}

// ActiveFlows is the number of connections the stack holds (all states).
func (s *Stack) ActiveFlows() int {
	s.mu.Lock()
	n := len(s.tuples)
	s.mu.Unlock()
	return n
}

// prober checks every path once per ProbeInterval while the stack has a peer to ask: a
// bare ACK from the probe port to the last peer. Any TCP (kernel or engine) answers with
// a RST whose sequence number echoes our ACK field, which names the path. An answer, or
// data delivered over the path, keeps it up (or brings it back); probeMisses probes in a
// row without either mark it down. So a dead relay is found even while no flow uses it,
// and new connections are refused at once when every path is dead.
func (s *Stack) prober() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-s.closed:
			return
		case <-t.C:
		}
		target := s.probeTarget.Load()
		if target == nil {
			continue
		}
		s.probeSent.Store(target)
		for p := range s.health {
			h := &s.health[p]
			if h.probeAck.Load() != 0 && !h.answered.Load() {
				if h.missed.Add(1) >= probeMisses {
					s.pathReport(p, false)
				}
			}
			// The answer must echo this value: unpredictable, so nobody off the path can
			// forge an answer that keeps a dead path up.
			var rnd [4]byte
			rand.Read(rnd[:])
			ack := binary.BigEndian.Uint32(rnd[:])&^0xff | uint32(p&0xff)
			if ack>>8 == 0 {
				ack |= 0x100 // 0 means "no probe outstanding"
			}
			h.answered.Store(false)
			h.probeAck.Store(ack)
			seg := Segment{
				Src:   netip.AddrPortFrom(s.cfg.Addr, s.cfg.PortFirst),
				Dst:   *target,
				Seq:   ack ^ 0x5a5a5a5a,
				Ack:   ack,
				Flags: FlagACK,
			}
			s.send(p, []Segment{seg})
		}
	}
}

// probeAnswer takes a RST to the probe port: an answer only when it comes from the
// probed peer and echoes the probe's unpredictable value.
func (s *Stack) probeAnswer(seg *Segment) {
	p := int(seg.Seq & 0xff)
	to := s.probeSent.Load()
	if p >= len(s.health) || to == nil || seg.Src != *to {
		s.drops.probeBad.Add(1)
		return
	}
	h := &s.health[p]
	if seg.Seq != h.probeAck.Load() {
		s.drops.probeBad.Add(1)
		return
	}
	h.answered.Store(true)
	s.pathReport(p, true)
}

// send hands a batch to the link and counts it.
func (s *Stack) send(p int, segs []Segment) {
	if len(segs) == 0 {
		return
	}
	c := &s.counters[p]
	var bytes uint64
	for i := range segs {
		bytes += uint64(len(segs[i].Payload)) + 40
	}
	c.TxPackets.Add(uint64(len(segs)))
	c.TxBytes.Add(bytes)
	if err := s.link.Send(p, segs); err != nil {
		c.SendErrors.Add(1)
	}
}
