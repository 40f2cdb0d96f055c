package relay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// PacketSocket is a minimal Source: an AF_PACKET SOCK_DGRAM socket on all interfaces
// that sees inbound IPv4 only (PACKET_IGNORE_OUTGOING), with a kernel BPF filter that
// keeps IPIP only unless plain is set. It reads one packet per system call; raw's
// TPACKET_V3 receiver is the faster choice where it is available. Read and Close may be
// called from different goroutines.
type PacketSocket struct {
	fd     int
	closed atomic.Bool
	buf    []byte
}

// OpenPacketSocket opens the capture socket in the current network namespace.
func OpenPacketSocket(plain bool) (*PacketSocket, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_IP)))
	if err != nil {
		return nil, fmt.Errorf("relay: packet socket: %w", err)
	}
	fail := func(op string, err error) (*PacketSocket, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("relay: packet socket: %s: %w", op, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		return fail("PACKET_IGNORE_OUTGOING", err)
	}
	if !plain {
		// SOCK_DGRAM: the filter sees the packet from the IP header on; byte 9 is the protocol.
		prog, err := bpf.Assemble([]bpf.Instruction{
			bpf.LoadAbsolute{Off: 9, Size: 1},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: protoIPIP, SkipTrue: 1},
			bpf.RetConstant{Val: 0},
			bpf.RetConstant{Val: 0xffff},
		})
		if err != nil {
			return fail("bpf", err)
		}
		filter := make([]unix.SockFilter, len(prog))
		for i, ins := range prog {
			filter[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
		}
		if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}); err != nil {
			return fail("attach filter", err)
		}
	}
	tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fail("SO_RCVTIMEO", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	return &PacketSocket{fd: fd, buf: make([]byte, 65536)}, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Read implements Source: it waits for a packet and then drains what is queued.
func (s *PacketSocket) Read(fn func([]byte)) error {
	flags := 0
	for i := 0; i < 64; i++ {
		if s.closed.Load() {
			return fmt.Errorf("relay: packet socket: %w", net.ErrClosed)
		}
		n, _, err := unix.Recvfrom(s.fd, s.buf, flags)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				if flags != 0 {
					return nil // drained
				}
				continue
			}
			return fmt.Errorf("relay: packet socket: recv: %w", err)
		}
		fn(s.buf[:n])
		flags = unix.MSG_DONTWAIT
	}
	return nil
}

// Close implements Source; a blocked Read returns within its 100 ms receive timeout.
func (s *PacketSocket) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	// Let Read notice before the descriptor number could be reused.
	time.AfterFunc(time.Second, func() { unix.Close(s.fd) })
	return nil
}

// RawSocket is a minimal Sink: a raw IPv4 socket (IPPROTO_RAW, so IP_HDRINCL) that sends
// one packet per system call. Safe for use by one goroutine at a time.
type RawSocket struct {
	fd int
	sa unix.SockaddrInet4
}

// OpenRawSocket opens the send socket in the current network namespace.
func OpenRawSocket() (*RawSocket, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return nil, fmt.Errorf("relay: raw socket: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 8<<20)
	return &RawSocket{fd: fd}, nil
}

// Send implements Sink.
func (s *RawSocket) Send(pkts [][]byte, dsts []netip.Addr) (int, error) {
	for i, p := range pkts {
		s.sa.Addr = dsts[i].As4()
		if err := unix.Sendto(s.fd, p, 0, &s.sa); err != nil {
			return i, fmt.Errorf("relay: raw socket: send to %v: %w", dsts[i], err)
		}
	}
	return len(pkts), nil
}

// Close closes the socket.
func (s *RawSocket) Close() error { return unix.Close(s.fd) }
