//go:build race

package xmlrpc

// raceEnabled: the race detector instruments every allocation and runs
// several times slower, so allocation bounds and 50 MB inputs say nothing.
const raceEnabled = true
