package actors

import (
	"fmt"
)

// timers are a part's waiting Context.After timers, owned by the part's
// goroutine. A timer's own goroutine only posts the message to the part;
// the part takes it only if the timer is still pending (not cancelled by a
// restart meanwhile).
type timers struct {
	pending map[uint64]Timer // at most MaxTimers
	held    int              // set by handlers whose batches are not durable yet
	seq     uint64
}

// timerCount returns the timers set and not fired: armed, or held until
// their batch is durable (the bound, MaxTimers, counts both).
func (p *part) timerCount() int { return len(p.timers.pending) + p.timers.held }

// holdOut adds to b the messages a handler sent (Context.Send, After),
// counting its timers until b settles.
func (p *part) holdOut(b *batch, out []*envelope) {
	for _, env := range out {
		if env.timer != nil {
			p.timers.held++
		}
	}
	b.out = append(b.out, out...)
}

// settleTimers arms b's timers once b is durable, or forgets them when it
// failed.
func (p *part) settleTimers(b *batch, durable bool) {
	for _, env := range b.out {
		if env.timer == nil {
			continue
		}
		p.timers.held--
		if durable {
			p.startTimer(env)
		}
	}
}

// startTimer arms the timer env carries, once its handler's batch is
// durable.
func (p *part) startTimer(env *envelope) {
	t := &p.timers
	if p.state >= stopping || len(t.pending) >= MaxTimers {
		return // the part stopped meanwhile, or raced past the bound
	}
	if t.pending == nil {
		t.pending = make(map[uint64]Timer)
	}
	t.seq++
	id := t.seq
	t.pending[id] = p.sys.clock.AfterFunc(env.delay, func() {
		fired := &envelope{to: env.to, from: env.from, msg: env.msg, ctx: env.ctx, timerID: id}
		p.sys.inflight.add()
		if !p.post(fired) {
			p.sys.finish(fired, nil, fmt.Errorf("%w: %s: timer fired after it stopped", ErrNotActive, p.path))
		}
	})
}

// timerFired reports whether env, a fired timer's message, is still
// wanted: its timer is pending in this incarnation. It forgets the timer.
func (p *part) timerFired(env *envelope) bool {
	if _, live := p.timers.pending[env.timerID]; !live {
		return false
	}
	delete(p.timers.pending, env.timerID)
	return true
}

// stopTimers cancels p's waiting timers (p restarts or stops).
func (p *part) stopTimers() {
	for id, t := range p.timers.pending {
		t.Stop()
		delete(p.timers.pending, id)
	}
}
