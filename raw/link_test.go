package raw

import (
	"bytes"
	"context"
	"crypto/sha256"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"mpath/raw/rawtest"
	"mpath/tcp"
)

// twoPaths is namespaces a and b joined by two veth pairs, path i being
// va<i> 10.9.<i>.1/24 <-> vb<i> 10.9.<i>.2/24. Each side treats the other's veth
// address as the "relay" of the path: the degenerate topology without relays in between.
type twoPaths struct {
	a, b *rawtest.Netns
}

func newTwoPaths(t *testing.T) *twoPaths {
	rawtest.SkipUnlessRoot(t)
	tp := &twoPaths{a: rawtest.NewNetns(t, "rawl"), b: rawtest.NewNetns(t, "rawl")}
	rawtest.Veth(t, tp.a, "va1", "10.9.1.1/24", tp.b, "vb1", "10.9.1.2/24")
	rawtest.Veth(t, tp.a, "va2", "10.9.2.1/24", tp.b, "vb2", "10.9.2.2/24")
	return tp
}

func newLinkIn(t *testing.T, ns *rawtest.Netns, cfg LinkConfig) *Link {
	t.Helper()
	var l *Link
	if err := ns.Do(func() (err error) { l, err = NewLink(cfg); return err }); err != nil {
		t.Fatalf("NewLink in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

var (
	linkAddrA = netip.MustParseAddr("10.77.255.1")
	linkAddrB = netip.MustParseAddr("10.77.255.2")
)

// sink is a deliver callback that copies payloads into a preallocated stream buffer by
// sequence number, without allocating.
type sink struct {
	mu     sync.Mutex
	isn    uint32
	buf    []byte
	got    int // payload bytes delivered
	segs   int
	bad    int // segments outside the buffer or with the wrong addresses
	want   netip.AddrPort
	signal chan struct{}
}

func newSink(size int, isn uint32, want netip.AddrPort) *sink {
	return &sink{isn: isn, buf: make([]byte, size), want: want, signal: make(chan struct{}, 1)}
}

func (s *sink) deliver(segs []tcp.Segment) {
	s.mu.Lock()
	for i := range segs {
		seg := &segs[i]
		off := int(seg.Seq - s.isn)
		if seg.Dst != s.want || off < 0 || off+len(seg.Payload) > len(s.buf) {
			s.bad++
			continue
		}
		copy(s.buf[off:], seg.Payload)
		s.got += len(seg.Payload)
		s.segs++
	}
	s.mu.Unlock()
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

func (s *sink) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		ok := cond()
		s.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-s.signal:
		case <-deadline.C:
			s.mu.Lock()
			defer s.mu.Unlock()
			t.Fatalf("timed out waiting for %s: %d segments, %d bytes, %d bad", what, s.segs, s.got, s.bad)
		}
	}
}

func TestLinkTransfer(t *testing.T) {
	tp := newTwoPaths(t)
	table := rawtest.UniqueName("rawl")
	la := newLinkIn(t, tp.a, LinkConfig{
		Paths: []PathConfig{{Dev: "va1", Relay: netip.MustParseAddr("10.9.1.2")}, {Dev: "va2", Relay: netip.MustParseAddr("10.9.2.2")}},
		Addr:  linkAddrA, Ports: []PortRange{{40000, 40009}},
	})
	lb := newLinkIn(t, tp.b, LinkConfig{
		Paths: []PathConfig{{Dev: "vb1", Relay: netip.MustParseAddr("10.9.1.1")}, {Dev: "vb2", Relay: netip.MustParseAddr("10.9.2.1")}},
		Addr:  linkAddrB, Ports: []PortRange{{8080, 8080}}, Guard: true, GuardTable: table,
	})
	if out := tp.b.MustRun(t, "nft", "list", "table", "ip", table); !strings.Contains(out, "8080") || !strings.Contains(out, "10.9.1.1") {
		t.Errorf("guard ruleset:\n%s", out)
	}
	if !lb.Stats().GuardOwned {
		t.Error("guard not owned")
	}

	src := netip.AddrPortFrom(linkAddrA, 40003)
	dst := netip.AddrPortFrom(linkAddrB, 8080)
	const isn = 0xffff0000
	data := make([]byte, 3<<20)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	sb := newSink(len(data), isn, dst)
	sa := newSink(1000, 7, src)
	ctx, cancel := context.WithCancel(context.Background())
	runs := make(chan error, 2)
	go func() { runs <- lb.Run(ctx, sb.deliver) }()
	go func() { runs <- la.Run(ctx, sa.deliver) }()

	// a -> b: segments alternate between the paths, 32 per Send, waiting for each window
	// to arrive (integrity test: BenchmarkLinkSendReceive measures speed).
	const mss = 1428
	segs := make([]tcp.Segment, 0, 32)
	var perPath [2]int
	window, sentBytes := 0, 0
	flush := func(path int) {
		if err := la.Send(path, segs); err != nil {
			t.Fatalf("Send: %v", err)
		}
		perPath[path] += len(segs)
		segs = segs[:0]
	}
	for off, k := 0, 0; off < len(data); k++ {
		n := min(mss, len(data)-off)
		segs = append(segs, tcp.Segment{Src: src, Dst: dst, Seq: isn + uint32(off), Ack: 1, Flags: tcp.FlagACK, Window: 512,
			Options: tcp.Options{HasTimestamp: true, TSVal: uint32(k)}, Payload: data[off : off+n]})
		off += n
		sentBytes += n
		if len(segs) == cap(segs) || off == len(data) {
			flush(k / 32 % 2)
			window++
			if window%8 == 0 || off == len(data) {
				want := sentBytes
				sb.waitFor(t, "window", func() bool { return sb.got >= want })
			}
		}
	}
	sb.mu.Lock()
	if sha256.Sum256(sb.buf) != sha256.Sum256(data) || sb.bad != 0 {
		t.Fatalf("data differs at b (sha256), %d bad segments", sb.bad)
	}
	sb.mu.Unlock()

	// b -> a over path 1.
	back := []tcp.Segment{{Src: dst, Dst: src, Seq: 7, Flags: tcp.FlagACK, Payload: []byte("reply")}}
	if err := lb.Send(1, back); err != nil {
		t.Fatal(err)
	}
	sa.waitFor(t, "reply at a", func() bool { return sa.got == 5 && string(sa.buf[:5]) == "reply" })

	// Zero allocations per packet on send (and on b's receive path, which runs meanwhile:
	// AllocsPerRun counts the whole process).
	allocSegs := make([]tcp.Segment, 16)
	for i := range allocSegs {
		allocSegs[i] = tcp.Segment{Src: src, Dst: dst, Seq: isn + uint32(i*mss), Flags: tcp.FlagACK, Payload: data[i*mss : (i+1)*mss]}
	}
	if allocs := testing.AllocsPerRun(50, func() { la.Send(0, allocSegs) }); allocs != 0 && !raceEnabled {
		t.Errorf("Link.Send + receive: %v allocs per batch of 16, want 0", allocs)
	}

	// What b must drop and count: a segment to another inner address, a corrupted one.
	// (IPIP to a port outside Ports never reaches the Link: the kernel filter drops it.)
	enc := NewEncoder()
	raw := newSenderIn(t, tp.a)
	notOurs, _ := enc.IPIP(netip.MustParseAddr("10.9.1.1"), netip.MustParseAddr("10.9.1.2"),
		&tcp.Segment{Src: src, Dst: netip.AddrPortFrom(netip.MustParseAddr("10.77.255.9"), 8080), Payload: []byte("x")})
	notOurs = append([]byte(nil), notOurs...)
	corrupt, _ := enc.IPIP(netip.MustParseAddr("10.9.1.1"), netip.MustParseAddr("10.9.1.2"),
		&tcp.Segment{Src: src, Dst: dst, Seq: isn, Payload: []byte("corrupt")})
	corrupt = append([]byte(nil), corrupt...)
	corrupt[len(corrupt)-1] ^= 0xff
	filtered, _ := enc.IPIP(netip.MustParseAddr("10.9.1.1"), netip.MustParseAddr("10.9.1.2"),
		&tcp.Segment{Src: src, Dst: netip.AddrPortFrom(linkAddrB, 9999), Payload: []byte("y")})
	filtered = append([]byte(nil), filtered...)
	if _, err := raw.Send([][]byte{notOurs, corrupt, filtered}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := lb.Stats()
		if st.Drops[DropNotOurs] == 1 && st.Drops[DropChecksum] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("drops %v, want one not-ours and one checksum", st.Drops)
		}
		// Poll on the observable counters; the receive loop updates them as it goes.
		select {
		case <-sb.signal:
		case <-time.After(10 * time.Millisecond):
		}
	}

	cancel()
	for range 2 {
		if err := <-runs; err != nil {
			t.Errorf("Run after cancel: %v", err)
		}
	}
	sta, stb := la.Stats(), lb.Stats()
	for i := range 2 {
		if sta.Paths[i].TxErrors != 0 || sta.Paths[i].TxPackets < uint64(perPath[i]) {
			t.Errorf("a path %d: %+v, sent %d", i, sta.Paths[i], perPath[i])
		}
		if stb.Paths[i].RxPackets < uint64(perPath[i]) {
			t.Errorf("b path %d: received %d, a sent %d", i, stb.Paths[i].RxPackets, perPath[i])
		}
	}
	if sta.Paths[1].RxPackets != 1 {
		t.Errorf("a path 1 rx %d, want 1", sta.Paths[1].RxPackets)
	}
	if err := lb.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if out := tp.b.MustRun(t, "nft", "list", "tables"); strings.Contains(out, table) {
		t.Errorf("guard table left after Close:\n%s", out)
	}
	t.Logf("a: %+v", sta.Paths)
	t.Logf("b: %+v drops %v", stb.Paths, stb.Drops)
}

func TestLinkConfigErrors(t *testing.T) {
	if _, err := NewLink(LinkConfig{Addr: linkAddrA}); err == nil {
		t.Error("no paths accepted")
	}
	if _, err := NewLink(LinkConfig{Paths: []PathConfig{{Relay: linkAddrB}}, Addr: netip.MustParseAddr("::1")}); err == nil {
		t.Error("IPv6 address accepted")
	}
	if _, err := NewLink(LinkConfig{Paths: []PathConfig{{Relay: linkAddrB}}, Addr: linkAddrA}); err == nil {
		t.Error("path without Dev or Local accepted")
	}
	if _, err := NewLink(LinkConfig{Paths: []PathConfig{{Dev: "does-not-exist0", Relay: linkAddrB}}, Addr: linkAddrA}); err == nil {
		t.Error("missing device accepted")
	}
}

// BenchmarkLinkSendReceive: Link.Send on two paths in one namespace, Link.Run in the
// other; packets/s delivered and allocations of both sides together.
func BenchmarkLinkSendReceive(b *testing.B) {
	rawtest.SkipUnlessRoot(b)
	b.Run("encap=ipip", func(b *testing.B) { benchLink(b, Encap{}) })
	b.Run("encap=udp", func(b *testing.B) { benchLink(b, Encap{Kind: EncapUDP, Port: 5555}) })
}

func benchLink(b *testing.B, encap Encap) {
	a, bb := rawtest.NewNetns(b, "rawl"), rawtest.NewNetns(b, "rawl")
	rawtest.Veth(b, a, "va1", "10.9.1.1/24", bb, "vb1", "10.9.1.2/24")
	var la, lb *Link
	if err := a.Do(func() (err error) {
		la, err = NewLink(LinkConfig{Paths: []PathConfig{{Dev: "va1", Relay: netip.MustParseAddr("10.9.1.2")}}, Addr: linkAddrA, Ports: []PortRange{{40000, 40000}}, Encap: encap})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer la.Close()
	if err := bb.Do(func() (err error) {
		lb, err = NewLink(LinkConfig{Paths: []PathConfig{{Dev: "vb1", Relay: netip.MustParseAddr("10.9.1.1")}}, Addr: linkAddrB, Ports: []PortRange{{8080, 8080}}, Encap: encap})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer lb.Close()
	s := newSink(1<<20, 0, netip.AddrPortFrom(linkAddrB, 8080))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { lb.Run(ctx, s.deliver); close(done) }()
	payload := make([]byte, 1400)
	segs := make([]tcp.Segment, 32)
	for i := range segs {
		segs[i] = tcp.Segment{Src: netip.AddrPortFrom(linkAddrA, 40000), Dst: netip.AddrPortFrom(linkAddrB, 8080), Flags: tcp.FlagACK, Payload: payload}
	}
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	cpu0 := processCPU()
	for i := 0; i < b.N; i += len(segs) {
		n := min(len(segs), b.N-i)
		la.Send(0, segs[:n])
	}
	elapsed := time.Since(start)
	b.StopTimer()
	sent := la.Stats().Paths[0].TxPackets
	deadline := time.NewTimer(3 * time.Second)
	for lb.Stats().Paths[0].RxPackets < sent {
		select {
		case <-s.signal:
		case <-deadline.C:
		}
		if !deadline.Stop() {
			break
		}
		deadline.Reset(3 * time.Second)
	}
	cpu := processCPU() - cpu0 // both ends and the kernel's work for them (softirq on these CPUs)
	cancel()
	<-done
	st := lb.Stats()
	if gb := float64(st.Paths[0].RxPackets) * float64(len(payload)) / 1e9; gb > 0 {
		b.ReportMetric(cpu.Seconds()/gb, "cpu-s/GB")
	}
	b.ReportMetric(float64(sent)/elapsed.Seconds(), "sent-pkts/s")
	b.ReportMetric(float64(st.Paths[0].RxPackets)/elapsed.Seconds(), "recv-pkts/s")
	b.ReportMetric(float64(st.Drops[DropRingFull]), "ring-drops")
}

// processCPU is the user+system CPU time of this process so far.
func processCPU() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestLinkUDPGSO: a burst of full-size segments over a UDP path arrives byte for byte,
// and (where the kernel has UDP GSO) left in fewer datagrams than packets.
func TestLinkUDPGSO(t *testing.T) {
	tp := newTwoPaths(t)
	encap := Encap{Kind: EncapUDP, Port: 5555}
	la := newLinkIn(t, tp.a, LinkConfig{Paths: []PathConfig{{Dev: "va1", Relay: netip.MustParseAddr("10.9.1.2")}},
		Addr: linkAddrA, Ports: []PortRange{{40000, 40000}}, Encap: encap})
	lb := newLinkIn(t, tp.b, LinkConfig{Paths: []PathConfig{{Dev: "vb1", Relay: netip.MustParseAddr("10.9.1.1")}},
		Addr: linkAddrB, Ports: []PortRange{{8080, 8080}}, Encap: encap, Guard: true, GuardTable: rawtest.UniqueName("rawg")})
	u := la.paths[0].udp
	if u == nil {
		t.Fatal("the UDP path has no UDP socket")
	}
	src, dst := netip.AddrPortFrom(linkAddrA, 40000), netip.AddrPortFrom(linkAddrB, 8080)
	const isn, mss, nseg = 1000, 1400, 300
	data := make([]byte, nseg*mss-17) // the last segment shorter
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	sb := newSink(len(data), isn, dst)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go lb.Run(ctx, sb.deliver)
	var segs []tcp.Segment
	for off := 0; off < len(data); off += mss {
		segs = append(segs, tcp.Segment{Src: src, Dst: dst, Seq: uint32(isn + off), Flags: tcp.FlagACK, Window: 100,
			Payload: data[off:min(off+mss, len(data))]})
	}
	for i := 0; i < len(segs); i += 50 {
		if err := la.Send(0, segs[i:min(i+50, len(segs))]); err != nil {
			t.Fatal(err)
		}
		sb.waitFor(t, "a window", func() bool { return sb.segs >= min(i+50, len(segs)) })
	}
	if sb.bad != 0 || !bytes.Equal(sb.buf, data) {
		t.Fatalf("%d bad segments; stream equal: %v", sb.bad, bytes.Equal(sb.buf, data))
	}
	pk, dg := u.sent.Load(), u.datagrams.Load()
	t.Logf("%d packets in %d datagrams (GSO %v)", pk, dg, u.gso.Load())
	if pk != uint64(len(segs)) || la.Stats().Paths[0].TxPackets != pk {
		t.Fatalf("UDP socket sent %d packets, link counted %d, want %d", pk, la.Stats().Paths[0].TxPackets, len(segs))
	}
	if u.gso.Load() && dg*4 > pk {
		t.Fatalf("GSO on, yet %d packets took %d datagrams", pk, dg)
	}
}
