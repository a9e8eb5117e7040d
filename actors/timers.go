package actors

import (
	"fmt"
)

func (p *part) timerCount() int {
	p.tmu.Lock()
	defer p.tmu.Unlock()
	return len(p.timers)
}

// startTimer arms the timer env carries, once its handler committed.
func (p *part) startTimer(env *envelope) {
	p.tmu.Lock()
	defer p.tmu.Unlock()
	if p.timersOff || len(p.timers) >= MaxTimers {
		return // the part stopped meanwhile, or raced past the bound
	}
	if p.timers == nil {
		p.timers = make(map[uint64]Timer)
	}
	p.timerSeq++
	id := p.timerSeq
	p.timers[id] = p.sys.clock.AfterFunc(env.delay, func() {
		p.tmu.Lock()
		_, live := p.timers[id]
		delete(p.timers, id)
		p.tmu.Unlock()
		if !live {
			return
		}
		fired := &envelope{to: env.to, from: env.from, msg: env.msg, ctx: env.ctx}
		p.sys.inflight.add()
		if !p.post(fired) {
			p.sys.finish(fired, nil, fmt.Errorf("%w: %s: timer fired after it stopped", ErrNotActive, p.path))
		}
	})
}

// stopTimers cancels p's waiting timers; once p has stopped (final), no
// new one starts.
func (p *part) stopTimers(final bool) {
	p.tmu.Lock()
	defer p.tmu.Unlock()
	for id, t := range p.timers {
		t.Stop()
		delete(p.timers, id)
	}
	if final {
		p.timersOff = true
	}
}
