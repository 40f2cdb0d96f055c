// Package bench owns mpath's load generator: an apache-bench-style HTTP/1.1 client that
// runs N requests (or runs for a time) with C concurrent workers, directly or through a
// SOCKS5 or HTTP proxy, and reports what ab reports (requests, failures, bytes, time,
// rate, latency percentiles) plus the time to first byte and an optional sha256 check of
// every body.
//
// Run is the library entry point; `mpath bench URL` (cmd/mpath/bench.go) only parses flags
// into a Config, wires a Progress bar and prints the Result as text (WriteText, laid out
// like ab's report) or as one JSON object (Result implements json.Marshaler). A sweep
// driver calls Run the same way, once per scenario.
//
// One request, as Run measures it:
//
//	start ──GetConn──> got conn ──write──> written ──> first byte ──> body read to EOF
//	      \_ Connect _/          (0 when a kept-alive conn was reused)
//	                              \_________ Waiting (ab's) ______/
//	      \______________ TTFB (time to first byte) _____________/
//	      \__________________________ Total ____________________________________/
//
// Without KeepAlive every request opens its own connection (like plain ab, and like the
// thesis's measurements); with it each worker keeps one connection alive (like ab -k).
//
// It does not own the servers it loads, the proxy it goes through, or the lab sweeps'
// scenarios and tables; benchtest (beside it) starts Apache for tests.
package bench
