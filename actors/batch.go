package actors

import (
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/fractalrt/fractal/persistence"
)

// A batch is the open transaction of a part and what waits for its commit.
//
// Its life: handle begins it at the first message and adds each message
// under a savepoint; commit ends it; once the commit is durable (at once,
// or after the barrier's next sync), release answers the held replies and
// sends the held messages, on whatever goroutine learnt it, and settle runs
// the hooks of the components on the part's goroutine: the timers set by
// its handlers (timers.go), the durable messages it stored or whose
// deliveries it settled (ob, lanes.go), and onDurable (alarm index
// entries, deletions). A batch that failed (its commit, the sync, the
// fence) answers every reply with the error, sends nothing, drops its
// timers and tells the outbox which lanes to pump again.
type batch struct {
	path    Path
	tx      *persistence.Tx // nil for what Activate sent (see handOver)
	start   time.Time
	handed  time.Time   // when it was handed to the barrier (wall clock, for metrics)
	n       int         // messages handled in it
	replies []heldReply // released after the commit (the output gate)
	out     []*envelope // sent after the commit; timers (envelope.timer) are set by settle

	runtime int // of n, the runtime's own messages (see holdRuntime)

	// Components hook into the batch: what it means for them that it is
	// durable, or failed, runs on the part's goroutine in settle.
	ob        outboxBatch // durable messages (lanes.go)
	onDurable []func()    // anything else, once it is durable (alarm index entries, deletions)

	rolledBack bool         // its only message failed: nothing to commit
	err        error        // what release answered the replies with, if not nil
	km         *kindMetrics // nil without metrics
}

type heldReply struct {
	env     *envelope
	val     any
	err     error
	outcome outcome // for fractal_messages_total
	runtime bool    // the runtime's own message: not counted as a message
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

// commit commits the open batch, if any, and hands it over for release:
// at once when the commit is durable by itself (PowerLossPerCommit,
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
	p.schemaCommitted(err == nil && !b.rolledBack)
	p.sys.messages.Add(uint64(b.n - b.runtime))
	if hook := p.sys.opts.Committed; hook != nil && err == nil && !b.rolledBack && b.tx.Wrote() {
		if herr := hook(Commit{Path: p.path, File: p.path.File(p.sys.dir), Messages: b.n}); herr != nil {
			err = fmt.Errorf("after the commit: %w", herr)
		}
	}
	if err != nil {
		err = fmt.Errorf("actors: %s: %w", p.path, err)
		p.logger().Error("commit failed", "messages", b.n, "err", err)
		b.releaseNow(p, err, outCommitError)
		return
	}
	if wrote := !b.rolledBack && b.tx.Wrote(); !wrote && p.sync.unsynced == 0 {
		// Nothing of p's is waiting to be synced: what these replies
		// read is already durable.
		b.releaseNow(p, nil, outOK)
		return
	}
	// Even a batch that wrote nothing waits when an earlier commit of p
	// is not synced yet: its replies may have read that commit's writes.
	// The barrier's callbacks run in order, so it is released after that
	// commit.
	p.handOver(b)
}

// syncState is what a part knows of the durability of its commits (with
// PowerLoss's barrier; without it every commit is durable when it returns).
type syncState struct {
	unsynced int // batches handed to the barrier whose synced notice has not come back

	// parentUnsynced: when p was spawned, its parent had commits (its
	// record of p among them) waiting for the barrier, so p's first
	// replies wait for a sync too.
	parentUnsynced bool
}

// synced tells a part that a batch it handed to the barrier is durable
// (err nil) or could not be made so.
type synced struct {
	b   *batch
	err error
}

func (m synced) apply(p *part, _ actor.Context) {
	p.sync.unsynced--
	m.b.settle(p, m.err)
	// An open batch that waited for this (deferCommit) commits now, in
	// Receive, once the mailbox is drained.
}

// handOver gives b to the barrier: after its next sync, on the barrier's
// goroutine, b's replies are answered and its messages sent (release),
// then p is told (synced) and settles the rest on its own goroutine.
// Without a barrier all of it happens now.
func (p *part) handOver(b *batch) {
	barrier := p.sys.barrier
	if barrier == nil {
		b.releaseNow(p, nil, outOK)
		return
	}
	p.sync.unsynced++
	if b.km != nil {
		b.handed = time.Now()
	}
	barrier.After(func(err error) {
		if b.km != nil {
			p.sys.metrics.barrierWait.Observe(time.Since(b.handed).Seconds())
		}
		if err != nil {
			err = fmt.Errorf("actors: %s: %w", p.path, err)
		}
		b.release(p.sys, err, outSyncError)
		if !p.post(synced{b, err}) {
			b.orphaned(err)
		}
	})
}

// release answers the held replies and sends the held messages, or, when
// err is not nil, answers every reply with err and sends nothing; the
// messages whose handlers succeeded then count as failed with outcome.
// Options.Fence is asked first, but not for the runtime's own batches that
// carry no transaction (what Activate sent, a wait for a sync). It
// touches nothing of the part's: it runs on the part's goroutine or on the
// barrier's, where callers already wait. Messages leave before the replies
// do, so a caller that reads a reply and then writes to where the handler
// sent a message is handled after that message.
func (b *batch) release(s *System, err error, failed outcome) {
	if fence := s.opts.Fence; fence != nil && err == nil && b.tx != nil {
		if ferr := fence(b.path); ferr != nil {
			err, failed = fmt.Errorf("%w: %w", ErrFenced, ferr), outCommitError
		}
	}
	b.err = err
	if err == nil {
		for _, out := range b.out {
			if out.timer == nil {
				s.dispatch(out)
			}
		}
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

// releaseNow is release and settle at once, on p's goroutine: for a
// batch that need not wait for the barrier, or that failed.
func (b *batch) releaseNow(p *part, err error, failed outcome) {
	b.release(p.sys, err, failed)
	b.settle(p, err)
}

// settle runs, on p's goroutine, what b's durability (or its failure)
// means for the components hooked into it: the timers its handlers set,
// the durable messages it stored, sent or settled, and its onDurable
// hooks. err is b's outcome as release saw it.
func (b *batch) settle(p *part, err error) {
	if err == nil {
		err = b.err
	}
	if err != nil {
		p.settleTimers(b, false)
		p.ob.batchFailed(p, &b.ob)
		return
	}
	p.settleTimers(b, true)
	for _, fn := range b.onDurable {
		fn()
	}
	p.ob.batchDurable(p, &b.ob)
}

// orphaned is settle for a batch whose part stopped before it could be
// told: its in-memory state (timers, lanes in flight) went with it, and
// its next incarnation starts again from the file. The onDurable hooks,
// which concern the System (the alarm index), still run, here.
func (b *batch) orphaned(err error) {
	if err == nil && b.err == nil {
		for _, fn := range b.onDurable {
			fn()
		}
	}
}
