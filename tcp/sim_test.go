package tcp_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"mpath/tcp"
	"mpath/tcp/simnet"
)

var (
	addrA = netip.MustParseAddr("10.0.0.1")
	addrB = netip.MustParseAddr("10.0.0.2")
)

const mbit = 1e6

// scenario is one transfer over a simulated network.
type scenario struct {
	paths    []simnet.PathSpec
	size     int    // bytes to move
	sched    string // scheduler on both ends
	download bool   // server (B) sends to client (A) instead of A to B
	seed     uint64
	// optional: kill a path at a virtual time into the transfer, revive it later (0 = never)
	killPath         int
	killAt, reviveAt time.Duration
	weights          []int
	recvWindow       int
	trace            time.Duration // log the sender's path state this often
}

type result struct {
	elapsed time.Duration
	goodput float64 // bits per second
	sent    [32]byte
	got     [32]byte
	statsA  tcp.Stats
	statsB  tcp.Stats
	stalled time.Duration // longest gap between two reads at the receiver
}

func (r result) ratio(sum float64) float64 { return r.goodput / sum }

func sumRates(paths []simnet.PathSpec) float64 {
	var s float64
	for _, p := range paths {
		s += p.Rate
	}
	return s
}

// pattern writes size pseudo-random bytes (seeded) to w and returns their sha256.
func pattern(w io.Writer, size int, seed uint64) ([32]byte, error) {
	h := sha256.New()
	r := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 7}))
	buf := make([]byte, 64<<10)
	for left := size; left > 0; {
		n := min(left, len(buf))
		for i := 0; i < n; i += 8 {
			v := r.Uint64()
			for k := 0; k < 8 && i+k < n; k++ {
				buf[i+k] = byte(v >> (8 * k))
			}
		}
		h.Write(buf[:n])
		if _, err := w.Write(buf[:n]); err != nil {
			return [32]byte{}, err
		}
		left -= n
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// drain reads r to EOF, hashing, and reports the longest gap between reads.
func drain(r io.Reader) (sum [32]byte, n int64, gap time.Duration, err error) {
	h := sha256.New()
	buf := make([]byte, 64<<10)
	last := time.Now()
	for {
		k, rerr := r.Read(buf)
		if k > 0 {
			now := time.Now()
			gap = max(gap, now.Sub(last))
			last = now
			h.Write(buf[:k])
			n += int64(k)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return sum, n, gap, rerr
		}
	}
	copy(sum[:], h.Sum(nil))
	return sum, n, gap, nil
}

func stackConfig(addr netip.Addr, sc scenario) tcp.Config {
	cfg := tcp.Config{Addr: addr, Scheduler: sc.sched, RecvWindow: sc.recvWindow, Loops: 2, AcceptSYNData: true}
	for i := range sc.paths {
		w := 1
		if i < len(sc.weights) {
			w = sc.weights[i]
		}
		cfg.Paths = append(cfg.Paths, tcp.PathConfig{Name: fmt.Sprintf("p%d", i), Weight: w})
	}
	return cfg
}

// simPair is two stacks joined by a simulated network, b listening on port 80. Call it
// inside a synctest bubble; t.Cleanup closes everything.
func simPair(t *testing.T, sc scenario) (n *simnet.Network, a, b *tcp.Stack, ln *tcp.Listener) {
	t.Helper()
	n = simnet.New(sc.seed, sc.paths)
	t.Cleanup(n.Close)
	var err error
	if a, err = tcp.NewStack(stackConfig(addrA, sc), n.Host(0)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	n.Host(0).Attach(a)
	if b, err = tcp.NewStack(stackConfig(addrB, sc), n.Host(1)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	n.Host(1).Attach(b)
	if ln, err = b.Listen(80); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return n, a, b, ln
}

// runScenario moves sc.size bytes over a simulated network in a synctest bubble and
// reports what happened. Every transfer is checked byte for byte by the caller.
func runScenario(t *testing.T, sc scenario) (res result) {
	t.Helper()
	synctest.Test(t, func(t *testing.T) {
		n, a, b, ln := simPair(t, sc)

		if sc.killAt > 0 {
			time.AfterFunc(sc.killAt, func() { n.SetDown(sc.killPath, true) })
			if sc.reviveAt > 0 {
				time.AfterFunc(sc.reviveAt, func() { n.SetDown(sc.killPath, false) })
			}
		}

		type sideResult struct {
			sum [32]byte
			n   int64
			gap time.Duration
			err error
		}
		srv := make(chan sideResult, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				srv <- sideResult{err: err}
				return
			}
			defer c.Close()
			var r sideResult
			if sc.download {
				r.sum, r.err = pattern(c, sc.size, sc.seed)
				if r.err == nil {
					r.err = c.(*tcp.Conn).CloseWrite()
				}
				if r.err == nil {
					_, _, _, r.err = drain(c)
				}
			} else {
				r.sum, r.n, r.gap, r.err = drain(c)
			}
			srv <- r
		}()

		if sc.trace > 0 {
			snd := a
			if sc.download {
				snd = b
			}
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				tk := time.NewTicker(sc.trace)
				defer tk.Stop()
				t0 := time.Now()
				for {
					select {
					case <-stop:
						return
					case <-tk.C:
					}
					for _, p := range snd.Stats().Paths {
						t.Logf("t=%-6v %s tx=%d dlv=%d %-8s bw=%5.2fM pace=%5.2fM cwnd=%6d infl=%6d srtt=%v min=%v lost=%d", time.Since(t0).Round(time.Millisecond), p.Name, p.TxPackets, p.Delivered, p.Mode,
							p.DeliveryRate*8/mbit, p.PacingRate*8/mbit, p.Cwnd, p.InFlight, p.SRTT.Round(time.Millisecond), p.MinRTT.Round(time.Millisecond), p.Lost)
					}
				}
			}()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		start := time.Now()
		c, err := a.Dial(ctx, netip.AddrPortFrom(addrB, 80))
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		var cli sideResult
		if sc.download {
			cli.sum, cli.n, cli.gap, cli.err = drain(c)
			if cli.err == nil {
				cli.err = c.CloseWrite()
			}
		} else {
			cli.sum, cli.err = pattern(c, sc.size, sc.seed)
			if cli.err == nil {
				cli.err = c.CloseWrite()
			}
		}
		if cli.err != nil {
			t.Fatalf("client: %v", cli.err)
		}
		s := <-srv
		if s.err != nil && !errors.Is(s.err, io.EOF) {
			t.Fatalf("server: %v", s.err)
		}
		res.elapsed = time.Since(start)
		if sc.download {
			res.sent, res.got, res.stalled = s.sum, cli.sum, cli.gap
			if cli.n != int64(sc.size) {
				t.Errorf("received %d bytes, want %d", cli.n, sc.size)
			}
		} else {
			res.sent, res.got, res.stalled = cli.sum, s.sum, s.gap
			if s.n != int64(sc.size) {
				t.Errorf("received %d bytes, want %d", s.n, sc.size)
			}
		}
		res.goodput = float64(sc.size) * 8 / res.elapsed.Seconds()
		res.statsA, res.statsB = a.Stats(), b.Stats()
	})
	if res.sent != res.got {
		t.Fatalf("sha256 mismatch: sent %x, received %x", res.sent[:8], res.got[:8])
	}
	return res
}

func logResult(t *testing.T, name string, sc scenario, r result) {
	t.Helper()
	sum := sumRates(sc.paths)
	t.Logf("%s: %d bytes in %v: %.2f Mbit/s = %.1f%% of %.1f Mbit/s; longest stall %v",
		name, sc.size, r.elapsed.Round(time.Millisecond), r.goodput/mbit, 100*r.ratio(sum), sum/mbit, r.stalled.Round(time.Millisecond))
	st := r.statsA
	if sc.download {
		st = r.statsB
	}
	for _, p := range st.Paths {
		t.Logf("  %s up=%v tx=%d pkts %d bytes rtx=%d lost=%d spurious=%d srtt=%v",
			p.Name, p.Up, p.TxPackets, p.TxBytes, p.Retransmits, p.Lost, p.Spurious, p.SRTT.Round(time.Millisecond/10))
	}
}

func TestSimSinglePath(t *testing.T) {
	sc := scenario{
		paths: []simnet.PathSpec{{Rate: 10 * mbit, Delay: 10 * time.Millisecond}},
		size:  2 << 20,
		seed:  1,
	}
	r := runScenario(t, sc)
	logResult(t, "single path", sc, r)
	if got := r.ratio(sumRates(sc.paths)); got < 0.85 {
		t.Errorf("goodput %.1f%% of the path rate, want >= 85%%", 100*got)
	}
}
