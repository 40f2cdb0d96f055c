//go:build race

package raw

// raceEnabled: the race detector makes sync.Pool drop items at random, so allocation
// budgets that rely on a pool are not checked under -race.
const raceEnabled = true
