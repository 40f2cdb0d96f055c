// Package benchlab owns `mpath bench --lab`: the thesis's experiments reproduced in a
// one-machine network-namespace lab, beside kernel MPTCP over the same paths, with
// tables, charts and a report.
//
// A scenario (rates, weights, firstvar, buffer, rtt, loss, proxy, transport) is a set of
// thesis-shaped tables; a table is rows x columns of cells; a cell is one link setup
// (number of paths, per-path rate limits, relay delay and loss) measured with every
// system the table compares: mpath (client, relays, exit, Apache), kernel MPTCP, kernel
// TCP over one path. Run builds one lab per topology and reuses it across cells (rates
// change in place), restarts the mpath nodes only when their configuration changes,
// checks every transfer byte for byte, and writes report.md, results.json and PNG charts
// (gonum/plot) after every table. Everything it starts is torn down on every exit path,
// including a cancelled context (Ctrl-C).
//
//	Options ─► Tables (scenarios.go) ─► runner (runner.go) ─► transfer (transfer.go)
//	                                         │
//	                                         └─► renderTable, findings, report.md,
//	                                             results.json (report.go), PNGs (chart.go)
//
// It does not own the lab topology (package lab), the node processes' wiring
// (lab.StartNodes) or the load generator (package bench, used here for time to first
// byte). The thesis's figures are in thesis.go. The package is named benchlab because
// it lives in bench/lab and uses package mpath/lab.
package benchlab
