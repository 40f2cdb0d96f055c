package raw

// UDP send path (--encap udp):
//
//	Send(pkts: inner IPv4+TCP header, payload, destination)
//	   --> messages: runs of equal-size packets to one destination become one UDP GSO
//	       datagram (UDP_SEGMENT cmsg, gso_size = the packet size, the last may be
//	       shorter); each packet is two iovecs, its headers and its payload, so the
//	       payload is never copied into a contiguous packet
//	   --> sendmmsg(2) on a UDP socket bound to the path's local address and the
//	       encapsulation port (and device): the kernel writes the outer IPv4 and UDP
//	       headers, routes once per datagram and cuts a GSO datagram into wire packets
//	       as late as it can (in the NIC, or in software at the device)
//
// A UDP socket's datagrams are exactly the fou packets the raw path builds (outer IPv4
// with DF, UDP from the encapsulation port to the relay's, the inner packet), with a real
// UDP checksum instead of 0 (GSO needs one). Where the kernel has no UDP GSO (before
// Linux 4.18) or refuses it for a datagram (EIO/EINVAL: e.g. an xfrm route), the sender
// falls back, for good, to one datagram per packet: detected once.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

const (
	udpMaxSegments = 64                                    // UDP_MAX_SEGMENTS of Linux < 6.9
	udpMaxDatagram = 0xffff - ipv4HeaderLen - udpHeaderLen // payload of one (GSO) datagram
)

// udpPacket is one inner packet for udpSender.Send: hdr and payload are sent back to
// back as the UDP payload to dst.
type udpPacket struct {
	hdr, payload []byte
	dst          netip.AddrPort
}

func (p *udpPacket) size() int { return len(p.hdr) + len(p.payload) }

// udpSender sends inner packets in UDP from one bound socket. Safe for concurrent use:
// each Send takes its own batch from a pool.
type udpSender struct {
	file *os.File
	rc   syscall.RawConn
	gso  atomic.Bool // the kernel takes UDP_SEGMENT (detected at open, cleared on refusal)
	pool sync.Pool   // *udpBatch

	sent, bytes, dropped, tooBig, datagrams atomic.Uint64
	closed                                  atomic.Bool
}

// newUDPSender opens a UDP socket bound to local (and to dev unless ""). The socket
// takes nothing in: a filter drops every datagram the kernel would queue to it (the
// Receiver reads the encapsulation port from the ring).
func newUDPSender(dev string, local netip.AddrPort) (*udpSender, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("raw: udp sender: socket: %w", err)
	}
	fail := func(op string, err error) (*udpSender, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("raw: udp sender: %s: %w", op, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, PacketMark); err != nil {
		return fail("SO_MARK", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20)
	// DF on every datagram, as the raw path sets it: too big is EMSGSIZE, never fragments.
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO); err != nil {
		return fail("IP_MTU_DISCOVER", err)
	}
	prog, err := bpf.Assemble([]bpf.Instruction{bpf.RetConstant{Val: 0}})
	if err != nil {
		return fail("filter", err)
	}
	filt := []unix.SockFilter{{Code: prog[0].Op, K: prog[0].K}}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: 1, Filter: &filt[0]}); err != nil {
		return fail("attach filter", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 0)
	if dev != "" {
		if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, dev); err != nil {
			return fail("bind to "+dev, err)
		}
	}
	// Paths on different devices may share the local address and port.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: local.Addr().As4(), Port: int(local.Port())}); err != nil {
		return fail("bind "+local.String(), err)
	}
	f := os.NewFile(uintptr(fd), "udp-encap")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("raw: udp sender: %w", err)
	}
	s := &udpSender{file: f, rc: rc}
	// Detected once: a kernel without UDP GSO does not know the option.
	s.gso.Store(unix.SetsockoptInt(fd, unix.SOL_UDP, unix.UDP_SEGMENT, 0) == nil)
	s.pool.New = func() any {
		b := &udpBatch{}
		b.write = b.doWrite
		return b
	}
	return s, nil
}

// udpBatch is the per-call state of one Send: kernel structures for up to sendBatchMax
// packets (at most one message each) and the RawConn callback.
type udpBatch struct {
	hdrs  [sendBatchMax]mmsghdr
	addrs [sendBatchMax]unix.RawSockaddrInet4
	cmsgs [sendBatchMax][24]byte // one UDP_SEGMENT cmsg each (CmsgSpace(2) on 64-bit)
	iovs  [2 * sendBatchMax]unix.Iovec
	npkts [sendBatchMax]int // packets in each message
	nbyte [sendBatchMax]int // UDP payload bytes of each message
	n     int               // messages set up
	off   int               // first message not yet sent
	errno syscall.Errno
	sent  int
	// skipErr is the first refusal sendBuilt skipped.
	skipErr error
	write   func(fd uintptr) bool
}

func (b *udpBatch) doWrite(fd uintptr) bool {
	r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[b.off])), uintptr(b.n-b.off), 0, 0, 0)
	if e == unix.EAGAIN {
		return false
	}
	if e == unix.EINTR {
		return b.doWrite(fd)
	}
	b.errno, b.sent = e, int(r)
	return true
}

// build lays out messages for the first packets of pkts (at most sendBatchMax) and
// returns how many packets they hold. With gso, a message takes a run of packets of
// one size to one destination (the last of the run may be shorter), up to
// udpMaxSegments packets and udpMaxDatagram bytes.
func (b *udpBatch) build(pkts []udpPacket, gso bool) int {
	pkts = pkts[:min(len(pkts), sendBatchMax)]
	m, iov, i := 0, 0, 0
	for i < len(pkts) {
		first := &pkts[i]
		size := first.size()
		h := &b.hdrs[m]
		*h = mmsghdr{}
		a := &b.addrs[m]
		a.Family = unix.AF_INET
		a.Addr = first.dst.Addr().As4()
		a.Port = htons(first.dst.Port())
		h.Msg.Name = (*byte)(unsafe.Pointer(a))
		h.Msg.Namelen = unix.SizeofSockaddrInet4
		h.Msg.Iov = &b.iovs[iov]
		start := iov
		k, total := 0, 0
		for i < len(pkts) {
			p := &pkts[i]
			ps := p.size()
			if k > 0 && (!gso || p.dst != first.dst || ps > size || k == udpMaxSegments || total+ps > udpMaxDatagram) {
				break
			}
			iov = b.addIov(iov, p.hdr)
			iov = b.addIov(iov, p.payload)
			k++
			total += ps
			i++
			if ps < size {
				break // a shorter packet ends a GSO run
			}
		}
		h.Msg.SetIovlen(iov - start)
		if k > 1 {
			c := &b.cmsgs[m]
			ch := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
			ch.Level, ch.Type = unix.SOL_UDP, unix.UDP_SEGMENT
			ch.SetLen(unix.CmsgLen(2))
			*(*uint16)(unsafe.Pointer(&c[unix.CmsgLen(0)])) = uint16(size)
			h.Msg.Control = &c[0]
			h.Msg.SetControllen(unix.CmsgSpace(2))
		}
		b.npkts[m], b.nbyte[m] = k, total
		m++
	}
	b.n, b.off = m, 0
	return i
}

func (b *udpBatch) addIov(i int, p []byte) int {
	if len(p) == 0 {
		return i
	}
	b.iovs[i].Base = &p[0]
	b.iovs[i].SetLen(len(p))
	return i + 1
}

// clear drops the batch's references to the caller's buffers.
func (b *udpBatch) clear() {
	clear(b.iovs[:])
	for i := range b.hdrs[:b.n] {
		b.hdrs[i].Msg.Iov, b.hdrs[i].Msg.Control = nil, nil
	}
}

var errGSORefused = errors.New("raw: udp send: GSO refused")

// Send sends pkts and returns how many packets the kernel took. As with Sender.Send,
// packets the kernel refuses (ENOBUFS, EPERM, EMSGSIZE, ...) are counted and skipped,
// the error for them returned after the rest was tried; Send does not keep pkts.
func (s *udpSender) Send(pkts []udpPacket) (int, error) {
	if s.closed.Load() {
		return 0, net.ErrClosed
	}
	b := s.pool.Get().(*udpBatch)
	defer s.pool.Put(b)
	defer b.clear()
	total := 0
	var firstErr error
	for len(pkts) > 0 {
		gso := s.gso.Load()
		n := b.build(pkts, gso)
		done, err := s.sendBuilt(b, gso)
		total += done
		switch {
		case errors.Is(err, errGSORefused):
			// The datagram at b.off was refused as GSO: no GSO from now on; what is
			// left of this batch is built again without it.
			s.gso.Store(false)
			skip := 0
			for i := range b.off {
				skip += b.npkts[i]
			}
			pkts = pkts[skip:]
			continue
		case err != nil && !errors.Is(err, errSkipped):
			return total, err
		case err != nil && firstErr == nil:
			firstErr = b.skipErr
		}
		pkts = pkts[n:]
	}
	return total, firstErr
}

var errSkipped = errors.New("skipped")

// sendBuilt sends b's messages and returns how many packets the kernel took. It returns
// errGSORefused (b.off at the refused message) when the kernel refuses a GSO datagram
// as such, errSkipped when it refused some messages that were skipped (the first
// refusal in b.skipErr), or a fatal error.
func (s *udpSender) sendBuilt(b *udpBatch, gso bool) (int, error) {
	total := 0
	var skipped error
	b.skipErr = nil
	for b.off < b.n {
		b.errno, b.sent = 0, 0
		if err := s.rc.Write(b.write); err != nil {
			return total, fmt.Errorf("raw: udp send: %w", err)
		}
		switch {
		case b.errno == 0:
			var pk, by uint64
			for i := b.off; i < b.off+b.sent; i++ {
				pk += uint64(b.npkts[i])
				by += uint64(b.nbyte[i] + b.npkts[i]*(ipv4HeaderLen+udpHeaderLen))
			}
			s.sent.Add(pk)
			s.bytes.Add(by)
			s.datagrams.Add(uint64(b.sent))
			total += int(pk)
			b.off += b.sent
		case gso && b.npkts[b.off] > 1 && (b.errno == unix.EIO || b.errno == unix.EINVAL || b.errno == unix.ENOPROTOOPT):
			return total, errGSORefused
		case b.errno == unix.ENOBUFS || b.errno == unix.EPERM || b.errno == unix.EMSGSIZE ||
			b.errno == unix.ENETUNREACH || b.errno == unix.EHOSTUNREACH || b.errno == unix.EINVAL ||
			b.errno == unix.ECONNREFUSED:
			s.dropped.Add(uint64(b.npkts[b.off]))
			if b.errno == unix.EMSGSIZE {
				s.tooBig.Add(uint64(b.npkts[b.off]))
			}
			if skipped == nil {
				skipped = fmt.Errorf("raw: udp send: %w", b.errno)
				b.skipErr = skipped
			}
			b.off++
		default:
			return total, fmt.Errorf("raw: udp send: %w", b.errno)
		}
	}
	if skipped != nil {
		return total, errSkipped
	}
	return total, nil
}

// Close closes the socket; later Sends return net.ErrClosed. Idempotent.
func (s *udpSender) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	return s.file.Close()
}
