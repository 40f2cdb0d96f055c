package e2e

// An attacker on a path floods the exit while a client downloads through it:
//
//	P-c client ──c1──► P-r1 relay ──re──► x1 P-x exit (+ Apache)
//	                     ▲
//	                attacker (raw socket in P-r1, on the exit's side of the relay):
//	                  spoofed bare SYNs to the exit's engine port (random sources),
//	                  SYNs carrying a request with a wrong MAC,
//	                  garbage IPIP from the relay's address (the exit accepts IPIP from it),
//	                  the client's real first segment (its exit request) replayed
//
// The same download runs unattacked, then under the flood (a new connection opened while
// the flood runs): both byte-exact; the exit's CPU and memory and the download rates are
// logged as FIGURE lines, with the exit's refusal and drop counters.

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"

	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"mpath/lab"
)

// procUsage is a process's CPU time and memory from /proc.
type procUsage struct {
	cpu      time.Duration // user + system
	rss, hwm int64         // bytes
}

func usageOf(t *testing.T, pid int) procUsage {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("usage of %d: %v", pid, err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // fields from 3 (state) on
	ut, _ := strconv.ParseInt(f[11], 10, 64)                 // field 14
	st, _ := strconv.ParseInt(f[12], 10, 64)                 // field 15
	u := procUsage{cpu: time.Duration(ut+st) * time.Second / 100}
	st2, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("usage of %d: %v", pid, err)
	}
	for _, l := range strings.Split(string(st2), "\n") {
		k, v, _ := strings.Cut(l, ":")
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			u.rss = kb << 10
		case "VmHWM":
			u.hwm = kb << 10
		}
	}
	return u
}

// checksum16 is the Internet checksum of b with an initial sum.
func checksum16(sum uint32, b []byte) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// ipv4Packet builds an IPv4 packet (valid header checksum) around payload.
func ipv4Packet(src, dst netip.Addr, proto byte, payload []byte) []byte {
	b := make([]byte, 20+len(payload))
	b[0], b[8], b[9] = 0x45, 64, proto
	binary.BigEndian.PutUint16(b[2:4], uint16(len(b)))
	binary.BigEndian.PutUint16(b[4:6], uint16(rand.Uint32()))
	s, d := src.As4(), dst.As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	binary.BigEndian.PutUint16(b[10:12], checksum16(0, b[:20]))
	copy(b[20:], payload)
	return b
}

// tcpSYN builds a TCP SYN (with data when data is not nil) with a valid checksum.
func tcpSYN(src, dst netip.Addr, sport, dport uint16, data []byte) []byte {
	seg := make([]byte, 20+len(data))
	binary.BigEndian.PutUint16(seg[0:2], sport)
	binary.BigEndian.PutUint16(seg[2:4], dport)
	binary.BigEndian.PutUint32(seg[4:8], rand.Uint32())
	seg[12] = 5 << 4
	seg[13] = 0x02 // SYN
	binary.BigEndian.PutUint16(seg[14:16], 65535)
	copy(seg[20:], data)
	s, d := src.As4(), dst.As4()
	pseudo := append(append(append([]byte{}, s[:]...), d[:]...), 0, 6, byte(len(seg)>>8), byte(len(seg)))
	binary.BigEndian.PutUint16(seg[16:18], checksum16(0, append(pseudo, seg...)))
	return ipv4Packet(src, dst, 6, seg)
}

// captureRequest captures, on dev in ns (every device when dev is ""), the first TCP
// SYN with data to port (a client's exit request), as a whole IPv4 packet (the inner one
// when it travels in IPIP).
type requestCapture struct {
	fd  int
	got chan []byte
}

func captureRequest(t *testing.T, ns, dev string, port uint16) *requestCapture {
	t.Helper()
	rc := &requestCapture{got: make(chan []byte, 1)}
	err := lab.Do(ns, func() error {
		ifindex := 0 // every interface
		if dev != "" {
			ifi, err := net.InterfaceByName(dev)
			if err != nil {
				return err
			}
			ifindex = ifi.Index
		}
		proto := int(htons(unix.ETH_P_IP))
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, proto)
		if err != nil {
			return err
		}
		rc.fd = fd
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifindex})
	})
	if err != nil {
		t.Fatalf("capture in %s on %s: %v", ns, dev, err)
	}
	unix.SetsockoptTimeval(rc.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200000})
	stop := make(chan struct{})
	done := make(chan struct{})
	t.Cleanup(func() { close(stop); <-done; unix.Close(rc.fd) })
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, _, err := unix.Recvfrom(rc.fd, buf, 0)
			if err != nil || n < 40 {
				continue
			}
			p := buf[:n]
			if p[9] == 4 { // IPIP: look at the inner packet
				p = p[int(p[0]&0x0f)*4:]
			}
			if len(p) < 40 || p[0]>>4 != 4 || p[9] != 6 {
				continue
			}
			ihl := int(p[0]&0x0f) * 4
			tot := int(binary.BigEndian.Uint16(p[2:4]))
			if tot > len(p) || tot < ihl+20 {
				continue
			}
			tcp := p[ihl:tot]
			doff := int(tcp[12]>>4) * 4
			if binary.BigEndian.Uint16(tcp[2:4]) == port && tcp[13]&0x12 == 0x02 && len(tcp) > doff {
				rc.got <- append([]byte(nil), p[:tot]...)
				return
			}
		}
	}()
	return rc
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// flood sends a mix of attack packets from a raw socket in ns at about pps packets a
// second until stop is closed, and counts them by kind.
type floodStats struct {
	syn, synData, garbage, replay atomic.Int64
}

func flood(t *testing.T, ns string, pps int, exit, relayAddr, exitPathAddr netip.Addr, req []byte, stop <-chan struct{}, st *floodStats) <-chan struct{} {
	t.Helper()
	var fd int
	if err := lab.Do(ns, func() (err error) {
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		return err
	}); err != nil {
		t.Fatalf("raw socket in %s: %v", ns, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer unix.Close(fd)
		send := func(p []byte) {
			d := [4]byte(p[16:20])
			unix.Sendto(fd, p, 0, &unix.SockaddrInet4{Addr: d})
		}
		reqPayload := req[int(req[0]&0x0f)*4+int(req[int(req[0]&0x0f)*4+12]>>4)*4:]
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		burst := max(pps/100, 1)
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			for i := range burst {
				src := netip.AddrFrom4([4]byte{198, 18, byte(rand.IntN(256)), byte(1 + rand.IntN(254))})
				sport := uint16(1024 + rand.IntN(60000))
				switch i % 10 {
				case 0, 1, 2, 3, 4, 5: // spoofed bare SYN
					send(tcpSYN(src, exit, sport, exitPort, nil))
					st.syn.Add(1)
				case 6, 7: // SYN with a request whose MAC is wrong
					bad := append([]byte(nil), reqPayload...)
					bad[len(bad)-1-rand.IntN(min(32, len(bad)))] ^= 0x5a
					send(tcpSYN(src, exit, sport, exitPort, bad))
					st.synData.Add(1)
				case 8: // garbage IPIP from the relay's address
					junk := make([]byte, 20+rand.IntN(200))
					for k := range junk {
						junk[k] = byte(rand.Uint32())
					}
					if rand.IntN(2) == 0 { // half of it a plausible inner header to the exit
						junk = tcpSYN(src, exit, sport, exitPort, junk[:rand.IntN(min(64, len(junk)))])
					}
					send(ipv4Packet(relayAddr, exitPathAddr, 4, junk))
					st.garbage.Add(1)
				case 9: // the client's real request, replayed as it was
					send(req)
					st.replay.Add(1)
				}
			}
		}
	}()
	return done
}

func TestExitUnderAttack(t *testing.T) {
	size := int64(12 << 20)
	if raceOn {
		size = 6 << 20
	}
	const pps = 10000
	l, ap, exit, _, _ := tunnelLab(t, size)
	want := ap.files["big.bin"]
	pid := exit.cmd.Process.Pid
	_, exitPathAddr, relayAddr := l.ExitPath(1)            // the exit's x1 address, relay 1's
	capture := captureRequest(t, l.ExitNS(), "", exitPort) // the SYN takes whichever path the scheduler picks

	get := func(what string) (time.Duration, procUsage, procUsage) {
		t.Helper()
		u0 := usageOf(t, pid)
		start := time.Now()
		d := <-download(l, "/big.bin", newProgress(), 2*time.Minute)
		if d.err != nil || d.n != want.size || d.sum != want.sum {
			t.Fatalf("%s download: %v, %d B sha256 %s, want %d %s", what, d.err, d.n, d.sum, want.size, want.sum)
		}
		return d.at.Sub(start), u0, usageOf(t, pid)
	}
	baseDur, b0, b1 := get("unattacked")
	var req []byte
	select {
	case req = <-capture.got:
	case <-time.After(5 * time.Second):
		t.Fatal("no exit request seen arriving at the exit")
	}
	x0 := exit.scrape(t)

	stop := make(chan struct{})
	var st floodStats
	floodStart := time.Now()
	done := flood(t, l.RelayNS(1), pps, l.ExitAddr(), relayAddr, exitPathAddr, req, stop, &st)
	// Let the flood fill whatever it can fill before the client opens its connection.
	waitFor(t, "the flood under way", 10*time.Second, func() bool { return st.syn.Load() >= int64(pps/2) })
	atkDur, a0, a1 := get("attacked")
	close(stop)
	<-done
	floodFor := time.Since(floodStart)
	x1 := exit.scrape(t)

	rate := func(d time.Duration) float64 { return float64(size) * 8 / d.Seconds() / 1e6 }
	sent := st.syn.Load() + st.synData.Load() + st.garbage.Load() + st.replay.Load()
	t.Logf("FIGURE attack: flood from relay 1's namespace, %d packets in %v (%.0f/s): %d spoofed SYNs, %d SYNs with a bad MAC, %d garbage IPIP, %d replays of a real request",
		sent, floodFor.Round(time.Millisecond), float64(sent)/floodFor.Seconds(), st.syn.Load(), st.synData.Load(), st.garbage.Load(), st.replay.Load())
	t.Logf("FIGURE attack: %d B download unattacked %v (%.1f Mbit/s), attacked %v (%.1f Mbit/s) = %.0f%% of unattacked",
		size, baseDur.Round(time.Millisecond), rate(baseDur), atkDur.Round(time.Millisecond), rate(atkDur), 100*baseDur.Seconds()/atkDur.Seconds())
	t.Logf("FIGURE attack: exit CPU %.2f s/s unattacked, %.2f s/s attacked; RSS %d MiB -> %d MiB, peak %d MiB",
		(b1.cpu-b0.cpu).Seconds()/baseDur.Seconds(), (a1.cpu-a0.cpu).Seconds()/atkDur.Seconds(), b1.rss>>20, a1.rss>>20, a1.hwm>>20)
	var drops []string
	for k, v := range x1 {
		if (strings.Contains(k, "refused") || strings.Contains(k, "drops") || strings.Contains(k, "mpath_exit_connections_total")) && v-x0[k] != 0 {
			drops = append(drops, fmt.Sprintf("%s +%.0f", k, v-x0[k]))
		}
	}
	sort.Strings(drops)
	t.Logf("FIGURE attack: exit counters during the flood: %s", strings.Join(drops, "; "))
	if replays := metric(x1, "mpath_exit_connections_total", `event="relayed"`) - metric(x0, "mpath_exit_connections_total", `event="relayed"`); replays != 1 {
		t.Errorf("the exit relayed %.0f flows during the flood: want 1, the download (more: replays were accepted)", replays)
	}
	// The flood reached the exit and was dropped before any state: the spoofed and bad-MAC
	// SYNs (and the replays) show up as unauthenticated SYNs, not as flows.
	unauth := metric(x1, "mpath_engine_drops_total", `reason="unauthenticated_syn"`) - metric(x0, "mpath_engine_drops_total", `reason="unauthenticated_syn"`)
	if syns := st.syn.Load() + st.synData.Load(); unauth < float64(syns)/2 {
		t.Errorf("the exit counted %.0f unauthenticated SYNs of the %d sent: the flood did not reach it, or reached its state", unauth, syns)
	}
	// Memory stays bounded (the engine keeps nothing for the flood).
	if a1.hwm > 256<<20 {
		t.Errorf("exit peak RSS %d MiB under the flood, want < 256 MiB", a1.hwm>>20)
	}
}
