package actors

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// ErrDraining is returned by Drain for a subtree that overlaps one already
// being drained or deleted, and by Delete for a subtree that overlaps one
// being drained or (another) being deleted.
var ErrDraining = errors.New("actors: subtree is being drained")

// drains is the System's set of subtrees being drained (see Drain). Lock
// order: drains.mu is taken alone; no other lock is held with it.
type drains struct {
	n        atomic.Int32 // len(subtrees), read on every delivery
	mu       sync.Mutex
	subtrees map[Path]*drain
}

// A drain holds the messages for one subtree until it is released. A
// deletion's drain (del not nil) lets some through: see deletion.admits.
type drain struct {
	held []*envelope
	del  *deletion
}

// hold keeps env when p lies in a subtree being drained, and reports
// whether it did. p is where env would go now: its target (System.deliver)
// or the child a parent is about to activate for it (part.route). At most
// Options.MaxMailbox messages are held per drain; beyond that env is
// answered with ErrBackpressure (and counts as handled).
func (s *System) holdForDrain(p Path, env *envelope) bool {
	d := &s.drains
	if d.n.Load() == 0 {
		return false
	}
	d.mu.Lock()
	var dr *drain
	for sub, x := range d.subtrees {
		if sub.Contains(p) {
			dr = x
			break
		}
	}
	if dr == nil || dr.del.admits(env) {
		d.mu.Unlock()
		return false
	}
	full := len(dr.held) >= s.opts.MaxMailbox
	if !full {
		dr.held = append(dr.held, env)
	}
	d.mu.Unlock()
	if full {
		s.finish(env, nil, fmt.Errorf("%w: %s is being drained and %d messages wait for it", ErrBackpressure, p, s.opts.MaxMailbox))
	}
	return true
}

// Drain quiesces the subtree rooted at path so that its files can be copied
// or moved: from the call on, messages for any part in the subtree wait
// (held in memory, at most Options.MaxMailbox of them) instead of being
// delivered; the active parts of the subtree are stopped, their open
// batches committed and their replies released, and their files closed.
// When Drain returns without error no part of the subtree is active and
// none will be activated until release is called, which delivers the
// waiting messages in the order they arrived (through Options.Remote when
// it no longer reports the subtree as local, so a subtree that moved to
// another node receives them there).
//
// release must be called exactly once after a successful Drain (further
// calls do nothing), before Close. On error nothing stays drained. A
// subtree that overlaps one being drained or deleted is refused with
// ErrDraining. From a handler, pass its Context.Context: a drain that would
// wait for a part on the handler's call path (the subtree's parent, or a
// part in it, the handler's own included) fails at once with ErrCallCycle.
func (s *System) Drain(ctx context.Context, path string) (release func(), err error) {
	p, err := s.target(path)
	if err != nil {
		return nil, err
	}
	if s.stopped.Load() {
		return nil, ErrClosed
	}
	if err := checkDrain(ctx, p); err != nil {
		return nil, err
	}
	d := &s.drains
	dr := &drain{}
	d.mu.Lock()
	for sub := range d.subtrees {
		if sub.Contains(p) || p.Contains(sub) {
			d.mu.Unlock()
			return nil, fmt.Errorf("%w: %s overlaps %s", ErrDraining, p, sub)
		}
	}
	if d.subtrees == nil {
		d.subtrees = make(map[Path]*drain)
	}
	d.subtrees[p] = dr
	d.n.Add(1)
	d.mu.Unlock()
	var once sync.Once
	release = func() {
		once.Do(func() {
			d.mu.Lock()
			held := dr.held
			delete(d.subtrees, p)
			d.n.Add(-1)
			d.mu.Unlock()
			for _, env := range held {
				s.deliver(env)
			}
		})
	}
	if err := s.quiesce(ctx, p); err != nil {
		release()
		return nil, fmt.Errorf("actors: drain %s: %w", p, err)
	}
	return release, nil
}

// quiesce stops the active parts of the subtree at p, which is marked as
// draining, and waits until their files are closed and their replies
// released.
func (s *System) quiesce(ctx context.Context, p Path) error {
	// A parent that decided to activate p just before p was marked may
	// still be doing so: a round trip through its mailbox (a restart
	// request for a part that is not its child, which it refuses) waits
	// for that to finish. Later decisions see the mark.
	parent := s.root
	if pp := p.Parent(); !pp.IsRoot() {
		parent = nil
		if v, ok := s.parts.Load(pp.String()); ok {
			parent = v.(*part)
		}
	}
	if parent != nil {
		done := make(chan error, 1)
		if parent.post(&restartChild{child: &part{path: p}, done: done}) {
			select {
			case <-done:
			case <-ctx.Done():
				return ctx.Err()
			case <-s.done:
				return ErrClosed
			}
		}
	}
	// Stopping the subtree's root stops its children first. A part's
	// parent is always active while it is, so when the root of the
	// subtree is not active no part in it is.
	for range maxHops {
		v, ok := s.parts.Load(p.String())
		if !ok {
			break
		}
		f := s.as.Root.StopFuture(v.(*part).pid)
		waited := make(chan error, 1)
		go func() { waited <- f.Wait() }()
		select {
		case <-waited:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.done:
			return ErrClosed
		}
	}
	for {
		left := false
		s.parts.Range(func(k, _ any) bool {
			if q, err := ParsePath(k.(string)); err == nil && p.Contains(q) {
				left = true
			}
			return !left
		})
		if !left {
			break
		}
		select { // a part of the subtree still finishing its stop
		case <-time.After(time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// Batches committed by the stopped parts release their replies after
	// the barrier's next sync; callbacks run in order, so once this one
	// ran, theirs have.
	if s.barrier != nil {
		if err := s.barrier.Wait(ctx); err != nil {
			return err
		}
	}
	return nil
}
