package tcp_test

// nettest.TestConn (golang.org/x/net/nettest) against engine connections: two stacks
// over a simulated network with two zero-delay, unlimited, lossless paths, in real
// time (nettest's deadlines and timeouts are wall-clock; a synctest bubble would also
// have to hold nettest's own goroutines, which it does not create inside one).

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/nettest"

	"mpath/tcp"
	"mpath/tcp/simnet"
)

var (
	ntAddrA = netip.MustParseAddr("10.77.0.1")
	ntAddrB = netip.MustParseAddr("10.77.0.2")
)

// enginePipe returns a nettest.MakePipe: c1 dialled from stack A, c2 accepted on B.
func enginePipe(t *testing.T) nettest.MakePipe {
	return func() (c1, c2 net.Conn, stop func(), err error) {
		n := simnet.New(1, []simnet.PathSpec{{}, {}})
		cfg := func(addr netip.Addr) tcp.Config {
			// Buffers of 256 KiB rather than 16 MiB: FutureTimeout and PresentTimeout
			// write until the deadline and then echo all of it back, which at 16 MiB
			// each way takes seconds under -race without testing anything more.
			return tcp.Config{Addr: addr, Loops: 1, Paths: []tcp.PathConfig{{Name: "p0"}, {Name: "p1"}},
				RecvWindow: 256 << 10, SendBuffer: 256 << 10}
		}
		a, err := tcp.NewStack(cfg(ntAddrA), n.Host(0))
		if err != nil {
			n.Close()
			return nil, nil, nil, err
		}
		n.Host(0).Attach(a)
		b, err := tcp.NewStack(cfg(ntAddrB), n.Host(1))
		if err != nil {
			a.Close()
			n.Close()
			return nil, nil, nil, err
		}
		n.Host(1).Attach(b)
		stopAll := func() {
			a.Close()
			b.Close()
			n.Close()
		}
		ln, err := b.Listen(80)
		if err != nil {
			stopAll()
			return nil, nil, nil, err
		}
		type accepted struct {
			c   net.Conn
			err error
		}
		acc := make(chan accepted, 1)
		go func() {
			c, err := ln.Accept()
			acc <- accepted{c, err}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		dc, err := a.Dial(ctx, netip.AddrPortFrom(ntAddrB, 80))
		if err != nil {
			ln.Close()
			stopAll()
			return nil, nil, nil, fmt.Errorf("dial: %w", err)
		}
		r := <-acc
		if r.err != nil {
			dc.Close()
			ln.Close()
			stopAll()
			return nil, nil, nil, fmt.Errorf("accept: %w", r.err)
		}
		stop = func() {
			dc.Close()
			r.c.Close()
			ln.Close()
			stopAll()
		}
		return dc, r.c, stop, nil
	}
}

// TestNetConn runs nettest.TestConn unchanged. No fix-ups: the engine's Conn is
// meant to be a plain net.Conn. (WriteTimeout and PastTimeout fail at the time of
// writing: Read and Write make progress when they can even after the deadline passed,
// where net.Conn says they must fail with a timeout.)
func TestNetConn(t *testing.T) {
	nettest.TestConn(t, enginePipe(t))
}

// TestNetConnNoLeak: after a pipe is used and stopped (conns, listener, stacks and
// network closed), no goroutine of the engine or the simulated network is left.
func TestNetConnNoLeak(t *testing.T) {
	c1, c2, stop, err := enginePipe(t)()
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("ping over the engine")
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, len(msg))
		_, err := io.ReadFull(c2, buf)
		if err == nil && string(buf) != string(msg) {
			err = fmt.Errorf("read %q", buf)
		}
		done <- err
	}()
	if _, err := c1.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	stop()
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := engineGoroutines()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d engine goroutines left 5s after stop:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(10 * time.Millisecond) // polling an observable condition, not synchronisation
	}
}

// engineGoroutines returns the stacks of live goroutines running engine or simnet
// code (other tests' goroutines do not count).
func engineGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "mpath/tcp.(*loop).run") || strings.Contains(g, "mpath/tcp.(*Stack).prober") ||
			strings.Contains(g, "mpath/tcp/simnet.(*direction).run") {
			out = append(out, g)
		}
	}
	return out
}
