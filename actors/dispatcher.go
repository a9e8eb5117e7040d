package actors

import (
	"runtime"
	"sync/atomic"
)

// dispatcher runs parts' mailboxes like protoactor-go's default dispatcher
// (each run on a goroutine of its own, so a handler that blocks holds up
// nobody else) but reuses goroutines: a run is handed to an idle goroutine
// when one waits, and a goroutine that finishes a run waits for the next
// instead of exiting, up to maxIdle of them.
//
// Reuse matters because SQLite (compiled to Go) needs a deep stack: a fresh
// goroutine grows and copies its stack on every message, which cost about a
// third of the time of a small request. An idle goroutine keeps its grown
// stack, so the bound on idle goroutines also bounds that memory (maxIdle
// stacks, typically tens of KiB each).
type dispatcher struct {
	work       chan func() // unbuffered: a send succeeds only to a waiting goroutine
	stop       chan struct{}
	idle       atomic.Int32
	maxIdle    int32
	throughput int
}

// dispatcherThroughput is the number of messages a mailbox run handles
// before yielding the processor (protoactor-go's default).
const dispatcherThroughput = 300

func newDispatcher() *dispatcher {
	return &dispatcher{
		work:       make(chan func()),
		stop:       make(chan struct{}),
		maxIdle:    int32(max(16, 8*runtime.GOMAXPROCS(0))),
		throughput: dispatcherThroughput,
	}
}

// Schedule implements actor.Dispatcher.
func (d *dispatcher) Schedule(fn func()) {
	select {
	case d.work <- fn:
	default:
		go d.run(fn)
	}
}

// Throughput implements actor.Dispatcher.
func (d *dispatcher) Throughput() int { return d.throughput }

func (d *dispatcher) run(fn func()) {
	for {
		fn()
		if d.idle.Add(1) > d.maxIdle {
			d.idle.Add(-1)
			return
		}
		select {
		case fn = <-d.work:
			d.idle.Add(-1)
		case <-d.stop:
			d.idle.Add(-1)
			return
		}
	}
}

// close lets the idle goroutines exit; runs scheduled later still work.
func (d *dispatcher) close() { close(d.stop) }
