// Package e2e holds mpath's end-to-end root tests: whole deployments in a lab built by
// package lab (client namespace, N relay namespaces running `mpath relay`, exit
// namespace), with the real `mpath client` and `mpath exit` binaries, real kernel peers
// (Apache, Go servers in the exit namespace, curl, ncat, Chromium when installed) and
// byte-exact (sha256) checks on every transfer.
//
//	curl/ncat/Go --SOCKS5|HTTP--> mpath client --IPIP--> relays 1..N --> mpath exit --TCP--> Apache/Go
//	(tunnel mode)                   (P-c)                  (P-ri)          (P-x)
//	curl/Go --SOCKS5--> mpath client --direct --IPIP--> relays (forward) --> kernel TCP server (P-x)
//
// The package owns nothing but its tests: everything lives in _test.go files, and this
// file only carries the package comment. The tests need root (namespaces, veth, tc,
// nftables, raw sockets) and skip cleanly otherwise; each builds its own lab with a unique
// prefix (labtest.New) and removes it, and every process it starts, when it ends.
package e2e
