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
//	              PrepareRequest(key, target, now, rand)  (<= 319 bytes once sealed)
//	                                        |
//	              FlowDialer(ctx, first)  (the engine picks the local port, then puts
//	                                        |  first(flow addrs) = Seal(flow) in the SYN)
//	                                        v
//	              engine listener: Exit.VerifySYN (MAC over request + flow addrs, ±30 s,
//	              not before the exit started, fresh nonce) before any state; else drop
//	              Exit: ReadRequest (exactly one request) -> Verifier.Verify (same checks;
//	              claims the admitted nonce) -> allow/deny every resolved address
//	              -> kernel TCP dial -> one status byte -> relay both ways with half-close
//
// A refusal at the exit travels back as one status byte; the TunnelDialer turns it into a
// *ReplyError carrying a SOCKS5 reply code, which the fronts answer with (SOCKS reply
// code, or an HTTP 403/502/504).
package socks
