package tcp_test

import (
	"testing"
	"time"

	"mpath/tcp/simnet"
)

func paths(rates []float64, delays []time.Duration) []simnet.PathSpec {
	var ps []simnet.PathSpec
	for i := range rates {
		ps = append(ps, simnet.PathSpec{Rate: rates[i], Delay: delays[i]})
	}
	return ps
}

func ms(v ...int) []time.Duration {
	var d []time.Duration
	for _, x := range v {
		d = append(d, time.Duration(x)*time.Millisecond)
	}
	return d
}

func TestSimExplore(t *testing.T) {
	cases := []struct {
		name string
		sc   scenario
		min  float64
	}{
		{"5x10M rtt20-60", scenario{paths: paths([]float64{10 * mbit, 10 * mbit, 10 * mbit, 10 * mbit, 10 * mbit}, ms(10, 15, 20, 25, 30)), size: 20 << 20}, 0.90},
		{"1M+4x10M", scenario{paths: paths([]float64{1 * mbit, 10 * mbit, 10 * mbit, 10 * mbit, 10 * mbit}, ms(10, 10, 10, 10, 10)), size: 20 << 20}, 0.90},
		{"10:1 rtt 20/200", scenario{paths: paths([]float64{10 * mbit, 1 * mbit}, ms(10, 100)), size: 10 << 20}, 0.85},
		{"3x10M 1% loss", scenario{paths: []simnet.PathSpec{{Rate: 10 * mbit, Delay: 10 * time.Millisecond, Loss: 0.01}, {Rate: 10 * mbit, Delay: 20 * time.Millisecond, Loss: 0.01}, {Rate: 10 * mbit, Delay: 30 * time.Millisecond, Loss: 0.01}}, size: 10 << 20}, 0.70},
		{"3x10M kill", scenario{paths: paths([]float64{10 * mbit, 10 * mbit, 10 * mbit}, ms(10, 20, 30)), size: 10 << 20, killPath: 1, killAt: time.Second}, 0.55},
		{"rr 1M+4x10M", scenario{sched: "rr", paths: paths([]float64{1 * mbit, 10 * mbit, 10 * mbit, 10 * mbit, 10 * mbit}, ms(10, 10, 10, 10, 10)), size: 4 << 20}, 0},
		{"weighted 1:10", scenario{sched: "weighted", weights: []int{1, 10, 10, 10, 10}, paths: paths([]float64{1 * mbit, 10 * mbit, 10 * mbit, 10 * mbit, 10 * mbit}, ms(10, 10, 10, 10, 10)), size: 20 << 20}, 0},
		{"download 5x10M", scenario{download: true, paths: paths([]float64{10 * mbit, 10 * mbit, 10 * mbit, 10 * mbit, 10 * mbit}, ms(10, 15, 20, 25, 30)), size: 20 << 20}, 0.90},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.sc.seed = 1
			r := runScenario(t, c.sc)
			logResult(t, c.name, c.sc, r)
			if got := r.ratio(sumRates(c.sc.paths)); got < c.min {
				t.Errorf("goodput %.1f%% of the sum, want >= %.0f%%", 100*got, 100*c.min)
			}
		})
	}
}
