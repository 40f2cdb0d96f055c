package e2e

// Direct mode end to end: the engine talks to unmodified kernel peers.
//
//	curl --SOCKS5--> mpath client --direct (P-c) --IPIP x3--> relays (forward: decapsulate)
//	    --> Apache / Go sink in P-x (kernel TCP) --plain, routed over path 1--> client
//
// Downloads come back over path 1 only (the server's kernel routes to the client through
// relay 1), so their rate is compared with path 1's; uploads are sprayed over all three.

import (
	"fmt"
	"testing"
	"time"

	"mpath/lab"
	"mpath/lab/labtest"
	"mpath/socks/sockstest"
)

func TestDirect(t *testing.T) {
	labtest.RequireRoot(t)
	needTool(t, "curl", "curl")
	for _, c := range []struct {
		name     string
		paths    []lab.PathSpec
		down, up int64
		// Least acceptable rate as a fraction of path 1 / of the sum of path rates: floors
		// against gross breakage only (the machine is shared; the figures are logged).
		downMin, upMin float64
	}{
		{"clean", []lab.PathSpec{{Rate: "10mbit"}, {Rate: "10mbit"}, {Rate: "10mbit"}}, 6 << 20, 8 << 20, 0.25, 0.15},
		{"loss1pct-delay", []lab.PathSpec{
			{Rate: "10mbit", Delay: 5 * time.Millisecond, Loss: 0.01},
			{Rate: "10mbit", Delay: 10 * time.Millisecond, Loss: 0.01},
			{Rate: "10mbit", Delay: 15 * time.Millisecond, Loss: 0.01},
		}, 3 << 20, 4 << 20, 0.05, 0.05},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := newLab(t, lab.Config{Paths: c.paths, Seed: 100})
			cns, xns := l.ClientNS(), l.ExitNS()
			xa := l.ExitAddr().String()
			const hostName = "apache.e2e.test"
			nsHosts(t, cns, xa+" "+hostName) // direct mode resolves names in the client
			ap := startApache(t, xns, xa+":80", []string{"down.bin"}, []int64{c.down})
			sinkServer(t, xns, xa+":5001", nil)
			client := startClient(t, l, clientOpts{direct: true})
			p1, sum := pathRate(t, l, 1), sumRates(t, l)

			t.Run("curl-socks5h-apache", func(t *testing.T) {
				capt := startCapture(t, cns)
				r := runHashed(cns, nil, nil, 2*time.Minute, "curl", "-sS", "--fail", "--socks5-hostname", socksAddr,
					"http://"+hostName+"/down.bin", "-o", "-")
				if r.err != nil {
					t.Fatalf("curl: %v\n%s", r.err, r.stderr)
				}
				want := ap.files["down.bin"]
				if r.n != want.size || r.sum != want.sum {
					t.Fatalf("curl got %d bytes sha256 %s, want %d %s", r.n, r.sum, want.size, want.sum)
				}
				rate := float64(r.n) * 8 / r.dur.Seconds()
				t.Logf("FIGURE direct/%s download %d B in %v: %s = %.0f%% of path 1's rate (the only return path), %.0f%% of the sum",
					c.name, r.n, r.dur.Round(time.Millisecond), fmtRate(r.n, r.dur), 100*rate/p1, 100*rate/sum)
				if rate < c.downMin*p1 {
					t.Errorf("download at %.0f%% of path 1's rate, want at least %.0f%%", 100*rate/p1, 100*c.downMin)
				}
				port := controlRST(t, cns, xa+":80")
				capt.waitControl(t, port)
				drops := capt.stop(t)
				w, err := countWire(capt.file, port)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("client wire: %d IPIP out, %d plain TCP out, %d plain TCP in, kernel RSTs %d, engine RSTs %d (+%d answers to path probes), ICMP out %d, capture drops %d",
					w.ipipOut, w.plainOut, w.plainIn, len(w.kernelRST), len(w.engineRST), w.probeRST, len(w.icmpOut), drops)
				if w.plainIn < int(c.down/3000) { // at most 1440 B per segment: at least down/1440 arrive
					t.Errorf("capture saw only %d plain TCP packets arriving for a %d B download", w.plainIn, c.down)
				}
				if len(w.kernelRST) > 0 || len(w.engineRST) > 0 || len(w.icmpOut) > 0 {
					t.Errorf("resets/ICMP from the client during a clean transfer: kernel RSTs %v; engine RSTs %v; ICMP %v",
						first(w.kernelRST, 5), first(w.engineRST, 5), first(w.icmpOut, 5))
				}
				if drops > 0 {
					t.Errorf("tcpdump lost %d packets: the RST count is not complete", drops)
				}
			})

			t.Run("upload-sprayed-kernel-sink", func(t *testing.T) {
				before := client.scrape(t)
				got, dur := uploadSOCKS(t, cns, "", "", xa+":5001", c.up, 31)
				if want := fmt.Sprintf("%d %s", c.up, sockstest.PayloadSHA256(c.up, 31)); got != want {
					t.Fatalf("kernel sink saw %q, want %q", got, want)
				}
				after := client.scrape(t)
				rate := float64(c.up) * 8 / dur.Seconds()
				var tx [3]float64
				var total float64
				for i := range tx {
					tx[i] = pathMetric(after, "mpath_path_tx_bytes_total", i) - pathMetric(before, "mpath_path_tx_bytes_total", i)
					total += tx[i]
				}
				t.Logf("FIGURE direct/%s upload %d B in %v: %s = %.0f%% of the sum of path rates; per-path tx share %.2f %.2f %.2f",
					c.name, c.up, dur.Round(time.Millisecond), fmtRate(c.up, dur), 100*rate/sum, tx[0]/total, tx[1]/total, tx[2]/total)
				for i, v := range tx {
					if v < 0.1*total {
						t.Errorf("path %d carried %.0f of %.0f sent bytes: the upload was not sprayed over all paths", i+1, v, total)
					}
				}
				if rate < c.upMin*sum {
					t.Errorf("upload at %.0f%% of the sum of path rates, want at least %.0f%%", 100*rate/sum, 100*c.upMin)
				}
				logPathCounters(t, "client", l.N(), before, after)
			})

			// SIGTERM: exit 0 and no nftables table left in the client namespace.
			stopNode(t, client)
		})
	}
}
