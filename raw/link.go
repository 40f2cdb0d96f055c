package raw

// Link: the engine's packets over IPIP.
//
//	Send(path, segs) --> pooled Encoders: IPIP(path.Local -> path.Relay | seg) --> the
//	                     path's Sender (bound to path.Dev) --> sendmmsg
//
//	Run(ctx, deliver): Receiver on the paths' devices (BPF: TCP to Ports, IPIP from
//	AcceptFrom to Ports) --> one Decoder --> keep segments to Addr:Ports --> batch of
//	tcp.Segment (preallocated) --> deliver, at the latest at the end of each ring block,
//	payloads pointing into the ring (valid only during deliver)
//
// Everything else is dropped and counted by reason (LinkStats.Drops).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"mpath/tcp"
)

// PathConfig is one path: the device it leaves by and the relay at its far end.
type PathConfig struct {
	Dev   string     // interface the path leaves by ("" = wherever the kernel routes Relay)
	Local netip.Addr // outer source (default: the first IPv4 address of Dev)
	Relay netip.Addr // outer destination: the relay
}

// LinkConfig configures a Link.
type LinkConfig struct {
	Paths      []PathConfig
	Addr       netip.Addr     // our inner address (segments to it are ours)
	Ports      []PortRange    // our engine ports (receive filter + guard)
	AcceptFrom []netip.Prefix // outer sources accepted for IPIP; default: the paths' relays
	Guard      bool           // install the nftables guard (Ports, IPIP from AcceptFrom)
	GuardTable string         // guard table name; default "mpath"
	Logger     *zap.Logger    // nil: no logs
	// RingBytes is the receive ring size (see ReceiverConfig); 0 = 4 MiB.
	RingBytes int
}

// Drop reasons, the keys of LinkStats.Drops.
const (
	DropTruncated     = "truncated"
	DropNotIPv4       = "not-ipv4"
	DropHeaderLen     = "bad-header-length"
	DropLength        = "bad-length"
	DropFragment      = "fragment"
	DropChecksum      = "checksum"
	DropNested        = "nested-tunnel"
	DropNotTCP        = "not-tcp"
	DropDataOffset    = "bad-data-offset"
	DropOptions       = "bad-options"
	DropNotOurs       = "not-ours"       // not to Addr:Ports
	DropUnknownSource = "unknown-source" // IPIP from outside AcceptFrom
	DropRingFull      = "ring-full"      // the kernel found the receive ring full
	DropOther         = "other"
)

var dropReasons = []string{DropTruncated, DropNotIPv4, DropHeaderLen, DropLength, DropFragment, DropChecksum,
	DropNested, DropNotTCP, DropDataOffset, DropOptions, DropNotOurs, DropUnknownSource, DropRingFull, DropOther}

var dropSentinels = []error{ErrTruncated, ErrNotIPv4, ErrBadHeaderLen, ErrBadLength, ErrFragment, ErrChecksum,
	ErrNestedTunnel, ErrNotTCP, ErrBadDataOffset, ErrBadOptions}

const (
	dropNotOurs = iota + 10 // indexes into Link.drops after the sentinels' 0..9
	dropUnknownSource
	dropRingFull
	dropOther
)

// PathStats are the counters of one path.
type PathStats struct {
	Dev          string
	Local, Relay netip.Addr
	TxPackets    uint64
	TxBytes      uint64 // IP bytes, outer headers included
	TxErrors     uint64 // segments not sent: encode errors and packets the kernel refused
	RxPackets    uint64 // segments delivered that came over this path (by outer source, else interface)
	RxBytes      uint64 // IP bytes of those packets
}

// LinkStats is a snapshot of a Link's counters.
type LinkStats struct {
	Paths         []PathStats
	RxOther       uint64            // delivered segments that matched no path (e.g. plain TCP on a foreign interface)
	Drops         map[string]uint64 // by reason: the Drop* constants
	GuardOwned    bool              // the guard's table dies with the process
	ChecksumFixed uint64            // locally generated packets whose offloaded checksum the receiver completed
}

type linkPath struct {
	cfg     PathConfig
	sender  *Sender
	ifindex int

	txPackets, txBytes, txErrors atomic.Uint64
	rxPackets, rxBytes           atomic.Uint64
}

// Link carries engine segments over IPIP through relays and implements tcp.Link. Send
// is safe for concurrent use; Run runs once at a time; Stats and Close may be called from
// any goroutine.
type Link struct {
	cfg   LinkConfig
	log   *zap.Logger
	paths []*linkPath
	recv  *Receiver
	guard *Guard

	txPool sync.Pool // *txBatch

	running atomic.Bool
	closed  atomic.Bool
	rxOther atomic.Uint64
	drops   [dropOther + 1]atomic.Uint64
}

var _ tcp.Link = (*Link)(nil)

// NewLink opens a Sender per path, the Receiver on the paths' devices and, if asked, the
// Guard.
func NewLink(cfg LinkConfig) (*Link, error) {
	if len(cfg.Paths) == 0 {
		return nil, errors.New("raw: link: no paths")
	}
	if !cfg.Addr.Is4() {
		return nil, fmt.Errorf("raw: link: address %v is not IPv4", cfg.Addr)
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	l := &Link{cfg: cfg, log: log.Named("raw.link")}
	l.txPool.New = func() any { return &txBatch{} }
	fail := func(err error) (*Link, error) {
		l.Close()
		return nil, err
	}
	var devs []string
	seen := map[string]bool{}
	for i, pc := range cfg.Paths {
		if !pc.Relay.Is4() {
			return fail(fmt.Errorf("raw: link: path %d: relay %v is not IPv4", i, pc.Relay))
		}
		p := &linkPath{cfg: pc}
		l.paths = append(l.paths, p)
		if pc.Dev != "" {
			ifi, err := net.InterfaceByName(pc.Dev)
			if err != nil {
				return fail(fmt.Errorf("raw: link: path %d: %w", i, err))
			}
			p.ifindex = ifi.Index
			if !p.cfg.Local.IsValid() {
				a, err := firstIPv4(ifi)
				if err != nil {
					return fail(fmt.Errorf("raw: link: path %d: %w", i, err))
				}
				p.cfg.Local = a
			}
			if !seen[pc.Dev] {
				seen[pc.Dev] = true
				devs = append(devs, pc.Dev)
			}
		}
		if !p.cfg.Local.Is4() {
			return fail(fmt.Errorf("raw: link: path %d: no IPv4 local address (set Local or Dev)", i))
		}
		s, err := newSender(pc.Dev)
		if err != nil {
			return fail(fmt.Errorf("raw: link: path %d: %w", i, err))
		}
		p.sender = s
	}
	if len(cfg.AcceptFrom) == 0 {
		for _, p := range l.paths {
			l.cfg.AcceptFrom = append(l.cfg.AcceptFrom, netip.PrefixFrom(p.cfg.Relay, 32))
		}
	}
	if hasEmptyDev(cfg.Paths) {
		devs = nil // some path may arrive anywhere: listen on all interfaces
	}
	r, err := NewReceiver(ReceiverConfig{Ifaces: devs, Filter: FilterTCPPortsOrIPIP(cfg.Ports, l.cfg.AcceptFrom), RingBytes: cfg.RingBytes})
	if err != nil {
		return fail(fmt.Errorf("raw: link: %w", err))
	}
	l.recv = r
	if cfg.Guard {
		g, err := NewGuard(GuardConfig{Table: cfg.GuardTable, Ports: cfg.Ports, Addrs: []netip.Addr{cfg.Addr}, IPIPSources: l.cfg.AcceptFrom})
		if err != nil {
			return fail(fmt.Errorf("raw: link: %w", err))
		}
		l.guard = g
		if !g.Owned() {
			l.log.Warn("nftables table is not owned by the process (kernel < 5.12): it stays after a crash until the next start removes it",
				zap.String("table", g.Table()))
		}
	}
	for i, p := range l.paths {
		l.log.Info("path", zap.Int("index", i), zap.String("dev", p.cfg.Dev),
			zap.Stringer("local", p.cfg.Local), zap.Stringer("relay", p.cfg.Relay))
	}
	return l, nil
}

func hasEmptyDev(ps []PathConfig) bool {
	for _, p := range ps {
		if p.Dev == "" {
			return true
		}
	}
	return false
}

func firstIPv4(ifi *net.Interface) (netip.Addr, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap().Is4() {
				return ip.Unmap(), nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("%s has no IPv4 address", ifi.Name)
}

// txBatch is one Send's encoders and packet list; an Encoder's output stays valid until
// its next use, so each packet of a batch gets its own.
type txBatch struct {
	enc  [sendBatchMax]Encoder
	pkts [sendBatchMax][]byte
}

// Send encapsulates segs (IPIP from the path's local address to its relay) and sends
// them as one batch. The segments are serialised before Send returns; nothing is kept.
// An error means some of the batch was not sent (counted in the path's TxErrors).
func (l *Link) Send(path int, segs []tcp.Segment) error {
	if path < 0 || path >= len(l.paths) {
		return fmt.Errorf("raw: link: send: no path %d", path)
	}
	if l.closed.Load() {
		return net.ErrClosed
	}
	p := l.paths[path]
	b := l.txPool.Get().(*txBatch)
	defer l.txPool.Put(b)
	var firstErr error
	for len(segs) > 0 {
		n := min(len(segs), sendBatchMax)
		k := 0
		for i := range segs[:n] {
			pkt, err := b.enc[i].IPIP(p.cfg.Local, p.cfg.Relay, &segs[i])
			if err != nil {
				p.txErrors.Add(1)
				if firstErr == nil {
					firstErr = fmt.Errorf("raw: link: send: %w", err)
				}
				continue
			}
			b.pkts[k] = pkt
			k++
		}
		sent, err := p.sender.Send(b.pkts[:k])
		bytes := 0
		for _, pkt := range b.pkts[:sent] {
			bytes += len(pkt)
		}
		p.txPackets.Add(uint64(sent))
		p.txBytes.Add(uint64(bytes))
		if sent < k {
			p.txErrors.Add(uint64(k - sent))
		}
		if err != nil && firstErr == nil {
			firstErr = fmt.Errorf("raw: link: send on path %d: %w", path, err)
		}
		clear(b.pkts[:k])
		segs = segs[n:]
	}
	return firstErr
}

// deliverBatch is the most segments handed to deliver at once.
const deliverBatch = 256

// Run receives until ctx ends or the Link is closed (then it returns nil), calling
// deliver with batches of segments addressed to Addr:Ports. The segments and their
// payloads (which point into the receive ring) are valid only during deliver: copy what
// you keep. deliver runs on Run's goroutine and must not call Close (Close waits for the
// receive loop to leave the ring). Only one Run at a time.
func (l *Link) Run(ctx context.Context, deliver func(segs []tcp.Segment)) error {
	if !l.running.CompareAndSwap(false, true) {
		return errors.New("raw: link: Run is already running")
	}
	defer l.running.Store(false)
	if err := l.recv.SetReadDeadline(time.Time{}); err != nil {
		return fmt.Errorf("raw: link: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { l.recv.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	dec := NewDecoder()
	batch := make([]tcp.Segment, deliverBatch)
	n, hw := 0, 0 // hw: slots written since the last clear
	onPkt := func(pkt []byte, ifindex int) {
		seg := &batch[n]
		hw = max(hw, n+1)
		info, err := dec.Decode(pkt, seg)
		if err != nil {
			l.countDecodeError(err)
			return
		}
		if info.IPIP && !l.accepts(info.OuterSrc) {
			l.drops[dropUnknownSource].Add(1)
			return
		}
		if seg.Dst.Addr() != l.cfg.Addr || (len(l.cfg.Ports) > 0 && !inRanges(l.cfg.Ports, seg.Dst.Port())) {
			l.drops[dropNotOurs].Add(1)
			return
		}
		seg.Path = l.countRx(info, ifindex, len(pkt))
		n++
		if n == len(batch) {
			deliver(batch[:n])
			n = 0
		}
	}
	onEnd := func() {
		if n > 0 {
			deliver(batch[:n])
			n = 0
		}
		clear(batch[:hw]) // drop references into the ring block about to be handed back
		hw = 0
	}
	for {
		err := l.recv.readBatch(onPkt, onEnd)
		if err == nil {
			continue
		}
		if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
			return nil
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue // a deadline from an earlier Run's context
		}
		return fmt.Errorf("raw: link: %w", err)
	}
}

func (l *Link) accepts(src netip.Addr) bool {
	for _, p := range l.cfg.AcceptFrom {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

func (l *Link) countDecodeError(err error) {
	for i, s := range dropSentinels {
		if errors.Is(err, s) {
			l.drops[i].Add(1)
			return
		}
	}
	l.drops[dropOther].Add(1)
}

// countRx attributes a delivered packet to a path, by outer source for IPIP (the relay)
// or else by interface, and returns the path's index (-1: none of ours).
func (l *Link) countRx(info Info, ifindex, size int) int {
	for i, p := range l.paths {
		if (info.IPIP && p.cfg.Relay == info.OuterSrc) || (!info.IPIP && p.ifindex == ifindex && ifindex != 0) {
			p.rxPackets.Add(1)
			p.rxBytes.Add(uint64(size))
			return i
		}
	}
	l.rxOther.Add(1)
	return -1
}

// Stats returns a snapshot of the counters.
func (l *Link) Stats() LinkStats {
	st := LinkStats{Drops: make(map[string]uint64, len(dropReasons)), RxOther: l.rxOther.Load()}
	for _, p := range l.paths {
		st.Paths = append(st.Paths, PathStats{
			Dev: p.cfg.Dev, Local: p.cfg.Local, Relay: p.cfg.Relay,
			TxPackets: p.txPackets.Load(), TxBytes: p.txBytes.Load(), TxErrors: p.txErrors.Load(),
			RxPackets: p.rxPackets.Load(), RxBytes: p.rxBytes.Load(),
		})
	}
	for i, r := range dropReasons {
		st.Drops[r] = l.drops[i].Load()
	}
	if l.recv != nil {
		rs := l.recv.Stats()
		st.Drops[DropRingFull] = rs.KernelDrops
		st.ChecksumFixed = rs.ChecksumFixed
	}
	st.GuardOwned = l.guard != nil && l.guard.Owned()
	return st
}

// Close stops Run, closes the sockets and removes the guard. Idempotent.
func (l *Link) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	var errs []error
	if l.recv != nil {
		errs = append(errs, l.recv.Close())
	}
	for _, p := range l.paths {
		if p.sender != nil {
			errs = append(errs, p.sender.Close())
		}
	}
	if l.guard != nil {
		errs = append(errs, l.guard.Close())
	}
	return errors.Join(errs...)
}
