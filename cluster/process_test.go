//go:build linux

package cluster_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fractalrt/fractal/cluster"
	"github.com/fractalrt/fractal/cluster/etcdlocal"
	"github.com/fractalrt/fractal/persistence"
)

// The multi-process tests run three node processes (the examples/cluster
// program with -node, built once) on 127.0.0.1, and a three-member etcd
// embedded in the test process. Each node has an HTTP API on a loopback
// port through which the test sends requests (see examples/cluster/node.go).

const procTTL = 3 * time.Second

type nodeProc struct {
	t    *testing.T
	name string
	data string
	etcd []string
	bin  string
	cmd  *exec.Cmd
	api  atomic.Pointer[string] // base URL of the HTTP API: set again by a restart, read by loaders meanwhile
	exit chan struct{}
	args []string // more arguments

	killing atomic.Bool // the test is killing it
}

var built struct {
	once sync.Once
	dir  string
	err  error
	out  []byte
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// build builds the node (examples/cluster) and the fractal command, once
// for all the tests, with the race detector when the tests have it.
func build(t *testing.T) (node, fractal string) {
	t.Helper()
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "fractal-cluster-test-"); built.err != nil {
			return
		}
		args := []string{"build", "-o", built.dir}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "../examples/cluster", "../cmd/fractal")...)
		built.out, built.err = cmd.CombinedOutput()
	})
	if built.err != nil {
		t.Fatalf("building the node: %v\n%s", built.err, built.out)
	}
	return filepath.Join(built.dir, "cluster"), filepath.Join(built.dir, "fractal")
}

func startProc(t *testing.T, bin, name, data string, etcd []string, args ...string) *nodeProc {
	t.Helper()
	p := &nodeProc{t: t, name: name, data: data, etcd: etcd, bin: bin, args: args}
	p.start()
	t.Cleanup(p.kill)
	return p
}

func (p *nodeProc) start() {
	p.t.Helper()
	cmd := exec.Command(p.bin, append([]string{"-node", p.name, "-data", p.data, "-etcd", strings.Join(p.etcd, ","), "-ttl", procTTL.String()}, p.args...)...)
	cmd.Stderr = &prefixWriter{t: p.t, prefix: p.name + ": "}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // not left behind if the test dies
	out, err := cmd.StdoutPipe()
	if err != nil {
		p.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.cmd, p.exit = cmd, make(chan struct{})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "LISTEN "); ok {
				addr <- a
			}
		}
		err := cmd.Wait()
		if w, ok := cmd.Stderr.(*prefixWriter); ok && !w.done.Load() && !p.killing.Load() {
			p.t.Logf("%s: exited: %v", p.name, err)
		}
		close(p.exit)
	}()
	select {
	case a := <-addr:
		u := "http://" + a
		p.api.Store(&u)
	case <-p.exit:
		p.t.Fatalf("node %s exited before it listened", p.name)
	case <-time.After(time.Minute):
		p.kill()
		p.t.Fatalf("node %s did not start", p.name)
	}
}

// url returns the base URL of the node's HTTP API.
func (p *nodeProc) url() string { return *p.api.Load() }

// kill ends the process at once (SIGKILL) and waits for it.
func (p *nodeProc) kill() {
	if p.cmd == nil || p.exit == nil {
		return
	}
	p.killing.Store(true)
	p.cmd.Process.Kill()
	<-p.exit
	p.killing.Store(false)
}

func (p *nodeProc) signal(s syscall.Signal) {
	if err := p.cmd.Process.Signal(s); err != nil {
		p.t.Fatal(err)
	}
}

type prefixWriter struct {
	t      *testing.T
	prefix string
	mu     sync.Mutex
	done   atomic.Bool
}

func (w *prefixWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if strings.Contains(line, "WARNING: DATA RACE") {
			w.t.Errorf("%sdata race (see the log)", w.prefix)
		}
		if line != "" && !w.done.Load() {
			w.t.Log(w.prefix + line)
		}
	}
	return len(b), nil
}

var httpClient = &http.Client{Timeout: 30 * time.Second}

type apiResult struct {
	Value int    `json:"value"`
	Error string `json:"error"`
	Code  string `json:"code"`
	Node  string `json:"node"`
}

func (p *nodeProc) call(op, path string, amount int, sleep time.Duration) apiResult {
	p.t.Helper()
	q := url.Values{"path": {path}, "op": {op}, "amount": {fmt.Sprint(amount)}, "sleep": {sleep.String()}}
	return apiAnswer(httpClient.Get(p.url() + "/request?" + q.Encode()))
}

// apiAnswer decodes the answer of a node's /request, or says why there is
// none (code "http").
func apiAnswer(resp *http.Response, err error) apiResult {
	if err != nil {
		return apiResult{Error: err.Error(), Code: "http"}
	}
	defer resp.Body.Close()
	var r apiResult
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return apiResult{Error: err.Error(), Code: "http"}
	}
	return r
}

func (p *nodeProc) transfer(from, to string, amount int) int {
	p.t.Helper()
	q := url.Values{"path": {from}, "op": {"transfer"}, "to": {to}, "amount": {fmt.Sprint(amount)}}
	resp, err := httpClient.Get(p.url() + "/request?" + q.Encode())
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	var r apiResult
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || r.Error != "" {
		p.t.Fatalf("transfer %s -> %s through %s: %v %s", from, to, p.name, err, r.Error)
	}
	return r.Value
}

func (p *nodeProc) must(op, path string, amount int) int {
	p.t.Helper()
	r := p.call(op, path, amount, 0)
	if r.Error != "" {
		p.t.Fatalf("%s %s through %s: %s (%s)", op, path, p.name, r.Error, r.Code)
	}
	return r.Value
}

func (p *nodeProc) owners() map[string]cluster.Owner {
	p.t.Helper()
	resp, err := http.Get(p.url() + "/owners")
	if err != nil {
		p.t.Fatalf("%v (node %s: %s)", err, p.name, p.state())
	}
	defer resp.Body.Close()
	var o map[string]cluster.Owner
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &o); err != nil {
		p.t.Fatal(err)
	}
	return o
}

// Three node processes and a three-member etcd: requests through any node
// reach every subtree; a move under load loses nothing; kill -9 of a node
// leaves the others serving and its subtrees come back with it; a node
// whose lease expired while it was frozen (SIGSTOP) in the middle of a
// write refuses that write.
func TestProcesses(t *testing.T) {
	start := time.Now()
	bin, fractal := build(t)
	t.Logf("built the node and the fractal command in %v", time.Since(start).Round(time.Millisecond))
	etcd := startEtcd(t, 3)
	root := t.TempDir()
	var procs []*nodeProc
	for _, name := range []string{"n1", "n2", "n3"} {
		procs = append(procs, startProc(t, bin, name, filepath.Join(root, name), etcd))
	}
	byName := func(name string) *nodeProc {
		for _, p := range procs {
			if p.name == name {
				return p
			}
		}
		t.Fatalf("no node %s", name)
		return nil
	}

	// Requests from any node reach every subtree.
	branches := []string{"b1", "b2", "b3", "b4", "b5", "b6"}
	var wg sync.WaitGroup
	for _, b := range branches {
		for _, p := range procs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := p.call("deposit", "bank/"+b+"/acct", 10, 0)
				if r.Error != "" {
					t.Errorf("deposit to %s through %s: %s", b, p.name, r.Error)
				}
			}()
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	owners := procs[0].owners()
	perNode := map[string]int{}
	for _, b := range branches {
		perNode[owners["bank/"+b].Node]++
		for _, p := range procs {
			if got := p.must("balance", "bank/"+b+"/acct", 0); got != 30 {
				t.Fatalf("bank/%s through %s: %d, want 30", b, p.name, got)
			}
		}
	}
	if len(perNode) != 3 {
		t.Fatalf("subtrees per node %v: want all three nodes used", perNode)
	}
	t.Logf("routing checked at %v; subtrees per node %v", time.Since(start).Round(time.Millisecond), perNode)

	// A move under load loses nothing.
	unit := "bank/b1"
	from := owners[unit].Node
	to := map[string]string{"n1": "n2", "n2": "n3", "n3": "n1"}[from]
	var acked atomic.Int64
	var failures []string
	var fmu sync.Mutex
	ctx, stop := context.WithCancel(context.Background())
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if r := p.call("deposit", unit+"/acct", 1, 0); r.Error != "" {
					fmu.Lock()
					failures = append(failures, p.name+": "+r.Error)
					fmu.Unlock()
				} else {
					acked.Add(1)
				}
			}
		}()
	}
	// Under load: deposits flow before the move starts, and after it ends.
	checkFor(t, 30*time.Second, func() bool { return acked.Load() >= int64(10*len(procs)) })
	cli := etcdClient(t, etcd)
	out, err := exec.Command(fractal, "move", "-etcd", strings.Join(etcd, ","), unit, to).CombinedOutput()
	moved := acked.Load()
	checkFor(t, 30*time.Second, func() bool { return acked.Load() >= moved+int64(10*len(procs)) })
	stop()
	wg.Wait()
	if err != nil {
		t.Fatalf("fractal move: %v\n%s", err, out)
	}
	t.Logf("fractal move: %s", strings.TrimSpace(string(out)))
	out, err = exec.Command(fractal, "move", "-etcd", strings.Join(etcd, ","), unit+"/acct", from).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "placement depth") {
		t.Fatalf("moving a part below the placement depth: %v\n%s", err, out)
	}
	for _, f := range failures {
		t.Errorf("deposit during the move: %s", f)
	}
	if got := procs[0].must("balance", unit+"/acct", 0); got != 30+int(acked.Load()) {
		t.Fatalf("after the move %s = %d, want 30 + %d acknowledged", unit, got, acked.Load())
	}
	checkFor(t, 5*time.Second, func() bool { return procs[1].owners()[unit].Node == to })
	if _, err := os.Stat(filepath.Join(root, from, "bank", "b1")); !os.IsNotExist(err) {
		t.Fatalf("the old owner kept the moved files: %v", err)
	}
	t.Logf("moved %s from %s to %s under load (%d deposits) at %v", unit, from, to, acked.Load(), time.Since(start).Round(time.Millisecond))

	// kill -9 of one node: the others keep serving, its subtrees are
	// unavailable with a clear error, and come back when it restarts.
	victim := byName(to) // owns b1 now, and others
	victim.kill()
	var alive []*nodeProc
	for _, p := range procs {
		if p != victim {
			alive = append(alive, p)
		}
	}
	owners = alive[0].owners()
	var mine, theirs []string
	for _, b := range branches {
		if owners["bank/"+b].Node == victim.name {
			mine = append(mine, b)
		} else {
			theirs = append(theirs, b)
		}
	}
	checkFor(t, 3*procTTL, func() bool {
		r := alive[0].call("balance", "bank/"+mine[0]+"/acct", 0, 0)
		return r.Code == "unavailable"
	})
	for _, b := range theirs {
		for _, p := range alive {
			if got := p.must("deposit", "bank/"+b+"/acct", 1); got < 31 {
				t.Fatalf("bank/%s through %s while %s is down: %d", b, p.name, victim.name, got)
			}
		}
	}
	for _, b := range mine {
		if r := alive[1].call("deposit", "bank/"+b+"/acct", 1, 0); r.Code != "unavailable" {
			t.Fatalf("deposit to bank/%s on the dead node: %+v, want unavailable", b, r)
		}
	}
	// New subtrees are still placed, on live nodes (by a new controller
	// if the dead node was it).
	for i, p := range alive {
		path := fmt.Sprintf("bank/new%d/acct", i)
		if got := p.must("deposit", path, 7); got != 7 {
			t.Fatalf("%s: %d, want 7", path, got)
		}
		if o := p.owners()[fmt.Sprintf("bank/new%d", i)]; o.Node == victim.name {
			t.Fatalf("bank/new%d placed on the dead node", i)
		}
	}
	// A durable message to the dead node's subtree waits at its sender
	// and is delivered when the node is back.
	transferTo := "bank/" + mine[0] + "/acct"
	if got := alive[0].transfer("bank/"+theirs[0]+"/acct", transferTo, 5); got < 0 {
		t.Fatalf("transfer: balance %d", got)
	}
	victim.start()
	checkFor(t, 20*time.Second, func() bool {
		r := alive[1].call("balance", transferTo, 0, 0)
		want := 30 + 5
		if transferTo == unit+"/acct" {
			want += int(acked.Load())
		}
		return r.Error == "" && r.Value == want
	})
	t.Logf("a durable transfer to %s made while its node was down arrived after its return", transferTo)
	for _, b := range mine {
		if b == mine[0] {
			continue // checked above
		}
		want := 30
		if "bank/"+b == unit {
			want = 30 + int(acked.Load())
		}
		checkFor(t, 3*procTTL, func() bool {
			r := alive[0].call("balance", "bank/"+b+"/acct", 0, 0)
			return r.Error == "" && r.Value == want
		})
	}
	t.Logf("killed and restarted %s (owner of %v) at %v", victim.name, mine, time.Since(start).Round(time.Millisecond))

	// A stale owner's write is refused: the owner of a branch is frozen in
	// the middle of a write for longer than its lease; when it thaws its
	// lease has expired, and the write is rolled back, not acknowledged.
	owners = procs[0].owners()
	stale := byName(owners["bank/b2"].Node)
	via := procs[0]
	if via == stale {
		via = procs[1]
	}
	before := via.must("balance", "bank/b2/acct", 0)
	got := make(chan apiResult, 1)
	go func() { got <- stale.call("deposit", "bank/b2/acct", 1000, time.Second) }()
	time.Sleep(300 * time.Millisecond)
	stale.signal(syscall.SIGSTOP)
	checkFor(t, 3*procTTL, func() bool {
		return via.call("balance", "bank/b2/acct", 0, 0).Code == "unavailable"
	})
	stale.signal(syscall.SIGCONT)
	r := <-got
	if r.Code != "fenced" {
		t.Fatalf("write of a node whose lease expired: %+v, want fenced", r)
	}
	checkFor(t, 3*procTTL, func() bool {
		r := via.call("balance", "bank/b2/acct", 0, 0)
		return r.Error == "" && r.Value == before
	})
	t.Logf("lease-expired write refused with: %s", r.Error)

	// A stale epoch: the table gives a branch to another node (epoch + 1)
	// behind its owner's back while the owner is in the middle of a
	// write. The owner refuses to commit it; the caller gets fenced.
	owners = procs[0].owners()
	old := owners["bank/b3"]
	owner := byName(old.Node)
	other := procs[0]
	if other == owner {
		other = procs[1]
	}
	before = other.must("balance", "bank/b3/acct", 0)
	go func() { got <- other.call("deposit", "bank/b3/acct", 1000, time.Second) }()
	time.Sleep(300 * time.Millisecond)
	put := func(o cluster.Owner) {
		b, _ := json.Marshal(o)
		if _, err := cli.Put(context.Background(), "/fractal/owners/bank/b3", string(b)); err != nil {
			t.Fatal(err)
		}
	}
	put(cluster.Owner{Node: other.name, Epoch: old.Epoch + 1})
	if r := <-got; r.Code != "fenced" {
		t.Fatalf("write of a node whose epoch is stale: %+v, want fenced", r)
	}
	if got := readBalance(t, filepath.Join(root, owner.name, "bank", "b3", "acct", "_part.db")); got != before {
		t.Fatalf("the stale owner's file says %d, want %d: the fenced write was committed", got, before)
	}
	put(cluster.Owner{Node: owner.name, Epoch: old.Epoch + 2}) // back, so the files serve again
	checkFor(t, 5*time.Second, func() bool {
		r := other.call("balance", "bank/b3/acct", 0, 0)
		return r.Error == "" && r.Value == before
	})

	// A move whose target freezes fails; the subtree stays with its owner,
	// with everything acknowledged meanwhile, and serves on.
	owners = procs[0].owners()
	src := byName(owners["bank/b4"].Node)
	var dst, client *nodeProc
	for _, p := range procs {
		switch {
		case p == src:
		case dst == nil:
			dst = p
		default:
			client = p
		}
	}
	before = client.must("balance", "bank/b4/acct", 0)
	acked.Store(0)
	ctx, stop = context.WithCancel(context.Background())
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if r := client.call("deposit", "bank/b4/acct", 1, 0); r.Error == "" {
				acked.Add(1)
			}
		}
	}()
	dst.signal(syscall.SIGSTOP)
	out, err = exec.Command(fractal, "move", "-etcd", strings.Join(etcd, ","), "bank/b4", dst.name).CombinedOutput()
	dst.signal(syscall.SIGCONT)
	failed := acked.Load()
	checkFor(t, 30*time.Second, func() bool { return acked.Load() >= failed+10 }) // it serves on
	stop()
	wg.Wait()
	if err == nil || !strings.Contains(string(out), "move failed") {
		t.Fatalf("a move to a frozen node: %v\n%s", err, out)
	}
	t.Logf("move to a frozen node: %s", strings.TrimSpace(string(out)))
	if o := client.owners()["bank/b4"]; o != owners["bank/b4"] {
		t.Fatalf("after a failed move bank/b4 is %+v, want %+v", o, owners["bank/b4"])
	}
	if got := client.must("balance", "bank/b4/acct", 0); got != before+int(acked.Load()) {
		t.Fatalf("after a failed move bank/b4 = %d, want %d + %d acknowledged", got, before, acked.Load())
	}
	t.Logf("all checked in %v", time.Since(start).Round(time.Millisecond))
	for _, p := range procs {
		if w, ok := p.cmd.Stderr.(*prefixWriter); ok {
			w.done.Store(true)
		}
	}
}

// readBalance reads an account's balance from its file, read-only, beside
// the node that has it open.
func readBalance(t *testing.T, file string) int {
	t.Helper()
	db, err := persistence.Open(context.Background(), file, &persistence.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.View(context.Background(), func(tx *persistence.Tx) error {
		return tx.QueryRow(`SELECT n FROM balance`).Scan(&n)
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// state describes the process: running, or how it ended.
func (p *nodeProc) state() string {
	select {
	case <-p.exit:
		return "exited: " + p.cmd.ProcessState.String()
	case <-time.After(100 * time.Millisecond):
		return "running"
	}
}

// With TLS configured, nodes reach each other over mutual TLS, and a node
// without the cluster's certificate cannot reach them.
func TestProcessesTLS(t *testing.T) {
	bin, _ := build(t)
	certs := t.TempDir()
	writeCerts(t, certs)
	etcd := startEtcd(t, 1)
	root := t.TempDir()
	n1 := startProc(t, bin, "n1", filepath.Join(root, "n1"), etcd, "-tls", certs)
	n2 := startProc(t, bin, "n2", filepath.Join(root, "n2"), etcd, "-tls", certs)
	for _, b := range []string{"t1", "t2", "t3", "t4"} {
		for _, p := range []*nodeProc{n1, n2} {
			p.must("deposit", "bank/"+b+"/acct", 1)
		}
		if got := n1.must("balance", "bank/"+b+"/acct", 0); got != 2 {
			t.Fatalf("bank/%s: %d, want 2", b, got)
		}
	}
	owners := n1.owners()
	var onN2 string
	for u, o := range owners {
		if o.Node == "n2" && strings.HasPrefix(u, "bank/t") {
			onN2 = u
		}
	}
	if onN2 == "" {
		t.Fatalf("n2 owns no branch: %v", owners)
	}
	// A node without the certificate: its requests to the others fail.
	plain := startProc(t, bin, "n3", filepath.Join(root, "n3"), etcd)
	r := plain.call("balance", onN2+"/acct", 0, 0)
	if r.Error == "" || r.Code != "unavailable" {
		t.Fatalf("a node without TLS reached %s: %+v", onN2, r)
	}
	t.Logf("a node without TLS: %s", r.Error)
}

// writeCerts writes a CA and one certificate for 127.0.0.1 signed by it,
// for server and client use, into dir.
func writeCerts(t *testing.T, dir string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fractal test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "node"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for name, block := range map[string]*pem.Block{
		"ca.crt":   {Type: "CERTIFICATE", Bytes: caDER},
		"node.crt": {Type: "CERTIFICATE", Bytes: leafDER},
		"node.key": {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// With etcd requiring client certificates (etcd's --client-cert-auth),
// nodes given the cluster's certificate (-etcd-tls) join and serve every
// subtree through each other, and a node without a certificate, or with
// one from another CA, fails to join within its start timeout, exiting
// non-zero with an error that names etcd.
func TestProcessesEtcdTLS(t *testing.T) {
	bin, _ := build(t)
	certs := t.TempDir()
	writeCerts(t, certs)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := etcdlocal.StartTLS(ctx, t.TempDir(), 1, etcdlocal.TLSFiles{
		CA: filepath.Join(certs, "ca.crt"), Cert: filepath.Join(certs, "node.crt"), Key: filepath.Join(certs, "node.key"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	etcd := e.Endpoints()
	root := t.TempDir()
	n1 := startProc(t, bin, "n1", filepath.Join(root, "n1"), etcd, "-tls", certs, "-etcd-tls", certs)
	n2 := startProc(t, bin, "n2", filepath.Join(root, "n2"), etcd, "-tls", certs, "-etcd-tls", certs)
	branches := []string{"t1", "t2", "t3", "t4"}
	for _, b := range branches {
		for _, p := range []*nodeProc{n1, n2} {
			p.must("deposit", "bank/"+b+"/acct", 1)
		}
	}
	owners := n1.owners()
	perNode := map[string]int{}
	for _, b := range branches {
		perNode[owners["bank/"+b].Node]++
		for _, p := range []*nodeProc{n1, n2} {
			if got := p.must("balance", "bank/"+b+"/acct", 0); got != 2 {
				t.Fatalf("bank/%s through %s: %d, want 2", b, p.name, got)
			}
		}
	}
	if perNode["n1"] == 0 || perNode["n2"] == 0 {
		t.Fatalf("subtrees per node %v: want both nodes used", perNode)
	}
	t.Logf("two nodes with etcd over TLS: subtrees per node %v", perNode)

	other := t.TempDir()
	writeCerts(t, other) // another CA
	for _, c := range []struct {
		what string
		args []string
	}{
		{"without a certificate", []string{"-tls", certs}},
		{"with a certificate from another CA", []string{"-tls", certs, "-etcd-tls", other}},
	} {
		const timeout = 5 * time.Second
		start := time.Now()
		out, code := runFailing(t, bin, append([]string{"-node", "n3", "-data", filepath.Join(root, "n3"),
			"-etcd", strings.Join(etcd, ","), "-ttl", procTTL.String(), "-start-timeout", timeout.String()}, c.args...)...)
		took := time.Since(start)
		if code == 0 || strings.Contains(out, "LISTEN ") {
			t.Fatalf("a node %s joined (exit %d):\n%s", c.what, code, out)
		}
		if !strings.Contains(out, "cluster: connecting to etcd at "+strings.Join(etcd, ",")) {
			t.Fatalf("a node %s: exit %d, want an error naming etcd:\n%s", c.what, code, out)
		}
		t.Logf("a node %s exited %d after %v: %s", c.what, code, took.Round(time.Millisecond), strings.TrimSpace(out))
	}
	if o := n2.owners(); len(o) != len(owners) {
		t.Fatalf("the table changed: %v, was %v", o, owners)
	}
	for _, n := range n1.owners() {
		if n.Node == "n3" {
			t.Fatalf("a subtree placed on the node that failed to join: %v", n1.owners())
		}
	}
}

// runFailing runs the node program with args, expecting it to end on its
// own within a minute, and returns its output and exit code.
func runFailing(t *testing.T, bin string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %v did not end within a minute:\n%s", bin, args, out)
	}
	if err != nil && cmd.ProcessState == nil {
		t.Fatal(err)
	}
	return string(out), cmd.ProcessState.ExitCode()
}
