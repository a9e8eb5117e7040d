package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Owner is a row of the ownership table: the node that owns a subtree, and
// the subtree's epoch, which grows by one at every change of owner.
type Owner struct {
	Node  string `json:"node"`
	Epoch uint64 `json:"epoch"`
}

// nodeInfo is the value of a node's registration.
type nodeInfo struct {
	Addr string `json:"addr"`
}

// moveReq is the value of a planned move's key.
type moveReq struct {
	To  string `json:"to"`
	ID  string `json:"id"`
	Err string `json:"err,omitempty"` // set by the owner when the move failed
}

// Keys under the cluster's prefix (see the package documentation).
func keyConfig(pfx string) string         { return pfx + "config" }
func keyNode(pfx, name string) string     { return pfx + "nodes/" + name }
func keyOwner(pfx, unit string) string    { return pfx + "owners/" + unit }
func keyPending(pfx, unit string) string  { return pfx + "pending/" + unit }
func keyMove(pfx, unit string) string     { return pfx + "moves/" + unit }
func keyElection(pfx string) string       { return pfx + "election" }
func prefixOf(pfx, section string) string { return pfx + section + "/" }

// table is a node's cached copy of the ownership table, the live nodes and
// the planned moves, kept current by one etcd watch on the cluster's
// prefix: every change invalidates (updates) the entry it concerns. Its
// size is bounded by the table's (Config.MaxSubtrees).
//
// Lock order: table.mu is a leaf lock; callbacks run without it.
type table struct {
	pfx string

	mu      sync.RWMutex
	owners  map[string]ownerEntry
	nodes   map[string]nodeInfo
	moves   map[string]moveReq
	changed chan struct{} // closed and replaced at every change
	rev     int64         // etcd revision the copy reflects

	onChange func(kind, key string) // called after each change, without mu
	synced   atomic.Bool
}

type ownerEntry struct {
	Owner
	rev int64 // ModRevision of the row, for compare-and-swap
}

func newTable(pfx string) *table {
	return &table{pfx: pfx, changed: make(chan struct{})}
}

// load replaces the copy with the table as of one revision.
func (t *table) load(ctx context.Context, cli *clientv3.Client) (int64, error) {
	resp, err := cli.Get(ctx, t.pfx, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("cluster: reading the ownership table: %w", err)
	}
	owners := make(map[string]ownerEntry)
	nodes := make(map[string]nodeInfo)
	moves := make(map[string]moveReq)
	for _, kv := range resp.Kvs {
		t.decode(string(kv.Key), kv.Value, kv.ModRevision, owners, nodes, moves)
	}
	t.mu.Lock()
	t.owners, t.nodes, t.moves = owners, nodes, moves
	t.rev = resp.Header.Revision
	t.signal()
	t.mu.Unlock()
	t.synced.Store(true)
	if t.onChange != nil {
		t.onChange("all", "")
	}
	return resp.Header.Revision, nil
}

// decode puts one key's value into the maps; a value that does not
// decode is ignored (and so reads as absent).
func (t *table) decode(key string, val []byte, rev int64, owners map[string]ownerEntry, nodes map[string]nodeInfo, moves map[string]moveReq) {
	switch {
	case strings.HasPrefix(key, prefixOf(t.pfx, "owners")):
		var o Owner
		if json.Unmarshal(val, &o) == nil {
			owners[strings.TrimPrefix(key, prefixOf(t.pfx, "owners"))] = ownerEntry{o, rev}
		}
	case strings.HasPrefix(key, prefixOf(t.pfx, "nodes")):
		var n nodeInfo
		if json.Unmarshal(val, &n) == nil {
			nodes[strings.TrimPrefix(key, prefixOf(t.pfx, "nodes"))] = n
		}
	case strings.HasPrefix(key, prefixOf(t.pfx, "moves")):
		var m moveReq
		if json.Unmarshal(val, &m) == nil {
			moves[strings.TrimPrefix(key, prefixOf(t.pfx, "moves"))] = m
		}
	}
}

// apply applies one watch event and returns which section ("owners",
// "nodes", "moves") and key it changed; the caller calls onChange once the
// events of a response are applied, so that it sees a transaction whole.
func (t *table) apply(ev *clientv3.Event) (kind, name string) {
	key := string(ev.Kv.Key)
	for _, s := range []string{"owners", "nodes", "moves"} {
		if strings.HasPrefix(key, prefixOf(t.pfx, s)) {
			kind = s
		}
	}
	if kind == "" {
		return "", ""
	}
	name = strings.TrimPrefix(key, prefixOf(t.pfx, kind))
	t.mu.Lock()
	if ev.Type == clientv3.EventTypeDelete {
		switch kind {
		case "owners":
			delete(t.owners, name)
		case "nodes":
			delete(t.nodes, name)
		case "moves":
			delete(t.moves, name)
		}
	} else {
		t.decode(key, ev.Kv.Value, ev.Kv.ModRevision, t.owners, t.nodes, t.moves)
	}
	if ev.Kv.ModRevision > t.rev {
		t.rev = ev.Kv.ModRevision
	}
	t.signal()
	t.mu.Unlock()
	return kind, name
}

// set records a row this node wrote itself, ahead of the watch.
func (t *table) setOwner(unit string, o Owner, rev int64) {
	t.mu.Lock()
	if cur, ok := t.owners[unit]; !ok || cur.rev < rev {
		t.owners[unit] = ownerEntry{o, rev}
		t.signal()
	}
	t.mu.Unlock()
	if t.onChange != nil {
		t.onChange("owners", unit)
	}
}

// signal wakes the waiters; t.mu is held.
func (t *table) signal() {
	close(t.changed)
	t.changed = make(chan struct{})
}

// owner returns the row of unit, whether its node is live, the node's
// address, and a channel closed at the next change.
func (t *table) owner(unit string) (o ownerEntry, ok, live bool, addr string, changed <-chan struct{}) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	o, ok = t.owners[unit]
	n, live := t.nodes[o.Node]
	return o, ok, live, n.Addr, t.changed
}

func (t *table) node(name string) (nodeInfo, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	n, ok := t.nodes[name]
	return n, ok
}

func (t *table) size() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.owners)
}

// ownedBy returns the units owned by node, with their epochs.
func (t *table) ownedBy(node string) map[string]uint64 {
	t.mu.RLock()
	defer t.mu.RUnlock()
	m := make(map[string]uint64)
	for u, o := range t.owners {
		if o.Node == node {
			m[u] = o.Epoch
		}
	}
	return m
}

// snapshot returns copies of the owners and the live nodes' names.
func (t *table) snapshot() (map[string]Owner, []string) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	owners := make(map[string]Owner, len(t.owners))
	for u, o := range t.owners {
		owners[u] = o.Owner
	}
	live := make([]string, 0, len(t.nodes))
	for n := range t.nodes {
		live = append(live, n)
	}
	return owners, live
}

// moveOf returns the planned move of unit when node owns it and it has not
// failed.
func (t *table) moveOf(unit, node string) (moveReq, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	mv, ok := t.moves[unit]
	o, owned := t.owners[unit]
	return mv, ok && owned && o.Node == node && mv.Err == ""
}

func (t *table) movesFor(node string) map[string]moveReq {
	t.mu.RLock()
	defer t.mu.RUnlock()
	m := make(map[string]moveReq)
	for u, mv := range t.moves {
		if o, ok := t.owners[u]; ok && o.Node == node && mv.Err == "" {
			m[u] = mv
		}
	}
	return m
}
