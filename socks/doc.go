// Package socks owns the proxy fronts and the exit side of mpath's tunnel: the SOCKS5
// front (RFC 1928 CONNECT, RFC 1929 username/password), the HTTP proxy front (CONNECT and
// absolute-form requests), the exit protocol that authenticates each new flow
// (EncodeRequest, Verifier), the TunnelDialer that speaks it on the client side, the Exit
// server that dials the real targets, and the byte relay with half-close used by all of
// them.
//
// It does not own the transport: everything here works over plain net.Conn and
// net.Listener. The tcp engine (or, in tests, the kernel's TCP on loopback) provides the
// flows; cmd/mpath wires the two together. It does not own flag parsing either.
//
// The pieces fit together like this (tunnel mode):
//
//	app --SOCKS5--> SOCKSServer --.
//	                              +--> Dialer.DialTarget(ctx, "host:port")
//	app --HTTP----> HTTPServer  --'         |
//	                                        v  TunnelDialer
//	              EncodeRequest(key, target, now, rand)  (authenticated, <= 319 bytes)
//	                                        |
//	              FlowDialer(ctx, first)  (the engine puts `first` in the SYN)
//	                                        |
//	                                        v
//	              Exit: ReadRequest (exactly one request) -> Verifier.Verify (MAC, ±30 s,
//	              replay) -> allow/deny every resolved address -> kernel TCP dial
//	              -> one status byte -> relay both ways with half-close
//
// A refusal at the exit travels back as one status byte; the TunnelDialer turns it into a
// *ReplyError carrying a SOCKS5 reply code, which the fronts answer with (SOCKS reply
// code, or an HTTP 403/502/504).
package socks
