package relay

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"
)

// udp builds an IPv4/UDP packet to dst:port.
func udp(src, dst string, port uint16, payload []byte) []byte {
	l4 := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(l4[0:2], 40000)
	binary.BigEndian.PutUint16(l4[2:4], port)
	binary.BigEndian.PutUint16(l4[4:6], uint16(len(l4)))
	copy(l4[8:], payload)
	return ipv4(src, dst, protoUDP, 64, 0, l4)
}

func mustList(s string) Allowlist {
	a, err := ParseAllowlist(s)
	if err != nil {
		panic(err)
	}
	return a
}

// The relay's lists: who may send (outer source) and where inner packets may go
// (inner source and destination), inner TCP only.
func TestClassifyLists(t *testing.T) {
	local := NewLocalSet([]netip.Addr{netip.MustParseAddr("10.77.1.2")})
	short := &Policy{Allow: mustList("10.77.0.0/16"), Local: local}
	split := &Policy{From: mustList("198.51.100.0/24,10.77.255.2"), To: mustList("10.77.255.1,10.77.255.2"), Local: local}
	dns := []byte("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01")
	tcp := func(src, dst string) []byte { return ipv4(src, dst, protoTCP, 64, 0, []byte("segment")) }
	for _, tc := range []struct {
		name   string
		p      *Policy
		pkt    []byte
		act    Action
		reason Reason
	}{
		// The attack: an allowed outer source (spoofed) sends UDP to port 53 of a third host.
		{"shorthand: spoofed source, UDP 53 to a third host", short, ipip("10.77.1.1", "10.77.1.2", udp("10.77.255.1", "10.77.9.9", 53, dns)), ActDrop, ReasonProtocol},
		{"split: spoofed source, UDP 53 to a third host", split, ipip("198.51.100.7", "10.77.1.2", udp("10.77.255.1", "10.77.9.9", 53, dns)), ActDrop, ReasonNotAllowed},
		{"split: spoofed source, UDP 53 to the exit", split, ipip("198.51.100.7", "10.77.1.2", udp("10.77.255.1", "10.77.255.2", 53, dns)), ActDrop, ReasonProtocol},
		{"split: spoofed source, TCP to a third host", split, ipip("198.51.100.7", "10.77.1.2", tcp("10.77.255.1", "10.77.9.9")), ActDrop, ReasonNotAllowed},
		{"split: ICMP to the exit", split, ipip("198.51.100.7", "10.77.1.2", ipv4("10.77.255.1", "10.77.255.2", 1, 64, 0, []byte{8, 0, 0, 0})), ActDrop, ReasonProtocol},
		{"split: inner source outside --allow-to", split, ipip("198.51.100.7", "10.77.1.2", tcp("198.51.100.7", "10.77.255.2")), ActDrop, ReasonNotAllowed},
		{"split: outer source outside --allow-from", split, ipip("10.77.255.1", "10.77.1.2", tcp("10.77.255.1", "10.77.255.2")), ActDrop, ReasonNotAllowed},
		{"split: client to exit", split, ipip("198.51.100.7", "10.77.1.2", tcp("10.77.255.1", "10.77.255.2")), ActForward, 0},
		{"split: exit to client", split, ipip("10.77.255.2", "10.77.1.2", tcp("10.77.255.2", "10.77.255.1")), ActForward, 0},
		{"UDP hook off by default", &Policy{Allow: mustList("10.77.0.0/16"), Local: local}, ipip("10.77.1.1", "10.77.1.2", udp("10.77.255.1", "10.77.255.2", 5555, nil)), ActDrop, ReasonProtocol},
		{"UDP to the encapsulation port", &Policy{Allow: mustList("10.77.0.0/16"), InnerUDPPorts: []uint16{5555}, Local: local}, ipip("10.77.1.1", "10.77.1.2", udp("10.77.255.1", "10.77.255.2", 5555, nil)), ActForward, 0},
		{"UDP 53 with the hook set", &Policy{Allow: mustList("10.77.0.0/16"), InnerUDPPorts: []uint16{5555}, Local: local}, ipip("10.77.1.1", "10.77.1.2", udp("10.77.255.1", "10.77.255.2", 53, dns)), ActDrop, ReasonProtocol},
		{"plain split: source from, destination to", &Policy{From: mustList("10.77.9.0/24"), To: mustList("10.77.255.2"), Local: local, Plain: true}, tcp("10.77.9.1", "10.77.255.2"), ActForward, 0},
		{"plain split: destination not in to", &Policy{From: mustList("10.77.9.0/24"), To: mustList("10.77.255.2"), Local: local, Plain: true}, tcp("10.77.9.1", "10.77.255.3"), ActDrop, ReasonNotAllowed},
	} {
		buf := append([]byte(nil), tc.pkt...)
		v := Classify(tc.p, buf, nil)
		if v.Action != tc.act || v.Reason != tc.reason {
			t.Errorf("%s: action %d reason %v, want action %d reason %v", tc.name, v.Action, v.Reason, tc.act, tc.reason)
		}
	}
}

// Through a running relay: a spoofed outer source's UDP to port 53 of a third host is
// dropped and counted, while the TCP after it is forwarded.
func TestRelaySpoofedDNSNotForwarded(t *testing.T) {
	r, src, sink := startRelay(t, Config{Allow: mustList("10.77.0.0/16"), Mode: ModeForward})
	dns := udp("10.77.255.1", "10.77.9.9", 53, []byte("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01"))
	for i := 0; i < 100; i++ {
		src.ch <- ipip("10.77.1.1", "10.77.1.2", dns)
	}
	good := ipv4("10.77.255.1", "10.77.255.2", protoTCP, 64, 0, []byte("after"))
	src.ch <- ipip("10.77.1.1", "10.77.1.2", good)
	got := recvN(t, sink, 1, 5*time.Second)
	if got[0].dst != netip.MustParseAddr("10.77.255.2") {
		t.Fatalf("forwarded to %v, want only the TCP packet to 10.77.255.2", got[0].dst)
	}
	// The relay counts a packet after sending it: wait for the count, not only the drops.
	st := waitStats(t, r, func(s Stats) bool { return s.Dropped[ReasonProtocol] == 100 && s.Forwarded[KindForward] >= 1 })
	if st.Forwarded[KindForward] != 1 {
		t.Errorf("forwarded %d, want 1", st.Forwarded[KindForward])
	}
	select {
	case s := <-sink.ch:
		t.Errorf("also sent a packet to %v", s.dst)
	default:
	}
}
