package relay

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"
)

// fou builds IPv4/UDP(sport -> dport)/payload with a valid IP checksum and UDP checksum 0.
func fou(src, dst string, sport, dport uint16, inner []byte) []byte {
	u := make([]byte, 8+len(inner))
	binary.BigEndian.PutUint16(u[0:2], sport)
	binary.BigEndian.PutUint16(u[2:4], dport)
	binary.BigEndian.PutUint16(u[4:6], uint16(len(u)))
	copy(u[8:], inner)
	return ipv4(src, dst, protoUDP, 64, 0, u)
}

func udpPolicy(mode Mode) *Policy {
	p := testPolicy(mode, false)
	p.UDPPort = 5555
	return p
}

// withCap returns pkt in a buffer with room behind it, as the relay's pooled buffers have.
func withCap(pkt []byte) []byte {
	b := make([]byte, len(pkt), len(pkt)+64)
	copy(b, pkt)
	return b
}

func TestClassifyUDP(t *testing.T) {
	inner := ipv4("10.77.255.1", "10.77.255.2", protoTCP, 64, 0, []byte("segment"))
	relaySrc := netip.MustParseAddr("10.77.101.2")
	src := func(netip.Addr) netip.Addr { return relaySrc }
	nat := netip.MustParseAddrPort("10.77.9.9:40001") // the client's NAT, as the relay sees it

	// Forward mode: the inner packet, TTL-1, whatever the encapsulation.
	v := ClassifyWith(udpPolicy(ModeForward), withCap(fou("10.77.9.9", "10.77.1.2", 40001, 5555, inner)), Env{Src: src})
	if v.Action != ActForward || !v.Tunnel || len(v.Out) != len(inner) || v.Out[8] != 63 || v.Learn.IsValid() {
		t.Fatalf("forward: %+v", v)
	}

	// Reencap, UDP in, UDP out: from relay:5555 to the inner destination (nothing
	// learned about it yet), learning where the client came from.
	v = ClassifyWith(udpPolicy(ModeReencap), withCap(fou("10.77.9.9", "10.77.1.2", 40001, 5555, inner)), Env{Src: src})
	if v.Action != ActForward || v.Dst != netip.MustParseAddr("10.77.255.2") || v.Learn != netip.MustParseAddr("10.77.255.1") || v.LearnFrom != nat {
		t.Fatalf("reencap: %+v", v)
	}
	checkUDPOut(t, v.Out, relaySrc, netip.MustParseAddrPort("10.77.255.2:5555"), inner)

	// The way back: the exit's packet for the client goes to the learned NAT endpoint.
	back := ipv4("10.77.255.2", "10.77.255.1", protoTCP, 64, 0, []byte("answer"))
	ret := func(dst netip.Addr) (netip.AddrPort, bool) {
		if dst == netip.MustParseAddr("10.77.255.1") {
			return nat, true
		}
		return netip.AddrPort{}, false
	}
	v = ClassifyWith(udpPolicy(ModeReencap), withCap(fou("10.77.255.2", "10.77.1.2", 5555, 5555, back)), Env{Src: src, Return: ret})
	if v.Action != ActForward || v.Dst != nat.Addr() {
		t.Fatalf("return: %+v", v)
	}
	checkUDPOut(t, v.Out, relaySrc, nat, back)

	// IPIP in, UDP out: the inner packet moves 8 bytes to make room.
	v = ClassifyWith(udpPolicy(ModeReencap), withCap(ipip("10.77.255.2", "10.77.1.2", back)), Env{Src: src, Return: ret})
	if v.Action != ActForward {
		t.Fatalf("ipip->udp: %+v", v)
	}
	checkUDPOut(t, v.Out, relaySrc, nat, back)
	// Without room behind the packet it is refused rather than overrun.
	if v = ClassifyWith(udpPolicy(ModeReencap), ipip("10.77.255.2", "10.77.1.2", back), Env{Src: src, Return: ret}); v.Action != ActDrop {
		t.Fatalf("ipip->udp without room: %+v", v)
	}

	// UDP in, IPIP out (a relay without --encap udp would not take it; one with IPIP
	// output and UDP input is this): the learned port is dropped, the address kept.
	p := testPolicy(ModeReencap, false)
	v = ClassifyWith(p, withCap(ipip("10.77.255.2", "10.77.1.2", back)), Env{Src: src, Return: ret})
	if v.Action != ActForward || v.Dst != nat.Addr() || v.Out[9] != protoIPIP || len(v.Out) != 20+len(back) {
		t.Fatalf("ipip return: %+v", v)
	}

	for _, c := range []struct {
		name string
		pkt  []byte
		want Action
	}{
		{"keepalive", fou("10.77.9.9", "10.77.1.2", 40001, 5555, nil), ActIgnore},
		{"other-port", fou("10.77.9.9", "10.77.1.2", 40001, 5556, inner), ActIgnore},
		{"not-allowed", fou("192.0.2.1", "10.77.1.2", 40001, 5555, inner), ActDrop},
		{"udp-length", func() []byte {
			b := fou("10.77.9.9", "10.77.1.2", 40001, 5555, inner)
			binary.BigEndian.PutUint16(b[24:26], 9)
			return b
		}(), ActDrop},
		{"udp-checksum", func() []byte {
			b := fou("10.77.9.9", "10.77.1.2", 40001, 5555, inner)
			b[27] = 1
			return b
		}(), ActDrop},
	} {
		if v := ClassifyWith(udpPolicy(ModeReencap), withCap(c.pkt), Env{Src: src}); v.Action != c.want || (c.want == ActForward) != v.Learn.IsValid() {
			t.Errorf("%s: %+v, want action %d", c.name, v, c.want)
		}
	}
}

func checkUDPOut(t *testing.T, out []byte, src netip.Addr, to netip.AddrPort, inner []byte) {
	t.Helper()
	if len(out) != 28+len(inner) || out[9] != protoUDP || checksum(out[:20]) != 0 {
		t.Fatalf("outer header % x", out[:min(len(out), 28)])
	}
	if netip.AddrFrom4([4]byte(out[12:16])) != src || netip.AddrFrom4([4]byte(out[16:20])) != to.Addr() {
		t.Fatalf("outer %v -> %v", netip.AddrFrom4([4]byte(out[12:16])), netip.AddrFrom4([4]byte(out[16:20])))
	}
	if binary.BigEndian.Uint16(out[20:22]) != 5555 || binary.BigEndian.Uint16(out[22:24]) != to.Port() ||
		int(binary.BigEndian.Uint16(out[24:26])) != len(out)-20 || !udpChecksumOK(out[12:20], out[20:]) {
		t.Fatalf("udp header % x", out[20:28])
	}
	got := out[28:]
	if got[8] != inner[8]-1 || checksum(got[:20]) != 0 || string(got[20:]) != string(inner[20:]) {
		t.Fatalf("inner packet not carried intact (TTL-1)")
	}
}

// TestRelayReturnAddressing runs the relay loop (fake source and sink): a client's
// packets teach the relay its NAT endpoint; the exit's answers go there; spoofed packets
// from outside the allowlist, claiming the client's inner address from another outer
// source, do not move it; an allowed packet from a new NAT address does.
func TestRelayReturnAddressing(t *testing.T) {
	allow, _ := ParseAllowlist("10.77.0.0/16")
	src := newChanSource()
	sink := &copySink{}
	r, err := New(Config{Allow: allow, Mode: ModeReencap, UDPPort: 5555,
		LocalAddrs: func() ([]netip.Addr, error) { return []netip.Addr{netip.MustParseAddr("10.77.1.2")}, nil },
		SourceFor:  func(netip.Addr) (netip.Addr, error) { return netip.MustParseAddr("10.77.1.2"), nil }}, src, sink)
	if err != nil {
		t.Fatal(err)
	}
	up := ipv4("10.77.255.1", "10.77.255.2", protoTCP, 64, 0, []byte("up"))
	down := ipv4("10.77.255.2", "10.77.255.1", protoTCP, 64, 0, []byte("down"))
	feed := func(pkt []byte) []byte {
		sink.out = nil
		r.receive(pkt)
		r.flushDirect()
		if len(sink.out) != 1 {
			return nil
		}
		return sink.out[0]
	}
	dstOf := func(out []byte) netip.AddrPort {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(out[16:20])), binary.BigEndian.Uint16(out[22:24]))
	}
	if out := feed(fou("10.77.9.9", "10.77.1.2", 40001, 5555, up)); out == nil || dstOf(out) != netip.MustParseAddrPort("10.77.255.2:5555") {
		t.Fatalf("upstream: %v", out)
	}
	if out := feed(fou("10.77.255.2", "10.77.1.2", 5555, 5555, down)); out == nil || dstOf(out) != netip.MustParseAddrPort("10.77.9.9:40001") {
		t.Fatalf("downstream not returned to the client's NAT: %v", out)
	}
	// Spoofed from outside --allow: dropped, and the return endpoint stays.
	if out := feed(fou("192.0.2.66", "10.77.1.2", 40001, 5555, up)); out != nil {
		t.Fatal("spoofed packet forwarded")
	}
	if out := feed(fou("10.77.255.2", "10.77.1.2", 5555, 5555, down)); dstOf(out) != netip.MustParseAddrPort("10.77.9.9:40001") {
		t.Fatalf("a spoofed packet moved the return endpoint to %v", dstOf(out))
	}
	// A malformed packet from an allowed source (bad inner checksum) teaches nothing.
	bad := append([]byte(nil), up...)
	bad[10] ^= 0xff
	feed(fou("10.77.7.7", "10.77.1.2", 40001, 5555, bad))
	if out := feed(fou("10.77.255.2", "10.77.1.2", 5555, 5555, down)); dstOf(out) != netip.MustParseAddrPort("10.77.9.9:40001") {
		t.Fatalf("a malformed packet moved the return endpoint to %v", dstOf(out))
	}
	// NAT rebinding: the next allowed packet from the new endpoint moves it at once.
	feed(fou("10.77.9.10", "10.77.1.2", 41000, 5555, up))
	if out := feed(fou("10.77.255.2", "10.77.1.2", 5555, 5555, down)); dstOf(out) != netip.MustParseAddrPort("10.77.9.10:41000") {
		t.Fatalf("after rebinding: %v", dstOf(out))
	}
	if st := r.Stats(); st.ReturnMoves != 1 || st.Returns != 2 {
		t.Errorf("stats: %d moves, %d entries; want 1 move, 2 entries (client and exit)", st.ReturnMoves, st.Returns)
	}
}

func TestReturnsBounded(t *testing.T) {
	r := newReturns()
	r.now = time.Unix(1000, 0)
	for i := 0; i < MaxReturns+100; i++ {
		r.now = r.now.Add(time.Millisecond)
		r.learn(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), netip.MustParseAddrPort("192.0.2.1:1"))
	}
	if len(r.m) != MaxReturns {
		t.Fatalf("%d entries, want %d", len(r.m), MaxReturns)
	}
	if _, ok := r.lookup(netip.AddrFrom4([4]byte{10, 1, 0, 0})); ok {
		t.Error("the oldest entry survived")
	}
	if _, ok := r.lookup(netip.AddrFrom4([4]byte{10, 1, 16, 99})); !ok {
		t.Error("a recent entry is gone")
	}
	r.now = r.now.Add(ReturnMaxAge + time.Second)
	if _, ok := r.lookup(netip.AddrFrom4([4]byte{10, 1, 16, 99})); ok {
		t.Error("an entry older than ReturnMaxAge was used")
	}
}

// copySink keeps copies of what one Send carried.
type copySink struct{ out [][]byte }

func (s *copySink) Send(pkts [][]byte, _ []netip.Addr) (int, error) {
	for _, p := range pkts {
		s.out = append(s.out, append([]byte(nil), p...))
	}
	return len(pkts), nil
}

// FuzzClassifyUDP: arbitrary packets with UDP encapsulation on, with and without a
// return endpoint and room behind the packet: never a panic, and what is forwarded is a
// valid IPv4 packet inside the buffer.
func FuzzClassifyUDP(f *testing.F) {
	good := ipv4("10.77.255.1", "10.77.255.2", protoTCP, 64, 0, []byte("x"))
	f.Add(fou("10.77.9.9", "10.77.1.2", 1, 5555, good), true, true, uint8(8))
	f.Add(ipip("10.77.1.1", "10.77.1.2", good), true, false, uint8(0))
	f.Add(fou("10.77.9.9", "10.77.1.2", 1, 5555, nil), false, true, uint8(0))
	ret := func(netip.Addr) (netip.AddrPort, bool) { return netip.MustParseAddrPort("192.0.2.9:7"), true }
	f.Fuzz(func(t *testing.T, pkt []byte, reencap, learned bool, room uint8) {
		mode := ModeForward
		if reencap {
			mode = ModeReencap
		}
		env := Env{}
		if learned {
			env.Return = ret
		}
		buf := make([]byte, len(pkt), len(pkt)+int(room))
		copy(buf, pkt)
		v := ClassifyWith(udpPolicy(mode), buf, env)
		if v.Action == ActForward {
			h, ok := parseIPv4(v.Out)
			if !ok || h.totalLen != len(v.Out) {
				t.Fatalf("forwarded an invalid packet %x", v.Out)
			}
			if cap(v.Out) > cap(buf) {
				t.Fatal("output outside the buffer")
			}
		}
	})
}

// TestRelayUDPSuperPacket: a UDP datagram carrying three inner packets back to back (a
// GSO datagram that crossed a veth whole, or a GRO merge) is relayed as the three
// datagrams it stands for, each inner packet intact; a broken length in the middle
// drops the rest.
func TestRelayUDPSuperPacket(t *testing.T) {
	allow, _ := ParseAllowlist("10.77.0.0/16")
	sink := &copySink{}
	r, err := New(Config{Allow: allow, Mode: ModeReencap, UDPPort: 5555,
		LocalAddrs: func() ([]netip.Addr, error) { return []netip.Addr{netip.MustParseAddr("10.77.1.2")}, nil },
		SourceFor:  func(netip.Addr) (netip.Addr, error) { return netip.MustParseAddr("10.77.1.2"), nil }}, newChanSource(), sink)
	if err != nil {
		t.Fatal(err)
	}
	var inners [][]byte
	var all []byte
	for i, s := range []string{"first", "second packet", "3"} {
		in := ipv4("10.77.255.1", "10.77.255.2", protoTCP, 64-uint8(i), 0, []byte(s))
		inners = append(inners, in)
		all = append(all, in...)
	}
	r.receive(fou("10.77.9.9", "10.77.1.2", 40001, 5555, all))
	r.flushDirect()
	if len(sink.out) != 3 {
		t.Fatalf("%d datagrams relayed, want 3; %+v", len(sink.out), r.Stats())
	}
	for i, out := range sink.out {
		got := out[28:]
		if int(binary.BigEndian.Uint16(out[2:4])) != len(out) || checksum(out[:20]) != 0 ||
			int(binary.BigEndian.Uint16(out[24:26])) != len(out)-20 || string(got[20:]) != string(inners[i][20:]) {
			t.Fatalf("datagram %d: % x", i, out)
		}
	}
	sink.out = nil
	broken := append([]byte(nil), all...)
	binary.BigEndian.PutUint16(broken[len(inners[0])+2:], 9999)
	r.receive(fou("10.77.9.9", "10.77.1.2", 40001, 5555, broken))
	r.flushDirect()
	if len(sink.out) != 1 {
		t.Fatalf("broken second length: %d datagrams relayed, want the first only", len(sink.out))
	}
}
