package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"

	"github.com/fractalrt/fractal/actors"
)

// A Node is one member of a cluster: an actors.System on the node's data
// directory serving the subtrees the ownership table gives it, and
// forwarding every other message to the node that owns its subtree. It is
// safe for concurrent use.
//
// Goroutines, each owned by the Node and stopped and waited for by Close:
// the watch of the table (watch), the lease's renewal (keepAlive), the
// controller campaign (control), the planned moves this node runs (one per
// move), and one per request being served for another node (at most
// Config.MaxInflight).
//
// Lock order: ownMu, then mu or the table's lock (never both); the
// table's lock is a leaf.
type Node struct {
	cfg  Config
	log  *slog.Logger
	cli  *clientv3.Client
	tab  *table
	sys  *actors.System
	as   *actor.ActorSystem
	rem  *remote.Remote
	addr string

	lease    atomic.Int64 // the current lease's ID
	deadline atomic.Int64 // unix nanoseconds until which the lease surely holds
	owned    atomic.Pointer[map[string]uint64]
	ownMu    sync.Mutex // serializes refreshOwned; taken before table.mu and mu

	mu      sync.Mutex
	handing map[string]bool                          // units being handed to another node: fenced off
	moving  map[string]chan struct{}                 // units being moved away: closed when the move ends
	movingS atomic.Pointer[map[string]chan struct{}] // a copy of moving, for the hot path

	sem     chan struct{} // requests being served for other nodes
	outSem  chan struct{} // requests sent to other nodes, waiting for their answers
	links   links         // failing the requests whose connection broke
	running sync.WaitGroup
	ctx     context.Context // cancelled by Close
	cancel  context.CancelFunc

	closeOnce sync.Once
	closeErr  error
}

// gatewayName is the name of each node's gateway actor.
const gatewayName = "fractal-gateway"

// Start joins the cluster: it connects to etcd, checks the placement depth
// against the cluster's, opens the node's System, starts the remote
// transport and the gateway, and registers the node under a lease. A node
// restarted after a crash waits (within ctx) until its previous
// registration has expired, so that two incarnations never overlap.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	nctx, cancel := context.WithCancel(context.Background())
	n := &Node{
		cfg:     cfg,
		log:     cfg.Logger.With("node", cfg.Name),
		tab:     newTable(cfg.Prefix),
		handing: make(map[string]bool),
		moving:  make(map[string]chan struct{}),
		sem:     make(chan struct{}, cfg.MaxInflight),
		outSem:  make(chan struct{}, cfg.MaxInflight),
		ctx:     nctx,
		cancel:  cancel,
	}
	empty := map[string]uint64{}
	n.owned.Store(&empty)
	n.tab.onChange = n.tableChanged
	fail := func(err error) (*Node, error) {
		n.Close(context.Background())
		return nil, err
	}
	// The remote transport starts first: protoactor-go's Start replaces
	// gRPC's process-wide logger, which the etcd client's connections
	// read.
	if err := n.startRemote(); err != nil {
		return fail(err)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Etcd,
		TLS:         cfg.EtcdTLS,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		Context:     context.Background(),
	})
	if err != nil {
		return fail(fmt.Errorf("cluster: connecting to etcd: %w", err))
	}
	n.cli = cli
	if err := n.checkDepth(ctx); err != nil {
		return fail(err)
	}
	opts := cfg.Options
	opts.Remote = n
	opts.Fence = n.fence
	if n.sys, err = actors.Open(ctx, cfg.DataDir, opts); err != nil {
		return fail(err)
	}
	// Files of moves that a crash interrupted.
	n.removeAll(n.sys.Dir() + ".incoming")
	n.removeAll(n.sys.Dir() + ".moving")
	if _, err := n.as.Root.SpawnNamed(actor.PropsFromFunc(n.receive), gatewayName); err != nil {
		return fail(fmt.Errorf("cluster: gateway: %w", err))
	}
	rev, err := n.tab.load(ctx, cli)
	if err != nil {
		return fail(err)
	}
	n.running.Add(1)
	go n.watch(rev + 1)
	if err := n.register(ctx); err != nil {
		return fail(err)
	}
	n.running.Add(2)
	go n.keepAlive()
	go n.control()
	n.log.Info("node started", "addr", n.addr, "depth", cfg.PlacementDepth)
	return n, nil
}

// checkDepth records the placement depth in etcd, or checks it against the
// one recorded.
func (n *Node) checkDepth(ctx context.Context) error {
	want, _ := json.Marshal(map[string]int{"depth": n.cfg.PlacementDepth})
	k := keyConfig(n.cfg.Prefix)
	resp, err := n.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, string(want))).Else(clientv3.OpGet(k)).Commit()
	if err != nil {
		// The node's first request to etcd: an endpoint that does not
		// answer, or TLS that does not match etcd's (a missing client
		// certificate, another CA), ends here, often as a bare deadline.
		how := "without TLS"
		if n.cfg.EtcdTLS != nil {
			how = "with TLS"
		}
		return fmt.Errorf("cluster: connecting to etcd at %s (%s): reading the cluster's configuration: %w",
			strings.Join(n.cfg.Etcd, ","), how, err)
	}
	if resp.Succeeded {
		return nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	var got struct{ Depth int }
	if len(kvs) == 1 && json.Unmarshal(kvs[0].Value, &got) == nil && got.Depth != n.cfg.PlacementDepth {
		return fmt.Errorf("%w: placement depth %d, but the cluster uses %d", ErrConfig, n.cfg.PlacementDepth, got.Depth)
	}
	return nil
}

// System returns the node's System. Requests made on it reach every
// subtree of the cluster: those this node owns are served here, the others
// are forwarded to their owners.
func (n *Node) System() *actors.System { return n.sys }

// Name returns the node's name.
func (n *Node) Name() string { return n.cfg.Name }

// Addr returns the address of the node's remote transport.
func (n *Node) Addr() string { return n.addr }

// Owners returns the node's current view of the ownership table: each
// placed subtree and its owner.
func (n *Node) Owners() map[string]Owner {
	o, _ := n.tab.snapshot()
	return o
}

// Nodes returns the names of the live nodes, as this node sees them.
func (n *Node) Nodes() []string {
	_, live := n.tab.snapshot()
	return live
}

// Unit returns the subtree path belongs to: the unit of placement.
func (n *Node) Unit(path string) (string, error) {
	p, err := actors.ParsePath(path)
	if err != nil {
		return "", err
	}
	return unitOf(p, n.cfg.PlacementDepth).String(), nil
}

// register puts the node's key under a new lease, waiting for a previous
// registration of the same name to expire.
func (n *Node) register(ctx context.Context) error {
	ttl := int64(n.cfg.LeaseTTL / time.Second)
	val, _ := json.Marshal(nodeInfo{Addr: n.addr})
	k := keyNode(n.cfg.Prefix, n.cfg.Name)
	for {
		start := time.Now()
		g, err := n.cli.Grant(ctx, ttl)
		if err != nil {
			return fmt.Errorf("cluster: lease: %w", err)
		}
		resp, err := n.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
			Then(clientv3.OpPut(k, string(val), clientv3.WithLease(g.ID))).Commit()
		if err != nil {
			return fmt.Errorf("cluster: registering: %w", err)
		}
		if resp.Succeeded {
			n.lease.Store(int64(g.ID))
			n.deadline.Store(start.Add(time.Duration(g.TTL) * time.Second).UnixNano())
			n.refreshOwned()
			return nil
		}
		n.cli.Revoke(ctx, g.ID)
		n.log.Info("waiting for the previous registration to expire")
		select {
		case <-time.After(n.cfg.LeaseTTL / 4):
		case <-ctx.Done():
			return fmt.Errorf("cluster: node %s is still registered: %w", n.cfg.Name, ctx.Err())
		}
	}
}

// keepAlive renews the lease every third of its TTL. The fence's deadline
// is the time a renewal was sent plus the TTL: the lease cannot expire on
// etcd's side before that. When the lease is lost, the node registers
// again, half a TTL later.
func (n *Node) keepAlive() {
	defer n.running.Done()
	every := n.cfg.LeaseTTL / 3
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(every):
		}
		start := time.Now()
		ctx, cancel := context.WithTimeout(n.ctx, every)
		resp, err := n.cli.KeepAliveOnce(ctx, clientv3.LeaseID(n.lease.Load()))
		cancel()
		if err == nil && resp.TTL > 0 {
			n.deadline.Store(start.Add(time.Duration(resp.TTL) * time.Second).UnixNano())
			continue
		}
		if n.ctx.Err() != nil {
			return
		}
		n.log.Warn("lease renewal failed", "err", err)
		if time.Now().UnixNano() < n.deadline.Load() {
			continue // still held: try again
		}
		n.refreshOwned() // fenced until registered again
		// Half a TTL of quarantine first: the writes that were under way
		// when the lease lapsed (a process frozen, a long pause) reach
		// their commit meanwhile and are refused, rather than
		// acknowledged under the next lease.
		select {
		case <-time.After(n.cfg.LeaseTTL / 2):
		case <-n.ctx.Done():
			return
		}
		ctx, cancel = context.WithTimeout(n.ctx, 2*n.cfg.LeaseTTL)
		if err := n.register(ctx); err != nil {
			n.log.Warn("registering again failed", "err", err)
		} else {
			n.log.Info("registered again")
		}
		cancel()
	}
}

// watch keeps the table current; it loads it again when the watch breaks
// (a compaction, a lost connection).
func (n *Node) watch(rev int64) {
	defer n.running.Done()
	for n.ctx.Err() == nil {
		wc := n.cli.Watch(clientv3.WithRequireLeader(n.ctx), n.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithRev(rev))
		for resp := range wc {
			if resp.Err() != nil || resp.Canceled {
				break
			}
			var owners, moves []string
			for _, ev := range resp.Events {
				switch kind, name := n.tab.apply(ev); kind {
				case "owners":
					owners = append(owners, name)
				case "moves":
					moves = append(moves, name)
				}
			}
			n.unitsChanged(owners, moves)
		}
		if n.ctx.Err() != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
		ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
		r, err := n.tab.load(ctx, n.cli)
		cancel()
		if err != nil {
			n.log.Warn("reloading the ownership table", "err", err)
			continue
		}
		rev = r + 1
	}
}

// tableChanged runs after the cached table was loaded whole ("all") or a
// row was written by this node ("owners", key).
func (n *Node) tableChanged(kind, key string) {
	if kind == "all" {
		n.refreshOwned()
		for unit, mv := range n.tab.movesFor(n.cfg.Name) {
			n.startMove(unit, mv)
		}
		return
	}
	n.unitsChanged([]string{key}, nil)
}

// unitsChanged follows changes of the rows of owners and moves: the
// fence's snapshot is rebuilt when one of the units changed is, or
// becomes, this node's, and a planned move of a unit this node owns
// starts. O(1) per row, plus O(table) when this node's units changed.
func (n *Node) unitsChanged(owners, moves []string) {
	mine := false
	cur := *n.owned.Load()
	for _, u := range owners {
		if _, had := cur[u]; had {
			mine = true
		} else if o, ok, _, _, _ := n.tab.owner(u); ok && o.Node == n.cfg.Name {
			mine = true
		}
	}
	if mine {
		n.refreshOwned()
	}
	for _, u := range append(owners, moves...) {
		if mv, ok := n.tab.moveOf(u, n.cfg.Name); ok {
			n.startMove(u, mv)
		}
	}
}

// refreshOwned rebuilds the fence's snapshot of the units this node may
// write: those the table gives it, minus those being handed over.
func (n *Node) refreshOwned() {
	// One refresh at a time, so that a snapshot computed from an older
	// table is never stored after a newer one.
	n.ownMu.Lock()
	defer n.ownMu.Unlock()
	m := n.tab.ownedBy(n.cfg.Name)
	n.mu.Lock()
	for u := range n.handing {
		delete(m, u)
	}
	n.mu.Unlock()
	n.owned.Store(&m)
}

// fence is the System's Options.Fence: a commit of a part is allowed only
// while the node's lease holds and the table gives the part's subtree to
// this node. Two atomic loads and a map lookup.
func (n *Node) fence(p actors.Path) error {
	if time.Now().UnixNano() >= n.deadline.Load() {
		return ErrLeaseExpired
	}
	u := unitOf(p, n.cfg.PlacementDepth).String()
	if _, ok := (*n.owned.Load())[u]; !ok {
		return fmt.Errorf("%w: %s (subtree %s)", ErrNotOwner, p, u)
	}
	return nil
}

// Local implements actors.Remote: a part is served here when its subtree
// is this node's, its lease holds and no move of it is under way.
func (n *Node) Local(p actors.Path) bool {
	u := unitOf(p, n.cfg.PlacementDepth).String()
	if _, ok := (*n.owned.Load())[u]; !ok || time.Now().UnixNano() >= n.deadline.Load() {
		return false
	}
	return n.movingCh(u) == nil
}

// maxAttempts bounds how often one request is sent again after its target
// said it was not the owner (its view of the table was stale).
const maxAttempts = 50

// Request implements actors.Remote: it carries msg to the owner of p's
// subtree and returns its reply. A subtree without an owner is first
// assigned by the controller; a request for a subtree being moved waits
// for the move to end; a request that reached a node that no longer owns
// the subtree is sent again once the table has caught up. msg and the
// reply must be registered with actors.RegisterMessage.
func (n *Node) Request(ctx context.Context, p actors.Path, msg any) (any, error) {
	if n.ctx.Err() != nil {
		return nil, ErrClosed
	}
	name, data, err := actors.EncodeMessage(msg)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, n.cfg.RequestTimeout)
		defer cancel()
	}
	unit := unitOf(p, n.cfg.PlacementDepth).String()
	var last error
	for attempt := range maxAttempts {
		if err := ctx.Err(); err != nil {
			if last != nil {
				return nil, fmt.Errorf("%w (after: %w)", err, last)
			}
			return nil, err
		}
		o, ok, live, addr, changed := n.tab.owner(unit)
		switch {
		case !ok:
			if err := n.assign(ctx, unit, changed); err != nil {
				return nil, err
			}
			continue
		case o.Node == n.cfg.Name:
			if wait := n.movingCh(unit); wait != nil {
				select {
				case <-wait:
					continue
				case <-ctx.Done():
					return nil, fmt.Errorf("%w: %s: %w", ErrMoving, unit, ctx.Err())
				}
			}
			if time.Now().UnixNano() >= n.deadline.Load() {
				return nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, unit, ErrLeaseExpired)
			}
			if n.Local(p) {
				return n.sys.Request(ctx, p.String(), msg)
			}
			last = fmt.Errorf("%w: %s", ErrNotOwner, unit) // the fence's view lags the table's
		case !live:
			return nil, fmt.Errorf("%w: %s is on node %s, which is down", ErrUnavailable, unit, o.Node)
		default:
			val, err := n.forward(ctx, o, addr, p, name, data)
			if err == nil || !(errors.Is(err, ErrNotOwner) || errors.Is(err, ErrMoving)) || errors.Is(err, actors.ErrFenced) {
				return val, err
			}
			last = err
		}
		// Wait for the table to change, briefly.
		backoff := time.Duration(min(attempt+1, 10)) * 20 * time.Millisecond
		select {
		case <-changed:
		case <-time.After(backoff):
		case <-ctx.Done():
		}
	}
	return nil, fmt.Errorf("%w: %s: %d attempts: %w", ErrUnavailable, unit, maxAttempts, last)
}

func (n *Node) movingCh(unit string) chan struct{} {
	if m := n.movingS.Load(); m != nil {
		return (*m)[unit]
	}
	return nil
}

// publishMoving copies moving for movingCh; n.mu is held. Moves are rare,
// so the copy costs nothing that matters.
func (n *Node) publishMoving() {
	m := make(map[string]chan struct{}, len(n.moving))
	for u, ch := range n.moving {
		m[u] = ch
	}
	n.movingS.Store(&m)
}

// assign asks the controller for an owner of unit and waits until the
// table has one.
func (n *Node) assign(ctx context.Context, unit string, changed <-chan struct{}) error {
	if n.tab.size() >= n.cfg.MaxSubtrees {
		return fmt.Errorf("%w: %d subtrees placed", ErrTooManySubtrees, n.cfg.MaxSubtrees)
	}
	k := keyPending(n.cfg.Prefix, unit)
	_, err := n.cli.Put(ctx, k, n.cfg.Name, clientv3.WithLease(clientv3.LeaseID(n.lease.Load())))
	if err != nil {
		return fmt.Errorf("%w: %s: asking for an owner: %w", ErrUnavailable, unit, err)
	}
	for {
		select {
		case <-changed:
		case <-time.After(time.Second):
			// Ask again: a controller elected meanwhile reads the pending
			// keys at its start, but a request is cheap.
			if _, err := n.cli.Put(ctx, k, n.cfg.Name, clientv3.WithLease(clientv3.LeaseID(n.lease.Load()))); err != nil && ctx.Err() == nil {
				n.log.Warn("asking for an owner", "unit", unit, "err", err)
			}
		case <-ctx.Done():
			return fmt.Errorf("%w: %s: no owner assigned: %w", ErrUnavailable, unit, ctx.Err())
		}
		var ok bool
		_, ok, _, _, changed = n.tab.owner(unit)
		if ok {
			return nil
		}
	}
}

// control campaigns to be the cluster's controller, and while elected
// assigns the subtrees nodes ask owners for.
func (n *Node) control() {
	defer n.running.Done()
	for n.ctx.Err() == nil {
		if err := n.campaign(); err != nil && n.ctx.Err() == nil {
			n.log.Warn("controller", "err", err)
			select {
			case <-time.After(n.cfg.LeaseTTL / 4):
			case <-n.ctx.Done():
			}
		}
	}
}

func (n *Node) campaign() error {
	sess, err := concurrency.NewSession(n.cli, concurrency.WithLease(clientv3.LeaseID(n.lease.Load())), concurrency.WithContext(n.ctx))
	if err != nil {
		return err
	}
	// The session shares the node's lease: closing it would revoke the
	// lease, so it is abandoned, not closed, when the campaign ends.
	el := concurrency.NewElection(sess, keyElection(n.cfg.Prefix))
	if err := el.Campaign(sess.Ctx(), n.cfg.Name); err != nil {
		return err
	}
	n.log.Info("elected controller")
	defer n.log.Info("controller no more")
	ctx := sess.Ctx()
	pfx := prefixOf(n.cfg.Prefix, "pending")
	resp, err := n.cli.Get(ctx, pfx, clientv3.WithPrefix())
	if err != nil {
		return err
	}
	for _, kv := range resp.Kvs {
		n.place(ctx, el, string(kv.Key[len(pfx):]))
	}
	wc := n.cli.Watch(clientv3.WithRequireLeader(ctx), pfx, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	for wr := range wc {
		if err := wr.Err(); err != nil {
			return err
		}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypePut {
				n.place(ctx, el, string(ev.Kv.Key[len(pfx):]))
			}
		}
	}
	return ctx.Err()
}

// place assigns unit to the least-loaded live node, if it has no owner,
// in one transaction that holds only while this node is the controller.
func (n *Node) place(ctx context.Context, el *concurrency.Election, unit string) {
	owners, live := n.tab.snapshot()
	pk, ok := keyPending(n.cfg.Prefix, unit), keyOwner(n.cfg.Prefix, unit)
	leader := clientv3.Compare(clientv3.CreateRevision(el.Key()), "=", el.Rev())
	if _, placed := owners[unit]; placed {
		n.cli.Txn(ctx).If(leader).Then(clientv3.OpDelete(pk)).Commit()
		return
	}
	to := leastLoaded(live, owners)
	if to == "" {
		return // no live node: the requester times out
	}
	val, _ := json.Marshal(Owner{Node: to, Epoch: 1})
	resp, err := n.cli.Txn(ctx).If(leader, clientv3.Compare(clientv3.CreateRevision(ok), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(keyNode(n.cfg.Prefix, to)), ">", 0)).
		Then(clientv3.OpPut(ok, string(val)), clientv3.OpDelete(pk)).Commit()
	if err != nil {
		n.log.Warn("placing a subtree", "unit", unit, "err", err)
		return
	}
	if !resp.Succeeded {
		return // placed meanwhile, or no longer the controller
	}
	// Counted at once, so that the next placement sees this one.
	n.tab.setOwner(unit, Owner{Node: to, Epoch: 1}, resp.Header.Revision)
	n.log.Info("subtree placed", "unit", unit, "node", to)
}

// Close leaves the cluster: it stops the goroutines it started, closes the
// System (waiting within ctx for the messages it accepted), stops the
// remote transport and revokes the node's lease, so that the others see it
// gone at once. Calling Close again returns the first call's result.
func (n *Node) Close(ctx context.Context) error {
	n.closeOnce.Do(func() { n.closeErr = n.close(ctx) })
	return n.closeErr
}

func (n *Node) close(ctx context.Context) error {
	var errs []error
	n.mu.Lock()
	n.cancel() // under mu: no move starts after this (see startMove)
	n.mu.Unlock()
	if n.sys != nil {
		if err := n.sys.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if id := n.lease.Load(); id != 0 && n.cli != nil {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		n.cli.Revoke(rctx, clientv3.LeaseID(id))
		cancel()
	}
	n.running.Wait()
	// The requests being served for other nodes end quickly now that the
	// System is closed: wait for them by taking every slot.
	for range cap(n.sem) {
		n.sem <- struct{}{}
	}
	if n.rem != nil {
		n.rem.Shutdown(false)
	}
	if n.as != nil {
		n.as.Shutdown()
	}
	if n.cli != nil {
		if err := n.cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeAll removes dir, logging a failure.
func (n *Node) removeAll(dir string) {
	if err := os.RemoveAll(dir); err != nil {
		n.log.Warn("removing files", "dir", dir, "err", err)
	}
}
