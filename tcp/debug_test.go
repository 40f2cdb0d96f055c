package tcp_test

import (
	"os"
	"testing"
	"time"

	"mpath/tcp/simnet"
)

// TestSimTrace prints per-path state over time (set MPATH_TRACE=1); a tool for tuning.
func TestSimTrace(t *testing.T) {
	if os.Getenv("MPATH_TRACE") == "" {
		t.Skip("set MPATH_TRACE=1 to trace")
	}
	sc := scenario{paths: []simnet.PathSpec{
		{Rate: 10 * mbit, Delay: 5 * time.Millisecond, Queue: 62500},
		{Rate: 10 * mbit, Delay: 10 * time.Millisecond, Queue: 62500},
		{Rate: 10 * mbit, Delay: 15 * time.Millisecond, Queue: 62500},
	}, size: 20 << 20, seed: 1, trace: 200 * time.Millisecond}
	r := runScenario(t, sc)
	logResult(t, "trace", sc, r)
}
