package tcp_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"mpath/tcp/simnet"
)

// TestSimManyFlows: many parallel downloads share the paths; together they must fill
// them (>= 90% of the sum) while re-sending at most 5% of their packets (the flows draw
// from one controller per path instead of overrunning each other), and every flow is
// checked byte for byte.
//
// Two queues: one bandwidth-delay product (at least 64 KiB: 100 flows holding one segment
// each on path 1 already overfill it), and the lab's (100 ms at the rate) with 5 ms of
// jitter (the lab's timers and scheduling).
func TestSimManyFlows(t *testing.T) {
	for _, c := range []struct {
		name    string
		queue   int
		jitter  time.Duration
		minRace float64 // race sizes (40 x 256 kB): measured 87.8% and 84.5-85.2%
	}{
		{"short queue", 0, 0, 0.85},
		{"lab queue and jitter", 500_000, 5 * time.Millisecond, 0.80},
	} {
		t.Run(c.name, func(t *testing.T) {
			specs := []simnet.PathSpec{
				{Rate: 40 * mbit, Delay: 5 * time.Millisecond, Queue: c.queue, Jitter: c.jitter},
				{Rate: 40 * mbit, Delay: 10 * time.Millisecond, Queue: c.queue, Jitter: c.jitter},
				{Rate: 40 * mbit, Delay: 15 * time.Millisecond, Queue: c.queue, Jitter: c.jitter},
			}
			floor := 0.90
			if raceEnabled {
				// 256 kB flows: startup and the last flow's tail weigh more.
				floor = c.minRace
			}
			manyFlows(t, specs, floor)
		})
	}
}

func manyFlows(t *testing.T, specs []simnet.PathSpec, floor float64) {
	flows, size := 100, 1<<20
	if raceEnabled {
		flows, size = 40, 256<<10
	}
	synctest.Test(t, func(t *testing.T) {
		_, a, b, ln := simPair(t, scenario{paths: specs, seed: 5})
		go func() {
			for i := 0; ; i++ {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func(c interface {
					Read([]byte) (int, error)
					Write([]byte) (int, error)
					Close() error
				}) {
					defer c.Close()
					var seed [1]byte
					if _, err := c.Read(seed[:]); err != nil {
						return
					}
					pattern(c, size, uint64(seed[0]))
				}(c)
			}
		}()
		start := time.Now()
		stopTrace := make(chan struct{})
		if testing.Verbose() {
			go func() {
				tk := time.NewTicker(500 * time.Millisecond)
				defer tk.Stop()
				for {
					select {
					case <-stopTrace:
						return
					case <-tk.C:
					}
					st := b.Stats()
					line := fmt.Sprintf("t=%v flows=%d", time.Since(start).Round(time.Millisecond), st.Flows)
					for _, p := range st.Paths {
						line += fmt.Sprintf(" | %s cwnd=%d infl=%d pace=%.1fM bw=%.1fM tx=%d lost=%d %s", p.Name, p.Cwnd, p.InFlight, p.PacingRate*8/mbit, p.DeliveryRate*8/mbit, p.TxPackets, p.Lost, p.Mode)
					}
					t.Log(line)
				}
			}()
		}
		var wg sync.WaitGroup
		errs := make(chan error, flows)
		done := make([]time.Duration, flows) // each flow's completion time
		for i := 0; i < flows; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				c, err := a.Dial(context.Background(), netip.AddrPortFrom(addrB, 80))
				if err != nil {
					errs <- err
					return
				}
				defer c.Close()
				if _, err := c.Write([]byte{byte(i)}); err != nil {
					errs <- err
					return
				}
				want, _ := pattern(discard{}, size, uint64(i))
				got, n, _, err := drain(c)
				if err != nil || n != int64(size) || got != want {
					errs <- fmt.Errorf("flow %d: %d bytes, err %v, sha256 match %v", i, n, err, got == want)
				}
				done[i] = time.Since(start)
			}(i)
		}
		wg.Wait()
		close(stopTrace)
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		el := time.Since(start)
		gp := float64(flows*size) * 8 / el.Seconds()
		share := gp / sumRates(specs)
		var tx, rtx, lost uint64
		for _, p := range b.Stats().Paths {
			t.Logf("  %s tx=%d rtx=%d lost=%d spurious=%d", p.Name, p.TxPackets, p.Retransmits, p.Lost, p.Spurious)
			tx += p.TxPackets
			rtx += p.Retransmits
			lost += p.Lost
		}
		resent := float64(rtx) / float64(tx)
		slices.Sort(done)
		t.Logf("flows finished after %v (first), %v (median), %v (last)", done[0].Round(time.Millisecond), done[flows/2].Round(time.Millisecond), done[flows-1].Round(time.Millisecond))
		t.Logf("%d flows x %d bytes in %v: %.1f Mbit/s = %.1f%% of %.0f Mbit/s; %d of %d packets re-sent (%.2f%%), %d declared lost",
			flows, size, el.Round(time.Millisecond), gp/mbit, 100*share, sumRates(specs)/mbit, rtx, tx, 100*resent, lost)
		// The flows share each path's controller: together they fill the paths without
		// flooding their queues (each flow running its own controller re-sent 36% of its
		// packets to reach 90%).
		if share < floor {
			t.Errorf("aggregate %.1f%% of the sum, want >= %.0f%%", 100*share, 100*floor)
		}
		// Fair shares: the flows finish together (each running its own controller, the
		// first of them finished in a third of the time of the last).
		if done[0] < done[flows-1]*7/10 {
			t.Errorf("first flow done after %v, the last after %v: want the first >= 70%% of the last", done[0], done[flows-1])
		}
		if resent > 0.05 {
			t.Errorf("%.2f%% of the packets re-sent, want <= 5%%", 100*resent)
		}
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
