package raw

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"mpath/raw/rawtest"
	"mpath/tcp"
)

// TestLinkUDPLearning: a client link with two relay-less UDP paths to a learning exit
// link. The exit tells the paths apart by their tags, answers a handshake where it came
// from, learns only from authorized flows, follows an address change at once, and never
// moves for a spoofed flow.
func TestLinkUDPLearning(t *testing.T) {
	tp := newTwoPaths(t)
	table := rawtest.UniqueName("rawu")
	encap := Encap{Kind: EncapUDP, Port: 5555}
	exitIn := netip.AddrPortFrom(linkAddrB, 7000)
	ca := newLinkIn(t, tp.a, LinkConfig{
		Paths: []PathConfig{{Dev: "va1", Relay: netip.MustParseAddr("10.9.1.2")}, {Dev: "va2", Relay: netip.MustParseAddr("10.9.2.2")}},
		Addr:  linkAddrA, Ports: []PortRange{{40000, 40009}}, Encap: encap, Keepalive: 20 * time.Millisecond,
	})
	ex := newLinkIn(t, tp.b, LinkConfig{Learn: true, LearnSlots: 2, Addr: linkAddrB, Ports: []PortRange{{7000, 7000}},
		Encap: encap, Guard: true, GuardTable: table})
	if out := tp.b.MustRun(t, "nft", "list", "table", "ip", table); !strings.Contains(out, "udp dport 5555") {
		t.Errorf("guard ruleset:\n%s", out)
	}
	type rx struct {
		seg  tcp.Segment
		path int
	}
	got := func(l *Link, ns *rawtest.Netns) chan rx {
		ch := make(chan rx, 64)
		ctx := t.Context()
		go l.Run(ctx, func(segs []tcp.Segment) {
			for _, s := range segs {
				s.Payload = append([]byte(nil), s.Payload...)
				select {
				case ch <- rx{s, s.Path}:
				default:
				}
			}
		})
		return ch
	}
	exitRx, clientRx := got(ex, tp.b), got(ca, tp.a)
	expect := func(ch chan rx, what string, path int, payload string) tcp.Segment {
		t.Helper()
		timeout := time.After(5 * time.Second)
		for {
			select {
			case r := <-ch:
				if string(r.seg.Payload) != payload {
					continue
				}
				if r.path != path {
					t.Fatalf("%s: arrived on path %d, want %d", what, r.path, path)
				}
				return r.seg
			case <-timeout:
				t.Fatalf("%s: nothing arrived", what)
			}
		}
	}
	client := netip.AddrPortFrom(linkAddrA, 40001)
	seg := func(src, dst netip.AddrPort, payload string) []tcp.Segment {
		return []tcp.Segment{{Src: src, Dst: dst, Flags: tcp.FlagACK, Window: 100, Payload: []byte(payload)}}
	}
	// Handshake-like: not authorized. Both paths arrive tagged; the answer on each slot
	// goes back by the same uplink.
	for p := 0; p < 2; p++ {
		if err := ca.Send(p, seg(client, exitIn, "hello")); err != nil {
			t.Fatal(err)
		}
		expect(exitRx, "client->exit", p, "hello")
		if err := ex.Send(p, seg(exitIn, client, "answer")); err != nil {
			t.Fatal(err)
		}
		expect(clientRx, "exit->client", p, "answer")
	}
	if n := len(ex.Stats().Learned); n != 0 {
		t.Fatalf("learned %d endpoints from an unauthorized flow", n)
	}
	ex.Authorize(exitIn, client)
	for p := 0; p < 2; p++ {
		ca.Send(p, seg(client, exitIn, "data"))
		expect(exitRx, "authorized data", p, "data")
	}
	learned := map[int]netip.AddrPort{}
	for _, lp := range ex.Stats().Learned {
		learned[lp.Path] = lp.Addr
	}
	want := map[int]netip.AddrPort{0: netip.MustParseAddrPort("10.9.1.1:5555"), 1: netip.MustParseAddrPort("10.9.2.1:5555")}
	if len(learned) != 2 || learned[0] != want[0] || learned[1] != want[1] {
		t.Fatalf("learned %v, want %v", learned, want)
	}

	// Spoofed: a forged packet for the authorized flow's client address from a flow the
	// exit never authorized, claiming path 0 from a new source. Sent by hand.
	tp.a.MustRun(t, "ip", "addr", "add", "10.9.1.3/24", "dev", "va1")
	s := newSenderIn(t, tp.a)
	enc := NewEncoder()
	forged := seg(netip.AddrPortFrom(linkAddrA, 40002), exitIn, "forged")
	pkt, _ := enc.UDP(netip.MustParseAddrPort("10.9.1.3:5555"), netip.MustParseAddrPort("10.9.1.2:5555"), &forged[0])
	if _, err := s.Send([][]byte{pkt}); err != nil {
		t.Fatal(err)
	}
	expect(exitRx, "forged", 0, "forged")
	ex.Send(0, seg(exitIn, client, "still"))
	expect(clientRx, "answer after the forged packet", 0, "still")
	for _, lp := range ex.Stats().Learned {
		if lp.Path == 0 && lp.Addr != want[0] {
			t.Fatalf("a spoofed flow moved path 0 to %v", lp.Addr)
		}
	}

	// The uplink's address changes (what a NAT rebinding looks like from the exit): the
	// first authorized packet from the new address moves the path.
	ok := seg(client, exitIn, "rebound")
	pkt, _ = enc.UDP(netip.MustParseAddrPort("10.9.1.3:5555"), netip.MustParseAddrPort("10.9.1.2:5555"), &ok[0])
	s.Send([][]byte{pkt})
	expect(exitRx, "rebound", 0, "rebound")
	st := ex.Stats()
	if st.EndpointMoves != 1 {
		t.Errorf("%d endpoint moves, want 1", st.EndpointMoves)
	}
	for _, lp := range st.Learned {
		if lp.Path == 0 && lp.Addr != netip.MustParseAddrPort("10.9.1.3:5555") {
			t.Fatalf("after the address change path 0 -> %v", lp.Addr)
		}
	}

	// Keepalives go out on idle client paths: an empty UDP datagram to the port, which
	// b's capture sees (the exit's own filter and guard drop it).
	kr := newReceiverIn(t, tp.b, ReceiverConfig{Ifaces: []string{"vb2"}})
	kr.SetReadDeadline(time.Now().Add(5 * time.Second))
	seen := false
	for !seen {
		err := kr.ReadBatch(func(p []byte, _ int) {
			if len(p) == OverheadUDP && p[9] == protoUDP && p[23] == 5555&0xff && p[22] == 5555>>8 {
				seen = true
			}
		})
		if err != nil {
			t.Fatalf("no keepalive on the idle path: %v", err)
		}
	}
	if ca.Stats().Paths[1].Keepalives == 0 {
		t.Error("keepalive not counted")
	}
	if out := tp.b.MustRun(t, "nft", "list", "table", "ip", table); strings.Contains(out, "udp dport 5555 counter packets 0 ") {
		t.Errorf("the guard dropped no UDP (the kernel saw the encapsulation):\n%s", out)
	}
}

// The Link is the engine's tcp.Link (checked here: the package itself does not import
// the engine).
var _ tcp.Link = (*Link)(nil)
