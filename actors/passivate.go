package actors

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// DefaultIdleTimeout is how long a part stays active without a message when
// its kind leaves Kind.IdleTimeout zero.
const DefaultIdleTimeout = 5 * time.Minute

// passivate asks a part to passivate itself if it is still idle.
type passivate struct{}

func (passivate) apply(p *part, c actor.Context) { p.passivate(c) }

// idleTimeout returns the kind's idle timeout; negative means never.
func (k *kindSpec) idleTimeout() time.Duration {
	if k.IdleTimeout == 0 {
		return DefaultIdleTimeout
	}
	return k.IdleTimeout
}

// passivator is the System's goroutine that finds idle parts and parts over
// the cap, and asks them to passivate.
type passivator struct {
	stop chan struct{}
	kick chan struct{} // capacity 1: more parts are active than the cap allows
	wg   sync.WaitGroup
	once sync.Once

	active   atomic.Int64 // parts active (registered in System.parts)
	pressure atomic.Bool  // an activation ran out of descriptors: free some, cap or not
}

// kickInterval is the shortest time between two passes asked by kicks.
const kickInterval = 10 * time.Millisecond

// activated counts a part that became active and, when that puts the
// system over its cap, asks the passivator for a pass at once rather than
// at its next tick: a burst of activations must not run the process out of
// descriptors.
func (s *System) activated() {
	if n := s.passivator.active.Add(1); s.maxActive > 0 && n > int64(s.maxActive) {
		s.kickPassivator()
	}
}

// relieve asks the passivator to passivate a tenth of the idle leaves now,
// whatever the cap: an activation found no descriptor left.
func (s *System) relieve() {
	s.passivator.pressure.Store(true)
	s.kickPassivator()
}

// kickPassivator asks the passivator for a pass now.
func (s *System) kickPassivator() {
	select {
	case s.passivator.kick <- struct{}{}:
	default:
	}
}

// passivationInterval is how often the passivator looks: a quarter of the
// shortest idle timeout, between 10 ms and 1 s.
func (s *System) passivationInterval() time.Duration {
	every := time.Second
	for _, k := range s.tree.kinds {
		if t := k.idleTimeout(); t > 0 && t/4 < every {
			every = t / 4
		}
	}
	return max(every, 10*time.Millisecond)
}

func (s *System) startPassivator() {
	s.passivator.stop = make(chan struct{})
	s.passivator.kick = make(chan struct{}, 1)
	every := s.passivationInterval()
	s.passivator.wg.Add(1)
	go func() {
		defer s.passivator.wg.Done()
		tick, t := s.after(every)
		defer func() { t.Stop() }()
		var last time.Time
		for {
			select {
			case <-s.passivator.stop:
				return
			case <-tick:
				tick, t = s.after(every)
				last = s.clock.Now()
				s.passivateIdle(last)
			case <-s.passivator.kick:
				if wait := kickInterval - s.since(last); wait > 0 {
					waited, wt := s.after(wait)
					select { // at most one pass per kickInterval
					case <-waited:
					case <-s.passivator.stop:
						wt.Stop()
						return
					}
				}
				last = s.clock.Now()
				s.passivateIdle(last)
			}
		}
	}()
}

func (s *System) stopPassivator() {
	s.passivator.once.Do(func() { close(s.passivator.stop) })
	s.passivator.wg.Wait()
}

// passivateIdle asks every idle leaf past its kind's idle timeout to
// passivate, and, while more parts are active than the cap allows, the
// least recently used idle leaves too. "Idle" means no message waiting in
// its mailbox; a part with active children is never a candidate (its
// children are passivated first). The part decides on its own goroutine
// (see part.passivate), so a message that arrives meanwhile keeps it.
//
// Cost per tick: one pass over the active parts and a sort of the idle
// leaves, bounded by MaxActiveParts plus what arrived since the last tick.
func (s *System) passivateIdle(now time.Time) {
	var cands []*part
	active := 0
	s.parts.Range(func(_, v any) bool {
		p := v.(*part)
		active++
		if p.gauges.nchildren.Load() == 0 && p.gauges.queued.Load() == 0 {
			cands = append(cands, p)
		}
		return true
	})
	slices.SortFunc(cands, func(a, b *part) int {
		x, y := a.gauges.lastActive.Load(), b.gauges.lastActive.Load()
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return 0
	})
	excess := 0
	if s.maxActive > 0 && active > s.maxActive {
		// Down to 95% of the cap, so that a stream of activations asks
		// for a pass every few dozen activations, not every one.
		excess = active - s.maxActive + s.maxActive/20
	}
	if s.passivator.pressure.Swap(false) {
		excess = max(excess, len(cands)/10, 1)
	}
	for i, p := range cands {
		timeout := p.kind.idleTimeout()
		idle := now.Sub(time.Unix(0, p.gauges.lastActive.Load()))
		if i < excess || (timeout > 0 && idle >= timeout) {
			p.post(passivate{})
		}
	}
}

// passivate stops p if it is still idle when the request reaches it: no
// message waiting, no open batch, no active child. The stop then goes the
// way of every stop: the open work is committed, messages that arrive
// from now on go to the parent, which holds them and activates p again once
// it has terminated, and the file is closed.
func (p *part) passivate(c actor.Context) {
	if p.kind == nil || p.state != running || p.batch != nil || len(p.kids.active) > 0 || p.gauges.queued.Load() > 0 || p.ob.inFlight() {
		return
	}
	p.stopWhy = stopPassivated
	c.Stop(c.Self())
}
