package raw

// Receive path:
//
//	NIC/veth --> AF_PACKET tap (before netfilter) --> classic BPF: not outgoing, one of our
//	interfaces, the user's filter --> TPACKET_V3 ring (blocks retired when full or after
//	the block timeout, <= 1 ms) --> Go poller wakes ReadBatch --> fn(pkt, ifindex) for
//	every packet of every ready block --> block handed back to the kernel
//
// The socket is opened with protocol 0, so it receives nothing until bind; the filter and
// the ring are in place before bind sets the protocol to IPv4. No unfiltered packet can
// reach the ring, so there is nothing to drain. A socket bound to one protocol (not
// ETH_P_ALL) is not handed outgoing packets at all; the filter prefix and the packet-type
// check in drain keep it inbound-only should that ever change.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// ReceiverConfig configures a Receiver.
type ReceiverConfig struct {
	Ifaces []string // interface names; empty = all interfaces
	// Filter is a classic BPF program run on each packet from its IPv4 header (see
	// FilterTCPPortsOrIPIP); it returns the number of bytes to keep, 0 to drop. nil
	// accepts all IPv4.
	Filter []bpf.Instruction
	// BlockTimeout bounds how long a packet can wait in a partly filled ring block before
	// ReadBatch sees it. 0 means 1 ms; more than 1 ms is refused; the kernel's unit is
	// the millisecond, so 1 ms is also the least.
	BlockTimeout time.Duration
	// RingBytes is the size of the ring; 0 means 4 MiB (16 blocks of 256 KiB).
	RingBytes int
}

// ReceiverStats are a Receiver's counters since it was made.
type ReceiverStats struct {
	Packets, Bytes uint64 // handed to ReadBatch callers
	KernelDrops    uint64 // packets the kernel dropped because the ring was full
	Truncated      uint64 // packets larger than the ring's snap length (handed over cut)
	ChecksumFixed  uint64 // locally generated packets whose partial TCP checksum was completed
}

// Receiver reads inbound IPv4 packets from an AF_PACKET TPACKET_V3 ring. ReadBatch must
// not be called from more than one goroutine at a time; Close, Stats and SetReadDeadline
// may be called from any goroutine, also while ReadBatch blocks.
type Receiver struct {
	file      *os.File
	rc        syscall.RawConn
	fd        int
	ring      []byte
	blockSize int
	nblocks   int

	// readMu is held by ReadBatch for its whole run; Close takes it after closing the
	// socket (which wakes a blocked ReadBatch) so the ring is unmapped only when no
	// reader touches it. Fields below it are the reader's.
	readMu  sync.Mutex
	cur     int
	fn      func(pkt []byte, ifindex int)
	end     func()
	handled int
	readFn  func(fd uintptr) bool

	closed  atomic.Bool
	closeMu sync.Mutex // serialises Close

	packets, bytes, truncated, fixed atomic.Uint64
	statsMu                          sync.Mutex // guards drops and the PACKET_STATISTICS read
	drops                            uint64
}

const (
	defaultBlockSize = 256 << 10
	defaultRingBytes = 16 * defaultBlockSize
	frameSize        = 2048 // TPACKET_V3 ignores frames, but the kernel checks the geometry
	tpacket3HdrLen   = 48   // TPACKET_ALIGN(sizeof(struct tpacket3_hdr))
	ethPIP           = 0x0800
)

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// NewReceiver opens the ring, attaches the filter and binds to the interfaces.
func NewReceiver(cfg ReceiverConfig) (*Receiver, error) {
	tov := cfg.BlockTimeout
	if tov == 0 {
		tov = time.Millisecond
	}
	if tov > time.Millisecond {
		return nil, fmt.Errorf("raw: receiver: block timeout %v exceeds 1ms (it delays every RTT sample)", tov)
	}
	ringBytes := cfg.RingBytes
	if ringBytes == 0 {
		ringBytes = defaultRingBytes
	}
	blockSize := defaultBlockSize
	nblocks := max(ringBytes/blockSize, 2)

	var ifindexes []int
	for _, name := range cfg.Ifaces {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return nil, fmt.Errorf("raw: receiver: interface %q: %w", name, err)
		}
		ifindexes = append(ifindexes, ifi.Index)
	}
	filter := cfg.Filter
	if filter == nil {
		filter = []bpf.Instruction{bpf.RetConstant{Val: acceptLen}}
	}
	prog, err := bpf.Assemble(append(receiverPrefix(ifindexes), filter...))
	if err != nil {
		return nil, fmt.Errorf("raw: receiver: filter: %w", err)
	}

	// Protocol 0: no packets until bind.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("raw: receiver: socket: %w", err)
	}
	r := &Receiver{fd: fd, blockSize: blockSize, nblocks: nblocks}
	fail := func(op string, err error) (*Receiver, error) {
		if r.ring != nil {
			unix.Munmap(r.ring)
		}
		unix.Close(fd)
		return nil, fmt.Errorf("raw: receiver: %s: %w", op, err)
	}
	filt := make([]unix.SockFilter, len(prog))
	for i, ins := range prog {
		filt[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(filt)), Filter: &filt[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); err != nil {
		return fail("attach filter", err)
	}
	// Outgoing packets are dropped by the filter prefix as well; this saves the kernel
	// the clone (Linux >= 4.20, best effort).
	_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V3); err != nil {
		return fail("TPACKET_V3", err)
	}
	req := unix.TpacketReq3{
		Block_size:     uint32(blockSize),
		Block_nr:       uint32(nblocks),
		Frame_size:     frameSize,
		Frame_nr:       uint32(blockSize / frameSize * nblocks),
		Retire_blk_tov: uint32(tov / time.Millisecond),
	}
	if err := unix.SetsockoptTpacketReq3(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return fail("PACKET_RX_RING", err)
	}
	ring, err := unix.Mmap(fd, 0, blockSize*nblocks, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_LOCKED|unix.MAP_POPULATE)
	if err != nil {
		// MAP_LOCKED can fail under a small RLIMIT_MEMLOCK; the ring works without it.
		ring, err = unix.Mmap(fd, 0, blockSize*nblocks, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return fail("mmap ring", err)
		}
	}
	r.ring = ring
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(ethPIP), Ifindex: 0}); err != nil {
		return fail("bind", err)
	}
	r.file = os.NewFile(uintptr(fd), "af-packet")
	rc, err := r.file.SyscallConn()
	if err != nil {
		unix.Munmap(ring)
		r.file.Close()
		return nil, fmt.Errorf("raw: receiver: %w", err)
	}
	r.rc = rc
	r.readFn = r.doRead
	return r, nil
}

// block returns the header of ring block i.
func (r *Receiver) block(i int) *unix.TpacketHdrV1 {
	// struct tpacket_block_desc { version, offset_to_priv, hdr }
	return (*unix.TpacketHdrV1)(unsafe.Pointer(&r.ring[i*r.blockSize+8]))
}

func (r *Receiver) doRead(uintptr) bool { return r.drain() > 0 }

// drain hands every packet of every block the kernel has retired to r.fn, block by
// block, calls r.end after each non-empty block and returns the blocks to the kernel.
func (r *Receiver) drain() int {
	n := 0
	for range r.nblocks {
		bh := r.block(r.cur)
		if atomic.LoadUint32(&bh.Block_status)&unix.TP_STATUS_USER == 0 {
			break
		}
		base := r.cur * r.blockSize
		off := base + int(bh.Offset_to_first_pkt)
		npkts := int(bh.Num_pkts)
		var pkts, bytes uint64 // counted once per block: two atomic adds, not two per packet
		for i := 0; i < npkts; i++ {
			h := (*unix.Tpacket3Hdr)(unsafe.Pointer(&r.ring[off]))
			sll := (*unix.RawSockaddrLinklayer)(unsafe.Pointer(&r.ring[off+tpacket3HdrLen]))
			start := off + int(h.Net)
			pkt := r.ring[start : start+int(h.Snaplen) : start+int(h.Snaplen)]
			if h.Snaplen < h.Len {
				r.truncated.Add(1)
			}
			if h.Status&unix.TP_STATUS_CSUMNOTREADY != 0 && completeTCPChecksum(pkt) {
				r.fixed.Add(1)
			}
			if sll.Pkttype != packetOutgoing {
				pkts++
				bytes += uint64(len(pkt))
				r.fn(pkt, int(sll.Ifindex))
				n++
			}
			off += int(h.Next_offset)
		}
		r.packets.Add(pkts)
		r.bytes.Add(bytes)
		if npkts > 0 && r.end != nil {
			r.end()
		}
		atomic.StoreUint32(&bh.Block_status, unix.TP_STATUS_KERNEL)
		r.cur = (r.cur + 1) % r.nblocks
	}
	return n
}

// ReadBatch blocks until at least one packet is there, then calls fn for each packet of
// the batch (every ring block the kernel has handed over) and returns. pkt starts at the
// IPv4 header and is valid only during fn; fn may modify it. ifindex is the interface
// the packet came in on; fn must not call Close. ReadBatch returns net.ErrClosed after
// Close, and an error matching os.ErrDeadlineExceeded when the read deadline passes.
func (r *Receiver) ReadBatch(fn func(pkt []byte, ifindex int)) error {
	return r.readBatch(fn, nil)
}

// readBatch is ReadBatch with end called after the packets of each ring block, while
// they are still valid: the Link uses it to deliver decoded segments without copying.
func (r *Receiver) readBatch(fn func(pkt []byte, ifindex int), end func()) error {
	r.readMu.Lock()
	defer r.readMu.Unlock()
	if r.closed.Load() {
		return net.ErrClosed
	}
	r.fn, r.end = fn, end
	defer func() { r.fn, r.end = nil, nil }()
	err := r.rc.Read(r.readFn)
	switch {
	case err == nil:
		return nil
	case r.closed.Load() || errors.Is(err, os.ErrClosed):
		return net.ErrClosed
	default:
		return fmt.Errorf("raw: receive: %w", err)
	}
}

// SetReadDeadline makes a blocked or later ReadBatch return an error matching
// os.ErrDeadlineExceeded at t; the zero time clears it.
func (r *Receiver) SetReadDeadline(t time.Time) error { return r.file.SetReadDeadline(t) }

// Stats returns the counters; it also collects the kernel's drop count.
func (r *Receiver) Stats() ReceiverStats {
	r.statsMu.Lock()
	if !r.closed.Load() {
		r.collectDrops()
	}
	drops := r.drops
	r.statsMu.Unlock()
	return ReceiverStats{
		Packets: r.packets.Load(), Bytes: r.bytes.Load(), KernelDrops: drops,
		Truncated: r.truncated.Load(), ChecksumFixed: r.fixed.Load(),
	}
}

// collectDrops adds the kernel's drop counter (which reading resets) to r.drops.
// Callers hold statsMu.
func (r *Receiver) collectDrops() {
	var st *unix.TpacketStatsV3
	err := r.rc.Control(func(fd uintptr) {
		var e error
		st, e = unix.GetsockoptTpacketStatsV3(int(fd), unix.SOL_PACKET, unix.PACKET_STATISTICS)
		if e != nil {
			st = nil
		}
	})
	if err == nil && st != nil {
		r.drops += uint64(st.Drops)
	}
}

// Close stops the receiver: a blocked ReadBatch returns net.ErrClosed, the socket is
// closed and the ring unmapped. Idempotent.
func (r *Receiver) Close() error {
	r.closeMu.Lock()
	defer r.closeMu.Unlock()
	if r.closed.Load() {
		return nil
	}
	r.statsMu.Lock()
	r.collectDrops()
	r.closed.Store(true)
	r.statsMu.Unlock()
	err := r.file.Close() // wakes a ReadBatch blocked in the poller
	r.readMu.Lock()       // waits for it to leave the ring
	defer r.readMu.Unlock()
	if merr := unix.Munmap(r.ring); err == nil {
		err = merr
	}
	r.ring = nil
	if err != nil {
		return fmt.Errorf("raw: receiver: close: %w", err)
	}
	return nil
}

// completeTCPChecksum finishes the TCP checksum of a packet the kernel marked
// CHECKSUM_PARTIAL (sent by a local kernel socket over veth/loopback with checksum
// offload: the field holds only the pseudo-header sum). It handles IPv4/TCP and
// IPv4/IPIP/IPv4/TCP and reports whether it changed the packet. For IPv4/UDP (a local
// UDP socket's encapsulation: the inner packet's checksums are whole) it sets the UDP
// checksum to 0, "none", as fou sends it: the kernel vouches for a local packet.
func completeTCPChecksum(pkt []byte) bool {
	ip := pkt
	for range 2 {
		if len(ip) < ipv4HeaderLen || ip[0]>>4 != 4 {
			return false
		}
		hl := int(ip[0]&0x0f) * 4
		total := int(ip[2])<<8 | int(ip[3])
		if hl < ipv4HeaderLen || total < hl || total > len(ip) {
			return false
		}
		switch ip[9] {
		case protoUDP:
			if total-hl < udpHeaderLen {
				return false
			}
			ip[hl+6], ip[hl+7] = 0, 0
			return true
		case protoIPIP:
			ip = ip[hl:total]
			continue
		case protoTCP:
			seg := ip[hl:total]
			if len(seg) < tcpHeaderLen {
				return false
			}
			seg[16], seg[17] = 0, 0
			c := checksum(seg, pseudoSum(ip[12:16], ip[16:20], protoTCP, len(seg)))
			seg[16], seg[17] = byte(c>>8), byte(c)
			return true
		}
		return false
	}
	return false
}
