package tcp

// State-machine tests: endpoints driven directly (no Stack, no goroutines, a manual
// clock), asserting on e.state and on the segments collected in e.out.
//
// Two kinds of driver live here and are shared with fuzz_test.go:
//
//   - single endpoint against a scripted peer: the test writes the peer's segments by
//     hand (in, fire, runUntil mirror what the loop does with an endpoint: input or
//     timer, then output, then collect e.out);
//   - pair: two endpoints joined by a wire the test controls (deliver, drop, duplicate,
//     reorder), with a listener for the passive side and the loop's reset-on-no-
//     connection answer, plus application bookkeeping that checks every byte read.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap"

	"mpath/spray"
	"mpath/tcp/seqnum"
)

var (
	smT0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	apA  = netip.MustParseAddrPort("10.9.0.1:40001")
	apB  = netip.MustParseAddrPort("10.9.0.2:80")
)

// fakeHealth is a pathHealth for endpoints driven without a Stack: a path is down from
// the first down report until an up report. It counts reports for assertions.
type fakeHealth struct {
	down       []bool
	rtt        []time.Duration
	downs, ups int
}

func newFakeHealth(n int) *fakeHealth {
	return &fakeHealth{down: make([]bool, n), rtt: make([]time.Duration, n)}
}

func (h *fakeHealth) pathUp(p int) bool { return !h.down[p] }

func (h *fakeHealth) pathReport(p int, up bool) {
	if up {
		h.ups++
	} else {
		h.downs++
	}
	h.down[p] = !up
}

func (h *fakeHealth) rttHint(p int) time.Duration { return h.rtt[p] }

// testConfig is an epConfig with npaths paths, its own fakeHealth and the Stack's
// defaults, changed by opts.
func testConfig(npaths int, opts ...func(*epConfig)) *epConfig {
	ps := make([]spray.Path, npaths)
	for i := range ps {
		ps[i] = spray.Path{Name: fmt.Sprintf("p%d", i), Weight: 1, Up: true}
	}
	cfg := &epConfig{
		mss:         1440,
		rcvLimit:    1 << 20,
		sndLimit:    1 << 20,
		paths:       ps,
		scheduler:   "auto",
		epoch:       smT0,
		userTimeout: 30 * time.Second,
		synTimeout:  10 * time.Second,
		timeWait:    10 * time.Second,
		finTimeout:  30 * time.Second,
		health:      newFakeHealth(npaths),
	}
	for _, o := range opts {
		o(cfg)
	}
	return cfg
}

// drainOut returns e.out with payloads copied (they point into the send buffer) and
// empties it, as the loop does when it batches segments for the link.
func drainOut(e *endpoint) []outSeg {
	if len(e.out) == 0 {
		return nil
	}
	out := make([]outSeg, len(e.out))
	for i, o := range e.out {
		out[i] = o
		out[i].seg.Payload = bytes.Clone(o.seg.Payload)
	}
	clear(e.out)
	e.out = e.out[:0]
	return out
}

// flush is the loop's finishEndpoint for one endpoint: output unless finished, collect.
func flush(e *endpoint, now time.Time) []outSeg {
	if !e.done {
		e.output(now)
	}
	return drainOut(e)
}

// in hands seg to e at now on path and returns what e sent in answer.
func in(e *endpoint, now time.Time, seg Segment, path int) []outSeg {
	e.input(now, &seg, path)
	return flush(e, now)
}

// runUntil fires e's timers at their deadlines up to until, like the loop's timer heap,
// and returns everything sent. It reports the time it stopped at (until).
func runUntil(t testing.TB, e *endpoint, now, until time.Time) []outSeg {
	t.Helper()
	var out []outSeg
	for i := 0; ; i++ {
		d := e.deadline()
		if d.IsZero() || d.After(until) || e.done {
			break
		}
		if i > 100000 {
			t.Fatalf("timer loop: deadline %v keeps coming back", d.Sub(smT0))
		}
		if d.After(now) {
			now = d
		}
		e.timer(now)
		out = append(out, flush(e, now)...)
		if d2 := e.deadline(); !e.done && !d2.IsZero() && !d2.After(now) {
			t.Fatalf("%v: timer deadline %v not moved past now %v after firing", e.state, d2.Sub(smT0), now.Sub(smT0))
		}
	}
	return out
}

func fromPeer(flags Flags, seq, ack uint32, wnd uint16, payload []byte) Segment {
	return Segment{Src: apB, Dst: apA, Seq: seq, Ack: ack, Flags: flags, Window: wnd, Payload: payload, Path: 0}
}

// only returns the single segment in out, failing the test otherwise.
func only(t testing.TB, what string, out []outSeg) Segment {
	t.Helper()
	if len(out) != 1 {
		t.Fatalf("%s: sent %d segments, want 1: %v", what, len(out), segList(out))
	}
	return out[0].seg
}

func segList(out []outSeg) string {
	var b bytes.Buffer
	for _, o := range out {
		fmt.Fprintf(&b, "\n\tpath %d: %v", o.path, &o.seg)
	}
	return b.String()
}

func dataSegs(out []outSeg) []outSeg {
	var d []outSeg
	for _, o := range out {
		if len(o.seg.Payload) > 0 || o.seg.Flags&(FlagFIN|FlagSYN) != 0 {
			d = append(d, o)
		}
	}
	return d
}

// wantACK checks seg is a pure acknowledgement of ack (no data, no SYN/FIN/RST).
func wantACK(t testing.TB, what string, seg Segment, ack uint32) {
	t.Helper()
	if seg.Flags != FlagACK || len(seg.Payload) != 0 || seg.Ack != ack {
		t.Fatalf("%s: got %v, want a pure ACK of %d", what, &seg, ack)
	}
}

// streamByte is the application data used throughout: a function of the direction and
// the byte's offset in the stream, so a reader can check every byte it gets.
func streamByte(side int, off int) byte {
	x := uint32(off)*2654435761 + uint32(side)*0x9e3779b9
	return byte(x>>13) ^ byte(off) ^ byte(off>>11)
}

func streamBytes(side, off, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = streamByte(side, off+i)
	}
	return b
}

// openActive returns an endpoint (config cfg, ISS iss) in ESTABLISHED after an active
// open answered by a SYN-ACK (seq peerISS, window wnd, options opts) rtt after the SYN.
// The final ACK has been collected and dropped.
func openActive(t testing.TB, cfg *epConfig, iss, peerISS uint32, opts Options, wnd uint16, rtt time.Duration) (*endpoint, time.Time) {
	t.Helper()
	e := newEndpoint(cfg, apA, apB, iss, smT0)
	e.connect(smT0, false)
	only(t, "SYN", drainOut(e))
	now := smT0.Add(rtt)
	sa := fromPeer(FlagSYN|FlagACK, peerISS, iss+1, wnd, nil)
	sa.Options = opts
	out := in(e, now, sa, 0)
	if e.state != stateEstablished {
		t.Fatalf("after SYN-ACK: state %v, want ESTABLISHED", e.state)
	}
	wantACK(t, "ACK of SYN-ACK", only(t, "ACK of SYN-ACK", out), peerISS+1)
	return e, now
}

// fullOpts are the SYN options of a peer that speaks everything.
func fullOpts(mss uint16, ws uint8, tsVal uint32) Options {
	return Options{MSS: mss, HasWScale: true, WScale: ws, SACKPermitted: true, HasTimestamp: true, TSVal: tsVal}
}

// ---------------------------------------------------------------------------------
// Opening.

func TestActiveOpenNegotiation(t *testing.T) {
	const iss, peerISS = 1000, 5_000_000
	cases := []struct {
		name      string
		opts      Options
		wnd       uint16
		segSize   int
		sndShift  uint8
		rcvShift  uint8
		sack, ts  bool
		ackWindow uint16 // window field of our ACK of the SYN-ACK (rcvLimit 1 MiB)
	}{
		{"full options", fullOpts(1200, 7, 777), 29200, 1200 - 12, 7, 5, true, true, 1 << 15},
		{"no options: MSS 536, no scaling", Options{}, 8192, 536, 0, 0, false, false, 65535},
		{"peer MSS above ours", Options{MSS: 9000}, 8192, 1440, 0, 0, false, false, 65535},
		{"window scale above 14 is clamped", Options{MSS: 1440, HasWScale: true, WScale: 20}, 100, 1440, 14, 5, false, false, 1 << 15},
		{"timestamps only", Options{MSS: 1440, HasTimestamp: true, TSVal: 9}, 100, 1428, 0, 0, false, true, 65535},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := testConfig(2)
			e := newEndpoint(cfg, apA, apB, iss, smT0)
			e.connect(smT0, false)
			if e.state != stateSynSent {
				t.Fatalf("state %v after connect, want SYN-SENT", e.state)
			}
			syn := only(t, "SYN", drainOut(e))
			o := syn.Options
			if syn.Flags != FlagSYN || syn.Seq != iss || len(syn.Payload) != 0 {
				t.Fatalf("SYN: %v", &syn)
			}
			if o.MSS != 1440 || !o.HasWScale || o.WScale != 5 || !o.SACKPermitted || !o.HasTimestamp {
				t.Fatalf("SYN options %+v: want MSS 1440, wscale 5 (1 MiB window), SACK-permitted, timestamps", o)
			}
			if syn.Window != 65535 {
				t.Errorf("SYN window %d, want 65535 (unscaled, capped)", syn.Window)
			}

			now := smT0.Add(20 * time.Millisecond)
			sa := fromPeer(FlagSYN|FlagACK, peerISS, iss+1, c.wnd, nil)
			sa.Options = c.opts
			out := in(e, now, sa, 0)
			if e.state != stateEstablished {
				t.Fatalf("state %v after SYN-ACK, want ESTABLISHED", e.state)
			}
			if e.segSize != c.segSize || e.sndShift != c.sndShift || e.rcvShift != c.rcvShift || e.sackOK != c.sack || e.tsOK != c.ts {
				t.Fatalf("negotiated segSize %d sndShift %d rcvShift %d sack %v ts %v; want %d %d %d %v %v",
					e.segSize, e.sndShift, e.rcvShift, e.sackOK, e.tsOK, c.segSize, c.sndShift, c.rcvShift, c.sack, c.ts)
			}
			if e.sndWnd != uint32(c.wnd) {
				t.Errorf("send window %d after SYN-ACK, want %d (a SYN-ACK's window is never scaled)", e.sndWnd, c.wnd)
			}
			if e.sndUna != iss+1 || e.rcvNxt != peerISS+1 {
				t.Errorf("snd.una %d rcv.nxt %d, want %d %d", e.sndUna, e.rcvNxt, iss+1, peerISS+1)
			}
			ack := only(t, "ACK of SYN-ACK", out)
			wantACK(t, "ACK of SYN-ACK", ack, peerISS+1)
			if ack.Seq != iss+1 {
				t.Errorf("ACK seq %d, want %d", ack.Seq, iss+1)
			}
			if ack.Options.HasTimestamp != c.ts || (c.ts && ack.Options.TSEcr != c.opts.TSVal) {
				t.Errorf("ACK timestamps %+v, want present=%v echoing %d", ack.Options, c.ts, c.opts.TSVal)
			}
			if ack.Window != c.ackWindow {
				t.Errorf("ACK window field %d, want %d", ack.Window, c.ackWindow)
			}
			// After the handshake the peer's window is scaled by its shift.
			out = in(e, now, fromPeer(FlagACK, peerISS+1, iss+1, 100, nil), 0)
			if want := uint32(100) << c.sndShift; e.sndWnd != want {
				t.Errorf("send window %d after an ACK with window 100, want %d", e.sndWnd, want)
			}
			if len(out) != 0 {
				t.Errorf("a bare ACK drew an answer: %v", segList(out))
			}
			// Segments carry at most segSize bytes.
			e.sb.write(streamBytes(0, 0, 3*c.segSize))
			for _, o := range dataSegs(flush(e, now)) {
				if len(o.seg.Payload) > c.segSize {
					t.Errorf("data segment of %d bytes, segSize %d", len(o.seg.Payload), c.segSize)
				}
			}
		})
	}
}

// TestNoWScalePeerWindowEdge: with a peer that does not scale, the largest window we
// can advertise is 65535 bytes. Data beyond that edge was never offered and must be
// dropped (and ACKed) like any other out-of-window data, even though our buffer is
// larger.
func TestNoWScalePeerWindowEdge(t *testing.T) {
	const iss, peerISS = 1000, 2000
	e, now := openActive(t, testConfig(1), iss, peerISS, Options{MSS: 1440}, 65535, 10*time.Millisecond)
	seq := uint32(peerISS + 1 + 70000) // beyond rcv.nxt + 65535
	out := in(e, now, fromPeer(FlagACK, seq, iss+1, 65535, streamBytes(1, 70000, 100)), 0)
	if e.rq.Bytes() != 0 {
		t.Errorf("held %d bytes that lie beyond the advertised window (rcv.nxt+65535)", e.rq.Bytes())
	}
	if len(out) != 1 || out[0].seg.Ack != peerISS+1 {
		t.Errorf("want one ACK of rcv.nxt for out-of-window data, got %v", segList(out))
	}
}

func TestPassiveOpenNegotiation(t *testing.T) {
	const iss, peerISS = 70_000, 123_456
	cases := []struct {
		name         string
		opts         Options
		ws, sack, ts bool
		segSize      int
	}{
		{"full options", fullOpts(1000, 9, 4242), true, true, true, 1000 - 12},
		{"no options", Options{}, false, false, false, 536},
		{"SACK and MSS only", Options{MSS: 1460, SACKPermitted: true}, false, true, false, 1440},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEndpoint(testConfig(2), apA, apB, iss, smT0)
			syn := fromPeer(FlagSYN, peerISS, 0, 5000, nil)
			syn.Options = c.opts
			e.accept(smT0, &syn, 1)
			if e.state != stateSynRcvd {
				t.Fatalf("state %v, want SYN-RECEIVED", e.state)
			}
			out := drainOut(e)
			sa := only(t, "SYN-ACK", out)
			o := sa.Options
			if sa.Flags != FlagSYN|FlagACK || sa.Seq != iss || sa.Ack != peerISS+1 {
				t.Fatalf("SYN-ACK: %v", &sa)
			}
			if out[0].path != 1 {
				t.Errorf("SYN-ACK on path %d, want the SYN's path 1", out[0].path)
			}
			if o.MSS != 1440 || o.HasWScale != c.ws || o.SACKPermitted != c.sack || o.HasTimestamp != c.ts {
				t.Fatalf("SYN-ACK options %+v: want MSS 1440, wscale %v, SACK %v, ts %v (only what the peer offered)", o, c.ws, c.sack, c.ts)
			}
			if c.ts && o.TSEcr != c.opts.TSVal {
				t.Errorf("SYN-ACK TSEcr %d, want the SYN's TSVal %d", o.TSEcr, c.opts.TSVal)
			}
			if e.segSize != c.segSize {
				t.Errorf("segSize %d, want %d", e.segSize, c.segSize)
			}
			// A final ACK that acknowledges something we never sent draws a reset.
			now := smT0.Add(10 * time.Millisecond)
			out = in(e, now, fromPeer(FlagACK, peerISS+1, iss+7, 100, nil), 1)
			rst := only(t, "answer to a bad final ACK", out)
			if rst.Flags != FlagRST || rst.Seq != iss+7 || e.state != stateSynRcvd {
				t.Fatalf("bad final ACK: sent %v, state %v; want RST seq %d, still SYN-RECEIVED", &rst, e.state, iss+7)
			}
			out = in(e, now, fromPeer(FlagACK, peerISS+1, iss+1, 100, nil), 1)
			if e.state != stateEstablished {
				t.Fatalf("state %v after the final ACK, want ESTABLISHED", e.state)
			}
			if len(out) != 0 {
				t.Errorf("final ACK drew an answer: %v", segList(out))
			}
			want := uint32(100)
			if c.ws {
				want <<= 9
			}
			if e.sndWnd != want {
				t.Errorf("send window %d, want %d", e.sndWnd, want)
			}
		})
	}
}

func TestSYNData(t *testing.T) {
	const iss, peerISS = 10, 20
	hello := []byte("hello, SYN data")
	for _, accept := range []bool{true, false} {
		t.Run(fmt.Sprintf("passive accept=%v", accept), func(t *testing.T) {
			e := newEndpoint(testConfig(1, func(c *epConfig) { c.acceptSYNData = accept }), apA, apB, iss, smT0)
			syn := fromPeer(FlagSYN, peerISS, 0, 5000, hello)
			syn.Options = fullOpts(1440, 7, 1)
			e.accept(smT0, &syn, 0)
			sa := only(t, "SYN-ACK", drainOut(e))
			wantAck := uint32(peerISS + 1)
			if accept {
				wantAck += uint32(len(hello))
			}
			if sa.Ack != wantAck {
				t.Fatalf("SYN-ACK acks %d, want %d", sa.Ack, wantAck)
			}
			buf := make([]byte, 100)
			n, _, _ := e.rb.read(buf)
			if accept && !bytes.Equal(buf[:n], hello) || !accept && n != 0 {
				t.Fatalf("application reads %q (accept=%v)", buf[:n], accept)
			}
		})
	}
	for _, taken := range []bool{true, false} {
		t.Run(fmt.Sprintf("active peer took it=%v", taken), func(t *testing.T) {
			e := newEndpoint(testConfig(1), apA, apB, iss, smT0)
			e.sb.write(hello)
			e.connect(smT0, true)
			syn := only(t, "SYN", drainOut(e))
			if !bytes.Equal(syn.Payload, hello) || syn.Flags != FlagSYN {
				t.Fatalf("SYN %v carries %q, want %q", &syn, syn.Payload, hello)
			}
			ack := uint32(iss + 1)
			if taken {
				ack += uint32(len(hello))
			}
			sa := fromPeer(FlagSYN|FlagACK, peerISS, ack, 5000, nil)
			sa.Options = fullOpts(1440, 7, 1)
			out := in(e, smT0.Add(5*time.Millisecond), sa, 0)
			if e.state != stateEstablished {
				t.Fatalf("state %v", e.state)
			}
			data := dataSegs(out)
			if taken {
				if len(data) != 0 || e.sb.length() != 0 || e.sndUna != ack || e.sndNxt != ack {
					t.Fatalf("peer took the SYN data, yet: sent %v, send buffer %d, una %d nxt %d", segList(data), e.sb.length(), e.sndUna, e.sndNxt)
				}
				return
			}
			if len(data) != 1 || data[0].seg.Seq != iss+1 || !bytes.Equal(data[0].seg.Payload, hello) {
				t.Fatalf("peer did not take the SYN data: want it re-sent as data at seq %d, sent %v", iss+1, segList(out))
			}
		})
	}
}

// TestSimultaneousOpen: both ends send a SYN, each answers the other's SYN with a
// SYN-ACK and both reach ESTABLISHED (RFC 9293 figure 7).
func TestSimultaneousOpen(t *testing.T) {
	p := newPair(t, testConfig(1), testConfig(1), 100, 900)
	p.listen = false
	a := p.ep[0]
	a.connect(p.now, false)
	b := newEndpoint(p.cfg[1], apB, apA, 900, p.now)
	p.ep[1] = b
	b.connect(p.now, false)
	p.collect(0)
	p.collect(1)
	// The SYNs cross: each side gets the other's SYN first.
	p.deliver(0, 0)
	p.deliver(1, 0)
	if a.state != stateSynRcvd || b.state != stateSynRcvd {
		t.Fatalf("after crossing SYNs: states %v %v, want SYN-RECEIVED both", a.state, b.state)
	}
	if len(p.wire[0]) != 1 || p.wire[0][0].seg.Flags != FlagSYN|FlagACK || p.wire[0][0].seg.Ack != 901 {
		t.Fatalf("A answered the SYN with %v, want SYN-ACK of 901", segList(p.wire[0]))
	}
	p.deliverAll(2 * time.Second)
	if a.state != stateEstablished || b.state != stateEstablished {
		t.Fatalf("simultaneous open: states %v %v after 2s, want ESTABLISHED both (err %v / %v)", a.state, b.state, a.err, b.err)
	}
}

// TestRetransmittedSYNInSynRcvd: the SYN-ACK was lost and the peer re-sends its SYN;
// the listener answers at once with its SYN-ACK rather than waiting for its own timer.
func TestRetransmittedSYNInSynRcvd(t *testing.T) {
	e := newEndpoint(testConfig(1), apA, apB, 100, smT0)
	syn := fromPeer(FlagSYN, 500, 0, 5000, nil)
	e.accept(smT0, &syn, 0)
	drainOut(e) // lost
	out := in(e, smT0.Add(200*time.Millisecond), syn, 0)
	if len(out) != 1 || out[0].seg.Flags != FlagSYN|FlagACK || out[0].seg.Ack != 501 {
		t.Fatalf("retransmitted SYN in SYN-RECEIVED: sent %v, want a SYN-ACK of 501", segList(out))
	}
}

func TestRSTInSynSent(t *testing.T) {
	const iss = 4000
	cases := []struct {
		name    string
		seg     Segment
		state   state
		err     error
		wantRST bool
	}{
		{"RST+ACK acceptable: refused", fromPeer(FlagRST|FlagACK, 0, iss+1, 0, nil), stateClosed, ErrRefused, false},
		{"RST without ACK: ignored", fromPeer(FlagRST, 0, 0, 0, nil), stateSynSent, nil, false},
		{"RST+ACK with bad ACK: ignored", fromPeer(FlagRST|FlagACK, 0, iss+50, 0, nil), stateSynSent, nil, false},
		{"ACK of something unsent: reset", fromPeer(FlagACK, 7, iss+50, 0, nil), stateSynSent, nil, true},
		{"ACK of the ISS itself: reset", fromPeer(FlagACK, 7, iss, 0, nil), stateSynSent, nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEndpoint(testConfig(1), apA, apB, iss, smT0)
			e.connect(smT0, false)
			drainOut(e)
			out := in(e, smT0.Add(time.Millisecond), c.seg, 0)
			if e.state != c.state || !errors.Is(e.err, c.err) && e.err != c.err {
				t.Fatalf("state %v err %v, want %v %v", e.state, e.err, c.state, c.err)
			}
			if c.wantRST {
				rst := only(t, "reset", out)
				if rst.Flags != FlagRST || rst.Seq != c.seg.Ack {
					t.Fatalf("sent %v, want RST with seq %d", &rst, c.seg.Ack)
				}
			} else if len(out) != 0 {
				t.Fatalf("sent %v, want nothing", segList(out))
			}
			if c.err != nil {
				buf := make([]byte, 1)
				if _, err, _ := e.rb.read(buf); !errors.Is(err, c.err) {
					t.Errorf("application read error %v, want %v", err, c.err)
				}
			}
		})
	}
}

// TestRSTSynchronized is RFC 5961 section 3 in ESTABLISHED: only an exact sequence
// number resets; in-window draws a challenge ACK; out of window is ignored.
func TestRSTSynchronized(t *testing.T) {
	const iss, peerISS = 1 << 31, 77
	rcvNxt := uint32(peerISS + 1)
	cases := []struct {
		name      string
		seq       uint32
		reset     bool
		challenge bool
	}{
		{"exact: reset", rcvNxt, true, false},
		{"in window: challenge ACK", rcvNxt + 1, false, true},
		{"far in window: challenge ACK", rcvNxt + 60000, false, true},
		{"beyond window: ignored", rcvNxt + 1<<21, false, false},
		{"before rcv.nxt: ignored", rcvNxt - 1, false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, now := openActive(t, testConfig(1), iss, peerISS, fullOpts(1440, 7, 1), 1000, 10*time.Millisecond)
			out := in(e, now, fromPeer(FlagRST, c.seq, 0, 0, nil), 0)
			switch {
			case c.reset:
				if e.state != stateClosed || e.err != ErrReset || len(out) != 0 {
					t.Fatalf("state %v err %v sent %v; want CLOSED, ErrReset, silence", e.state, e.err, segList(out))
				}
			case c.challenge:
				wantACK(t, "challenge", only(t, "challenge ACK", out), rcvNxt)
				if e.state != stateEstablished {
					t.Fatalf("state %v", e.state)
				}
			default:
				if len(out) != 0 || e.state != stateEstablished {
					t.Fatalf("state %v, sent %v; want ESTABLISHED and silence", e.state, segList(out))
				}
			}
		})
	}
	t.Run("RST+ACK exact in SYN-RECEIVED: refused", func(t *testing.T) {
		e := newEndpoint(testConfig(1), apA, apB, iss, smT0)
		syn := fromPeer(FlagSYN, peerISS, 0, 5000, nil)
		e.accept(smT0, &syn, 0)
		drainOut(e)
		in(e, smT0, fromPeer(FlagRST, rcvNxt, 0, 0, nil), 0)
		if e.state != stateClosed || e.err != ErrRefused {
			t.Fatalf("state %v err %v, want CLOSED ErrRefused", e.state, e.err)
		}
	})
	t.Run("challenge ACKs limited to 10 a second", func(t *testing.T) {
		e, now := openActive(t, testConfig(1), iss, peerISS, fullOpts(1440, 7, 1), 1000, 10*time.Millisecond)
		n := 0
		for i := 0; i < 25; i++ {
			n += len(in(e, now.Add(time.Duration(i)*time.Millisecond), fromPeer(FlagRST, rcvNxt+uint32(i)+1, 0, 0, nil), 0))
		}
		if n != 10 {
			t.Errorf("25 in-window RSTs within 25 ms drew %d challenge ACKs, want 10", n)
		}
		n = len(in(e, now.Add(1100*time.Millisecond), fromPeer(FlagRST, rcvNxt+5, 0, 0, nil), 0))
		if n != 1 {
			t.Errorf("a second later: %d challenge ACKs, want 1", n)
		}
	})
}

// TestSYNSynchronized is RFC 5961 section 4: any SYN in a synchronized state draws a
// challenge ACK and changes nothing.
func TestSYNSynchronized(t *testing.T) {
	const iss, peerISS = 10, 1000
	for _, seq := range []uint32{peerISS + 1, peerISS + 500, peerISS, peerISS + 1<<31 + 10, peerISS + 1<<30} {
		t.Run(fmt.Sprintf("seq rcv.nxt%+d", int32(seq-(peerISS+1))), func(t *testing.T) {
			e, now := openActive(t, testConfig(1), iss, peerISS, fullOpts(1440, 7, 1), 1000, 10*time.Millisecond)
			out := in(e, now, fromPeer(FlagSYN, seq, 0, 1000, nil), 0)
			wantACK(t, "challenge ACK", only(t, "challenge ACK", out), peerISS+1)
			if e.state != stateEstablished || e.rcvNxt != peerISS+1 {
				t.Fatalf("state %v rcv.nxt %d", e.state, e.rcvNxt)
			}
		})
	}
}

func TestACKChecks(t *testing.T) {
	const iss, peerISS = 5000, 9000
	rcvNxt := uint32(peerISS + 1)
	payload := streamBytes(1, 0, 100)
	t.Run("ACK above snd.nxt: ACK and drop", func(t *testing.T) {
		e, now := openActive(t, testConfig(1), iss, peerISS, fullOpts(1440, 0, 1), 2000, 10*time.Millisecond)
		out := in(e, now, fromPeer(FlagACK, rcvNxt, iss+1000, 2000, payload), 0)
		wantACK(t, "answer", only(t, "answer", out), rcvNxt)
		if e.rcvNxt != rcvNxt || e.rb.length() != 0 || e.sndUna != iss+1 {
			t.Fatalf("segment was not dropped: rcv.nxt %d, %d bytes readable, snd.una %d", e.rcvNxt, e.rb.length(), e.sndUna)
		}
	})
	t.Run("too old ACK (RFC 5961 section 5): ACK and drop", func(t *testing.T) {
		e, now := openActive(t, testConfig(1), iss, peerISS, fullOpts(1440, 0, 1), 2000, 10*time.Millisecond)
		out := in(e, now, fromPeer(FlagACK, rcvNxt, iss+1-2001, 2000, payload), 0)
		wantACK(t, "answer", only(t, "answer", out), rcvNxt)
		if e.rcvNxt != rcvNxt || e.rb.length() != 0 {
			t.Fatalf("segment was not dropped: rcv.nxt %d, %d bytes readable", e.rcvNxt, e.rb.length())
		}
	})
	t.Run("old but within max window: data accepted", func(t *testing.T) {
		e, now := openActive(t, testConfig(1), iss, peerISS, fullOpts(1440, 0, 1), 2000, 10*time.Millisecond)
		in(e, now, fromPeer(FlagACK, rcvNxt, iss+1-1500, 2000, payload), 0)
		if e.rcvNxt != rcvNxt+100 || e.rb.length() != 100 {
			t.Fatalf("rcv.nxt %d, %d bytes readable: want the 100 bytes taken", e.rcvNxt, e.rb.length())
		}
	})
	t.Run("segment without ACK flag: dropped", func(t *testing.T) {
		e, now := openActive(t, testConfig(1), iss, peerISS, fullOpts(1440, 0, 1), 2000, 10*time.Millisecond)
		out := in(e, now, fromPeer(FlagPSH, rcvNxt, 0, 2000, payload), 0)
		if e.rcvNxt != rcvNxt || len(out) != 0 {
			t.Fatalf("rcv.nxt %d, sent %v", e.rcvNxt, segList(out))
		}
	})
}

func TestReceiveData(t *testing.T) {
	const iss, peerISS uint32 = 100, 0xfffff000
	rcvNxt := peerISS + 1
	open := func(t *testing.T, opts ...func(*epConfig)) (*endpoint, time.Time) {
		return openActive(t, testConfig(1, opts...), iss, peerISS, fullOpts(1440, 7, 1), 1000, 10*time.Millisecond)
	}
	data := func(off, n int) Segment {
		return fromPeer(FlagACK, rcvNxt+uint32(off), iss+1, 1000, streamBytes(1, off, n))
	}
	readAll := func(t *testing.T, e *endpoint, want []byte) {
		t.Helper()
		buf := make([]byte, len(want)+100)
		n, _, _ := e.rb.read(buf)
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("application read %d bytes, want %d matching the stream", n, len(want))
		}
	}
	t.Run("in order: delayed ACK, then every second segment", func(t *testing.T) {
		e, now := open(t)
		if out := in(e, now, data(0, 1000), 0); len(out) != 0 {
			t.Fatalf("first in-order segment acknowledged at once: %v", segList(out))
		}
		out := runUntil(t, e, now, now.Add(time.Second))
		wantACK(t, "delayed ACK", only(t, "delayed ACK", out), rcvNxt+1000)
		in(e, now, data(1000, 1000), 0)
		out = in(e, now, data(2000, 1000), 0)
		wantACK(t, "second segment", only(t, "second segment", out), rcvNxt+3000)
		readAll(t, e, streamBytes(1, 0, 3000))
	})
	t.Run("out of order: immediate ACK with SACK", func(t *testing.T) {
		e, now := open(t)
		out := in(e, now, data(2000, 500), 0)
		ack := only(t, "ACK", out)
		wantACK(t, "ACK", ack, rcvNxt)
		if ack.Options.NSACK != 1 || ack.Options.SACK[0] != (SACKBlock{Left: rcvNxt + 2000, Right: rcvNxt + 2500}) {
			t.Fatalf("SACK %v, want one block [%d,%d)", ack.Options.SACKBlocks(), rcvNxt+2000, rcvNxt+2500)
		}
		ack = only(t, "ACK", in(e, now, data(4000, 500), 0))
		want := []SACKBlock{{Left: rcvNxt + 4000, Right: rcvNxt + 4500}, {Left: rcvNxt + 2000, Right: rcvNxt + 2500}}
		if got := ack.Options.SACKBlocks(); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
			t.Fatalf("SACK %v, want %v (newest first)", got, want)
		}
		// Filling the first gap: cumulative ACK at once, the second hole still SACKed.
		ack = only(t, "ACK", in(e, now, data(0, 2000), 0))
		wantACK(t, "gap fill", ack, rcvNxt+2500)
		if got := ack.Options.SACKBlocks(); len(got) != 1 || got[0] != want[0] {
			t.Fatalf("after the first fill SACK %v, want %v", got, want[:1])
		}
		ack = only(t, "ACK", in(e, now, data(2500, 1500), 0))
		wantACK(t, "second fill", ack, rcvNxt+4500)
		if ack.Options.NSACK != 0 {
			t.Fatalf("nothing held, yet SACK %v", ack.Options.SACKBlocks())
		}
		readAll(t, e, streamBytes(1, 0, 4500))
	})
	t.Run("out of order without SACK: ACK without blocks", func(t *testing.T) {
		e, now := openActive(t, testConfig(1), iss, peerISS, Options{MSS: 1440}, 1000, 10*time.Millisecond)
		ack := only(t, "ACK", in(e, now, data(2000, 500), 0))
		wantACK(t, "ACK", ack, rcvNxt)
		if ack.Options.NSACK != 0 {
			t.Fatalf("SACK blocks to a peer that did not permit SACK: %v", ack.Options.SACKBlocks())
		}
	})
	t.Run("out of window: ACK, nothing taken", func(t *testing.T) {
		e, now := open(t)
		for _, off := range []int{1 << 20, 1<<20 + 5000, -3000} {
			ack := only(t, "ACK", in(e, now, data(off, 1000), 0))
			wantACK(t, fmt.Sprintf("offset %d", off), ack, rcvNxt)
			if e.rq.Bytes() != 0 || e.rb.length() != 0 {
				t.Fatalf("offset %d: took data (%d held, %d readable)", off, e.rq.Bytes(), e.rb.length())
			}
		}
	})
	t.Run("duplicate of delivered data: immediate ACK", func(t *testing.T) {
		e, now := open(t)
		in(e, now, data(0, 1000), 0)
		in(e, now, data(1000, 1000), 0)
		wantACK(t, "duplicate", only(t, "ACK", in(e, now, data(500, 1000), 0)), rcvNxt+2000)
		readAll(t, e, streamBytes(1, 0, 2000))
	})
	t.Run("beyond the window: trimmed", func(t *testing.T) {
		e, now := open(t, func(c *epConfig) { c.rcvLimit = 4000 })
		ack := only(t, "ACK", in(e, now, data(3000, 1440), 0))
		if e.rq.Bytes() != 1000 {
			t.Fatalf("held %d bytes, want the 1000 inside the 4000-byte window", e.rq.Bytes())
		}
		if got := ack.Options.SACKBlocks(); len(got) != 1 || got[0] != (SACKBlock{Left: rcvNxt + 3000, Right: rcvNxt + 4000}) {
			t.Fatalf("SACK %v", got)
		}
		// In order, larger than what is left of the window.
		in(e, now, data(0, 1440), 0)
		in(e, now, data(1440, 1440), 0)
		out := in(e, now, data(2880, 1440), 0)
		if e.rcvNxt != rcvNxt+4000 {
			t.Fatalf("rcv.nxt %d, want %d (window full)", e.rcvNxt-rcvNxt, 4000)
		}
		out = append(out, runUntil(t, e, now, now.Add(time.Second))...)
		ack = only(t, "ACK", out)
		if ack.Ack != rcvNxt+4000 || ack.Window != 0 {
			t.Fatalf("ACK %v, want ack %d window 0", &ack, rcvNxt+4000)
		}
		readAll(t, e, streamBytes(1, 0, 4000))
	})
	t.Run("gap filled by a segment overlapping held data: immediate ACK", func(t *testing.T) {
		e, now := open(t)
		in(e, now, data(1000, 1000), 0)
		ack := only(t, "ACK", in(e, now, data(0, 1500), 0))
		wantACK(t, "gap fill", ack, rcvNxt+2000)
		readAll(t, e, streamBytes(1, 0, 2000))
	})
	t.Run("zero window: data at rcv.nxt is refused and ACKed", func(t *testing.T) {
		e, now := open(t, func(c *epConfig) { c.rcvLimit = 2000 })
		in(e, now, data(0, 1000), 0)
		in(e, now, data(1000, 1000), 0)
		ack := only(t, "ACK", in(e, now, data(2000, 1), 0))
		if ack.Ack != rcvNxt+2000 || ack.Window != 0 || e.rcvNxt != rcvNxt+2000 {
			t.Fatalf("zero-window probe: answer %v, rcv.nxt +%d; want ack +2000, window 0", &ack, e.rcvNxt-rcvNxt)
		}
	})
}

// ---------------------------------------------------------------------------------
// Closing.

func TestFIN(t *testing.T) {
	const iss uint32 = 300
	peerISS := uint32(0xffffffff) // rcv.nxt wraps to 0
	rcvNxt := peerISS + 1
	open := func(t *testing.T) (*endpoint, time.Time) {
		return openActive(t, testConfig(1), iss, peerISS, fullOpts(1440, 7, 1), 1000, 10*time.Millisecond)
	}
	// closeOurs half-closes and returns our FIN.
	closeOurs := func(t *testing.T, e *endpoint, now time.Time) Segment {
		t.Helper()
		e.closeWrite()
		fin := only(t, "FIN", flush(e, now))
		if fin.Flags&FlagFIN == 0 || fin.Seq != iss+1 || e.state != stateFinWait1 {
			t.Fatalf("closeWrite: sent %v, state %v", &fin, e.state)
		}
		return fin
	}
	eof := func(t *testing.T, e *endpoint) {
		t.Helper()
		if _, err, ok := e.rb.read(make([]byte, 10)); !ok || err != io.EOF {
			t.Fatalf("read after FIN: %v %v, want EOF", ok, err)
		}
	}
	t.Run("ESTABLISHED to CLOSE-WAIT", func(t *testing.T) {
		e, now := open(t)
		out := in(e, now, fromPeer(FlagFIN|FlagACK, rcvNxt, iss+1, 1000, nil), 0)
		wantACK(t, "ACK of FIN", only(t, "ACK of FIN", out), rcvNxt+1)
		if e.state != stateCloseWait {
			t.Fatalf("state %v, want CLOSE-WAIT", e.state)
		}
		eof(t, e)
		// LAST-ACK, then CLOSED on the ACK of our FIN.
		e.closeWrite()
		fin := only(t, "FIN", flush(e, now))
		if fin.Flags != FlagFIN|FlagACK || fin.Seq != iss+1 || e.state != stateLastAck {
			t.Fatalf("sent %v, state %v; want FIN, LAST-ACK", &fin, e.state)
		}
		out = in(e, now, fromPeer(FlagACK, rcvNxt+1, iss+2, 1000, nil), 0)
		if e.state != stateClosed || !e.done || e.err != nil || len(out) != 0 {
			t.Fatalf("after the ACK of our FIN: state %v done %v err %v sent %v", e.state, e.done, e.err, segList(out))
		}
	})
	t.Run("FIN-WAIT-1 to CLOSING to TIME-WAIT", func(t *testing.T) {
		e, now := open(t)
		closeOurs(t, e, now)
		out := in(e, now, fromPeer(FlagFIN|FlagACK, rcvNxt, iss+1, 1000, nil), 0)
		wantACK(t, "ACK of FIN", only(t, "ACK", out), rcvNxt+1)
		if e.state != stateClosing {
			t.Fatalf("state %v, want CLOSING", e.state)
		}
		in(e, now, fromPeer(FlagACK, rcvNxt+1, iss+2, 1000, nil), 0)
		if e.state != stateTimeWait {
			t.Fatalf("state %v, want TIME-WAIT", e.state)
		}
	})
	t.Run("FIN-WAIT-1 to TIME-WAIT on FIN+ACK", func(t *testing.T) {
		e, now := open(t)
		closeOurs(t, e, now)
		out := in(e, now, fromPeer(FlagFIN|FlagACK, rcvNxt, iss+2, 1000, nil), 0)
		wantACK(t, "ACK of FIN", only(t, "ACK", out), rcvNxt+1)
		if e.state != stateTimeWait {
			t.Fatalf("state %v, want TIME-WAIT", e.state)
		}
	})
	t.Run("FIN-WAIT-2 to TIME-WAIT, re-ACK, expiry", func(t *testing.T) {
		e, now := open(t)
		closeOurs(t, e, now)
		in(e, now, fromPeer(FlagACK, rcvNxt, iss+2, 1000, nil), 0)
		if e.state != stateFinWait2 {
			t.Fatalf("state %v, want FIN-WAIT-2", e.state)
		}
		// Still receiving in FIN-WAIT-2 (half-close).
		in(e, now, fromPeer(FlagACK, rcvNxt, iss+2, 1000, streamBytes(1, 0, 700)), 0)
		finAt := now.Add(time.Second)
		fin := fromPeer(FlagFIN|FlagACK, rcvNxt+700, iss+2, 1000, nil)
		wantACK(t, "ACK of FIN", only(t, "ACK", in(e, finAt, fin, 0)), rcvNxt+701)
		if e.state != stateTimeWait {
			t.Fatalf("state %v, want TIME-WAIT", e.state)
		}
		// The peer lost our ACK and re-sends its FIN 5 s later: ACK it again and restart
		// the 2MSL timer (RFC 9293 3.10.7.4, TIME-WAIT).
		again := finAt.Add(5 * time.Second)
		wantACK(t, "re-ACK", only(t, "re-ACK", in(e, again, fin, 0)), rcvNxt+701)
		out := runUntil(t, e, again, finAt.Add(e.cfg.timeWait).Add(time.Millisecond))
		if e.done {
			t.Errorf("TIME-WAIT ended %v after the first FIN although the FIN was retransmitted at 5s (timer not restarted)", e.cfg.timeWait)
		}
		out = append(out, runUntil(t, e, again, again.Add(e.cfg.timeWait))...)
		if !e.done || e.err != nil {
			t.Fatalf("TIME-WAIT did not expire: state %v err %v", e.state, e.err)
		}
		if len(out) != 0 {
			t.Errorf("TIME-WAIT sent %v on its own", segList(out))
		}
	})
	t.Run("FIN out of order is held until the gap fills", func(t *testing.T) {
		e, now := open(t)
		seg := fromPeer(FlagFIN|FlagACK, rcvNxt+1000, iss+1, 1000, streamBytes(1, 1000, 500))
		ack := only(t, "ACK", in(e, now, seg, 0))
		if ack.Ack != rcvNxt || e.state != stateEstablished {
			t.Fatalf("out-of-order FIN: ACK %v, state %v; want ack rcv.nxt, ESTABLISHED", &ack, e.state)
		}
		ack = only(t, "ACK", in(e, now, fromPeer(FlagACK, rcvNxt, iss+1, 1000, streamBytes(1, 0, 1000)), 0))
		wantACK(t, "gap fill", ack, rcvNxt+1501)
		if e.state != stateCloseWait {
			t.Fatalf("state %v, want CLOSE-WAIT", e.state)
		}
		buf := make([]byte, 2000)
		n, _, _ := e.rb.read(buf)
		if !bytes.Equal(buf[:n], streamBytes(1, 0, 1500)) {
			t.Fatalf("read %d bytes, want the 1500 in order", n)
		}
		eof(t, e)
	})
	t.Run("FIN-only segment out of order", func(t *testing.T) {
		e, now := open(t)
		in(e, now, fromPeer(FlagFIN|FlagACK, rcvNxt+10, iss+1, 1000, nil), 0)
		if e.state != stateEstablished || e.finRcvd {
			t.Fatalf("a FIN 10 bytes ahead was taken: state %v", e.state)
		}
		in(e, now, fromPeer(FlagACK|FlagPSH, rcvNxt, iss+1, 1000, streamBytes(1, 0, 10)), 0)
		if e.state != stateCloseWait || e.rcvNxt != rcvNxt+11 {
			t.Fatalf("state %v rcv.nxt +%d, want CLOSE-WAIT, +11", e.state, e.rcvNxt-rcvNxt)
		}
	})
}

// TestRSTInTimeWait: in TIME-WAIT both directions have ended cleanly, so a reset (exact,
// RFC 5961) deletes the TCB without a "connection reset" signal (RFC 9293 3.10.7.4):
// data still unread ends in EOF, as the peer's FIN said, not in ECONNRESET. Such resets
// are routine: a late duplicate draws our ACK, and the peer, already CLOSED, resets it.
func TestRSTInTimeWait(t *testing.T) {
	const iss, peerISS = 300, 0xfffffff0
	rcvNxt := uint32(peerISS + 1)
	// timeWait returns an endpoint in TIME-WAIT holding 700 unread bytes before the
	// peer's FIN; its rcv.nxt is rcvNxt+701.
	timeWait := func(t *testing.T) (*endpoint, time.Time) {
		e, now := openActive(t, testConfig(1), iss, peerISS, fullOpts(1440, 7, 1), 1000, 10*time.Millisecond)
		in(e, now, fromPeer(FlagACK, rcvNxt, iss+1, 1000, streamBytes(1, 0, 700)), 0)
		e.closeWrite()
		flush(e, now)
		in(e, now, fromPeer(FlagFIN|FlagACK, rcvNxt+700, iss+2, 1000, nil), 0)
		if e.state != stateTimeWait || e.rcvNxt != rcvNxt+701 {
			t.Fatalf("setting up: state %v rcv.nxt +%d, want TIME-WAIT, +701", e.state, e.rcvNxt-rcvNxt)
		}
		return e, now
	}
	readRest := func(t *testing.T, e *endpoint) {
		t.Helper()
		buf := make([]byte, 1000)
		n, err, ok := e.rb.read(buf)
		if !ok || err != nil || !bytes.Equal(buf[:n], streamBytes(1, 0, 700)) {
			t.Fatalf("read %d bytes, err %v, ok %v; want the 700 bytes sent before the FIN", n, err, ok)
		}
		if _, err, ok = e.rb.read(buf); !ok || err != io.EOF {
			t.Fatalf("read after the data: %v %v, want EOF", ok, err)
		}
	}
	t.Run("exact RST ends TIME-WAIT without an error", func(t *testing.T) {
		e, now := timeWait(t)
		out := in(e, now.Add(time.Second), fromPeer(FlagRST, rcvNxt+701, 0, 0, nil), 0)
		if !e.done || e.state != stateClosed || e.err != nil || len(out) != 0 {
			t.Fatalf("state %v done %v err %v sent %v; want CLOSED, no error, silence", e.state, e.done, e.err, segList(out))
		}
		readRest(t, e)
	})
	t.Run("in-window RST draws a challenge ACK", func(t *testing.T) {
		e, now := timeWait(t)
		out := in(e, now, fromPeer(FlagRST, rcvNxt+705, 0, 0, nil), 0)
		wantACK(t, "challenge", only(t, "challenge ACK", out), rcvNxt+701)
		if e.done || e.state != stateTimeWait {
			t.Fatalf("state %v done %v, want TIME-WAIT", e.state, e.done)
		}
	})
	t.Run("a late duplicate's ACK reset by the closed peer", func(t *testing.T) {
		// The FuzzEndpoint corpus entry 233d51c1b023574e, spelled out.
		p := newPair(t, testConfig(2), testConfig(2), 500, 900)
		p.connect(nil)
		p.deliverAll(time.Second)
		p.noRead[1] = true
		p.write(0, 300)
		dup := p.wire[0][0]
		p.closeWrite(1)
		p.deliverAll(time.Second)
		p.closeWrite(0)
		p.deliverAll(time.Second)
		if p.ep[1].state != stateTimeWait || !p.ep[0].done || p.ep[0].err != nil {
			t.Fatalf("states %v / %v (err %v), want CLOSED cleanly / TIME-WAIT", p.ep[0].state, p.ep[1].state, p.ep[0].err)
		}
		p.wire[0] = append(p.wire[0], dup) // the data segment again, late
		p.deliver(0, 0)                    // TIME-WAIT answers with an ACK
		p.deliver(1, 0)                    // to no connection: a reset
		if len(p.wire[0]) != 1 || p.wire[0][0].seg.Flags&FlagRST == 0 {
			t.Fatalf("the closed side answered %v, want a reset", segList(p.wire[0]))
		}
		p.deliver(0, 0)
		if !p.ep[1].done || p.ep[1].err != nil {
			t.Fatalf("after the reset: state %v done %v err %v, want CLOSED without an error", p.ep[1].state, p.ep[1].done, p.ep[1].err)
		}
		p.readAll(1)
		if p.app[1].read != 300 || !p.app[1].eof || p.app[1].readErr != nil {
			t.Fatalf("the application read %d bytes, eof %v, err %v; want 300 and EOF", p.app[1].read, p.app[1].eof, p.app[1].readErr)
		}
	})
}

// TestCloseCases: the application's Close (cmdClose in the loop) and what follows.
func TestCloseCases(t *testing.T) {
	established := func(t *testing.T) *pair {
		p := newPair(t, testConfig(1), testConfig(1), 500, 900)
		p.connect(nil)
		p.deliverAll(time.Second)
		if !p.app[0].accepted || !p.app[1].accepted {
			t.Fatal("handshake did not complete")
		}
		return p
	}
	lastSent := func(p *pair, i int) Segment {
		if len(p.wire[i]) == 0 {
			p.tb.Fatalf("side %d sent nothing", i)
		}
		return p.wire[i][len(p.wire[i])-1].seg
	}
	t.Run("Close with unread data resets", func(t *testing.T) {
		p := established(t)
		p.noRead[1] = true
		p.write(0, 3000)
		p.deliverAll(time.Second)
		p.close(1)
		if rst := lastSent(p, 1); rst.Flags&FlagRST == 0 || p.ep[1].err != ErrAborted {
			t.Fatalf("sent %v, err %v; want RST and ErrAborted", &rst, p.ep[1].err)
		}
		p.deliverAll(time.Second)
		if p.ep[0].err != ErrReset {
			t.Fatalf("peer err %v, want ErrReset", p.ep[0].err)
		}
	})
	t.Run("data arriving after Close resets", func(t *testing.T) {
		p := established(t)
		p.close(1)
		if fin := lastSent(p, 1); fin.Flags&FlagFIN == 0 {
			t.Fatalf("Close with nothing unread sent %v, want FIN", &fin)
		}
		p.deliverAll(time.Second)
		if p.ep[0].state != stateCloseWait || p.ep[1].state != stateFinWait2 {
			t.Fatalf("states %v / %v, want CLOSE-WAIT / FIN-WAIT-2", p.ep[0].state, p.ep[1].state)
		}
		p.write(0, 100)
		p.deliver(0, 0)
		if rst := lastSent(p, 1); rst.Flags&FlagRST == 0 || !p.ep[1].done {
			t.Fatalf("data after Close: answered %v, done %v; want a reset", &rst, p.ep[1].done)
		}
	})
	t.Run("FIN-WAIT-2 of a closed connection ends after finTimeout", func(t *testing.T) {
		p := established(t)
		p.close(1)
		p.deliverAll(0)
		if p.ep[1].state != stateFinWait2 {
			t.Fatalf("state %v", p.ep[1].state)
		}
		start := p.now
		p.advance(p.cfg[1].finTimeout - time.Millisecond)
		if p.ep[1].done {
			t.Fatalf("ended %v into FIN-WAIT-2, before finTimeout %v", p.now.Sub(start), p.cfg[1].finTimeout)
		}
		p.advance(time.Millisecond)
		if !p.ep[1].done || p.ep[1].err != nil {
			t.Fatalf("FIN-WAIT-2 after finTimeout: done %v err %v", p.ep[1].done, p.ep[1].err)
		}
	})
	t.Run("half-closed FIN-WAIT-2 waits for the peer indefinitely", func(t *testing.T) {
		p := established(t)
		p.closeWrite(1)
		p.deliverAll(0)
		p.advance(10 * time.Minute)
		if p.ep[1].done || p.ep[1].state != stateFinWait2 {
			t.Fatalf("after CloseWrite alone: state %v done %v; FIN-WAIT-2 must last while the application may still read", p.ep[1].state, p.ep[1].done)
		}
	})
	t.Run("retransmitted FIN in CLOSE-WAIT, CLOSING and LAST-ACK is ACKed again", func(t *testing.T) {
		for _, st := range []state{stateCloseWait, stateClosing, stateLastAck} {
			p := established(t)
			a := p.ep[0]
			if st == stateClosing {
				p.closeWrite(0)
				p.wire[0] = nil // our FIN is lost, so the peer's FIN finds us in FIN-WAIT-1
			}
			p.closeWrite(1)
			fin := p.wire[1][len(p.wire[1])-1]
			p.deliverAll(0)
			if st == stateLastAck {
				p.wire[1] = nil
				p.closeWrite(0)
				p.wire[0] = nil
			}
			if a.state != st {
				t.Fatalf("setting up %v: state %v", st, a.state)
			}
			p.wire[0] = nil
			p.wire[1] = append(p.wire[1], fin) // the peer re-sends its FIN
			p.deliver(1, len(p.wire[1])-1)
			if len(p.wire[0]) == 0 || p.wire[0][0].seg.Ack != a.rcvNxt || p.wire[0][0].seg.Flags&FlagACK == 0 {
				t.Fatalf("%v: retransmitted FIN answered with %v, want an ACK of %d", st, segList(p.wire[0]), a.rcvNxt)
			}
			if a.state != st {
				t.Fatalf("%v: state changed to %v", st, a.state)
			}
		}
	})
}

// TestHalfCloseBothWays: each side keeps sending after the other half-closed, and the
// connection ends cleanly on both sides.
func TestHalfCloseBothWays(t *testing.T) {
	for _, first := range []int{0, 1} {
		t.Run(fmt.Sprintf("side %d closes first", first), func(t *testing.T) {
			p := newPair(t, testConfig(2), testConfig(2), 0xfffffff0, 42)
			p.connect(nil)
			p.deliverAll(time.Second)
			if p.ep[1] == nil || p.ep[0].state != stateEstablished || p.ep[1].state != stateEstablished {
				t.Fatalf("handshake did not complete")
			}
			second := 1 - first
			p.write(first, 5000)
			p.closeWrite(first)
			p.deliverAll(time.Second)
			if p.ep[second].state != stateCloseWait || p.ep[first].state != stateFinWait2 {
				t.Fatalf("after the first FIN: states %v / %v, want FIN-WAIT-2 / CLOSE-WAIT", p.ep[first].state, p.ep[second].state)
			}
			if !p.app[second].eof || p.app[second].read != 5000 {
				t.Fatalf("side %d read %d bytes, eof %v", second, p.app[second].read, p.app[second].eof)
			}
			p.write(second, 70000)
			p.deliverAll(5 * time.Second)
			if p.app[first].read != 70000 {
				t.Fatalf("side %d read %d bytes after half-closing, want 70000", first, p.app[first].read)
			}
			p.closeWrite(second)
			p.deliverAll(time.Second)
			if p.ep[second].state != stateClosed || !p.ep[second].done || p.ep[second].err != nil {
				t.Fatalf("second closer: state %v err %v, want CLOSED cleanly (LAST-ACK acknowledged)", p.ep[second].state, p.ep[second].err)
			}
			if p.ep[first].state != stateTimeWait || !p.app[first].eof {
				t.Fatalf("first closer: state %v eof %v, want TIME-WAIT and EOF", p.ep[first].state, p.app[first].eof)
			}
			p.advance(p.cfg[first].timeWait)
			if !p.ep[first].done || p.ep[first].err != nil {
				t.Fatalf("TIME-WAIT did not end cleanly: done %v err %v", p.ep[first].done, p.ep[first].err)
			}
		})
	}
}

// ---------------------------------------------------------------------------------
// Windows and probes.

// TestZeroWindow: the receiver stops reading; the sender probes the closed window on
// its persist timer, backing off, and keeps the connection open as long as the probes
// are answered (RFC 9293 3.8.6.1: "MUST allow the connection to stay open"); once the
// receiver reads, the window reopens and everything arrives.
func TestZeroWindow(t *testing.T) {
	const window = 5 * 1428 // whole segments (MSS 1440 less timestamps): the window closes exactly
	p := newPair(t, testConfig(2), testConfig(2, func(c *epConfig) { c.rcvLimit = window }), 1, 2)
	p.connect(nil)
	p.deliverAll(time.Second)
	p.noRead[1] = true
	p.write(0, 30000)
	p.deliverAll(time.Second)
	a, b := p.ep[0], p.ep[1]
	if b.rb.length() != window || a.sndWnd != 0 {
		t.Fatalf("receiver holds %d bytes, sender's window %d; want %d and 0", b.rb.length(), a.sndWnd, window)
	}
	// Let the persist timer run for two minutes (longer than the user timeout),
	// delivering every probe and every answer.
	probes := 0
	start := p.now
	for p.now.Sub(start) < 2*time.Minute && !a.done {
		d := a.deadline()
		if d.IsZero() {
			t.Fatalf("zero window with data to send and no timer armed (state %v)", a.state)
		}
		p.advanceTo(d)
		// Probes are what Linux sends (tcp_xmit_probe_skb): no data, seq = snd.una-1, which
		// the peer must answer with its window. A data byte beyond the window would have to
		// be in flight (and could time a path out) for as long as the window stays shut.
		for _, o := range p.wire[0] {
			if len(o.seg.Payload) == 0 && o.seg.Seq == a.sndUna-1 {
				probes++
			}
		}
		p.deliverAll(0)
	}
	if a.done || b.done {
		t.Fatalf("connection ended during an answered zero window: sender err %v, receiver err %v (%d probes)", a.err, b.err, probes)
	}
	if probes < 3 || probes > 40 {
		t.Errorf("%d window probes in 2 minutes, want a backed-off handful", probes)
	}
	if h := p.health[0]; h.downs != 0 {
		t.Errorf("the sender marked paths down %d times while the peer answered every probe", h.downs)
	}
	p.noRead[1] = false
	p.deliverAll(10 * time.Second)
	if p.app[1].read != 30000 {
		t.Fatalf("after the window reopened: receiver read %d of 30000 bytes", p.app[1].read)
	}
}

// TestSmallWindowLostUpdate: the receiver's window is open but smaller than a segment,
// so the sender holds its data back (sender-side silly window avoidance). When the
// window update that follows a read is lost, something must still move: the persist
// timer has to probe (or send what fits), otherwise both ends wait for each other.
func TestSmallWindowLostUpdate(t *testing.T) {
	p := newPair(t, testConfig(1), testConfig(1, func(c *epConfig) { c.rcvLimit = 8000 }), 1, 2)
	p.connect(nil)
	p.deliverAll(time.Second)
	p.noRead[1] = true
	p.write(0, 30000)
	p.deliverAll(time.Second)
	t.Logf("receiver holds %d of 8000 bytes, sender's window %d", p.ep[1].rb.length(), p.ep[0].sndWnd)
	// The receiver reads everything; its window update is lost.
	p.noRead[1] = false
	p.readAll(1)
	if len(p.wire[1]) == 0 {
		t.Fatalf("no window update after the receiver emptied its buffer")
	}
	p.wire[1] = nil
	p.deliverAll(2 * time.Minute)
	if p.app[1].read != 30000 {
		t.Fatalf("receiver read %d of 30000 bytes two minutes after a lost window update (sender window %d, state %v, deadline %v)",
			p.app[1].read, p.ep[0].sndWnd, p.ep[0].state, p.ep[0].deadline())
	}
}

// TestWindowBelowMSS: a peer whose receive window never reaches one full segment must
// still get data (RFC 9293 3.8.6.2.1: send when at least half the largest window the
// peer offered fits).
func TestWindowBelowMSS(t *testing.T) {
	e, now := openActive(t, testConfig(1), 1, 2, Options{MSS: 1460}, 1000, 10*time.Millisecond)
	e.sb.write(streamBytes(0, 0, 5000))
	out := flush(e, now)
	out = append(out, runUntil(t, e, now, now.Add(10*time.Second))...)
	if d := dataSegs(out); len(d) == 0 || len(d[0].seg.Payload) != 1000 {
		t.Fatalf("peer window 1000 < MSS 1460: sent %v, want 1000 bytes", segList(out))
	}
}

// TestLostSYNSinglePath: on a one-path stack the first SYN is lost; the retry gets
// through. Data the application writes the moment the handshake completes must leave
// (a lost SYN once marked the only path down, so nothing was sent, no timer was armed
// and nothing woke the endpoint when the prober revived the path).
func TestLostSYNSinglePath(t *testing.T) {
	p := newPair(t, testConfig(1), testConfig(1), 10, 20)
	p.connect(nil)
	p.wire[0] = nil // the SYN is lost
	p.advanceTo(smT0.Add(time.Second))
	p.deliverAll(0) // the retried SYN and the rest of the handshake, no time passes
	if !p.app[0].accepted {
		t.Fatalf("handshake did not complete: %v", p.ep[0].state)
	}
	p.write(0, 1000)
	p.deliverAll(time.Minute)
	if p.app[1].read != 1000 {
		t.Fatalf("receiver read %d of 1000 bytes a minute after the handshake (sender: path up in view %v, stack %v, deadline %v)",
			p.app[1].read, p.ep[0].view[0].Up, p.health[0].pathUp(0), p.ep[0].deadline())
	}
}

// TestAllPathsDownRevived: other connections have marked every path down stack-wide
// when an idle connection's application writes. Nothing can be sent; once the prober
// revives a path the data must leave, without any further event on the connection.
func TestAllPathsDownRevived(t *testing.T) {
	p := newPair(t, testConfig(2), testConfig(2), 10, 20)
	p.connect(nil)
	p.deliverAll(time.Second)
	p.health[0].pathReport(0, false)
	p.health[0].pathReport(1, false)
	p.write(0, 1000)
	p.deliverAll(time.Minute)
	if p.app[1].read != 1000 {
		t.Fatalf("receiver read %d of 1000 bytes a minute after every path went down and came back (sender view up %v/%v, stack %v/%v, deadline %v)",
			p.app[1].read, p.ep[0].view[0].Up, p.ep[0].view[1].Up, p.health[0].pathUp(0), p.health[0].pathUp(1), p.ep[0].deadline())
	}
}

// TestPathRevivedWithSegmentsInFlight: the only path times out twice and is marked
// down; the connection-level timer re-sends the oldest segment on it anyway; then the
// prober revives the path. Reviving resets the path's state, and the segment sent on
// it must still be accounted for (in flight on the path, or declared lost): InFlight
// must equal the in-flight entries of the transmit log at every step.
func TestPathRevivedWithSegmentsInFlight(t *testing.T) {
	p := newPair(t, testConfig(1), testConfig(1), 7, 9)
	p.connect(nil)
	p.deliverAll(time.Second)
	p.write(0, 100)
	p.wire[0] = nil // lost, and so is everything after it until the end
	for k := 0; k < 200 && p.now.Sub(smT0) < 10*time.Second; k++ {
		d := p.nextEvent()
		if d.IsZero() {
			break
		}
		p.advanceTo(d)
		p.wire[0] = nil
		p.check()
	}
	if p.health[0].downs == 0 {
		t.Fatalf("the path was never marked down; the test did not reach its case")
	}
}

// TestTimersMoveOn: after timer() runs at its deadline, the next deadline is later
// (or there is none). A deadline that stays in the past makes the loop spin: it
// re-arms the endpoint's timer for a time already passed, over and over. Case: Close
// leads to FIN-WAIT-2 (finTimeout armed), the peer's FIN arrives 25 s later and the
// endpoint enters TIME-WAIT; the FIN-WAIT-2 deadline must not outlive its state.
func TestTimersMoveOn(t *testing.T) {
	p := newPair(t, testConfig(1), testConfig(1), 7, 9)
	p.connect(nil)
	p.deliverAll(time.Second)
	p.close(1)
	p.deliverAll(0)
	b := p.ep[1]
	if b.state != stateFinWait2 {
		t.Fatalf("state %v, want FIN-WAIT-2", b.state)
	}
	p.advance(25 * time.Second)
	p.closeWrite(0)
	p.deliverAll(0)
	if b.state != stateTimeWait {
		t.Fatalf("state %v, want TIME-WAIT", b.state)
	}
	for k := 0; k < 100 && !b.done; k++ {
		d := b.deadline()
		if d.IsZero() {
			t.Fatalf("TIME-WAIT with no timer")
		}
		p.now = d
		b.timer(p.now)
		p.flush(1)
		if d2 := b.deadline(); !b.done && !d2.IsZero() && !d2.After(p.now) {
			t.Fatalf("in %v at %v: the timer ran, and the next deadline is %v again (the loop would spin until TIME-WAIT ends at %v)",
				b.state, p.now.Sub(smT0), d2.Sub(smT0), b.twAt.Sub(smT0))
		}
	}
	if !b.done || b.err != nil {
		t.Fatalf("TIME-WAIT did not end cleanly: %v %v", b.state, b.err)
	}
}

// TestRenegedSACK: the peer SACKs the first unacknowledged segment, then acknowledges
// nothing more (RFC 2018 lets a receiver discard SACKed data; a sender must still
// retransmit it on timeout). Whatever timers re-send, the in-flight accounting must
// hold at every step, and once everything is acknowledged nothing is in flight.
func TestRenegedSACK(t *testing.T) {
	const iss, peerISS = 100, 200
	e, now := openActive(t, testConfig(1), iss, peerISS, fullOpts(1440, 7, 1), 65535, 10*time.Millisecond)
	e.sb.write(streamBytes(0, 0, 2*e.segSize))
	if d := dataSegs(flush(e, now)); len(d) != 2 {
		t.Fatalf("sent %v, want two segments", segList(d))
	}
	sack := fromPeer(FlagACK, peerISS+1, iss+1, 65535, nil)
	sack.Options.NSACK = 1
	sack.Options.SACK[0] = SACKBlock{Left: iss + 1, Right: iss + 1 + uint32(e.segSize)}
	now = now.Add(10 * time.Millisecond)
	in(e, now, sack, 0)
	if err := checkEndpoint(e); err != nil {
		t.Fatal(err)
	}
	// Run the timers for 20 s (the user timeout, 30 s, would end the connection later;
	// the peer answers before that).
	start := now
	for k := 0; k < 50; k++ {
		d := e.deadline()
		if d.IsZero() || d.Sub(start) > 20*time.Second {
			break
		}
		now = d
		e.timer(now)
		flush(e, now)
		if err := checkEndpoint(e); err != nil {
			t.Fatalf("at %v: %v", now.Sub(smT0), err)
		}
	}
	if e.done {
		t.Fatalf("connection ended (%v) within 20 s of a reneged SACK", e.err)
	}
	in(e, now, fromPeer(FlagACK, peerISS+1, e.sndNxt, 65535, nil), 0)
	if err := checkEndpoint(e); err != nil {
		t.Fatal(err)
	}
	if e.view[0].InFlight != 0 || e.tx.len() != 0 {
		t.Fatalf("everything acknowledged, yet %d bytes in flight and %d log entries", e.view[0].InFlight, e.tx.len())
	}
}

func TestKeepalive(t *testing.T) {
	ka := func(c *epConfig) { c.keepAlive = 9 * time.Second }
	t.Run("idle after the handshake: probes, answered", func(t *testing.T) {
		p := newPair(t, testConfig(1, ka), testConfig(1), 1, 2)
		p.connect(nil)
		p.deliverAll(time.Second)
		a := p.ep[0]
		start := p.now
		probes := 0
		for p.now.Sub(start) < time.Minute {
			d := a.deadline()
			if d.IsZero() {
				break
			}
			p.advanceTo(d)
			for _, o := range p.wire[0] {
				if o.seg.Seq == a.sndNxt-1 && len(o.seg.Payload) == 0 {
					probes++
				}
			}
			p.deliverAll(0)
		}
		if probes < 5 {
			t.Fatalf("%d keepalive probes in a minute of idling with keepalive 9s, want about 6 (the keepalive timer was never armed: deadline %v)", probes, a.deadline())
		}
		if a.done {
			t.Fatalf("answered keepalives ended the connection: %v", a.err)
		}
	})
	t.Run("unanswered probes abort", func(t *testing.T) {
		p := newPair(t, testConfig(1, ka), testConfig(1), 1, 2)
		p.connect(nil)
		p.deliverAll(time.Second)
		// Some traffic first, so timers have run at least once.
		p.write(1, 100)
		p.deliverAll(time.Second)
		a := p.ep[0]
		last := a.lastRecv
		var probeTimes []time.Duration
		for !a.done && p.now.Sub(last) < 5*time.Minute {
			d := a.deadline()
			if d.IsZero() {
				t.Fatalf("no timer armed %v after the last segment; keepalive never fired", p.now.Sub(last))
			}
			p.advanceTo(d)
			for range p.wire[0] {
				probeTimes = append(probeTimes, p.now.Sub(last))
			}
			p.wire[0] = nil // lost
		}
		if !a.done || a.err != ErrTimeout {
			t.Fatalf("state %v err %v, want ErrTimeout", a.state, a.err)
		}
		if len(probeTimes) != 3 || probeTimes[0] != 9*time.Second {
			t.Errorf("probes at %v, want 3 starting at 9s", probeTimes)
		}
		if got := p.now.Sub(last); got != 18*time.Second {
			t.Errorf("aborted %v after the last segment, want 18s (9s idle + 3 probes 3s apart)", got)
		}
	})
}

// TestUserTimeout: outstanding data that sees no progress for cfg.userTimeout resets
// the connection with ErrTimeout, however the retransmissions are backed off.
func TestUserTimeout(t *testing.T) {
	for _, npaths := range []int{1, 3} {
		t.Run(fmt.Sprintf("%d paths", npaths), func(t *testing.T) {
			e, now := openActive(t, testConfig(npaths), 1, 2, fullOpts(1440, 7, 1), 65535, 10*time.Millisecond)
			e.sb.write(streamBytes(0, 0, 5000))
			sent := flush(e, now)
			if len(dataSegs(sent)) == 0 {
				t.Fatal("nothing sent")
			}
			out := runUntil(t, e, now, now.Add(5*time.Minute))
			if !e.done || e.err != ErrTimeout {
				t.Fatalf("state %v err %v after 5 minutes of silence, want ErrTimeout", e.state, e.err)
			}
			if len(out) == 0 || out[len(out)-1].seg.Flags&FlagRST == 0 {
				t.Fatalf("want retransmissions ending with a reset, got %v", segList(out))
			}
			if e.lastProgress != now {
				t.Fatalf("progress recorded without any acknowledgement")
			}
			buf := make([]byte, 1)
			if _, err, _ := e.rb.read(buf); err != ErrTimeout {
				t.Errorf("application read error %v, want ErrTimeout", err)
			}
		})
	}
}

// TestUserTimeoutExact checks the timeout fires at lastProgress + userTimeout, not at
// the next backed-off retransmission after it.
func TestUserTimeoutExact(t *testing.T) {
	e, now := openActive(t, testConfig(1), 1, 2, fullOpts(1440, 7, 1), 65535, 10*time.Millisecond)
	e.sb.write(streamBytes(0, 0, 5000))
	if len(dataSegs(flush(e, now))) == 0 {
		t.Fatal("nothing sent")
	}
	limit := now.Add(e.cfg.userTimeout)
	runUntil(t, e, now, limit.Add(-time.Millisecond))
	if e.done {
		t.Fatalf("ended before the user timeout: %v", e.err)
	}
	runUntil(t, e, now, limit)
	if !e.done || e.err != ErrTimeout {
		t.Fatalf("not ended at exactly the user timeout: state %v err %v", e.state, e.err)
	}
}

// TestSequenceWrap moves data both ways across the 2^32 wrap of both sequence spaces.
func TestSequenceWrap(t *testing.T) {
	issA, issB := uint32(0xffffffff-3000), uint32(0xffffffff-100)
	p := newPair(t, testConfig(2), testConfig(2, func(c *epConfig) { c.rcvLimit = 64 << 10 }), issA, issB)
	p.connect(nil)
	p.deliverAll(time.Second)
	// Both applications write until their whole stream is in: the send buffer takes
	// only what the loop's allowance admits at a time.
	for p.app[0].written < 300_000 || p.app[1].written < 200_000 {
		k := p.write(0, 300_000-p.app[0].written) + p.write(1, 200_000-p.app[1].written)
		p.deliverAll(time.Minute)
		if k == 0 && p.ep[0].sb.length() == 0 && p.ep[1].sb.length() == 0 {
			t.Fatalf("writes stalled at %d and %d bytes", p.app[0].written, p.app[1].written)
		}
	}
	if p.app[1].read != 300_000 || p.app[0].read != 200_000 {
		t.Fatalf("read %d and %d bytes, want 200000 and 300000", p.app[0].read, p.app[1].read)
	}
	a, b := p.ep[0], p.ep[1]
	if !(a.sndUna < issA && b.sndUna < issB) {
		t.Fatalf("sequence numbers did not wrap: una %d %d", a.sndUna, b.sndUna)
	}
	if a.sndUna != issA+1+300_000 || b.rcvNxt != a.sndUna || b.sndUna != issB+1+200_000 || a.rcvNxt != b.sndUna {
		t.Fatalf("una/nxt do not line up: A una %d rcv %d, B una %d rcv %d", a.sndUna, a.rcvNxt, b.sndUna, b.rcvNxt)
	}
	p.closeWrite(0)
	p.closeWrite(1)
	p.deliverAll(time.Minute)
	if !a.done || !b.done || a.err != nil || b.err != nil {
		t.Fatalf("close across the wrap: done %v %v err %v %v", a.done, b.done, a.err, b.err)
	}
}

// ---------------------------------------------------------------------------------
// Per-path loss detection.

// sendOn writes n bytes and makes the endpoint send them on path p alone (the other
// paths are hidden from the scheduler for the call). It waits for p's pacing.
func sendOn(t *testing.T, e *endpoint, now *time.Time, p int, off, n int) outSeg {
	t.Helper()
	// Close every other path's window (not its health: output syncs health with the
	// stack, and a path marked down would lose its in-flight data).
	cwnd := make([]int, len(e.view))
	for i := range e.view {
		cwnd[i] = e.view[i].Cwnd
		if i != p {
			e.view[i].Cwnd = 0
		}
	}
	if nx := e.view[p].NextSend; nx.After(*now) {
		*now = nx
	}
	e.sb.write(streamBytes(0, off, n))
	out := flush(e, *now)
	for i := range e.view {
		e.view[i].Cwnd = cwnd[i]
	}
	d := dataSegs(out)
	if len(d) != 1 || d[0].path != p {
		t.Fatalf("sendOn(%d): sent %v", p, segList(out))
	}
	return d[0]
}

func TestPerPathLossDetection(t *testing.T) {
	const iss, peerISS = 1000, 50
	rtt := 20 * time.Millisecond
	open := func(t *testing.T) (*endpoint, time.Time) {
		e, now := openActive(t, testConfig(2), iss, peerISS, fullOpts(1440, 7, 1), 65535, rtt)
		// Give path 1 its own RTT sample, as traffic would.
		e.paths[1].rttSample(rtt)
		return e, now
	}
	sack := func(ack uint32, blocks ...SACKBlock) Segment {
		s := fromPeer(FlagACK, peerISS+1, ack, 65535, nil)
		s.Options.NSACK = uint8(copy(s.Options.SACK[:], blocks))
		return s
	}
	retransmitted := func(out []outSeg, seq uint32) (int, bool) {
		for _, o := range out {
			if o.seg.Seq == seq && len(o.seg.Payload) > 0 {
				return o.path, true
			}
		}
		return 0, false
	}
	seg := 1428
	t.Run("later segments SACKed on another path: no loss", func(t *testing.T) {
		e, now := open(t)
		t0 := now
		x := sendOn(t, e, &now, 0, 0, seg)
		now = now.Add(time.Millisecond)
		y := sendOn(t, e, &now, 1, seg, seg)
		z := sendOn(t, e, &now, 1, 2*seg, seg)
		now = t0.Add(rtt + 2*time.Millisecond)
		out := in(e, now, sack(x.seg.Seq, SACKBlock{Left: y.seg.Seq, Right: z.seg.Seq + uint32(seg)}), 1)
		out = append(out, runUntil(t, e, now, t0.Add(150*time.Millisecond))...)
		if _, ok := retransmitted(out, x.seg.Seq); ok {
			t.Fatalf("segment on path 0 re-sent because segments on path 1 were SACKed: %v", segList(out))
		}
		if i := e.tx.find(x.seg.Seq); i < 0 || e.tx.at(i).lost {
			t.Fatalf("segment on path 0 declared lost")
		}
	})
	t.Run("later segment SACKed on the same path: lost after the RACK window", func(t *testing.T) {
		e, now := open(t)
		t0 := now
		x := sendOn(t, e, &now, 0, 0, seg)
		now = now.Add(time.Millisecond)
		w := sendOn(t, e, &now, 0, seg, seg)
		sentW := now
		now = sentW.Add(rtt)
		out := in(e, now, sack(x.seg.Seq, SACKBlock{Left: w.seg.Seq, Right: w.seg.Seq + uint32(seg)}), 0)
		if _, ok := retransmitted(out, x.seg.Seq); ok {
			t.Fatalf("re-sent before the reordering window passed")
		}
		// Deadline: x's send time + the RTT of w + a quarter of the min RTT.
		deadline := t0.Add(rtt + rtt/4)
		out = runUntil(t, e, now, deadline.Add(2*time.Millisecond))
		p, ok := retransmitted(out, x.seg.Seq)
		if !ok {
			t.Fatalf("segment not re-sent by %v after it was sent: %v", deadline.Add(2*time.Millisecond).Sub(t0), segList(out))
		}
		t.Logf("re-sent on path %d", p)
	})
	t.Run("path timeout re-sends in-flight segments on another path", func(t *testing.T) {
		e, now := open(t)
		x := sendOn(t, e, &now, 0, 0, seg)
		y := sendOn(t, e, &now, 0, seg, seg)
		rto := e.paths[0].rto()
		out := runUntil(t, e, now, now.Add(rto+10*time.Millisecond))
		for _, s := range []outSeg{x, y} {
			p, ok := retransmitted(out, s.seg.Seq)
			if !ok || p != 1 {
				t.Fatalf("after path 0's timeout (%v): seq %d re-sent=%v on path %d, want on path 1: %v", rto, s.seg.Seq, ok, p, segList(out))
			}
		}
		if e.view[0].InFlight != 0 || e.view[1].InFlight != 2*seg {
			t.Fatalf("in flight %d/%d, want 0/%d", e.view[0].InFlight, e.view[1].InFlight, 2*seg)
		}
	})
}

// ---------------------------------------------------------------------------------
// pair: two endpoints and a wire.

// appState is one side's application as the pair models it.
type appState struct {
	written  int  // bytes written so far (stream offset of the next write)
	read     int  // bytes read and checked
	eof      bool // read returned io.EOF
	readErr  error
	closedW  bool // CloseWrite or Close called
	closed   bool // Close called: no more reads
	finalW   int  // written at closedW
	accepted bool // Dial/Accept returned: the application holds the connection
}

// pair is two endpoints joined by a wire that delivers only when told. Side 0 dials,
// side 1 listens (its endpoint appears when the first SYN arrives) unless listen is
// false. Like the loop, a segment for a finished or missing endpoint draws a reset.
//
// Path health is the Stack's own (an unstarted Stack per side); output syncs the
// endpoint's view with it, as in the loop. The stack's prober is
// emulated: once a second every path marked down is revived (its probe answered).
type pair struct {
	tb     testing.TB
	now    time.Time
	cfg    [2]*epConfig
	health [2]*stackHealth
	iss    [2]uint32
	ep     [2]*endpoint
	wire   [2][]outSeg // wire[i]: sent by side i, not yet delivered
	app    [2]appState
	noRead [2]bool // deliverAll leaves received data unread
	listen bool

	probed time.Time // the prober's ticks up to here have run
}

// stackHealth is a Stack's path health (the Stack is never started) with counters.
// A path going down sets wake: the Stack then sends every loop cmdHealth, which runs
// every endpoint's output; the pair does that for the side's endpoint after the step.
type stackHealth struct {
	s          *Stack
	l          *loop
	downs, ups int
	wake       bool
}

func newStackHealth(cfg *epConfig) *stackHealth {
	s := &Stack{log: zap.NewNop(), health: make([]pathHealthState, len(cfg.paths)), ep: epConfig{paths: cfg.paths}}
	return &stackHealth{s: s, l: &loop{s: s}}
}

func (h *stackHealth) pathUp(p int) bool { return h.s.pathUp(p) }
func (h *stackHealth) pathReport(p int, up bool) {
	if up {
		h.ups++
	} else {
		h.downs++
		if h.s.pathUp(p) {
			h.wake = true
		}
	}
	h.s.pathReport(p, up)
}
func (h *stackHealth) rttHint(p int) time.Duration { return h.s.rttHint(p) }

func (h *stackHealth) anyDown() bool {
	for p := range h.s.health {
		if !h.s.pathUp(p) {
			return true
		}
	}
	return false
}

// newPair makes a pair; it replaces the configs' health with a stackHealth each.
func newPair(tb testing.TB, a, b *epConfig, issA, issB uint32) *pair {
	p := &pair{tb: tb, now: smT0, probed: smT0, cfg: [2]*epConfig{a, b}, iss: [2]uint32{issA, issB}, listen: true}
	for i, c := range p.cfg {
		p.health[i] = newStackHealth(c)
		c.health = p.health[i]
	}
	p.ep[0] = newEndpoint(a, apA, apB, issA, smT0)
	return p
}

// connect starts side 0's active open, with synData in the SYN when non-nil.
func (p *pair) connect(synData []byte) {
	if len(synData) > 0 {
		n, _ := p.ep[0].sb.write(synData)
		p.app[0].written += n
	}
	p.ep[0].connect(p.now, len(synData) > 0)
	p.collect(0)
}

// collect moves side i's output onto the wire and notes what the application sees.
func (p *pair) collect(i int) {
	e := p.ep[i]
	if e == nil {
		return
	}
	p.wire[i] = append(p.wire[i], drainOut(e)...)
	// The loop hands a listener's connection to Accept once it took SYN data, before the
	// handshake ends (the exit answers then): the application may write in SYN-RECEIVED.
	if !p.app[i].accepted && (e.state.synchronized() || e.state == stateSynRcvd && e.synDataTaken) {
		p.app[i].accepted = true
	}
}

func (p *pair) flush(i int) {
	if e := p.ep[i]; e != nil && !e.done {
		e.output(p.now) // output syncs path health with the stack, as in the loop
	}
	p.collect(i)
	p.wakeups()
}

// wakeups runs the loop's cmdHealth for sides whose stack marked a path down.
func (p *pair) wakeups() {
	for i, h := range p.health {
		if h.wake {
			h.wake = false
			p.flush(i)
		}
	}
}

// probeTick is the stack prober's next run after now when some path is down, or zero.
func (p *pair) probeTick() time.Time {
	if !p.health[0].anyDown() && !p.health[1].anyDown() {
		return time.Time{}
	}
	base := smT0.Add(probePhase)
	return base.Add(p.probed.Sub(base).Truncate(time.Second) + time.Second)
}

// probePhase puts the prober's ticks half a second off the connection's timers (the
// real prober's ticker runs from the stack's start, not the connection's).
const probePhase = 500 * time.Millisecond

// probe revives every path marked down (the prober's probes were answered). Like the
// Stack, it wakes no endpoint: a path coming back is noticed at the endpoint's next
// event (its output syncs health).
func (p *pair) probe() {
	for _, h := range p.health {
		for q := range h.s.health {
			if !h.s.pathUp(q) {
				h.s.pathReport(q, true)
			}
		}
	}
}

// deliver hands wire[i][k] to side 1-i.
func (p *pair) deliver(i, k int) {
	o := p.wire[i][k]
	p.wire[i] = append(p.wire[i][:k], p.wire[i][k+1:]...)
	j := 1 - i
	seg := o.seg
	seg.Path = o.path
	e := p.ep[j]
	if e == nil && p.listen && j == 1 && seg.Flags&(FlagSYN|FlagACK|FlagRST) == FlagSYN {
		e = newEndpoint(p.cfg[1], apB, apA, p.iss[1], p.now)
		p.ep[1] = e
		e.accept(p.now, &seg, o.path)
		p.flush(1)
		return
	}
	if e == nil || e.done {
		// The loop's answer for a segment to no connection (RFC 9293 3.10.7.1).
		if seg.Flags&FlagRST != 0 {
			return
		}
		rst := Segment{Src: seg.Dst, Dst: seg.Src, Flags: FlagRST}
		if seg.Flags&FlagACK != 0 {
			rst.Seq = seg.Ack
		} else {
			rst.Flags |= FlagACK
			rst.Ack = seg.Seq + seg.Len()
		}
		p.wire[j] = append(p.wire[j], outSeg{path: o.path, seg: rst})
		return
	}
	e.input(p.now, &seg, o.path)
	p.flush(j)
}

// fire runs side i's timer if its deadline has come, then output.
func (p *pair) fire(i int) bool {
	e := p.ep[i]
	if e == nil || e.done {
		return false
	}
	d := e.deadline()
	if d.IsZero() || d.After(p.now) {
		return false
	}
	e.timer(p.now)
	p.flush(i)
	if d2 := e.deadline(); !e.done && !d2.IsZero() && !d2.After(p.now) {
		p.tb.Fatalf("side %d (%v): timer deadline %v not moved past now %v after firing", i, e.state, d2.Sub(smT0), p.now.Sub(smT0))
	}
	return true
}

// nextDeadline is the earliest timer of the live endpoints, or zero.
func (p *pair) nextDeadline() time.Time {
	var d time.Time
	for _, e := range p.ep {
		if e == nil || e.done {
			continue
		}
		if t := e.deadline(); !t.IsZero() && (d.IsZero() || t.Before(d)) {
			d = t
		}
	}
	return d
}

// nextEvent is the earlier of nextDeadline and probeTick (zero when neither).
func (p *pair) nextEvent() time.Time {
	d := p.nextDeadline()
	if pt := p.probeTick(); !pt.IsZero() && (d.IsZero() || pt.Before(d)) {
		d = pt
	}
	return d
}

// advanceTo moves the clock to t, firing every timer on its deadline (and the prober
// on its ticks) on the way.
func (p *pair) advanceTo(t time.Time) {
	for n := 0; ; n++ {
		d := p.nextEvent()
		if d.IsZero() || d.After(t) {
			break
		}
		if n > 1_000_000 {
			p.tb.Fatalf("timers keep firing at %v", d.Sub(smT0))
		}
		if d.After(p.now) {
			p.now = d
		}
		if pt := p.probeTick(); !pt.IsZero() && !pt.After(p.now) {
			p.probe()
		}
		p.probed = p.now // ticks up to now are spent, whether a path was down or not
		p.fire(0)
		p.fire(1)
	}
	if t.After(p.now) {
		p.now = t
	}
	p.probed = p.now
}

func (p *pair) advance(d time.Duration) { p.advanceTo(p.now.Add(d)) }

// deliverAll delivers everything in order (both directions, lossless, zero delay),
// lets applications read, and fires timers as they come due, until nothing is in
// flight and no timer is due within limit of virtual time (a bound, not a wait).
func (p *pair) deliverAll(limit time.Duration) {
	end := p.now.Add(limit)
	for n := 0; ; n++ {
		if n > 10_000_000 {
			p.tb.Fatalf("deliverAll: no quiescence")
		}
		switch {
		case len(p.wire[0]) > 0:
			p.deliver(0, 0)
		case len(p.wire[1]) > 0:
			p.deliver(1, 0)
		default:
			read := false
			for i := range p.ep {
				if !p.noRead[i] && p.readAll(i) {
					read = true
				}
			}
			if read {
				continue
			}
			d := p.nextEvent()
			if d.IsZero() || d.After(end) {
				return
			}
			p.advanceTo(d)
		}
	}
}

// write has side i's application write up to n bytes of its stream.
func (p *pair) write(i, n int) int {
	e, a := p.ep[i], &p.app[i]
	if e == nil || !a.accepted || a.closedW || e.done {
		return 0
	}
	k, err := e.sb.write(streamBytes(i, a.written, n))
	if err != nil {
		p.tb.Fatalf("side %d write: %v", i, err)
	}
	a.written += k
	p.flush(i)
	return k
}

// read has side i's application read up to n bytes and checks them against the
// peer's stream. It reports whether it got anything (data, EOF or an error).
func (p *pair) read(i, n int) bool {
	e, a := p.ep[i], &p.app[i]
	if e == nil || !a.accepted || a.closed || a.eof || a.readErr != nil {
		return false
	}
	buf := make([]byte, max(n, 1))
	k, err, ok := e.rb.read(buf)
	if !ok {
		return false
	}
	if k > 0 {
		peer := &p.app[1-i]
		if a.read+k > peer.written {
			p.tb.Fatalf("side %d read %d bytes beyond the %d the peer wrote", i, a.read+k-peer.written, peer.written)
		}
		if want := streamBytes(1-i, a.read, k); !bytes.Equal(buf[:k], want) {
			off := 0
			for buf[off] == want[off] {
				off++
			}
			p.tb.Fatalf("side %d read wrong bytes at stream offset %d", i, a.read+off)
		}
		a.read += k
	}
	switch {
	case err == io.EOF:
		a.eof = true
		peer := &p.app[1-i]
		if !peer.closedW || a.read != peer.finalW {
			p.tb.Fatalf("side %d: EOF after %d bytes; peer closed its write side: %v after %d bytes", i, a.read, peer.closedW, peer.finalW)
		}
	case err != nil:
		a.readErr = err
	}
	if !e.done {
		p.flush(i) // Conn.Read kicks the loop when the window had closed
	}
	return true
}

func (p *pair) readAll(i int) bool {
	got := false
	for p.read(i, 64<<10) {
		got = true
	}
	return got
}

func (p *pair) closeWrite(i int) {
	e, a := p.ep[i], &p.app[i]
	if e == nil || !a.accepted || a.closedW || e.done {
		return
	}
	a.closedW, a.finalW = true, a.written
	e.closeWrite()
	p.flush(i)
}

// close is Conn.Close as the loop carries it out (cmdClose).
func (p *pair) close(i int) {
	e, a := p.ep[i], &p.app[i]
	if e == nil || !a.accepted || a.closed {
		return
	}
	if !a.closedW {
		a.closedW, a.finalW = true, a.written
	}
	a.closed = true
	if e.done {
		return
	}
	e.appClosed, e.readClosed = true, true
	switch {
	case e.state == stateSynSent:
		e.abort(p.now)
	case e.rb.length() > 0:
		e.abort(p.now)
	default:
		e.closeWrite()
		if e.state == stateFinWait2 {
			e.finWaitAt = p.now.Add(e.cfg.finTimeout)
		}
	}
	p.flush(i)
}

// check asserts the endpoint invariants on both sides.
func (p *pair) check() {
	for i, e := range p.ep {
		if e != nil {
			if err := checkEndpoint(e); err != nil {
				p.tb.Fatalf("side %d (%v) at %v: %v", i, e.state, p.now.Sub(smT0), err)
			}
		}
	}
}

// checkEndpoint verifies what must hold for a live endpoint after every step:
// snd.una <= snd.nxt; the transmit log covers [snd.una, snd.nxt) contiguously; each
// path's InFlight is >= 0 and is the sum of the in-flight log entries sent on it, its
// timer is idle when nothing is in flight, and its controller agrees.
func checkEndpoint(e *endpoint) error {
	if e.done {
		return nil
	}
	if !seqnum.LEQ(e.sndUna, e.sndNxt) {
		return fmt.Errorf("snd.una %d after snd.nxt %d", e.sndUna, e.sndNxt)
	}
	if e.state.synchronized() {
		if e.tx.len() == 0 && e.sndUna != e.sndNxt {
			return fmt.Errorf("empty transmit log, yet snd.una %d != snd.nxt %d", e.sndUna, e.sndNxt)
		}
		if e.tx.len() > 0 {
			if f := e.tx.front(); f.seq != e.sndUna {
				return fmt.Errorf("transmit log starts at %d, snd.una %d", f.seq, e.sndUna)
			}
			if b := e.tx.at(e.tx.len() - 1); b.end != e.sndNxt {
				return fmt.Errorf("transmit log ends at %d, snd.nxt %d", b.end, e.sndNxt)
			}
		}
	}
	sum := make([]int, len(e.view))
	for i := 0; i < e.tx.len(); i++ {
		s := e.tx.at(i)
		if !seqnum.LT(s.seq, s.end) {
			return fmt.Errorf("empty log entry [%d,%d)", s.seq, s.end)
		}
		if i > 0 && e.tx.at(i-1).end != s.seq {
			return fmt.Errorf("transmit log gap or overlap: [..,%d) then [%d,..)", e.tx.at(i-1).end, s.seq)
		}
		if s.inflight {
			if s.path < 0 || s.path >= len(sum) {
				return fmt.Errorf("in-flight entry [%d,%d) on path %d", s.seq, s.end, s.path)
			}
			if s.sacked || s.lost {
				return fmt.Errorf("entry [%d,%d) in flight and sacked=%v lost=%v", s.seq, s.end, s.sacked, s.lost)
			}
			sum[s.path] += s.size()
		}
	}
	for p := range e.view {
		if e.view[p].InFlight < 0 || e.view[p].InFlight != sum[p] {
			return fmt.Errorf("path %d: InFlight %d, in-flight log entries sum to %d", p, e.view[p].InFlight, sum[p])
		}
		// One owner per fact: in flight changes only through the path's methods, which
		// keep the path controller's total and stop the path's timer at zero.
		ps := &e.paths[p]
		if e.view[p].InFlight == 0 && !ps.rtoAt.IsZero() {
			return fmt.Errorf("path %d: nothing in flight, yet its timer is armed for %v", p, ps.rtoAt)
		}
		if e.cfg.ccs == nil { // the controller is this endpoint's alone
			snap := ps.cc.snapshot()
			busy := 0
			if ps.busy {
				busy = 1
			}
			if snap.inflight != e.view[p].InFlight || snap.busy != busy {
				return fmt.Errorf("path %d: controller holds %d in flight and %d busy, the endpoint %d and %v", p, snap.inflight, snap.busy, e.view[p].InFlight, ps.busy)
			}
		}
	}
	if n := e.rb.length() + e.rq.Bytes(); n > e.cfg.rcvLimit {
		return fmt.Errorf("holding %d received bytes, limit %d", n, e.cfg.rcvLimit)
	}
	if e.state.synchronized() && seqnum.LT(e.rcvRight, e.rcvNxt) && e.finRcvd == false {
		return fmt.Errorf("advertised right edge %d before rcv.nxt %d", e.rcvRight, e.rcvNxt)
	}
	return nil
}

// ---------------------------------------------------------------------------------
// Allocation budgets and benchmarks for the per-segment hot paths.

// recvBench is an established endpoint receiving in-order data from a scripted peer
// that sends payload-sized segments; step delivers one, runs output and lets the
// application read.
type recvBench struct {
	e   *endpoint
	now time.Time
	seg Segment
	buf []byte
}

func newRecvBench(tb testing.TB) *recvBench {
	const iss, peerISS = 1, 1 << 30
	e, now := openActive(tb, testConfig(2), iss, peerISS, fullOpts(1440, 7, 1), 65535, 10*time.Millisecond)
	r := &recvBench{e: e, now: now, buf: make([]byte, 64<<10)}
	r.seg = fromPeer(FlagACK|FlagPSH, peerISS+1, iss+1, 65535, streamBytes(1, 0, e.segSize))
	r.seg.Options.HasTimestamp = true
	return r
}

func (r *recvBench) step() {
	e := r.e
	r.now = r.now.Add(100 * time.Microsecond)
	r.seg.Options.TSVal++
	e.input(r.now, &r.seg, 0)
	e.output(r.now)
	clear(e.out)
	e.out = e.out[:0]
	r.seg.Seq += uint32(len(r.seg.Payload))
	e.rb.read(r.buf)
}

// sendBench is an established endpoint sending one full segment per step to a peer
// that acknowledges every second segment.
type sendBench struct {
	e    *endpoint
	now  time.Time
	data []byte
	ack  Segment
	n    int
}

func newSendBench(tb testing.TB) *sendBench {
	const iss, peerISS = 1, 1 << 30
	e, now := openActive(tb, testConfig(1), iss, peerISS, fullOpts(1440, 7, 1), 65535, 10*time.Millisecond)
	s := &sendBench{e: e, now: now, data: streamBytes(0, 0, e.segSize)}
	s.ack = fromPeer(FlagACK, peerISS+1, iss+1, 65535, nil)
	s.ack.Options.HasTimestamp = true
	return s
}

func (s *sendBench) step() {
	e := s.e
	// Past pacing: each step is one segment's time at a few hundred Mbit/s at most.
	s.now = s.now.Add(50 * time.Microsecond)
	if nx := e.view[0].NextSend; nx.After(s.now) {
		s.now = nx
	}
	e.sb.write(s.data)
	e.output(s.now)
	clear(e.out)
	e.out = e.out[:0]
	if s.n++; s.n%2 == 0 {
		s.now = s.now.Add(50 * time.Microsecond)
		s.ack.Ack = e.sndNxt
		s.ack.Options.TSVal++
		e.input(s.now, &s.ack, 0)
		e.output(s.now)
		clear(e.out)
		e.out = e.out[:0]
	}
}

// TestAllocsEndpoint: taking an in-order data segment and answering it (an ACK every
// second segment), and sending a segment and processing its ACK, allocate nothing in
// steady state.
func TestAllocsEndpoint(t *testing.T) {
	r := newRecvBench(t)
	for i := 0; i < 2000; i++ {
		r.step()
	}
	if a := minAllocs(2000, r.step); a != 0 {
		t.Errorf("receive path: %.2f allocations per in-order segment, want 0", a)
	}
	if r.e.rcvNxt != r.seg.Seq || r.e.done {
		t.Fatalf("receiver did not take the segments: rcv.nxt %d, next seq %d", r.e.rcvNxt, r.seg.Seq)
	}
	s := newSendBench(t)
	for i := 0; i < 2000; i++ {
		s.step()
	}
	if a := minAllocs(2000, s.step); a != 0 {
		t.Errorf("send path: %.2f allocations per segment sent and acknowledged, want 0", a)
	}
	if sent := s.e.sndNxt - s.e.iss - 1; sent != uint32(s.n*s.e.segSize) || s.e.sndNxt-s.e.sndUna > uint32(s.e.segSize) {
		t.Fatalf("sender: sent %d bytes in %d steps of %d, %d unacknowledged", sent, s.n, s.e.segSize, s.e.sndNxt-s.e.sndUna)
	}
}

// minAllocs is the least of three testing.AllocsPerRun measurements. AllocsPerRun
// counts every allocation in the process, so a goroutine left running by another test
// can add to one measurement; an allocation on the measured path shows in all three.
func minAllocs(runs int, f func()) float64 {
	least := testing.AllocsPerRun(runs, f)
	for i := 0; i < 2 && least > 0; i++ {
		least = min(least, testing.AllocsPerRun(runs, f))
	}
	return least
}

type discardLink struct{}

func (discardLink) Send(int, []Segment) error { return nil }

// TestAllocsStackInput: Stack.Input hands a segment to its loop (address check,
// counters, flow hash, copy into a pooled buffer, wake-up) and the loop looks the
// flow up; none of it allocates in steady state. (The segments are resets for a flow
// that does not exist, so the endpoint's own work, covered above, is left out.)
func TestAllocsStackInput(t *testing.T) {
	if raceBuild {
		t.Skip("the race detector makes sync.Pool (payload buffers) drop items at random")
	}
	s, err := NewStack(Config{Addr: netip.MustParseAddr("10.9.9.1"), Paths: []PathConfig{{Name: "p0"}}, Loops: 1}, discardLink{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	segs := []Segment{{
		Src:     netip.MustParseAddrPort("10.9.9.2:80"),
		Dst:     netip.MustParseAddrPort("10.9.9.1:40000"),
		Flags:   FlagRST | FlagACK,
		Payload: make([]byte, 1000),
		Path:    0,
	}}
	for i := 0; i < 1000; i++ {
		s.Input(segs)
	}
	if a := minAllocs(5000, func() { s.Input(segs) }); a > 0.01 {
		t.Errorf("Stack.Input: %.3f allocations per segment, want 0", a)
	}
	if n := s.drops.noConn.Load(); n == 0 {
		t.Fatalf("the loop processed none of the segments")
	}
}

func BenchmarkEndpointReceive(b *testing.B) {
	r := newRecvBench(b)
	b.SetBytes(int64(len(r.seg.Payload)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.step()
	}
}

func BenchmarkEndpointSend(b *testing.B) {
	s := newSendBench(b)
	b.SetBytes(int64(len(s.data)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.step()
	}
}
