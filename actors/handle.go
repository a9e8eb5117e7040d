package actors

import (
	"context"
	"fmt"
	"time"

	"github.com/fractalrt/fractal/persistence"
)

// A runtimeMsg is a message of the runtime's own that travels in an
// envelope, as applications' messages do, and that a part handles in its
// batch transaction instead of passing it to its handler: durable delivery
// bookkeeping, dead-letter operations, a child's news, alarm wakes.
// Applications cannot implement it (runIn is unexported), so no message of
// theirs is mistaken for one.
type runtimeMsg interface {
	runIn(p *part, env *envelope, b *batch)
}

// handle runs env's message in the part's open batch transaction, under a
// savepoint of its own, beginning the transaction if none is open. Its reply
// and the messages it sends are held until the batch commits (see commit).
func (p *part) handle(env *envelope) {
	if err := env.ctx.Err(); err != nil {
		p.countMessage(outCanceled)
		p.sys.finish(env, nil, err) // the caller gave up before we began
		return
	}
	if p.db == nil {
		if err := p.openWaiting(env.ctx); err != nil {
			p.logger().Warn("activation failed", "err", err)
			p.setLastError(err.Error())
			p.countMessage(outActivationError)
			p.sys.finish(env, nil, err)
			return
		}
	}
	first := p.batch == nil
	if first {
		tx, err := p.db.Begin(context.Background())
		if err != nil {
			p.countMessage(outActivationError)
			p.sys.finish(env, nil, fmt.Errorf("actors: %s: begin: %w", p.path, err))
			return
		}
		p.batch = &batch{path: p.path, tx: tx, start: p.sys.clock.Now()}
	}
	b := p.batch
	b.n++
	if m, ok := env.msg.(runtimeMsg); ok {
		m.runIn(p, env, b)
		return
	}
	// The first message of a batch needs no savepoint: if it fails, the
	// whole transaction, which holds nothing else, is rolled back.
	var sp *persistence.Savepoint
	if !first {
		var err error
		if sp, err = b.tx.Savepoint(); err != nil {
			b.hold(env, nil, fmt.Errorf("actors: %s: %w", p.path, err), outError)
			return
		}
	}
	p.runHeld(env, b, env.msg, sp, nil)
}

// runHeld runs the handler on msg for env under sp (nil: the batch's
// first message, which rolls back the whole transaction) and holds its
// outcome in b. before, when not nil, runs after the handler's writes were
// kept or rolled back and before the outcome is held, with whether the
// handler failed (an alarm records its retry there). A panic commits the
// rest of the batch, then panics again so that the parent decides.
func (p *part) runHeld(env *envelope, b *batch, msg any, sp *persistence.Savepoint, before func(failed bool)) {
	c, reply, perr, err := p.run(env, b, msg)
	if perr != nil || err != nil {
		var rerr error
		if sp != nil {
			rerr = sp.Rollback()
		} else {
			rerr = b.tx.Rollback()
			b.rolledBack = true
		}
		if rerr != nil {
			p.logger().Error("rollback", "err", rerr) // a savepoint's: the commit will fail and say so
		}
	}
	if before != nil {
		before(perr != nil || err != nil)
	}
	switch {
	case perr != nil:
		p.failBatch(env, b, perr)
	case err != nil:
		b.hold(env, nil, err, outError)
		if b.rolledBack {
			p.commit() // nothing left to commit: end the batch
		}
	default:
		if sp != nil {
			if err := sp.Release(); err != nil {
				b.hold(env, nil, fmt.Errorf("actors: %s: %w", p.path, err), outError)
				return
			}
		}
		b.hold(env, reply, nil, outOK)
		p.holdOut(b, c.out)
		b.ob.fresh = append(b.ob.fresh, c.durables...)
		if c.exit {
			p.exit()
		}
	}
}

// failBatch holds perr as env's answer, commits the rest of the batch,
// then panics with perr: protoactor-go suspends the mailbox and asks the
// parent to decide.
func (p *part) failBatch(env *envelope, b *batch, perr *PanicError) {
	b.hold(env, nil, perr, outPanic)
	p.commit()
	// protoactor-go will not call MessageReceived for a message whose
	// Receive panicked: take it off the count here.
	p.gauges.queued.Add(-1)
	p.current = nil
	panic(perr)
}

// runIn delivers an alarm, or, for the outbox's reserved name, pumps the
// outbox. The alarm runs under a savepoint even as the batch's first
// message: its failure must still record the retry in the transaction.
func (w alarmWake) runIn(p *part, env *envelope, b *batch) {
	if w.Name == outboxAlarm {
		p.runOutbox(env, b, func() (any, error) { return nil, p.pumpOrSettle(b) })
		return
	}
	if w.Name == deleteAlarm {
		p.deleteWake(env, b)
		return
	}
	sp, err := b.tx.Savepoint()
	if err != nil {
		b.hold(env, nil, fmt.Errorf("actors: %s: %w", p.path, err), outError)
		return
	}
	due, attempt, err := p.readAlarm(b.tx, w.Name)
	if err != nil || due.IsZero() || due.After(p.sys.clock.Now()) {
		// Nothing due: the index entry was early or stale; settle it on
		// the part's own truth once this batch has committed.
		if rerr := sp.Release(); err == nil {
			err = rerr
		}
		if err == nil {
			b.onDurable = append(b.onDurable, func() { p.settleAlarm(w.Name, due) })
		}
		o := outOK
		if err != nil {
			o = outError
		}
		b.hold(env, nil, err, o)
		return
	}
	alarm := Alarm{Name: w.Name, Due: due, Attempt: attempt}
	p.runHeld(env, b, alarm, sp, func(failed bool) {
		if m := p.sys.metrics; m != nil {
			outcome := "ok"
			if failed {
				outcome = "error"
			}
			m.alarmDeliveries.WithLabelValues(p.kind.Name, outcome).Inc()
			m.alarmLateness.Observe(p.sys.since(alarm.Due).Seconds())
		}
		due, aerr := p.alarmAfterDelivery(b.tx, alarm, failed)
		if aerr != nil {
			p.logger().Error("alarm bookkeeping", "alarm", alarm.Name, "err", aerr) // the index lease retries it
		} else {
			b.onDurable = append(b.onDurable, func() { p.settleAlarm(alarm.Name, due) })
		}
	})
}

// run runs the handler on msg for env in b's transaction, timed for the
// metrics; the Context it returns has ended.
func (p *part) run(env *envelope, b *batch, msg any) (c *Context, reply any, perr *PanicError, err error) {
	c = &Context{ctx: env.ctx, part: p, tx: b.tx}
	km := p.km()
	var start time.Time
	if km != nil {
		start = time.Now()
	}
	reply, perr, err = p.call(c, msg)
	if km != nil {
		km.handlerTime.Observe(time.Since(start).Seconds())
	}
	c.end()
	return c, reply, perr, err
}

// call runs the handler, turning a panic into a *PanicError.
func (p *part) call(c *Context, msg any) (reply any, perr *PanicError, err error) {
	defer func() {
		if v := recover(); v != nil {
			perr = &PanicError{Path: p.path, Value: v}
		}
	}()
	reply, err = p.handler.Handle(c, msg)
	return reply, nil, err
}
