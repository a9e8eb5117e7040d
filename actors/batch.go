package actors

import (
	"context"
	"fmt"
	"time"

	"github.com/fractalrt/fractal/persistence"
)

// A batch is the open transaction of a part and what waits for its commit.
type batch struct {
	path    Path
	tx      *persistence.Tx
	start   time.Time
	n       int         // messages handled in it
	replies []heldReply // released after the commit (the output gate)
	out     []*envelope // sent after the commit

	sends   [][]outRow // durable deliveries (rows of one lane each, which they hold), sent once it is durable
	settled []string   // lanes p holds whose attempt's outcome this batch recorded (see outbox.failed)
	fresh   []outRow   // durable messages it stored: sent once it is durable, when their lanes are free
	part    *part

	minFresh, maxFresh int64 // the outbox rows it stored, 0 if none (see sendDurableNow)
	runtime            int   // of n, the runtime's own messages (see holdRuntime)

	rolledBack bool         // its only message failed: nothing to commit
	after      []func()     // run once the batch is durable (alarm index updates)
	km         *kindMetrics // nil without metrics
}

type heldReply struct {
	env     *envelope
	val     any
	err     error
	outcome outcome // for fractal_messages_total
	runtime bool    // the runtime's own message: not counted as a message
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
		p.batch = &batch{path: p.path, part: p, tx: tx, start: p.sys.clock.Now()}
	}
	b := p.batch
	b.n++
	switch m := env.msg.(type) {
	case outboxPump, outboxResult, deadLetterOp, childCreated:
		p.runOutbox(env, b, m)
		return
	case alarmWake:
		if m.Name == outboxAlarm {
			p.runOutbox(env, b, m)
			return
		}
	}
	// The first message of a batch needs no savepoint: if it fails, the
	// whole transaction, which holds nothing else, is rolled back. An
	// alarm's delivery always has one: its failure must still record the
	// retry in the transaction.
	wake, isWake := env.msg.(alarmWake)
	if d, ok := env.msg.(*delivery); ok {
		p.handleDelivery(env, b, d) // a savepoint per message
		return
	}
	var sp *persistence.Savepoint
	if !first || isWake {
		var err error
		if sp, err = b.tx.Savepoint(); err != nil {
			b.hold(env, nil, fmt.Errorf("actors: %s: %w", p.path, err), outError)
			return
		}
	}
	msg := env.msg
	var alarm Alarm
	if isWake {
		due, attempt, err := p.readAlarm(b.tx, wake.Name)
		if err != nil || due.IsZero() || due.After(p.sys.clock.Now()) {
			// Nothing due: the index entry was early or stale; settle it
			// on the part's own truth once this batch has committed.
			if rerr := sp.Release(); err == nil {
				err = rerr
			}
			if err == nil {
				b.after = append(b.after, func() { p.settleAlarm(wake.Name, due) })
			}
			o := outOK
			if err != nil {
				o = outError
			}
			b.hold(env, nil, err, o)
			return
		}
		alarm = Alarm{Name: wake.Name, Due: due, Attempt: attempt}
		msg = alarm
	}
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
	if isWake {
		failed := perr != nil || err != nil
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
			b.after = append(b.after, func() { p.settleAlarm(alarm.Name, due) })
		}
	}
	switch {
	case perr != nil:
		// Commit the rest of the batch, then fail: the panic reaches
		// protoactor-go, which suspends the mailbox and asks the parent
		// to decide.
		b.hold(env, nil, perr, outPanic)
		p.commit()
		// protoactor-go will not call MessageReceived for a message
		// whose Receive panicked: take it off the count here.
		p.queued.Add(-1)
		p.current = nil
		panic(perr)
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
		b.out = append(b.out, c.out...)
		b.fresh = append(b.fresh, c.durables...)
	}
}

func (b *batch) hold(env *envelope, val any, err error, o outcome) {
	b.replies = append(b.replies, heldReply{env, val, err, o, false})
}

// holdRuntime is hold for a message of the runtime's own (durable
// delivery bookkeeping, dead-letter operations, a child's news): it is not
// counted in Stats.Messages nor in fractal_messages_total.
func (b *batch) holdRuntime(env *envelope, val any, err error, o outcome) {
	b.replies = append(b.replies, heldReply{env, val, err, o, true})
	b.runtime++
}

// commit commits the open batch, if any, and releases what it held: at
// once when the commit is durable by itself (PowerLossPerCommit,
// ProcessCrash) or wrote nothing new, after the shared barrier's next sync
// otherwise. A failed commit turns every reply of the batch into an error
// and sends nothing.
func (p *part) commit() {
	b := p.batch
	if b == nil {
		return
	}
	p.batch = nil
	km := p.km()
	b.km = km
	var err error
	if fence := p.sys.opts.Fence; fence != nil && !b.rolledBack {
		if err = fence(p.path); err != nil {
			if rerr := b.tx.Rollback(); rerr != nil {
				p.logger().Error("rollback", "err", rerr)
			}
			b.rolledBack = true
			err = fmt.Errorf("%w: %w", ErrFenced, err)
		}
	}
	if !b.rolledBack {
		var start time.Time
		if km != nil {
			start = time.Now()
		}
		err = b.tx.Commit()
		p.sys.commits.Add(1)
		if km != nil {
			now := time.Now()
			km.commitTime.Observe(now.Sub(start).Seconds())
			km.batchSize.Observe(float64(b.n))
			if err == nil && b.tx.Wrote() && now.Sub(p.statAt) >= fileStatInterval {
				p.statFiles(now)
			}
		}
	}
	p.sys.messages.Add(uint64(b.n - b.runtime))
	if hook := p.sys.opts.Committed; hook != nil && err == nil && !b.rolledBack && b.tx.Wrote() {
		if herr := hook(Commit{Path: p.path, File: p.path.File(p.sys.dir), Messages: b.n}); herr != nil {
			err = fmt.Errorf("after the commit: %w", herr)
		}
	}
	if err != nil {
		err = fmt.Errorf("actors: %s: %w", p.path, err)
		p.logger().Error("commit failed", "messages", b.n, "err", err)
		b.release(p.sys, err, outCommitError)
		return
	}
	barrier := p.sys.barrier
	if barrier == nil {
		b.release(p.sys, nil, outOK)
		return
	}
	wrote := !b.rolledBack && b.tx.Wrote()
	if !wrote && p.unsynced.Load() == 0 {
		// Nothing of p's is waiting to be synced: what these replies
		// read is already durable.
		b.release(p.sys, nil, outOK)
		return
	}
	var handed time.Time
	if km != nil {
		handed = time.Now()
	}
	// Even a batch that wrote nothing waits when an earlier commit of p
	// is not synced yet: its replies may have read that commit's writes.
	// Callbacks run in order, so it is released after that commit.
	if wrote {
		p.unsynced.Add(1)
	}
	barrier.After(func(err error) {
		if wrote {
			if p.unsynced.Add(-1) == 0 { // synced: what comes after need not wait
				p.sys.synced(p)
			}
		}
		if p.deferred.Swap(false) {
			p.post(flushBatch{})
		}
		if km != nil {
			p.sys.metrics.barrierWait.Observe(time.Since(handed).Seconds())
		}
		if err != nil {
			err = fmt.Errorf("actors: %s: %w", p.path, err)
		}
		b.release(p.sys, err, outSyncError)
	})
}

// release answers the held replies and sends the held messages, or, when
// err is not nil, answers every reply with err and sends nothing; the
// messages whose handlers succeeded then count as failed with outcome.
func (b *batch) release(s *System, err error, failed outcome) {
	if fence := s.opts.Fence; fence != nil && err == nil {
		if ferr := fence(b.path); ferr != nil {
			err, failed = fmt.Errorf("%w: %w", ErrFenced, ferr), outCommitError
		}
	}
	if err == nil {
		for _, out := range b.out {
			s.dispatch(out)
		}
		for _, fn := range b.after {
			fn()
		}
		if b.maxFresh > 0 && b.maxFresh > b.part.durableOut.Load() {
			b.part.durableOut.Store(b.maxFresh) // releases run in commit order
		}
		if len(b.sends) > 0 || len(b.settled) > 0 {
			b.part.ob.succeeded()
		}
		for _, rows := range b.sends {
			b.part.send(rows)
		}
		for _, r := range b.fresh {
			if !r.behind && b.part.ob.claim(&r) {
				b.part.send([]outRow{r})
			} // else it follows the older messages of its lane, when that moves on
		}
	} else {
		// Nothing of this batch happened: the lanes whose deliveries it
		// took or whose outcomes it recorded are pumped again, from the
		// file, after a backoff that grows while batches keep failing
		// (a full disk). Without that they would wait for the alarm
		// index's lease (alarmLease).
		lanes := b.settled
		for _, rows := range b.sends {
			lanes = append(lanes, rows[0].lane())
		}
		b.part.ob.failed(b.part, lanes)
	}
	for _, r := range b.replies {
		if err != nil && r.err == nil {
			r.val, r.err, r.outcome = nil, err, failed
		}
		if b.km != nil && !r.runtime {
			b.km.messages[r.outcome].Inc()
		}
		s.finish(r.env, r.val, r.err)
	}
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
