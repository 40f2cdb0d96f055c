package relay_test

import (
	"bytes"
	"crypto/sha256"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"mpath/lab/labtest"
	"mpath/raw"
	"mpath/raw/rawtest"
	"mpath/tcp"
)

// TestRelayStandalone runs `mpath relay` (no --plain) in namespaces that the lab did not
// build: a -- r -- b with the kernel forwarding (ip_forward=1) in r, as on a stock
// host. IPIP from a through r arrives at b in both modes; plain traffic from a to b is
// forwarded by the kernel once, not a second time by the relay.
func TestRelayStandalone(t *testing.T) {
	rawtest.SkipUnlessRoot(t)
	bin := labtest.Mpath(t)
	for _, mode := range []string{"forward", "reencap"} {
		t.Run(mode, func(t *testing.T) {
			a, r, b := rawtest.NewNetns(t, "mra"), rawtest.NewNetns(t, "mrr"), rawtest.NewNetns(t, "mrb")
			rawtest.Veth(t, a, "ar", "10.199.1.1/24", r, "ra", "10.199.1.2/24")
			rawtest.Veth(t, r, "rx", "10.199.2.2/24", b, "bx", "10.199.2.1/24")
			a.MustRun(t, "ip", "route", "add", "10.199.2.0/24", "via", "10.199.1.2")
			b.MustRun(t, "ip", "route", "add", "10.199.1.0/24", "via", "10.199.2.2")
			r.MustRun(t, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")

			logPath := filepath.Join(t.TempDir(), "relay.log")
			logf, err := os.Create(logPath)
			if err != nil {
				t.Fatal(err)
			}
			defer logf.Close()
			cmd := r.Command(bin, "relay", "--allow", "10.199.0.0/16", "--mode", mode, "--metrics", "127.0.0.1:9100")
			cmd.Stdout, cmd.Stderr = logf, logf
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			t.Cleanup(func() {
				_ = cmd.Process.Signal(syscall.SIGTERM)
				select {
				case err := <-exited:
					if err != nil {
						t.Errorf("relay exit: %v", err)
					}
				case <-time.After(5 * time.Second):
					_ = cmd.Process.Kill()
					t.Error("relay did not stop on SIGTERM")
				}
				// The exit log line carries the counters.
				if b, _ := os.ReadFile(logPath); !bytes.Contains(b, []byte(`"msg":"relay stopped"`)) ||
					!bytes.Contains(b, []byte(`"forwarded_`+mode+`_packets":100`)) {
					t.Errorf("no exit line with the counters in the relay log:\n%s", b)
				}
				// SIGTERM removes the guard table.
				if out, _ := exec.Command("ip", "netns", "exec", r.Name, "nft", "list", "tables").CombinedOutput(); bytes.Contains(out, []byte("mpath_relay")) {
					t.Errorf("guard table left after exit: %s", out)
				}
			})
			waitFor(t, "relay ready", 10*time.Second, func() bool {
				select {
				case err := <-exited:
					b, _ := os.ReadFile(logPath)
					t.Fatalf("relay exited: %v\n%s", err, b)
				default:
				}
				b, _ := os.ReadFile(logPath)
				return bytes.Contains(b, []byte("relay ready"))
			})

			var sink *raw.Receiver
			if err := b.Do(func() (err error) {
				sink, err = raw.NewReceiver(raw.ReceiverConfig{RingBytes: 32 << 20})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			got := &capture{src: sink}
			done := make(chan struct{})
			go func() {
				defer close(done)
				dec := raw.NewDecoder()
				for sink.ReadBatch(func(pkt []byte, _ int) {
					rec := record{at: time.Now(), pkt: bytes.Clone(pkt)}
					if info, err := dec.Decode(rec.pkt, &rec.seg); err == nil {
						rec.ok, rec.info = true, info
					}
					got.mu.Lock()
					got.recs = append(got.recs, rec)
					got.mu.Unlock()
				}) == nil {
				}
			}()
			t.Cleanup(func() { sink.Close(); <-done })
			var snd *raw.Sender
			if err := a.Do(func() (err error) {
				snd, err = raw.NewSender()
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer snd.Close()

			aAddr, rAddr, rOut, bAddr := netip.MustParseAddr("10.199.1.1"), netip.MustParseAddr("10.199.1.2"), netip.MustParseAddr("10.199.2.2"), netip.MustParseAddr("10.199.2.1")
			enc := raw.NewEncoder()
			const n = 100
			want := sha256.New()
			for k := 0; k < n; k++ {
				payload := bytes.Repeat([]byte{byte(k)}, 10+k*7)
				want.Write(payload)
				seg := tcp.Segment{Src: netip.AddrPortFrom(aAddr, 46000), Dst: netip.AddrPortFrom(bAddr, 5555), Seq: uint32(k), Flags: tcp.FlagRST, Payload: payload}
				pkt, err := enc.IPIP(aAddr, rAddr, &seg)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := snd.Send([][]byte{pkt}); err != nil {
					t.Fatal(err)
				}
				// And the same segment plain: the kernel forwards it.
				seg.Src = netip.AddrPortFrom(aAddr, 46001)
				if pkt, err = enc.TCP(&seg); err != nil {
					t.Fatal(err)
				}
				if _, err := snd.Send([][]byte{pkt}); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, "IPIP and plain packets at b", 10*time.Second, func() bool {
				return len(got.matching(46000, 5555)) >= n && len(got.matching(46001, 5555)) >= n
			})
			h := sha256.New()
			for k, rec := range got.matching(46000, 5555) {
				h.Write(rec.seg.Payload)
				if rec.seg.Seq != uint32(k) || rec.info.InnerTTL != 63 {
					t.Fatalf("IPIP packet %d: seq %d inner TTL %d", k, rec.seg.Seq, rec.info.InnerTTL)
				}
				if mode == "reencap" && (!rec.info.IPIP || rec.info.OuterSrc != rOut) {
					t.Fatalf("reencap: outer %v -> %v, want from %v", rec.info.OuterSrc, rec.info.OuterDst, rOut)
				}
				if mode == "forward" && rec.info.IPIP {
					t.Fatal("forward mode delivered IPIP")
				}
			}
			if !bytes.Equal(h.Sum(nil), want.Sum(nil)) {
				t.Fatal("IPIP payloads differ (sha256)")
			}
			// Scrape the relay: the plain packets are none of its business.
			m := labtest.ParseMetrics(scrape(t, r))
			if m[`mpath_relay_forwarded_packets_total{mode="`+mode+`"}`] != n || m[`mpath_relay_forwarded_packets_total{mode="plain"}`] != 0 {
				t.Fatalf("relay counters: %v", nonZero(m))
			}
			if plain := len(got.matching(46001, 5555)); plain != n {
				t.Fatalf("%d plain packets at b, want %d (the kernel's, once)", plain, n)
			}
		})
	}
}

// scrape reads the relay's metrics inside its namespace with curl.
func scrape(t *testing.T, n *rawtest.Netns) string {
	t.Helper()
	out, err := n.Run("curl", "-sf", "http://127.0.0.1:9100/metrics")
	if err != nil {
		t.Fatalf("scrape: %v: %s", err, out)
	}
	if !strings.Contains(out, "mpath_relay_forwarded_packets_total") {
		t.Fatalf("scrape: no relay metrics in %q", out)
	}
	return out
}
