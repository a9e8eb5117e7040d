package actors

import (
	"github.com/asynkron/protoactor-go/actor"
)

// deferCommit decides, with the shared barrier, to keep a drained batch
// open while an earlier commit of the part still waits for its sync: the
// replies could not leave before the next sync anyway, and one commit per
// part per sync writes one log frame per changed page instead of one per
// batch, which is what a sync pays for. The synced notice of that earlier
// commit reaches the part as a message, after which Receive commits. The
// batch bounds (MaxBatch, MaxBatchDelay) still apply as messages arrive.
func (p *part) deferCommit() bool {
	return p.sys.barrier != nil && p.sync.unsynced > 0 && p.state == running
}

// batchDone reports whether the open batch should commit after msg: when no
// more envelopes wait in the mailbox (drained), or a bound is reached (full). Deciding here,
// on the part's own goroutine after each message, means the commit never
// overlaps the next message (protoactor-go's MailboxEmpty hook runs after
// the mailbox is marked idle and could).
func (p *part) batchDone(msg any) (drained, full bool) {
	waiting := p.gauges.queued.Load()
	if _, ok := msg.(*envelope); ok {
		waiting-- // msg itself is counted until MessageReceived
	}
	full = p.batch.n >= p.sys.opts.MaxBatch || p.sys.since(p.batch.start) >= p.sys.opts.MaxBatchDelay
	return waiting <= 0, full
}

// MailboxStarted implements actor.MailboxMiddleware.
func (p *part) MailboxStarted() {}

// MessagePosted implements actor.MailboxMiddleware. It counts the
// envelopes waiting in the mailbox, for group commit.
func (p *part) MessagePosted(msg any) {
	if _, ok := msg.(*envelope); ok {
		p.gauges.queued.Add(1)
	}
}

// MailboxEmpty implements actor.MailboxMiddleware.
func (p *part) MailboxEmpty() {}

// MessageReceived implements actor.MailboxMiddleware. It runs on the
// mailbox goroutine after every message, including the messages that
// protoactor-go drops without calling Receive because the actor has
// stopped: an envelope that p did not take is routed again, so a message
// queued for a part that stops is not lost.
func (p *part) MessageReceived(msg any) {
	if env, ok := msg.(*envelope); ok {
		p.gauges.queued.Add(-1)
		if env != p.current {
			p.sys.reroute(env)
		}
	}
	p.current = nil
}

func (p *part) receive(c actor.Context, env *envelope) {
	switch p.state {
	case running:
	case exiting, restarting:
		// Its parent decides what comes after a normal exit, and
		// protoactor-go keeps delivering messages while a restart waits
		// for the children to stop. Hold them for the new incarnation
		// (or the parent, if p stops) rather than bounce them back here.
		p.current = env
		p.stash = append(p.stash, env)
		p.gauges.queued.Add(1) // still waiting: counted until handled
		return
	default:
		return // stopping: MessageReceived reroutes it
	}
	p.current = env
	if env.timerID != 0 && !p.timerFired(env) {
		p.sys.finish(env, nil, nil) // cancelled by a restart since it was set
		return
	}
	p.gauges.lastActive.Store(p.sys.clock.Now().UnixNano())
	if env.relayed && env.via == p.path {
		env.relayed = false // passed through the smallest common whole
		p.sys.relays.Add(1)
	}
	next := env.next()
	switch {
	case next == p.path:
		p.handle(env)
	case p.path.IsAncestorOf(next):
		p.route(c, env)
	default:
		p.sys.reroute(env)
	}
}

// route passes env one level down towards where it goes next, activating
// the child on that level if needed.
func (p *part) route(c actor.Context, env *envelope) {
	seg := env.next().segment(p.path.Depth())
	child := p.kids.active[seg]
	if child == nil && p.planHolds(seg) {
		// Stopped by a group restart that has not started it again yet.
		if p.kids.pending == nil {
			p.kids.pending = make(map[string][]*envelope)
		}
		p.kids.pending[seg] = append(p.kids.pending[seg], env)
		return
	}
	if child == nil {
		if p.sys.holdForDrain(env.next().Ancestor(p.path.Depth()+1), env) {
			return // not activated while its subtree is drained (see Drain)
		}
		known := p.recordChild(seg)
		child = p.spawn(c, seg, known)
	}
	if child.post(env) {
		return
	}
	// The child is stopping: hold the message until it has terminated,
	// then activate it again (childTerminated).
	if p.kids.pending == nil {
		p.kids.pending = make(map[string][]*envelope)
	}
	p.kids.pending[seg] = append(p.kids.pending[seg], env)
}
