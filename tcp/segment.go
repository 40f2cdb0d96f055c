package tcp

import "mpath/tcpseg"

// The segment types live in package tcpseg (so that the packet layer does not import the
// engine); these are the same types under the names the engine has always used.
type (
	Flags     = tcpseg.Flags
	SACKBlock = tcpseg.SACKBlock
	Options   = tcpseg.Options
	Segment   = tcpseg.Segment
)

// TCP header flags and limits (see package tcpseg).
const (
	FlagFIN       = tcpseg.FlagFIN
	FlagSYN       = tcpseg.FlagSYN
	FlagRST       = tcpseg.FlagRST
	FlagPSH       = tcpseg.FlagPSH
	FlagACK       = tcpseg.FlagACK
	FlagURG       = tcpseg.FlagURG
	FlagECE       = tcpseg.FlagECE
	FlagCWR       = tcpseg.FlagCWR
	MaxSACKBlocks = tcpseg.MaxSACKBlocks
)

// Link carries segments between a Stack and the network: raw.Link over IPIP and raw
// sockets in production, an in-memory simulated network in tests.
//
// Inbound, the link calls Stack.Input with batches of decoded segments.
type Link interface {
	// Send transmits segs on the given path (an index into the stack's path list).
	// The link has serialised or copied every segment by the time Send returns and
	// keeps no reference to segs or their payloads. An error means some or all of the
	// batch was not sent; the engine treats that as loss on the path.
	// Send may be called from several goroutines at once.
	Send(path int, segs []Segment) error
}
