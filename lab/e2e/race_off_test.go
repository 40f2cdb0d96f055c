//go:build !race

package e2e

// raceOn reports whether the test binary runs under the race detector (see race_on_test.go).
const raceOn = false
