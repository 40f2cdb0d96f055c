package relay_test

import (
	"bytes"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"mpath/lab"
	"mpath/lab/labtest"
	"mpath/raw"
	"mpath/tcp"
)

// BenchmarkRelayForwarding blasts small packets from the client namespace through relay
// 1 of a lab to a counting raw.Receiver in the exit namespace:
//
//	mpath-relay     IPIP through `mpath relay` (forward mode, no impairment)
//	kernel-forward  the same packets plain, the relay stopped and ip_forward=1 in its
//	                namespace (the kernel's own forwarding as the baseline)
//
// It reports rx-pps (packets per second arriving at the sink, first to last) and loss-%
// (packets sent but never seen). The packets are TCP RSTs (120 bytes with IPIP), which
// no host answers. Run as root:
//
//	go test -run XXX -bench RelayForwarding -benchtime 200000x ./relay/
func BenchmarkRelayForwarding(b *testing.B) {
	labtest.RequireRoot(b)
	l := labtest.New(b, lab.Config{Paths: []lab.PathSpec{{}}})
	var sink *raw.Receiver
	var snd *raw.Sender
	if err := lab.Do(l.ExitNS(), func() (err error) {
		sink, err = raw.NewReceiver(raw.ReceiverConfig{RingBytes: 64 << 20})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	if err := lab.Do(l.ClientNS(), func() (err error) {
		snd, err = raw.NewSender()
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer snd.Close()

	var count atomic.Int64
	var last atomic.Int64 // unix nanos of the last packet
	go func() {
		for {
			err := sink.ReadBatch(func(pkt []byte, _ int) {
				if len(pkt) >= 20 && pkt[9] == 6 { // the blast is TCP (after decapsulation)
					count.Add(1)
					last.Store(time.Now().UnixNano())
				}
			})
			if err != nil {
				return
			}
		}
	}()

	_, local, rel := l.ClientPath(1)
	enc := raw.NewEncoder()
	build := func(ipip bool) [][]byte {
		var batch [][]byte
		for k := 0; k < 64; k++ {
			seg := tcp.Segment{Src: netip.AddrPortFrom(l.ClientAddr(), 45000), Dst: netip.AddrPortFrom(l.ExitAddr(), 5555),
				Seq: uint32(k), Flags: tcp.FlagRST, Payload: make([]byte, 60)}
			var p []byte
			var err error
			if ipip {
				p, err = enc.IPIP(local, rel, &seg)
			} else {
				p, err = enc.TCP(&seg)
			}
			if err != nil {
				b.Fatal(err)
			}
			batch = append(batch, bytes.Clone(p))
		}
		return batch
	}
	blast := func(b *testing.B, batch [][]byte) {
		count.Store(0)
		b.ResetTimer()
		start := time.Now()
		sent := 0
		for sent < b.N {
			n := min(len(batch), b.N-sent)
			k, _ := snd.Send(batch[:n])
			sent += k
			if k == 0 {
				sent += n // refused by the kernel: counted as lost
			}
		}
		// The sink has everything when its count stops moving for 200 ms.
		prev := int64(-1)
		for count.Load() != prev && count.Load() < int64(b.N) {
			prev = count.Load()
			time.Sleep(200 * time.Millisecond) // quiescence check on an observable count
		}
		b.StopTimer()
		got := count.Load()
		elapsed := time.Duration(last.Load() - start.UnixNano())
		if got == 0 || elapsed <= 0 {
			b.Fatalf("nothing arrived")
		}
		b.ReportMetric(float64(got)/elapsed.Seconds(), "rx-pps")
		b.ReportMetric(100*float64(int64(b.N)-got)/float64(b.N), "loss-%")
		b.ReportMetric(0, "ns/op")
	}

	b.Run("mpath-relay", func(b *testing.B) { blast(b, build(true)) })
	for k, v := range labtest.RelayMetrics(b, l, 1) {
		if v != 0 && strings.HasPrefix(k, "mpath_relay_") {
			b.Logf("relay: %s %v", k, v)
		}
	}

	// Baseline: stop the relay, let the kernel forward.
	pid := l.RelayPID(1)
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat("/proc/" + itoa(pid) + "/ns"); err != nil {
			break
		}
		if st, _ := os.ReadFile("/proc/" + itoa(pid) + "/stat"); bytes.Contains(st, []byte(") Z")) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("relay did not stop")
		}
		time.Sleep(10 * time.Millisecond) // polling for exit
	}
	if out, err := l.Command(l.RelayNS(1), "sysctl", "-q", "-w", "net.ipv4.ip_forward=1").CombinedOutput(); err != nil {
		b.Fatalf("ip_forward: %v %s", err, out)
	}
	b.Run("kernel-forward", func(b *testing.B) { blast(b, build(false)) })
}

func itoa(n int) string {
	var buf [20]byte
	i := len(buf)
	for n >= 10 {
		i--
		buf[i] = byte('0' + n%10)
		n /= 10
	}
	i--
	buf[i] = byte('0' + n)
	return string(buf[i:])
}
