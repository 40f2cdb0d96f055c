package raw

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"mpath/tcp"
)

var (
	testOuterSrc = netip.MustParseAddr("10.77.1.1")
	testOuterDst = netip.MustParseAddr("10.77.1.2")
	testSrc      = netip.MustParseAddrPort("10.77.255.1:40001")
	testDst      = netip.MustParseAddrPort("10.77.255.2:8080")
)

func testPayload(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7) + seed
	}
	return p
}

// testSegments covers every option combination the engine sends and the edge cases of
// the encoder (odd payloads, empty payloads, SACK blocks that do not fit).
func testSegments() map[string]tcp.Segment {
	sack := [tcp.MaxSACKBlocks]tcp.SACKBlock{{Left: 1000, Right: 2000}, {Left: 3000, Right: 4000}, {Left: 5000, Right: 6000}, {Left: 7000, Right: 8000}}
	return map[string]tcp.Segment{
		"syn-all-options": {Src: testSrc, Dst: testDst, Seq: 0xfffffff0, Flags: tcp.FlagSYN, Window: 65535,
			Options: tcp.Options{MSS: 1400, WScale: 7, HasWScale: true, SACKPermitted: true, HasTimestamp: true, TSVal: 1, TSEcr: 0}},
		"synack-no-ts": {Src: testDst, Dst: testSrc, Seq: 7, Ack: 0xfffffff1, Flags: tcp.FlagSYN | tcp.FlagACK, Window: 1024,
			Options: tcp.Options{MSS: 1440, WScale: 14, HasWScale: true, SACKPermitted: true}},
		"syn-ts-only":  {Src: testSrc, Dst: testDst, Seq: 1, Flags: tcp.FlagSYN, Options: tcp.Options{HasTimestamp: true, TSVal: 99, TSEcr: 98}},
		"syn-mss-only": {Src: testSrc, Dst: testDst, Seq: 1, Flags: tcp.FlagSYN, Options: tcp.Options{MSS: 536}},
		"data-1440": {Src: testSrc, Dst: testDst, Seq: 12345, Ack: 678, Flags: tcp.FlagACK | tcp.FlagPSH, Window: 501,
			Options: tcp.Options{HasTimestamp: true, TSVal: 0xdeadbeef, TSEcr: 0xcafebabe}, Payload: testPayload(1440, 1)},
		"data-odd":    {Src: testSrc, Dst: testDst, Seq: 1, Ack: 2, Flags: tcp.FlagACK, Window: 3, Payload: testPayload(1023, 2)},
		"data-1-byte": {Src: testSrc, Dst: testDst, Seq: 1, Ack: 2, Flags: tcp.FlagACK, Window: 3, Payload: []byte{0xff}},
		"ack-ts-3sack": {Src: testDst, Dst: testSrc, Seq: 5, Ack: 900, Flags: tcp.FlagACK, Window: 65535,
			Options: tcp.Options{HasTimestamp: true, TSVal: 3, TSEcr: 4, NSACK: 3, SACK: [4]tcp.SACKBlock{sack[0], sack[1], sack[2]}}},
		"ack-4sack": {Src: testDst, Dst: testSrc, Seq: 5, Ack: 900, Flags: tcp.FlagACK, Window: 65535,
			Options: tcp.Options{NSACK: 4, SACK: sack}},
		"ack-1sack": {Src: testDst, Dst: testSrc, Seq: 5, Ack: 900, Flags: tcp.FlagACK, Window: 65535,
			Options: tcp.Options{NSACK: 1, SACK: [4]tcp.SACKBlock{{Left: 0xfffffff0, Right: 0x10}}}},
		"rst":        {Src: testSrc, Dst: testDst, Seq: 42, Flags: tcp.FlagRST},
		"fin-ack":    {Src: testSrc, Dst: testDst, Seq: 42, Ack: 43, Flags: tcp.FlagFIN | tcp.FlagACK, Window: 9},
		"all-flags":  {Src: testSrc, Dst: testDst, Seq: 42, Ack: 43, Flags: 0xff, Window: 9, Payload: []byte("x")},
		"zero-ports": {Src: netip.MustParseAddrPort("0.0.0.0:0"), Dst: netip.MustParseAddrPort("255.255.255.255:65535")},
	}
}

// expectDecoded is what decoding seg's encoding must give back: the same segment, with
// SACK blocks beyond what fits in 40 bytes of options left out (the encoder's contract).
func expectDecoded(seg tcp.Segment) tcp.Segment {
	used := 0
	if seg.Options.MSS != 0 {
		used += 4
	}
	if seg.Options.SACKPermitted || seg.Options.HasTimestamp {
		used += 4
	}
	if seg.Options.HasTimestamp {
		used += 8
	}
	if seg.Options.HasWScale {
		used += 4
	}
	if k := (40 - used - 4) / 8; int(seg.Options.NSACK) > k {
		seg.Options.NSACK = uint8(k)
	}
	for i := int(seg.Options.NSACK); i < tcp.MaxSACKBlocks; i++ {
		seg.Options.SACK[i] = tcp.SACKBlock{}
	}
	if len(seg.Payload) == 0 {
		seg.Payload = nil
	}
	return seg
}

func segEqual(t *testing.T, got, want tcp.Segment) {
	t.Helper()
	if sha256.Sum256(got.Payload) != sha256.Sum256(want.Payload) {
		t.Errorf("payload sha256 differs: got %d bytes, want %d", len(got.Payload), len(want.Payload))
	}
	got.Payload, want.Payload = nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded segment differs:\n got  %+v\n want %+v", got, want)
	}
}

// naiveChecksum is RFC 1071 written the slow, obvious way, independent of checksum.go.
func naiveChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// checkWire verifies a packet that starts at an IPv4 header with code independent of the
// decoder: header checksums, lengths, DF, and (for the last IPv4 header) the TCP checksum.
func checkWire(t *testing.T, pkt []byte, wantIPIP, wantDF bool) {
	t.Helper()
	ip := pkt
	for depth := 0; ; depth++ {
		hl := int(ip[0]&0xf) * 4
		if naiveChecksum(ip[:hl]) != 0 {
			t.Fatalf("IPv4 header %d: checksum does not verify", depth)
		}
		if tot := int(binary.BigEndian.Uint16(ip[2:4])); tot != len(ip) {
			t.Fatalf("IPv4 header %d: total length %d, packet %d", depth, tot, len(ip))
		}
		if wantDF && ip[6]&0x40 == 0 {
			t.Errorf("IPv4 header %d: DF not set", depth)
		}
		if ip[9] == 4 {
			if !wantIPIP || depth > 0 {
				t.Fatalf("unexpected IPIP at depth %d", depth)
			}
			ip = ip[hl:]
			continue
		}
		if wantIPIP && depth == 0 {
			t.Fatalf("want IPIP, outer protocol %d", ip[9])
		}
		seg := ip[hl:]
		ph := make([]byte, 0, 12+len(seg))
		ph = append(ph, ip[12:20]...)
		ph = append(ph, 0, 6, byte(len(seg)>>8), byte(len(seg)))
		ph = append(ph, seg...)
		if naiveChecksum(ph) != 0 {
			t.Fatalf("TCP checksum does not verify")
		}
		return
	}
}

func TestRoundTrip(t *testing.T) {
	enc := NewEncoder()
	var dec Decoder // the zero value must work too
	for name, seg := range testSegments() {
		t.Run(name, func(t *testing.T) {
			pkt, err := enc.IPIP(testOuterSrc, testOuterDst, &seg)
			if err != nil {
				t.Fatalf("IPIP: %v", err)
			}
			checkWire(t, pkt, true, true)
			var got tcp.Segment
			info, err := dec.Decode(pkt, &got)
			if err != nil {
				t.Fatalf("Decode IPIP: %v", err)
			}
			segEqual(t, got, expectDecoded(seg))
			if !info.IPIP || info.OuterSrc != testOuterSrc || info.OuterDst != testOuterDst || info.TTL != 64 || info.InnerTTL != 64 {
				t.Errorf("info %+v", info)
			}
			if !bytes.Equal(info.Inner, pkt[20:]) {
				t.Errorf("Info.Inner is not the encapsulated packet")
			}
			if len(got.Payload) > 0 && &got.Payload[0] != &pkt[len(pkt)-len(got.Payload)] {
				t.Errorf("payload was copied, want a slice of the packet")
			}

			pkt, err = enc.TCP(&seg)
			if err != nil {
				t.Fatalf("TCP: %v", err)
			}
			checkWire(t, pkt, false, true)
			padded := append(append([]byte(nil), pkt...), make([]byte, 6)...) // Ethernet minimum-frame padding
			info, err = dec.Decode(padded, &got)
			if err != nil {
				t.Fatalf("Decode TCP: %v", err)
			}
			segEqual(t, got, expectDecoded(seg))
			if info.IPIP || info.OuterSrc != seg.Src.Addr() || info.OuterDst != seg.Dst.Addr() || len(info.Inner) != len(pkt) {
				t.Errorf("info %+v", info)
			}
		})
	}
}

// TestAgainstGopacket parses the encoder's output with gopacket's generic (allocating)
// decoder, a second opinion on the wire format.
func TestAgainstGopacket(t *testing.T) {
	enc := NewEncoder()
	seg := testSegments()["syn-all-options"]
	seg.Payload = []byte("hello")
	pkt, err := enc.IPIP(testOuterSrc, testOuterDst, &seg)
	if err != nil {
		t.Fatal(err)
	}
	p := gopacket.NewPacket(pkt, layers.LayerTypeIPv4, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("gopacket: %v", el.Error())
	}
	ls := p.Layers()
	if len(ls) < 3 || ls[0].LayerType() != layers.LayerTypeIPv4 || ls[1].LayerType() != layers.LayerTypeIPv4 || ls[2].LayerType() != layers.LayerTypeTCP {
		t.Fatalf("layers %v", ls)
	}
	tl := ls[2].(*layers.TCP)
	if !tl.SYN || tl.ACK || uint32(tl.Seq) != seg.Seq || uint16(tl.DstPort) != seg.Dst.Port() || string(tl.Payload) != "hello" {
		t.Errorf("gopacket sees %+v", tl)
	}
	kinds := []layers.TCPOptionKind{}
	for _, o := range tl.Options {
		kinds = append(kinds, o.OptionType)
	}
	want := []layers.TCPOptionKind{2, 4, 8, 1, 3} // Linux's SYN layout: MSS, SACK_PERM, TS, NOP, WS
	if !reflect.DeepEqual(kinds, want) {
		t.Errorf("option layout %v, want %v", kinds, want)
	}
}

func TestEncodeErrors(t *testing.T) {
	enc := NewEncoder()
	seg := testSegments()["data-odd"]
	v6 := seg
	v6.Dst = netip.MustParseAddrPort("[2001:db8::1]:80")
	if _, err := enc.TCP(&v6); !errors.Is(err, ErrNotIPv4) {
		t.Errorf("IPv6 inner: %v", err)
	}
	if _, err := enc.IPIP(netip.MustParseAddr("::1"), testOuterDst, &seg); !errors.Is(err, ErrNotIPv4) {
		t.Errorf("IPv6 outer: %v", err)
	}
	if _, err := enc.IPIP(netip.Addr{}, testOuterDst, &seg); !errors.Is(err, ErrNotIPv4) {
		t.Errorf("zero outer: %v", err)
	}
	big := seg
	big.Payload = make([]byte, 65535-40-20+1)
	if _, err := enc.TCP(&big); err != nil {
		t.Errorf("largest plain packet: %v", err)
	}
	if _, err := enc.IPIP(testOuterSrc, testOuterDst, &big); !errors.Is(err, ErrTooBig) {
		t.Errorf("oversized IPIP: %v", err)
	}
	// The encoder still works after errors.
	if _, err := enc.IPIP(testOuterSrc, testOuterDst, &seg); err != nil {
		t.Errorf("after errors: %v", err)
	}
}

// fixIP recomputes the IPv4 header checksum of the header at the start of b.
func fixIP(b []byte) {
	hl := int(b[0]&0xf) * 4
	if hl < 20 || hl > len(b) {
		hl = 20
	}
	b[10], b[11] = 0, 0
	c := naiveChecksum(b[:hl])
	b[10], b[11] = byte(c>>8), byte(c)
}

// fixTCP recomputes the TCP checksum of the segment behind the IPv4 header at ip.
func fixTCP(ip []byte) {
	hl := int(ip[0]&0xf) * 4
	seg := ip[hl:]
	seg[16], seg[17] = 0, 0
	ph := append(append(append([]byte{}, ip[12:20]...), 0, 6, byte(len(seg)>>8), byte(len(seg))), seg...)
	c := naiveChecksum(ph)
	seg[16], seg[17] = byte(c>>8), byte(c)
}

type malformed struct {
	name string
	ipip bool                  // start from the IPIP encoding (else plain)
	mut  func(p []byte) []byte // returns the damaged packet
	want error
}

// setTCPOptions rewrites the option area of the TCP header behind the IPv4 header at ip
// (which must have room: the base segment carries 12 bytes of options).
func setTCPOptions(ip []byte, opts []byte) {
	seg := ip[int(ip[0]&0xf)*4:]
	copy(seg[20:32], opts)
	fixTCP(ip)
}

func malformedCases() []malformed {
	in := func(p []byte) []byte { return p[20:] } // the inner packet of an IPIP encoding
	return []malformed{
		{"empty", false, func(p []byte) []byte { return nil }, ErrTruncated},
		{"short-outer", true, func(p []byte) []byte { return p[:19] }, ErrTruncated},
		{"ipv6", false, func(p []byte) []byte { p[0] = 0x60; return p }, ErrNotIPv4},
		{"version-0", true, func(p []byte) []byte { p[0] = 0x05; return p }, ErrNotIPv4},
		{"ihl-4", true, func(p []byte) []byte { p[0] = 0x44; fixIP(p); return p }, ErrBadHeaderLen},
		{"ihl-0", false, func(p []byte) []byte { p[0] = 0x40; return p }, ErrBadHeaderLen},
		{"ihl-past-buffer", false, func(p []byte) []byte { p[0] = 0x4f; return p[:40] }, ErrTruncated},
		{"total-lt-header", true, func(p []byte) []byte { binary.BigEndian.PutUint16(p[2:], 19); fixIP(p); return p }, ErrBadLength},
		{"total-zero", false, func(p []byte) []byte { binary.BigEndian.PutUint16(p[2:], 0); fixIP(p); return p }, ErrBadLength},
		{"total-gt-buffer", true, func(p []byte) []byte { return p[:len(p)-1] }, ErrTruncated},
		{"total-gt-buffer-plain", false, func(p []byte) []byte { return p[:len(p)-100] }, ErrTruncated},
		{"more-fragments", true, func(p []byte) []byte { p[6] |= 0x20; fixIP(p); return p }, ErrFragment},
		{"frag-offset", false, func(p []byte) []byte { p[7] = 1; fixIP(p); return p }, ErrFragment},
		{"inner-fragment", true, func(p []byte) []byte { in(p)[6] |= 0x20; fixIP(in(p)); return p }, ErrFragment},
		{"outer-checksum", true, func(p []byte) []byte { p[10] ^= 1; return p }, ErrChecksum},
		{"outer-ttl-changed", true, func(p []byte) []byte { p[8]--; return p }, ErrChecksum},
		{"inner-checksum", true, func(p []byte) []byte { in(p)[11] ^= 0x80; return p }, ErrChecksum},
		{"tcp-checksum", true, func(p []byte) []byte { p[len(p)-1] ^= 0x10; return p }, ErrChecksum},
		{"tcp-checksum-plain", false, func(p []byte) []byte { p[24] ^= 1; return p }, ErrChecksum},
		{"tcp-addr-spoofed", false, func(p []byte) []byte { p[15]++; fixIP(p); return p }, ErrChecksum},
		{"outer-udp", true, func(p []byte) []byte { p[9] = 17; fixIP(p); return p }, ErrNotTCP},
		{"plain-icmp", false, func(p []byte) []byte { p[9] = 1; fixIP(p); return p }, ErrNotTCP},
		{"inner-udp", true, func(p []byte) []byte { in(p)[9] = 17; fixIP(in(p)); return p }, ErrNotTCP},
		{"nested", true, func(p []byte) []byte { in(p)[9] = 4; fixIP(in(p)); return p }, ErrNestedTunnel},
		{"inner-ipv6", true, func(p []byte) []byte { in(p)[0] = 0x65; return p }, ErrNotIPv4},
		{"inner-ihl", true, func(p []byte) []byte { in(p)[0] = 0x43; fixIP(in(p)); return p }, ErrBadHeaderLen},
		{"inner-short", true, func(p []byte) []byte {
			binary.BigEndian.PutUint16(p[2:], 30)
			fixIP(p)
			return p[:30]
		}, ErrTruncated},
		{"inner-longer-than-outer", true, func(p []byte) []byte {
			binary.BigEndian.PutUint16(in(p)[2:], uint16(len(p)-20+1))
			fixIP(in(p))
			return p
		}, ErrTruncated},
		{"inner-shorter-than-outer", true, func(p []byte) []byte {
			binary.BigEndian.PutUint16(in(p)[2:], uint16(len(p)-20-1))
			fixIP(in(p))
			return p
		}, ErrBadLength},
		{"tcp-short", false, func(p []byte) []byte {
			binary.BigEndian.PutUint16(p[2:], 39)
			fixIP(p)
			return p[:39]
		}, ErrTruncated},
		{"data-offset-4", true, func(p []byte) []byte { in(p)[20+12] = 0x40; fixTCP(in(p)); return p }, ErrBadDataOffset},
		{"data-offset-past-end", false, func(p []byte) []byte {
			binary.BigEndian.PutUint16(p[2:], 20+40)
			fixIP(p)
			p[20+12] = 0xf0
			p = p[:60]
			fixTCP(p)
			return p
		}, ErrBadDataOffset},
		{"option-overrun", true, func(p []byte) []byte {
			setTCPOptions(in(p), []byte{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 8, 10})
			return p
		}, ErrBadOptions},
		{"option-len-1", false, func(p []byte) []byte {
			setTCPOptions(p, []byte{30, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1})
			return p
		}, ErrBadOptions},
		{"option-kind-at-end", false, func(p []byte) []byte {
			setTCPOptions(p, []byte{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2})
			return p
		}, ErrBadOptions},
		{"mss-len-3", true, func(p []byte) []byte {
			setTCPOptions(in(p), []byte{2, 3, 5, 1, 1, 1, 1, 1, 1, 1, 1, 0})
			return p
		}, ErrBadOptions},
		{"wscale-len-4", false, func(p []byte) []byte {
			setTCPOptions(p, []byte{3, 4, 7, 7, 1, 1, 1, 1, 1, 1, 1, 1})
			return p
		}, ErrBadOptions},
		{"sackperm-len-3", false, func(p []byte) []byte {
			setTCPOptions(p, []byte{4, 3, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1})
			return p
		}, ErrBadOptions},
		{"ts-len-8", true, func(p []byte) []byte {
			setTCPOptions(in(p), []byte{1, 1, 8, 8, 1, 2, 3, 4, 5, 6, 1, 1})
			return p
		}, ErrBadOptions},
		{"sack-not-multiple-of-8", false, func(p []byte) []byte {
			setTCPOptions(p, []byte{1, 5, 9, 1, 2, 3, 4, 5, 6, 7, 1, 1})
			return p
		}, ErrBadOptions},
		{"sack-empty", false, func(p []byte) []byte {
			setTCPOptions(p, []byte{5, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1})
			return p
		}, ErrBadOptions},
		{"ip-option-len-2", false, func(p []byte) []byte {
			// Make room for a 4-byte IP option by rebuilding the header.
			q := append(append(append([]byte{}, p[:20]...), 7, 2, 0, 0), p[20:]...)
			q[0] = 0x46
			binary.BigEndian.PutUint16(q[2:], uint16(len(q)))
			fixIP(q)
			return q
		}, ErrBadOptions},
		{"ip-option-overrun", true, func(p []byte) []byte {
			q := append(append(append([]byte{}, p[:20]...), 1, 1, 7, 9), p[20:]...)
			q[0] = 0x46
			binary.BigEndian.PutUint16(q[2:], uint16(len(q)))
			fixIP(q)
			return q
		}, ErrBadOptions},
	}
}

// basePackets encodes the segment the malformed cases start from: timestamps (12 bytes
// of options for setTCPOptions to rewrite) and a payload.
func basePackets(t testing.TB) (ipip, plain []byte) {
	enc := NewEncoder()
	seg := testSegments()["data-1440"]
	seg.Payload = seg.Payload[:300]
	p, err := enc.IPIP(testOuterSrc, testOuterDst, &seg)
	if err != nil {
		t.Fatal(err)
	}
	ipip = append([]byte(nil), p...)
	p, err = enc.TCP(&seg)
	if err != nil {
		t.Fatal(err)
	}
	return ipip, append([]byte(nil), p...)
}

var allSentinels = []error{ErrTruncated, ErrNotIPv4, ErrBadHeaderLen, ErrBadLength, ErrFragment, ErrChecksum,
	ErrNestedTunnel, ErrNotTCP, ErrBadDataOffset, ErrBadOptions}

func TestDecodeMalformed(t *testing.T) {
	ipip, plain := basePackets(t)
	var dec Decoder
	var seg tcp.Segment
	// The base packets themselves decode: every failure below is the mutation's doing.
	for _, p := range [][]byte{ipip, plain} {
		if _, err := dec.Decode(p, &seg); err != nil {
			t.Fatalf("base packet: %v", err)
		}
	}
	for _, c := range malformedCases() {
		t.Run(c.name, func(t *testing.T) {
			base := plain
			if c.ipip {
				base = ipip
			}
			pkt := c.mut(append([]byte(nil), base...))
			_, err := dec.Decode(pkt, &seg)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			for _, s := range allSentinels {
				if s != c.want && errors.Is(err, s) {
					t.Errorf("error %v also matches %v", err, s)
				}
			}
			// The decoder is not poisoned by a bad packet.
			if _, err := dec.Decode(base, &seg); err != nil {
				t.Fatalf("valid packet after %s: %v", c.name, err)
			}
		})
	}
}

func TestUnknownOptionsSkipped(t *testing.T) {
	_, plain := basePackets(t)
	// An unknown 4-byte option, NOPs, then EOL with junk after it.
	setTCPOptions(plain, []byte{99, 4, 0xaa, 0xbb, 1, 1, 1, 1, 0, 0xee, 0xee, 0xee})
	var dec Decoder
	var seg tcp.Segment
	if _, err := dec.Decode(plain, &seg); err != nil {
		t.Fatal(err)
	}
	if seg.Options != (tcp.Options{}) {
		t.Errorf("options %+v, want none", seg.Options)
	}
	if len(seg.Payload) != 300 {
		t.Errorf("payload %d bytes", len(seg.Payload))
	}
}

func TestZeroAllocs(t *testing.T) {
	enc := NewEncoder()
	dec := NewDecoder()
	segs := testSegments()
	data, syn, sack := segs["data-1440"], segs["syn-all-options"], segs["ack-ts-3sack"]
	ipip, err := enc.IPIP(testOuterSrc, testOuterDst, &data)
	if err != nil {
		t.Fatal(err)
	}
	ipip = append([]byte(nil), ipip...)
	plainSyn, err := enc.TCP(&syn)
	if err != nil {
		t.Fatal(err)
	}
	plainSyn = append([]byte(nil), plainSyn...)
	bad := append([]byte(nil), ipip...)
	bad[len(bad)-1] ^= 1
	var out tcp.Segment
	for _, c := range []struct {
		name string
		fn   func()
	}{
		{"encode-ipip-data", func() { _, err = enc.IPIP(testOuterSrc, testOuterDst, &data) }},
		{"encode-ipip-syn", func() { _, err = enc.IPIP(testOuterSrc, testOuterDst, &syn) }},
		{"encode-tcp-sack", func() { _, err = enc.TCP(&sack) }},
		{"decode-ipip", func() { _, err = dec.Decode(ipip, &out) }},
		{"decode-plain-syn", func() { _, err = dec.Decode(plainSyn, &out) }},
		{"decode-bad-checksum", func() {
			if _, e := dec.Decode(bad, &out); e != nil {
				err = nil
			}
		}},
	} {
		if n := testing.AllocsPerRun(200, c.fn); n != 0 {
			t.Errorf("%s: %v allocs per packet, want 0", c.name, n)
		}
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

func TestChecksumMatchesNaive(t *testing.T) {
	for n := 0; n < 300; n++ {
		b := testPayload(n, byte(n))
		if got, want := checksum(b, 0), naiveChecksum(b); got != want {
			t.Fatalf("len %d: checksum %#04x, naive %#04x", n, got, want)
		}
	}
	all := bytes.Repeat([]byte{0xff}, 4096) // carries on every add
	if got, want := checksum(all, 0xffffffffffff), naiveChecksumWithInit(all, 0xffffffffffff); got != want {
		t.Fatalf("all-ones: %#04x, want %#04x", got, want)
	}
}

func naiveChecksumWithInit(b []byte, init uint64) uint16 {
	s := init
	for i := 0; i+1 < len(b); i += 2 {
		s += uint64(b[i])<<8 | uint64(b[i+1])
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

func FuzzDecode(f *testing.F) {
	ipip, plain := basePackets(f)
	f.Add(ipip)
	f.Add(plain)
	enc := NewEncoder()
	for _, seg := range testSegments() {
		p, _ := enc.IPIP(testOuterSrc, testOuterDst, &seg)
		f.Add(append([]byte(nil), p...))
	}
	for _, c := range malformedCases() {
		base := plain
		if c.ipip {
			base = ipip
		}
		f.Add(c.mut(append([]byte(nil), base...)))
	}
	dec := NewDecoder()
	f.Fuzz(func(t *testing.T, pkt []byte) {
		var seg tcp.Segment
		info, err := dec.Decode(pkt, &seg)
		if err != nil {
			checkOneSentinel(t, err)
			return
		}
		// Accepted: the checksums really verify, and encoding the segment again gives a
		// packet that decodes to the same segment.
		checkWire(t, info.Inner, false, false)
		if info.IPIP {
			if naiveChecksum(pkt[:int(pkt[0]&0xf)*4]) != 0 {
				t.Fatal("accepted a bad outer checksum")
			}
		}
		re, err := NewEncoder().IPIP(info.OuterSrc, info.OuterDst, &seg)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		var again tcp.Segment
		if _, err := NewDecoder().Decode(re, &again); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		segEqual(t, again, expectDecoded(seg))
	})
}

// FuzzEncodeDecode builds segments from fuzz input and checks encode -> decode is the
// identity (up to the SACK blocks that do not fit).
func FuzzEncodeDecode(f *testing.F) {
	f.Add(uint32(1), uint32(2), uint16(3), uint8(0x12), uint16(1460), uint8(7), uint8(0x0f), uint32(5), uint32(6), uint8(4), []byte("payload"))
	f.Add(uint32(0), uint32(0), uint16(0), uint8(0), uint16(0), uint8(0), uint8(0), uint32(0), uint32(0), uint8(0), []byte{})
	enc := NewEncoder()
	dec := NewDecoder()
	f.Fuzz(func(t *testing.T, seq, ack uint32, win uint16, flags uint8, mss uint16, ws uint8, which uint8, tsv, tse uint32, nsack uint8, payload []byte) {
		seg := tcp.Segment{Src: testSrc, Dst: testDst, Seq: seq, Ack: ack, Window: win, Flags: tcp.Flags(flags), Payload: payload}
		o := &seg.Options
		if which&1 != 0 {
			o.MSS = mss
		}
		if which&2 != 0 {
			o.WScale, o.HasWScale = ws, true
		}
		o.SACKPermitted = which&4 != 0
		if which&8 != 0 {
			o.HasTimestamp, o.TSVal, o.TSEcr = true, tsv, tse
		}
		o.NSACK = nsack % (tcp.MaxSACKBlocks + 1)
		for i := 0; i < int(o.NSACK); i++ {
			o.SACK[i] = tcp.SACKBlock{Left: seq + uint32(i), Right: ack - uint32(i)}
		}
		pkt, err := enc.IPIP(testOuterSrc, testOuterDst, &seg)
		if err != nil {
			if len(payload) > 65535-100 && errors.Is(err, ErrTooBig) {
				return
			}
			t.Fatal(err)
		}
		var got tcp.Segment
		if _, err := dec.Decode(pkt, &got); err != nil {
			t.Fatalf("decode: %v", err)
		}
		segEqual(t, got, expectDecoded(seg))
	})
}

func BenchmarkEncodeIPIP(b *testing.B) {
	for _, n := range []int{0, 1440} {
		b.Run(fmt.Sprintf("payload=%d", n), func(b *testing.B) {
			enc := NewEncoder()
			seg := testSegments()["data-1440"]
			seg.Payload = seg.Payload[:n]
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := enc.IPIP(testOuterSrc, testOuterDst, &seg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, n := range []int{0, 1440} {
		b.Run(fmt.Sprintf("ipip/payload=%d", n), func(b *testing.B) {
			seg := testSegments()["data-1440"]
			seg.Payload = seg.Payload[:n]
			p, err := NewEncoder().IPIP(testOuterSrc, testOuterDst, &seg)
			if err != nil {
				b.Fatal(err)
			}
			dec := NewDecoder()
			var out tcp.Segment
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := dec.Decode(p, &out); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// checkOneSentinel fails t unless a decode error matches exactly one of the sentinels
// (the link counts drops by that sentinel).
func checkOneSentinel(t *testing.T, err error) {
	t.Helper()
	matched := 0
	for _, s := range allSentinels {
		if errors.Is(err, s) {
			matched++
		}
	}
	if matched != 1 {
		t.Fatalf("error %v matches %d sentinels", err, matched)
	}
}
