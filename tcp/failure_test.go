package tcp_test

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"mpath/tcp/simnet"
)

// TestAllPathsDeadEndsBothSides: every path dies in the middle of a download. The
// sender has data outstanding and gives up at its user timeout; the receiver has
// nothing outstanding and must give up too (after every path has been down, and the
// peer silent, for the user timeout), not wait forever. New dials fail at once.
func TestAllPathsDeadEndsBothSides(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		specs := []simnet.PathSpec{{Rate: 10 * mbit, Delay: 10 * time.Millisecond}, {Rate: 10 * mbit, Delay: 20 * time.Millisecond}}
		n, a, _, ln := simPair(t, scenario{paths: specs, seed: 3})
		srvErr := make(chan error, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				srvErr <- err
				return
			}
			defer c.Close()
			_, err = pattern(c, 64<<20, 1) // far more than fits before the paths die
			srvErr <- err
		}()
		c, err := a.Dial(context.Background(), netip.AddrPortFrom(addrB, 80))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		time.AfterFunc(2*time.Second, func() {
			n.SetDown(0, true)
			n.SetDown(1, true)
		})
		start := time.Now()
		_, _, _, rerr := drain(c)
		recvEnd := time.Since(start)
		if rerr == nil || errors.Is(rerr, io.EOF) {
			t.Fatalf("receiver: read ended without an error after every path died")
		}
		serr := <-srvErr
		sendEnd := time.Since(start)
		if serr == nil {
			t.Fatalf("sender: write ended without an error after every path died")
		}
		t.Logf("receiver failed %v after the paths died (%v), sender %v (%v)", recvEnd-2*time.Second, rerr, sendEnd-2*time.Second, serr)
		const bound = 2*time.Second + 30*time.Second + 5*time.Second // kill + user timeout + detection
		if recvEnd > bound || sendEnd > bound {
			t.Errorf("sides ended %v and %v into the test, want both within %v", recvEnd, sendEnd, bound)
		}
		dialStart := time.Now()
		if _, err := a.Dial(context.Background(), netip.AddrPortFrom(addrB, 80)); err == nil {
			t.Fatalf("dial with every path dead succeeded")
		} else if d := time.Since(dialStart); d > time.Second {
			t.Errorf("dial with every path dead took %v to fail (%v), want at once", d, err)
		}
	})
}
