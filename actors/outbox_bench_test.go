package actors_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/persistence"
)

type (
	benchHop struct{ To string } // forward a benchInc to To, durably or not
	benchInc struct{}
)

func init() { actors.MustRegisterMessage[benchInc]("bench.inc") }

// Hops between parts: a client's request makes a sender forward one
// message to a receiver, which counts it. "send" forwards with Context.Send
// (at most once), "durable" with Context.SendDurable (stored, acknowledged,
// deduplicated). Each round waits until every receiver counted its messages:
// the figure is forwarded messages per second, the same workload both ways.
func BenchmarkHop(b *testing.B) {
	for _, durable := range []bool{false, true} {
		name := "send"
		if durable {
			name = "durable"
		}
		b.Run(name, func(b *testing.B) {
			var counted atomic.Int64
			m := []persistence.Migration{{SQL: `CREATE TABLE counter (n INTEGER NOT NULL); INSERT INTO counter VALUES (0)`}}
			h := actors.HandlerFunc(func(c *actors.Context, msg any) (any, error) {
				switch m := msg.(type) {
				case benchHop:
					if durable {
						return nil, c.SendDurable(m.To, benchInc{})
					}
					return nil, c.Send(m.To, benchInc{})
				case benchInc:
					_, err := c.Exec(`UPDATE counter SET n = n + 1`)
					counted.Add(1)
					return nil, err
				}
				return nil, nil
			})
			sys, err := actors.Open(context.Background(), b.TempDir(), actors.Options{Kinds: []actors.Kind{
				{Name: "hop", Pattern: "hop", Handler: h, Migrations: m},
				{Name: "node", Pattern: "hop/*", Handler: h, Migrations: m},
			}})
			if err != nil {
				b.Fatal(err)
			}
			defer sys.Close(context.Background())
			const pairs = 64
			var wg sync.WaitGroup
			send := func(n int) {
				sem := make(chan struct{}, 256)
				for i := range n {
					sem <- struct{}{}
					wg.Add(1)
					go func() {
						defer func() { <-sem; wg.Done() }()
						p := i % pairs
						if _, err := sys.Request(context.Background(), fmt.Sprintf("hop/s%d", p), benchHop{To: fmt.Sprintf("../r%d", p)}); err != nil {
							b.Error(err)
						}
					}()
				}
				wg.Wait()
				for counted.Load() < int64(n) {
					time.Sleep(100 * time.Microsecond)
				}
			}
			send(2 * pairs) // activate every part
			counted.Store(0)
			b.ResetTimer()
			start := time.Now()
			send(b.N)
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}
