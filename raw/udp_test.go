package raw

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/net/bpf"

	"mpath/tcp"
)

const testUDPPort = 5555

var (
	testUDPSrc = netip.AddrPortFrom(testOuterSrc, 40999)
	testUDPDst = netip.AddrPortFrom(testOuterDst, testUDPPort)
)

func TestUDPRoundTrip(t *testing.T) {
	enc := NewEncoder()
	dec := Decoder{UDPPort: testUDPPort}
	for name, seg := range testSegments() {
		t.Run(name, func(t *testing.T) {
			enc.PathID = 3
			pkt, err := enc.UDP(testUDPSrc, testUDPDst, &seg)
			if err != nil {
				t.Fatalf("UDP: %v", err)
			}
			// The inner packet is byte for byte what IPIP carries (same ID counter aside).
			if binary.BigEndian.Uint16(pkt[22:24]) != testUDPPort || pkt[9] != protoUDP ||
				int(binary.BigEndian.Uint16(pkt[24:26])) != len(pkt)-20 || naiveChecksum(pkt[:20]) != 0 {
				t.Fatalf("outer headers % x", pkt[:28])
			}
			checkWire(t, pkt[28:], false, true)
			var got tcp.Segment
			info, err := dec.Decode(pkt, &got)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			segEqual(t, got, expectDecoded(seg))
			if !info.UDP || info.IPIP || !info.Tunneled() || info.Source() != testUDPSrc || info.OuterDst != testOuterDst || PathOf(info.ID) != 3 {
				t.Errorf("info %+v", info)
			}
			if !bytes.Equal(info.Inner, pkt[28:]) {
				t.Errorf("Info.Inner is not the encapsulated packet")
			}
		})
	}
}

// TestUDPAgainstGopacket: gopacket's generic decoder sees IPv4/UDP with the fou layout
// (a second opinion), and decodes the payload as IPv4/TCP.
func TestUDPAgainstGopacket(t *testing.T) {
	seg := testSegments()["syn-all-options"]
	seg.Payload = []byte("hello")
	pkt, err := NewEncoder().UDP(testUDPSrc, testUDPDst, &seg)
	if err != nil {
		t.Fatal(err)
	}
	p := gopacket.NewPacket(pkt, layers.LayerTypeIPv4, gopacket.Default)
	u, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if !ok || u.DstPort != testUDPPort || u.SrcPort != 40999 || int(u.Length) != len(pkt)-20 {
		t.Fatalf("udp layer %+v", p.Layer(layers.LayerTypeUDP))
	}
	in := gopacket.NewPacket(u.Payload, layers.LayerTypeIPv4, gopacket.Default)
	tl, ok := in.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if !ok || !tl.SYN || string(tl.Payload) != "hello" {
		t.Fatalf("inner %v", in)
	}
}

func TestUDPDecodeRejects(t *testing.T) {
	seg := testSegments()["data-1440"]
	base, err := NewEncoder().UDP(testUDPSrc, testUDPDst, &seg)
	if err != nil {
		t.Fatal(err)
	}
	base = append([]byte(nil), base...)
	withSum := func(b []byte) []byte { // a correct nonzero UDP checksum
		b[26], b[27] = 0, 0
		binary.BigEndian.PutUint16(b[26:28], checksum(b[20:], pseudoSum(b[12:16], b[16:20], protoUDP, len(b)-20)))
		return b
	}
	cases := []struct {
		name string
		port uint16 // decoder's UDPPort
		mut  func([]byte) []byte
		want error // nil: accepted
	}{
		{"ok", testUDPPort, func(b []byte) []byte { return b }, nil},
		{"ok-checksum", testUDPPort, withSum, nil},
		{"bad-checksum", testUDPPort, func(b []byte) []byte { b = withSum(b); b[27] ^= 0x40; return b }, ErrChecksum},
		{"udp-disabled", 0, func(b []byte) []byte { return b }, ErrNotTCP},
		{"other-port", testUDPPort + 1, func(b []byte) []byte { return b }, ErrNotTCP},
		{"udp-length", testUDPPort, func(b []byte) []byte { binary.BigEndian.PutUint16(b[24:26], uint16(len(b)-21)); return b }, ErrBadLength},
		{"truncated-udp", testUDPPort, func(b []byte) []byte {
			b = b[:26]
			binary.BigEndian.PutUint16(b[2:4], 26)
			putIPChecksum(b)
			return b
		}, ErrNotTCP},
		{"inner-trailing", testUDPPort, func(b []byte) []byte {
			b = append(b, 0)
			binary.BigEndian.PutUint16(b[2:4], uint16(len(b)))
			binary.BigEndian.PutUint16(b[24:26], uint16(len(b)-20))
			putIPChecksum(b)
			return b
		}, ErrBadLength},
		{"nested-udp", testUDPPort, func(b []byte) []byte { // inner header says UDP: not decapsulated twice
			b[28+9] = protoUDP
			putIPChecksum(b[28:])
			return b
		}, ErrNotTCP},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pkt := c.mut(append([]byte(nil), base...))
			dec := Decoder{UDPPort: c.port}
			var got tcp.Segment
			_, err := dec.Decode(pkt, &got)
			if c.want == nil {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("err %v, want %v", err, c.want)
			}
		})
	}
}

func TestUDPZeroAllocs(t *testing.T) {
	enc := NewEncoder()
	dec := NewDecoder()
	dec.UDPPort = testUDPPort
	data := testSegments()["data-1440"]
	pkt, err := enc.UDP(testUDPSrc, testUDPDst, &data)
	if err != nil {
		t.Fatal(err)
	}
	pkt = append([]byte(nil), pkt...)
	var out tcp.Segment
	if n := testing.AllocsPerRun(200, func() { _, err = enc.UDP(testUDPSrc, testUDPDst, &data) }); n != 0 || err != nil {
		t.Errorf("encode: %v allocs, err %v", n, err)
	}
	if n := testing.AllocsPerRun(200, func() { _, err = dec.Decode(pkt, &out) }); n != 0 || err != nil {
		t.Errorf("decode: %v allocs, err %v", n, err)
	}
}

func TestPathTag(t *testing.T) {
	for _, n := range []int{1, 2, 4, 16} {
		for p := 0; p < n; p++ {
			for _, c := range []uint16{0, 1, 0xff, 0x100, 0xffff} {
				id := PathTag(PathByte(p, n), c)
				if PathOf(id) != uint8(p) || PathsOf(id) != n {
					t.Fatalf("PathTag(PathByte(%d, %d), %d) = %#04x: path %d of %d", p, n, c, id, PathOf(id), PathsOf(id))
				}
			}
		}
	}
	if PathsOf(PathTag(PathByte(3, 40), 0)) != 16 || PathsOf(PathTag(PathByte(0, 0), 0)) != 1 {
		t.Fatal("path counts outside 1..16 are not clamped")
	}
}

// FuzzDecodeUDP feeds arbitrary packets to a decoder with UDP enabled: every error
// matches one sentinel, and an accepted UDP packet has a sound outer header and
// re-encodes to the same segment.
func FuzzDecodeUDP(f *testing.F) {
	enc := NewEncoder()
	for _, seg := range testSegments() {
		p, _ := enc.UDP(testUDPSrc, testUDPDst, &seg)
		f.Add(append([]byte(nil), p...))
	}
	dec := NewDecoder()
	dec.UDPPort = testUDPPort
	f.Fuzz(func(t *testing.T, pkt []byte) {
		var seg tcp.Segment
		info, err := dec.Decode(pkt, &seg)
		if err != nil {
			checkOneSentinel(t, err)
			return
		}
		checkWire(t, info.Inner, false, false)
		if info.UDP {
			hl := int(pkt[0]&0xf) * 4
			if naiveChecksum(pkt[:hl]) != 0 || binary.BigEndian.Uint16(pkt[hl+2:]) != testUDPPort {
				t.Fatal("accepted a bad outer header")
			}
		}
		re, err := NewEncoder().UDP(info.Source(), netip.AddrPortFrom(info.OuterDst, testUDPPort), &seg)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		var again tcp.Segment
		if _, err := dec.Decode(re, &again); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		segEqual(t, again, expectDecoded(seg))
	})
}

func BenchmarkEncodeUDP(b *testing.B) {
	enc := NewEncoder()
	seg := testSegments()["data-1440"]
	b.SetBytes(int64(len(seg.Payload)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := enc.UDP(testUDPSrc, testUDPDst, &seg); err != nil {
			b.Fatal(err)
		}
	}
}

func TestFilterUDP(t *testing.T) {
	ports := []PortRange{{40000, 40099}}
	prog := FilterEngine(FilterSpec{Ports: ports, UDPPort: testUDPPort,
		UDPSources:  []netip.Prefix{netip.MustParsePrefix("10.77.0.0/16")},
		IPIPSources: []netip.Prefix{netip.MustParsePrefix("10.77.1.1/32")}})
	enc := NewEncoder()
	mk := func(src string, udpPort, port uint16) []byte {
		seg := tcp.Segment{Src: testSrc, Dst: netip.AddrPortFrom(testDst.Addr(), port), Flags: tcp.FlagACK, Payload: []byte("abc")}
		p, err := enc.UDP(netip.AddrPortFrom(netip.MustParseAddr(src), 999), netip.AddrPortFrom(testOuterDst, udpPort), &seg)
		if err != nil {
			t.Fatal(err)
		}
		return append([]byte(nil), p...)
	}
	innerFrag := mk("10.77.3.3", testUDPPort, 40000)
	innerFrag[28+7] = 10
	innerUDP := mk("10.77.3.3", testUDPPort, 40000)
	innerUDP[28+9] = protoUDP
	seg := tcp.Segment{Src: testSrc, Dst: netip.AddrPortFrom(testDst.Addr(), 40000)}
	ipip, _ := enc.IPIP(testOuterSrc, testOuterDst, &seg)
	ipip = append([]byte(nil), ipip...)
	for _, c := range []struct {
		name string
		pkt  []byte
		want bool
	}{
		{"udp-ok", mk("10.77.3.3", testUDPPort, 40050), true},
		{"udp-other-encap-port", mk("10.77.3.3", testUDPPort+1, 40050), false},
		{"udp-inner-port-out", mk("10.77.3.3", testUDPPort, 22), false},
		{"udp-source-out", mk("10.78.3.3", testUDPPort, 40050), false},
		{"udp-inner-fragment", innerFrag, false},
		{"udp-inner-not-tcp", innerUDP, false},
		{"ipip-still-ok", ipip, true},
	} {
		if got := runFilter(t, prog, c.pkt); got != c.want {
			t.Errorf("%s: accepted=%v, want %v", c.name, got, c.want)
		}
	}
	if runFilter(t, FilterTCPPortsOrIPIP(ports, nil), mk("10.77.3.3", testUDPPort, 40050)) {
		t.Error("UDP accepted by a filter without UDP")
	}
	// Both source lists at their limits still assemble (long jumps in the dispatch).
	var srcs []netip.Prefix
	var many []PortRange
	for i := 0; i < MaxFilterSources; i++ {
		srcs = append(srcs, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i), 1}), 32))
	}
	for i := 0; i < MaxFilterPortRanges; i++ {
		many = append(many, PortRange{uint16(10 * i), uint16(10*i + 1)})
	}
	if _, err := bpf.Assemble(FilterEngine(FilterSpec{Ports: many, IPIPSources: srcs, UDPPort: 1, UDPSources: srcs})); err != nil {
		t.Fatalf("assemble at the limits: %v", err)
	}
}
