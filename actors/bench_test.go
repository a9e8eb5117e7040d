package actors_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
	"github.com/fractalrt/fractal/persistence"
)

func benchKinds() []actors.Kind {
	m := []persistence.Migration{{SQL: `CREATE TABLE counter (n INTEGER NOT NULL); INSERT INTO counter VALUES (0)`}}
	h := actors.HandlerFunc(func(c *actors.Context, msg any) (any, error) {
		var n int
		if err := c.QueryRow(`SELECT n FROM counter`).Scan(&n); err != nil {
			return nil, err
		}
		_, err := c.Exec(`UPDATE counter SET n = ?`, n+1)
		return n + 1, err
	})
	return []actors.Kind{
		{Name: "bench", Pattern: "bench", Handler: h, Migrations: m},
		{Name: "part", Pattern: "bench/*", Handler: h, Migrations: m},
	}
}

// openBench opens a system with parts active parts. It is called outside
// b.Run, so that the calibration rounds share one system.
func openBench(b *testing.B, d actors.Durability, parts int) (*actors.System, []string) {
	return openBenchMetrics(b, d, parts, nil)
}

// openBenchMetrics is openBench with metrics registered on reg (none when
// reg is nil).
func openBenchMetrics(b *testing.B, d actors.Durability, parts int, reg prometheus.Registerer) (*actors.System, []string) {
	b.Helper()
	sys, err := actors.Open(context.Background(), b.TempDir(), actors.Options{Kinds: benchKinds(), Durability: d, Registerer: reg})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sys.Close(context.Background()) })
	paths := make([]string, parts)
	for i := range paths {
		paths[i] = fmt.Sprintf("bench/p%04d", i)
		if _, err := sys.Request(context.Background(), paths[i], struct{}{}); err != nil {
			b.Fatal(err)
		}
	}
	return sys, paths
}

// One caller, one part: every message is its own batch, so this is the
// latency of the whole path (routing, transaction, commit, reply).
func BenchmarkRequestOnePart(b *testing.B) {
	for _, c := range []struct {
		d       actors.Durability
		metrics bool
	}{{actors.ProcessCrash, false}, {actors.ProcessCrash, true}, {actors.PowerLoss, false}, {actors.PowerLoss, true}} {
		var reg prometheus.Registerer
		name := c.d.String()
		if c.metrics {
			reg = prometheus.NewRegistry()
			name += "+metrics"
		}
		sys, paths := openBenchMetrics(b, c.d, 1, reg)
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := sys.Request(ctx, paths[0], struct{}{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Many callers over 1,000 parts, as in the harness in bench/: the
// throughput of group commit.
func BenchmarkRequestParallel(b *testing.B) {
	for _, d := range []actors.Durability{actors.ProcessCrash, actors.PowerLoss, actors.PowerLossPerCommit} {
		sys, paths := openBench(b, d, 1000)
		b.Run(d.String(), func(b *testing.B) {
			ctx := context.Background()
			before := sys.Stats()
			b.ReportAllocs()
			b.SetParallelism(5000) // 10,000 callers on 2 cores: about 10 in flight per part
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				r := rand.New(rand.NewPCG(rand.Uint64(), 1))
				for pb.Next() {
					if _, err := sys.Request(ctx, paths[r.IntN(len(paths))], struct{}{}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			st := sys.Stats()
			if c := st.Commits - before.Commits; c > 0 {
				b.ReportMetric(float64(st.Messages-before.Messages)/float64(c), "msgs/commit")
			}
		})
	}
}

// Routing: 1,000 parts under one parent ("one/p0000".."one/p0999")
// against 1,000 parts under 1,000 different parents ("g0000/p".."g0999/p"),
// at the same depth. An active part is reached directly, never through its
// parent's mailbox, so both should deliver the same throughput.
func BenchmarkRouting(b *testing.B) {
	noop := actors.HandlerFunc(func(*actors.Context, any) (any, error) { return nil, nil })
	layouts := []struct {
		name  string
		kinds []actors.Kind
		path  string
	}{
		{"siblings", []actors.Kind{
			{Name: "parent", Pattern: "one", Handler: noop},
			{Name: "child", Pattern: "one/*", Handler: noop},
		}, "one/p%04d"},
		{"unrelated", []actors.Kind{
			{Name: "parent", Pattern: "*", Handler: noop},
			{Name: "child", Pattern: "*/p", Handler: noop},
		}, "g%04d/p"},
	}
	for _, l := range layouts {
		for _, withMetrics := range []bool{false, true} {
			benchRouting(b, l.name, l.kinds, l.path, withMetrics)
		}
	}
}

func benchRouting(b *testing.B, name string, kinds []actors.Kind, path string, withMetrics bool) {
	ctx := context.Background()
	l := struct {
		name  string
		kinds []actors.Kind
		path  string
	}{name, kinds, path}
	var reg prometheus.Registerer
	if withMetrics {
		reg = prometheus.NewRegistry()
		l.name += "+metrics"
	}
	{
		sys, err := actors.Open(ctx, b.TempDir(), actors.Options{Kinds: l.kinds, Durability: actors.ProcessCrash, Registerer: reg})
		if err != nil {
			b.Fatal(err)
		}
		paths := make([]string, 1000)
		for i := range paths {
			paths[i] = fmt.Sprintf(l.path, i)
			if _, err := sys.Request(ctx, paths[i], nil); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(l.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(500)
			b.RunParallel(func(pb *testing.PB) {
				r := rand.New(rand.NewPCG(rand.Uint64(), 2))
				for pb.Next() {
					if _, err := sys.Request(ctx, paths[r.IntN(len(paths))], nil); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
		sys.Close(ctx)
	}
}

// Activation: the latency of the first request to a part whose file does
// not exist yet (create), and to a passivated part (reopen), as p50 and
// p99 over b.N parts.
func BenchmarkActivation(b *testing.B) {
	for _, d := range []actors.Durability{actors.ProcessCrash, actors.PowerLoss} {
		b.Run(d.String(), func(b *testing.B) {
			k := benchKinds()
			k[1].IdleTimeout = time.Hour
			sys, err := actors.Open(context.Background(), b.TempDir(), actors.Options{Kinds: k, Durability: d, MaxActiveParts: -1})
			if err != nil {
				b.Fatal(err)
			}
			defer sys.Close(context.Background())
			ctx := context.Background()
			if _, err := sys.Request(ctx, "bench", struct{}{}); err != nil {
				b.Fatal(err)
			}
			n := max(b.N, 20)
			create := make([]time.Duration, n)
			for i := range n {
				start := time.Now()
				if _, err := sys.Request(ctx, fmt.Sprintf("bench/c%d-%d", b.N, i), struct{}{}); err != nil {
					b.Fatal(err)
				}
				create[i] = time.Since(start)
			}
			// Passivate them all: restart the parent, which stops its
			// children (the next request reopens each file).
			if err := sys.Restart(ctx, "bench"); err != nil {
				b.Fatal(err)
			}
			for i := 0; i < n && sys.Active(fmt.Sprintf("bench/c%d-%d", b.N, i)); {
				time.Sleep(time.Millisecond)
			}
			reopen := make([]time.Duration, n)
			for i := range n {
				start := time.Now()
				if _, err := sys.Request(ctx, fmt.Sprintf("bench/c%d-%d", b.N, i), struct{}{}); err != nil {
					b.Fatal(err)
				}
				reopen[i] = time.Since(start)
			}
			pct := func(ds []time.Duration, p float64) float64 {
				slices.Sort(ds)
				return float64(ds[int(p*float64(len(ds)-1))].Microseconds())
			}
			b.ReportMetric(pct(create, 0.5), "create-p50-µs")
			b.ReportMetric(pct(reopen, 0.5), "reopen-p50-µs")
			b.ReportMetric(pct(reopen, 0.99), "reopen-p99-µs")
		})
	}
}

// Open costs the same whatever the number of parts on disk: it reads no
// part and scans no directory. Parts here are directories with an (empty)
// file each, made directly, 10 and 20,000 of them.
func BenchmarkOpenWithPartsOnDisk(b *testing.B) {
	for _, n := range []int{10, 20_000} {
		dir := b.TempDir()
		for i := range n {
			d := actors.MustParsePath(fmt.Sprintf("bench/p%06d", i)).Dir(dir)
			if err := os.MkdirAll(d, 0o755); err != nil {
				b.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(d, actors.PartFileName), nil, 0o644); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(fmt.Sprintf("parts=%d", n), func(b *testing.B) {
			for b.Loop() {
				sys, err := actors.Open(context.Background(), dir, actors.Options{Kinds: benchKinds()})
				if err != nil {
					b.Fatal(err)
				}
				if err := sys.Close(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// The activation path's behaviour, checked here beside its benchmark.

// A part passivated while the system runs keeps its write-ahead log and
// index: its next activation reuses them instead of creating them again,
// and appends to the log instead of starting it again (which SQLite does
// with a synced header). A part still active at System.Close is closed
// whole: no -wal or -shm file is left beside its database file.
func TestPassivatedPartKeepsLog(t *testing.T) {
	h := actortest.New(t, actors.Options{Kinds: []actors.Kind{
		{Name: "idle", Pattern: "s", Migrations: counterMigrations, Handler: actors.HandlerFunc(counterHandler), IdleTimeout: -1},
		{Name: "idle_child", Pattern: "s/*", Migrations: counterMigrations, Handler: actors.HandlerFunc(counterHandler), IdleTimeout: 10 * time.Millisecond},
		{Name: "busy", Pattern: "t", Migrations: counterMigrations, Handler: actors.HandlerFunc(counterHandler), IdleTimeout: -1},
		{Name: "busy_child", Pattern: "t/*", Migrations: counterMigrations, Handler: actors.HandlerFunc(counterHandler), IdleTimeout: -1},
	}})
	file := h.File("s/a")
	type logState struct {
		wal, shm os.FileInfo
		header   []byte
	}
	state := func() logState {
		t.Helper()
		var st logState
		var err error
		if st.wal, err = os.Stat(file + "-wal"); err != nil {
			t.Fatalf("passivated part: %v", err)
		}
		if st.shm, err = os.Stat(file + "-shm"); err != nil {
			t.Fatalf("passivated part: %v", err)
		}
		b, err := os.ReadFile(file + "-wal")
		if err != nil || len(b) < 32 {
			t.Fatalf("passivated part: log of %d bytes, %v", len(b), err)
		}
		st.header = b[:32]
		return st
	}
	passivated := func() {
		t.Helper()
		actortest.Eventually(t, func() bool { return !h.System().Active("s/a") })
	}
	h.MustRequest("s/a", add{1})
	passivated()
	first := state()
	for want := 2; want <= 4; want++ {
		if got := h.MustRequest("s/a", add{1}); got != want {
			t.Fatalf("s/a = %v, want %d", got, want)
		}
		passivated()
		again := state()
		if !os.SameFile(first.wal, again.wal) || !os.SameFile(first.shm, again.shm) {
			t.Fatal("reactivation created the -wal or -shm file again")
		}
		if !bytes.Equal(first.header, again.header) {
			t.Fatal("reactivation started the log again")
		}
	}

	h.MustRequest("t/b", add{1})
	h.Close()
	for _, suffix := range []string{"-wal", "-shm"} {
		if _, err := os.Stat(h.File("t/b") + suffix); err == nil {
			t.Errorf("part active at Close left its %s file", suffix)
		}
	}
	h.Reopen()
	if got := counter(t, h, "s/a"); got != 4 {
		t.Fatalf("after reopen s/a = %d, want 4", got)
	}
	if got := counter(t, h, "t/b"); got != 1 {
		t.Fatalf("after reopen t/b = %d, want 1", got)
	}
}

// A parent records a new child in its open batch when it has one, and
// commits it before the child is spawned; a child it knows already is
// activated without writing to the parent's file. Either way the record
// is there, and the parent's own messages are all applied once.
func TestChildrenRecordedAlongsideParentBatch(t *testing.T) {
	h := newHarness(t)
	h.MustRequest("c", add{0})
	const n = 40
	var wg sync.WaitGroup
	for i := range n {
		for range 3 {
			h.Send("c", add{1}) // keeps a batch of the parent open while it routes
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.MustRequest(fmt.Sprintf("c/k%02d", i%(n/2)), add{1})
		}()
	}
	wg.Wait()
	actortest.Eventually(t, func() bool { return counter(t, h, "c") == 3*n })
	want := make([]string, n/2)
	for i := range want {
		want[i] = fmt.Sprintf("k%02d", i)
	}
	check := func(when string) {
		t.Helper()
		got, err := h.System().Children(context.Background(), "c")
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("%s: Children(c) = %v, %v; want %v", when, got, err, want)
		}
	}
	check("while active")
	h.Reopen()
	check("after reopen")
	if got := counter(t, h, "c"); got != 3*n {
		t.Fatalf("parent counter %d after reopen, want %d", got, 3*n)
	}
	for i := range n / 2 {
		if got := counter(t, h, fmt.Sprintf("c/k%02d", i)); got != 2 {
			t.Fatalf("c/k%02d = %d, want 2", i, got)
		}
	}
}
