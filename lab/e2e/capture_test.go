package e2e

// Counting TCP resets on the client's wire: tcpdump captures (headers only) everything
// non-loopback in the client namespace while a transfer runs; the pcap is decoded with
// gopacket (Linux cooked v1 framing, IPIP decoded as nested IPv4). A positive control —
// a kernel socket closed with SO_LINGER 0, which makes the kernel send one RST — proves
// that the capture would have seen a kernel reset.

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// capture is a running tcpdump in a namespace.
type capture struct {
	p    *proc
	file string
}

// startCapture starts tcpdump on every interface of ns (loopback traffic excluded,
// ICMP, TCP and IPIP only, 160-byte snapshots) and waits until it listens.
func startCapture(t *testing.T, ns string) *capture {
	t.Helper()
	bin := needTool(t, "tcpdump", "tcpdump")
	file := filepath.Join(t.TempDir(), "client.pcap")
	p := startProc(t, ns, "tcpdump", bin, "-i", "any", "-y", "LINUX_SLL", "-nn", "-s", "160", "-U", "-w", file,
		"ip and not net 127.0.0.0/8 and (ip[9] = 1 or ip[9] = 4 or ip[9] = 6)")
	p.waitLog(t, "listening on", readyTimeout)
	return &capture{p: p, file: file}
}

// stop ends the capture and returns how many packets the kernel dropped from it.
func (c *capture) stop(t *testing.T) int {
	t.Helper()
	if ended, err := c.p.stop(syscall.SIGINT, 10*time.Second); !ended {
		t.Fatalf("tcpdump did not stop on SIGINT: %v", err)
	}
	m := regexp.MustCompile(`(\d+) packets? dropped by kernel`).FindStringSubmatch(c.p.log())
	if m == nil {
		t.Fatalf("tcpdump summary missing:\n%s", c.p.log())
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// wireCounts is what a client-side capture saw.
type wireCounts struct {
	ipipOut   int      // IPIP packets sent (the engine's segments)
	plainOut  int      // plain TCP packets sent (the kernel's)
	plainIn   int      // plain TCP packets received (kernel servers' segments in direct mode)
	kernelRST []string // plain TCP RSTs sent, apart from the control
	engineRST []string // RSTs sent inside IPIP, apart from probe answers
	probeRST  int      // RSTs sent inside IPIP to the peer's probe port: answers to its path probes
	icmpOut   []string // ICMP sent (the kernel answering engine traffic: unreachables)
	control   bool     // the control RST was seen
}

// probePort is the engines' path-probe port (the first of the default --ports range,
// 61000-65535): once a second per path a stack sends a bare ACK from it to its last peer,
// and the peer's engine answers with a RST by design (tcp.Stack's prober).
const probePort = 61000

// countWire decodes the capture file so far (a record still being written is ignored).
// controlPort is the source port of the control connection (0: none).
func countWire(file string, controlPort uint16) (wireCounts, error) {
	var w wireCounts
	f, err := os.Open(file)
	if err != nil {
		return w, err
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		return w, fmt.Errorf("pcap %s: %w", file, err)
	}
	if r.LinkType() != layers.LinkTypeLinuxSLL {
		return w, fmt.Errorf("pcap %s: link type %v, want Linux SLL", file, r.LinkType())
	}
	for {
		data, _, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return w, nil
		}
		if err != nil {
			return w, fmt.Errorf("pcap %s: %w", file, err)
		}
		pkt := gopacket.NewPacket(data, layers.LinkTypeLinuxSLL, gopacket.DecodeOptions{Lazy: true, NoCopy: true})
		sll, _ := pkt.Layer(layers.LayerTypeLinuxSLL).(*layers.LinuxSLL)
		if sll == nil {
			continue
		}
		out := sll.PacketType == layers.LinuxSLLPacketTypeOutgoing
		var ips []*layers.IPv4
		var tcp *layers.TCP
		var icmp *layers.ICMPv4
		for _, l := range pkt.Layers() {
			switch v := l.(type) {
			case *layers.IPv4:
				ips = append(ips, v)
			case *layers.TCP:
				tcp = v
			case *layers.ICMPv4:
				icmp = v
			}
		}
		if len(ips) == 0 {
			continue
		}
		if out && icmp != nil && ips[0].Protocol == layers.IPProtocolICMPv4 {
			w.icmpOut = append(w.icmpOut, fmt.Sprintf("%s > %s ICMP %s", ips[0].SrcIP, ips[0].DstIP, icmp.TypeCode))
			continue
		}
		ipip := ips[0].Protocol == layers.IPProtocolIPv4
		switch {
		case out && ipip:
			w.ipipOut++
		case out:
			w.plainOut++
		case !ipip:
			w.plainIn++
		}
		if !out || tcp == nil || !tcp.RST {
			continue
		}
		in := ips[len(ips)-1]
		desc := fmt.Sprintf("%s:%d > %s:%d RST seq %d", in.SrcIP, tcp.SrcPort, in.DstIP, tcp.DstPort, tcp.Seq)
		switch {
		case ipip && tcp.DstPort == probePort:
			w.probeRST++
		case ipip:
			w.engineRST = append(w.engineRST, desc)
		case controlPort != 0 && uint16(tcp.SrcPort) == controlPort:
			w.control = true
		default:
			w.kernelRST = append(w.kernelRST, desc)
		}
	}
}

// controlRST makes the client kernel send one RST: a kernel connection from ns to addr
// (a plain TCP server reachable through the relays) closed with SO_LINGER 0. It returns
// the connection's source port.
func controlRST(t *testing.T, ns, addr string) uint16 {
	t.Helper()
	c, err := dialIn(ns, addr, 5*time.Second)
	if err != nil {
		t.Fatalf("control connection to %s: %v", addr, err)
	}
	port := netip.MustParseAddrPort(c.LocalAddr().String()).Port()
	if err := c.SetLinger(0); err != nil {
		t.Fatal(err)
	}
	c.Close()
	return port
}

// waitControl polls the capture until the control RST shows up, so the capture is known
// to be complete up to that moment.
func (c *capture) waitControl(t *testing.T, port uint16) wireCounts {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		w, err := countWire(c.file, port)
		if err != nil {
			t.Fatal(err)
		}
		if w.control {
			return w
		}
		if time.Now().After(deadline) {
			t.Fatalf("the control RST (port %d) never showed up in the capture: the capture cannot see kernel RSTs; counts %+v", port, w)
		}
		time.Sleep(pollEvery) // poll interval, not synchronisation
	}
}
