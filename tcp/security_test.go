package tcp

// Attacks on the engine (issue 10), each turned around into its pass condition.

import (
	"fmt"
	"testing"
	"time"
)

// TestSYNDataNoSpin: a SYN carrying data, never followed by the handshake's ACK. The
// listener takes the data and its application answers at once (the exit's status byte),
// which arms a per-path retransmission timer (and, with a zero window, the persist
// timer) in SYN-RECEIVED. The attack measured before the fix: that deadline stayed in
// the past while timer() returned early, and the loop ran it again at once, burning a
// core for the whole SYN timeout. Pass: over the 10 s SYN timeout the timer runs a
// handful of times (SYN-ACK retries), never leaves a deadline at or before now, and the
// handshake times out.
func TestSYNDataNoSpin(t *testing.T) {
	for _, wnd := range []uint16{5000, 0} {
		t.Run(fmt.Sprintf("window=%d", wnd), func(t *testing.T) {
			e := newEndpoint(testConfig(2, func(c *epConfig) { c.acceptSYNData = true }), apA, apB, 10, smT0)
			syn := fromPeer(FlagSYN, 20, 0, wnd, []byte("GET / knock knock"))
			syn.Options = fullOpts(1440, 7, 1)
			e.accept(smT0, &syn, 0)
			drainOut(e)
			e.sb.write([]byte{0x20}) // the exit's answer, written before the handshake ends
			now := smT0
			flush(e, now)
			runs := 0
			for {
				d := e.deadline()
				if d.IsZero() || e.done {
					break
				}
				if d.After(now) {
					now = d
				}
				if runs++; runs > 10000 {
					break
				}
				e.timer(now)
				flush(e, now)
				if d2 := e.deadline(); !e.done && !d2.IsZero() && !d2.After(now) {
					t.Fatalf("run %d (%v) at %v: deadline %v left at or before now", runs, e.state, now.Sub(smT0), d2.Sub(smT0))
				}
			}
			if runs > 50 {
				t.Fatalf("%d timer runs in %v of handshake timeout, want a handful", runs, now.Sub(smT0))
			}
			if !e.done || e.err != ErrTimeout || now.Sub(smT0) != e.cfg.synTimeout {
				t.Fatalf("after %v: done %v err %v, want the handshake timed out at %v", now.Sub(smT0), e.done, e.err, e.cfg.synTimeout)
			}
			t.Logf("%d timer runs over %v", runs, now.Sub(smT0))
		})
	}
}

// TestHandshakeThenDeferredTimers: data sent in SYN-RECEIVED whose timers were deferred
// is still retransmitted once the handshake completes (the deferral loses nothing).
func TestHandshakeThenDeferredTimers(t *testing.T) {
	e := newEndpoint(testConfig(1, func(c *epConfig) { c.acceptSYNData = true }), apA, apB, 10, smT0)
	syn := fromPeer(FlagSYN, 20, 0, 5000, []byte("request"))
	syn.Options = fullOpts(1440, 7, 1)
	e.accept(smT0, &syn, 0)
	drainOut(e)
	e.sb.write([]byte{0})
	out := flush(e, smT0)
	if len(dataSegs(out)) != 1 {
		t.Fatalf("no answer sent in SYN-RECEIVED: %v", segList(out))
	}
	// The handshake's ACK acknowledges the SYN-ACK only (the answer was lost), 5 s later.
	now := smT0.Add(5 * time.Second)
	ack := fromPeer(FlagACK, 21+uint32(len("request")), 11, 5000, nil)
	ack.Options.HasTimestamp, ack.Options.TSVal = true, 2
	in(e, now, ack, 0)
	if e.state != stateEstablished {
		t.Fatalf("state %v", e.state)
	}
	out = runUntil(t, e, now, now.Add(10*time.Second))
	for _, o := range dataSegs(out) {
		if o.seg.Seq == 11 {
			return
		}
	}
	t.Fatalf("the answer was never retransmitted: %v", segList(out))
}
