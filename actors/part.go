package actors

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fractalrt/fractal/persistence"
	"github.com/fractalrt/fractal/supervisor"
)

// A part is one node of the tree: the state shared by all incarnations of
// the actor at one path. Fields below mu are owned by the part's mailbox
// goroutine (protoactor-go runs one message, middleware call included, at a
// time), except where noted.
//
// Goroutine and lock rules: post takes mu for reading; the part takes it for
// writing only to mark itself stopping. No other lock is held while mu is.
type part struct {
	sys    *System
	path   Path
	kind   *kindSpec // nil for the guardian
	parent *part     // nil for the guardian
	pid    *actor.PID

	mu       sync.RWMutex
	stopping bool // set once: no message may be posted to pid any more

	queued   atomic.Int64 // envelopes posted to the mailbox and not yet received (any goroutine)
	unsynced atomic.Int64 // commits of p still waiting for the barrier (p's goroutine and the barrier's)
	deferred atomic.Bool  // p keeps a drained batch open until the barrier's callback (see deferCommit)

	lastActive  atomic.Int64 // unix nanoseconds of the last message received (see passivation)
	nchildren   atomic.Int32 // len(children), for the passivator's goroutine
	passivating bool         // p stops because it was idle, not because it failed or the system closes

	failures atomic.Int64           // handler panics since activation (see System.Info)
	lastErr  atomic.Pointer[string] // the last failure or activation error

	tmu       sync.Mutex       // guards the timers: set from the releasing goroutine, cancelled from p's
	timers    map[uint64]Timer // waiting timers (Context.After), at most MaxTimers
	timerSeq  uint64
	timersOff bool // p stopped: no new timer

	fileBytes atomic.Int64 // size of p's files as last observed (p's goroutine writes, scrapes read)
	statAt    time.Time    // when fileBytes was observed

	alive     bool                   // started and not stopping or restarting
	restarted bool                   // the next Started follows a restart
	batch     *batch                 // the open group-commit transaction, if any
	current   *envelope              // envelope being received (see MessageReceived)
	db        *persistence.DB        // nil until the first message after a (re)start
	handler   Handler                //
	children  map[string]*part       // active children by segment
	pending   map[string][]*envelope // messages for children that are stopping
	stash     []*envelope            // messages received while restarting
	sup       *supervisor.Supervisor // decisions about the children (see supervisorOf)

	recorded bool // its parent noted that its file was created: the file must exist

	ob         outbox       // durable deliveries in flight (guarded by its own mutex)
	durableOut atomic.Int64 // outbox rows up to this id are durable (set as batches are released)
}

// props returns the protoactor-go props of p: its mailbox carries p as
// middleware, and its supervisor strategy applies to p's children.
func (p *part) props() *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return (*partActor)(p) },
		actor.WithMailbox(actor.Unbounded(p)),
		actor.WithDispatcher(p.sys.dispatcher),
		actor.WithSupervisor(p), // p decides for its children: see HandleFailure
	)
}

func (p *part) logger() *slog.Logger {
	return p.sys.log.With("path", p.path.String())
}

// post puts env in p's mailbox unless p is stopping. It is safe from any
// goroutine. Because stopping is set under the write lock, nothing is posted
// to a mailbox after its part began to stop, and whatever was posted before
// is either handled or rerouted (see MessageReceived).
func (p *part) post(msg any) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.stopping {
		return false
	}
	p.sys.as.Root.Send(p.pid, msg)
	return true
}

// partActor is the protoactor-go actor of a part; its state lives in part
// so that it survives restarts.
type partActor part

// Receive implements actor.Actor.
func (a *partActor) Receive(c actor.Context) {
	p := (*part)(a)
	msg := c.Message()
	switch m := msg.(type) {
	case *envelope:
		p.receive(c, m)
	case flushBatch:
		// Committed below: batchDone holds once the mailbox is drained.
	case *restartChild:
		p.restartChild(c, m)
	case *actor.Started:
		p.alive = true
		if p.restarted && p.kind != nil {
			// A restart reloads at once, as OTP's init does: the handler
			// is rebuilt and Activate reruns from what is on disk.
			p.restarted = false
			if err := p.open(); err != nil {
				p.logger().Warn("reactivation after restart failed", "err", err)
			}
		}
		p.restarted = false
		p.receiveStash(c)
	case *actor.Restarting:
		p.alive = false
		p.stopTimers(false)
		p.ob.stop()
		p.restarted = true
		p.commit()
		p.closeDB()
	case *actor.Stopping:
		p.alive = false
		p.ob.stop()
		p.commit()
		p.mu.Lock()
		p.stopping = true
		p.mu.Unlock()
		if p.kind != nil {
			if p.sys.parts.CompareAndDelete(p.path.String(), p) {
				p.sys.passivator.active.Add(-1)
			}
		}
		// A part stopped after a failure has a suspended mailbox: resume
		// it, so that the messages still queued there reach
		// MessageReceived and are rerouted instead of stranded. Nothing is
		// handled by this incarnation any more (alive is false).
		if sup, ok := c.(actor.Supervisor); ok {
			sup.ResumeChildren(c.Self())
		}
	case passivate:
		p.passivate(c)
	case *actor.Stopped:
		p.stopTimers(true)
		p.closeDB()
		p.sys.noteStopped(p)
		p.failPending()
		if p.passivating {
			p.sys.passivations.Add(1)
			if km := p.km(); km != nil {
				km.passivations.Inc()
			}
		}
		if p.kind == nil {
			close(p.sys.rootStopped)
		}
	case *actor.Terminated:
		p.childTerminated(c, m.Who)
	}
	if p.batch == nil {
		return
	}
	if drained, full := p.batchDone(msg); full || (drained && !p.deferCommit()) {
		p.commit()
	}
}

// receiveStash handles, in order, the messages held while p restarted. If
// one of them panics, the ones after it are held again for the next
// incarnation (the panic restarts p once more).
func (p *part) receiveStash(c actor.Context) {
	stash := p.stash
	p.stash = nil
	for i, env := range stash {
		func() {
			defer func() {
				if v := recover(); v != nil {
					p.stash = append(p.stash, stash[i+1:]...)
					panic(v)
				}
			}()
			p.receive(c, env)
		}()
		p.queued.Add(-1) // counted since it was held (the panic path counts its own)
	}
}

func (p *part) setLastError(msg string) { p.lastErr.Store(&msg) }
