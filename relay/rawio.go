package relay

import (
	"fmt"
	"net/netip"

	"golang.org/x/net/bpf"

	"mpath/raw"
)

// RawSource is the production Source: raw's AF_PACKET TPACKET_V3 receiver on every
// interface of the host (namespace), inbound only, with a kernel BPF filter that keeps
// IPIP only, or all IPv4 with plain. Read and Close follow raw.Receiver's rules: one
// reader, Close from anywhere.
type RawSource struct {
	r  *raw.Receiver
	fn func([]byte)
	cb func(pkt []byte, ifindex int) // made once: no allocation per ReadBatch
}

// IPIPFilter is the receive filter without --plain: IPv4 protocol 4 only (run from the
// IPv4 header).
func IPIPFilter() []bpf.Instruction {
	return []bpf.Instruction{
		bpf.LoadAbsolute{Off: 9, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: protoIPIP, SkipTrue: 1},
		bpf.RetConstant{Val: 0},
		bpf.RetConstant{Val: 0x40000},
	}
}

// RingBytes is the size of the relay's receive ring (see NewRawSource).
const RingBytes = 32 << 20

// EncapFilter is the receive filter without --plain when the relay also takes UDP
// encapsulation: IPv4 protocol 4, or unfragmented UDP to udpPort.
func EncapFilter(udpPort uint16) []bpf.Instruction {
	return []bpf.Instruction{
		bpf.LoadAbsolute{Off: 9, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: protoIPIP, SkipTrue: 7},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: protoUDP, SkipFalse: 5},
		bpf.LoadAbsolute{Off: 6, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x1fff, SkipTrue: 3},
		bpf.LoadMemShift{Off: 0},
		bpf.LoadIndirect{Off: 2, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(udpPort), SkipTrue: 1},
		bpf.RetConstant{Val: 0},
		bpf.RetConstant{Val: 0x40000},
	}
}

// NewRawSource opens the receiver in the current network namespace.
func NewRawSource(plain bool) (*RawSource, error) { return NewRawSourceEncap(plain, 0) }

// NewRawSourceEncap is NewRawSource that also captures UDP encapsulation to udpPort
// (0: IPIP only).
func NewRawSourceEncap(plain bool, udpPort uint16) (*RawSource, error) {
	// raw's ring blocks are 256 KiB and retire after at most 1 ms, so at low rates every
	// block holds a few packets and the ring buffers only about one millisecond per
	// block: 128 blocks ride out a relay descheduled for 100+ ms on a busy machine.
	cfg := raw.ReceiverConfig{RingBytes: RingBytes}
	if !plain {
		cfg.Filter = IPIPFilter()
		if udpPort != 0 {
			cfg.Filter = EncapFilter(udpPort)
		}
	}
	r, err := raw.NewReceiver(cfg)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	s := &RawSource{r: r}
	s.cb = func(pkt []byte, _ int) { s.fn(pkt) }
	return s, nil
}

// Read implements Source.
func (s *RawSource) Read(fn func([]byte)) error {
	s.fn = fn
	return s.r.ReadBatch(s.cb)
}

// Close implements Source.
func (s *RawSource) Close() error { return s.r.Close() }

// Stats returns the receiver's counters (kernel ring drops among them).
func (s *RawSource) Stats() raw.ReceiverStats { return s.r.Stats() }

// RawSink is the production Sink: raw's raw-socket sender (IP_HDRINCL, sendmmsg). The
// kernel routes each packet by the destination in its header, which is dsts[i] for
// every packet Classify forwards.
type RawSink struct {
	S *raw.Sender
}

// NewRawSink opens the sender in the current network namespace.
func NewRawSink() (*RawSink, error) {
	s, err := raw.NewSender()
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	return &RawSink{S: s}, nil
}

// Send implements Sink. raw.Sender skips packets the kernel refuses and goes on, so
// the count is right but the refused packets need not be the last ones.
func (k *RawSink) Send(pkts [][]byte, _ []netip.Addr) (int, error) { return k.S.Send(pkts) }

// Close closes the socket.
func (k *RawSink) Close() error { return k.S.Close() }
