package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// A target is one system under test. Every system runs the same workload:
// parts counters, each a row in its part's store, each request a
// read-modify-write of one part's row whose reply is the new value.
type target interface {
	// open creates the parts' stores under dir (which exists and is
	// empty) and starts the system. The parts need not be touched yet.
	open(ctx context.Context, dir string, parts int) error
	// call sends one request to part and waits for its reply: the part's
	// counter after the increment. c is the caller's own, reused between
	// its calls.
	call(ctx context.Context, c *caller, part int) (int64, error)
	// stats returns the messages handled and the commits made so far; ok
	// is false for a system that does not commit.
	stats() (s counters, ok bool)
	// finish stops the system, reads every counter back from its store
	// and returns their sum, then releases everything.
	finish(ctx context.Context) (sum int64, err error)
}

// counters are a system's totals.
type counters struct {
	messages, commits uint64
	syncs             uint64
	hasSyncs          bool
}

// A caller is one client's reusable reply slot.
type caller struct {
	reply chan reply
}

type reply struct {
	n   int64
	err error
}

func newCaller() *caller { return &caller{reply: make(chan reply, 1)} }

// errs keeps the number of failed requests and the first error.
type errs struct {
	n     atomic.Int64
	once  sync.Once
	first error
}

func (e *errs) add(err error) {
	e.n.Add(1)
	e.once.Do(func() { e.first = err })
}

func (e *errs) err() error {
	if n := e.n.Load(); n > 0 {
		return fmt.Errorf("%d requests failed, the first with: %w", n, e.first)
	}
	return nil
}

// warmUp touches every part once, with up to workers requests in flight,
// so that every store exists and is open before anything is measured. It
// returns the number of acknowledged requests. Every counter starts at
// zero, so every reply must be 1.
func warmUp(ctx context.Context, t target, parts, workers int) (int64, error) {
	if workers > parts {
		workers = parts
	}
	var (
		next  atomic.Int64
		acked atomic.Int64
		e     errs
		wg    sync.WaitGroup
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newCaller()
			for {
				p := int(next.Add(1) - 1)
				if p >= parts {
					return
				}
				n, err := t.call(ctx, c, p)
				if err != nil {
					e.add(fmt.Errorf("part %d: %w", p, err))
					c = newCaller()
					continue
				}
				acked.Add(1)
				if n != 1 {
					e.add(fmt.Errorf("part %d: the first increment of a new counter replied %d, want 1", p, n))
				}
			}
		}()
	}
	wg.Wait()
	return acked.Load(), e.err()
}

// closedResult is what one closed-loop run measured.
type closedResult struct {
	ops     int64         // replies received within the window
	acked   int64         // every reply, ramp and drain included
	elapsed time.Duration // the window
	lat     *latencies
	// served is the distribution of replies per client within the
	// window: how fairly the clients were served.
	servedMin, servedMedian, servedMax int64
	// inflight is the mean number of requests sent and not yet answered,
	// sampled during the window: the clients whose request is in the
	// system; the others are waiting for a processor to send theirs.
	inflight float64
	// stats is the system's work during the window; hasStats is false
	// for a system that does not commit.
	stats    counters
	hasStats bool
}

func (r closedResult) rate() float64 { return float64(r.ops) / r.elapsed.Seconds() }

// closedLoop runs clients clients for ramp, then measures them for d: each
// repeatedly picks a random part (its own generator, seeded from seed),
// sends a request, waits for the reply and records the latency. The ramp
// lets the system leave the start (every client sending at once) behind:
// replies before the window are acknowledged but not measured. Clients stop
// sending at the end of the window; the replies still in flight then are
// waited for, acknowledged and their latencies recorded, but only the
// replies inside the window count towards the rate.
//
// Before each request a client yields the processor (runtime.Gosched), so
// that it queues behind the other runnable clients, as a request from the
// network would. Without it, Go's scheduler runs a goroutine woken by a
// channel send right after the sender blocks: a few clients would chain
// request after request while the others starved, and the "concurrent"
// clients would not be concurrent. A request's latency runs from the moment
// its client was ready to send it (the previous reply, or the start) to the
// moment it has the reply, so the wait for a processor counts: in a closed
// loop the mean latency is then clients/throughput (Little's law), whatever
// the order of service.
func closedLoop(ctx context.Context, t target, parts, clients int, ramp, d time.Duration, seed int64) (closedResult, error) {
	var (
		h      histogram
		ops    atomic.Int64
		acked  atomic.Int64
		e      errs
		wg     sync.WaitGroup
		start  = make(chan struct{})
		served = make([]int64, clients)
		inside atomic.Int64
	)
	var t0, from, deadline time.Time
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(seed), uint64(i)))
			c := newCaller()
			<-start
			var in, all int64
			ready := t0
			for {
				runtime.Gosched()
				if !time.Now().Before(deadline) {
					break
				}
				p := rng.IntN(parts)
				inside.Add(1)
				_, err := t.call(ctx, c, p)
				inside.Add(-1)
				done := time.Now()
				if err != nil {
					e.add(fmt.Errorf("part %d: %w", p, err))
					if ctx.Err() != nil {
						break
					}
					c = newCaller() // the old one may still receive a late reply
					ready = done
					continue
				}
				all++
				if !done.Before(from) {
					h.record(i, done.Sub(ready))
					if done.Before(deadline) {
						in++
					}
				}
				ready = done
			}
			served[i] = in
			ops.Add(in)
			acked.Add(all)
		}()
	}
	t0 = time.Now()
	from = t0.Add(ramp)
	deadline = from.Add(d)
	close(start)

	time.Sleep(time.Until(from))
	s0, hasStats := t.stats()
	var samples, sum int64
	tick := time.NewTicker(d / 50)
	for time.Now().Before(deadline) {
		<-tick.C
		samples++
		sum += inside.Load()
	}
	tick.Stop()
	s1, _ := t.stats()
	wg.Wait()

	slices.Sort(served)
	r := closedResult{
		ops: ops.Load(), acked: acked.Load(), elapsed: d, lat: h.snapshot(),
		servedMin: served[0], servedMedian: served[len(served)/2], servedMax: served[len(served)-1],
		inflight: float64(sum) / float64(max(samples, 1)),
		hasStats: hasStats,
	}
	if hasStats {
		r.stats = counters{
			messages: s1.messages - s0.messages,
			commits:  s1.commits - s0.commits,
			syncs:    s1.syncs - s0.syncs,
			hasSyncs: s1.hasSyncs,
		}
	}
	return r, e.err()
}

// openResult is what one open-loop run measured.
type openResult struct {
	rate     float64 // requests per second scheduled
	sent     int64
	acked    int64
	achieved float64 // replies per second, from the first send to the last reply
	lat      *latencies
}

// clientsSeedOpen is the stream of the open loop's generator: the closed
// loop's clients use streams 0..clients-1.
const clientsSeedOpen = 1 << 62

// maxOutstanding bounds the requests in flight in the open loop, so that a
// system that cannot keep up does not exhaust memory. When it is reached the
// sender waits; latency is still measured from each request's scheduled
// time, so the wait shows in the results instead of hiding.

const maxOutstanding = 200_000

// openLoop sends requests at rate per second for d, each to a random part,
// whatever the replies. A request's latency is measured from the time it
// was scheduled to be sent, not from when it was sent, so a system that
// falls behind sees its backlog counted (no coordinated omission).
func openLoop(ctx context.Context, t target, parts int, rate float64, d time.Duration, seed int64) (openResult, error) {
	if rate <= 0 {
		return openResult{}, errors.New("open loop: rate must be positive")
	}
	var (
		h     histogram
		acked atomic.Int64
		e     errs
		wg    sync.WaitGroup
		slots = make(chan struct{}, maxOutstanding)
		pool  = sync.Pool{New: func() any { return newCaller() }}
	)
	rng := rand.New(rand.NewPCG(uint64(seed), uint64(clientsSeedOpen)))
	interval := float64(time.Second) / rate
	n := int64(d.Seconds() * rate)
	t0 := time.Now()
	for i := range n {
		sched := t0.Add(time.Duration(float64(i) * interval))
		if wait := time.Until(sched); wait > 0 {
			time.Sleep(wait)
		}
		p := rng.IntN(parts)
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := pool.Get().(*caller)
			_, err := t.call(ctx, c, p)
			done := time.Now()
			<-slots
			if err != nil {
				// c may still receive a late reply: not reused.
				e.add(fmt.Errorf("part %d: %w", p, err))
				return
			}
			pool.Put(c)
			acked.Add(1)
			h.record(int(i), done.Sub(sched))
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	return openResult{
		rate:     rate,
		sent:     n,
		acked:    acked.Load(),
		achieved: float64(acked.Load()) / elapsed.Seconds(),
		lat:      h.snapshot(),
	}, e.err()
}
