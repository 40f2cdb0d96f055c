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
	ports = mergeRanges(ports)
	if len(ports) > MaxFilterPortRanges || len(ipipSources) > MaxFilterSources {
		panic(fmt.Sprintf("raw: filter with %d port ranges and %d sources exceeds the limits", len(ports), len(ipipSources)))
	}
	var a asm
	a.ins(bpf.LoadAbsolute{Off: 6, Size: 2})
	a.jump(bpf.JumpBitsSet, 0x1fff, "drop", "") // fragment offset != 0: no transport header
	a.ins(bpf.LoadAbsolute{Off: 9, Size: 1})
	a.jump(bpf.JumpEqual, protoTCP, "tcp", "")
	a.jump(bpf.JumpEqual, protoIPIP, "", "drop")

	// IPIP: outer source in one of the prefixes, inner TCP, not a fragment, inner port.
	for _, p := range ipipSources {
		if !p.Addr().Is4() {
			panic(fmt.Sprintf("raw: filter source %v is not IPv4", p))
		}
		p = p.Masked()
		a.ins(bpf.LoadAbsolute{Off: 12, Size: 4})
		if p.Bits() < 32 {
			a.ins(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: ^uint32(0) << (32 - p.Bits())})
		}
		a.jump(bpf.JumpEqual, binary.BigEndian.Uint32(p.Addr().AsSlice()), "ipip-ok", "")
	}
	a.ins(bpf.RetConstant{Val: 0})
	a.label("ipip-ok")
	a.ins(bpf.LoadMemShift{Off: 0}) // X = outer header length
	a.ins(bpf.LoadIndirect{Off: 9, Size: 1})
	a.jump(bpf.JumpEqual, protoTCP, "", "drop")
	a.ins(bpf.LoadIndirect{Off: 6, Size: 2})
	a.jump(bpf.JumpBitsSet, 0x1fff, "drop", "")
	a.ins(bpf.LoadIndirect{Off: 0, Size: 1})
	a.ins(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0x0f})
	a.ins(bpf.ALUOpConstant{Op: bpf.ALUOpShiftLeft, Val: 2})
	a.ins(bpf.ALUOpX{Op: bpf.ALUOpAdd})
	a.ins(bpf.TAX{}) // X = outer + inner header length
	a.ins(bpf.LoadIndirect{Off: 2, Size: 2})
	a.ports(ports, "ipip")

	a.label("tcp")
	a.ins(bpf.LoadMemShift{Off: 0})
	a.ins(bpf.LoadIndirect{Off: 2, Size: 2})
	a.ports(ports, "tcp")
	a.label("drop")
	a.ins(bpf.RetConstant{Val: 0})
	return a.resolve()
}

// asm is a tiny classic-BPF assembler with named labels for conditional jumps.
type asm struct {
	prog   []bpf.Instruction
	labels map[string]int
	fixups []fixup
}

type fixup struct {
	at        int
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
