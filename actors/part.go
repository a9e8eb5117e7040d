package actors

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fractalrt/fractal/persistence"
)

// A part is one node of the tree: the state shared by all incarnations of
// the actor at one path.
//
// One owner: every field below "owned by the part's goroutine" is read and
// written only on the goroutine that runs the part's mailbox
// (protoactor-go runs one message at a time, middleware calls included).
// Whatever happens elsewhere (a commit becoming durable, a timer firing, the
// passivator deciding, an API call) reaches the part as a message (see
// partMsg). The exceptions are the identity fields, set before the part's
// actor starts and never changed, the mailbox gate (its own lock), and the
// gauges, atomics that the part writes and anyone may read. See
// docs/INTERNALS.md for the goroutines and the lock order.
//
// The part has more than 15 fields because it is the one place where a
// part's state lives; the components (batch, timers, children, outbox)
// keep theirs in their own structs.
type part struct {
	// Identity: set at spawn, never changed.
	sys    *System
	path   Path
	kind   *kindSpec // nil for the guardian
	parent *part     // nil for the guardian
	pid    *actor.PID

	gate   mailGate // whether messages may still be posted (any goroutine)
	gauges gauges   // what other goroutines read of the part (atomics)

	// Owned by the part's goroutine.
	state    lifecycle
	stopWhy  stopReason // why it stops, once state is stopping
	batch    *batch     // the open group-commit transaction, if any
	sync     syncState  // commits waiting for durability
	current  *envelope  // envelope being received (see MessageReceived)
	db       *persistence.DB
	handler  Handler
	stash    []*envelope // messages received while restarting
	kids     children    // active children, messages held for them, supervision
	timers   timers      // Context.After
	ob       outbox      // durable deliveries in flight
	recorded bool        // its parent noted that its file was created: the file must exist
	schema   component   // the runtime's tables in db, as last committed (see schema.go)
	pendingC component   // tables installed in the open transaction (see install)
	eager    bool        // open the file at Started and tell the parent (a group restart's start)
	statAt   time.Time   // when gauges.fileBytes was observed
}

// mailGate says whether messages may still be posted to a part's mailbox. It
// is closed once, when the part begins to stop: nothing is posted after
// that, and whatever was posted before is either handled or rerouted (see
// MessageReceived). post takes mu for reading, close for writing; no other
// lock is taken while mu is held.
type mailGate struct {
	mu     sync.RWMutex
	closed bool
}

// gauges are the part's figures that other goroutines read: the passivator
// (lastActive, nchildren, queued), admission (queued), System.Info
// (failures, lastErr) and metric scrapes (fileBytes). The part's goroutine
// writes them, except queued, which posters increment (MessagePosted).
type gauges struct {
	queued     atomic.Int64           // envelopes posted to the mailbox and not yet received
	lastActive atomic.Int64           // unix nanoseconds (Options.Clock) of the last message received
	nchildren  atomic.Int32           // active children
	failures   atomic.Int64           // handler panics since activation (see System.Info)
	lastErr    atomic.Pointer[string] // the last failure or activation error
	fileBytes  atomic.Int64           // size of the part's files as last observed
}

// lifecycle is where a part's actor is in its life. Transitions, each on
// the part's goroutine, driven by protoactor-go's system messages:
//
//	starting   --Started-->    running     (spawned; the file opens at the first message)
//	running    --Context.Stop-> exiting    (its batch committed; its parent decides, see childExit)
//	running    --Restarting--> restarting  (a failure; its parent decided to restart it)
//	exiting    --Restarting--> restarting  (a permanent part is restarted even after a normal exit)
//	exiting    --Stopping-->   stopping    (a transient or temporary part ends)
//	restarting --Started-->    running     (the file is reopened and Activate reruns)
//	running    --Stopping-->   stopping    (passivation, its parent stopping, escalation, Close)
//	restarting --Stopping-->   stopping
//	stopping   --Stopped-->    stopped     (the file is closed; the part struct is dropped)
//
// Only a running part handles messages. An exiting or restarting part
// holds the envelopes it receives (stash) for its next incarnation (after a
// restart), or reroutes them when it stops. A stopping or
// stopped part handles none: its envelopes are rerouted, through its
// parent, to its next incarnation.
type lifecycle uint8

const (
	starting lifecycle = iota
	running
	exiting
	restarting
	stopping
	stopped
)

var lifecycleNames = [...]string{"starting", "running", "exiting", "restarting", "stopping", "stopped"}

func (l lifecycle) String() string { return lifecycleNames[l] }

// stopReason says why a part stops.
type stopReason uint8

const (
	stopByParent   stopReason = iota // its parent stops (a failure, an escalation, Close)
	stopPassivated                   // idle, or over MaxActiveParts
)

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

// post puts msg in p's mailbox unless p is stopping. It is safe from any
// goroutine.
func (p *part) post(msg any) bool {
	p.gate.mu.RLock()
	defer p.gate.mu.RUnlock()
	if p.gate.closed {
		return false
	}
	p.sys.as.Root.Send(p.pid, msg)
	return true
}

// closeGate stops further posts to p (p's goroutine, once).
func (p *part) closeGate() {
	p.gate.mu.Lock()
	p.gate.closed = true
	p.gate.mu.Unlock()
}

// A partMsg is a message of the runtime's own that a part applies to
// itself on its goroutine, outside any batch: news from another goroutine
// (a commit became durable, the passivator's request, an API call).
type partMsg interface {
	apply(p *part, c actor.Context)
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
	case partMsg:
		m.apply(p, c)
	case *actor.Started:
		p.started(c)
	case *actor.Restarting:
		p.restarting()
	case *actor.Stopping:
		p.stopping(c)
	case *actor.Stopped:
		p.stopped()
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

// started: the actor runs, for the first time or after a restart.
func (p *part) started(c actor.Context) {
	again := p.state == restarting
	p.state = running
	if (again || p.eager) && p.kind != nil {
		// A restart reloads at once, as OTP's init does: the handler is
		// rebuilt and Activate reruns from what is on disk.
		if err := p.open(); err != nil {
			p.logger().Warn("reactivation after restart failed", "err", err)
		}
	}
	if p.eager {
		p.eager = false
		p.parent.post(childStarted{p})
	}
	p.receiveStash(c)
}

// restarting: the parent restarts p after a failure. protoactor-go stops
// p's children first, then sends Started.
func (p *part) restarting() {
	p.state = restarting
	p.kids.plan = nil // its children are stopped with it
	p.stopTimers()
	p.ob.stop()
	p.commit()
	p.closeDB()
}

// stopping: p stops for good (this incarnation). The open batch commits;
// the gate closes, so that later messages go to the parent, which holds
// them until p has terminated and then activates it again.
func (p *part) stopping(c actor.Context) {
	p.state = stopping
	p.kids.plan = nil // its children are stopped with it
	p.ob.stop()
	p.commit()
	p.closeGate()
	if p.kind != nil {
		if p.sys.parts.CompareAndDelete(p.path.String(), p) {
			p.sys.passivator.active.Add(-1)
		}
	}
	// A part stopped after a failure has a suspended mailbox: resume it, so
	// that the messages still queued there reach MessageReceived and are
	// rerouted instead of stranded. Nothing is handled by this incarnation
	// any more.
	if sup, ok := c.(actor.Supervisor); ok {
		sup.ResumeChildren(c.Self())
	}
}

// stopped: p's children have stopped and so has p.
func (p *part) stopped() {
	p.state = stopped
	p.stopTimers()
	p.closeDB()
	p.sys.noteStopped(p)
	p.failPending()
	if p.stopWhy == stopPassivated {
		p.sys.passivations.Add(1)
		if km := p.km(); km != nil {
			km.passivations.Inc()
		}
	}
	if p.kind == nil {
		close(p.sys.rootStopped)
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
		p.gauges.queued.Add(-1) // counted since it was held (the panic path counts its own)
	}
}

func (p *part) setLastError(msg string) { p.gauges.lastErr.Store(&msg) }
