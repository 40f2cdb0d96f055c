package relay

// Return addressing in reencap mode. A client behind a NAT reaches the relay from the
// NAT's public address (and port, with UDP); the packets the exit sends back to the
// client's inner address must go there, not to the inner address, which is private:
//
//	client X --[NAT: X -> N:n]--> relay: learn X -> N:n (allowlisted tunnel packets only)
//	exit --inner dst X--> relay: Return(X) = N:n --> reencap to N:n --> NAT --> X
//
// The table is owned by the relay's receive goroutine (no locks), bounded in count
// (MaxReturns; the least recently refreshed entry makes room) and age (ReturnMaxAge).
// Only packets that passed every check of Classify (allowed outer source, allowed inner
// addresses) teach it, so a spoofed packet from outside --allow moves nothing.

import (
	"encoding/binary"
	"net/netip"
	"time"

	"mpath/raw"
)

// Bounds of the return table.
const (
	MaxReturns   = 4096
	ReturnMaxAge = 10 * time.Minute
)

type returnEntry struct {
	to   netip.AddrPort
	seen time.Time
}

// returns maps an inner address to where its packets last came from. Not safe for
// concurrent use: the receive goroutine owns it.
type returns struct {
	m     map[netip.Addr]returnEntry
	now   time.Time // set by the owner before each packet
	moves uint64    // entries that changed address (NAT rebinding, a new uplink address)
}

func newReturns() *returns { return &returns{m: map[netip.Addr]returnEntry{}} }

// lookup implements Env.Return.
func (r *returns) lookup(dst netip.Addr) (netip.AddrPort, bool) {
	e, ok := r.m[dst]
	if !ok || r.now.Sub(e.seen) > ReturnMaxAge {
		return netip.AddrPort{}, false
	}
	return e.to, true
}

// learn records that inner's packets came from `from`.
func (r *returns) learn(inner netip.Addr, from netip.AddrPort) {
	e, ok := r.m[inner]
	if ok {
		if e.to != from {
			r.moves++
		}
		r.m[inner] = returnEntry{to: from, seen: r.now}
		return
	}
	if len(r.m) >= MaxReturns {
		var oldest netip.Addr
		var oldestSeen time.Time
		for a, e := range r.m {
			if r.now.Sub(e.seen) > ReturnMaxAge {
				delete(r.m, a)
				continue
			}
			if !oldest.IsValid() || e.seen.Before(oldestSeen) {
				oldest, oldestSeen = a, e.seen
			}
		}
		if len(r.m) >= MaxReturns {
			delete(r.m, oldest)
		}
	}
	r.m[inner] = returnEntry{to: from, seen: r.now}
}

// udpChecksumOK checks the UDP checksum of u (header and payload) with the
// pseudo-header addresses in addrs (the IPv4 source and destination, 8 bytes): raw's
// checksum, shared with the codec.
func udpChecksumOK(addrs, u []byte) bool {
	var ip [20]byte
	copy(ip[12:20], addrs)
	return raw.UDPChecksumOK(ip[:], u)
}

// writeOuterUDP writes 28 bytes of outer IPv4 + UDP at the start of pkt (whose length is
// the whole packet's) from src:port to to, UDP checksum 0 (as fou sends). A zero src is
// left 0 for the kernel.
func writeOuterUDP(pkt []byte, src netip.Addr, to netip.AddrPort, port uint16, id uint16) {
	writeOuter(pkt, src, to.Addr(), id)
	h := pkt[:ipv4HeaderLen]
	h[9] = protoUDP
	h[10], h[11] = 0, 0
	binary.BigEndian.PutUint16(h[10:12], checksum(h))
	u := pkt[ipv4HeaderLen : ipv4HeaderLen+udpHeaderLen]
	binary.BigEndian.PutUint16(u[0:2], port)
	binary.BigEndian.PutUint16(u[2:4], to.Port())
	binary.BigEndian.PutUint16(u[4:6], uint16(len(pkt)-ipv4HeaderLen))
	u[6], u[7] = 0, 0
}
