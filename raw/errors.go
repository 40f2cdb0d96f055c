package raw

import "errors"

// Sentinel errors of the codec. Decode returns errors that match exactly one of these
// with errors.Is; the error text says which header was at fault (outer, inner, TCP).
var (
	ErrTruncated     = errors.New("truncated packet")                        // a header or the IP total length runs past the buffer
	ErrNotIPv4       = errors.New("not IPv4")                                // IP version is not 4 (or an address is not IPv4 on encode)
	ErrBadHeaderLen  = errors.New("bad IPv4 header length")                  // IHL < 5
	ErrBadLength     = errors.New("bad IPv4 total length")                   // total length < header length, or inner length != outer payload
	ErrFragment      = errors.New("IPv4 fragment")                           // MF set or fragment offset != 0: the engine never fragments
	ErrChecksum      = errors.New("bad checksum")                            // outer IP, inner IP or TCP checksum
	ErrNestedTunnel  = errors.New("IPIP inside IPIP")                        // inner header carries protocol 4 again
	ErrNotTCP        = errors.New("not TCP")                                 // (inner) protocol is neither TCP nor, for the outer header, IPIP
	ErrBadDataOffset = errors.New("bad TCP data offset")                     // data offset < 5 or past the segment
	ErrBadOptions    = errors.New("bad options")                             // TCP or IP options overrun, or a known TCP option has the wrong length
	ErrTooBig        = errors.New("packet larger than the IPv4 maximum")     // encode: more than 65535 bytes
	errInternal      = errors.New("raw: gopacket rejected a checked header") // should never happen: our checks are stricter
)

// codecError is a preallocated error with its own text that unwraps to a sentinel, so
// the decoder can say where a packet was bad without allocating.
type codecError struct {
	msg  string
	kind error
}

func (e *codecError) Error() string { return e.msg }
func (e *codecError) Unwrap() error { return e.kind }

func cerr(kind error, where string) error {
	return &codecError{msg: "raw: decode: " + where + ": " + kind.Error(), kind: kind}
}

// ipErrs are the errors of one IPv4 header position (outer or inner).
type ipErrs struct {
	truncated, notIPv4, headerLen, length, fragment, checksum, options, notTCP error
}

func newIPErrs(where string) ipErrs {
	return ipErrs{
		truncated: cerr(ErrTruncated, where),
		notIPv4:   cerr(ErrNotIPv4, where),
		headerLen: cerr(ErrBadHeaderLen, where),
		length:    cerr(ErrBadLength, where),
		fragment:  cerr(ErrFragment, where),
		checksum:  cerr(ErrChecksum, where+" header"),
		options:   cerr(ErrBadOptions, where+" IP options"),
		notTCP:    cerr(ErrNotTCP, where),
	}
}

var (
	outerErrs = newIPErrs("outer IPv4")
	innerErrs = newIPErrs("inner IPv4")

	errNested        = cerr(ErrNestedTunnel, "inner IPv4")
	errTCPTruncated  = cerr(ErrTruncated, "TCP header")
	errTCPDataOffset = cerr(ErrBadDataOffset, "TCP header")
	errTCPOptions    = cerr(ErrBadOptions, "TCP options")
	errTCPChecksum   = cerr(ErrChecksum, "TCP")
	errNoTCP         = cerr(ErrNotTCP, "packet")
	errUDPTruncated  = cerr(ErrTruncated, "UDP header")
	errUDPLength     = cerr(ErrBadLength, "UDP length")
	errUDPChecksum   = cerr(ErrChecksum, "UDP")
)
