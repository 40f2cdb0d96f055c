package raw

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sort"

	"golang.org/x/net/bpf"
)

// PortRange is an inclusive range of TCP ports, [First, Last].
type PortRange struct{ First, Last uint16 }

// Contains reports whether p is in the range.
func (r PortRange) Contains(p uint16) bool { return r.First <= p && p <= r.Last }

func (r PortRange) String() string { return fmt.Sprintf("%d-%d", r.First, r.Last) }

// inRanges reports whether p is in any of rs.
func inRanges(rs []PortRange, p uint16) bool {
	for _, r := range rs {
		if r.Contains(p) {
			return true
		}
	}
	return false
}

// mergeRanges sorts rs and merges overlapping or adjacent ranges (and drops inverted
// ones), so filters and nftables rules stay short.
func mergeRanges(rs []PortRange) []PortRange {
	out := make([]PortRange, 0, len(rs))
	for _, r := range rs {
		if r.First <= r.Last {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].First < out[j].First })
	m := out[:0]
	for _, r := range out {
		if n := len(m); n > 0 && uint32(r.First) <= uint32(m[n-1].Last)+1 {
			m[n-1].Last = max(m[n-1].Last, r.Last)
			continue
		}
		m = append(m, r)
	}
	return m
}

// Limits of FilterTCPPortsOrIPIP: classic BPF jumps reach at most 255 instructions.
const (
	MaxFilterPortRanges = 32
	MaxFilterSources    = 32
)

// acceptLen is what an accepting filter returns: the number of bytes to keep (all).
const acceptLen = 0x40000

// FilterTCPPortsOrIPIP returns a classic BPF program, run on a packet from its IPv4
// header, that accepts
//
//   - IPv4/TCP whose destination port is in ports, and
//   - IPv4/IPIP from a source in ipipSources whose inner packet is TCP to a port in ports,
//
// and drops everything else, including non-first fragments. An empty ports matches every
// port; an empty ipipSources accepts no IPIP at all. Overlapping ranges are merged; more
// than MaxFilterPortRanges ranges or MaxFilterSources prefixes (after merging) panic, as
// do non-IPv4 prefixes: both are programming errors.
func FilterTCPPortsOrIPIP(ports []PortRange, ipipSources []netip.Prefix) []bpf.Instruction {
	return FilterEngine(FilterSpec{Ports: ports, IPIPSources: ipipSources})
}

// FilterSpec says what FilterEngine accepts.
type FilterSpec struct {
	Ports       []PortRange    // inner (or plain) TCP destination ports; empty = every port
	IPIPSources []netip.Prefix // outer sources accepted for IPIP; empty = no IPIP
	UDPPort     uint16         // UDP encapsulation port; 0 = no UDP
	UDPSources  []netip.Prefix // outer sources accepted for UDP; empty = no UDP
}

// FilterEngine returns a classic BPF program, run on a packet from its IPv4 header, that
// accepts plain TCP to s.Ports, IPIP from s.IPIPSources and IPv4-in-UDP (fou) to
// s.UDPPort from s.UDPSources whose inner packet is unfragmented TCP to s.Ports, and
// drops everything else. Limits as for FilterTCPPortsOrIPIP (per source list).
func FilterEngine(s FilterSpec) []bpf.Instruction {
	ports := mergeRanges(s.Ports)
	if len(ports) > MaxFilterPortRanges || len(s.IPIPSources) > MaxFilterSources || len(s.UDPSources) > MaxFilterSources {
		panic(fmt.Sprintf("raw: filter with %d port ranges and %d+%d sources exceeds the limits", len(ports), len(s.IPIPSources), len(s.UDPSources)))
	}
	var a asm
	a.ins(bpf.LoadAbsolute{Off: 6, Size: 2})
	a.jump(bpf.JumpBitsSet, 0x1fff, "drop", "") // fragment offset != 0: no transport header
	a.ins(bpf.LoadAbsolute{Off: 9, Size: 1})
	// Dispatch with unconditional jumps (32-bit offsets): the blocks can be long.
	a.jump(bpf.JumpEqual, protoTCP, "", "not-tcp")
	a.goTo("tcp")
	a.label("not-tcp")
	a.jump(bpf.JumpEqual, protoIPIP, "", "not-ipip")
	a.goTo("ipip")
	a.label("not-ipip")
	if s.UDPPort != 0 && len(s.UDPSources) > 0 {
		a.jump(bpf.JumpEqual, protoUDP, "", "drop")
		a.goTo("udp")
	}
	a.label("drop")
	a.ins(bpf.RetConstant{Val: 0})

	a.label("tcp")
	a.ins(bpf.LoadMemShift{Off: 0})
	a.ins(bpf.LoadIndirect{Off: 2, Size: 2})
	a.ports(ports, "tcp")

	// IPIP: outer source in one of the prefixes, inner TCP, not a fragment, inner port.
	a.label("ipip")
	a.sources(s.IPIPSources, "ipip-ok")
	a.label("ipip-ok")
	a.ins(bpf.LoadMemShift{Off: 0}) // X = outer header length
	a.inner(0, ports, "ipip")

	if s.UDPPort != 0 && len(s.UDPSources) > 0 {
		// UDP: outer source in one of the prefixes, destination port, then as IPIP with
		// the inner header 8 bytes further on.
		a.label("udp")
		a.sources(s.UDPSources, "udp-ok")
		a.label("udp-ok")
		a.ins(bpf.LoadMemShift{Off: 0})
		a.ins(bpf.LoadIndirect{Off: 2, Size: 2})
		a.jump(bpf.JumpEqual, uint32(s.UDPPort), "", "udp-drop")
		a.inner(udpHeaderLen, ports, "udp")
	}
	return a.resolve()
}

// sources emits the outer-source check: jump to ok when the source is in one of ps,
// return 0 otherwise.
func (a *asm) sources(ps []netip.Prefix, ok string) {
	for _, p := range ps {
		if !p.Addr().Is4() {
			panic(fmt.Sprintf("raw: filter source %v is not IPv4", p))
		}
		p = p.Masked()
		a.ins(bpf.LoadAbsolute{Off: 12, Size: 4})
		if p.Bits() < 32 {
			a.ins(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: ^uint32(0) << (32 - p.Bits())})
		}
		a.jump(bpf.JumpEqual, binary.BigEndian.Uint32(p.Addr().AsSlice()), ok, "")
	}
	a.ins(bpf.RetConstant{Val: 0})
}

// inner emits the checks of an encapsulated packet whose inner IPv4 header starts off
// bytes after X (the outer header length): inner TCP, not a fragment, port in ports.
func (a *asm) inner(off uint32, ports []PortRange, tag string) {
	drop := tag + "-drop"
	a.ins(bpf.LoadIndirect{Off: off + 9, Size: 1})
	a.jump(bpf.JumpEqual, protoTCP, "", drop)
	a.ins(bpf.LoadIndirect{Off: off + 6, Size: 2})
	a.jump(bpf.JumpBitsSet, 0x1fff, drop, "")
	a.ins(bpf.LoadIndirect{Off: off, Size: 1})
	a.ins(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0x0f})
	a.ins(bpf.ALUOpConstant{Op: bpf.ALUOpShiftLeft, Val: 2})
	a.ins(bpf.ALUOpX{Op: bpf.ALUOpAdd})
	if off > 0 {
		a.ins(bpf.ALUOpConstant{Op: bpf.ALUOpAdd, Val: off})
	}
	a.ins(bpf.TAX{}) // X = outer + off + inner header length
	a.ins(bpf.LoadIndirect{Off: 2, Size: 2})
	a.ports(ports, tag)
	a.label(drop)
	a.ins(bpf.RetConstant{Val: 0})
}

// asm is a tiny classic-BPF assembler with named labels for conditional jumps.
type asm struct {
	prog   []bpf.Instruction
	labels map[string]int
	fixups []fixup
}

type fixup struct {
	at        int
	always    bool // an unconditional jump to yes
	cond      bpf.JumpTest
	val       uint32
	yes, no   string // label names; "" = next instruction
	yesN, noN int
}

func (a *asm) ins(i bpf.Instruction) { a.prog = append(a.prog, i) }

func (a *asm) label(name string) {
	if a.labels == nil {
		a.labels = map[string]int{}
	}
	a.labels[name] = len(a.prog)
}

func (a *asm) jump(cond bpf.JumpTest, val uint32, yes, no string) {
	a.fixups = append(a.fixups, fixup{at: len(a.prog), cond: cond, val: val, yes: yes, no: no})
	a.prog = append(a.prog, nil)
}

// goTo emits an unconditional jump (32-bit offset) to a label.
func (a *asm) goTo(label string) {
	a.fixups = append(a.fixups, fixup{at: len(a.prog), always: true, yes: label})
	a.prog = append(a.prog, nil)
}

// ports emits the port checks for the value in A: accept when it is in a range, drop
// otherwise. Each block has its own return instructions to keep jumps short.
func (a *asm) ports(ports []PortRange, tag string) {
	acc := tag + "-accept"
	if len(ports) == 0 {
		a.ins(bpf.RetConstant{Val: acceptLen})
		return
	}
	for i, r := range ports {
		next := fmt.Sprintf("%s-next%d", tag, i)
		a.jump(bpf.JumpGreaterOrEqual, uint32(r.First), "", next)
		a.jump(bpf.JumpGreaterThan, uint32(r.Last), next, acc)
		a.label(next)
	}
	a.ins(bpf.RetConstant{Val: 0})
	a.label(acc)
	a.ins(bpf.RetConstant{Val: acceptLen})
}

func (a *asm) resolve() []bpf.Instruction {
	skip := func(from int, name string) uint8 {
		if name == "" {
			return 0
		}
		to, ok := a.labels[name]
		d := to - from - 1
		if !ok || d < 0 || d > 255 {
			panic(fmt.Sprintf("raw: bpf jump to %q out of range (%d)", name, d))
		}
		return uint8(d)
	}
	for _, f := range a.fixups {
		if f.always {
			to, ok := a.labels[f.yes]
			if !ok || to <= f.at {
				panic(fmt.Sprintf("raw: bpf jump to %q out of range", f.yes))
			}
			a.prog[f.at] = bpf.Jump{Skip: uint32(to - f.at - 1)}
			continue
		}
		a.prog[f.at] = bpf.JumpIf{Cond: f.cond, Val: f.val, SkipTrue: skip(f.at, f.yes), SkipFalse: skip(f.at, f.no)}
	}
	return a.prog
}

// receiverPrefix returns the instructions a Receiver puts in front of the user's filter:
// drop outgoing packets, and, when ifindexes is not empty, packets from other interfaces.
func receiverPrefix(ifindexes []int) []bpf.Instruction {
	var a asm
	a.ins(bpf.LoadExtension{Num: bpf.ExtType})
	a.jump(bpf.JumpEqual, packetOutgoing, "drop", "")
	if len(ifindexes) > 0 {
		a.ins(bpf.LoadExtension{Num: bpf.ExtInterfaceIndex})
		for _, ix := range ifindexes {
			a.jump(bpf.JumpEqual, uint32(ix), "go", "")
		}
		a.label("drop")
		a.ins(bpf.RetConstant{Val: 0})
		a.label("go")
		return a.resolve()
	}
	a.ins(bpf.Jump{Skip: 1})
	a.label("drop")
	a.ins(bpf.RetConstant{Val: 0})
	return a.resolve()
}

const packetOutgoing = 4 // PACKET_OUTGOING, skb->pkt_type of a packet this host sends
