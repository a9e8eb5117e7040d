//go:build race

package cluster_test

// raceEnabled: the node processes of the tests are built with the race
// detector too.
const raceEnabled = true
