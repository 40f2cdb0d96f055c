package raw

import (
	"net/netip"
	"testing"
	"time"
)

func TestParseEncap(t *testing.T) {
	for in, want := range map[string]Encap{
		"": {}, "ipip": {}, "udp": {Kind: EncapUDP, Port: DefaultUDPPort}, "udp:4000": {Kind: EncapUDP, Port: 4000},
	} {
		got, err := ParseEncap(in)
		if err != nil || got != want {
			t.Errorf("ParseEncap(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"gre", "udp:", "udp:0", "udp:70000", "udp:x"} {
		if _, err := ParseEncap(bad); err == nil {
			t.Errorf("ParseEncap(%q) accepted", bad)
		}
	}
	if (Encap{}).MSSFor(1500) != 1440 || (Encap{Kind: EncapUDP}).MSSFor(1500) != 1432 || (Encap{Kind: EncapUDP}).MSSFor(1492) != 1424 {
		t.Error("MSSFor")
	}
}

var (
	exitFlow   = netip.MustParseAddrPort("10.77.255.2:7000")
	clientFlow = netip.MustParseAddrPort("10.0.0.5:61001")
	nat1       = netip.MustParseAddrPort("198.51.100.1:40001")
	nat1b      = netip.MustParseAddrPort("198.51.100.7:40999") // nat1 after a rebinding
	nat2       = netip.MustParseAddrPort("203.0.113.1:5555")
	spoof      = netip.MustParseAddrPort("192.0.2.66:5555")
)

func TestReturnTableLearnsOnlyAuthorized(t *testing.T) {
	rt := newReturnTable(4)
	now := time.Unix(1000, 0)
	// Handshake: not authorized yet. The SYN-ACK goes back where the SYN came from
	// (pending), but nothing is learned for the client.
	rt.learn(exitFlow, clientFlow, 0, 2, nat1, now)
	if ep, ok := rt.lookup(exitFlow, clientFlow, 0, now); !ok || ep != nat1 {
		t.Fatalf("handshake answer goes to %v %v, want %v", ep, ok, nat1)
	}
	if len(rt.snapshot()) != 0 {
		t.Fatal("learned from an unauthenticated flow")
	}
	if !rt.usable(clientFlow.Addr(), 3) {
		t.Fatal("a client not heard from yet has slots turned off")
	}
	rt.authorize(exitFlow, clientFlow, true)
	rt.learn(exitFlow, clientFlow, 0, 2, nat1, now)
	// The client announces two paths: slots 2 and 3 are off for its flows.
	for p, want := range []bool{true, true, false, false} {
		if rt.usable(clientFlow.Addr(), p) != want {
			t.Errorf("slot %d usable %v, want %v", p, !want, want)
		}
	}
	rt.learn(exitFlow, clientFlow, 1, 2, nat2, now)
	for p, want := range map[int]netip.AddrPort{0: nat1, 1: nat2} {
		if ep, _ := rt.lookup(exitFlow, clientFlow, p, now); ep != want {
			t.Errorf("path %d -> %v, want %v", p, ep, want)
		}
	}
	// Slots the client does not use map onto the ones it does.
	if a, _ := rt.lookup(exitFlow, clientFlow, 2, now); a != nat1 {
		t.Errorf("slot 2 -> %v", a)
	}
	if a, _ := rt.lookup(exitFlow, clientFlow, 3, now); a != nat2 {
		t.Errorf("slot 3 -> %v", a)
	}

	// Spoofed packets claiming the client's path 0: from a flow that never authenticated
	// (wrong key or none: the exit refused it), same client address, other port.
	forged := netip.AddrPortFrom(clientFlow.Addr(), 61002)
	for i := 0; i < 2*pendingSlots; i++ {
		rt.learn(exitFlow, forged, 0, 4, spoof, now)
	}
	if rt.usable(clientFlow.Addr(), 2) {
		t.Error("spoofed packets announcing four paths turned slot 2 on")
	}
	if ep, _ := rt.lookup(exitFlow, clientFlow, 0, now); ep != nat1 {
		t.Fatalf("spoofed packets moved path 0 to %v", ep)
	}
	// The authenticated flow itself answers on the learned endpoint even for the forged
	// flow's segments (the client's learned path wins over a handshake's source).
	if ep, _ := rt.lookup(exitFlow, forged, 0, now); ep != nat1 {
		t.Errorf("forged flow's segments go to %v, want the learned %v", ep, nat1)
	}

	// Rebinding: the first authenticated packet from the new address moves the path.
	moved, old := rt.learn(exitFlow, clientFlow, 0, 2, nat1b, now.Add(time.Second))
	if !moved || old != nat1 {
		t.Fatalf("rebinding: moved=%v old=%v", moved, old)
	}
	if ep, _ := rt.lookup(exitFlow, clientFlow, 0, now); ep != nat1b {
		t.Fatalf("after rebinding path 0 -> %v", ep)
	}
	// Once the flow is gone, its packets teach nothing more.
	rt.authorize(exitFlow, clientFlow, false)
	rt.learn(exitFlow, clientFlow, 0, 2, spoof, now.Add(2*time.Second))
	if ep, _ := rt.lookup(exitFlow, clientFlow, 0, now.Add(2*time.Second)); ep != nat1b {
		t.Fatalf("a deauthorized flow moved path 0 to %v", ep)
	}
	// Path indices beyond the slots are ignored.
	rt.authorize(exitFlow, clientFlow, true)
	if m, _ := rt.learn(exitFlow, clientFlow, 4, 2, spoof, now); m {
		t.Fatal("learned a path beyond the slots")
	}
}

func TestReturnTableBounds(t *testing.T) {
	rt := newReturnTable(2)
	now := time.Unix(1000, 0)
	// Pending (handshake) entries live in a ring: a flood overwrites old ones, the map
	// never grows past it.
	for i := 0; i < 3*pendingSlots; i++ {
		r := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 1000)
		rt.learn(exitFlow, r, 0, 2, spoof, now)
	}
	if len(rt.pending) != pendingSlots {
		t.Fatalf("%d pending entries, want %d", len(rt.pending), pendingSlots)
	}
	// Pending entries expire.
	if _, ok := rt.lookup(exitFlow, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, 11, 255}), 1000), 0, now.Add(pendingMaxAge+time.Second)); ok {
		t.Error("stale handshake endpoint used")
	}
	// Clients: at most MaxLearnedClients; the least recently seen makes room.
	for i := 0; i < MaxLearnedClients+10; i++ {
		c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)}), 1000)
		rt.authorize(exitFlow, c, true)
		rt.learn(exitFlow, c, 0, 2, nat1, now.Add(time.Duration(i)*time.Millisecond))
	}
	if n := len(rt.clients); n != MaxLearnedClients {
		t.Fatalf("%d clients, want %d", n, MaxLearnedClients)
	}
	if _, ok := rt.clients[netip.AddrFrom4([4]byte{10, 2, 0, 0})]; ok {
		t.Error("the oldest client survived")
	}
	// A client not heard from for LearnedMaxAge is not answered from stale state.
	c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 2, 16, 9}), 1000)
	if _, ok := rt.lookup(exitFlow, c, 0, now.Add(LearnedMaxAge+time.Minute)); ok {
		t.Error("stale client endpoint used")
	}
}
