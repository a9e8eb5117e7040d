package cluster

import (
	"sort"

	"github.com/fractalrt/fractal/actors"
)

// unitOf returns the unit of placement that p belongs to: its ancestor at
// depth (the subtree that is placed as a whole), or p itself for a part
// above that depth, which is placed alone.
func unitOf(p actors.Path, depth int) actors.Path {
	return p.Ancestor(depth)
}

// leastLoaded picks the node a new subtree goes to: among the live nodes,
// the one owning the fewest subtrees, ties broken by name so that every
// controller would decide the same. It returns "" when no node is live.
// Pure: the controller passes in its view of the table.
func leastLoaded(live []string, owners map[string]Owner) string {
	if len(live) == 0 {
		return ""
	}
	load := make(map[string]int, len(live))
	for _, n := range live {
		load[n] = 0
	}
	for _, o := range owners {
		if _, ok := load[o.Node]; ok {
			load[o.Node]++
		}
	}
	names := append([]string(nil), live...)
	sort.Strings(names)
	best := names[0]
	for _, n := range names[1:] {
		if load[n] < load[best] {
			best = n
		}
	}
	return best
}
