package raw

// The codec, both directions:
//
//	encode:  tcpseg.Segment --Encoder.IPIP--> [outer IPv4 | inner IPv4 | TCP+options | payload]
//	         tcpseg.Segment --Encoder.TCP---> [IPv4 | TCP+options | payload]
//	         (gopacket.SerializeLayers into one reused SerializeBuffer fills in the
//	         lengths; the checksums are ours, see serializeOpts)
//
//	decode:  packet --DecodingLayerParser--> outerIPv4 --(proto 4)--> innerIPv4 --> tcpLayer
//	                                                   --(proto 6)--------------------^
//	         each layer first checks its header by hand (sentinel errors, checksums,
//	         fragments), then lets gopacket's layer parse it; tcpLayer converts the
//	         options into tcpseg.Options; Payload is a slice of the packet.

import (
	"encoding/binary"
	"net/netip"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"mpath/tcpseg"
)

const (
	ipv4HeaderLen = 20
	tcpHeaderLen  = 20
	maxTCPOptions = 40
	defaultTTL    = 64
	protoIPIP     = 4
	protoTCP      = 6
	protoUDP      = 17
	udpHeaderLen  = 8

	// OverheadIPIP and OverheadUDP are what each encapsulation adds in front of the inner
	// IPv4 packet: the MTU a path loses.
	OverheadIPIP = ipv4HeaderLen
	OverheadUDP  = ipv4HeaderLen + udpHeaderLen
)

// Encoder serialises segments into packets. It reuses one buffer: the slice a method
// returns is valid until the next call on the same Encoder. The zero value is ready to
// use. Not safe for concurrent use: use one Encoder per goroutine.
type Encoder struct {
	// TTL is the TTL of the headers written; 0 means 64.
	TTL uint8

	init    bool
	buf     gopacket.SerializeBuffer
	outer   layers.IPv4
	inner   layers.IPv4
	tcp     layers.TCP
	payload gopacket.Payload
	ipip    [4]gopacket.SerializableLayer // outer, inner, tcp, payload
	plain   [3]gopacket.SerializableLayer // inner, tcp, payload

	// PathID is written into the high byte of every inner IPv4 ID (see PathTag): the
	// path a packet was sent on, readable by the far end whatever NAT did to the outer
	// headers.
	PathID uint8

	addrs   [4][4]byte           // outer src, outer dst, inner src, inner dst
	opts    [12]layers.TCPOption // at most 9: MSS, NOP NOP SACKPERM, NOP WS, NOP NOP SACK
	optData [maxTCPOptions]byte
	id      uint16
}

// NewEncoder returns a ready Encoder (the zero value works as well).
func NewEncoder() *Encoder {
	e := &Encoder{}
	e.setup()
	return e
}

func (e *Encoder) setup() {
	e.init = true
	// Room for the largest headers in front, a full-size payload behind: after the first
	// packet the buffer never grows again.
	e.buf = gopacket.NewSerializeBufferExpectedSize(2*ipv4HeaderLen+udpHeaderLen+tcpHeaderLen+maxTCPOptions, 1500)
	e.outer = layers.IPv4{Version: 4, Protocol: layers.IPProtocolIPv4, Flags: layers.IPv4DontFragment,
		SrcIP: e.addrs[0][:], DstIP: e.addrs[1][:]}
	e.inner = layers.IPv4{Version: 4, Protocol: layers.IPProtocolTCP, Flags: layers.IPv4DontFragment,
		SrcIP: e.addrs[2][:], DstIP: e.addrs[3][:]}
	_ = e.tcp.SetNetworkLayerForChecksum(&e.inner)
	e.ipip = [4]gopacket.SerializableLayer{&e.outer, &e.inner, &e.tcp, &e.payload}
	e.plain = [3]gopacket.SerializableLayer{&e.inner, &e.tcp, &e.payload}
}

// serializeOpts leaves checksums to us: gopacket's checksum adds the packet two bytes at
// a time, which made a 1440-byte IPIP encode cost ~1030 ns; summing 8 bytes at a time
// (checksum.go) brings it to ~210 ns (BenchmarkEncodeIPIP). Lengths are still gopacket's.
var serializeOpts = gopacket.SerializeOptions{FixLengths: true}

var (
	errEncNotIPv4 = &codecError{msg: "raw: encode: address is not IPv4", kind: ErrNotIPv4}
	errEncTooBig  = &codecError{msg: "raw: encode: packet larger than 65535 bytes", kind: ErrTooBig}
)

// IPIP encodes seg as outer IPv4 (outerSrc -> outerDst, protocol 4) around inner IPv4
// (seg.Src -> seg.Dst) and TCP with options and payload. Both IP headers carry DF. The
// result is valid until the next call on e.
func (e *Encoder) IPIP(outerSrc, outerDst netip.Addr, seg *tcpseg.Segment) ([]byte, error) {
	if !outerSrc.Is4() || !outerDst.Is4() {
		return nil, errEncNotIPv4
	}
	if err := e.prepare(seg, 2*ipv4HeaderLen); err != nil {
		return nil, err
	}
	e.addrs[0], e.addrs[1] = outerSrc.As4(), outerDst.As4()
	e.outer.Id, e.outer.TTL = e.inner.Id, e.inner.TTL
	if err := gopacket.SerializeLayers(e.buf, serializeOpts, e.ipip[:]...); err != nil {
		return nil, err
	}
	b := e.buf.Bytes()
	putChecksums(b[ipv4HeaderLen:])
	putIPChecksum(b)
	return b, nil
}

// UDP encodes seg in the format of Linux fou with ipproto 4: outer IPv4 (outerSrc ->
// outerDst, protocol 17, DF), UDP (ports from outerSrc and outerDst, checksum 0 as fou
// sends by default: the inner headers carry their own), then the inner IPv4 + TCP packet
// exactly as IPIP would carry it. The result is valid until the next call on e.
func (e *Encoder) UDP(outerSrc, outerDst netip.AddrPort, seg *tcpseg.Segment) ([]byte, error) {
	if !outerSrc.Addr().Is4() || !outerDst.Addr().Is4() {
		return nil, errEncNotIPv4
	}
	if err := e.prepare(seg, 2*ipv4HeaderLen+udpHeaderLen); err != nil {
		return nil, err
	}
	if err := gopacket.SerializeLayers(e.buf, serializeOpts, e.plain[:]...); err != nil {
		return nil, err
	}
	putChecksums(e.buf.Bytes())
	if _, err := e.buf.PrependBytes(ipv4HeaderLen + udpHeaderLen); err != nil {
		return nil, err
	}
	b := e.buf.Bytes()
	PutUDPHeaders(b, outerSrc, outerDst, e.inner.Id, e.inner.TTL)
	return b, nil
}

// PutUDPHeaders writes the 28 bytes of outer IPv4 + UDP headers at the start of pkt
// (len(pkt) is the whole packet's length, the inner packet starting at byte 28) from src
// to dst, with the given IP ID and TTL, DF set and the UDP checksum 0. The relay uses
// it to re-encapsulate in place.
func PutUDPHeaders(pkt []byte, src, dst netip.AddrPort, id uint16, ttl uint8) {
	h := pkt[:ipv4HeaderLen+udpHeaderLen]
	h[0], h[1] = 0x45, 0
	binary.BigEndian.PutUint16(h[2:4], uint16(len(pkt)))
	binary.BigEndian.PutUint16(h[4:6], id)
	binary.BigEndian.PutUint16(h[6:8], 0x4000) // DF
	h[8], h[9] = ttl, protoUDP
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(h[12:16], s[:])
	copy(h[16:20], d[:])
	putIPChecksum(h)
	u := h[ipv4HeaderLen:]
	binary.BigEndian.PutUint16(u[0:2], src.Port())
	binary.BigEndian.PutUint16(u[2:4], dst.Port())
	binary.BigEndian.PutUint16(u[4:6], uint16(len(pkt)-ipv4HeaderLen))
	u[6], u[7] = 0, 0
}

// PathTag is the inner IPv4 ID the Encoder writes: the path byte (PathByte) in the high
// byte, a counter in the low byte. Every packet carries DF, so the ID identifies no
// fragments (RFC 6864 lets an atomic datagram's ID be anything) and costs no MSS;
// nothing on the way rewrites it, because NATs and relays only ever touch the outer
// headers (a stock forward-mode relay passes the inner packet as it is). PathOf and
// PathsOf read it back.
func PathTag(path uint8, counter uint16) uint16 { return uint16(path)<<8 | counter&0xff }

// PathByte is the high byte of the tag: the path index in the low nibble and the
// sender's number of paths less one in the high nibble, so that a learning exit knows
// how many paths a client has from its first packet. At most 16 paths are told apart
// and announced.
func PathByte(path, paths int) uint8 {
	return uint8(path&0x0f) | uint8(min(max(paths, 1), 16)-1)<<4
}

// PathOf returns the path a packet was sent on, from its inner IPv4 ID (Info.ID).
func PathOf(id uint16) uint8 { return uint8(id>>8) & 0x0f }

// PathsOf returns the number of paths the sender announced in its inner IPv4 ID.
func PathsOf(id uint16) int { return int(id>>12) + 1 }

// TCP encodes seg as a plain IPv4 (DF) + TCP packet. The result is valid until the next
// call on e.
func (e *Encoder) TCP(seg *tcpseg.Segment) ([]byte, error) {
	if err := e.prepare(seg, ipv4HeaderLen); err != nil {
		return nil, err
	}
	if err := gopacket.SerializeLayers(e.buf, serializeOpts, e.plain[:]...); err != nil {
		return nil, err
	}
	b := e.buf.Bytes()
	putChecksums(b)
	return b, nil
}

// TCPHeaders encodes seg's inner packet like TCP but stops before the payload: the
// result is the IPv4 (DF) and TCP headers, with the total length and both checksums
// covering seg.Payload, which is not copied. Sent back to back (two iovecs), the two
// are the packet TCP would return. The result is valid until the next call on e.
func (e *Encoder) TCPHeaders(seg *tcpseg.Segment) ([]byte, error) {
	if err := e.prepare(seg, ipv4HeaderLen); err != nil {
		return nil, err
	}
	payload := e.payload
	e.payload = nil
	err := gopacket.SerializeLayers(e.buf, serializeOpts, e.plain[:]...)
	e.payload = payload
	if err != nil {
		return nil, err
	}
	b := e.buf.Bytes()
	binary.BigEndian.PutUint16(b[2:4], uint16(len(b)+len(payload)))
	putIPChecksum(b)
	t := b[ipv4HeaderLen:] // a multiple of 4 bytes long: the payload's words line up
	t[16], t[17] = 0, 0
	acc := sum(t, pseudoSum(b[12:16], b[16:20], protoTCP, len(t)+len(payload)))
	binary.BigEndian.PutUint16(t[16:18], checksum(payload, acc))
	return b, nil
}

// putIPChecksum fills in the checksum of the option-less IPv4 header at the start of b.
func putIPChecksum(b []byte) {
	b[10], b[11] = 0, 0
	binary.BigEndian.PutUint16(b[10:12], checksum(b[:ipv4HeaderLen], 0))
}

// putChecksums fills in the IPv4 header and TCP checksums of the option-less IPv4 + TCP
// packet b.
func putChecksums(b []byte) {
	putIPChecksum(b)
	seg := b[ipv4HeaderLen:]
	seg[16], seg[17] = 0, 0
	binary.BigEndian.PutUint16(seg[16:18], checksum(seg, pseudoSum(b[12:16], b[16:20], protoTCP, len(seg))))
}

// prepare fills the inner IPv4 and TCP layers from seg.
func (e *Encoder) prepare(seg *tcpseg.Segment, ipHeaders int) error {
	if !e.init {
		e.setup()
	}
	src, dst := seg.Src.Addr(), seg.Dst.Addr()
	if !src.Is4() || !dst.Is4() {
		return errEncNotIPv4
	}
	nopts := e.encodeOptions(&seg.Options)
	optLen := 0
	for _, o := range e.tcp.Options[:nopts] {
		if o.OptionType == layers.TCPOptionKindNop {
			optLen++
		} else {
			optLen += len(o.OptionData) + 2
		}
	}
	if ipHeaders+tcpHeaderLen+optLen+len(seg.Payload) > 0xffff {
		return errEncTooBig
	}
	e.id++
	ttl := e.TTL
	if ttl == 0 {
		ttl = defaultTTL
	}
	e.addrs[2], e.addrs[3] = src.As4(), dst.As4()
	e.inner.Id, e.inner.TTL = PathTag(e.PathID, e.id), ttl

	t := &e.tcp
	t.SrcPort, t.DstPort = layers.TCPPort(seg.Src.Port()), layers.TCPPort(seg.Dst.Port())
	t.Seq, t.Ack, t.Window, t.Urgent = seg.Seq, seg.Ack, seg.Window, 0
	f := seg.Flags
	t.FIN, t.SYN, t.RST, t.PSH = f&tcpseg.FlagFIN != 0, f&tcpseg.FlagSYN != 0, f&tcpseg.FlagRST != 0, f&tcpseg.FlagPSH != 0
	t.ACK, t.URG, t.ECE, t.CWR, t.NS = f&tcpseg.FlagACK != 0, f&tcpseg.FlagURG != 0, f&tcpseg.FlagECE != 0, f&tcpseg.FlagCWR != 0, false
	t.Padding, t.Checksum = nil, 0
	e.payload = seg.Payload
	return nil
}

// encodeOptions lays the options out the way Linux does (MSS, SACK-permitted+timestamps
// or NOP-padded timestamps, NOP+window scale, NOP NOP+SACK) so that every option after
// MSS is 4-byte aligned and no trailing padding is needed. SACK blocks that do not fit in
// the 40 bytes of option space are left out (the first ones are kept). It sets
// e.tcp.Options and returns the number of options.
func (e *Encoder) encodeOptions(o *tcpseg.Options) int {
	n, d, used := 0, 0, 0
	add := func(kind layers.TCPOptionKind, size int) []byte {
		e.opts[n] = layers.TCPOption{OptionType: kind}
		if kind != layers.TCPOptionKindNop {
			e.opts[n].OptionLength = uint8(size + 2)
			e.opts[n].OptionData = e.optData[d : d+size : d+size]
			d += size
			used += size + 2
		} else {
			used++
		}
		n++
		return e.opts[n-1].OptionData
	}
	if o.MSS != 0 {
		binary.BigEndian.PutUint16(add(layers.TCPOptionKindMSS, 2), o.MSS)
	}
	switch {
	case o.SACKPermitted && o.HasTimestamp:
		add(layers.TCPOptionKindSACKPermitted, 0)
	case o.SACKPermitted:
		add(layers.TCPOptionKindNop, 0)
		add(layers.TCPOptionKindNop, 0)
		add(layers.TCPOptionKindSACKPermitted, 0)
	case o.HasTimestamp:
		add(layers.TCPOptionKindNop, 0)
		add(layers.TCPOptionKindNop, 0)
	}
	if o.HasTimestamp {
		ts := add(layers.TCPOptionKindTimestamps, 8)
		binary.BigEndian.PutUint32(ts[0:4], o.TSVal)
		binary.BigEndian.PutUint32(ts[4:8], o.TSEcr)
	}
	if o.HasWScale {
		add(layers.TCPOptionKindNop, 0)
		add(layers.TCPOptionKindWindowScale, 1)[0] = o.WScale
	}
	if k := min(int(o.NSACK), tcpseg.MaxSACKBlocks, (maxTCPOptions-used-4)/8); k > 0 {
		add(layers.TCPOptionKindNop, 0)
		add(layers.TCPOptionKindNop, 0)
		sb := add(layers.TCPOptionKindSACK, 8*k)
		for i := 0; i < k; i++ {
			binary.BigEndian.PutUint32(sb[8*i:], o.SACK[i].Left)
			binary.BigEndian.PutUint32(sb[8*i+4:], o.SACK[i].Right)
		}
	}
	e.tcp.Options = e.opts[:n]
	return n
}

// Info is what Decode learnt about a packet beyond the segment itself.
type Info struct {
	IPIP               bool       // the packet was IPv4 in IPv4
	UDP                bool       // the packet was IPv4 in UDP (fou) to Decoder.UDPPort
	OuterSrc, OuterDst netip.Addr // outer header addresses (for plain TCP: the only header's)
	OuterSrcPort       uint16     // UDP source port of the encapsulation (0 unless UDP)
	TTL                uint8      // TTL of the outer (or only) header
	InnerTTL           uint8      // TTL of the header in front of TCP (== TTL when not IPIP)
	TOS                uint8      // TOS/DSCP+ECN byte of the header in front of TCP
	ID                 uint16     // IP ID of the header in front of TCP
	// Inner is the IPv4 packet in front of TCP, a slice of the decoded buffer: for IPIP
	// the encapsulated packet, otherwise the whole packet trimmed to its total length
	// (link-layer padding removed). A relay forwards exactly these bytes.
	Inner []byte
}

// Tunneled reports whether the packet came encapsulated (IPIP or UDP).
func (i *Info) Tunneled() bool { return i.IPIP || i.UDP }

// Source is the outer source as an address and port (port 0 for IPIP and plain TCP).
func (i *Info) Source() netip.AddrPort { return netip.AddrPortFrom(i.OuterSrc, i.OuterSrcPort) }

// Decoder parses packets that start at an IPv4 header: plain IPv4/TCP,
// IPv4/IPIP/IPv4/TCP or, when UDPPort is set, IPv4/UDP(to UDPPort)/IPv4/TCP. It reuses its state between calls and does not allocate. Not safe
// for concurrent use: use one Decoder per receive goroutine. The zero value is ready to
// use (NewDecoder just sets it up ahead of the first packet).
type Decoder struct {
	// UDPPort is the UDP encapsulation port: UDP to it is decapsulated; 0 = no UDP.
	UDPPort uint16

	parser  *gopacket.DecodingLayerParser
	outer   ipv4Layer
	udp     udpLayer
	inner   ipv4Layer
	tcp     tcpLayer
	decoded []gopacket.LayerType
}

// Custom layer types for the parser chain: the inner IPv4 header needs a type of its own
// (a DecodingLayerParser maps each type to one decoder), and a packet nested once more is
// sent to a type nobody decodes.
var (
	layerTypeInnerIPv4 = gopacket.RegisterLayerType(0x6d70, gopacket.LayerTypeMetadata{Name: "mpathInnerIPv4"})
	layerTypeUDPEncap  = gopacket.RegisterLayerType(0x6d71, gopacket.LayerTypeMetadata{Name: "mpathUDPEncap"})
)

// NewDecoder returns a ready Decoder.
func NewDecoder() *Decoder {
	d := &Decoder{}
	d.setup()
	return d
}

func (d *Decoder) setup() {
	d.decoded = make([]gopacket.LayerType, 0, 4)
	d.outer = ipv4Layer{errs: &outerErrs, tcp: &d.tcp, typ: layers.LayerTypeIPv4, udpPort: &d.UDPPort, udp: &d.udp}
	d.inner = ipv4Layer{errs: &innerErrs, tcp: &d.tcp, typ: layerTypeInnerIPv4, inner: true}
	// A slice-backed container: three decoders, a linear scan beats a map.
	d.parser = gopacket.NewDecodingLayerParser(layers.LayerTypeIPv4)
	d.parser.SetDecodingLayerContainer(gopacket.DecodingLayerArray(nil).Put(&d.outer).Put(&d.udp).Put(&d.inner).Put(&d.tcp))
	// Every header is checked before gopacket sees it; a panic would be our bug and
	// should surface (fuzzing), not turn into an error.
	d.parser.IgnorePanic = true
}

// Decode parses pkt into seg and returns what it learnt about the IP headers. pkt must
// start at an IPv4 header; bytes after the IP total length (link-layer padding) are
// ignored. It verifies the outer and inner IPv4 header checksums and the TCP checksum,
// rejects fragments, tunnels nested twice and anything but TCP inside. seg.Payload is a
// slice of pkt (no copy): it is valid as long as pkt is. On error seg is in an undefined
// state and the error matches one of the Err* sentinels.
func (d *Decoder) Decode(pkt []byte, seg *tcpseg.Segment) (Info, error) {
	if d.parser == nil {
		d.setup()
	}
	d.tcp.done, d.udp.done = false, false
	if err := d.parser.DecodeLayers(pkt, &d.decoded); err != nil {
		return Info{}, err
	}
	if !d.tcp.done {
		return Info{}, errNoTCP // cannot happen: every layer either errs or leads to TCP
	}
	ip := &d.outer
	if len(d.decoded) >= 3 {
		ip = &d.inner
	}
	info := Info{
		IPIP:     ip == &d.inner && !d.udp.done,
		UDP:      d.udp.done,
		OuterSrc: netip.AddrFrom4([4]byte(d.outer.SrcIP)),
		OuterDst: netip.AddrFrom4([4]byte(d.outer.DstIP)),
		TTL:      d.outer.TTL,
		InnerTTL: ip.TTL,
		TOS:      ip.TOS,
		ID:       ip.Id,
		Inner:    ip.whole,
	}
	if d.udp.done {
		info.OuterSrcPort = d.udp.srcPort
	}
	t := &d.tcp
	seg.Src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip.SrcIP)), uint16(t.SrcPort))
	seg.Dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip.DstIP)), uint16(t.DstPort))
	seg.Seq, seg.Ack, seg.Window = t.Seq, t.Ack, t.Window
	seg.Flags = t.flags
	seg.Options = t.opts
	seg.Payload = t.Payload
	return info, nil
}

// ipv4Layer is gopacket's IPv4 layer behind our own checks: gopacket neither verifies
// the header checksum nor refuses fragments, and its errors are allocated fmt errors
// without a sentinel. After the checks gopacket cannot fail.
type ipv4Layer struct {
	layers.IPv4
	errs  *ipErrs
	tcp   *tcpLayer
	typ   gopacket.LayerType
	inner bool
	whole []byte // the header and payload, trimmed to the total length
	next  gopacket.LayerType
	// udpPort (outer header only) points at the Decoder's UDPPort: UDP to it is an
	// encapsulation.
	udpPort *uint16
	udp     *udpLayer
}

func (l *ipv4Layer) CanDecode() gopacket.LayerClass    { return l.typ }
func (l *ipv4Layer) NextLayerType() gopacket.LayerType { return l.next }

func (l *ipv4Layer) DecodeFromBytes(data []byte, df gopacket.DecodeFeedback) error {
	e := l.errs
	h, err := parseIPv4(data, e)
	if err != nil {
		return err
	}
	hl, total := h.HeaderLen, h.TotalLen
	if l.inner && total != len(data) {
		// The outer header's payload is exactly the inner packet; anything else is a
		// broken tunnel (or an attempt to smuggle bytes past the checksums).
		return e.length
	}
	if h.Fragment {
		return e.fragment
	}
	switch data[9] {
	case protoTCP:
		l.next = layers.LayerTypeTCP
	case protoIPIP:
		if l.inner {
			return errNested
		}
		l.next = layerTypeInnerIPv4
	case protoUDP:
		if l.inner || l.udpPort == nil || *l.udpPort == 0 || hl+udpHeaderLen > total ||
			binary.BigEndian.Uint16(data[hl+2:hl+4]) != *l.udpPort {
			return e.notTCP
		}
		l.next = layerTypeUDPEncap
	default:
		return e.notTCP
	}
	if err := l.IPv4.DecodeFromBytes(data, df); err != nil {
		return errInternal
	}
	l.whole = data[:total]
	l.tcp.pseudo = pseudoSum(data[12:16], data[16:20], protoTCP, total-hl)
	if l.next == layerTypeUDPEncap {
		l.udp.pseudo = pseudoSum(data[12:16], data[16:20], protoUDP, total-hl)
	}
	return nil
}

// udpLayer is the UDP header of the fou encapsulation (checked by hand, no gopacket
// layer: there is nothing in it we need but the ports). Its payload is the inner IPv4
// packet. The IPv4 layer in front has checked the destination port and that 8 bytes are
// there; the UDP length must cover exactly the rest of the IP payload, and a nonzero
// checksum must be right (fou sends 0; a NAT keeps 0 as 0).
type udpLayer struct {
	payload []byte
	srcPort uint16
	pseudo  uint64 // pseudo-header sum, set by the IPv4 layer in front
	done    bool
}

func (l *udpLayer) CanDecode() gopacket.LayerClass    { return layerTypeUDPEncap }
func (l *udpLayer) NextLayerType() gopacket.LayerType { return layerTypeInnerIPv4 }
func (l *udpLayer) LayerPayload() []byte              { return l.payload }

func (l *udpLayer) DecodeFromBytes(data []byte, _ gopacket.DecodeFeedback) error {
	if len(data) < udpHeaderLen {
		return errUDPTruncated
	}
	if int(binary.BigEndian.Uint16(data[4:6])) != len(data) {
		return errUDPLength
	}
	if binary.BigEndian.Uint16(data[6:8]) != 0 && fold(sum(data, l.pseudo)) != 0xffff {
		return errUDPChecksum
	}
	l.srcPort = binary.BigEndian.Uint16(data[0:2])
	l.payload = data[udpHeaderLen:]
	l.done = true
	return nil
}

// validIPOptions walks IPv4 options with gopacket's rules (EOL ends the list, NOP is one
// byte, every other option has a length > 2 that fits).
func validIPOptions(b []byte) bool {
	for len(b) > 0 {
		switch b[0] {
		case 0:
			return true
		case 1:
			b = b[1:]
		default:
			if len(b) < 2 || b[1] <= 2 || int(b[1]) > len(b) {
				return false
			}
			b = b[b[1]:]
		}
	}
	return true
}

// tcpLayer is gopacket's TCP layer behind our own checks (data offset, option lengths,
// checksum with the pseudo-header its IPv4 layer left in pseudo). The options are then
// converted from gopacket's []TCPOption into tcpseg.Options; gopacket keeps that slice
// between packets, so this does not allocate once it has grown to the option count.
type tcpLayer struct {
	layers.TCP
	pseudo uint64 // pseudo-header sum, set by the IPv4 layer in front
	flags  tcpseg.Flags
	opts   tcpseg.Options
	done   bool
}

func (l *tcpLayer) CanDecode() gopacket.LayerClass    { return layers.LayerTypeTCP }
func (l *tcpLayer) NextLayerType() gopacket.LayerType { return gopacket.LayerTypeZero }

func (l *tcpLayer) DecodeFromBytes(data []byte, df gopacket.DecodeFeedback) error {
	if len(data) < tcpHeaderLen {
		return errTCPTruncated
	}
	off := int(data[12]>>4) * 4
	if off < tcpHeaderLen || off > len(data) {
		return errTCPDataOffset
	}
	if !validTCPOptionLayout(data[tcpHeaderLen:off]) {
		return errTCPOptions
	}
	if fold(sum(data, l.pseudo)) != 0xffff {
		return errTCPChecksum
	}
	if err := l.TCP.DecodeFromBytes(data, df); err != nil {
		return errInternal
	}
	l.flags = tcpseg.Flags(data[13])
	if !l.convertOptions() {
		return errTCPOptions
	}
	l.done = true
	return nil
}

// validTCPOptionLayout checks that every option fits (what gopacket would otherwise
// reject with an allocated error).
func validTCPOptionLayout(b []byte) bool {
	for len(b) > 0 {
		switch b[0] {
		case 0:
			return true
		case 1:
			b = b[1:]
		default:
			if len(b) < 2 || b[1] < 2 || int(b[1]) > len(b) {
				return false
			}
			b = b[b[1]:]
		}
	}
	return true
}

// convertOptions fills l.opts from gopacket's option list. Known options with a wrong
// length make the segment invalid; unknown options are skipped (RFC 9293 3.1).
func (l *tcpLayer) convertOptions() bool {
	l.opts = tcpseg.Options{}
	for i := range l.TCP.Options {
		o := &l.TCP.Options[i]
		d := o.OptionData
		switch o.OptionType {
		case layers.TCPOptionKindMSS:
			if len(d) != 2 {
				return false
			}
			l.opts.MSS = binary.BigEndian.Uint16(d)
		case layers.TCPOptionKindWindowScale:
			if len(d) != 1 {
				return false
			}
			l.opts.WScale, l.opts.HasWScale = d[0], true
		case layers.TCPOptionKindSACKPermitted:
			if len(d) != 0 {
				return false
			}
			l.opts.SACKPermitted = true
		case layers.TCPOptionKindSACK:
			n := len(d) / 8
			if len(d)%8 != 0 || n == 0 || n > tcpseg.MaxSACKBlocks {
				return false
			}
			for j := 0; j < n; j++ {
				l.opts.SACK[j] = tcpseg.SACKBlock{
					Left:  binary.BigEndian.Uint32(d[8*j:]),
					Right: binary.BigEndian.Uint32(d[8*j+4:]),
				}
			}
			l.opts.NSACK = uint8(n)
		case layers.TCPOptionKindTimestamps:
			if len(d) != 8 {
				return false
			}
			l.opts.HasTimestamp = true
			l.opts.TSVal = binary.BigEndian.Uint32(d[0:4])
			l.opts.TSEcr = binary.BigEndian.Uint32(d[4:8])
		}
	}
	return true
}
