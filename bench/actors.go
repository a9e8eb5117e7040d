package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
)

// A backend is where the plain protoactor-go systems keep their counters.
// Its rmw runs on the part's actor, one message at a time per part.
type backend interface {
	setup(ctx context.Context, dir string, parts int) error
	// rmw increments part's counter and returns the new value; n is the
	// actor's in-memory counter, for the backends that keep it there.
	rmw(ctx context.Context, part int, n *int64) (int64, error)
	// sum returns the sum of every counter in the store; ok is false for
	// a backend that keeps them in the actors.
	sum(ctx context.Context) (total int64, ok bool, err error)
	stats() (counters, bool)
	close() error
}

// actorTarget runs one protoactor-go actor per part, spawned from the root
// context of a plain actor system. A request carries the caller's reply
// channel; the actor answers on it. (protoactor-go Futures are not used:
// RootContext.Request is a plain send, and several goroutines waiting on
// one Future hang.)
type actorTarget struct {
	b    backend
	as   *actor.ActorSystem
	pids []*actor.PID
}

type partActor struct {
	t    *actorTarget
	part int
	n    int64
}

type partRequest struct{ c *caller }

type sumRequest struct{ out chan int64 }

func (a *partActor) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *partRequest:
		n, err := a.t.b.rmw(context.Background(), a.part, &a.n)
		m.c.reply <- reply{n: n, err: err}
	case *sumRequest:
		m.out <- a.n
	}
}

func (t *actorTarget) open(ctx context.Context, dir string, parts int) error {
	if err := t.b.setup(ctx, dir, parts); err != nil {
		return err
	}
	t.as = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
	t.pids = make([]*actor.PID, parts)
	for i := range t.pids {
		a := &partActor{t: t, part: i}
		t.pids[i] = t.as.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return a }))
	}
	return nil
}

func (t *actorTarget) call(ctx context.Context, c *caller, part int) (int64, error) {
	t.as.Root.Send(t.pids[part], &partRequest{c: c})
	select {
	case r := <-c.reply:
		return r.n, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (t *actorTarget) stats() (counters, bool) { return t.b.stats() }

func (t *actorTarget) finish(ctx context.Context) (int64, error) {
	total, ok, err := t.b.sum(ctx)
	if err == nil && !ok {
		total, err = t.askActors(ctx)
	}
	for _, pid := range t.pids {
		if werr := t.as.Root.StopFuture(pid).Wait(); werr != nil && err == nil {
			err = fmt.Errorf("stop actor: %w", werr)
		}
	}
	t.as.Shutdown()
	if cerr := t.b.close(); cerr != nil && err == nil {
		err = cerr
	}
	return total, err
}

// askActors sums the counters kept by the actors themselves.
func (t *actorTarget) askActors(ctx context.Context) (int64, error) {
	out := make(chan int64, len(t.pids))
	for _, pid := range t.pids {
		t.as.Root.Send(pid, &sumRequest{out: out})
	}
	var total int64
	for range t.pids {
		select {
		case n := <-out:
			total += n
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return total, nil
}

// memoryBackend keeps each counter in its actor: the cost of the actor
// runtime alone.
type memoryBackend struct{}

func (memoryBackend) setup(context.Context, string, int) error { return nil }

func (memoryBackend) rmw(_ context.Context, _ int, n *int64) (int64, error) {
	*n++
	return *n, nil
}

func (memoryBackend) sum(context.Context) (int64, bool, error) { return 0, false, nil }
func (memoryBackend) stats() (counters, bool)                  { return counters{}, false }
func (memoryBackend) close() error                             { return nil }

// txCounters counts the messages and commits of the backends that run one
// transaction per message.
type txCounters struct {
	messages, commits atomic.Uint64
}

func (c *txCounters) committed() {
	c.messages.Add(1)
	c.commits.Add(1)
}

func (c *txCounters) stats() (counters, bool) {
	return counters{messages: c.messages.Load(), commits: c.commits.Load()}, true
}
