//go:build linux

package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fractalrt/fractal/cluster"
	"github.com/fractalrt/fractal/cluster/etcdlocal"
)

// Two node processes and a three-member etcd that loses members under
// load. The loss of one member, its leader, is not seen: every request is
// served, and every acknowledged write is there. The loss of a majority
// stops what needs etcd (placing a new subtree, a move) with a clear
// error; the subtrees already placed are served until the nodes' leases
// would expire (at most a TTL after their last renewal), then refused as
// unavailable, never acknowledged under an expired lease. When the
// majority is back, the nodes serve again, with nothing acknowledged lost.
func TestProcessesEtcdFailures(t *testing.T) {
	const etcdElection = time.Second // etcdlocal's election timeout
	start := time.Now()
	bin, _ := build(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	e, err := etcdlocal.Start(ctx, t.TempDir(), 3)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	etcd := e.Endpoints()
	cli := etcdClient(t, etcd)
	root := t.TempDir()
	n1 := startProc(t, bin, "n1", filepath.Join(root, "n1"), etcd)
	n2 := startProc(t, bin, "n2", filepath.Join(root, "n2"), etcd)
	nodes := []*nodeProc{n1, n2}
	byName := map[string]*nodeProc{"n1": n1, "n2": n2}
	branches := []string{"e1", "e2", "e3", "e4"}
	acct := func(b string) string { return "bank/" + b + "/acct" }
	var acked, unknown [4]atomic.Int64
	for i, b := range branches {
		nodes[i%2].must("deposit", acct(b), 1)
		acked[i].Add(1)
	}
	owners := n1.owners()
	perNode := map[string]int{}
	for _, b := range branches {
		perNode[owners["bank/"+b].Node]++
	}
	if len(perNode) != 2 {
		t.Fatalf("subtrees per node %v: want both nodes used", perNode)
	}

	// load deposits 1 to every account through every node until ctx ends,
	// and keeps the errors.
	var fmu sync.Mutex
	var failures []string
	load := func(ctx context.Context) *sync.WaitGroup {
		var wg sync.WaitGroup
		for i, b := range branches {
			for _, p := range nodes {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for ctx.Err() == nil {
						r := p.depositOnce(acct(b))
						if r.Error == "" {
							acked[i].Add(1)
							continue
						}
						unknown[i].Add(1)
						fmu.Lock()
						failures = append(failures, fmt.Sprintf("%s via %s at %v: %s (%s)", b, p.name, time.Since(start).Round(time.Millisecond), r.Error, r.Code))
						fmu.Unlock()
						time.Sleep(50 * time.Millisecond)
					}
				}()
			}
		}
		return &wg
	}
	// checkBalances checks that every acknowledged deposit is there, once,
	// and from there counts the unknown ones as known.
	checkBalances := func(what string) {
		t.Helper()
		for i, b := range branches {
			got := nodes[i%2].must("balance", acct(b), 0)
			a, u := int(acked[i].Load()), int(unknown[i].Load())
			if got < a || got > a+u {
				t.Fatalf("%s: %s: balance %d, want %d acknowledged deposits (+ up to %d of unknown outcome)", what, acct(b), got, a, u)
			}
			acked[i].Store(int64(got))
			unknown[i].Store(0)
		}
	}
	sum := func() (n int64) {
		for i := range acked {
			n += acked[i].Load()
		}
		return n
	}

	// One member lost, the leader, for two lease TTLs: the nodes' lease
	// renewals and the table's watch move to the others.
	leader := e.Leader()
	if leader < 0 {
		t.Fatal("etcd has no leader")
	}
	lctx, stop := context.WithCancel(context.Background())
	started := sum()
	loaders := load(lctx)
	// Deposits flow through every node before the member stops.
	perRound := int64(len(branches) * len(nodes))
	checkFor(t, 30*time.Second, func() bool { return sum() >= started+5*perRound })
	before := sum()
	e.Stop(leader)
	stopped := time.Now()
	time.Sleep(2 * procTTL)
	during := sum() - before
	rctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	if err := e.Restart(rctx, leader); err != nil {
		t.Fatal(err)
	}
	cancel()
	// And go on once it is back.
	served := sum()
	checkFor(t, 30*time.Second, func() bool { return sum() >= served+5*perRound })
	stop()
	loaders.Wait()
	t.Logf("etcd member %d (the leader) stopped for %v, then restarted: %d deposits acknowledged meanwhile; new leader %d",
		leader, time.Since(stopped).Round(time.Millisecond), during, e.Leader())
	for _, f := range failures {
		t.Errorf("while one etcd member was down: %s", f)
	}
	if during == 0 {
		t.Fatal("nothing served while one etcd member was down")
	}
	if t.Failed() {
		t.FailNow()
	}
	checkBalances("one etcd member down")
	if w := n2.must("deposit", "bank/after1/acct", 1); w != 1 {
		t.Fatalf("a new subtree after one member's return: %d", w)
	}

	// A majority lost. What needs etcd fails: placing a new subtree, and a
	// move.
	owners = n1.owners()
	local := map[*nodeProc]string{} // a branch each node owns
	for _, b := range branches {
		local[byName[owners["bank/"+b].Node]] = b
	}
	lost := []int{(leader + 1) % 3, (leader + 2) % 3}
	for _, i := range lost {
		e.Stop(i)
	}
	stopped = time.Now()
	placed := make(chan apiResult, 1)
	go func() { placed <- n1.call("deposit", "bank/new/acct", 1, 0) }()
	moved := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		moved <- cluster.Move(ctx, cli, "", "bank/"+local[n1], "n2")
	}()
	// The subtrees already placed are served while the leases hold, each
	// through its owner and through the other node, then refused. A
	// leader that lost its majority renews leases on its own until it
	// steps down, an election timeout later: the leases hold up to a TTL
	// after that (etcd keeps them at least as long: a new leader extends
	// every lease).
	var wg sync.WaitGroup
	for _, p := range nodes {
		for _, q := range nodes {
			b := local[q]
			i := slices.Index(branches, b)
			wg.Add(1)
			go func() {
				defer wg.Done()
				served, firstFail, lastOK, slowest := 0, time.Duration(0), time.Duration(0), time.Duration(0)
				var last apiResult
				for time.Since(stopped) < procTTL+4*etcdElection {
					sent := time.Since(stopped)
					r := p.call("deposit", acct(b), 1, 0)
					took := time.Since(stopped) - sent
					switch {
					case r.Error == "" && firstFail == 0:
						acked[i].Add(1)
						served++
						lastOK = sent
					case r.Error == "":
						acked[i].Add(1)
						t.Errorf("%s through %s: acknowledged, sent at %v, after a refusal of one sent at %v with the etcd majority still down",
							b, p.name, sent.Round(time.Millisecond), firstFail.Round(time.Millisecond))
					default:
						unknown[i].Add(1)
						if firstFail == 0 {
							firstFail = sent
						}
						slowest = max(slowest, took)
						last = r
					}
					time.Sleep(50 * time.Millisecond)
				}
				switch {
				case served == 0:
					t.Errorf("%s through %s: not served at all after the majority was lost: %+v", b, p.name, last)
				case firstFail == 0:
					t.Errorf("%s through %s: still served %v after the majority was lost (lease TTL %v)", b, p.name, procTTL+4*etcdElection, procTTL)
				case lastOK > procTTL+2*etcdElection:
					t.Errorf("%s through %s: a deposit sent %v after the majority was lost acknowledged, beyond the lease TTL %v", b, p.name, lastOK.Round(time.Millisecond), procTTL)
				case last.Code != "unavailable":
					t.Errorf("%s through %s: refused with %+v, want unavailable", b, p.name, last)
				case slowest > 2*time.Second:
					t.Errorf("%s through %s: a refusal took %v: %s", b, p.name, slowest.Round(time.Millisecond), last.Error)
				default:
					t.Logf("majority lost: %s (owned by %s) through %s: %d deposits served, the last sent at %v; refused from %v on, each within %v: %s",
						b, owners["bank/"+b].Node, p.name, served, lastOK.Round(time.Millisecond), firstFail.Round(time.Millisecond), slowest.Round(time.Millisecond), last.Error)
				}
			}()
		}
	}
	wg.Wait()
	if err := <-moved; !errors.Is(err, cluster.ErrMove) {
		t.Errorf("a move with the etcd majority lost: %v, want %v", err, cluster.ErrMove)
	} else {
		t.Logf("majority lost: a move: %v", err)
	}
	if r := <-placed; r.Code != "unavailable" || !strings.Contains(r.Error, "owner") {
		t.Errorf("a new subtree with the etcd majority lost: %+v, want unavailable, no owner", r)
	} else {
		t.Logf("majority lost: a new subtree: %s (after %v)", r.Error, time.Since(stopped).Round(time.Millisecond))
	}
	if t.Failed() {
		t.FailNow()
	}

	// The majority back: the nodes serve again, everything acknowledged is
	// there, new subtrees are placed.
	var rwg sync.WaitGroup
	for _, i := range lost {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := e.Restart(ctx, i); err != nil {
				t.Error(err)
			}
		}()
	}
	rwg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	back := time.Now()
	for i, b := range branches {
		for _, p := range nodes {
			checkFor(t, 30*time.Second, func() bool {
				r := p.call("deposit", acct(b), 1, 0)
				if r.Error != "" {
					unknown[i].Add(1)
					return false
				}
				acked[i].Add(1)
				return true
			})
		}
	}
	t.Logf("majority back: every subtree served through both nodes %v after the restart", time.Since(back).Round(time.Millisecond))
	checkBalances("after the majority was lost")
	if w := n1.must("deposit", "bank/after2/acct", 1); w != 1 {
		t.Fatalf("a new subtree after the majority's return: %d", w)
	}
	t.Logf("%d deposits acknowledged in all, all there once; done in %v", sum(), time.Since(start).Round(time.Millisecond))
	for _, p := range nodes {
		if w, ok := p.cmd.Stderr.(*prefixWriter); ok {
			w.done.Store(true)
		}
	}
}
