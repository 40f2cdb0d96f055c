package raw

import (
	"context"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mpath/raw/rawtest"
	"mpath/tcp"
)

// pair is two namespaces joined by a veth: a (va, 10.9.0.1/24) and b (vb, 10.9.0.2/24).
type pair struct {
	a, b         *rawtest.Netns
	aAddr, bAddr netip.Addr
}

func newPair(t *testing.T) *pair {
	t.Helper()
	rawtest.SkipUnlessRoot(t)
	p := &pair{a: rawtest.NewNetns(t, "rawt"), b: rawtest.NewNetns(t, "rawt"),
		aAddr: netip.MustParseAddr("10.9.0.1"), bAddr: netip.MustParseAddr("10.9.0.2")}
	rawtest.Veth(t, p.a, "va", "10.9.0.1/24", p.b, "vb", "10.9.0.2/24")
	return p
}

func newReceiverIn(t *testing.T, ns *rawtest.Netns, cfg ReceiverConfig) *Receiver {
	t.Helper()
	var r *Receiver
	if err := ns.Do(func() (err error) { r, err = NewReceiver(cfg); return err }); err != nil {
		t.Fatalf("NewReceiver in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func newSenderIn(t *testing.T, ns *rawtest.Netns) *Sender {
	t.Helper()
	var s *Sender
	if err := ns.Do(func() (err error) { s, err = NewSender(); return err }); err != nil {
		t.Fatalf("NewSender in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// collector runs ReadBatch in a goroutine, decodes every packet and keeps what it saw.
type collector struct {
	mu      sync.Mutex
	segs    []tcp.Segment // payloads copied
	infos   []Info
	ifidx   []int
	errs    []error
	changed chan struct{}
	done    chan error
}

func collect(r *Receiver) *collector {
	c := &collector{changed: make(chan struct{}, 1), done: make(chan error, 1)}
	go func() {
		dec := NewDecoder()
		for {
			err := r.ReadBatch(func(pkt []byte, ifindex int) {
				var seg tcp.Segment
				info, err := dec.Decode(pkt, &seg)
				c.mu.Lock()
				if err != nil {
					c.errs = append(c.errs, err)
				} else {
					seg.Payload = append([]byte(nil), seg.Payload...)
					info.Inner = nil
					c.segs = append(c.segs, seg)
					c.infos = append(c.infos, info)
					c.ifidx = append(c.ifidx, ifindex)
				}
				c.mu.Unlock()
			})
			select {
			case c.changed <- struct{}{}:
			default:
			}
			if err != nil {
				c.done <- err
				return
			}
		}
	}()
	return c
}

// waitFor polls cond (under the collector's lock) until it holds or the deadline passes.
func (c *collector) waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		ok := cond()
		c.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-c.changed:
		case <-deadline.C:
			c.mu.Lock()
			defer c.mu.Unlock()
			t.Fatalf("timed out waiting for %s (have %d segments, %d errors)", what, len(c.segs), len(c.errs))
		}
	}
}

func TestSendReceiveIPIP(t *testing.T) {
	p := newPair(t)
	ports := []PortRange{{9000, 9009}}
	r := newReceiverIn(t, p.b, ReceiverConfig{Ifaces: []string{"vb"},
		Filter: FilterTCPPortsOrIPIP(ports, []netip.Prefix{netip.PrefixFrom(p.aAddr, 32)})})
	rOut := newReceiverIn(t, p.a, ReceiverConfig{Ifaces: []string{"va"}}) // sees what b sends
	sa := newSenderIn(t, p.a)
	sb := newSenderIn(t, p.b)
	col, colOut := collect(r), collect(rOut)

	// 2 MB of random bytes in segments of random size up to the most that fits the MTU.
	rng := rand.New(rand.NewPCG(7, 7))
	data := make([]byte, 2<<20)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	src := netip.MustParseAddrPort("10.77.255.1:40000")
	dst := netip.MustParseAddrPort("10.77.255.2:9003")
	enc := NewEncoder()
	const isn = 0xfffff000 // wraps during the transfer
	var pkts [][]byte
	var offs []int
	for off := 0; off < len(data); {
		n := min(1+rng.IntN(1428), len(data)-off) // 1500 - 2*20 - 20 - 12 (timestamps)
		seg := tcp.Segment{Src: src, Dst: dst, Seq: isn + uint32(off), Ack: 1, Flags: tcp.FlagACK,
			Window: 1000, Options: tcp.Options{HasTimestamp: true, TSVal: uint32(off)}, Payload: data[off : off+n]}
		pkt, err := enc.IPIP(p.aAddr, p.bAddr, &seg)
		if err != nil {
			t.Fatal(err)
		}
		pkts = append(pkts, append([]byte(nil), pkt...))
		offs = append(offs, off)
		off += n
	}
	// Packets the filter must keep out, sent between the good ones: plain TCP to a port
	// outside the range, IPIP from a source that is not a relay, IPIP to a wrong port.
	noise := func() [][]byte {
		var out [][]byte
		for _, c := range []struct {
			outer netip.Addr
			port  uint16
		}{{netip.Addr{}, 22}, {netip.MustParseAddr("10.9.0.99"), 9003}, {p.aAddr, 9010}} {
			seg := tcp.Segment{Src: src, Dst: netip.AddrPortFrom(dst.Addr(), c.port), Flags: tcp.FlagSYN}
			var pkt []byte
			var err error
			if c.outer.IsValid() {
				pkt, err = enc.IPIP(c.outer, p.bAddr, &seg)
			} else {
				seg.Dst = netip.AddrPortFrom(p.bAddr, c.port)
				pkt, err = enc.TCP(&seg)
			}
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, append([]byte(nil), pkt...))
		}
		return out
	}

	// Send in windows and wait for each (the veth backlog is finite; this test is about
	// integrity, not speed: see BenchmarkSendReceive).
	const window = 200
	for i := 0; i < len(pkts); i += window {
		batch := append(noise(), pkts[i:min(i+window, len(pkts))]...)
		n, err := sa.Send(batch)
		if err != nil || n != len(batch) {
			t.Fatalf("Send: %d of %d: %v", n, len(batch), err)
		}
		want := min(i+window, len(pkts))
		col.waitFor(t, "window", 5*time.Second, func() bool { return len(col.segs)+len(col.errs) >= want })
	}

	// b sends IPIP that its own filter would accept; it must not come back to b's
	// receiver (inbound only), while a's receiver proves it left.
	seg := tcp.Segment{Src: src, Dst: dst, Seq: 1, Flags: tcp.FlagACK, Payload: []byte("outbound")}
	out, _ := enc.IPIP(p.aAddr, p.aAddr, &seg) // outer dst a: routed out of vb
	if n, err := sb.Send([][]byte{out}); n != 1 || err != nil {
		t.Fatalf("Send from b: %d %v", n, err)
	}
	colOut.waitFor(t, "b's packet at a", 5*time.Second, func() bool {
		for _, s := range colOut.segs {
			if string(s.Payload) == "outbound" {
				return true
			}
		}
		return false
	})
	// One more inbound packet after it: when it arrives, the outbound one would have too.
	last, _ := enc.IPIP(p.aAddr, p.bAddr, &tcp.Segment{Src: src, Dst: dst, Payload: []byte("last")})
	if _, err := sa.Send([][]byte{last}); err != nil {
		t.Fatal(err)
	}
	col.waitFor(t, "last packet", 5*time.Second, func() bool { return len(col.segs) == len(pkts)+1 })

	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.errs) > 0 {
		t.Fatalf("%d decode errors, first %v", len(col.errs), col.errs[0])
	}
	got := make([]byte, len(data))
	for i, s := range col.segs[:len(pkts)] {
		if s.Src != src || s.Dst != dst || string(s.Payload) == "outbound" {
			t.Fatalf("segment %d: %v (filter or inbound-only failed)", i, &s)
		}
		if in := col.infos[i]; !in.IPIP || in.OuterSrc != p.aAddr || in.OuterDst != p.bAddr {
			t.Fatalf("segment %d info %+v", i, in)
		}
		off := int(s.Seq - isn)
		if off != offs[i] || int(s.Options.TSVal) != off {
			t.Fatalf("segment %d out of order or corrupted: offset %d, want %d", i, off, offs[i])
		}
		copy(got[off:], s.Payload)
	}
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatal("received data differs (sha256)")
	}
	var vbIndex int
	p.b.Do(func() error {
		ifi, err := net.InterfaceByName("vb")
		if err == nil {
			vbIndex = ifi.Index
		}
		return err
	})
	for _, ix := range col.ifidx {
		if ix != vbIndex {
			t.Fatalf("ifindex %d, want vb's %d", ix, vbIndex)
		}
	}
	st := r.Stats()
	if st.Packets != uint64(len(pkts)+1) || st.KernelDrops != 0 {
		t.Errorf("receiver stats %+v, want %d packets, no drops", st, len(pkts)+1)
	}
	if ss := sa.Stats(); ss.Dropped != 0 || ss.Packets < uint64(len(pkts)) {
		t.Errorf("sender stats %+v", ss)
	}
}

// TestReceiveKernelTCP: a kernel TCP client's SYN (checksum offloaded on veth, so the
// ring holds a partial checksum) decodes with a valid checksum and the kernel's options.
func TestReceiveKernelTCP(t *testing.T) {
	p := newPair(t)
	r := newReceiverIn(t, p.b, ReceiverConfig{Filter: FilterTCPPortsOrIPIP([]PortRange{{9100, 9100}}, nil)})
	col := collect(r)
	err := p.a.Do(func() error {
		d := net.Dialer{Timeout: 200 * time.Millisecond}
		c, err := d.Dial("tcp4", "10.9.0.2:9100") // nothing listens: the kernel in b answers RST
		if err == nil {
			c.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	col.waitFor(t, "the SYN", 5*time.Second, func() bool { return len(col.segs) > 0 || len(col.errs) > 0 })
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.errs) > 0 {
		t.Fatalf("decode: %v", col.errs[0])
	}
	s := col.segs[0]
	if s.Flags != tcp.FlagSYN || s.Dst != netip.MustParseAddrPort("10.9.0.2:9100") || s.Options.MSS == 0 || !s.Options.SACKPermitted || !s.Options.HasWScale {
		t.Errorf("kernel SYN decoded as %v %+v", &s, s.Options)
	}
	t.Logf("partial checksums completed: %d", r.Stats().ChecksumFixed)
}

func TestReceiverCloseAndDeadline(t *testing.T) {
	p := newPair(t)
	r := newReceiverIn(t, p.b, ReceiverConfig{Ifaces: []string{"vb"}})
	if err := r.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	err := r.ReadBatch(func([]byte, int) {})
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("after deadline: %v", err)
	}
	r.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		close(started)
		done <- r.ReadBatch(func([]byte, int) {})
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked ReadBatch returned %v, want net.ErrClosed", err)
		}
	case <-ctx.Done():
		t.Fatal("Close did not wake ReadBatch")
	}
	if err := r.ReadBatch(func([]byte, int) {}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadBatch after Close: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestReceiverRejectsLongTimeout(t *testing.T) {
	if _, err := NewReceiver(ReceiverConfig{BlockTimeout: 2 * time.Millisecond}); err == nil {
		t.Fatal("2ms block timeout accepted")
	}
}

func TestSenderClosed(t *testing.T) {
	rawtest.SkipUnlessRoot(t)
	s, err := NewSender()
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := s.Send([][]byte{make([]byte, 40)}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
}

// BenchmarkSendReceive: encode+send in one namespace, receive+decode in the other, over
// a veth pair. Reports packets/s delivered and the receiver's kernel drops.
func BenchmarkSendReceive(b *testing.B) {
	rawtest.SkipUnlessRoot(b)
	a, bb := rawtest.NewNetns(b, "rawb"), rawtest.NewNetns(b, "rawb")
	rawtest.Veth(b, a, "va", "10.9.0.1/24", bb, "vb", "10.9.0.2/24")
	aAddr, bAddr := netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("10.9.0.2")
	var r *Receiver
	var s *Sender
	if err := bb.Do(func() (err error) {
		r, err = NewReceiver(ReceiverConfig{Ifaces: []string{"vb"}, Filter: FilterTCPPortsOrIPIP([]PortRange{{9000, 9000}}, []netip.Prefix{netip.PrefixFrom(aAddr, 32)})})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	if err := a.Do(func() (err error) { s, err = NewSender(); return err }); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var received, decodeErrs int64
	var target atomic.Int64 // packets sent, known once sending is over; -1 before
	target.Store(-1)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		dec := NewDecoder()
		var seg tcp.Segment
		for {
			if tgt := target.Load(); tgt >= 0 && received+decodeErrs >= tgt {
				return
			}
			r.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			err := r.ReadBatch(func(pkt []byte, _ int) {
				if _, err := dec.Decode(pkt, &seg); err != nil {
					decodeErrs++
				} else {
					received++
				}
			})
			if err != nil {
				select {
				case <-stop:
					return
				default:
				}
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					return
				}
			}
		}
	}()
	enc := make([]Encoder, 32)
	payload := make([]byte, 1400)
	pkts := make([][]byte, 32)
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	sent := 0
	for i := 0; i < b.N; i += len(pkts) {
		n := min(len(pkts), b.N-i)
		for j := 0; j < n; j++ {
			seg := tcp.Segment{Src: testSrc, Dst: netip.AddrPortFrom(testDst.Addr(), 9000), Seq: uint32(i + j), Flags: tcp.FlagACK, Payload: payload}
			pkts[j], _ = enc[j].IPIP(aAddr, bAddr, &seg)
		}
		k, _ := s.Send(pkts[:n])
		sent += k
	}
	elapsed := time.Since(start)
	b.StopTimer()
	// Let the receiver catch up with what is in flight (lost packets never come: give up
	// after a while), then stop it.
	target.Store(int64(sent))
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		close(stop)
		<-done
	}
	b.ReportMetric(float64(sent)/elapsed.Seconds(), "sent-pkts/s")
	b.ReportMetric(float64(received)/elapsed.Seconds(), "recv-pkts/s")
	st := r.Stats()
	b.ReportMetric(float64(st.KernelDrops), "ring-drops")
	if decodeErrs > 0 {
		b.Fatalf("%d decode errors", decodeErrs)
	}
}

// TestDisableOffloads: kernel TCP over veth arrives as packets larger than the MTU until
// the sender's offloads are off.
func TestDisableOffloads(t *testing.T) {
	p := newPair(t)
	col := collect(newReceiverIn(t, p.b, ReceiverConfig{Ifaces: []string{"vb"}, Filter: FilterTCPPortsOrIPIP([]PortRange{{9400, 9400}}, nil)}))
	var ln net.Listener
	if err := p.b.Do(func() (err error) { ln, err = net.Listen("tcp4", "10.9.0.2:9400"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				buf := make([]byte, 64<<10)
				for {
					if _, err := c.Read(buf); err != nil {
						c.Close()
						return
					}
				}
			}()
		}
	}()
	blob := make([]byte, 1<<20)
	send := func() uint16 {
		var port uint16
		if err := p.a.Do(func() error {
			c, err := net.Dial("tcp4", "10.9.0.2:9400")
			if err != nil {
				return err
			}
			defer c.Close()
			port = uint16(c.LocalAddr().(*net.TCPAddr).Port)
			_, err = c.Write(blob)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return port
	}
	largest := func(port uint16) int {
		n := 0
		want := 0
		col.waitFor(t, "the transfer", 10*time.Second, func() bool {
			n, want = 0, 0
			for _, s := range col.segs {
				if s.Src.Port() == port {
					n = max(n, len(s.Payload))
					want += len(s.Payload)
				}
			}
			return want >= len(blob)
		})
		return n
	}
	if n := largest(send()); n <= 1460 {
		t.Logf("offloads on: largest payload %d (the kernel did not use TSO here)", n)
	} else {
		t.Logf("offloads on: largest payload %d", n)
	}
	if err := p.a.Do(func() error { return DisableOffloads("va") }); err != nil {
		t.Fatalf("DisableOffloads: %v", err)
	}
	if n := largest(send()); n > 1460 {
		t.Errorf("offloads off: largest payload %d, want <= 1460", n)
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.errs) > 0 {
		t.Errorf("%d decode errors (first %v): offloaded checksums not completed?", len(col.errs), col.errs[0])
	}
}

// BenchmarkReceiveLatency: one packet at a time, the time from Send to ReadBatch
// returning it. With a TPACKET_V3 ring a lone packet waits for its block to be retired by
// the block timer, so this is the timer's real granularity (<= 1 ms asked).
func BenchmarkReceiveLatency(b *testing.B) {
	rawtest.SkipUnlessRoot(b)
	a, bb := rawtest.NewNetns(b, "rawb"), rawtest.NewNetns(b, "rawb")
	rawtest.Veth(b, a, "va", "10.9.0.1/24", bb, "vb", "10.9.0.2/24")
	var r *Receiver
	var s *Sender
	if err := bb.Do(func() (err error) { r, err = NewReceiver(ReceiverConfig{Ifaces: []string{"vb"}}); return err }); err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	if err := a.Do(func() (err error) { s, err = NewSender(); return err }); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	pkt, _ := NewEncoder().IPIP(netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("10.9.0.2"), &tcp.Segment{Src: testSrc, Dst: testDst})
	pkts := [][]byte{pkt}
	lat := make([]time.Duration, 0, b.N)
	for b.Loop() {
		start := time.Now()
		if _, err := s.Send(pkts); err != nil {
			b.Fatal(err)
		}
		got := false
		for !got {
			r.SetReadDeadline(time.Now().Add(time.Second))
			if err := r.ReadBatch(func([]byte, int) { got = true }); err != nil {
				b.Fatal(err)
			}
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "max-µs")
}
