package e2e

// 100 downloads at once through the SOCKS front (tunnel mode), with net/http over
// golang.org/x/net/proxy's SOCKS5 dialer, each checked by sha256.

import (
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"mpath/lab"
	"mpath/socks/sockstest"
)

// nsDialer dials from inside a namespace (the socket stays there).
type nsDialer struct{ ns string }

func (d nsDialer) Dial(network, addr string) (net.Conn, error) {
	var c net.Conn
	err := lab.Do(d.ns, func() (err error) {
		c, err = net.DialTimeout(network, addr, 10*time.Second)
		return err
	})
	return c, err
}

func TestParallelDownloads(t *testing.T) {
	const conns, files = 100, 10
	size := int64(1 << 20)
	if raceOn {
		size = 512 << 10 // hashing and net/http in this binary run under the race detector
	}
	l := newLab(t, lab.Config{Paths: []lab.PathSpec{
		{Rate: "40mbit", Delay: 5 * time.Millisecond},
		{Rate: "40mbit", Delay: 10 * time.Millisecond},
		{Rate: "40mbit", Delay: 15 * time.Millisecond},
	}})
	xa := l.ExitAddr().String()
	names := make([]string, files)
	sizes := make([]int64, files)
	for i := range names {
		names[i], sizes[i] = fmt.Sprintf("f%d.bin", i), size
	}
	ap := startApache(t, l.ExitNS(), xa+":80", names, sizes)
	psk := writeSecret(t, t.TempDir(), "psk")
	exit := startExit(t, l, psk)
	client := startClient(t, l, clientOpts{psk: psk})

	sd, err := proxy.SOCKS5("tcp", socksAddr, nil, nsDialer{l.ClientNS()})
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{
		Transport: &http.Transport{Dial: sd.Dial, DisableKeepAlives: true, MaxIdleConnsPerHost: -1},
		Timeout:   90 * time.Second, // medians are 5-20 s on the shared machine; a hung flow fails here
	}
	defer hc.CloseIdleConnections()

	type result struct {
		i   int
		dur time.Duration
		err error
	}
	results := make([]result, conns)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			name := names[i%files]
			err := func() error {
				resp, err := hc.Get("http://" + xa + "/" + name)
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					return fmt.Errorf("status %s", resp.Status)
				}
				n, sum, err := sockstest.HashReader(resp.Body)
				if err != nil {
					return fmt.Errorf("body after %d B: %w", n, err)
				}
				if want := ap.files[name]; n != want.size || sum != want.sum {
					return fmt.Errorf("got %d B sha256 %s, want %d %s", n, sum, want.size, want.sum)
				}
				return nil
			}()
			results[i] = result{i: i, dur: time.Since(t0), err: err}
		}()
	}
	wg.Wait()
	total := time.Since(start)
	var failed int
	var durs []time.Duration
	for _, r := range results {
		if r.err != nil {
			failed++
			if failed <= 5 {
				t.Errorf("download %d: %v", r.i, r.err)
			}
		}
		durs = append(durs, r.dur)
	}
	sort.Slice(durs, func(a, b int) bool { return durs[a] < durs[b] })
	bytes := int64(conns) * size
	rate := float64(bytes) * 8 / total.Seconds()
	t.Logf("FIGURE parallel: %d x %d B in %v: %s = %.0f%% of the 120 Mbit/s sum of path rates; per download min %v median %v max %v; %d failed",
		conns, size, total.Round(time.Millisecond), fmtRate(bytes, total), 100*rate/sumRates(t, l),
		durs[0].Round(time.Millisecond), durs[len(durs)/2].Round(time.Millisecond), durs[len(durs)-1].Round(time.Millisecond), failed)
	if failed > 0 {
		t.Fatalf("%d of %d parallel downloads failed", failed, conns)
	}
	t.Logf("FIGURE parallel: paths marked down during the run: client %d times, exit %d times",
		strings.Count(client.log(), `"msg":"path down"`), strings.Count(exit.log(), `"msg":"path down"`))
	m := client.scrape(t)
	if got := metric(m, "mpath_front_connections_total", `front="socks"`, `event="relayed"`); got < conns {
		t.Errorf("client front counted %v relayed connections, want at least %d", got, conns)
	}
	if got := metric(exit.scrape(t), "mpath_exit_connections_total", `event="relayed"`); got < conns {
		t.Errorf("exit counted %v relayed flows, want at least %d", got, conns)
	}
}
