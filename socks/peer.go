package socks

// Who a front's client is, for the per-client connection limit and the authentication
// throttle:
//
//	remote address --> loopback or one of this host's addresses?
//	                     yes: the local user owning the peer socket (sock_diag, Linux)
//	                     no:  the address (IPv6: its /64, what one host usually holds)
//
// All local users share 127.0.0.1, so on a front bound to loopback the address alone
// would put every user of the host under one budget; the owner's uid tells them apart.

import (
	"net"
	"net/netip"
	"strconv"
)

// clientKey identifies a front's client. uid is the owner of the peer socket for local
// peers, -1 when unknown or remote.
type clientKey struct {
	addr netip.Addr
	uid  int64
}

func (k clientKey) String() string {
	if k.uid >= 0 {
		return k.addr.String() + " uid " + strconv.FormatInt(k.uid, 10)
	}
	return k.addr.String()
}

// clientOf returns c's client key. peerUID finds the owner of a local peer's socket.
func clientOf(c net.Conn, peerUID func(local, remote netip.AddrPort) (uint32, bool)) clientKey {
	ra, ok1 := addrPortOf(c.RemoteAddr())
	la, ok2 := addrPortOf(c.LocalAddr())
	if !ok1 {
		return clientKey{uid: -1}
	}
	k := clientKey{addr: ra.Addr(), uid: -1}
	if ok2 && (ra.Addr().IsLoopback() || ra.Addr() == la.Addr()) {
		if uid, ok := peerUID(la, ra); ok {
			k.uid = int64(uid)
		}
		return k
	}
	if k.addr.Is6() {
		k.addr = netip.PrefixFrom(k.addr, 64).Masked().Addr()
	}
	return k
}

func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	ta, ok := a.(*net.TCPAddr)
	if !ok || ta == nil {
		return netip.AddrPort{}, false
	}
	ap := ta.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port()), ap.Addr().IsValid()
}
