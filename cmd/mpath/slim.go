package main

// Build tag slim: `go build -tags slim ./cmd/mpath` leaves out the research commands
// (bench, lab, demo: the load generator, the namespace lab, the sweeps and their charts)
// and keeps the roles a deployment runs: client, exit, relay, status, genkey, version.
// That binary is what relays and routers carry. The files of the left-out commands start
// with "//go:build !slim" and register themselves in init, so nothing here lists them.
