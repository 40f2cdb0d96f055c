package relay

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// ipv4 builds an IPv4 packet with a valid header checksum.
func ipv4(src, dst string, proto, ttl uint8, frag uint16, payload []byte) []byte {
	b := make([]byte, 20+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:4], uint16(len(b)))
	binary.BigEndian.PutUint16(b[4:6], 0x1234)
	binary.BigEndian.PutUint16(b[6:8], frag)
	b[8] = ttl
	b[9] = proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	binary.BigEndian.PutUint16(b[10:12], checksum(b[:20]))
	copy(b[20:], payload)
	return b
}

func ipip(outerSrc, outerDst string, inner []byte) []byte {
	return ipv4(outerSrc, outerDst, protoIPIP, 64, 0, inner)
}

func testPolicy(mode Mode, plain bool) *Policy {
	allow, err := ParseAllowlist("10.77.0.0/16")
	if err != nil {
		panic(err)
	}
	return &Policy{
		Allow: allow,
		Local: NewLocalSet([]netip.Addr{netip.MustParseAddr("10.77.1.2"), netip.MustParseAddr("10.77.101.2"), netip.MustParseAddr("127.0.0.1")}),
		Mode:  mode,
		Plain: plain,
	}
}

func TestClassify(t *testing.T) {
	payload := []byte("hello, relay")
	tcp := func(src, dst string, ttl uint8) []byte { return ipv4(src, dst, protoTCP, ttl, 0, payload) }
	good := tcp("10.77.255.1", "10.77.255.2", 64)
	badSum := ipip("10.77.1.1", "10.77.1.2", good)
	badSum[10] ^= 0xff
	truncated := ipip("10.77.1.1", "10.77.1.2", good)[:30]
	innerTrunc := ipip("10.77.1.1", "10.77.1.2", good[:25])
	tests := []struct {
		name   string
		pkt    []byte
		mode   Mode
		plain  bool
		act    Action
		reason Reason
	}{
		{"ipip forward", ipip("10.77.1.1", "10.77.1.2", good), ModeForward, false, ActForward, 0},
		{"ipip reencap", ipip("10.77.1.1", "10.77.1.2", good), ModeReencap, false, ActForward, 0},
		{"stranger outer source", ipip("192.0.2.9", "10.77.1.2", good), ModeForward, false, ActDrop, ReasonNotAllowed},
		{"spoofed inner source", ipip("10.77.1.1", "10.77.1.2", tcp("192.0.2.1", "10.77.255.2", 64)), ModeForward, false, ActDrop, ReasonNotAllowed},
		{"inner destination outside", ipip("10.77.1.1", "10.77.1.2", tcp("10.77.255.1", "8.8.8.8", 64)), ModeForward, false, ActDrop, ReasonNotAllowed},
		{"outer fragment", ipv4("10.77.1.1", "10.77.1.2", protoIPIP, 64, 0x2000, good), ModeForward, false, ActDrop, ReasonFragment},
		{"inner fragment", ipip("10.77.1.1", "10.77.1.2", ipv4("10.77.255.1", "10.77.255.2", protoTCP, 64, 5, payload)), ModeForward, false, ActDrop, ReasonFragment},
		{"nested ipip", ipip("10.77.1.1", "10.77.1.2", ipip("10.77.255.1", "10.77.255.2", good)), ModeForward, false, ActDrop, ReasonNestedTunnel},
		{"nested gre", ipip("10.77.1.1", "10.77.1.2", ipv4("10.77.255.1", "10.77.255.2", protoGRE, 64, 0, payload)), ModeForward, false, ActDrop, ReasonNestedTunnel},
		{"ttl 1", ipip("10.77.1.1", "10.77.1.2", tcp("10.77.255.1", "10.77.255.2", 1)), ModeForward, false, ActDrop, ReasonTTLExpired},
		{"to self", ipip("10.77.1.1", "10.77.1.2", tcp("10.77.255.1", "10.77.101.2", 64)), ModeForward, false, ActDrop, ReasonToSelf},
		{"martian inner", ipip("10.77.1.1", "10.77.1.2", tcp("10.77.255.1", "224.0.0.1", 64)), ModeForward, false, ActDrop, ReasonMartian},
		{"bad outer checksum", badSum, ModeForward, false, ActDrop, ReasonMalformed},
		{"truncated outer", truncated, ModeForward, false, ActDrop, ReasonMalformed},
		{"truncated inner", innerTrunc, ModeForward, false, ActDrop, ReasonMalformed},
		{"not ipv4", []byte{0x60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, ModeForward, false, ActDrop, ReasonMalformed},
		{"plain without --plain", good, ModeForward, false, ActIgnore, 0},
		{"plain transit", good, ModeForward, true, ActForward, 0},
		{"plain transit reencap mode stays plain", good, ModeReencap, true, ActForward, 0},
		{"plain to relay itself", tcp("10.77.1.1", "10.77.1.2", 64), ModeForward, true, ActIgnore, 0},
		{"plain not allowed", tcp("10.77.1.1", "192.0.2.1", 64), ModeForward, true, ActDrop, ReasonNotAllowed},
		{"plain ttl 1", tcp("10.77.255.1", "10.77.255.2", 1), ModeForward, true, ActDrop, ReasonTTLExpired},
		{"plain fragment", ipv4("10.77.255.1", "10.77.255.2", protoTCP, 64, 0x2000, payload), ModeForward, true, ActDrop, ReasonFragment},
		{"plain multicast ignored", tcp("10.77.1.1", "224.0.0.251", 64), ModeForward, true, ActIgnore, 0},
		{"ipip to someone else is plain transit", ipip("10.77.1.1", "10.77.255.2", good), ModeForward, true, ActForward, 0},
		{"ipip to someone else without --plain", ipip("10.77.1.1", "10.77.255.2", good), ModeForward, false, ActIgnore, 0},
	}
	relaySrc := netip.MustParseAddr("10.77.101.2")
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			buf := append([]byte(nil), tc.pkt...)
			v := Classify(testPolicy(tc.mode, tc.plain), buf, func(netip.Addr) netip.Addr { return relaySrc })
			if v.Action != tc.act || v.Reason != tc.reason {
				t.Fatalf("got action %d reason %v, want action %d reason %v", v.Action, v.Reason, tc.act, tc.reason)
			}
			if v.Action != ActForward {
				return
			}
			out := v.Out
			if _, ok := parseIPv4(out); !ok {
				t.Fatalf("output is not a valid IPv4 packet: %x", out)
			}
			inner := out
			if tc.mode == ModeReencap && v.Tunnel {
				h, _ := parseIPv4(out)
				if h.proto != protoIPIP || addrOf(h.src) != relaySrc || addrOf(h.dst) != v.Dst || h.ttl != OuterTTL {
					t.Fatalf("reencap outer header %+v", h)
				}
				inner = out[20:]
			}
			ih, ok := parseIPv4(inner)
			if !ok {
				t.Fatalf("inner not valid: %x", inner)
			}
			// The inner packet arrives as sent but with TTL-1.
			var orig []byte
			if v.Tunnel {
				orig = tc.pkt[20:]
			} else {
				orig = tc.pkt
			}
			oh, _ := parseIPv4(orig)
			if ih.ttl != oh.ttl-1 {
				t.Fatalf("ttl %d, want %d", ih.ttl, oh.ttl-1)
			}
			if !bytes.Equal(inner[20:], orig[20:]) || !bytes.Equal(inner[12:20], orig[12:20]) {
				t.Fatal("inner packet changed beyond the TTL")
			}
			if v.Dst != addrOf(ih.dst) {
				t.Fatalf("dst %v, want %v", v.Dst, addrOf(ih.dst))
			}
		})
	}
}

func TestDecTTLChecksum(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 10000; i++ {
		h := make([]byte, 20)
		for j := range h {
			h[j] = byte(r.UintN(256))
		}
		h[0] = 0x45
		h[8] = byte(2 + r.UintN(254))
		h[10], h[11] = 0, 0
		binary.BigEndian.PutUint16(h[10:12], checksum(h))
		decTTL(h)
		if checksum(h) != 0 {
			t.Fatalf("header %x: checksum invalid after TTL decrement", h)
		}
	}
}

func TestAllowlist(t *testing.T) {
	a, err := ParseAllowlist("10.77.0.0/16, 192.0.2.7")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ip   string
		want bool
	}{{"10.77.3.4", true}, {"10.78.0.1", false}, {"192.0.2.7", true}, {"192.0.2.8", false}} {
		if got := a.Contains(v4(netip.MustParseAddr(tc.ip))); got != tc.want {
			t.Errorf("Contains(%s) = %v", tc.ip, got)
		}
	}
	if a.String() != "10.77.0.0/16,192.0.2.7/32" {
		t.Errorf("String() = %q", a.String())
	}
	for _, bad := range []string{"", "10.0.0.0/33", "::1/128", "nonsense"} {
		if _, err := ParseAllowlist(bad); err == nil {
			t.Errorf("ParseAllowlist(%q) accepted", bad)
		}
	}
}

func TestClassifyAllocs(t *testing.T) {
	p := testPolicy(ModeReencap, true)
	pkt := ipip("10.77.1.1", "10.77.1.2", ipv4("10.77.255.1", "10.77.255.2", protoTCP, 64, 0, make([]byte, 1000)))
	buf := make([]byte, len(pkt))
	src := func(netip.Addr) netip.Addr { return netip.MustParseAddr("10.77.101.2") }
	allocs := testing.AllocsPerRun(1000, func() {
		copy(buf, pkt)
		if v := Classify(p, buf, src); v.Action != ActForward {
			t.Fatal("not forwarded")
		}
	})
	if allocs != 0 {
		t.Fatalf("Classify allocates %.1f per packet", allocs)
	}
}

// FuzzClassify feeds arbitrary bytes to Classify: it must never panic, and whatever it
// forwards must be a valid IPv4 packet inside the input buffer.
func FuzzClassify(f *testing.F) {
	good := ipv4("10.77.255.1", "10.77.255.2", protoTCP, 64, 0, []byte("x"))
	f.Add(ipip("10.77.1.1", "10.77.1.2", good), true, false)
	f.Add(good, false, true)
	f.Add([]byte{0x45, 0, 0, 20}, true, true)
	f.Fuzz(func(t *testing.T, pkt []byte, reencap, plain bool) {
		mode := ModeForward
		if reencap {
			mode = ModeReencap
		}
		v := Classify(testPolicy(mode, plain), pkt, nil)
		if v.Action == ActForward {
			if _, ok := parseIPv4(v.Out); !ok {
				t.Fatalf("forwarded an invalid packet %x", v.Out)
			}
			if len(v.Out) > len(pkt) {
				t.Fatal("output longer than input")
			}
		}
	})
}
