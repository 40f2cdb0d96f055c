// Package relay owns mpath's userspace IPIP relay: the packet classification (allowlist,
// drop reasons, forward or re-encapsulate), the seeded impairment scheduler (rate, delay,
// jitter, loss, duplication, reordering) and the relay loop that moves packets from an
// AF_PACKET receiver through the scheduler to a raw-socket sender, with counters.
//
// It does not own packet I/O (package raw does: capture, send, the nftables guard) nor
// flag parsing (cmd/mpath/relay.go). Classify and Impairer are pure: no I/O, time is
// passed in.
package relay
