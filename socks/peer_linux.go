package socks

import (
	"encoding/binary"
	"net/netip"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// localPeerUID asks the kernel (sock_diag, one exact lookup) who owns the TCP socket at
// remote that is connected to local: the local user on the other end of a loopback
// connection. It needs no privilege.
func localPeerUID(local, remote netip.AddrPort) (uint32, bool) {
	conn, err := netlink.Dial(unix.NETLINK_INET_DIAG, nil)
	if err != nil {
		return 0, false
	}
	defer conn.Close()
	// struct inet_diag_req_v2 with the peer socket's own view: src = remote, dst = local.
	req := make([]byte, 56)
	family := byte(unix.AF_INET)
	if remote.Addr().Is6() {
		family = unix.AF_INET6
	}
	req[0] = family
	req[1] = unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(req[4:8], ^uint32(0)) // all states
	binary.BigEndian.PutUint16(req[8:10], remote.Port())
	binary.BigEndian.PutUint16(req[10:12], local.Port())
	putAddr(req[12:28], remote.Addr())
	putAddr(req[28:44], local.Addr())
	binary.NativeEndian.PutUint32(req[48:52], ^uint32(0)) // INET_DIAG_NOCOOKIE
	binary.NativeEndian.PutUint32(req[52:56], ^uint32(0))
	msgs, err := conn.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.SOCK_DIAG_BY_FAMILY), Flags: netlink.Request},
		Data:   req,
	})
	if err != nil || len(msgs) != 1 || len(msgs[0].Data) < 72 {
		return 0, false
	}
	// struct inet_diag_msg: 4 bytes, the 48-byte id, expires, rqueue, wqueue, uid, inode.
	return binary.NativeEndian.Uint32(msgs[0].Data[64:68]), true
}

func putAddr(b []byte, a netip.Addr) {
	if a.Is4() {
		v := a.As4()
		copy(b, v[:])
		return
	}
	v := a.As16()
	copy(b, v[:])
}
