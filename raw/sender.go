package raw

// Send path:
//
//	Send(pkts) --> pooled batch (mmsghdr + iovec + sockaddr_in per packet, preallocated)
//	           --> sendmmsg(2) on a non-blocking raw IPv4 socket (IPPROTO_RAW: IP_HDRINCL)
//	           --> kernel routes each packet by its destination (or out of the bound device)
//
// EAGAIN waits for the socket to drain through Go's poller; ENOBUFS and EPERM drop the
// packet at the head of the batch (counted) and go on, so a full qdisc or a firewall never
// makes Send spin.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// PacketMark is the socket mark (SO_MARK) on every packet a Sender sends. The Guard's
// rule that drops outbound RSTs from engine ports exempts packets with this mark, so the
// engine's own RSTs leave while the kernel's are stopped.
const PacketMark = 0x6d706174 // "mpat"

const sendBatchMax = 64

// Sender sends whole IPv4 packets on a raw socket with IP_HDRINCL, in sendmmsg batches.
// Safe for concurrent use: each Send takes its own batch from a pool.
type Sender struct {
	file *os.File
	rc   syscall.RawConn
	pool sync.Pool // *sendBatch

	sent, bytes, dropped atomic.Uint64
	tooBig               atomic.Uint64
	closed               atomic.Bool
}

// SenderStats are a Sender's counters since it was made.
type SenderStats struct {
	Packets, Bytes uint64 // handed to the kernel
	Dropped        uint64 // refused by the kernel (ENOBUFS, EPERM, EMSGSIZE, ...): counted, skipped
	TooBig         uint64 // of those, refused with EMSGSIZE (larger than the route's MTU)
}

// NewSender opens a raw IPv4 socket; the kernel routes each packet by its destination.
func NewSender() (*Sender, error) { return newSender("") }

func newSender(dev string) (*Sender, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return nil, fmt.Errorf("raw: sender: socket: %w", err)
	}
	fail := func(op string, err error) (*Sender, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("raw: sender: %s: %w", op, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, PacketMark); err != nil {
		return fail("SO_MARK", err)
	}
	// A deep send buffer absorbs bursts of full-size packets across several paths.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20)
	if dev != "" {
		if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, dev); err != nil {
			return fail("bind to "+dev, err)
		}
	}
	f := os.NewFile(uintptr(fd), "raw-ipv4")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("raw: sender: %w", err)
	}
	s := &Sender{file: f, rc: rc}
	s.pool.New = func() any {
		b := &sendBatch{}
		b.write = b.doWrite
		for i := range b.hdrs {
			b.hdrs[i].Msg.Name = (*byte)(unsafe.Pointer(&b.addrs[i]))
			b.hdrs[i].Msg.Namelen = unix.SizeofSockaddrInet4
			b.hdrs[i].Msg.Iov = &b.iovs[i]
			b.hdrs[i].Msg.SetIovlen(1)
			b.addrs[i].Family = unix.AF_INET
		}
		return b
	}
	return s, nil
}

// mmsghdr mirrors struct mmsghdr (x/sys has the type only on some architectures).
type mmsghdr struct {
	Msg unix.Msghdr
	Len uint32
	_   [4]byte
}

// sendBatch is the per-call state of one Send: preallocated kernel structures and the
// RawConn callback (a method value made once, so calling rc.Write does not allocate).
type sendBatch struct {
	hdrs  [sendBatchMax]mmsghdr
	iovs  [sendBatchMax]unix.Iovec
	addrs [sendBatchMax]unix.RawSockaddrInet4
	n     int // packets set up
	off   int // first packet not yet sent
	errno syscall.Errno
	sent  int // result of the last sendmmsg
	write func(fd uintptr) bool
}

func (b *sendBatch) doWrite(fd uintptr) bool {
	r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.hdrs[b.off])), uintptr(b.n-b.off), 0, 0, 0)
	if e == unix.EAGAIN {
		return false // wait for room in the socket buffer
	}
	if e == unix.EINTR {
		return b.doWrite(fd)
	}
	b.errno, b.sent = e, int(r)
	return true
}

var errShortPacket = errors.New("raw: send: packet shorter than an IPv4 header")

// Send sends pkts, each a whole IPv4 packet with its header filled in (the kernel fills
// in a zero ID and the header checksum). It returns how many packets the kernel took.
// Packets the kernel refuses (ENOBUFS from a full queue, EPERM from a firewall, EMSGSIZE)
// are counted in Stats and skipped; the error for them is returned after the rest of
// pkts has been tried. Send does not keep pkts. Safe for concurrent use.
func (s *Sender) Send(pkts [][]byte) (int, error) {
	if s.closed.Load() {
		return 0, net.ErrClosed
	}
	b := s.pool.Get().(*sendBatch)
	defer s.pool.Put(b)
	total := 0
	var firstErr error
	for len(pkts) > 0 {
		n := min(len(pkts), sendBatchMax)
		for i, p := range pkts[:n] {
			if len(p) < ipv4HeaderLen {
				return total, errShortPacket
			}
			b.iovs[i].Base = &p[0]
			b.iovs[i].SetLen(len(p))
			copy(b.addrs[i].Addr[:], p[16:20])
		}
		b.n, b.off = n, 0
		for b.off < b.n {
			b.errno, b.sent = 0, 0
			if err := s.rc.Write(b.write); err != nil {
				s.clearIovs(b)
				return total, fmt.Errorf("raw: send: %w", err)
			}
			switch {
			case b.errno == 0:
				var bytes uint64
				for i := b.off; i < b.off+b.sent; i++ {
					bytes += uint64(b.iovs[i].Len)
				}
				s.bytes.Add(bytes)
				s.sent.Add(uint64(b.sent))
				total += b.sent
				b.off += b.sent
			case b.errno == unix.ENOBUFS || b.errno == unix.EPERM || b.errno == unix.EMSGSIZE ||
				b.errno == unix.ENETUNREACH || b.errno == unix.EHOSTUNREACH || b.errno == unix.EINVAL:
				// The packet at b.off was refused; skip it and send the rest.
				s.dropped.Add(1)
				if b.errno == unix.EMSGSIZE {
					s.tooBig.Add(1)
				}
				if firstErr == nil {
					firstErr = fmt.Errorf("raw: send: %w", b.errno)
				}
				b.off++
			default:
				s.clearIovs(b)
				return total, fmt.Errorf("raw: send: %w", b.errno)
			}
		}
		pkts = pkts[n:]
	}
	s.clearIovs(b)
	return total, firstErr
}

// clearIovs drops the batch's references to the caller's packets before it goes back to
// the pool.
func (s *Sender) clearIovs(b *sendBatch) {
	for i := 0; i < b.n; i++ {
		b.iovs[i].Base = nil
	}
}

// Stats returns the counters. Safe for concurrent use.
func (s *Sender) Stats() SenderStats {
	return SenderStats{Packets: s.sent.Load(), Bytes: s.bytes.Load(), Dropped: s.dropped.Load(), TooBig: s.tooBig.Load()}
}

// Close closes the socket; later Sends return net.ErrClosed. Idempotent.
func (s *Sender) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	return s.file.Close()
}
