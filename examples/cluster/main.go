// Command cluster runs a fractal cluster of three nodes on this machine and
// drives traffic through it: an embedded three-member etcd (in this
// process) holds the ownership table, each node is a process of its own
// (this program again, with -node) with its own data directory, and every
// request goes to a random node, which serves it or forwards it to the
// branch's owner. Then one branch is moved to another node while deposits
// keep arriving, and the balances show that nothing was lost.
//
//	go run ./examples/cluster [-data DIR]
//
// exits 0 when everything checked out. Everything listens on 127.0.0.1.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fractalrt/fractal/cluster"
	"github.com/fractalrt/fractal/cluster/etcdlocal"
)

func main() {
	node := flag.String("node", "", "run as the cluster node of this name (used by the driver)")
	data := flag.String("data", "", "data directory (default: a temporary one, removed at exit)")
	etcd := flag.String("etcd", "", "etcd endpoints, comma-separated (with -node)")
	listen := flag.String("listen", "127.0.0.1:0", "address of the node's remote transport (with -node)")
	advertise := flag.String("advertise", "", "with -node: host:port other nodes dial to reach this node's remote transport (a proxy in front of -listen); by default the address it listens on")
	api := flag.String("http", "127.0.0.1:0", "address of the node's HTTP API (with -node; loopback only)")
	ttl := flag.Duration("ttl", 3*time.Second, "lease TTL of the nodes")
	tlsDir := flag.String("tls", "", "with -node: secure the remote transport with DIR/ca.crt, DIR/node.crt and DIR/node.key (mutual TLS)")
	etcdTLSDir := flag.String("etcd-tls", "", "with -node: connect to etcd over TLS, trusting DIR/ca.crt and presenting DIR/node.crt and DIR/node.key")
	startTimeout := flag.Duration("start-timeout", time.Minute, "with -node: give up joining the cluster (reaching etcd, registering) after this long")
	flag.Parse()
	var err error
	if *node != "" {
		err = runNode(nodeFlags{
			name: *node, data: *data, etcd: *etcd, listen: *listen, advertise: *advertise, http: *api, ttl: *ttl,
			tlsDir: *tlsDir, etcdTLSDir: *etcdTLSDir, startTimeout: *startTimeout,
		})
	} else {
		err = drive(*data, *ttl)
	}
	if err != nil {
		msg := err.Error()
		if !strings.HasPrefix(msg, "cluster: ") {
			msg = "cluster: " + msg
		}
		fmt.Fprintln(os.Stderr, msg)
		os.Exit(1)
	}
}

// proc is one node process.
type proc struct {
	name string
	cmd  *exec.Cmd
	api  string // base URL of its HTTP API
}

func drive(data string, ttl time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if data == "" {
		tmp, err := os.MkdirTemp("", "fractal-cluster-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		data = tmp
	}
	start := time.Now()
	etcd, err := etcdlocal.Start(ctx, filepath.Join(data, "etcd"), 3)
	if err != nil {
		return err
	}
	defer etcd.Close()
	fmt.Printf("etcd: 3 members at %s\n", strings.Join(etcd.Endpoints(), ", "))
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	var procs []*proc
	defer func() {
		for _, p := range procs {
			p.stop()
		}
	}()
	for _, name := range []string{"n1", "n2", "n3"} {
		p, err := startProc(ctx, exe, name, filepath.Join(data, name), etcd.Endpoints(), ttl)
		if err != nil {
			return err
		}
		procs = append(procs, p)
		fmt.Printf("node %s: pid %d, API %s\n", name, p.cmd.Process.Pid, p.api)
	}

	// Traffic: every account gets deposits through every node.
	branches := []string{"paris", "lyon", "nantes", "lille", "brest", "nice"}
	accounts := []string{"alice", "bob", "carol"}
	served := map[string]int{} // "through -> owner"
	var smu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, len(branches)*len(accounts)*len(procs))
	for _, b := range branches {
		for _, a := range accounts {
			for _, p := range procs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := p.deposit(ctx, "bank/"+b+"/"+a, 10); err != nil {
						errs <- err
						return
					}
					smu.Lock()
					served[p.name]++
					smu.Unlock()
				}()
			}
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	owners, err := procs[0].owners(ctx)
	if err != nil {
		return err
	}
	fmt.Println("\nbranch     owner  balances (each account got 10 through each node)")
	for _, b := range branches {
		var bal []string
		for _, a := range accounts {
			v, err := procs[rand.IntN(len(procs))].balance(ctx, "bank/"+b+"/"+a)
			if err != nil {
				return err
			}
			if v != 30 {
				return fmt.Errorf("bank/%s/%s: balance %d, want 30", b, a, v)
			}
			bal = append(bal, fmt.Sprintf("%s=%d", a, v))
		}
		fmt.Printf("%-10s %-6s %s\n", b, owners["bank/"+b].Node, strings.Join(bal, " "))
	}
	perNode := map[string]int{}
	for _, o := range owners {
		perNode[o.Node]++
	}
	fmt.Printf("subtrees per node: %v; requests taken per node: %v\n", sortedMap(perNode), sortedMap(served))

	// A planned move under load.
	const unit = "bank/paris"
	from := owners[unit].Node
	to := "n1"
	if from == "n1" {
		to = "n2"
	}
	var acked, failed atomic.Int64
	lctx, stopLoad := context.WithCancel(ctx)
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for lctx.Err() == nil {
				if _, err := p.deposit(ctx, unit+"/alice", 1); err != nil {
					failed.Add(1)
					fmt.Fprintln(os.Stderr, "deposit during the move:", err)
				} else {
					acked.Add(1)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	before := acked.Load()
	t0 := time.Now()
	if err := procs[2].move(ctx, unit, to); err != nil {
		stopLoad()
		wg.Wait()
		return err
	}
	took := time.Since(t0)
	time.Sleep(300 * time.Millisecond)
	stopLoad()
	wg.Wait()
	v, err := procs[0].balance(ctx, unit+"/alice")
	if err != nil {
		return err
	}
	owners, err = procs[1].owners(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("\nmoved %s from %s to %s in %v (asked through n3) while deposits went on: %d acknowledged (%d before the move began), %d failed\n",
		unit, from, owners[unit].Node, took.Round(time.Millisecond), acked.Load(), before, failed.Load())
	fmt.Printf("%s/alice balance %d = 30 + %d acknowledged deposits\n", unit, v, acked.Load())
	if owners[unit].Node != to || failed.Load() != 0 || v != 30+int(acked.Load()) {
		return errors.New("the move lost or refused deposits")
	}
	fmt.Printf("\nall checks passed in %v\n", time.Since(start).Round(time.Millisecond))
	return nil
}

func sortedMap(m map[string]int) string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", k, m[k])
	}
	return b.String()
}

// startProc starts a node process and waits for its API address.
func startProc(ctx context.Context, exe, name, data string, etcd []string, ttl time.Duration) (*proc, error) {
	cmd := exec.Command(exe, "-node", name, "-data", data, "-etcd", strings.Join(etcd, ","), "-ttl", ttl.String())
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{name: name, cmd: cmd}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "LISTEN "); ok {
				addr <- a
			}
		}
	}()
	select {
	case a := <-addr:
		p.api = "http://" + a
		return p, nil
	case <-ctx.Done():
		p.stop()
		return nil, fmt.Errorf("node %s did not start: %w", name, ctx.Err())
	case <-time.After(time.Minute):
		p.stop()
		return nil, fmt.Errorf("node %s did not start", name)
	}
}

// stop ends the node with SIGTERM, then SIGKILL if it lingers.
func (p *proc) stop() {
	if p.cmd.ProcessState != nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}

type result struct {
	Value int    `json:"value"`
	Error string `json:"error"`
	Code  string `json:"code"`
}

func (p *proc) get(ctx context.Context, path string, q url.Values, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.api+path+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var b strings.Builder
		bufio.NewReader(resp.Body).WriteTo(&b)
		return fmt.Errorf("%s %s: %s", p.name, path, strings.TrimSpace(b.String()))
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func (p *proc) request(ctx context.Context, q url.Values) (int, error) {
	var r result
	if err := p.get(ctx, "/request", q, &r); err != nil {
		return 0, err
	}
	if r.Error != "" {
		return 0, fmt.Errorf("%s: %s (%s)", p.name, r.Error, r.Code)
	}
	return r.Value, nil
}

func (p *proc) deposit(ctx context.Context, path string, amount int) (int, error) {
	return p.request(ctx, url.Values{"path": {path}, "op": {"deposit"}, "amount": {fmt.Sprint(amount)}})
}

func (p *proc) balance(ctx context.Context, path string) (int, error) {
	return p.request(ctx, url.Values{"path": {path}, "op": {"balance"}})
}

func (p *proc) owners(ctx context.Context) (map[string]cluster.Owner, error) {
	var o map[string]cluster.Owner
	return o, p.get(ctx, "/owners", nil, &o)
}

func (p *proc) move(ctx context.Context, unit, to string) error {
	var s string
	err := p.get(ctx, "/move", url.Values{"unit": {unit}, "to": {to}}, &s)
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return nil // "moved", not JSON
	}
	return err
}
