package tcp

// Fuzz targets for the endpoint (the TCP state machine with its multipath sender and
// reordering receiver), using the pair harness from statemachine_test.go.
//
//	FuzzEndpoint  operations on a connected pair: the network (deliver, drop,
//	              duplicate, reorder), the clock, and both applications (write, read,
//	              CloseWrite, Close); invariants after every step and, after a final
//	              lossless phase, every byte written has arrived.
//	FuzzInput     arbitrary segments thrown at an established endpoint.
//
// Run them with, for example:
//
//	go test ./tcp/ -run '^$' -fuzz '^FuzzEndpoint$' -fuzztime 3m -parallel 1

import (
	"encoding/binary"
	"testing"
	"time"

	"mpath/tcp/seqnum"
)

// fuzzRcvLimits are the receive windows the fuzz header picks from: from a few
// segments to a scaled megabyte.
var fuzzRcvLimits = [8]int{1 << 20, 64 << 10, 16 << 10, 6000, 1 << 16, 200_000, 12_000, 32 << 10}

var fuzzMSS = [4]int{1440, 536, 200, 1000}

// fuzzPair builds a pair from the 10-byte header:
//
//	h[0] bits 0-1: paths (1..3, 3 twice); bit 2: SYN data; bit 3: listener takes SYN
//	     data; bit 4: keepalive 5s; bits 5-6: MSS (both sides); bit 7: scheduler rr
//	h[1] receive window of side 0 (low nibble % 8) and side 1 (high nibble % 8)
//	h[2:6], h[6:10] initial sequence numbers (big endian), so wraparound is explored
//
// It returns the pair (side 0 has sent its SYN) and the shortest time after which a
// timeout may legitimately end the connection.
func fuzzPair(tb testing.TB, h []byte) (*pair, time.Duration) {
	npaths := min(int(h[0]&3)+1, 3)
	mss := fuzzMSS[h[0]>>5&3]
	ka := time.Duration(0)
	if h[0]&16 != 0 {
		ka = 5 * time.Second
	}
	sched := "auto"
	if h[0]&128 != 0 {
		sched = "rr"
	}
	mk := func(rcv int) *epConfig {
		return testConfig(npaths, func(c *epConfig) {
			c.mss = mss
			c.rcvLimit = rcv
			c.sndLimit = 64 << 10
			c.scheduler = sched
			c.keepAlive = ka
			c.acceptSYNData = h[0]&8 != 0
		})
	}
	a, b := mk(fuzzRcvLimits[h[1]&7]), mk(fuzzRcvLimits[h[1]>>4&7])
	p := newPair(tb, a, b, binary.BigEndian.Uint32(h[2:6]), binary.BigEndian.Uint32(h[6:10]))
	var syn []byte
	if h[0]&4 != 0 {
		syn = streamBytes(0, 0, min(300, mss-40))
	}
	p.connect(syn)
	minTimeout := min(a.synTimeout, a.userTimeout)
	if ka > 0 {
		minTimeout = min(minTimeout, 2*ka)
	}
	return p, minTimeout
}

// fuzzOp applies one two-byte operation: op bit 7 is the side, (op&0x7f)%12 the kind:
// 0-2 deliver (arg >= 160 picks a segment out of order), 3 drop, 4 duplicate (the copy
// arrives last), 5 advance the clock, 6 write, 7 read, 8 CloseWrite, 9 Close (arg%4==0),
// 10 deliver everything queued that way, 11 a small write and read (even arg) or a
// path marked down stack-wide (odd arg).
func fuzzOp(p *pair, op, arg byte) {
	side := int(op >> 7)
	pick := func() int {
		if arg < 160 {
			return 0 // mostly in order
		}
		return int(arg) % len(p.wire[side])
	}
	switch (op & 0x7f) % 12 {
	case 0, 1, 2:
		if len(p.wire[side]) > 0 {
			p.deliver(side, pick())
		}
	case 3:
		if len(p.wire[side]) > 0 {
			k := int(arg) % len(p.wire[side])
			p.wire[side] = append(p.wire[side][:k], p.wire[side][k+1:]...)
		}
	case 4:
		if len(p.wire[side]) > 0 {
			o := p.wire[side][int(arg)%len(p.wire[side])]
			p.wire[side] = append(p.wire[side], o) // a late duplicate
		}
	case 5:
		d := time.Duration(arg) * time.Millisecond
		if arg >= 128 {
			d = time.Duration(arg-127) * 250 * time.Millisecond
		}
		p.advance(d)
	case 6:
		p.write(side, int(arg)*97+1)
	case 7:
		p.read(side, int(arg)*64+1)
	case 8:
		p.closeWrite(side)
	case 9:
		if arg&3 == 0 { // rarer: Close often ends in a reset, which ends the story
			p.close(side)
		}
	case 10:
		for len(p.wire[side]) > 0 {
			p.deliver(side, 0)
		}
	case 11:
		if arg&1 == 0 {
			p.write(side, int(arg)*7+1)
			p.read(1-side, 1<<20)
			return
		}
		// Another connection of the side's stack found a path dead: the stack marks it
		// down (the prober revives it within a second).
		if h := p.health[side]; len(h.s.health) > 1 {
			h.pathReport(int(arg>>1)%len(h.s.health), false)
			p.wakeups()
		}
	}
}

// finish is the final lossless phase and its checks.
func (p *pair) finish(minTimeout time.Duration) {
	p.deliverAll(10 * time.Minute)
	p.check()
	elapsed := p.now.Sub(smT0)
	var errs [2]error
	for i, e := range p.ep {
		if e != nil && e.done {
			errs[i] = e.err
		}
	}
	closed := p.app[0].closed || p.app[1].closed
	for i, err := range errs {
		if err == nil {
			continue
		}
		// Resets follow a Close (unread data, or data after Close) or the peer's own
		// failure; timeouts need at least the shortest timeout to have passed.
		if !closed && errs[1-i] == nil && elapsed < minTimeout {
			p.tb.Fatalf("side %d failed with %v after %v: no Close, peer fine, no timeout due", i, err, elapsed)
		}
	}
	if errs[0] != nil || errs[1] != nil {
		return
	}
	if p.ep[1] == nil {
		p.tb.Fatalf("the listener never saw the connection (side 0: %v)", p.ep[0].state)
	}
	for i := 0; i < 2; i++ {
		j := 1 - i
		if p.app[j].closed {
			continue
		}
		if !p.app[j].accepted {
			p.tb.Fatalf("side %d never got the connection (state %v)", j, p.ep[j].state)
		}
		if p.app[j].read != p.app[i].written {
			e := p.ep[i]
			p.tb.Fatalf("side %d read %d of the %d bytes side %d wrote (sender %v, una %d nxt %d wnd %d, timer %v; receiver %v, %d held out of order)",
				j, p.app[j].read, p.app[i].written, i, e.state, e.sndUna, e.sndNxt, e.sndWnd, e.deadline(), p.ep[j].state, p.ep[j].rq.Bytes())
		}
		if p.app[i].closedW && !p.app[j].eof {
			p.tb.Fatalf("side %d closed its write side; side %d got no EOF (state %v)", i, j, p.ep[j].state)
		}
	}
	if p.app[0].closedW && p.app[1].closedW {
		for i, e := range p.ep {
			if !e.done {
				p.tb.Fatalf("both sides closed; side %d still %v after the final phase", i, e.state)
			}
		}
	}
}

func runEndpointOps(tb testing.TB, data []byte) {
	if len(data) < 10 {
		return
	}
	p, minTimeout := fuzzPair(tb, data[:10])
	ops := data[10:]
	if len(ops) > 4000 {
		ops = ops[:4000]
	}
	for len(ops) >= 2 {
		fuzzOp(p, ops[0], ops[1])
		ops = ops[2:]
		p.check()
	}
	p.finish(minTimeout)
}

func FuzzEndpoint(f *testing.F) {
	// A few hand-written seeds besides tcp/testdata/fuzz/FuzzEndpoint.
	hdr := []byte{0x02, 0x21, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x10}
	f.Add(append(hdr, 0, 0, 0x80, 0, 0, 0, 6, 200, 0x80|6, 100, 10, 0, 0x80|10, 0, 7, 255, 0x80|7, 255))
	f.Add(append(hdr, 6, 255, 6, 255, 3, 0, 10, 0, 5, 200, 10, 0, 0x80|10, 0, 8, 0, 10, 0, 0x80|8, 0, 10, 0))
	f.Add(append([]byte{0x1f, 0x33, 1, 2, 3, 4, 5, 6, 7, 8}, 0, 0, 0x80, 0, 6, 50, 4, 1, 0, 200, 5, 20, 5, 20, 0x80|10, 0, 9, 0, 5, 255))
	f.Fuzz(func(t *testing.T, data []byte) {
		runEndpointOps(t, data)
	})
}

// fuzzEstablished returns a pair whose handshake completed, with side 0 holding data
// in flight (some of it acknowledged) and side 1 having sent some data too.
func fuzzEstablished(tb testing.TB, h byte) *pair {
	npaths := int(h&3) + 1
	p := newPair(tb, testConfig(npaths, func(c *epConfig) { c.rcvLimit = 64 << 10 }), testConfig(npaths), 0xfffff000+uint32(h)<<4, 7)
	p.connect(nil)
	p.deliverAll(time.Second)
	p.write(1, 3000)
	p.deliverAll(time.Second)
	p.write(0, 20000)
	for k := 0; k < 3 && len(p.wire[0]) > 0; k++ {
		p.deliver(0, 0)
	}
	p.wire[1] = nil
	return p
}

// fuzzSegment decodes one 16-byte segment aimed at side 0 of p:
//
//	s[0]      flags
//	s[1:3]    seq: rcv.nxt + int16 << (s[3]&15)
//	s[4:6]    ack: snd.una + int16 << (s[3]>>4)
//	s[6:8]    window
//	s[8]      bits 0-2: SACK blocks (0..4); bit 3: timestamps; bits 4-5: path (3 = unknown)
//	s[9:11]   first SACK block: snd.una + int16*16, each s[11]*8+1 long, 1 KiB apart
//	s[12]     payload length * 8
//	s[13:16]  s[13]: payload fill; s[14]: after the segment, advance the clock s[14]
//	          ms and fire timers when s[15]&1
func fuzzSegment(p *pair, s []byte) Segment {
	e := p.ep[0]
	seg := Segment{Src: apB, Dst: apA, Flags: Flags(s[0])}
	seg.Seq = e.rcvNxt + uint32(int32(int16(binary.BigEndian.Uint16(s[1:3])))<<(s[3]&15))
	seg.Ack = e.sndUna + uint32(int32(int16(binary.BigEndian.Uint16(s[4:6])))<<(s[3]>>4))
	seg.Window = binary.BigEndian.Uint16(s[6:8])
	n := int(s[8] & 7)
	if n > MaxSACKBlocks {
		n = MaxSACKBlocks
	}
	left := e.sndUna + uint32(int32(int16(binary.BigEndian.Uint16(s[9:11]))*16))
	for i := 0; i < n; i++ {
		l := left + uint32(i)*1024
		seg.Options.SACK[i] = SACKBlock{Left: l, Right: l + uint32(s[11])*8 + 1}
	}
	seg.Options.NSACK = uint8(n)
	if s[8]&8 != 0 {
		seg.Options.HasTimestamp = true
		seg.Options.TSVal = uint32(s[13]) << 8
	}
	seg.Path = int(s[8]>>4&3) % len(e.view)
	if s[8]>>4&3 == 3 {
		seg.Path = -1
	}
	if k := int(s[12]) * 8; k > 0 {
		seg.Payload = make([]byte, k)
		for i := range seg.Payload {
			seg.Payload[i] = s[13] + byte(i)
		}
	}
	return seg
}

func FuzzInput(f *testing.F) {
	f.Add([]byte{1,
		0x10, 0, 0, 0, 0, 0x01, 0xff, 0xff, 0, 0, 0, 0, 100, 1, 5, 0, // in-order data
		0x10, 0x10, 0, 0, 0, 0x02, 0xff, 0xff, 2, 0, 0, 10, 100, 1, 5, 1, // out of order, SACK
		0x04, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, // RST in window
		0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // SYN
		0x11, 0, 0, 0, 0, 0x10, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 200, 1, // FIN
	})
	f.Add([]byte{2, 0x10, 0x7f, 0xff, 0x0f, 0x7f, 0xff, 0, 0, 0x3c, 0x80, 0, 255, 255, 9, 255, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 1 {
			return
		}
		p := fuzzEstablished(t, data[0])
		e := p.ep[0]
		data = data[1:]
		for k := 0; len(data) >= 16 && k < 500; k++ {
			s := data[:16]
			data = data[16:]
			seg := fuzzSegment(p, s)
			if e.done {
				break
			}
			rcvNxt := e.rcvNxt
			e.input(p.now, &seg, seg.Path)
			p.flush(0)
			p.check()
			if !e.done && seqnum.LT(e.rcvNxt, rcvNxt) {
				t.Fatalf("rcv.nxt moved back from %d to %d", rcvNxt, e.rcvNxt)
			}
			if s[15]&1 != 0 {
				p.advance(time.Duration(s[14]) * time.Millisecond)
				p.check()
			}
			if s[15]&2 != 0 {
				p.write(0, int(s[14])*50)
				p.check()
			}
			p.wire[0] = nil // side 0's answers go nowhere
		}
	})
}
