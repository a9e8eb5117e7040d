//go:build linux

package cluster_test

import (
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
)

// procRequestTimeout is the Config.RequestTimeout of the node program
// (examples/cluster/node.go).
const procRequestTimeout = 10 * time.Second

// A network partition between two nodes that both still reach etcd: each
// node's remote transport is behind a TCP proxy, which the nodes dial
// (-advertise), and which the test cuts. While cut, each node serves its
// own subtrees; a request through a node for the other's subtree is
// refused as unavailable within the request timeout; a durable transfer
// from one node's subtree to the other's is acknowledged by the sender.
// After the heal, every subtree is reached through either node within a
// few seconds, the transfer arrives exactly once, and no write was
// applied by a node that does not own the subtree: each balance is its
// acknowledged deposits plus at most those of unknown outcome.
func TestProcessesPartition(t *testing.T) {
	const partition = 8 * time.Second // more than two lease TTLs: the leases renew through it
	start := time.Now()
	bin, _ := build(t)
	etcd := startEtcd(t, 1)
	root := t.TempDir()
	names := []string{"n1", "n2"}
	proxies := map[string]*tcpProxy{}
	nodes := map[string]*nodeProc{}
	for _, name := range names {
		listen := freePort(t)
		proxies[name] = startProxy(t, listen)
		nodes[name] = startProc(t, bin, name, filepath.Join(root, name), etcd,
			"-listen", listen, "-advertise", proxies[name].addr())
	}
	other := map[string]string{"n1": "n2", "n2": "n1"}

	// Branches through both nodes; each node owns some.
	branches := []string{"p1", "p2", "p3", "p4", "p5", "p6"}
	acct := func(b string) string { return "bank/" + b + "/acct" }
	acked := make([]atomic.Int64, len(branches))
	unknown := make([]atomic.Int64, len(branches))
	early := make([]atomic.Int64, len(branches)) // of the unknown, those sent before the cut
	for i, b := range branches {
		for _, name := range names {
			nodes[name].must("deposit", acct(b), 1)
			acked[i].Add(1)
		}
	}
	owners := nodes["n1"].owners()
	ownerOf := map[string]string{} // branch -> node
	byNode := map[string][]int{}   // node -> indexes of its branches
	for i, b := range branches {
		o := owners["bank/"+b].Node
		ownerOf[b] = o
		byNode[o] = append(byNode[o], i)
	}
	if len(byNode["n1"]) == 0 || len(byNode["n2"]) == 0 {
		t.Fatalf("subtrees per node %v: want both nodes used", byNode)
	}
	for i, b := range branches {
		for _, name := range names {
			if got := nodes[name].must("balance", acct(b), 0); got != int(acked[i].Load()) {
				t.Fatalf("%s through %s: %d, want %d", acct(b), name, got, acked[i].Load())
			}
		}
	}
	// The transfer's accounts: from a branch of n1 to one of n2.
	xfrom := "bank/" + branches[byNode["n1"][0]] + "/xfer"
	xto := "bank/" + branches[byNode["n2"][0]] + "/xfer"
	const xfund, xamount = 100, 7
	nodes["n1"].must("deposit", xfrom, xfund)
	nodes["n2"].must("deposit", xto, 0)
	t.Logf("placed at %v: %v", time.Since(start).Round(time.Millisecond), ownerOf)

	// Deposits to every branch through both nodes, from a moment before
	// the cut to its planned end; then the cut, which lands on requests
	// in flight.
	var wg sync.WaitGroup
	var served atomic.Int64
	var rmu sync.Mutex
	var refusals []time.Duration
	var refusal string // one refusal's error, for the log
	var cutAt atomic.Pointer[time.Time]
	sinceCut := func(at time.Time) (time.Duration, bool) {
		c := cutAt.Load()
		if c == nil || at.Before(*c) {
			return 0, false
		}
		return at.Sub(*c), true
	}
	loadStart := time.Now()
	running := func() bool { return time.Since(loadStart) < 300*time.Millisecond+partition }
	// Through its owner, every deposit is served during the whole cut.
	for i, b := range branches {
		p := nodes[ownerOf[b]]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for running() {
				sent := time.Now()
				r := p.depositOnce(acct(b))
				if r.Error != "" {
					unknown[i].Add(1)
					at, cut := sinceCut(sent)
					if !cut {
						early[i].Add(1)
					}
					t.Errorf("%s through its owner %s during the partition (sent %v after the cut): %s (%s)",
						acct(b), p.name, at.Round(time.Millisecond), r.Error, r.Code)
					time.Sleep(50 * time.Millisecond)
					continue
				}
				acked[i].Add(1)
				if _, cut := sinceCut(sent); cut {
					served.Add(1)
				}
			}
		}()
	}
	// Through the other node, a deposit sent after the cut is refused as
	// unavailable, within the request timeout. One sent before may have
	// been applied without an answer: its outcome is unknown too.
	for i, b := range branches {
		p := nodes[other[ownerOf[b]]]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for running() {
				sent := time.Now()
				r := p.depositOnce(acct(b))
				took := time.Since(sent)
				at, cut := sinceCut(sent)
				switch {
				case r.Error == "" && !cut:
					acked[i].Add(1)
					continue
				case r.Error == "":
					acked[i].Add(1)
					t.Errorf("%s through %s, cut off from its owner %s: acknowledged (%d), sent %v after the cut",
						acct(b), p.name, ownerOf[b], r.Value, at.Round(time.Millisecond))
					continue
				}
				unknown[i].Add(1)
				if !cut {
					early[i].Add(1)
				}
				if took > procRequestTimeout+5*time.Second {
					t.Errorf("%s through %s, cut off from its owner %s: refused after %v (request timeout %v): %s",
						acct(b), p.name, ownerOf[b], took.Round(time.Millisecond), procRequestTimeout, r.Error)
				}
				if cut {
					rmu.Lock()
					refusals = append(refusals, took)
					refusal = r.Error
					rmu.Unlock()
					if r.Code != "unavailable" {
						t.Errorf("%s through %s, cut off from its owner %s: %s (%s) after %v, want unavailable",
							acct(b), p.name, ownerOf[b], r.Error, r.Code, took.Round(time.Millisecond))
					}
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
	// And a slow deposit (the handler sleeps a second) through each node
	// to a branch of the other, surely in flight when the cut comes: the
	// owner applies it, its answer is lost. It is refused as unavailable
	// as soon as the connection breaks, within the request timeout at
	// worst, not at the end of the caller's deadline.
	inflight := make([]time.Duration, len(names))
	for k, name := range names {
		i := byNode[other[name]][0]
		p := nodes[name]
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := url.Values{"path": {acct(branches[i])}, "op": {"deposit"}, "amount": {"1"}, "sleep": {"1s"}}
			sent := time.Now()
			r := apiAnswer(noRetry.Post(p.url()+"/request?"+q.Encode(), "", nil))
			inflight[k] = time.Since(sent)
			if r.Error == "" {
				acked[i].Add(1)
				t.Errorf("a slow deposit to %s through %s, in flight at the cut: acknowledged (%d)", acct(branches[i]), name, r.Value)
				return
			}
			unknown[i].Add(1)
			if _, cut := sinceCut(sent); !cut {
				early[i].Add(1)
			}
			if r.Code != "unavailable" || inflight[k] > procRequestTimeout+5*time.Second {
				t.Errorf("a slow deposit to %s through %s, in flight at the cut: %s (%s) after %v, want unavailable within %v",
					acct(branches[i]), name, r.Error, r.Code, inflight[k].Round(time.Millisecond), procRequestTimeout+5*time.Second)
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	for _, name := range names {
		proxies[name].cut()
	}
	now := time.Now()
	cutAt.Store(&now)
	// A durable transfer from n1's subtree to n2's: n1 acknowledges it.
	time.Sleep(500 * time.Millisecond)
	if got := nodes["n1"].transfer(xfrom, xto, xamount); got != xfund-xamount {
		t.Fatalf("transfer %s -> %s during the partition: balance %d, want %d", xfrom, xto, got, xfund-xamount)
	}
	transferAt := time.Since(now)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if got := nodes["n2"].must("balance", xto, 0); got != 0 {
		t.Fatalf("%s during the partition: %d, want 0: the transfer crossed the cut", xto, got)
	}
	cutFor := time.Since(now)

	// The heal: every subtree through either node within a few seconds.
	for _, name := range names {
		proxies[name].heal()
	}
	healAt := time.Now()
	for _, name := range names {
		for _, b := range branches {
			actortest.CheckFor(t, procRequestTimeout+5*time.Second, 20*time.Millisecond, func() error {
				if r := nodes[name].call("balance", acct(b), 0, 0); r.Error != "" {
					return fmt.Errorf("%s through %s %v after the heal: %s (%s)", acct(b), name, time.Since(healAt).Round(time.Millisecond), r.Error, r.Code)
				}
				return nil
			})
		}
	}
	healed := time.Since(healAt)
	if healed > 5*time.Second {
		t.Errorf("every subtree reached through both nodes only %v after the heal", healed.Round(time.Millisecond))
	}
	// The transfer arrives, once.
	actortest.CheckFor(t, 45*time.Second-time.Since(healAt), 50*time.Millisecond, func() error {
		r := nodes["n1"].call("balance", xto, 0, 0)
		if r.Error == "" && r.Value != 0 && r.Value != xamount {
			t.Fatalf("%s after the heal: %d, want %d", xto, r.Value, xamount)
		}
		if r.Error != "" || r.Value != xamount {
			return fmt.Errorf("the transfer made during the partition did not arrive within %v of the heal: %+v", time.Since(healAt).Round(time.Millisecond), r)
		}
		return nil
	})
	delivered := time.Since(healAt)

	// No write applied by a non-owner: the owners did not change, each
	// balance is its acknowledged deposits plus at most those of unknown
	// outcome, and no node has files of the other's branches.
	for _, name := range names {
		o := nodes[name].owners()
		for _, b := range branches {
			if o["bank/"+b].Node != ownerOf[b] || o["bank/"+b].Epoch != owners["bank/"+b].Epoch {
				t.Fatalf("through %s bank/%s is %+v after the partition, was %+v", name, b, o["bank/"+b], owners["bank/"+b])
			}
		}
	}
	var applied, unknowns, earlies int
	for i, b := range branches {
		got := nodes[other[ownerOf[b]]].must("balance", acct(b), 0)
		a, u := int(acked[i].Load()), int(unknown[i].Load())
		if got < a || got > a+u {
			t.Fatalf("%s: balance %d, want %d acknowledged deposits (+ up to %d of unknown outcome)", acct(b), got, a, u)
		}
		// Those sent after the cut could not reach the owner, then or
		// after the heal: refused, never applied.
		if e := int(early[i].Load()); got > a+e {
			t.Fatalf("%s: balance %d: %d acknowledged deposits, %d of unknown outcome sent before the cut, so %d sent during the partition and refused were applied",
				acct(b), got, a, e, got-a-e)
		}
		if f := readBalance(t, filepath.Join(actors.MustParsePath(acct(b)).Dir(filepath.Join(root, ownerOf[b])), actors.PartFileName)); f != got {
			t.Fatalf("%s: the owner's (%s) file says %d, the node %d", acct(b), ownerOf[b], f, got)
		}
		if _, err := os.Stat(actors.MustParsePath("bank/" + b).Dir(filepath.Join(root, other[ownerOf[b]]))); !os.IsNotExist(err) {
			t.Fatalf("%s, not the owner of bank/%s, has its directory: %v", other[ownerOf[b]], b, err)
		}
		applied += got - a
		unknowns += u
		earlies += int(early[i].Load())
	}
	// Once: nothing more arrives, and the debit is there once.
	time.Sleep(time.Second)
	for _, c := range []struct {
		path string
		want int
	}{{xfrom, xfund - xamount}, {xto, xamount}} {
		for _, name := range names {
			if got := nodes[name].must("balance", c.path, 0); got != c.want {
				t.Fatalf("%s through %s after the heal: %d, want %d", c.path, name, got, c.want)
			}
		}
	}
	files := 0
	for _, name := range names {
		err := filepath.WalkDir(filepath.Join(root, name), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.Name() != actors.PartFileName {
				return err
			}
			files++
			return integrityCheck(path)
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	slices.Sort(refusals)
	p50, slowest := time.Duration(0), time.Duration(0)
	if len(refusals) > 0 {
		p50, slowest = refusals[len(refusals)/2], refusals[len(refusals)-1]
	}
	if len(refusals) == 0 {
		t.Fatal("no request through a node for the other's subtree ended during the partition")
	}
	var accepted, refused int64
	for _, name := range names {
		accepted += proxies[name].accepted.Load()
		refused += proxies[name].refused.Load()
	}
	t.Logf("partition: cut %v (both leases held, owners unchanged); %d deposits served through their owners during it; "+
		"%d cross-node requests refused as unavailable, latency p50 %v max %v (request timeout %v); slow ones in flight at the cut refused after %v; "+
		"every subtree through both nodes %v after the heal; durable transfer made %v into the cut delivered %v after the heal, once; "+
		"%d deposits of unknown outcome (%d sent before the cut), %d applied; %d files intact; proxies: %d connections accepted, %d refused; total %v; a refusal: %s",
		cutFor.Round(time.Millisecond), served.Load(), len(refusals), p50.Round(time.Millisecond), slowest.Round(time.Millisecond), procRequestTimeout, roundAll(inflight),
		healed.Round(time.Millisecond), transferAt.Round(time.Millisecond), delivered.Round(time.Millisecond),
		unknowns, earlies, applied, files, accepted, refused, time.Since(start).Round(time.Millisecond), refusal)
	for _, p := range nodes {
		if w, ok := p.cmd.Stderr.(*prefixWriter); ok {
			w.done.Store(true)
		}
	}
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

// freePort returns a loopback address with a port free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// tcpProxy forwards each connection it accepts to target; cut closes the
// open ones and has it close new ones at once, heal lets them through
// again.
type tcpProxy struct {
	l        net.Listener
	target   string
	mu       sync.Mutex
	down     bool
	conns    map[net.Conn]struct{}
	accepted atomic.Int64
	refused  atomic.Int64
}

func startProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{l: l, target: target, conns: map[net.Conn]struct{}{}}
	go p.serve()
	t.Cleanup(func() {
		l.Close()
		p.cut()
	})
	return p
}

func (p *tcpProxy) addr() string { return p.l.Addr().String() }

func (p *tcpProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		go p.forward(c)
	}
}

func (p *tcpProxy) forward(c net.Conn) {
	if !p.track(c) {
		p.refused.Add(1)
		c.Close()
		return
	}
	p.accepted.Add(1)
	defer p.untrack(c)
	u, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		return
	}
	if !p.track(u) {
		u.Close()
		return
	}
	defer p.untrack(u)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		// One way ended: end both, as a cut would.
		dst.Close()
		src.Close()
		done <- struct{}{}
	}
	go pipe(u, c)
	go pipe(c, u)
	<-done
	<-done
}

// track notes an open connection, unless the proxy is cut.
func (p *tcpProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *tcpProxy) untrack(c net.Conn) {
	c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// cut closes every open connection and refuses new ones until heal.
func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
}

func (p *tcpProxy) heal() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}
