package tcp_test

import (
	"fmt"
	"os"
	"testing"
	"time"

	"mpath/tcp/simnet"
)

// rttQueue returns a bottleneck queue of d at rate (bits/s), in bytes.
func rttQueue(rate float64, d time.Duration) int {
	return max(int(rate/8*d.Seconds()), 3000)
}

func TestRTTTrace(t *testing.T) {
	if os.Getenv("MPATH_RTT_TRACE") == "" {
		t.Skip("set MPATH_RTT_TRACE")
	}
	var rtt2, q int
	var loss float64
	fmt.Sscanf(os.Getenv("MPATH_RTT_TRACE"), "%d,%d,%g", &rtt2, &q, &loss)
	ten := 10 * mbit
	p1 := simnet.PathSpec{Rate: ten, Delay: 5 * time.Millisecond, Queue: rttQueue(ten, time.Duration(q)*time.Millisecond)}
	p2 := simnet.PathSpec{Rate: ten, Delay: time.Duration(rtt2/2) * time.Millisecond, Queue: rttQueue(ten, time.Duration(q)*time.Millisecond), Loss: loss}
	sc := scenario{paths: []simnet.PathSpec{p1, p2}, size: 20 * mib, seed: 1, download: true, trace: 500 * time.Millisecond}
	r := runScenario(t, sc)
	logResult(t, "trace", sc, r)
}
