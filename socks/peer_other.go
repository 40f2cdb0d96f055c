//go:build !linux

package socks

import "net/netip"

func localPeerUID(local, remote netip.AddrPort) (uint32, bool) { return 0, false }
