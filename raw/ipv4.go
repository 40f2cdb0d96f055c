package raw

import "encoding/binary"

// IPv4Header is what ParseIPv4 read from an IPv4 header. Addresses are in host byte
// order.
type IPv4Header struct {
	HeaderLen, TotalLen int
	TTL, Proto          uint8
	Fragment            bool // MF set or a fragment offset: not a whole packet
	ID                  uint16
	Src, Dst            uint32
}

// ParseIPv4 checks the IPv4 header at the start of b the way the Decoder does (version,
// header length, total length within b, header checksum, option layout) and reads it.
// Bytes after the total length (link padding) are allowed. The error matches one of
// ErrTruncated, ErrNotIPv4, ErrBadHeaderLen, ErrBadLength, ErrChecksum, ErrBadOptions.
// It does not allocate. The relay and the Decoder share it: one IPv4 parser.
func ParseIPv4(b []byte) (IPv4Header, error) { return parseIPv4(b, &outerErrs) }

func parseIPv4(b []byte, e *ipErrs) (IPv4Header, error) {
	var h IPv4Header
	if len(b) < ipv4HeaderLen {
		return h, e.truncated
	}
	if b[0]>>4 != 4 {
		return h, e.notIPv4
	}
	h.HeaderLen = int(b[0]&0x0f) * 4
	if h.HeaderLen < ipv4HeaderLen {
		return h, e.headerLen
	}
	if len(b) < h.HeaderLen {
		return h, e.truncated
	}
	h.TotalLen = int(binary.BigEndian.Uint16(b[2:4]))
	if h.TotalLen < h.HeaderLen {
		return h, e.length
	}
	if h.TotalLen > len(b) {
		return h, e.truncated
	}
	if checksum(b[:h.HeaderLen], 0) != 0 {
		return h, e.checksum
	}
	if !validIPOptions(b[ipv4HeaderLen:h.HeaderLen]) {
		return h, e.options
	}
	h.Fragment = binary.BigEndian.Uint16(b[6:8])&0x3fff != 0
	h.ID = binary.BigEndian.Uint16(b[4:6])
	h.TTL, h.Proto = b[8], b[9]
	h.Src = binary.BigEndian.Uint32(b[12:16])
	h.Dst = binary.BigEndian.Uint32(b[16:20])
	return h, nil
}

// Checksum is the Internet checksum (RFC 1071) of b: the value for a checksum field
// that is zero in b, or 0 when b already carries a correct one.
func Checksum(b []byte) uint16 { return checksum(b, 0) }

// UDPChecksumOK checks the UDP checksum of udp (header and payload) under the IPv4
// header ip (for the pseudo-header addresses). A zero checksum means none: fou sends
// none by default, and a NAT keeps it zero.
func UDPChecksumOK(ip, udp []byte) bool {
	if len(udp) < udpHeaderLen || binary.BigEndian.Uint16(udp[6:8]) == 0 {
		return true
	}
	return fold(sum(udp, pseudoSum(ip[12:16], ip[16:20], protoUDP, len(udp)))) == 0xffff
}
