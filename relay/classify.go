package relay

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"

	"mpath/raw"
)

// Reason is why the relay dropped (or did not forward) a packet. Reasons are the label
// values of mpath_relay_dropped_packets_total.
type Reason uint8

// Drop reasons. ReasonNone means "forward".
const (
	ReasonNone         Reason = iota
	ReasonNotAllowed          // an outer source outside --allow-from, an inner source or destination outside --allow-to
	ReasonMalformed           // truncated, bad version/IHL/length, bad header checksum
	ReasonFragment            // outer or inner packet is a fragment
	ReasonNestedTunnel        // inner packet is itself a tunnel (IPIP, 6in4, GRE)
	ReasonTTLExpired          // inner (or plain) TTL would reach 0
	ReasonToSelf              // the inner destination is one of the relay's own addresses
	ReasonMartian             // multicast, broadcast, loopback, unspecified addresses
	ReasonImpairLoss          // dropped by --impair loss
	ReasonQueueFull           // tail-dropped behind --impair rate
	ReasonSendError           // the kernel refused to send it
	ReasonOverload            // the release queue was full (the relay cannot keep up)
	ReasonProtocol            // inner protocol other than TCP (or UDP to an encapsulation port)
	numReasons
)

var reasonNames = [numReasons]string{
	ReasonNone:         "none",
	ReasonNotAllowed:   "not_allowed",
	ReasonMalformed:    "malformed",
	ReasonFragment:     "fragment",
	ReasonNestedTunnel: "nested_tunnel",
	ReasonTTLExpired:   "ttl_expired",
	ReasonToSelf:       "to_self",
	ReasonMartian:      "martian",
	ReasonImpairLoss:   "impair_loss",
	ReasonQueueFull:    "queue_full",
	ReasonSendError:    "send_error",
	ReasonOverload:     "overload",
	ReasonProtocol:     "protocol",
}

func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// Reasons lists every drop reason (ReasonNone excluded), for metrics and logs.
func Reasons() []Reason {
	rs := make([]Reason, 0, numReasons-1)
	for r := ReasonNone + 1; r < numReasons; r++ {
		rs = append(rs, r)
	}
	return rs
}

// Mode is how the relay sends a decapsulated packet on.
type Mode uint8

const (
	// ModeForward strips the outer header and routes the inner packet (TTL-1), like a
	// stock Linux ipip relay.
	ModeForward Mode = iota
	// ModeReencap wraps the inner packet (TTL-1) in a new outer header from the relay to
	// the inner destination, so no foreign source address leaves the relay.
	ModeReencap
)

func (m Mode) String() string {
	if m == ModeReencap {
		return "reencap"
	}
	return "forward"
}

// ParseMode reads "forward" or "reencap".
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(s) {
	case "", "forward":
		return ModeForward, nil
	case "reencap":
		return ModeReencap, nil
	}
	return 0, fmt.Errorf("parse mode %q: want forward or reencap", s)
}

// Allowlist is a set of IPv4 prefixes. The zero value allows nothing. Safe for
// concurrent reads.
type Allowlist struct {
	nets []v4net
}

type v4net struct{ addr, mask uint32 }

// ParseAllowlist reads a comma-separated list of IPv4 CIDRs (a bare address is a /32).
func ParseAllowlist(s string) (Allowlist, error) {
	var a Allowlist
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		var p netip.Prefix
		var err error
		if strings.Contains(f, "/") {
			p, err = netip.ParsePrefix(f)
		} else {
			var ad netip.Addr
			ad, err = netip.ParseAddr(f)
			if err == nil {
				p = netip.PrefixFrom(ad, ad.BitLen())
			}
		}
		if err != nil {
			return Allowlist{}, fmt.Errorf("parse allowlist: %w", err)
		}
		if !p.Addr().Is4() {
			return Allowlist{}, fmt.Errorf("parse allowlist: %s: only IPv4 prefixes", p)
		}
		a.Add(p)
	}
	if len(a.nets) == 0 {
		return Allowlist{}, fmt.Errorf("parse allowlist %q: no prefixes", s)
	}
	return a, nil
}

// Add adds an IPv4 prefix (others are ignored).
func (a *Allowlist) Add(p netip.Prefix) {
	if !p.Addr().Is4() {
		return
	}
	p = p.Masked()
	mask := uint32(0)
	if p.Bits() > 0 {
		mask = ^uint32(0) << (32 - p.Bits())
	}
	a.nets = append(a.nets, v4net{addr: v4(p.Addr()), mask: mask})
}

// Prefixes returns the prefixes in the list.
func (a Allowlist) Prefixes() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(a.nets))
	for _, n := range a.nets {
		bits := 0
		for m := n.mask; m != 0; m <<= 1 {
			bits++
		}
		out = append(out, netip.PrefixFrom(addrOf(n.addr), bits))
	}
	return out
}

func (a Allowlist) String() string {
	ps := a.Prefixes()
	ss := make([]string, len(ps))
	for i, p := range ps {
		ss[i] = p.String()
	}
	return strings.Join(ss, ",")
}

// Contains reports whether the IPv4 address ip (host byte order) is in the list.
func (a *Allowlist) Contains(ip uint32) bool {
	for _, n := range a.nets {
		if ip&n.mask == n.addr {
			return true
		}
	}
	return false
}

func v4(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func addrOf(u uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], u)
	return netip.AddrFrom4(b)
}

// LocalSet is the set of the relay's own IPv4 addresses. The zero value is empty.
type LocalSet struct {
	addrs []uint32
}

// NewLocalSet builds a set from addresses (non-IPv4 ones are ignored).
func NewLocalSet(addrs []netip.Addr) *LocalSet {
	s := &LocalSet{}
	for _, a := range addrs {
		if a.Is4() || a.Is4In6() {
			s.addrs = append(s.addrs, v4(a.Unmap()))
		}
	}
	return s
}

// Has reports whether ip (host byte order) is a local address.
func (s *LocalSet) Has(ip uint32) bool {
	if s == nil {
		return false
	}
	for _, a := range s.addrs {
		if a == ip {
			return true
		}
	}
	return false
}

// Policy is what Classify needs to judge a packet. Safe for concurrent reads.
//
// Who may send and where packets may go are separate lists:
//
//	IPIP to the relay:  outer source in From   (every sender: clients' uplink or NAT
//	                                             addresses and the exit)
//	                    inner source in To,     (inner addresses are the endpoints':
//	                    inner destination in To  the exit and the clients)
//	                    inner protocol TCP, or UDP to a port in InnerUDPPorts
//	plain transit:      source in From, destination in To (any protocol: the lab)
//
// so a sender that spoofs an allowed outer source still reaches only the endpoints in
// To, and only with TCP: never UDP to port 53 of a third host. From or To left empty
// take Allow (the --allow shorthand: one list for both).
type Policy struct {
	Allow Allowlist // shorthand: From and To where those are empty
	From  Allowlist // outer sources (plain: sources) allowed to send through the relay
	To    Allowlist // inner sources and destinations (plain: destinations)
	// InnerUDPPorts are the UDP destination ports inner packets may carry besides TCP.
	// Empty today: the engine's inner packets are TCP. The hook for a UDP encapsulation
	// (IPv4-in-UDP, Linux fou): its port goes here so encapsulated traffic nested in
	// IPIP keeps working while every other UDP (DNS, amplification) is dropped.
	InnerUDPPorts []uint16
	Local         *LocalSet // the relay's own addresses
	Mode          Mode
	Plain         bool // also forward plain (non-IPIP) transit IPv4 whose addresses are allowed
	// UDPPort, when not 0, is the UDP encapsulation port (Linux fou, ipproto 4): IPv4 in
	// UDP to it is a tunnel packet like IPIP, and in reencap mode the relay sends UDP
	// (from and to this port) instead of IPIP.
	UDPPort uint16
}

func (p *Policy) from() *Allowlist {
	if len(p.From.nets) > 0 {
		return &p.From
	}
	return &p.Allow
}

func (p *Policy) to() *Allowlist {
	if len(p.To.nets) > 0 {
		return &p.To
	}
	return &p.Allow
}

// innerProtoAllowed reports whether an inner packet's protocol may pass: TCP, or UDP to
// one of InnerUDPPorts. pkt is the inner packet, h its header.
func (p *Policy) innerProtoAllowed(pkt []byte, h ipv4Hdr) bool {
	switch h.proto {
	case protoTCP:
		return true
	case protoUDP:
		if len(p.InnerUDPPorts) == 0 || h.totalLen < h.hdrLen+8 {
			return false
		}
		port := binary.BigEndian.Uint16(pkt[h.hdrLen+2 : h.hdrLen+4])
		for _, q := range p.InnerUDPPorts {
			if q == port {
				return true
			}
		}
	}
	return false
}

// Action is what Classify decided for a packet.
type Action uint8

const (
	ActIgnore  Action = iota // not ours (local delivery, other traffic): leave it to the kernel, do not count
	ActDrop                  // drop and count Reason
	ActForward               // send Out to Dst
)

// Verdict is Classify's answer.
type Verdict struct {
	Action Action
	Reason Reason     // for ActDrop
	Out    []byte     // for ActForward: the packet to send, a subslice of the input buffer
	Dst    netip.Addr // for ActForward: where the kernel routes Out
	Tunnel bool       // the input was IPIP addressed to the relay (false: plain transit)
	// Reencap only: the inner source whose packets, allowlisted, just came from the
	// outer source LearnFrom (address, and port with UDP). The relay's return table
	// (returns.go) sends packets for Learn back there.
	Learn     netip.Addr
	LearnFrom netip.AddrPort
}

// IPv4 header constants.
const (
	ipv4HeaderLen = 20
	protoIPIP     = 4
	protoIPv6     = 41
	protoGRE      = 47
	protoTCP      = 6
	protoUDP      = 17
	udpHeaderLen  = 8
	// OuterTTL is the TTL of the outer header the relay writes in reencap mode.
	OuterTTL = 64
)

// ReencapHeadroom is the number of bytes before the inner packet that reencap needs in
// the buffer for the new outer header. An IPIP input always has them (its own outer
// header is there).
const ReencapHeadroom = ipv4HeaderLen

// Classify judges one received IPv4 packet (starting at the IP header). For a packet to
// forward it edits buf in place (TTL decrement and header checksum; in reencap mode a new
// outer header written over the old one, with source src) and returns the bytes to send
// as a subslice of buf. It does not allocate. src is the relay's address toward the
// inner destination (needed in reencap mode only; see Relay); pass the zero Addr when
// unknown, which leaves the source for the kernel to fill in.
func Classify(p *Policy, buf []byte, src func(dst netip.Addr) netip.Addr) Verdict {
	return ClassifyWith(p, buf, Env{Src: src})
}

// Env is what ClassifyWith asks the relay about while judging a packet.
type Env struct {
	// Src returns the relay's address toward dst (reencap outer source); nil or the zero
	// Addr leaves the source to the kernel.
	Src func(dst netip.Addr) netip.Addr
	// Return returns where packets for the inner address dst go in reencap mode: the
	// outer source that dst's own packets last came from (nil or false: dst itself).
	Return func(dst netip.Addr) (netip.AddrPort, bool)
}

// ClassifyWith is Classify with return addressing: in reencap mode a packet for an
// inner destination that the relay has heard from goes back to where that destination's
// packets came from (a NAT's public address and port) rather than to the inner address,
// and the verdict says what to learn (Learn, LearnFrom). It may move the inner packet 8
// bytes towards the end of buf (within cap(buf)) when IPIP input leaves as UDP.
func ClassifyWith(p *Policy, buf []byte, env Env) Verdict {
	h, ok := parseIPv4(buf)
	if !ok {
		return Verdict{Action: ActDrop, Reason: ReasonMalformed}
	}
	if h.proto == protoIPIP && p.Local.Has(h.dst) {
		return classifyTunnel(p, buf, h, 0, env)
	}
	if h.proto == protoUDP && p.UDPPort != 0 && p.Local.Has(h.dst) && !h.fragment && h.totalLen >= h.hdrLen+udpHeaderLen &&
		binary.BigEndian.Uint16(buf[h.hdrLen+2:h.hdrLen+4]) == p.UDPPort {
		return classifyTunnel(p, buf, h, udpHeaderLen, env)
	}
	if !p.Plain || p.Local.Has(h.dst) {
		return Verdict{Action: ActIgnore}
	}
	// Plain transit: a router's job.
	if martian(h.dst) || martian(h.src) {
		return Verdict{Action: ActIgnore}
	}
	if !p.from().Contains(h.src) || !p.to().Contains(h.dst) {
		return Verdict{Action: ActDrop, Reason: ReasonNotAllowed}
	}
	if h.fragment {
		return Verdict{Action: ActDrop, Reason: ReasonFragment}
	}
	if h.ttl <= 1 {
		return Verdict{Action: ActDrop, Reason: ReasonTTLExpired}
	}
	pkt := buf[:h.totalLen]
	decTTL(pkt)
	return Verdict{Action: ActForward, Out: pkt, Dst: addrOf(h.dst)}
}

// classifyTunnel judges an encapsulated packet; extra is the bytes between the outer
// IPv4 header and the inner packet (0 for IPIP, 8 for the UDP header).
func classifyTunnel(p *Policy, buf []byte, outer ipv4Hdr, extra int, env Env) Verdict {
	drop := func(r Reason) Verdict { return Verdict{Action: ActDrop, Reason: r, Tunnel: true} }
	if !p.from().Contains(outer.src) {
		return drop(ReasonNotAllowed)
	}
	if outer.fragment {
		return drop(ReasonFragment)
	}
	var srcPort uint16
	if extra > 0 {
		u := buf[outer.hdrLen:outer.totalLen]
		if int(binary.BigEndian.Uint16(u[4:6])) != len(u) || !udpChecksumOK(buf[12:20], u) {
			return drop(ReasonMalformed)
		}
		srcPort = binary.BigEndian.Uint16(u[0:2])
	}
	innerStart := outer.hdrLen + extra
	innerBuf := buf[innerStart:outer.totalLen]
	if len(innerBuf) == 0 {
		// A keepalive (an empty encapsulation that holds a NAT mapping): not a packet to
		// forward; the kernel's guard drops it.
		return Verdict{Action: ActIgnore, Tunnel: true}
	}
	in, ok := parseIPv4(innerBuf)
	if !ok {
		return drop(ReasonMalformed)
	}
	if in.totalLen != len(innerBuf) {
		// Trailing bytes after the inner packet: not something a tunnel endpoint makes.
		return drop(ReasonMalformed)
	}
	if martian(in.src) || martian(in.dst) {
		return drop(ReasonMartian)
	}
	if to := p.to(); !to.Contains(in.src) || !to.Contains(in.dst) {
		return drop(ReasonNotAllowed)
	}
	if in.fragment {
		return drop(ReasonFragment)
	}
	if in.proto == protoIPIP || in.proto == protoIPv6 || in.proto == protoGRE {
		return drop(ReasonNestedTunnel)
	}
	if p.Local.Has(in.dst) {
		return drop(ReasonToSelf)
	}
	if in.ttl <= 1 {
		return drop(ReasonTTLExpired)
	}
	if !p.innerProtoAllowed(innerBuf, in) {
		return drop(ReasonProtocol)
	}
	dst := addrOf(in.dst)
	if p.Mode == ModeForward {
		decTTL(innerBuf)
		return Verdict{Action: ActForward, Out: innerBuf, Dst: dst, Tunnel: true}
	}
	// Reencap: to where dst's own packets came from if the relay has heard from it,
	// else to dst itself.
	to := netip.AddrPortFrom(dst, p.UDPPort)
	if env.Return != nil {
		if ep, ok := env.Return(dst); ok {
			to = ep
			if p.UDPPort != 0 && ep.Port() == 0 {
				to = netip.AddrPortFrom(ep.Addr(), p.UDPPort) // learned from IPIP
			}
		}
	}
	hdr := ipv4HeaderLen
	if p.UDPPort != 0 {
		hdr += udpHeaderLen
	}
	start := innerStart - hdr
	if start < 0 {
		// IPIP in, UDP out: move the inner packet back to make room for the UDP header.
		shift := -start
		if cap(buf) < outer.totalLen+shift {
			return drop(ReasonMalformed)
		}
		buf = buf[:outer.totalLen+shift]
		copy(buf[innerStart+shift:], buf[innerStart:outer.totalLen])
		innerStart += shift
		innerBuf = buf[innerStart:]
		start = 0
	}
	decTTL(innerBuf)
	pkt := buf[start : innerStart+len(innerBuf)]
	var s netip.Addr
	if env.Src != nil {
		s = env.Src(to.Addr())
	}
	if p.UDPPort != 0 {
		writeOuterUDP(pkt, s, to, p.UDPPort, outer.id)
	} else {
		writeOuter(pkt, s, to.Addr(), outer.id)
	}
	return Verdict{Action: ActForward, Out: pkt, Dst: to.Addr(), Tunnel: true,
		Learn: addrOf(in.src), LearnFrom: netip.AddrPortFrom(addrOf(outer.src), srcPort)}
}

type ipv4Hdr struct {
	hdrLen, totalLen int
	ttl, proto       uint8
	fragment         bool
	id               uint16
	src, dst         uint32
}

// parseIPv4 checks and reads an IPv4 header at the start of b with raw's parser (the
// one the Decoder uses): trailing bytes after the packet (link padding) are accepted,
// anything a router would reject is not.
func parseIPv4(b []byte) (ipv4Hdr, bool) {
	r, err := raw.ParseIPv4(b)
	if err != nil {
		return ipv4Hdr{}, false
	}
	return ipv4Hdr{hdrLen: r.HeaderLen, totalLen: r.TotalLen, ttl: r.TTL, proto: r.Proto,
		fragment: r.Fragment, id: r.ID, src: r.Src, dst: r.Dst}, true
}

// martian reports addresses a relay never forwards: 0/8, 127/8, 169.254/16, multicast,
// reserved and broadcast.
func martian(ip uint32) bool {
	switch {
	case ip>>24 == 0, ip>>24 == 127, ip>>16 == 0xa9fe, ip>>28 >= 0xe:
		return true
	}
	return false
}

// decTTL decrements the TTL of the IPv4 header at b and patches the checksum
// incrementally (RFC 1624).
func decTTL(b []byte) {
	b[8]--
	// The TTL is the high byte of the 16-bit word at offset 8: the sum drops by 0x0100,
	// so the checksum (its complement) rises by 0x0100, with end-around carry.
	sum := uint32(binary.BigEndian.Uint16(b[10:12])) + 0x0100
	sum = (sum & 0xffff) + (sum >> 16)
	binary.BigEndian.PutUint16(b[10:12], uint16(sum))
}

// writeOuter writes a 20-byte IPIP outer header at the start of pkt (whose length is
// the full packet length) from src to dst. A zero src is left 0 for the kernel.
func writeOuter(pkt []byte, src, dst netip.Addr, id uint16) {
	h := pkt[:ipv4HeaderLen]
	h[0] = 0x45
	h[1] = 0
	binary.BigEndian.PutUint16(h[2:4], uint16(len(pkt)))
	binary.BigEndian.PutUint16(h[4:6], id)
	binary.BigEndian.PutUint16(h[6:8], 0x4000) // DF: the inner packet is not fragmented either
	h[8] = OuterTTL
	h[9] = protoIPIP
	h[10], h[11] = 0, 0
	if src.Is4() {
		s := src.As4()
		copy(h[12:16], s[:])
	} else {
		clear(h[12:16])
	}
	d := dst.As4()
	copy(h[16:20], d[:])
	binary.BigEndian.PutUint16(h[10:12], checksum(h))
}

// checksum is the Internet checksum of b (0 when b already carries a valid checksum):
// raw's, shared with the codec.
func checksum(b []byte) uint16 { return raw.Checksum(b) }
