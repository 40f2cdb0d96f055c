package raw

import (
	"bytes"
	"net/netip"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"mpath/tcpseg"
)

// TestTCPHeadersMatchTCP: the headers TCPHeaders writes, followed by the payload, are
// byte for byte the packet TCP writes (lengths and checksums cover the payload).
func TestTCPHeadersMatchTCP(t *testing.T) {
	for _, n := range []int{0, 1, 3, 64, 1399, 1440} {
		for _, opts := range []tcpseg.Options{{}, {HasTimestamp: true, TSVal: 7, TSEcr: 9},
			{HasTimestamp: true, NSACK: 2, SACK: [tcpseg.MaxSACKBlocks]tcpseg.SACKBlock{{Left: 1, Right: 2}, {Left: 5, Right: 9}}}} {
			payload := make([]byte, n)
			for i := range payload {
				payload[i] = byte(i*7 + n)
			}
			seg := tcpseg.Segment{Src: netip.MustParseAddrPort("10.1.2.3:40000"), Dst: netip.MustParseAddrPort("10.4.5.6:443"),
				Seq: 1 << 31, Ack: 12345, Flags: tcpseg.FlagACK | tcpseg.FlagPSH, Window: 999, Options: opts, Payload: payload}
			var a, b Encoder
			a.PathID, b.PathID = 3, 3
			want, err := a.TCP(&seg)
			if err != nil {
				t.Fatal(err)
			}
			hdr, err := b.TCPHeaders(&seg)
			if err != nil {
				t.Fatal(err)
			}
			if got := append(append([]byte(nil), hdr...), payload...); !bytes.Equal(got, want) {
				t.Fatalf("payload %d, options %+v: headers+payload\n%x\nwant\n%x", n, opts, got, want)
			}
		}
	}
}

// TestUDPBatchBuild: runs of equal-size packets to one destination become one GSO
// message (the last may be shorter), bounded by UDP_MAX_SEGMENTS and the datagram size;
// without GSO every packet is a message of its own.
func TestUDPBatchBuild(t *testing.T) {
	A, B := netip.MustParseAddrPort("10.0.0.1:5555"), netip.MustParseAddrPort("10.0.0.2:5555")
	mk := func(spec ...any) []udpPacket {
		var ps []udpPacket
		for i := 0; i < len(spec); i += 3 {
			count, size, dst := spec[i].(int), spec[i+1].(int), spec[i+2].(netip.AddrPort)
			for range count {
				ps = append(ps, udpPacket{hdr: make([]byte, 40), payload: make([]byte, size-40), dst: dst})
			}
		}
		return ps
	}
	cases := []struct {
		name  string
		pkts  []udpPacket
		gso   bool
		taken int
		msgs  []int // packets per message
	}{
		{"runs", mk(5, 1000, A, 1, 500, A, 3, 1000, B, 1, 1000, A), true, 10, []int{6, 3, 1}},
		{"no gso", mk(5, 1000, A, 1, 500, A), false, 6, []int{1, 1, 1, 1, 1, 1}},
		{"bigger ends run", mk(2, 500, A, 2, 1000, A), true, 4, []int{2, 2}},
		{"batch cap", mk(70, 100, A), true, 64, []int{64}},
		{"datagram cap", mk(50, 1480, A), true, 50, []int{44, 6}},
		{"header only", mk(3, 40, A), true, 3, []int{3}},
	}
	for _, c := range cases {
		var b udpBatch
		taken := b.build(c.pkts, c.gso)
		if taken != c.taken || b.n != len(c.msgs) {
			t.Fatalf("%s: took %d packets in %d messages, want %d in %d", c.name, taken, b.n, c.taken, len(c.msgs))
		}
		p := 0
		for m, want := range c.msgs {
			h := &b.hdrs[m].Msg
			if b.npkts[m] != want {
				t.Fatalf("%s: message %d holds %d packets, want %d", c.name, m, b.npkts[m], want)
			}
			first := c.pkts[p]
			size := 0
			iovs := unsafe.Slice(h.Iov, h.Iovlen)
			for _, v := range iovs {
				size += int(v.Len)
			}
			wantSize := 0
			for _, q := range c.pkts[p : p+want] {
				wantSize += q.size()
				if q.dst != first.dst {
					t.Fatalf("%s: message %d mixes destinations", c.name, m)
				}
			}
			if size != wantSize || b.nbyte[m] != wantSize {
				t.Fatalf("%s: message %d has %d bytes in its iovecs (%d counted), want %d", c.name, m, size, b.nbyte[m], wantSize)
			}
			a := (*unix.RawSockaddrInet4)(unsafe.Pointer(h.Name))
			if a.Addr != first.dst.Addr().As4() || a.Port != htons(first.dst.Port()) {
				t.Fatalf("%s: message %d to %v:%d, want %v", c.name, m, a.Addr, htons(a.Port), first.dst)
			}
			switch {
			case want > 1:
				if h.Control == nil {
					t.Fatalf("%s: message %d of %d packets has no UDP_SEGMENT", c.name, m, want)
				}
				cm := unsafe.Slice(h.Control, h.Controllen)
				ch := (*unix.Cmsghdr)(unsafe.Pointer(&cm[0]))
				seg := *(*uint16)(unsafe.Pointer(&cm[unix.CmsgLen(0)]))
				if ch.Level != unix.SOL_UDP || ch.Type != unix.UDP_SEGMENT || int(seg) != first.size() {
					t.Fatalf("%s: message %d cmsg level %d type %d size %d, want UDP_SEGMENT %d", c.name, m, ch.Level, ch.Type, seg, first.size())
				}
			case h.Control != nil:
				t.Fatalf("%s: message %d of one packet has a control message", c.name, m)
			}
			p += want
		}
		b.clear()
	}
}
