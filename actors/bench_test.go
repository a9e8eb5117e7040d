package actors_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fractalrt/fractal/actors"
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
