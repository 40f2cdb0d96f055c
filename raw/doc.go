// Package raw owns mpath's packet I/O: everything between a tcpseg.Segment and the wire.
//
//   - Codec: Encoder builds IPv4/TCP, IPv4/IPIP/IPv4/TCP and IPv4/UDP/IPv4/TCP (Linux fou)
//     packets with gopacket into
//     reused buffers; Decoder parses them back into a tcpseg.Segment with a
//     gopacket.DecodingLayerParser, verifying every checksum. Neither allocates per packet.
//   - Sender: a raw IPv4 socket (IP_HDRINCL) that sends whole packets in sendmmsg batches.
//   - Receiver: an AF_PACKET TPACKET_V3 ring (inbound only, kernel BPF filter, block
//     timeout of at most 1 ms) that hands packets over in batches.
//   - Guard: an nftables table owned by the process that keeps the host kernel away from
//     engine flows (no RSTs, no ICMP for IPIP or UDP encapsulation it cannot take).
//   - ParseIPv4 and Checksum: the one IPv4 header parser and Internet checksum, shared
//     with the relay.
//   - Learning (learn.go): per-client return endpoints for an exit with no fixed paths.
//   - Link: the engine's tcp.Link, built from the four above.
//
// It speaks in tcpseg.Segment, not in engine types: raw does not import the engine
// (tcp, spray, reorder), so the relay, which needs only the packet layer, builds
// without them.
//
// It does not own TCP state (package tcp), path choice (spray) or the relay loop (relay).
// Everything here is IPv4 only.
package raw
