package cluster_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
	"github.com/fractalrt/fractal/cluster"
	"github.com/fractalrt/fractal/cluster/etcdlocal"
	"github.com/fractalrt/fractal/persistence"
)

// The test application: a bank, its branches (the unit of placement) and
// their accounts.
type (
	Deposit struct {
		Amount int
		Sleep  time.Duration // before writing: to hold a write open
	}
	Balance struct{}
)

func init() {
	actors.MustRegisterMessage[Deposit]("test.Deposit")
	actors.MustRegisterMessage[Balance]("test.Balance")
	actors.MustRegisterMessage[int]("test.int")
}

var accountMigrations = []persistence.Migration{
	{SQL: `CREATE TABLE balance (n INTEGER NOT NULL); INSERT INTO balance VALUES (0)`},
}

func account(c *actors.Context, msg any) (any, error) {
	switch m := msg.(type) {
	case Deposit:
		time.Sleep(m.Sleep)
		var n int
		err := c.QueryRow(`UPDATE balance SET n = n + ? RETURNING n`, m.Amount).Scan(&n)
		return n, err
	case Balance:
		var n int
		err := c.QueryRow(`SELECT n FROM balance`).Scan(&n)
		return n, err
	}
	return nil, fmt.Errorf("%w: %T", actors.ErrUnknownMessage, msg)
}

func kinds() []actors.Kind {
	h := actors.HandlerFunc(account)
	return []actors.Kind{
		{Name: "bank", Pattern: "bank", Migrations: accountMigrations, Handler: h},
		{Name: "branch", Pattern: "bank/*", Migrations: accountMigrations, Handler: h},
		{Name: "account", Pattern: "bank/*/*", Migrations: accountMigrations, Handler: h},
	}
}

func startEtcd(t testing.TB, members int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := etcdlocal.Start(ctx, t.TempDir(), members)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e.Endpoints()
}

func startNode(t testing.TB, etcd []string, name, dir string) *cluster.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := cluster.Start(ctx, cluster.Config{
		Name: name, DataDir: dir, Etcd: etcd, PlacementDepth: 2, LeaseTTL: 2 * time.Second,
		RequestTimeout: 10 * time.Second,
		Options:        actors.Options{Kinds: kinds(), Durability: actors.ProcessCrash},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close(context.Background()) })
	return n
}

func request(t testing.TB, n *cluster.Node, path string, msg any) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	v, err := n.System().Request(ctx, path, msg)
	if err != nil {
		t.Fatalf("%s: %s: %v", n.Name(), path, err)
	}
	return v.(int)
}

func etcdClient(t testing.TB, etcd []string) *clientv3.Client {
	cli, err := clientv3.New(clientv3.Config{Endpoints: etcd, Logger: zap.NewNop(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// checkFor calls fn every 20 ms until it returns true, failing the test
// if it has not within total.
func checkFor(t testing.TB, total time.Duration, fn func() bool) {
	t.Helper()
	if !actortest.Poll(total, 20*time.Millisecond, fn) {
		t.Fatalf("condition not met within %v", total)
	}
}

// BenchmarkCrossNode compares requests served by the node they are made on
// (cluster-local) with the same requests forwarded to another node over
// the remote transport (cluster-remote): two nodes in this process, one
// etcd member, ProcessCrash durability so that the figures show the hop,
// not the disk. It prints one RESULT line per system and client count:
//
//	go test -run '^$' -bench CrossNode -benchtime 1x ./cluster/
func BenchmarkCrossNode(b *testing.B) {
	etcd := startEtcd(b, 1)
	root := b.TempDir()
	n1 := startNode(b, etcd, "n1", filepath.Join(root, "n1"))
	startNode(b, etcd, "n2", filepath.Join(root, "n2"))
	request(b, n1, "bank/here/a0", Balance{})
	request(b, n1, "bank/there/a0", Balance{})
	ctx := context.Background()
	for unit, want := range map[string]string{"bank/here": "n1", "bank/there": "n2"} {
		if err := n1.Move(ctx, unit, want); err != nil {
			b.Fatal(err)
		}
	}
	checkFor(b, 5*time.Second, func() bool {
		o := n1.Owners()
		return o["bank/here"].Node == "n1" && o["bank/there"].Node == "n2"
	})
	dur := 3 * time.Second
	if s := os.Getenv("CLUSTER_BENCH_SECONDS"); s != "" {
		if d, err := time.ParseDuration(s + "s"); err == nil {
			dur = d
		}
	}
	for _, clients := range []int{1, 32} {
		for _, sys := range []struct{ name, unit string }{{"cluster-local", "bank/here"}, {"cluster-remote", "bank/there"}} {
			lat, total := load(b, n1, sys.unit, clients, dur)
			slices.Sort(lat)
			q := func(f float64) int64 { return lat[int(f*float64(len(lat)-1))].Microseconds() }
			rate := float64(total) / dur.Seconds()
			fmt.Printf("RESULT system=%s clients=%d requests=%d p50_us=%d p99_us=%d msgs_per_s=%.0f\n",
				sys.name, clients, total, q(0.50), q(0.99), rate)
			b.ReportMetric(rate, sys.name+"-c"+fmt.Sprint(clients)+"-msgs/s")
		}
	}
}

// load runs clients closed loops of deposits on node n to accounts of unit
// for d, and returns every latency and the count.
func load(b *testing.B, n *cluster.Node, unit string, clients int, d time.Duration) ([]time.Duration, int) {
	var mu sync.Mutex
	var all []time.Duration
	var failed atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := fmt.Sprintf("%s/a%d", unit, c)
			var lat []time.Duration
			for time.Now().Before(end) {
				t0 := time.Now()
				if _, err := n.System().Request(context.Background(), path, Deposit{Amount: 1}); err != nil {
					failed.Add(1)
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if failed.Load() > 0 || len(all) == 0 {
		b.Fatalf("%s: %d requests failed, %d succeeded", unit, failed.Load(), len(all))
	}
	return all, len(all)
}
