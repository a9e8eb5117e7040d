//go:build linux

package cluster_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
	"github.com/fractalrt/fractal/cluster"
	"github.com/fractalrt/fractal/persistence"
)

// killHots is the number of accounts that take deposits during the moves.
const killHots = 4

var killMoves = flag.Int("cluster.killmoves", 4, "TestProcessesKillDuringMove: moves interrupted by kill -9, of the source and of the target in turn, at a random moment or at the switch (4: each once)")

// A move interrupted by kill -9 of its source or of its target, at a
// random moment of it, loses no acknowledged write and applies none twice:
// once the killed node is back, the subtree has exactly one owner, which
// alone serves it, its files pass SQLite's integrity check, and it takes
// new writes. The subtree holds many accounts, so that a move lasts long
// enough for the kill to land in each of its phases (drain, copy,
// install, switch) across the iterations.
func TestProcessesKillDuringMove(t *testing.T) {
	seed := time.Now().UnixNano()
	t.Logf("seed %d (iterations: -cluster.killmoves=%d)", seed, *killMoves)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	start := time.Now()
	bin, _ := build(t)
	etcd := startEtcd(t, 1)
	cli := etcdClient(t, etcd)
	root := t.TempDir()
	nodes := map[string]*nodeProc{}
	for _, name := range []string{"n1", "n2"} {
		nodes[name] = startProc(t, bin, name, filepath.Join(root, name), etcd)
	}
	other := map[string]string{"n1": "n2", "n2": "n1"}

	// The subtree: filler accounts, written once, and hot accounts that
	// take deposits during the moves.
	const unit = "bank/big"
	const fillers, hots = 100, killHots
	filler := func(i int) string { return fmt.Sprintf("%s/f%03d", unit, i) }
	hot := func(i int) string { return fmt.Sprintf("%s/h%d", unit, i) }
	// Each filler gets one acknowledged deposit; one that failed first
	// (the leases lapse on an overloaded machine) may have been applied
	// too: what the files hold then is what later checks expect.
	var wg sync.WaitGroup
	work := make(chan int)
	failed := make([]int, fillers)
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := nodes[[]string{"n1", "n2"}[w%2]]
			for i := range work {
				deadline := time.Now().Add(30 * time.Second)
				for r := p.call("deposit", filler(i), 1, 0); r.Error != ""; r = p.call("deposit", filler(i), 1, 0) {
					failed[i]++
					if time.Now().After(deadline) {
						t.Errorf("deposit to %s: %s", filler(i), r.Error)
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
		}()
	}
	for i := range fillers {
		work <- i
	}
	close(work)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	fillerWant := make([]int, fillers)
	retried := 0
	for i := range fillers {
		fillerWant[i] = balanceOf(t, nodes["n1"], filler(i))
		if fillerWant[i] < 1 || fillerWant[i] > 1+failed[i] {
			t.Fatalf("%s: balance %d after one acknowledged deposit and %d failed", filler(i), fillerWant[i], failed[i])
		}
		if failed[i] > 0 {
			retried++
		}
	}
	t.Logf("%d accounts written at %v (%d after a failed attempt)", fillers, time.Since(start).Round(time.Millisecond), retried)

	// acked and unknown count the deposits of 1 to each hot account:
	// acknowledged ones must all be there, once; those whose outcome the
	// caller could not know (an error, the node it went through killed)
	// may be there or not, but never twice. A deposit refused because the
	// node was down (connection refused) never started: depositOnce sends
	// it once, where net/http would send a GET again on a new connection
	// after the first one broke, and report the second attempt's error.
	var acked, unknown [hots]atomic.Int64
	load := func(ctx context.Context) *sync.WaitGroup {
		var wg sync.WaitGroup
		for i := range hots {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p := nodes[[]string{"n1", "n2"}[i%2]]
				for ctx.Err() == nil {
					r := p.depositOnce(hot(i))
					switch {
					case r.Error == "":
						acked[i].Add(1)
						continue
					case r.Code == "http" && strings.Contains(r.Error, "connection refused"):
					default:
						unknown[i].Add(1)
					}
					time.Sleep(20 * time.Millisecond) // the node is down, or the subtree unavailable
				}
			}()
		}
		return &wg
	}
	owner := func() (cluster.Owner, bool) {
		t.Helper()
		resp, err := cli.Txn(context.Background()).Then(
			clientv3.OpGet("/fractal/owners/"+unit), clientv3.OpGet("/fractal/moves/"+unit)).Commit()
		if err != nil {
			t.Fatal(err)
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) != 1 {
			t.Fatalf("%s has %d owner rows", unit, len(kvs))
		}
		var o cluster.Owner
		if err := json.Unmarshal(kvs[0].Value, &o); err != nil {
			t.Fatal(err)
		}
		return o, len(resp.Responses[1].GetResponseRange().Kvs) > 0
	}
	for i := range hots {
		nodes["n1"].must("deposit", hot(i), 1)
		acked[i].Add(1)
	}

	// A move without a kill, under the same load: its duration bounds the
	// random moment of the kills.
	o, _ := owner()
	ctx, stop := context.WithCancel(context.Background())
	loaders := load(ctx)
	loadFlows(t, &acked)
	t0 := time.Now()
	mctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	err := cluster.Move(mctx, cli, "", unit, other[o.Node])
	cancel()
	moveTook := time.Since(t0)
	stop()
	loaders.Wait()
	if err != nil {
		t.Fatalf("the first move: %v", err)
	}
	t.Logf("moved %s (%d files) from %s to %s in %v under load", unit, fillers+hots, o.Node, other[o.Node], moveTook.Round(time.Millisecond))
	checkKillMove(t, nodes, root, unit, fillerWant, hots, owner, &acked, &unknown)

	// The kills: of the source and of the target in turn, at a random
	// moment of the move (up to a quarter longer than the first took), or,
	// one iteration in four for each, the moment the owner's row changes
	// in etcd (the switch: the source is releasing the requests it held
	// and removing its files, the target is about to serve).
	var totalUnknown, totalApplied int
	for it := range *killMoves {
		o, _ := owner()
		src, dst := nodes[o.Node], nodes[other[o.Node]]
		victim, role := src, "source"
		if it%2 == 1 {
			victim, role = dst, "target"
		}
		atSwitch := it%4 >= 2
		ctx, stop := context.WithCancel(context.Background())
		loaders := load(ctx)
		loadFlows(t, &acked)
		var killAt <-chan struct{}
		when := "at the switch"
		if atSwitch {
			cur, err := cli.Get(ctx, "/fractal/owners/"+unit)
			if err != nil {
				t.Fatal(err)
			}
			wc := cli.Watch(ctx, "/fractal/owners/"+unit, clientv3.WithRev(cur.Header.Revision+1))
			ch := make(chan struct{})
			go func() {
				for wr := range wc {
					if len(wr.Events) > 0 {
						close(ch)
						return
					}
				}
			}()
			killAt = ch
		} else {
			delay := time.Duration(rng.Int64N(int64(moveTook)*5/4 + 1))
			when = "after " + delay.Round(time.Millisecond).String()
			ch := make(chan struct{})
			time.AfterFunc(delay, func() { close(ch) })
			killAt = ch
		}
		mctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
		moved := make(chan error, 1)
		t0 := time.Now()
		go func() { moved <- cluster.Move(mctx, cli, "", unit, dst.name) }()
		var err error
		ended := false
		select {
		case <-killAt:
		case err = <-moved:
			ended = true // a kill just after the move: still one to check
		}
		victim.kill()
		killed := time.Since(t0)
		at, moving := owner()
		phase := "before the switch"
		switch {
		case ended:
			phase = "after the move ended"
		case at.Node == dst.name:
			phase = "after the switch"
		}
		victim.start()
		restarted := time.Since(t0)
		if !ended {
			err = <-moved
		}
		cancel()
		time.Sleep(100 * time.Millisecond)
		stop()
		loaders.Wait()
		final, _ := owner()
		var u int
		for i := range hots {
			u += int(unknown[i].Load())
		}
		applied, leftover := checkKillMove(t, nodes, root, unit, fillerWant, hots, owner, &acked, &unknown)
		totalUnknown += u
		totalApplied += applied
		t.Logf("iteration %d: move %s -> %s, killed the %s (%s) %s, at %v, %s (move key left: %v); back at %v; move: %s; owner %s epoch %d (was %s epoch %d); %d deposits of unknown outcome, %d of them applied; leftover copy on %s: %v",
			it, src.name, dst.name, role, victim.name, when, killed.Round(time.Millisecond), phase, moving,
			restarted.Round(time.Millisecond), errOrOK(err), final.Node, final.Epoch, o.Node, o.Epoch, u, applied, other[final.Node], leftover)
	}
	var sa int64
	for i := range hots {
		sa += acked[i].Load()
	}
	t.Logf("%d kills in %v; %d deposits acknowledged, all there once; %d of unknown outcome, %d of them applied",
		*killMoves, time.Since(start).Round(time.Millisecond), sa, totalUnknown, totalApplied)
	for _, p := range nodes {
		if w, ok := p.cmd.Stderr.(*prefixWriter); ok {
			w.done.Store(true)
		}
	}
}

func errOrOK(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

// checkKillMove checks the subtree after a move and its kill: one owner in
// etcd, which both nodes see and which alone serves it; every file of the
// owner's copy intact; every acknowledged deposit there once; a later
// write taken through either node, and not written to the other node's
// leftover copy, if it has one.
func checkKillMove(t *testing.T, nodes map[string]*nodeProc, root, unit string, fillerWant []int, hots int,
	owner func() (cluster.Owner, bool), acked, unknown *[killHots]atomic.Int64) (applied int, leftover bool) {
	t.Helper()
	var o cluster.Owner
	checkFor(t, 30*time.Second, func() bool {
		var moving bool
		o, moving = owner()
		if moving {
			return false
		}
		for _, p := range nodes {
			if p.owners()[unit] != o || p.local(unit+"/h0") != (p.name == o.Node) {
				return false
			}
		}
		return true
	})
	var rest *nodeProc
	for _, p := range nodes {
		if p.name != o.Node {
			rest = p
		}
	}
	dir := actors.MustParsePath(unit).Dir(filepath.Join(root, o.Node))
	files := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.Name() != actors.PartFileName {
			return err
		}
		if filepath.Dir(path) != dir { // the accounts; the branch has a file too
			files++
		}
		return integrityCheck(path)
	})
	if err != nil {
		t.Fatalf("the owner's (%s) copy of %s: %v", o.Node, unit, err)
	}
	if files != len(fillerWant)+hots {
		t.Fatalf("the owner's (%s) copy of %s has %d account files, want %d", o.Node, unit, files, len(fillerWant)+hots)
	}
	for i, want := range fillerWant {
		if got := readBalance(t, filepath.Join(dir, fmt.Sprintf("f%03d", i), actors.PartFileName)); got != want {
			t.Fatalf("%s/f%03d on %s: %d, want %d", unit, i, o.Node, got, want)
		}
	}
	for i := range hots {
		path := fmt.Sprintf("%s/h%d", unit, i)
		got := balanceOf(t, nodes[o.Node], path)
		a, u := int(acked[i].Load()), int(unknown[i].Load())
		if got < a || got > a+u {
			t.Fatalf("%s: balance %d, want %d acknowledged deposits (+ up to %d of unknown outcome)", path, got, a, u)
		}
		// From here the outcome of the unknown ones is known.
		applied += got - a
		acked[i].Store(int64(got))
		unknown[i].Store(0)
	}
	// The other node's leftover copy (a kill after the switch, before it
	// removed its files) takes no write.
	stale := filepath.Join(actors.MustParsePath(unit).Dir(filepath.Join(root, rest.name)), "h0", actors.PartFileName)
	before, hasStale := -1, false
	if _, err := os.Stat(stale); err == nil {
		before, hasStale = readBalance(t, stale), true
	}
	for _, p := range nodes {
		want := int(acked[0].Load()) + 1
		var r apiResult
		actortest.Poll(30*time.Second, 100*time.Millisecond, func() bool {
			r = p.call("deposit", unit+"/h0", 1, 0)
			return !notApplied(r)
		})
		if r.Error != "" || r.Value != want {
			t.Fatalf("a deposit to %s/h0 through %s after the move: %+v, want %d", unit, p.name, r, want)
		}
		acked[0].Add(1)
	}
	if got := readBalance(t, filepath.Join(dir, "h0", actors.PartFileName)); got != int(acked[0].Load()) {
		t.Fatalf("the owner's (%s) file of %s/h0: %d, want %d", o.Node, unit, got, acked[0].Load())
	}
	if hasStale {
		if got := readBalance(t, stale); got != before {
			t.Fatalf("%s's leftover copy of %s/h0 was written: %d, was %d", rest.name, unit, got, before)
		}
	}
	if rest.local(unit + "/h0") {
		t.Fatalf("%s serves %s, owned by %s", rest.name, unit, o.Node)
	}
	return applied, hasStale
}

// notApplied reports whether a deposit was refused before anything was
// written: the node it went through knew the owner unable to serve (its
// lease lapsed, as it may on an overloaded machine, or it is down).
func notApplied(r apiResult) bool {
	return r.Code == "unavailable" && (strings.Contains(r.Error, "lease has expired") || strings.Contains(r.Error, " is down"))
}

// balanceOf reads an account's balance through the node, trying again
// for a while if it fails.
func balanceOf(t *testing.T, p *nodeProc, path string) int {
	t.Helper()
	var r apiResult
	if !actortest.Poll(30*time.Second, 100*time.Millisecond, func() bool {
		r = p.call("balance", path, 0, 0)
		return r.Error == ""
	}) {
		t.Fatalf("balance of %s through %s: %s (%s)", path, p.name, r.Error, r.Code)
	}
	return r.Value
}

// loadFlows waits until the load has had a deposit to every hot account
// acknowledged.
func loadFlows(t *testing.T, acked *[killHots]atomic.Int64) {
	t.Helper()
	var from [killHots]int64
	for i := range acked {
		from[i] = acked[i].Load()
	}
	checkFor(t, 30*time.Second, func() bool {
		for i := range acked {
			if acked[i].Load() == from[i] {
				return false
			}
		}
		return true
	})
}

// integrityCheck runs PRAGMA integrity_check on a part file, read-only,
// beside the node that has it open.
func integrityCheck(file string) error {
	ctx := context.Background()
	db, err := persistence.Open(ctx, file, &persistence.Options{ReadOnly: true})
	if err != nil {
		return err
	}
	defer db.Close()
	var res string
	if err := db.View(ctx, func(tx *persistence.Tx) error {
		return tx.QueryRow(`PRAGMA integrity_check`).Scan(&res)
	}); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	if res != "ok" {
		return fmt.Errorf("%s: integrity check: %s", file, res)
	}
	return nil
}

// local asks the node whether it serves path: it owns path's subtree, its
// lease holds and no move of it is under way (the fence lets it write).
func (p *nodeProc) local(path string) bool {
	p.t.Helper()
	resp, err := http.Get(p.url() + "/local?" + url.Values{"path": {path}}.Encode())
	if err != nil {
		p.t.Fatalf("%v (node %s: %s)", err, p.name, p.state())
	}
	defer resp.Body.Close()
	var ok bool
	if err := json.NewDecoder(resp.Body).Decode(&ok); err != nil {
		p.t.Fatal(err)
	}
	return ok
}

// noRetry sends each request once: net/http sends a GET again when its
// connection broke before an answer, which would hide that the first
// attempt reached the node.
var noRetry = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// depositOnce deposits 1 to path through the node, with a POST, which
// net/http never sends twice.
func (p *nodeProc) depositOnce(path string) apiResult {
	q := url.Values{"path": {path}, "op": {"deposit"}, "amount": {"1"}}
	return apiAnswer(noRetry.Post(p.url()+"/request?"+q.Encode(), "", nil))
}
