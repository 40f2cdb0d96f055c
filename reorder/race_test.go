//go:build race

package reorder

// raceEnabled scales down the model tests under the race detector: the queue is
// single-goroutine code, and the model checks are memory-heavy enough that -race makes
// them many times slower without finding anything more.
const raceEnabled = true
