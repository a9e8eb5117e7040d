package actors

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// Deleting a part: see "Deleting a part" in the package documentation for
// what callers see. The steps, and why each is where it is:
//
//  1. outboxes: the parts of the subtree the alarm index knows to have
//     undelivered durable messages are asked, again and again, until none
//     has any (awaitOutboxes); the caller's ctx bounds the wait.
//  2. mark: the subtree is registered with the drains (drain.go), so that
//     from now on the messages from outside it wait (deletion.admits);
//     its own traffic (its parts' messages to each other and to
//     themselves, alarm wakes, the results of their deliveries) goes on,
//     so that their outboxes can empty, and they are waited for again:
//     a message handled since 1 may have sent more.
//  3. harden: nothing reaches the subtree any more, its active parts are
//     stopped (quiesce, as Drain does), and their files are read again: a
//     message handled meanwhile may have sent more, and then it is back to
//     the wait of 2 with the mark softened.
//  4. tombstone: the parent, in one transaction of its own file, removes
//     its records of the child and notes it in deletedTable as deleted,
//     files pending; the reply waits for that commit to be durable. From
//     here the part is gone: its parent refuses to activate it.
//  5. files: the child's directory is renamed to a name the runtime
//     reserves in the parent's directory (trashName), so that no tool
//     ever sees a half-removed part, then removed; the parent's directory
//     is synced, then the tombstone is marked done.
//  6. the alarm index forgets the subtree, and the messages held since 2
//     are answered with ErrNoPart.
//
// A crash before 4 is durable leaves the part whole; after, the part is
// gone, and the parent finishes 5 and 6 when it next opens its file
// (finishDeletes). Failing before 4 releases the held messages to the
// part, which was not deleted.

// deleters are the deletions under way, each on a goroutine of its own (a
// System.Delete caller's, or one started for Context.Delete): Close
// cancels them and waits for them before it stops the parts. Lock order:
// mu is taken alone.
type deleters struct {
	mu      sync.Mutex
	stop    chan struct{} // closed by Close
	stopped bool
	wg      sync.WaitGroup

	// hook, when not nil, is called at each step of a deletion with the
	// step's name (tests kill the process there). Set before any
	// deletion, never changed.
	hook func(step string)
}

// enter registers a deletion and returns its context, ended when ctx is
// or when Close begins, and the func that ends the registration.
func (d *deleters) enter(ctx context.Context) (context.Context, func(), error) {
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		return nil, nil, ErrClosed
	}
	if d.stop == nil {
		d.stop = make(chan struct{})
	}
	stop := d.stop
	d.wg.Add(1)
	d.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, func() { cancel(); d.wg.Done() }, nil
}

// stopAll cancels the deletions under way and waits for them to end
// (Close, before it waits for the messages in flight: a deletion holds
// some).
func (d *deleters) stopAll() {
	d.mu.Lock()
	if !d.stopped {
		d.stopped = true
		if d.stop == nil {
			d.stop = make(chan struct{})
		}
		close(d.stop)
	}
	d.mu.Unlock()
	d.wg.Wait()
}

func (d *deleters) step(name string) {
	if d.hook != nil {
		d.hook(name)
	}
}

// A deletion is the state of one deletion under way, kept in its drain.
// hard is guarded by drains.mu.
type deletion struct {
	path Path
	hard bool          // nothing reaches the subtree (step 3 on)
	done chan struct{} // closed when the deletion ended, either way
}

// admits reports whether env may go on into a subtree being deleted
// instead of waiting: until the deletion hardens, the subtree's own
// traffic and the deletion's probes do. d may be nil (a plain drain).
func (d *deletion) admits(env *envelope) bool {
	if d == nil || d.hard {
		return false
	}
	if _, ok := env.msg.(deleteProbe); ok {
		return true
	}
	return d.path.Contains(env.from)
}

// maxProbeDelay bounds the pause between two rounds of questions to the
// parts whose outboxes a deletion waits for.
const maxProbeDelay = 250 * time.Millisecond

// Delete deletes the part at path and its subtree: their files, the
// parent's record of the part, their alarms. It returns once the files
// are gone (or, should removing them fail, once the part is gone and its
// parent will remove them when it next opens its file).
//
// Messages that reach the part before Delete takes effect are handled;
// those that arrive later wait, then get an error wrapping ErrNoPart, as
// does every message to the path or below it afterwards, until Reuse:
// nothing is created for them. A durable message on its way to the
// subtree becomes a dead letter of its sender at once.
//
// The subtree's own durable messages are delivered first: Delete waits,
// within ctx, until no part of the subtree has any left in its outbox,
// and otherwise returns an error wrapping ErrOutboxNotEmpty and deletes
// nothing. Their dead letters, like everything in their files, go with
// them.
//
// Deleting a part that was deleted already, or whose parent has no file,
// succeeds. A subtree that overlaps one being drained or deleted is
// refused with ErrDraining; the same path being deleted is waited for,
// then deleted again. A path that Options.Remote says another node serves
// is refused with ErrRemotePart.
//
// Delete waits for the subtree to stop and for its parent to commit: from
// a handler, pass its Context.Context, and a deletion that would wait for
// a part on the handler's call path (the parent, or a part of the subtree,
// the handler's own included) fails at once with ErrCallCycle. A part
// deletes itself with Context.Delete.
func (s *System) Delete(ctx context.Context, path string) error {
	p, err := s.target(path)
	if err != nil {
		return err
	}
	if !s.servedHere(p) {
		return fmt.Errorf("actors: delete: %w: %s", ErrRemotePart, p)
	}
	if err := checkDelete(ctx, p, true); err != nil {
		return err
	}
	ctx, done, err := s.deletes.enter(ctx)
	if err != nil {
		return err
	}
	defer done()
	return s.delete(ctx, p)
}

// Delete deletes this part and its subtree, as System.Delete does, once
// the message being handled has committed (nothing is deleted if it rolls
// back). Its reply and the messages it sends still go out, and the
// durable messages it sends are delivered before the file goes.
//
// The request is durable: it is kept in the part's file, as an alarm of
// the runtime's own, in the message's transaction, so a crash or Close
// before the deletion is done does not forget it; it is carried out by
// the next wake of that alarm (at once, and after a failure 30 seconds
// later, for as long as the subtree's outboxes are not empty). Messages
// that reach the part before the deletion takes effect are still handled.
func (c *Context) Delete() error {
	if err := c.usable(); err != nil {
		return err
	}
	return c.setAlarm(deleteAlarm, c.part.sys.clock.Now())
}

// deleteLater starts a deletion of p on a goroutine of its own, unless one
// is under way or Close has begun. Each attempt is bounded by
// Delivery.Timeout; a failed one is tried again at the next wake of p's
// delete alarm.
func (s *System) deleteLater(p Path) {
	if s.deleting(p) {
		return
	}
	ctx, done, err := s.deletes.enter(context.Background())
	if err != nil {
		return
	}
	go func() {
		defer done()
		ctx, cancel := context.WithTimeout(ctx, s.opts.Delivery.Timeout)
		defer cancel()
		if err := s.delete(ctx, p); err != nil {
			s.log.Warn("deleting a part: tried again at the next wake of its delete alarm", "path", p.String(), "err", err)
		}
	}()
}

// delete carries out the steps above. The outboxes are first waited for
// without marking the subtree: however long their messages take, the
// subtree keeps serving meanwhile, and its callers are held only for the
// short wait that follows the mark.
func (s *System) delete(ctx context.Context, p Path) (err error) {
	if err := s.awaitOutboxes(ctx, p); err != nil {
		return err
	}
	dr, err := s.markDeletion(ctx, p)
	if err != nil {
		return err
	}
	gone := false
	defer func() { s.unmarkDeletion(dr, gone) }()
	s.deletes.step("marked")
	var written bool
	for delay := time.Millisecond; ; delay = min(2*delay, maxProbeDelay) {
		if err := s.awaitOutboxes(ctx, p); err != nil {
			return err
		}
		s.hardenDeletion(dr, true)
		s.deletes.step("hardened")
		if err := s.quiesce(ctx, p); err != nil {
			return fmt.Errorf("actors: delete %s: stopping its subtree: %w", p, err)
		}
		s.deletes.step("quiesced")
		pending, perr := s.outboxesOnDisk(ctx, p)
		if perr != nil {
			return perr
		}
		if !pending {
			written, err = s.tombstone(ctx, p)
			if !errors.Is(err, errChildStopping) {
				break
			}
			// Its parent has not heard yet that it stopped, or a group
			// restart started it again: stop it again, after a pause
			// (the wall clock's, as in quiesce), and check its outbox.
			if err := pause(ctx, delay); err != nil {
				return fmt.Errorf("actors: delete %s: %w", p, err)
			}
		}
		s.hardenDeletion(dr, false) // a message handled meanwhile may have sent more
	}
	if err != nil || !written {
		gone = errors.Is(err, ErrNoPart)
		if gone {
			err = nil // an ancestor is deleted: so is p
		}
		return err
	}
	gone = true
	s.deletes.step("tombstoned")
	if err := s.removeFiles(p); err != nil {
		// The part is gone; its parent removes the files when it next
		// opens its file.
		s.log.Error("removing a deleted part's files", "path", p.String(), "err", err)
		return nil
	}
	s.deletes.step("removed")
	if err := s.tombstoneDone(ctx, p); err != nil {
		s.log.Warn("noting a deleted part's files removed", "path", p.String(), "err", err) // done again at the parent's next activation
	}
	s.deletes.step("done")
	if err := s.alarms.dropUnder(p); err != nil {
		s.log.Warn("removing a deleted part's alarms from the index", "path", p.String(), "err", err) // its wakes get ErrNoPart and remove them
	}
	s.deletions.Add(1)
	if k, err := s.tree.match(p); err == nil && k.m != nil {
		k.m.deletions.Inc()
	}
	s.log.Info("part deleted", "path", p.String())
	return nil
}

// markDeletion registers p as being deleted (step 2). A deletion of p
// under way is waited for first; a drain or deletion that overlaps p
// refuses it.
func (s *System) markDeletion(ctx context.Context, p Path) (*drain, error) {
	d := &s.drains
	for {
		d.mu.Lock()
		var busy *deletion
		if x := d.subtrees[p]; x != nil && x.del != nil {
			busy = x.del
		} else {
			for sub := range d.subtrees {
				if sub.Contains(p) || p.Contains(sub) {
					d.mu.Unlock()
					return nil, fmt.Errorf("actors: delete: %w: %s overlaps %s", ErrDraining, p, sub)
				}
			}
		}
		if busy == nil {
			dr := &drain{del: &deletion{path: p, done: make(chan struct{})}}
			if d.subtrees == nil {
				d.subtrees = make(map[Path]*drain)
			}
			d.subtrees[p] = dr
			d.n.Add(1)
			d.mu.Unlock()
			return dr, nil
		}
		d.mu.Unlock()
		select {
		case <-busy.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// hardenDeletion lets nothing more into the subtree (hard), or again its
// own traffic, which it then delivers.
func (s *System) hardenDeletion(dr *drain, hard bool) {
	d := &s.drains
	d.mu.Lock()
	dr.del.hard = hard
	var let []*envelope
	if !hard {
		kept := dr.held[:0]
		for _, env := range dr.held {
			if dr.del.admits(env) {
				let = append(let, env)
			} else {
				kept = append(kept, env)
			}
		}
		clear(dr.held[len(kept):])
		dr.held = kept
	}
	d.mu.Unlock()
	for _, env := range let {
		s.deliver(env)
	}
}

// unmarkDeletion ends a deletion: the messages it held get ErrNoPart when
// the part is gone, else they are delivered.
func (s *System) unmarkDeletion(dr *drain, gone bool) {
	d := &s.drains
	p := dr.del.path
	d.mu.Lock()
	held := dr.held
	dr.held = nil
	delete(d.subtrees, p)
	d.n.Add(-1)
	d.mu.Unlock()
	for _, env := range held {
		if gone {
			s.finish(env, nil, noPart(env.to, p))
		} else {
			s.deliver(env)
		}
	}
	close(dr.del.done)
}

// deleting reports whether a deletion of exactly p is under way.
func (s *System) deleting(p Path) bool {
	d := &s.drains
	if d.n.Load() == 0 {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	x := d.subtrees[p]
	return x != nil && x.del != nil
}

// noPart is the error of a message to path, which the deletion of deleted
// (path or an ancestor of it) refused.
func noPart(path, deleted Path) error {
	if path == deleted {
		return fmt.Errorf("%w: %s was deleted", ErrNoPart, path)
	}
	return fmt.Errorf("%w: %s: %s was deleted", ErrNoPart, path, deleted)
}

// deleteProbe asks a part how many durable messages wait in its outbox
// (steps 1 and 2). Its activation, if it was not active, starts their
// delivery.
type deleteProbe struct{}

func (deleteProbe) runIn(p *part, env *envelope, b *batch) {
	p.runRuntime(env, b, func() (any, error) { return p.deadLetterOp(b, deadLetterOp{op: "undelivered"}) })
}

// awaitOutboxes waits until no part of the subtree at p has undelivered
// durable messages. Every part that has some is in the alarm index (see
// outbox.index), so only those are asked, in rounds that pause from 1 ms
// up to maxProbeDelay (the wall clock's: a poll, not the runtime's logical
// time) while deliveries are retried on the System's clock.
func (s *System) awaitOutboxes(ctx context.Context, p Path) error {
	for delay := time.Millisecond; ; delay = min(2*delay, maxProbeDelay) {
		cands, err := s.alarms.under(p, outboxAlarm)
		if err != nil {
			return fmt.Errorf("actors: delete %s: alarm index: %w", p, err)
		}
		left := 0
		for _, c := range cands {
			v, err := s.ask(ctx, c, deleteProbe{})
			switch {
			case errors.Is(err, ErrNoPart):
				continue // deleted before: a stale entry
			case err != nil && ctx.Err() != nil:
				return fmt.Errorf("actors: delete %s: %w: %w", p, ErrOutboxNotEmpty, ctx.Err())
			case err != nil:
				return fmt.Errorf("actors: delete %s: the outbox of %s: %w", p, c, err)
			}
			if n, _ := v.(int); n > 0 {
				left++
			}
		}
		if left == 0 {
			return nil
		}
		if err := pause(ctx, delay); err != nil {
			return fmt.Errorf("actors: delete %s: %w: %d parts of the subtree have some: %w", p, ErrOutboxNotEmpty, left, err)
		}
	}
}

// pause waits for d on the wall clock, or until ctx ends.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ask sends msg to the part at to, served here, and waits for the reply.
func (s *System) ask(ctx context.Context, to Path, msg any) (any, error) {
	env := &envelope{to: to, msg: msg, ctx: ctx, reply: make(chan result, 1)}
	s.inflight.add()
	s.deliverHere(env)
	return s.await(ctx, env)
}

// deliverHere is deliver for the runtime's own messages to parts of this
// System, whatever Options.Remote says (a deletion updates the records
// this node keeps).
func (s *System) deliverHere(env *envelope) {
	if s.stopped.Load() {
		s.finish(env, nil, ErrClosed)
		return
	}
	if s.holdForDrain(env.to, env) {
		return
	}
	for p := env.to; !p.IsRoot(); p = p.Parent() {
		if v, ok := s.parts.Load(p.String()); ok && v.(*part).post(env) {
			return
		}
	}
	if !s.root.post(env) {
		s.finish(env, nil, ErrClosed)
	}
}

// guardianOp runs fn on the guardian's goroutine: it owns the root file,
// where the top-level parts are recorded.
type guardianOp struct {
	fn   func(p *part) error
	done chan error
}

func (m guardianOp) apply(p *part, _ actor.Context) { m.done <- m.fn(p) }

// onGuardian runs fn on the guardian's goroutine and waits for it.
func (s *System) onGuardian(ctx context.Context, fn func(p *part) error) error {
	done := make(chan error, 1)
	if !s.root.post(guardianOp{fn: fn, done: done}) {
		return ErrClosed
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// checkDelete fails a deletion (or, stops false, a reuse) of the part at
// p, asked along ctx's call path, when a part it waits for waits along
// that path: p's parent, which records it, or a part of the subtree, which
// must stop.
func checkDelete(ctx context.Context, p Path, stops bool) error {
	op := "delete"
	if !stops {
		op = "reuse"
	}
	l := callsOf(ctx)
	for w := l; w != nil && !w.ended.Load(); w = w.prev {
		switch {
		case w.path == p.Parent():
			return &callCycleError{cycle: append(l.from(w), p), op: op,
				why: fmt.Sprintf("%s, which records it, waits on this call", w.path)}
		case stops && p.Contains(w.path):
			return &callCycleError{cycle: append(l.from(w), p), op: op,
				why: fmt.Sprintf("%s, which must stop, waits on this call", w.path)}
		}
	}
	return nil
}
