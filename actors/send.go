package actors

import (
	"context"
	"fmt"
)

// target parses and checks a path given by a caller. Nothing is created for
// a path that fails here.
func (s *System) target(path string) (Path, error) {
	p, err := ParsePath(path)
	if err != nil {
		return Path{}, err
	}
	if _, err := s.tree.match(p); err != nil {
		return Path{}, err
	}
	return p, nil
}

// Request sends msg to the part at path and waits for its reply, which is
// released only after the part's transaction for msg has committed. ctx
// bounds the wait; a message whose ctx is done before its part reaches it is
// not handled.
//
// The error is the handler's own error, or wraps ErrInvalidPath, ErrNoKind,
// ErrPanic, ErrActivation, persistence.ErrCommit, ErrCallCycle or
// ErrClosed, or is ctx.Err(). When ctx ends while the message is being
// handled, the caller cannot know whether it committed.
//
// A handler must pass its Context.Context as ctx: it carries the call path
// (the parts whose handlers wait along it), and a request that would wait
// on one of them fails at once with an error wrapping ErrCallCycle (and
// ErrCallToSelf for the handler's own part) instead of waiting out ctx's
// deadline. That is a request to the part itself or to a part that called
// it, directly or through others, and a request for a part that is not
// active whose nearest active ancestor waits along the path (a part
// requesting its own child that is passivated: the parent activates its
// children, and it is busy). A request made with another context, such as
// context.Background(), is not checked and waits for its deadline.
func (s *System) Request(ctx context.Context, path string, msg any) (any, error) {
	p, err := s.target(path)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkRequest(ctx, p); err != nil {
		return nil, err
	}
	if err := s.admit(p); err != nil {
		return nil, err
	}
	env := &envelope{to: p, msg: msg, ctx: ctx, reply: make(chan result, 1)}
	if !s.inflight.begin() {
		return nil, ErrClosed
	}
	s.deliver(env)
	return s.await(ctx, env)
}

// await waits for the reply to env, which was sent with a reply channel,
// until ctx ends or the System closes.
func (s *System) await(ctx context.Context, env *envelope) (any, error) {
	select {
	case r := <-env.reply:
		return r.val, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.done:
		return nil, ErrClosed
	}
}

// Send sends msg to the part at path without waiting. Delivery is at most
// once: an error of the handler is logged, not returned.
func (s *System) Send(path string, msg any) error {
	p, err := s.target(path)
	if err != nil {
		return err
	}
	if err := s.admit(p); err != nil {
		return err
	}
	if !s.inflight.begin() {
		return ErrClosed
	}
	s.deliver(&envelope{to: p, msg: msg, ctx: context.Background()})
	return nil
}

// admit refuses a new message for the active part at p when its mailbox
// already holds Options.MaxMailbox messages: the caller gets an error
// wrapping ErrBackpressure, and memory stays bounded. A part that is not
// active has an empty mailbox.
func (s *System) admit(p Path) error {
	if v, ok := s.parts.Load(p.String()); ok && v.(*part).gauges.queued.Load() >= int64(s.opts.MaxMailbox) {
		return fmt.Errorf("%w: %s has %d messages waiting", ErrBackpressure, p, s.opts.MaxMailbox)
	}
	return nil
}

// Restart restarts the active part at path as its parent does after a
// failure: the part's file is closed, its active children are stopped, and
// it is started again from its file. Messages already queued for it are
// handled after the restart. It returns an error wrapping ErrNotActive when
// the part is not active. From a handler, pass its Context.Context: a
// restart of one of the handler's own children (or of a child of a part
// waiting along its call path) fails at once with ErrCallCycle, as its
// parent, which restarts it, is busy.
func (s *System) Restart(ctx context.Context, path string) error {
	p, err := s.target(path)
	if err != nil {
		return err
	}
	if err := checkRestart(ctx, p); err != nil {
		return err
	}
	v, ok := s.parts.Load(p.String())
	if !ok {
		return fmt.Errorf("%w: %s", ErrNotActive, p)
	}
	child := v.(*part)
	done := make(chan error, 1)
	if !s.inflight.begin() {
		return ErrClosed
	}
	defer s.inflight.end()
	if !child.parent.post(&restartChild{child: child, done: done}) {
		return fmt.Errorf("%w: %s", ErrNotActive, p)
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		return ErrClosed
	}
}

// servedHere reports whether the part at path is served by this System,
// not by another node through Options.Remote.
func (s *System) servedHere(path Path) bool {
	r := s.opts.Remote
	return r == nil || r.Local(path)
}

// deliver posts env to its part if active, else to its nearest active
// ancestor, which activates the next level down. Looking a part up never
// passes through its ancestors' mailboxes.
func (s *System) deliver(env *envelope) {
	if s.stopped.Load() {
		s.finish(env, nil, ErrClosed)
		return
	}
	if !s.servedHere(env.to) {
		r := s.opts.Remote
		// Another node's: the hop between nodes is the boundary this
		// message crosses, whatever whole it would pass through here.
		go func() {
			val, err := r.Request(env.ctx, env.to, env.msg)
			s.finish(env, val, err)
		}()
		return
	}
	if s.holdForDrain(env.to, env) {
		return // its subtree is being drained: delivered at its release
	}
	for p := env.next(); !p.IsRoot(); p = p.Parent() {
		v, ok := s.parts.Load(p.String())
		if !ok {
			continue
		}
		if p != env.to {
			// Activated through p: p must not be waiting on this call.
			if err := checkRoute(env.ctx, env.to, p); err != nil {
				s.finish(env, nil, err)
				return
			}
		}
		if v.(*part).post(env) {
			return
		}
	}
	if !s.root.post(env) {
		s.finish(env, nil, ErrClosed)
	}
}

// reroute delivers again a message that its part could not handle because
// it was stopping.
func (s *System) reroute(env *envelope) {
	env.hops++
	if env.hops > maxHops {
		s.finish(env, nil, fmt.Errorf("%w: %s: rerouted %d times", ErrUndeliverable, env.to, maxHops))
		return
	}
	s.deliver(env)
}

// dispatch delivers a message sent by a handler, after its commit. (A
// timer's message is not dispatched: the part sets the timer, see settle.)
func (s *System) dispatch(env *envelope) {
	s.inflight.add()
	if err := s.admit(env.next()); err != nil {
		s.finish(env, nil, err) // logged as dropped: Send is at most once
		return
	}
	s.deliver(env)
}

// finish answers env, once. Every envelope is finished exactly once: that is
// what Close waits for.
func (s *System) finish(env *envelope, val any, err error) {
	if env.finished.Swap(true) {
		return
	}
	if env.done != nil {
		env.done(val, err)
	} else if env.reply != nil {
		env.reply <- result{val, err}
	} else if err != nil {
		s.log.Warn("message dropped", "to", env.to.String(), "from", env.from.String(), "type", fmt.Sprintf("%T", env.msg), "err", err)
	}
	s.inflight.end()
}
