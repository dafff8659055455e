//go:build race

package node_test

// The race detector disables sync.Pool reuse, so allocation totals mean
// nothing under it.
const raceEnabled = true
