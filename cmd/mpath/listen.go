package main

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// checkDebugListen refuses a non-loopback listen address for a debugging endpoint
// (--metrics, --pprof) unless public is set: metrics name paths, relays and traffic
// volumes, and pprof can be made to spend CPU and dump memory.
func checkDebugListen(flagName, addr string, public bool) error {
	if addr == "" || public {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--%s %q: %w", flagName, addr, err)
	}
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.Unmap().IsLoopback() {
		return nil
	}
	return fmt.Errorf("--%s %q is not a loopback address: anyone who reaches it can read it; use 127.0.0.1:PORT, or add --metrics-public to serve it there on purpose", flagName, addr)
}
