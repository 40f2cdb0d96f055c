package raw

// Link: the engine's packets over IPIP or UDP (fou).
//
//	Send(path, segs) --> pooled Encoders (inner IPv4 ID tagged with the path, PathTag):
//	                     IPIP(path.Local -> path.Relay | seg) --> the path's Sender
//	                     (raw socket bound to path.Dev) --> sendmmsg, or
//	                     inner headers + payload (iovecs, no copy) --> the path's UDP
//	                     socket (path.Local:Port, path.Dev; udpsend.go) --> sendmmsg of
//	                     GSO datagrams to path.Relay:Port (the raw socket with whole
//	                     UDP packets if no UDP socket could be bound)
//	                     (learning mode: the destination is the client's learned endpoint
//	                     for that path, see learn.go)
//
//	Run(ctx, deliver): Receiver on the paths' devices (BPF: TCP to Ports, IPIP or UDP
//	from AcceptFrom to Ports) --> one Decoder --> keep segments to Addr:Ports --> batch
//	of tcpseg.Segment (preallocated) --> deliver, at the latest at the end of each ring
//	block, payloads pointing into the ring (valid only during deliver)
//
//	keepalive goroutine: every Keepalive, an outer header with nothing inside on each
//	path that sent nothing meanwhile, so NAT mappings on the way stay open (the far
//	end's filter drops it).
//
// Everything else is dropped and counted by reason (LinkStats.Drops).

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"mpath/tcpseg"
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
	AcceptFrom []netip.Prefix // outer sources accepted (IPIP or UDP); default: the paths' relays (learning: anywhere)
	Guard      bool           // install the nftables guard (Ports, IPIP from AcceptFrom or UDP to Encap.Port)
	Encap      Encap          // what we send and take: IPIP (zero value) or UDP to Encap.Port
	// Learn makes the link a learning exit (learn.go): Paths must be empty, there are
	// LearnSlots path slots (default 4, at most MaxPathSlots), each client's paths are
	// told apart by the path tag in the inner IPv4 ID, and each is answered at the outer
	// source its authorized flows' packets last came from (see Authorize).
	Learn      bool
	LearnSlots int
	// Keepalive is how often a path that sent nothing gets an empty encapsulation
	// packet to hold NAT mappings open; 0 = 25 s, negative = never. Learning exits send
	// none (the clients do).
	Keepalive  time.Duration
	GuardTable string      // guard table name; default "mpath"
	Logger     *zap.Logger // nil: no logs
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
	DropNoEndpoint    = "no-endpoint" // learning exit: a segment for a client with no known return endpoint (not sent)
)

var dropReasons = []string{DropTruncated, DropNotIPv4, DropHeaderLen, DropLength, DropFragment, DropChecksum,
	DropNested, DropNotTCP, DropDataOffset, DropOptions, DropNotOurs, DropUnknownSource, DropRingFull, DropOther, DropNoEndpoint}

var dropSentinels = []error{ErrTruncated, ErrNotIPv4, ErrBadHeaderLen, ErrBadLength, ErrFragment, ErrChecksum,
	ErrNestedTunnel, ErrNotTCP, ErrBadDataOffset, ErrBadOptions}

const (
	dropNotOurs = iota + 10 // indexes into Link.drops after the sentinels' 0..9
	dropUnknownSource
	dropRingFull
	dropOther
	dropNoEndpoint
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
	Keepalives   uint64 // empty packets sent to hold NAT mappings
	TooBig       uint64 // packets the kernel refused with EMSGSIZE (path MTU below the MSS)
}

// LinkStats is a snapshot of a Link's counters.
type LinkStats struct {
	Paths         []PathStats
	RxOther       uint64            // delivered segments that matched no path (e.g. plain TCP on a foreign interface)
	Drops         map[string]uint64 // by reason: the Drop* constants
	GuardOwned    bool              // the guard's table dies with the process
	ChecksumFixed uint64            // locally generated packets whose offloaded checksum the receiver completed
	Learned       []LearnedPath     // learning exit: every client path's return endpoint
	EndpointMoves uint64            // learning exit: learned endpoints that changed (NAT rebinding, new uplink address)
}

type linkPath struct {
	cfg     PathConfig
	sender  *Sender    // raw IPv4: IPIP, keepalives, UDP where no UDP socket could be had
	udp     *udpSender // --encap udp: the UDP socket (GSO, header/payload iovecs), shared by paths on one device and address
	ifindex int

	txPackets, txBytes, txErrors atomic.Uint64
	rxPackets, rxBytes           atomic.Uint64
	keepalives                   atomic.Uint64
	active                       atomic.Bool // sent something since the last keepalive tick
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

	txPool sync.Pool    // *txBatch
	udps   []*udpSender // distinct UDP sockets of the paths (--encap udp)

	running atomic.Bool
	closed  atomic.Bool
	rxOther atomic.Uint64
	drops   [dropNoEndpoint + 1]atomic.Uint64

	ret       *returnTable // learning mode only
	moves     atomic.Uint64
	tooBigLog sync.Once
	stopKA    chan struct{}
	kaDone    chan struct{}
}

// NewLink opens a Sender per path, the Receiver on the paths' devices and, if asked, the
// Guard.
func NewLink(cfg LinkConfig) (*Link, error) {
	if cfg.Learn {
		if len(cfg.Paths) > 0 {
			return nil, errors.New("raw: link: a learning link has no configured paths")
		}
		if cfg.LearnSlots <= 0 {
			cfg.LearnSlots = 4
		}
		if cfg.LearnSlots > MaxPathSlots {
			return nil, fmt.Errorf("raw: link: %d path slots, at most %d", cfg.LearnSlots, MaxPathSlots)
		}
		cfg.Paths = make([]PathConfig, cfg.LearnSlots)
		for i := range cfg.Paths {
			// The kernel fills in a zero source (IP_HDRINCL) and routes by destination.
			cfg.Paths[i] = PathConfig{Local: netip.IPv4Unspecified(), Relay: netip.IPv4Unspecified()}
		}
		if len(cfg.AcceptFrom) == 0 {
			cfg.AcceptFrom = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
		}
	}
	if len(cfg.Paths) == 0 {
		return nil, errors.New("raw: link: no paths")
	}
	if len(cfg.Paths) > 256 {
		return nil, errors.New("raw: link: more than 256 paths (the path tag is one byte)")
	}
	if cfg.Encap.Kind == EncapUDP && cfg.Encap.Port == 0 {
		cfg.Encap.Port = DefaultUDPPort
	}
	if !cfg.Addr.Is4() {
		return nil, fmt.Errorf("raw: link: address %v is not IPv4", cfg.Addr)
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	l := &Link{cfg: cfg, log: log}
	if cfg.Learn {
		l.ret = newReturnTable(cfg.LearnSlots)
	}
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
	if cfg.Encap.Kind == EncapUDP {
		l.openUDP()
	}
	if len(cfg.AcceptFrom) == 0 {
		for _, p := range l.paths {
			l.cfg.AcceptFrom = append(l.cfg.AcceptFrom, netip.PrefixFrom(p.cfg.Relay, 32))
		}
	}
	if hasEmptyDev(cfg.Paths) {
		devs = nil // some path may arrive anywhere: listen on all interfaces
	}
	spec := FilterSpec{Ports: cfg.Ports, IPIPSources: l.cfg.AcceptFrom}
	if cfg.Encap.Kind == EncapUDP {
		spec = FilterSpec{Ports: cfg.Ports, UDPPort: cfg.Encap.Port, UDPSources: l.cfg.AcceptFrom}
	}
	r, err := NewReceiver(ReceiverConfig{Ifaces: devs, Filter: FilterEngine(spec), RingBytes: cfg.RingBytes})
	if err != nil {
		return fail(fmt.Errorf("raw: link: %w", err))
	}
	l.recv = r
	if cfg.Guard {
		gc := GuardConfig{Table: cfg.GuardTable, Ports: cfg.Ports, Addrs: []netip.Addr{cfg.Addr}, IPIPSources: l.cfg.AcceptFrom}
		if cfg.Encap.Kind == EncapUDP {
			gc.IPIPSources, gc.UDPPort = nil, cfg.Encap.Port
		}
		g, err := NewGuard(gc)
		if err != nil {
			return fail(fmt.Errorf("raw: link: %w", err))
		}
		l.guard = g
		if !g.Owned() {
			l.log.Warn("nftables table is not owned by the process (kernel < 5.12): it stays after a crash until the next start removes it",
				zap.String("table", g.Table()))
		}
	}
	if cfg.Learn {
		l.log.Info("learning exit: paths and return endpoints learned per client", zap.Int("slots", cfg.LearnSlots),
			zap.Stringer("encap", cfg.Encap))
	}
	for i, p := range l.paths {
		if cfg.Learn {
			break
		}
		l.log.Info("path", zap.Int("index", i), zap.String("dev", p.cfg.Dev),
			zap.Stringer("local", p.cfg.Local), zap.Stringer("relay", p.cfg.Relay), zap.Stringer("encap", cfg.Encap))
	}
	if ka := cfg.Keepalive; ka >= 0 && !cfg.Learn {
		if ka == 0 {
			ka = 25 * time.Second
		}
		l.stopKA, l.kaDone = make(chan struct{}), make(chan struct{})
		go l.keepalives(ka)
	}
	return l, nil
}

// openUDP gives every path a UDP socket on its device, local address and the
// encapsulation port, one socket per (device, address). A path whose socket cannot be
// had (the port taken, say) keeps sending UDP through its raw socket, as before.
func (l *Link) openUDP() {
	type key struct {
		dev   string
		local netip.Addr
	}
	socks := map[key]*udpSender{}
	for i, p := range l.paths {
		k := key{p.cfg.Dev, p.cfg.Local}
		u, ok := socks[k]
		if !ok {
			var err error
			u, err = newUDPSender(p.cfg.Dev, netip.AddrPortFrom(p.cfg.Local, l.cfg.Encap.Port))
			if err != nil {
				l.log.Info("UDP encapsulation through the raw socket (no UDP socket, so no GSO)", zap.Int("path", i), zap.Error(err))
			} else {
				l.udps = append(l.udps, u)
				if !u.gso.Load() {
					l.log.Info("the kernel has no UDP GSO: one datagram per packet", zap.Int("path", i))
				}
			}
			socks[k] = u
		}
		p.udp = u
	}
}

// Authorize tells a learning link that the flow (local, remote) is authenticated: its
// packets may move the client's learned return endpoints. Deauthorize when the flow
// ends. No-ops unless the link learns. Safe for concurrent use.
func (l *Link) Authorize(local, remote netip.AddrPort) {
	if l.ret != nil {
		l.ret.authorize(local, remote, true)
	}
}

// Deauthorize undoes Authorize.
func (l *Link) Deauthorize(local, remote netip.AddrPort) {
	if l.ret != nil {
		l.ret.authorize(local, remote, false)
	}
}

// Learning reports whether the link learns its paths per client.
func (l *Link) Learning() bool { return l.ret != nil }

// PathUsable reports whether the engine may send a flow to remote on path: always, but
// at a learning exit only the slots below the number of paths the client announces.
func (l *Link) PathUsable(remote netip.Addr, path int) bool {
	return l.ret == nil || l.ret.usable(remote, path)
}

// keepalives sends an empty encapsulation packet on every path idle for a whole period.
func (l *Link) keepalives(every time.Duration) {
	defer close(l.kaDone)
	t := time.NewTicker(every)
	defer t.Stop()
	var buf [OverheadUDP]byte
	for {
		select {
		case <-l.stopKA:
			return
		case <-t.C:
		}
		for _, p := range l.paths {
			if p.active.Swap(false) {
				continue
			}
			pkt := l.keepalivePacket(buf[:], p)
			if _, err := p.sender.Send([][]byte{pkt}); err == nil {
				p.keepalives.Add(1)
			}
		}
	}
}

// keepalivePacket is an outer header with nothing inside: IPIP with no inner packet or
// UDP with no payload, from the path's local address to its relay. NATs refresh their
// mapping; the far end's filter (inner TCP required) and guard drop it.
func (l *Link) keepalivePacket(buf []byte, p *linkPath) []byte {
	if l.cfg.Encap.Kind == EncapUDP {
		pkt := buf[:OverheadUDP]
		PutUDPHeaders(pkt, netip.AddrPortFrom(p.cfg.Local, l.cfg.Encap.Port), netip.AddrPortFrom(p.cfg.Relay, l.cfg.Encap.Port), 0, defaultTTL)
		return pkt
	}
	pkt := buf[:ipv4HeaderLen]
	PutUDPHeaders(buf[:OverheadUDP], netip.AddrPortFrom(p.cfg.Local, 0), netip.AddrPortFrom(p.cfg.Relay, 0), 0, defaultTTL)
	pkt[9] = protoIPIP
	binary.BigEndian.PutUint16(pkt[2:4], ipv4HeaderLen)
	putIPChecksum(pkt)
	return pkt
}

// tooBig is what the path's sockets refused with EMSGSIZE. A UDP socket shared by
// several paths counts for each of them.
func (p *linkPath) tooBig() uint64 {
	n := p.sender.Stats().TooBig
	if p.udp != nil {
		n += p.udp.tooBig.Load()
	}
	return n
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
	udp  [sendBatchMax]udpPacket
}

// Send encapsulates segs (IPIP or UDP from the path's local address to its relay, or in
// learning mode to each client's learned endpoint for the path) and sends them as one
// batch. The segments are serialised before Send returns; nothing is kept. An error
// means some of the batch was not sent (counted in the path's TxErrors).
func (l *Link) Send(path int, segs []tcpseg.Segment) error {
	if path < 0 || path >= len(l.paths) {
		return fmt.Errorf("raw: link: send: no path %d", path)
	}
	if l.closed.Load() {
		return net.ErrClosed
	}
	p := l.paths[path]
	p.active.Store(true)
	b := l.txPool.Get().(*txBatch)
	defer l.txPool.Put(b)
	if p.udp != nil {
		return l.sendUDP(p, path, segs, b)
	}
	var firstErr error
	udp := l.cfg.Encap.Kind == EncapUDP
	src := netip.AddrPortFrom(p.cfg.Local, l.cfg.Encap.Port)
	dst := netip.AddrPortFrom(p.cfg.Relay, l.cfg.Encap.Port)
	var now time.Time
	if l.ret != nil {
		now = time.Now()
	}
	for len(segs) > 0 {
		n := min(len(segs), sendBatchMax)
		k := 0
		for i := range segs[:n] {
			dst, ok := l.prepare(p, path, &segs[i], &b.enc[i], dst, now)
			if !ok {
				continue
			}
			if !udp {
				dst = netip.AddrPortFrom(dst.Addr(), 0)
			}
			enc := &b.enc[i]
			var pkt []byte
			var err error
			if udp {
				pkt, err = enc.UDP(src, dst, &segs[i])
			} else {
				pkt, err = enc.IPIP(p.cfg.Local, dst.Addr(), &segs[i])
			}
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
		l.noteSent(p, path, k, sent, err, &firstErr)
		clear(b.pkts[:k])
		segs = segs[n:]
	}
	return firstErr
}

// prepare is what both send paths do before encoding seg on path: tag the encoder with
// the path and the number of paths (PathByte), and find the destination: the path's
// relay (dst), or at a learning exit the endpoint learned for the segment's client and
// path (ok false: none known, counted as a drop).
func (l *Link) prepare(p *linkPath, path int, seg *tcpseg.Segment, enc *Encoder, dst netip.AddrPort, now time.Time) (netip.AddrPort, bool) {
	enc.PathID = PathByte(path, len(l.paths))
	if l.ret == nil {
		return dst, true
	}
	ep, ok := l.ret.lookup(seg.Src, seg.Dst, path, now)
	if !ok {
		l.drops[dropNoEndpoint].Add(1)
		p.txErrors.Add(1)
	}
	return ep, ok
}

// noteSent counts what a send of k packets left unsent and logs EMSGSIZE once.
func (l *Link) noteSent(p *linkPath, path, k, sent int, err error, firstErr *error) {
	if sent < k {
		p.txErrors.Add(uint64(k - sent))
	}
	if err != nil && errors.Is(err, unix.EMSGSIZE) {
		l.tooBigLog.Do(func() {
			l.log.Error("the kernel refused a packet as too big for the path's MTU (EMSGSIZE): lower --mss to the path MTU less "+
				strconv.Itoa(l.cfg.Encap.Overhead()+ipv4HeaderLen+tcpHeaderLen)+" (encapsulation, inner IPv4 and TCP headers), or raise the MTU; counted in too_big",
				zap.Int("path", path), zap.String("dev", p.cfg.Dev), zap.Stringer("encap", l.cfg.Encap))
		})
	}
	if err != nil && *firstErr == nil {
		*firstErr = fmt.Errorf("raw: link: send on path %d: %w", path, err)
	}
}

// sendUDP is Send through the path's UDP socket: inner headers encoded, payloads
// referenced (not copied), runs of equal-size packets sent as GSO datagrams.
func (l *Link) sendUDP(p *linkPath, path int, segs []tcpseg.Segment, b *txBatch) error {
	var firstErr error
	dst := netip.AddrPortFrom(p.cfg.Relay, l.cfg.Encap.Port)
	var now time.Time
	if l.ret != nil {
		now = time.Now()
	}
	for len(segs) > 0 {
		n := min(len(segs), sendBatchMax)
		k := 0
		for i := range segs[:n] {
			d, ok := l.prepare(p, path, &segs[i], &b.enc[i], dst, now)
			if !ok {
				continue
			}
			enc := &b.enc[i]
			hdr, err := enc.TCPHeaders(&segs[i])
			if err != nil {
				p.txErrors.Add(1)
				if firstErr == nil {
					firstErr = fmt.Errorf("raw: link: send: %w", err)
				}
				continue
			}
			b.udp[k] = udpPacket{hdr: hdr, payload: segs[i].Payload, dst: d}
			k++
		}
		sent, err := p.udp.Send(b.udp[:k])
		bytes := 0
		for i := range b.udp[:sent] {
			bytes += b.udp[i].size() + OverheadUDP
		}
		p.txPackets.Add(uint64(sent))
		p.txBytes.Add(uint64(bytes))
		l.noteSent(p, path, k, sent, err, &firstErr)
		clear(b.udp[:k])
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
func (l *Link) Run(ctx context.Context, deliver func(segs []tcpseg.Segment)) error {
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
	udp := l.cfg.Encap.Kind == EncapUDP
	if udp {
		dec.UDPPort = l.cfg.Encap.Port
	}
	batch := make([]tcpseg.Segment, deliverBatch)
	n, hw := 0, 0 // hw: slots written since the last clear
	onSuper := func(pkt []byte, ifindex int) bool {
		outer, sport, payload, ok := UDPSuperPacket(pkt, l.cfg.Encap.Port)
		if !ok {
			return false
		}
		// Inner packets back to back: each one is decoded on its own as plain IPv4/TCP
		// (header and TCP checksums verified), then takes the outer header's facts.
		// The outer UDP checksum is left unchecked: for a local GSO datagram it is only
		// partial, after GRO it covers nothing, and fou may send none at all.
		for len(payload) > 0 {
			if len(payload) < ipv4HeaderLen {
				l.countDecodeError(ErrTruncated)
				return true
			}
			total := int(binary.BigEndian.Uint16(payload[2:4]))
			if total < ipv4HeaderLen || total > len(payload) {
				l.countDecodeError(ErrBadLength)
				return true
			}
			seg := &batch[n]
			hw = max(hw, n+1)
			info, err := dec.Decode(payload[:total], seg)
			payload = payload[total:]
			if err != nil {
				l.countDecodeError(err)
				continue
			}
			if info.IPIP || info.UDP {
				l.countDecodeError(ErrNestedTunnel)
				continue
			}
			info.UDP, info.OuterSrcPort = true, sport
			info.OuterSrc, info.OuterDst = addrOf4(outer.Src), addrOf4(outer.Dst)
			info.TTL = outer.TTL
			l.take(seg, &info, ifindex, total+OverheadUDP, &n, batch, deliver)
		}
		return true
	}
	onPkt := func(pkt []byte, ifindex int) {
		if udp && onSuper(pkt, ifindex) {
			return
		}
		seg := &batch[n]
		hw = max(hw, n+1)
		info, err := dec.Decode(pkt, seg)
		if err != nil {
			l.countDecodeError(err)
			return
		}
		l.take(seg, &info, ifindex, len(pkt), &n, batch, deliver)
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

// take keeps a decoded segment that passed the source and destination checks: it
// gets its path, joins batch[*n], and the batch goes to deliver when full. size is the
// packet's IP bytes, for the path's counters.
func (l *Link) take(seg *tcpseg.Segment, info *Info, ifindex, size int, n *int, batch []tcpseg.Segment, deliver func([]tcpseg.Segment)) {
	if info.Tunneled() && !l.accepts(info.OuterSrc) {
		l.drops[dropUnknownSource].Add(1)
		return
	}
	if seg.Dst.Addr() != l.cfg.Addr || (len(l.cfg.Ports) > 0 && !inRanges(l.cfg.Ports, seg.Dst.Port())) {
		l.drops[dropNotOurs].Add(1)
		return
	}
	if l.ret != nil {
		seg.Path = l.learnRx(seg, info, size)
	} else {
		seg.Path = l.countRx(*info, ifindex, size)
	}
	*n++
	if *n == len(batch) {
		deliver(batch[:*n])
		*n = 0
	}
}

// UDPSuperPacket recognises IPv4/UDP to port whose payload holds more than one inner
// packet: a GSO datagram that crossed a virtual device whole (a veth with GSO on) or
// datagrams a NIC's GRO merged. It returns the outer header, the UDP source port and the
// UDP payload.
func UDPSuperPacket(pkt []byte, port uint16) (IPv4Header, uint16, []byte, bool) {
	h, err := ParseIPv4(pkt)
	if err != nil || h.Proto != protoUDP || h.Fragment || h.TotalLen-h.HeaderLen < udpHeaderLen+ipv4HeaderLen {
		return h, 0, nil, false
	}
	u := pkt[h.HeaderLen:h.TotalLen]
	if binary.BigEndian.Uint16(u[2:4]) != port || int(binary.BigEndian.Uint16(u[4:6])) != len(u) {
		return h, 0, nil, false
	}
	payload := u[udpHeaderLen:]
	if int(binary.BigEndian.Uint16(payload[2:4])) >= len(payload) {
		return h, 0, nil, false // one inner packet (or a broken one): the Decoder's case
	}
	return h, binary.BigEndian.Uint16(u[0:2]), payload, true
}

func addrOf4(a uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)})
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

// countRx attributes a delivered packet to a path and returns the path's index (-1:
// none of ours): for an encapsulated packet the path whose relay sent it and whose
// device it came in by (two relay-less paths to the same exit differ only in the
// device), else the only path on that device, else the first path whose relay sent it;
// for plain TCP the path of the interface.
func (l *Link) countRx(info Info, ifindex, size int) int {
	hit := func(i int) int {
		p := l.paths[i]
		p.rxPackets.Add(1)
		p.rxBytes.Add(uint64(size))
		return i
	}
	tun := info.Tunneled()
	if tun {
		for i, p := range l.paths {
			if p.cfg.Relay == info.OuterSrc && p.ifindex == ifindex && ifindex != 0 {
				hit(i)
				// Paths that share the sender (relay-less paths to one exit): the sender's
				// path tag names the path it meant. A learning exit sends a path it has
				// not learned yet by another one's endpoint; answering on the tagged path
				// teaches it that path within a round trip (else its ACKs would never
				// leave by that uplink during a download). Counted where it came in.
				if t := int(PathOf(info.ID)); t != i && t < len(l.paths) && l.paths[t].cfg.Relay == info.OuterSrc {
					return t
				}
				return i
			}
		}
		// From someone else's address (a learning exit answering straight to this uplink
		// what came through a relay on it): the uplink it came in by, when exactly one
		// path uses that device. Answers then leave by the same uplink and its relay, which
		// teaches the exit where this path's packets come from.
		if i := l.onlyPathOn(ifindex); i >= 0 {
			return hit(i)
		}
	}
	for i, p := range l.paths {
		if (tun && p.cfg.Relay == info.OuterSrc) || (!tun && p.ifindex == ifindex && ifindex != 0) {
			return hit(i)
		}
	}
	l.rxOther.Add(1)
	return -1
}

// onlyPathOn returns the one path that leaves by the device ifindex (-1: none or
// several).
func (l *Link) onlyPathOn(ifindex int) int {
	found := -1
	for i, p := range l.paths {
		if ifindex != 0 && p.ifindex == ifindex {
			if found >= 0 {
				return -1
			}
			found = i
		}
	}
	return found
}

// learnRx (learning mode) reads the client's path from the inner IPv4 ID, lets the
// return table learn the outer source, counts the packet on that slot and returns the
// slot (-1: plain TCP or a path beyond the slots).
func (l *Link) learnRx(seg *tcpseg.Segment, info *Info, size int) int {
	if !info.Tunneled() {
		l.rxOther.Add(1)
		return -1
	}
	path := PathOf(info.ID)
	if int(path) >= len(l.paths) {
		l.rxOther.Add(1)
		return -1
	}
	moved, old := l.ret.learn(seg.Dst, seg.Src, path, PathsOf(info.ID), info.Source(), time.Now())
	if moved {
		l.moves.Add(1)
		l.log.Info("client path moved", zap.Stringer("client", seg.Src.Addr()), zap.Int("path", int(path)),
			zap.Stringer("from", old), zap.Stringer("to", info.Source()))
	}
	p := l.paths[path]
	p.rxPackets.Add(1)
	p.rxBytes.Add(uint64(size))
	return int(path)
}

// Stats returns a snapshot of the counters.
func (l *Link) Stats() LinkStats {
	st := LinkStats{Drops: make(map[string]uint64, len(dropReasons)), RxOther: l.rxOther.Load()}
	for _, p := range l.paths {
		st.Paths = append(st.Paths, PathStats{
			Dev: p.cfg.Dev, Local: p.cfg.Local, Relay: p.cfg.Relay,
			TxPackets: p.txPackets.Load(), TxBytes: p.txBytes.Load(), TxErrors: p.txErrors.Load(),
			RxPackets: p.rxPackets.Load(), RxBytes: p.rxBytes.Load(),
			Keepalives: p.keepalives.Load(), TooBig: p.tooBig(),
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
	if l.ret != nil {
		st.Learned = l.ret.snapshot()
		st.EndpointMoves = l.moves.Load()
	}
	return st
}

// Close stops Run, closes the sockets and removes the guard. Idempotent.
func (l *Link) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	if l.stopKA != nil {
		close(l.stopKA)
		<-l.kaDone
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
	for _, u := range l.udps {
		errs = append(errs, u.Close())
	}
	if l.guard != nil {
		errs = append(errs, l.guard.Close())
	}
	return errors.Join(errs...)
}
