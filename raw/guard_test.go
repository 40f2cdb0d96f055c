package raw

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"mpath/raw/rawtest"
	"mpath/tcp"
)

// rstWatch counts, at namespace a's end of the veth, the RSTs and ICMP errors that b's
// kernel sends (an AF_PACKET counter independent of the guard).
type rstWatch struct {
	mu       sync.Mutex
	rsts     map[uint16]int // by source port
	icmp     int
	payloads map[string]bool // payloads of TCP segments seen (for marker packets)
	changed  chan struct{}
}

func watchRSTs(t *testing.T, ns *rawtest.Netns) *rstWatch {
	r := newReceiverIn(t, ns, ReceiverConfig{Ifaces: []string{"va"}})
	w := &rstWatch{rsts: map[uint16]int{}, payloads: map[string]bool{}, changed: make(chan struct{}, 1)}
	go func() {
		dec := NewDecoder()
		var seg tcp.Segment
		for {
			err := r.ReadBatch(func(pkt []byte, _ int) {
				w.mu.Lock()
				defer w.mu.Unlock()
				if len(pkt) >= 20 && pkt[9] == 1 {
					w.icmp++
					return
				}
				if _, err := dec.Decode(pkt, &seg); err != nil {
					return
				}
				if seg.Flags&tcp.FlagRST != 0 {
					w.rsts[seg.Src.Port()]++
				}
				if len(seg.Payload) > 0 {
					w.payloads[string(seg.Payload)] = true
				}
			})
			select {
			case w.changed <- struct{}{}:
			default:
			}
			if err != nil {
				return
			}
		}
	}()
	return w
}

func (w *rstWatch) wait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		ok := cond()
		w.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-w.changed:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// rstsIn returns how many RSTs came from ports in r.
func (w *rstWatch) rstsIn(r PortRange) int {
	n := 0
	for p, c := range w.rsts {
		if r.Contains(p) {
			n += c
		}
	}
	return n
}

// provoke makes b's kernel want to answer: SYNs and data segments to every port of the
// guarded range from a raw socket in a, IPIP from a (b has no ipip module: ICMP protocol
// unreachable), then a SYN to the unguarded marker port. Once the marker's RST is back,
// b's kernel has handled everything sent before it.
func provoke(t *testing.T, p *pair, s *Sender, r PortRange, marker uint16) {
	t.Helper()
	enc := NewEncoder()
	var pkts [][]byte
	add := func(b []byte, err error) {
		if err != nil {
			t.Fatal(err)
		}
		pkts = append(pkts, append([]byte(nil), b...))
	}
	for port := r.First; ; port++ {
		syn := tcp.Segment{Src: netip.AddrPortFrom(p.aAddr, 50000), Dst: netip.AddrPortFrom(p.bAddr, port), Seq: 1, Flags: tcp.FlagSYN, Window: 100}
		add(enc.TCP(&syn))
		data := tcp.Segment{Src: netip.AddrPortFrom(p.aAddr, 50001), Dst: netip.AddrPortFrom(p.bAddr, port), Seq: 1, Ack: 1, Flags: tcp.FlagACK, Window: 100, Payload: []byte("data")}
		add(enc.TCP(&data))
		add(enc.IPIP(p.aAddr, p.bAddr, &syn))
		if port == r.Last {
			break
		}
	}
	add(enc.TCP(&tcp.Segment{Src: netip.AddrPortFrom(p.aAddr, 50002), Dst: netip.AddrPortFrom(p.bAddr, marker), Seq: 9, Flags: tcp.FlagSYN}))
	if n, err := s.Send(pkts); n != len(pkts) || err != nil {
		t.Fatalf("send: %d of %d: %v", n, len(pkts), err)
	}
}

func TestGuardStopsRSTs(t *testing.T) {
	p := newPair(t)
	guarded := PortRange{9200, 9209}
	w := watchRSTs(t, p.a)
	s := newSenderIn(t, p.a)
	// b has rate limits on ICMP; turn them off so every ICMP error would show.
	p.b.MustRun(t, "sysctl", "-q", "-w", "net.ipv4.icmp_ratelimit=0", "net.ipv4.icmp_msgs_per_sec=100000")

	// Without the guard b's kernel answers: the test can see RSTs and ICMP when they leave.
	provoke(t, p, s, guarded, 9300)
	w.wait(t, "RSTs without guard", func() bool { return w.rsts[9300] >= 1 && w.rstsIn(guarded) >= 20 && w.icmp >= 10 })

	table := rawtest.UniqueName("rawt")
	var g *Guard
	capture := collect(newReceiverIn(t, p.b, ReceiverConfig{Ifaces: []string{"vb"}, Filter: FilterTCPPortsOrIPIP([]PortRange{guarded}, []netip.Prefix{netip.PrefixFrom(p.aAddr, 32)})}))
	if err := p.b.Do(func() (err error) {
		g, err = NewGuard(GuardConfig{Table: table, Ports: []PortRange{guarded}, IPIPSources: []netip.Prefix{netip.PrefixFrom(p.aAddr, 32)}})
		return err
	}); err != nil {
		t.Fatalf("NewGuard: %v", err)
	}
	t.Cleanup(func() { g.Close() })
	if !g.Owned() {
		t.Error("table not owned by the process (kernel >= 5.12 expected)")
	}
	if out := p.b.MustRun(t, "nft", "list", "table", "ip", table); !strings.Contains(out, "priority raw") || !strings.Contains(out, "9200-9209") {
		t.Errorf("unexpected ruleset:\n%s", out)
	}

	w.mu.Lock()
	before, icmpBefore, marker := w.rstsIn(guarded), w.icmp, w.rsts[9300]
	w.mu.Unlock()
	// A kernel TCP client too: its SYN must go unanswered (connect times out).
	done := make(chan error, 1)
	go p.a.Do(func() error {
		d := net.Dialer{Timeout: 300 * time.Millisecond}
		c, err := d.Dial("tcp4", "10.9.0.2:9205")
		if err == nil {
			c.Close()
		}
		done <- err
		return nil
	})
	provoke(t, p, s, guarded, 9300)
	w.wait(t, "marker RST with guard", func() bool { return w.rsts[9300] > marker })
	if err := <-done; err == nil || !errors.Is(err, os.ErrDeadlineExceeded) && !strings.Contains(err.Error(), "timeout") {
		t.Errorf("kernel dial to a guarded port: %v, want a timeout", err)
	}
	w.mu.Lock()
	after, icmpAfter := w.rstsIn(guarded), w.icmp
	w.mu.Unlock()
	if after != before {
		t.Errorf("%d RSTs left b from guarded ports", after-before)
	}
	if icmpAfter != icmpBefore {
		t.Errorf("%d ICMP errors left b for guarded IPIP", icmpAfter-icmpBefore)
	}
	// AF_PACKET in b still saw what the guard dropped (it taps before netfilter).
	// 10 ports x (SYN, data, IPIP) and the kernel client's SYN.
	capture.waitFor(t, "b's capture of the dropped packets", 5*time.Second, func() bool { return len(capture.segs) >= 31 })

	// Outbound RSTs from guarded ports: a plain raw socket's are dropped, the engine's
	// (Sender, marked) leave.
	rst := func(payload string) []byte {
		b, _ := NewEncoder().TCP(&tcp.Segment{Src: netip.AddrPortFrom(p.bAddr, 9201), Dst: netip.AddrPortFrom(p.aAddr, 50000),
			Seq: 5, Flags: tcp.FlagRST | tcp.FlagACK, Payload: []byte(payload)})
		return append([]byte(nil), b...)
	}
	unmarked := rst("unmarked")
	if err := p.b.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, unmarked, 0, &unix.SockaddrInet4{Addr: p.aAddr.As4()})
	}); err != nil && !errors.Is(err, unix.EPERM) {
		t.Fatalf("unmarked RST: %v", err)
	}
	sb := newSenderIn(t, p.b)
	if _, err := sb.Send([][]byte{rst("engine")}); err != nil {
		t.Fatal(err)
	}
	w.wait(t, "the engine's RST", func() bool { return w.payloads["engine"] })
	w.mu.Lock()
	leaked := w.payloads["unmarked"]
	w.mu.Unlock()
	if leaked {
		t.Error("an unmarked RST from a guarded port left b")
	}

	if err := g.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := g.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if out := p.b.MustRun(t, "nft", "list", "tables"); strings.Contains(out, table) {
		t.Errorf("table still there after Close:\n%s", out)
	}
}

func TestGuardReplacesStaleTable(t *testing.T) {
	rawtest.SkipUnlessRoot(t)
	ns := rawtest.NewNetns(t, "rawt")
	table := rawtest.UniqueName("rawt")
	ns.MustRun(t, "nft", "add", "table", "ip", table)
	ns.MustRun(t, "nft", "add", "chain", "ip", table, "stale", "{ type filter hook input priority 0 ; }")
	var g *Guard
	if err := ns.Do(func() (err error) {
		g, err = NewGuard(GuardConfig{Table: table, Ports: []PortRange{{9000, 9000}}})
		return err
	}); err != nil {
		t.Fatalf("NewGuard over a stale table: %v", err)
	}
	defer g.Close()
	out := ns.MustRun(t, "nft", "list", "table", "ip", table)
	if strings.Contains(out, "stale") || !strings.Contains(out, "prerouting") {
		t.Errorf("stale table not replaced:\n%s", out)
	}
	// A second guard of the same name while the first lives: refused, first untouched.
	err := ns.Do(func() error {
		g2, err := NewGuard(GuardConfig{Table: table, Ports: []PortRange{{1, 2}}})
		if err == nil {
			g2.Close()
		}
		return err
	})
	if err == nil {
		t.Error("second guard took over a live owned table")
	}
	if out := ns.MustRun(t, "nft", "list", "table", "ip", table); !strings.Contains(out, "9000") {
		t.Errorf("first guard's table damaged:\n%s", out)
	}
}

const guardChildEnv = "MPATH_RAW_GUARD_CHILD"

// TestGuardChildProcess is not a test on its own: TestGuardDiesWithProcess runs the test
// binary again with guardChildEnv set, in a namespace, to install a guard and wait.
func TestGuardChildProcess(t *testing.T) {
	table := os.Getenv(guardChildEnv)
	if table == "" {
		t.Skip("helper process for TestGuardDiesWithProcess")
	}
	if table == "auto" {
		table = "" // the per-instance default
	}
	g, err := NewGuard(GuardConfig{Table: table, Ports: []PortRange{{9000, 9009}}, IPIPSources: []netip.Prefix{netip.MustParsePrefix("10.9.0.1/32")}})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("ready", g.Owned(), g.Table())
	// Wait to be killed (stdin stays open until then).
	bufio.NewReader(os.Stdin).ReadString('\n')
	os.Exit(0)
}

func TestGuardDiesWithProcess(t *testing.T) {
	rawtest.SkipUnlessRoot(t)
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			ns := rawtest.NewNetns(t, "rawt")
			table := rawtest.UniqueName("rawk")
			cmd := ns.Command(os.Args[0], "-test.run=^TestGuardChildProcess$")
			cmd.Env = append(os.Environ(), guardChildEnv+"="+table)
			stdin, _ := cmd.StdinPipe()
			stdout, _ := cmd.StdoutPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				stdin.Close()
				cmd.Process.Kill()
				cmd.Wait()
			})
			line, err := bufio.NewReader(stdout).ReadString('\n')
			if err != nil || !strings.HasPrefix(line, "ready true") {
				t.Fatalf("child: %q %v", line, err)
			}
			if out := ns.MustRun(t, "nft", "list", "tables"); !strings.Contains(out, table) {
				t.Fatalf("child's table missing:\n%s", out)
			}
			// ip netns exec runs the binary in place (exec), so cmd.Process is the child.
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			cmd.Wait()
			// The kernel removes an owner table when the socket is released, which happens
			// as the process exits: by the time Wait returns it is gone. Poll briefly
			// anyway, on the observable condition.
			deadline := time.Now().Add(3 * time.Second)
			for {
				out := ns.MustRun(t, "nft", "list", "tables")
				if !strings.Contains(out, table) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("table %s still there after %v:\n%s", table, sig, out)
				}
			}
		})
	}
}

// TestGuardBatchFlags checks the one message we write ourselves: the final NEWTABLE of
// the batch carries the owner flag, everything else is google/nftables' own.
func TestGuardBatchFlags(t *testing.T) {
	msgs, err := guardBatch(GuardConfig{Table: "x", Ports: []PortRange{{1, 2}, {5, 6}}, Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1")},
		IPIPSources: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}})
	if err != nil {
		t.Fatal(err)
	}
	patched := setTableFlags(msgs, "x", nftTableFlagOwner)
	if len(patched) != len(msgs) {
		t.Fatal("message count changed")
	}
	var tables []uint32
	for i, m := range patched {
		if m.Header.Type != netlinkNewTable {
			if string(m.Data) != string(msgs[i].Data) {
				t.Errorf("message %d changed", i)
			}
			continue
		}
		ad, err := netlinkAttrs(m.Data[4:])
		if err != nil {
			t.Fatal(err)
		}
		tables = append(tables, ad)
	}
	if len(tables) != 2 || tables[0] != 0 || tables[1] != nftTableFlagOwner {
		t.Errorf("NEWTABLE flags %v, want [0 %d]", tables, nftTableFlagOwner)
	}
	// begin, newtable, deltable, newtable, 2 chains, 2 ranges x 1 addr x (in, out) + 1 source, end
	if want := 1 + 3 + 2 + 4 + 1 + 1; len(msgs) != want {
		t.Errorf("%d messages, want %d", len(msgs), want)
	}
}

var netlinkNewTable = netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWTABLE)

// netlinkAttrs returns NFTA_TABLE_FLAGS from a NEWTABLE message's attributes (0 if absent).
func netlinkAttrs(b []byte) (uint32, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return 0, err
	}
	ad.ByteOrder = binary.BigEndian
	var flags uint32
	for ad.Next() {
		if ad.Type() == unix.NFTA_TABLE_FLAGS {
			flags = ad.Uint32()
		}
	}
	return flags, ad.Err()
}
