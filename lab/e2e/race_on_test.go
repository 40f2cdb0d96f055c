//go:build race

package e2e

// raceOn scales transfer sizes down: the test binary's own servers and clients (Go HTTP
// servers, SOCKS clients, hashing) run under the race detector and are several times
// slower; the mpath binaries under test are built without it either way.
const raceOn = true
