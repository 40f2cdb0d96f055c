package relay_test

// Root tests: real `mpath relay` processes in a lab (network namespaces), IPIP built with
// raw.Encoder sent from the client namespace, captured in the exit namespace.

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"mpath/lab"
	"mpath/lab/labtest"
	"mpath/raw"
	"mpath/tcp"
)

// record is one packet captured in a namespace.
type record struct {
	at   time.Time
	pkt  []byte
	info raw.Info
	seg  tcp.Segment // Payload copied
	ok   bool        // decoded as IPv4/TCP or IPIP/TCP
	icmp bool        // an ICMP packet
	src  netip.Addr  // outer (or only) source
}

// capture records every inbound IPv4 packet of a namespace (a raw.Receiver on all its
// interfaces).
type capture struct {
	mu   sync.Mutex
	recs []record
	src  *raw.Receiver
}

func startCapture(t *testing.T, ns string) *capture {
	t.Helper()
	var ps *raw.Receiver
	if err := lab.Do(ns, func() (err error) {
		ps, err = raw.NewReceiver(raw.ReceiverConfig{RingBytes: 32 << 20}) // see relay.RingBytes
		return err
	}); err != nil {
		t.Fatal(err)
	}
	c := &capture{src: ps}
	done := make(chan struct{})
	go func() {
		defer close(done)
		dec := raw.NewDecoder()
		for {
			err := ps.ReadBatch(func(pkt []byte, _ int) {
				r := record{at: time.Now(), pkt: bytes.Clone(pkt)}
				if len(pkt) >= 20 {
					r.icmp = pkt[9] == 1
					r.src = netip.AddrFrom4([4]byte(pkt[12:16]))
				}
				info, err := dec.Decode(r.pkt, &r.seg)
				if err == nil {
					r.ok, r.info = true, info
				}
				c.mu.Lock()
				c.recs = append(c.recs, r)
				c.mu.Unlock()
			})
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { ps.Close(); <-done })
	return c
}

// matching returns the decoded TCP records to dstPort from srcPort.
func (c *capture) matching(srcPort, dstPort uint16) []record {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []record
	for _, r := range c.recs {
		if r.ok && r.seg.Src.Port() == srcPort && r.seg.Dst.Port() == dstPort {
			out = append(out, r)
		}
	}
	return out
}

func (c *capture) icmpFrom(addrs ...netip.Addr) []record {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []record
	for _, r := range c.recs {
		if r.icmp && (len(addrs) == 0 || slices.Contains(addrs, r.src)) {
			out = append(out, r)
		}
	}
	return out
}

// waitFor polls until cond holds or the deadline passes.
func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling an observable condition
	}
}

// sender sends raw IPv4 packets from a namespace (a raw.Sender).
type sender struct {
	rs *raw.Sender
}

func newSender(t *testing.T, ns string) *sender {
	t.Helper()
	var rs *raw.Sender
	if err := lab.Do(ns, func() (err error) {
		rs, err = raw.NewSender()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rs.Close() })
	return &sender{rs: rs}
}

func (s *sender) send(t *testing.T, pkt []byte) {
	t.Helper()
	if _, err := s.rs.Send([][]byte{pkt}); err != nil {
		t.Fatal(err)
	}
}

// ipipSeg encodes one IPIP packet over path i of l carrying payload (copied out of the
// encoder's buffer).
func ipipSeg(t *testing.T, enc *raw.Encoder, l *lab.Lab, i int, srcPort uint16, seq uint32, payload []byte) []byte {
	t.Helper()
	_, local, rel := l.ClientPath(i)
	seg := tcp.Segment{
		Src: netip.AddrPortFrom(l.ClientAddr(), srcPort), Dst: netip.AddrPortFrom(l.ExitAddr(), 5555),
		Seq: seq, Flags: tcp.FlagACK | tcp.FlagPSH, Window: 1000, Payload: payload,
	}
	b, err := enc.IPIP(local, rel, &seg)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(b)
}

func fixIPChecksum(h []byte) {
	h[10], h[11] = 0, 0
	var sum uint32
	for i := 0; i < int(h[0]&0xf)*4; i += 2 {
		sum += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(h[10:12], ^uint16(sum))
}

func TestRelayIPIPBothModes(t *testing.T) {
	labtest.RequireRoot(t)
	for _, mode := range []string{"forward", "reencap"} {
		t.Run(mode, func(t *testing.T) {
			l := labtest.New(t, lab.Config{Paths: []lab.PathSpec{{}, {}}, RelayMode: mode})
			exit := startCapture(t, l.ExitNS())
			snd := newSender(t, l.ClientNS())
			enc := raw.NewEncoder()
			rng := rand.New(rand.NewPCG(7, 7))
			const n = 300
			for i := 1; i <= l.N(); i++ {
				port := uint16(40000 + i)
				want := sha256.New()
				for k := 0; k < n; k++ {
					payload := make([]byte, rng.IntN(1400))
					for j := range payload {
						payload[j] = byte(rng.Uint32())
					}
					want.Write(payload)
					snd.send(t, ipipSeg(t, enc, l, i, port, uint32(k), payload))
				}
				waitFor(t, fmt.Sprintf("%d packets via relay %d", n, i), 10*time.Second, func() bool {
					ok := len(exit.matching(port, 5555)) >= n
					if !ok && testing.Verbose() {
						t.Logf("%d at the exit (capture %+v), relay counters %v", len(exit.matching(port, 5555)), exit.src.Stats(), nonZero(labtest.RelayMetrics(t, l, i)))
					}
					return ok
				})
				got := sha256.New()
				recs := exit.matching(port, 5555)
				_, _, xrelay := l.ExitPath(i)
				for k, r := range recs {
					if r.seg.Seq != uint32(k) {
						t.Fatalf("path %d: packet %d has seq %d", i, k, r.seg.Seq)
					}
					got.Write(r.seg.Payload)
					if r.info.InnerTTL != 63 {
						t.Fatalf("path %d: inner TTL %d, want 63", i, r.info.InnerTTL)
					}
					if mode == "forward" && r.info.IPIP {
						t.Fatalf("path %d: forward mode delivered IPIP", i)
					}
					if mode == "reencap" && (!r.info.IPIP || r.info.OuterSrc != xrelay || r.info.OuterDst != l.ExitAddr()) {
						t.Fatalf("path %d: reencap outer %v -> %v (IPIP %v), want %v -> %v", i, r.info.OuterSrc, r.info.OuterDst, r.info.IPIP, xrelay, l.ExitAddr())
					}
				}
				if len(recs) != n || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
					t.Fatalf("path %d: %d packets, sha256 of payloads differs", i, len(recs))
				}
				m := labtest.RelayMetrics(t, l, i)
				if v := m[fmt.Sprintf(`mpath_relay_forwarded_packets_total{mode=%q}`, mode)]; v != n {
					t.Fatalf("path %d: relay counted %v %s packets, want %d", i, v, mode, n)
				}
			}
		})
	}
}

func TestRelayDropsAndCounts(t *testing.T) {
	labtest.RequireRoot(t)
	l := labtest.New(t, lab.Config{Paths: []lab.PathSpec{{}}})
	exit := startCapture(t, l.ExitNS())
	client := startCapture(t, l.ClientNS())
	snd := newSender(t, l.ClientNS())
	enc := raw.NewEncoder()
	_, local, rel := l.ClientPath(1)
	_, _, xrel := l.ExitPath(1)
	payload := []byte("must not arrive")
	seg := func(src, dst netip.Addr, ttl uint8) *tcp.Segment {
		enc.TTL = ttl
		return &tcp.Segment{Src: netip.AddrPortFrom(src, 41000), Dst: netip.AddrPortFrom(dst, 5555), Flags: tcp.FlagACK, Payload: payload}
	}
	mk := func(outerSrc netip.Addr, s *tcp.Segment) []byte {
		b, err := enc.IPIP(outerSrc, rel, s)
		if err != nil {
			t.Fatal(err)
		}
		enc.TTL = 0
		return bytes.Clone(b)
	}
	stranger := netip.MustParseAddr("192.0.2.9")
	spoofed := mk(local, seg(netip.MustParseAddr("192.0.2.1"), l.ExitAddr(), 64))
	strangerOuter := mk(stranger, seg(l.ClientAddr(), l.ExitAddr(), 64))
	outside := mk(local, seg(l.ClientAddr(), netip.MustParseAddr("198.51.100.1"), 64))
	ttl1 := mk(local, seg(l.ClientAddr(), l.ExitAddr(), 1))
	toSelf := mk(local, seg(l.ClientAddr(), xrel, 64))
	outerFrag := mk(local, seg(l.ClientAddr(), l.ExitAddr(), 64))
	outerFrag[6] |= 0x20 // MF
	fixIPChecksum(outerFrag)
	innerFrag := mk(local, seg(l.ClientAddr(), l.ExitAddr(), 64))
	binary.BigEndian.PutUint16(innerFrag[26:28], 0x0010) // fragment offset 16*8
	fixIPChecksum(innerFrag[20:])
	// Nested: an IPIP packet (client host -> exit host) inside another.
	inner := mk(l.ClientAddr(), seg(l.ClientAddr(), l.ExitAddr(), 64))
	copy(inner[16:20], l.ExitAddr().AsSlice())
	fixIPChecksum(inner)
	nested := append(bytes.Clone(outerFrag[:20]), inner...)
	nested[6] &^= 0x20
	binary.BigEndian.PutUint16(nested[2:4], uint16(len(nested)))
	fixIPChecksum(nested)
	badSum := mk(local, seg(l.ClientAddr(), l.ExitAddr(), 64))
	badSum[30] ^= 0x55 // inner header checksum
	cases := []struct {
		name   string
		pkt    []byte
		reason string
		count  int
	}{
		{"spoofed inner source", spoofed, "not_allowed", 0},
		{"stranger outer source", strangerOuter, "not_allowed", 0},
		{"inner destination outside", outside, "not_allowed", 0},
		{"ttl 1", ttl1, "ttl_expired", 0},
		{"to the relay itself", toSelf, "to_self", 0},
		{"outer fragment", outerFrag, "fragment", 0},
		{"inner fragment", innerFrag, "fragment", 0},
		{"nested ipip", nested, "nested_tunnel", 0},
		{"bad inner checksum", badSum, "malformed", 0},
	}
	const each = 5
	want := map[string]float64{}
	for _, c := range cases {
		for k := 0; k < each; k++ {
			snd.send(t, c.pkt)
		}
		want[c.reason] += each
	}
	// Then good packets: when they are through, the bad ones were judged (one socket,
	// one receive goroutine, FIFO).
	for k := 0; k < 10; k++ {
		snd.send(t, ipipSeg(t, enc, l, 1, 42000, uint32(k), []byte("good")))
	}
	waitFor(t, "the good packets", 5*time.Second, func() bool { return len(exit.matching(42000, 5555)) == 10 })
	var m map[string]float64
	waitFor(t, "the drop counters", 5*time.Second, func() bool {
		m = labtest.RelayMetrics(t, l, 1)
		for reason, n := range want {
			if m[fmt.Sprintf(`mpath_relay_dropped_packets_total{reason=%q}`, reason)] != n {
				return false
			}
		}
		return true
	})
	for k, v := range m {
		if r, ok := bytes.CutPrefix([]byte(k), []byte(`mpath_relay_dropped_packets_total{reason="`)); ok {
			reason := string(bytes.TrimSuffix(r, []byte(`"}`)))
			if v != want[reason] {
				t.Errorf("dropped %s = %v, want %v", reason, v, want[reason])
			}
		}
	}
	if got := exit.matching(41000, 5555); len(got) != 0 {
		t.Fatalf("%d dropped packets reached the exit", len(got))
	}
	// No ICMP from the relay, on either side. To show the capture would see one: an
	// IPIP packet addressed to the exit host itself (no ipip module there, no guard)
	// draws a protocol-unreachable from the exit.
	probe := mk(local, seg(l.ClientAddr(), l.ExitAddr(), 64))
	copy(probe[16:20], l.ExitAddr().AsSlice())
	fixIPChecksum(probe)
	snd.send(t, probe)
	waitFor(t, "the exit's ICMP protocol-unreachable (capture check)", 5*time.Second, func() bool {
		return len(client.icmpFrom(l.ExitAddr())) > 0
	})
	if icmp := append(client.icmpFrom(rel, xrel), exit.icmpFrom(rel, xrel)...); len(icmp) != 0 {
		t.Fatalf("%d ICMP packets left the relay, first %x", len(icmp), icmp[0].pkt)
	}
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func TestRelayImpairDelay(t *testing.T) {
	labtest.RequireRoot(t)
	const delay = 50 * time.Millisecond
	l := labtest.New(t, lab.Config{Paths: []lab.PathSpec{{}, {Delay: delay}}})
	exit := startCapture(t, l.ExitNS())
	snd := newSender(t, l.ClientNS())
	enc := raw.NewEncoder()

	// One way: IPIP send time (client) to capture time (exit), same clock.
	oneWay := func(i int) time.Duration {
		port := uint16(43000 + i)
		var ds []time.Duration
		for k := 0; k < 15; k++ {
			pkt := ipipSeg(t, enc, l, i, port, uint32(k), []byte("ping"))
			at := time.Now()
			snd.send(t, pkt)
			waitFor(t, "delayed packet", 5*time.Second, func() bool { return len(exit.matching(port, 5555)) > k })
			ds = append(ds, exit.matching(port, 5555)[k].at.Sub(at))
		}
		return median(ds)
	}
	base, delayed := oneWay(1), oneWay(2)
	added := delayed - base
	t.Logf("one-way median: path 1 %v, path 2 (delay=%v) %v: added %v", base, delay, delayed, added)
	if added < delay-2*time.Millisecond || added > delay+5*time.Millisecond {
		t.Fatalf("one-way added delay %v, want %v (-2ms/+5ms)", added, delay)
	}

	// Round trip: kernel TCP connect (SYN, SYN-ACK) over each path crosses the relay twice.
	var ln net.Listener
	if err := lab.Do(l.ExitNS(), func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(l.ExitAddr(), 5003).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	rtt := func(i int) time.Duration {
		_, local, _ := l.ClientPath(i)
		var ds []time.Duration
		for k := 0; k < 9; k++ {
			d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(local, 0)), Timeout: 5 * time.Second}
			var start time.Time
			var c net.Conn
			if err := lab.Do(l.ClientNS(), func() (err error) {
				start = time.Now()
				c, err = d.Dial("tcp4", ln.Addr().String())
				return err
			}); err != nil {
				t.Fatal(err)
			}
			ds = append(ds, time.Since(start))
			c.Close()
		}
		return median(ds)
	}
	r1, r2 := rtt(1), rtt(2)
	t.Logf("TCP connect median: path 1 %v, path 2 %v: added %v", r1, r2, r2-r1)
	// Looser than one way: two relay crossings and two kernel stacks, on a shared machine.
	if d := r2 - r1; d < 2*delay-3*time.Millisecond || d > 2*delay+20*time.Millisecond {
		t.Fatalf("round trip added %v, want %v (-3ms/+20ms)", d, 2*delay)
	}
}

func TestRelayImpairLoss(t *testing.T) {
	labtest.RequireRoot(t)
	const loss, n = 0.10, 2000
	// reencap: the exit answers nothing back through the relay, so the relay's loss
	// counter sees only these packets.
	l := labtest.New(t, lab.Config{Paths: []lab.PathSpec{{Loss: loss}}, RelayMode: "reencap", Seed: 11})
	exit := startCapture(t, l.ExitNS())
	snd := newSender(t, l.ClientNS())
	enc := raw.NewEncoder()
	tick := time.NewTicker(time.Millisecond) // pacing: 4 packets a tick keeps queues short
	defer tick.Stop()
	for k := 0; k < n; k++ {
		if k%4 == 0 {
			<-tick.C
		}
		snd.send(t, ipipSeg(t, enc, l, 1, 44000, uint32(k), []byte{byte(k)}))
	}
	var m map[string]float64
	waitFor(t, "every packet judged", 10*time.Second, func() bool {
		m = labtest.RelayMetrics(t, l, 1)
		ok := m[`mpath_relay_forwarded_packets_total{mode="reencap"}`]+m[`mpath_relay_dropped_packets_total{reason="impair_loss"}`] == n
		if !ok && testing.Verbose() {
			t.Logf("relay counters: %v", nonZero(m))
		}
		return ok
	})
	fwd := m[`mpath_relay_forwarded_packets_total{mode="reencap"}`]
	waitFor(t, "forwarded packets at the exit", 5*time.Second, func() bool { return float64(len(exit.matching(44000, 5555))) == fwd })
	lost := n - len(exit.matching(44000, 5555))
	mean, sd := n*loss, math.Sqrt(n*loss*(1-loss))
	t.Logf("lost %d of %d (expected %.0f ± %.1f)", lost, n, mean, sd)
	if math.Abs(float64(lost)-mean) > 4*sd {
		t.Fatalf("lost %d of %d, want %.0f ± %.0f (4 sd)", lost, n, mean, 4*sd)
	}
}

func nonZero(m map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range m {
		if v != 0 && strings.HasPrefix(k, "mpath_relay_") {
			out[k] = v
		}
	}
	return out
}
