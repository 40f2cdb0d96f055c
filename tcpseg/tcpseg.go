// Package tcpseg is the TCP segment as it crosses between the engine (package tcp) and
// packet I/O (package raw, the simulated network): header fields, options and a
// borrowed payload, with no behaviour beyond a few accessors. It exists so that the
// packet layer need not import the engine; package tcp re-exports every name here.
package tcpseg

import (
	"fmt"
	"net/netip"
)

// Flags are the TCP header flag bits.
type Flags uint8

// TCP header flags, in wire bit order.
const (
	FlagFIN Flags = 1 << iota
	FlagSYN
	FlagRST
	FlagPSH
	FlagACK
	FlagURG
	FlagECE
	FlagCWR
)

// String renders flags the way tcpdump does ("S.", "F.", "R", "P.").
func (f Flags) String() string {
	var b []byte
	for _, x := range []struct {
		f Flags
		c byte
	}{{FlagSYN, 'S'}, {FlagFIN, 'F'}, {FlagRST, 'R'}, {FlagPSH, 'P'}, {FlagURG, 'U'}, {FlagECE, 'E'}, {FlagCWR, 'W'}, {FlagACK, '.'}} {
		if f&x.f != 0 {
			b = append(b, x.c)
		}
	}
	if len(b) == 0 {
		return "none"
	}
	return string(b)
}

// SACKBlock is one selective-acknowledgement block: the bytes [Left, Right) are held
// by the receiver (RFC 2018).
type SACKBlock struct {
	Left, Right uint32
}

// MaxSACKBlocks is the most SACK blocks a segment carries. With timestamps only three
// fit in the 40 bytes of option space; encoders send at most what fits.
const MaxSACKBlocks = 4

// Options are the TCP options the engine speaks. The zero value means "no options".
type Options struct {
	MSS           uint16 // maximum segment size; 0 when absent (SYN only)
	WScale        uint8  // window scale shift, valid when HasWScale (SYN only)
	HasWScale     bool
	SACKPermitted bool // SYN only
	HasTimestamp  bool // TSVal/TSEcr valid (RFC 7323)
	TSVal, TSEcr  uint32
	NSACK         uint8 // number of valid entries in SACK
	SACK          [MaxSACKBlocks]SACKBlock
}

// SACKBlocks returns the valid SACK blocks (a slice of o.SACK).
func (o *Options) SACKBlocks() []SACKBlock { return o.SACK[:o.NSACK] }

// Segment is one TCP segment as the engine sees it: the inner IPv4 addresses and the
// TCP header, options and payload. It is the unit that crosses the boundary between the
// engine and packet I/O (raw.Link, the simulated network).
//
// Payload is borrowed: whoever hands a Segment over keeps ownership of the bytes, and
// the receiver copies what it wants to keep before returning (see tcp.Link and
// tcp.Stack.Input). The zero value is an empty segment with no flags.
type Segment struct {
	Src, Dst netip.AddrPort // inner (end-to-end) addresses and ports; IPv4
	Seq, Ack uint32
	Flags    Flags
	Window   uint16 // raw header field, not scaled
	Options  Options
	Payload  []byte

	// Path is, on input, the index of the path the segment arrived by (the link knows it
	// from the interface or the relay it came from), or -1 when unknown. The engine answers
	// on the same path so each path's RTT covers one relay both ways. Ignored on output:
	// Link.Send's path argument decides.
	Path int
}

// Len is the sequence space the segment occupies: payload plus one for SYN and FIN.
func (s *Segment) Len() uint32 {
	n := uint32(len(s.Payload))
	if s.Flags&FlagSYN != 0 {
		n++
	}
	if s.Flags&FlagFIN != 0 {
		n++
	}
	return n
}

func (s *Segment) String() string {
	return fmt.Sprintf("%v > %v [%v] seq %d ack %d win %d len %d", s.Src, s.Dst, s.Flags, s.Seq, s.Ack, s.Window, len(s.Payload))
}
