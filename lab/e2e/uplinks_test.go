package e2e

// Real uplinks (lab/uplinks.sh): a client whose two access links each sit behind an ISP
// router doing NAT, one of which drops IP protocol 4, and an exit behind a core router
// with no --path and no client address in its configuration. The client's paths name no
// relay (straight to the exit) and use UDP encapsulation. Downloads and uploads are
// checked by sha256; ISP 1's public address changes in the middle of a download and the
// longest pause in the byte stream after that is measured.

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"mpath/lab"
	"mpath/lab/labtest"
	"mpath/socks/sockstest"
)

const (
	upExit   = "100.64.9.2"
	upUplink = 10e6 // bit/s of each uplink
)

func uplinksScript(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	p := filepath.Join(filepath.Dir(file), "..", "uplinks.sh")
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRealUplinks(t *testing.T) {
	labtest.RequireRoot(t)
	_, p := labtest.Reserve(t)
	prefix := "up" + strings.TrimPrefix(p, "lt")
	script := uplinksScript(t)
	t.Cleanup(func() { mustRun(t, "bash", script, "down", prefix) })
	mustRun(t, "bash", script, "up", prefix, "10mbit,10mbit", "2")
	cli, exitNS := prefix+"-cli", prefix+"-exit"
	sum := 2 * upUplink

	startGoHTTP(t, exitNS, upExit+":80", false)
	sink := newProgress()
	sinkServer(t, exitNS, upExit+":5001", sink)
	psk := writeSecret(t, t.TempDir(), "psk")
	exit := startProc(t, exitNS, "exit", mpathBin(t), "exit", "--listen", upExit+":7000", "--psk-file", psk,
		"--encap", "udp", "--metrics", "127.0.0.1:9091", drainFlag)
	exit.waitLog(t, "exit ready", readyTimeout)
	client := startProc(t, cli, "client", mpathBin(t), "client", "--exit", upExit+":7000", "--psk-file", psk,
		"--encap", "udp", "--path", "dev=wan1", "--path", "dev=wan2", "--socks", socksAddr, "--metrics", clientMetrics, drainFlag)
	client.waitLog(t, "client ready", readyTimeout)

	download := func(t *testing.T, cli, what string, n int64, seed uint64, p *progress) time.Duration {
		t.Helper()
		c, err := socksDial(cli, socksAddr, "", "", upExit+":80", 15*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
		start := time.Now()
		code, got, h, err := httpGet(c, upExit, payloadURL(n, seed), p)
		dur := time.Since(start)
		if err != nil || code != 200 || got != n || h != sockstest.PayloadSHA256(n, seed) {
			t.Fatalf("%s: status %d, %d bytes sha256 %s, err %v; want %d bytes %s", what, code, got, h, err, n, sockstest.PayloadSHA256(n, seed))
		}
		rate := float64(n) * 8 / dur.Seconds()
		t.Logf("FIGURE uplinks %s: %d B in %v: %s = %.0f%% of the 2 x 10 Mbit/s uplinks", what, n, dur.Round(time.Millisecond), fmtRate(n, dur), 100*rate/sum)
		return dur
	}

	t.Run("download", func(t *testing.T) {
		download(t, cli, "udp download, 2 NATed relay-less uplinks", 8<<20, 3, nil)
		// The client's two paths share the exit's address: each counts what came in by
		// its own uplink.
		m := labtest.ParseMetrics(labtest.Get(t, cli, clientMetrics, "/metrics"))
		rx0, rx1 := metric(m, "mpath_path_rx_bytes_total", `index="0"`), metric(m, "mpath_path_rx_bytes_total", `index="1"`)
		if rx0 < 0.25*(rx0+rx1) || rx1 < 0.25*(rx0+rx1) {
			t.Errorf("client paths received %.0f and %.0f bytes: two relay-less paths not told apart", rx0, rx1)
		}
		// mpath status at the exit: each client path's learned return endpoint.
		out, err := runIn(exitNS, mpathBin(t), "status", "--metrics", "127.0.0.1:9091")
		if err != nil || !strings.Contains(out, "learned return endpoints") ||
			!strings.Contains(out, "192.168.1.2  1 of 2  100.64.1.2:5555") || !strings.Contains(out, "192.168.1.2  2 of 2  100.64.2.2:5555") {
			t.Errorf("mpath status at the exit (%v):\n%s", err, out)
		}
	})
	t.Run("upload", func(t *testing.T) {
		n := int64(8 << 20)
		got, dur := uploadSOCKS(t, cli, "", "", upExit+":5001", n, 5)
		if want := fmt.Sprintf("%d %s", n, sockstest.PayloadSHA256(n, 5)); got != want {
			t.Fatalf("sink saw %q, want %q", got, want)
		}
		rate := float64(n) * 8 / dur.Seconds()
		t.Logf("FIGURE uplinks udp upload, 2 NATed relay-less uplinks: %d B in %v: %s = %.0f%% of the 2 x 10 Mbit/s uplinks",
			n, dur.Round(time.Millisecond), fmtRate(n, dur), 100*rate/sum)
	})
	t.Run("rebinding", func(t *testing.T) {
		p := newProgress()
		n := int64(16 << 20)
		done := make(chan struct{})
		go func() {
			defer close(done)
			download(t, cli, "udp download across a NAT rebinding", n, 7, p)
		}()
		deadline := time.Now().Add(30 * time.Second)
		for p.bytes() < n/4 && time.Now().Before(deadline) {
			select {
			case <-done:
				t.Fatal("download ended before the rebinding")
			case <-time.After(pollEvery):
			}
		}
		rebound := time.Now()
		mustRun(t, "bash", script, "rebind", prefix)
		<-done
		if t.Failed() {
			return
		}
		g := p.stall(rebound)
		if g.d == 0 {
			t.Logf("FIGURE uplinks rebinding: no pause longer than %v after ISP 1's address changed", minGap)
		} else {
			t.Logf("FIGURE uplinks rebinding: longest pause after ISP 1's address changed: %v (ending %v after it, at byte %d)",
				g.d.Round(time.Millisecond), g.end.Sub(rebound).Round(time.Millisecond), g.from)
		}
		if g.d > time.Second {
			t.Errorf("the download paused %v after the rebinding, want at most 1 s", g.d)
		}
		if !strings.Contains(exit.log(), `"msg":"client path moved"`) || !strings.Contains(exit.log(), `100.64.1.3:`) {
			t.Errorf("the exit did not log the path moving to ISP 1's new address:\n%s", lastLines(exit.log(), 20))
		}
	})

	t.Run("two-clients", func(t *testing.T) {
		cli2 := prefix + "-cli2"
		c2 := startProc(t, cli2, "client2", mpathBin(t), "client", "--exit", upExit+":7000", "--psk-file", psk,
			"--encap", "udp", "--path", "dev=wan1", "--path", "dev=wan2", "--socks", socksAddr, drainFlag)
		c2.waitLog(t, "client ready", readyTimeout)
		done := make(chan struct{})
		go func() {
			defer close(done)
			download(t, cli2, "client 2 of 2 at once (own 2 x 10 Mbit/s uplinks)", 8<<20, 11, nil)
		}()
		download(t, cli, "client 1 of 2 at once (own 2 x 10 Mbit/s uplinks)", 8<<20, 13, nil)
		<-done
		// The exit learned both clients' paths; its configuration names neither.
		m := labtest.Get(t, exitNS, "127.0.0.1:9091", "/metrics")
		for _, want := range []string{`client="192.168.1.2",endpoint="100.64.1.3:5555",path="0"`, `client="192.168.1.2",endpoint="100.64.2.2:5555",path="1"`,
			`client="192.168.3.2",endpoint="100.64.3.2:5555",path="0"`, `client="192.168.3.2",endpoint="100.64.4.2:5555",path="1"`} {
			if !strings.Contains(m, want) {
				t.Errorf("exit metrics lack the learned endpoint %s", want)
			}
		}
	})

	t.Run("relayed-and-direct", func(t *testing.T) {
		// Path 1 through a reencap relay in the core, path 2 straight to the exit. The
		// relay returns the exit's packets to the client's NAT (address and port).
		client.stop(syscall.SIGTERM, 10*time.Second)
		rly := startProc(t, prefix+"-rly", "relay", mpathBin(t), "relay", "--mode", "reencap", "--encap", "udp",
			"--allow", "100.64.0.0/16,192.168.0.0/16", "--metrics", "127.0.0.1:9100")
		rly.waitLog(t, "relay ready", readyTimeout)
		c := startProc(t, cli, "client-relayed", mpathBin(t), "client", "--exit", upExit+":7000", "--psk-file", psk,
			"--encap", "udp", "--path", "dev=wan1,relay=100.64.8.2", "--path", "dev=wan2", "--socks", socksAddr, drainFlag)
		c.waitLog(t, "client ready", readyTimeout)
		download(t, cli, "udp download, uplink 1 through a reencap relay, uplink 2 direct", 8<<20, 17, nil)
		m := labtest.ParseMetrics(labtest.Get(t, prefix+"-rly", "127.0.0.1:9100", "/metrics"))
		if fwd := metric(m, "mpath_relay_forwarded_packets_total", `mode="reencap"`); fwd < 1000 {
			t.Errorf("the relay forwarded %v packets in reencap mode, want thousands", fwd)
		}
	})

	// ISP 2 really drops IP protocol 4 (what makes --encap udp necessary there).
	out, err := runIn(prefix+"-isp2", "nft", "list", "table", "ip", "filter")
	// nft prints protocol 4 by its /etc/protocols name, "ipencap".
	if err != nil || !strings.Contains(out, "ip protocol ipencap") || !strings.Contains(out, "drop") {
		t.Errorf("isp2 filter: %v\n%s", err, out)
	}
}

// runIn runs a command in namespace ns and returns its combined output.
func runIn(ns string, name string, args ...string) (string, error) {
	out, err := lab.Command(ns, name, args...).CombinedOutput()
	return string(out), err
}
