package actors

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/fractalrt/fractal/persistence"
)

// An outbox is the in-memory state of one part's durable deliveries: which
// lanes have a delivery in flight or a retry waiting. It is owned by the
// part's goroutine, like the rest of the part. It is reset when the part
// stops; the table is the truth, and a new incarnation starts again from
// it.
type outbox struct {
	busy    map[string]int64 // lane -> row in flight or waiting for its retry (at most maxLanes)
	timers  map[string]Timer // lane -> its retry
	indexed bool             // p noted in the alarm index by this incarnation
	stopped bool
	fails   int   // batches in a row that failed with deliveries to send or settle (see failed)
	durable int64 // outbox rows up to this id are durable (set as batches settle)
}

// failed arranges for the lanes, which p holds, to be pumped again: the
// batch that was to send their rows or record their attempts' outcomes
// failed (its commit, or the recording itself). The delay is the delivery
// backoff for the number of such failures in a row, at most alarmLease.
func (ob *outbox) failed(p *part, lanes []string) {
	if len(lanes) == 0 || ob.stopped {
		return // stopped: the next incarnation pumps every lane
	}
	ob.fails++
	if ob.busy == nil {
		ob.busy = make(map[string]int64)
	}
	for _, lane := range lanes {
		if _, ok := ob.busy[lane]; !ok {
			ob.busy[lane] = 0 // p holds it again; its pump finds the row
		}
	}
	delay := min(p.sys.opts.Delivery.Backoff.Delay(min(ob.fails, 64), rand.Float64()), alarmLease)
	at := p.sys.clock.Now().Add(delay)
	for _, lane := range lanes {
		ob.retryAt(p, lane, at)
	}
}

// succeeded ends a run of failures (see failed).
func (ob *outbox) succeeded() { ob.fails = 0 }

// index notes p in the alarm index, once per incarnation: the entry stays
// until a wake finds p's outbox empty.
func (ob *outbox) index(p *part) error {
	if ob.indexed {
		return nil
	}
	if err := p.sys.alarms.note(p.path, outboxAlarm, p.sys.clock.Now().Add(alarmLease)); err != nil {
		return err
	}
	ob.indexed = true
	return nil
}

// claim marks r's lane busy with r, unless it is busy already or too many
// are.
func (ob *outbox) claim(r *outRow) bool {
	if ob.stopped || len(ob.busy) >= maxLanes {
		return false
	}
	if _, busy := ob.busy[r.lane()]; busy {
		return false
	}
	if ob.busy == nil {
		ob.busy = make(map[string]int64)
	}
	ob.busy[r.lane()] = r.id
	return true
}

// hold records that row holds lane (which p holds already).
func (ob *outbox) hold(lane string, row int64) {
	if _, ok := ob.busy[lane]; ok && !ob.stopped {
		ob.busy[lane] = row
	}
}

// holder returns the row that holds lane, or 0.
func (ob *outbox) holder(lane string) int64 { return ob.busy[lane] }

func (ob *outbox) free(lane string) {
	delete(ob.busy, lane)
	if t := ob.timers[lane]; t != nil {
		t.Stop()
		delete(ob.timers, lane)
	}
}

func (ob *outbox) inFlight() bool { return len(ob.busy) > 0 }

// stop forgets everything and cancels the retries: p is stopping.
func (ob *outbox) stop() {
	for _, t := range ob.timers {
		t.Stop()
	}
	ob.busy, ob.timers, ob.indexed, ob.stopped = nil, nil, false, true
}

// reset prepares a new incarnation.
func (ob *outbox) reset() { ob.stopped = false }

// retryAt posts an outboxPump for lane to p at t. The timer's goroutine
// only posts: the pump runs on p's.
func (ob *outbox) retryAt(p *part, lane string, t time.Time) {
	if ob.stopped {
		return
	}
	if ob.timers == nil {
		ob.timers = make(map[string]Timer)
	}
	if old := ob.timers[lane]; old != nil {
		old.Stop()
	}
	ob.timers[lane] = p.sys.clock.AfterFunc(t.Sub(p.sys.clock.Now()), func() {
		p.sys.inflight.add()
		env := &envelope{to: p.path, from: p.path, msg: outboxPump{lane: lane}, ctx: context.Background()}
		if !p.post(env) {
			p.sys.finish(env, nil, nil) // stopping: the next incarnation pumps every lane
		}
	})
}

// Runtime messages a part handles itself, in its batch transaction.
type (
	// outboxPump: look at the outbox and deliver what is due, in one lane
	// or (lane "") all of them.
	outboxPump struct{ lane string }

	// outboxResult: a delivery attempt ended; its first through rows
	// were handled, and err, if any, is why the next one was not.
	outboxResult struct {
		rows    []outRow
		through int
		err     error
		took    time.Duration
	}

	// deadLetterOp: an operator's request about the dead-letter table.
	deadLetterOp struct {
		op string // "list", "redrive", "discard"
		id int64
	}
)

// send dispatches one delivery attempt of rows (consecutive rows of one
// lane, which they hold); the result comes back to p as an outboxResult.
func (p *part) send(rows []outRow) {
	r := rows[0]
	d := &delivery{From: p.path.String(), Epoch: r.epoch, Redrive: r.redrive, Items: make([]deliveryItem, len(rows))}
	for i, r := range rows {
		d.Items[i] = deliveryItem{ID: r.id, Seq: r.seq, Kind: r.kind, Ref: r.ref, Name: r.name, Body: r.body}
	}
	to, err := p.sys.target(r.dest) // the tree may have changed since it was stored
	if err != nil {
		p.deliverResult(rows, 0, err, 0)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.sys.opts.Delivery.Timeout)
	start := time.Now()
	env := &envelope{to: to, from: p.path, msg: d, ctx: ctx}
	env.done = func(val any, err error) {
		cancel()
		through := 0
		if err == nil {
			ack, ok := val.(deliveryAck)
			switch {
			case !ok:
				err = fmt.Errorf("actors: %s answered a delivery with %T", to, val)
			case ack.Through < 0 || ack.Through > len(rows):
				err = fmt.Errorf("actors: %s acknowledged %d of %d messages", to, ack.Through, len(rows))
			default:
				through = ack.Through
				if ack.Error != "" {
					err = errors.New(ack.Error)
				} else if through < len(rows) {
					err = fmt.Errorf("actors: %s handled %d of %d messages", to, through, len(rows))
				}
			}
		}
		p.deliverResult(rows, through, err, time.Since(start))
	}
	p.sys.inflight.add()
	if err := p.sys.admit(to); err != nil {
		p.sys.finish(env, nil, err)
		return
	}
	p.sys.deliver(env)
}

// deliverResult hands the outcome of an attempt back to p. It runs where
// the attempt ended (any goroutine); the inflight count taken by send's
// envelope is given back by finish after this returns, so it takes its
// own first.
func (p *part) deliverResult(rows []outRow, through int, err error, took time.Duration) {
	p.sys.inflight.add()
	p.sys.deliver(&envelope{to: p.path, from: p.path, msg: outboxResult{rows: rows, through: through, err: err, took: took}, ctx: context.Background()})
}

// runOutbox runs fn, a runtime message's work (about p's outbox, dead
// letters or children), in b's transaction under a savepoint, and holds
// its outcome as a runtime reply. The deliveries it decides are sent after
// b is durable.
func (p *part) runOutbox(env *envelope, b *batch, fn func() (any, error)) {
	sp, err := b.tx.Savepoint()
	if err != nil {
		b.holdRuntime(env, nil, fmt.Errorf("actors: %s: %w", p.path, err), outError)
		return
	}
	val, err := fn()
	if err != nil {
		if rerr := sp.Rollback(); rerr != nil {
			p.logger().Error("rollback", "err", rerr)
		}
		p.logger().Error("durable messages", "err", err)
		b.holdRuntime(env, nil, fmt.Errorf("actors: %s: durable messages: %w", p.path, err), outError)
		return
	}
	if err := sp.Release(); err != nil {
		b.holdRuntime(env, nil, fmt.Errorf("actors: %s: %w", p.path, err), outError)
		return
	}
	b.holdRuntime(env, val, nil, outOK)
}

func (m outboxPump) runIn(p *part, env *envelope, b *batch) {
	p.runOutbox(env, b, func() (any, error) { return nil, p.pump(b, m.lane) })
}

func (m outboxResult) runIn(p *part, env *envelope, b *batch) {
	p.runOutbox(env, b, func() (any, error) {
		err := p.settleDelivery(b, m)
		if err != nil && p.ob.holder(m.rows[0].lane()) == m.rows[0].id {
			// The outcome is not recorded and the attempt is over: the
			// lane's rows go again (settled also covers a failure of b's
			// commit).
			p.ob.failed(p, []string{m.rows[0].lane()})
		}
		return nil, err
	})
}

func (m deadLetterOp) runIn(p *part, env *envelope, b *batch) {
	p.runOutbox(env, b, func() (any, error) { return p.deadLetterOp(b, m) })
}

func (m childCreated) runIn(p *part, env *envelope, b *batch) {
	p.runOutbox(env, b, func() (any, error) { return nil, p.childCreatedTx(b, m.seg) })
}

// pump claims each free lane (or lane, which p holds already) and, once b
// is durable, sends its first rows; a lane whose first row is not due yet
// gets a retry timer instead.
func (p *part) pump(b *batch, lane string) error {
	if ok, err := p.has(b.tx, compOutbox); err != nil || !ok {
		return err
	}
	var heads []outRow
	if lane == "" {
		q := `SELECT ` + outRowColumns + ` FROM ` + outboxTable + ` o WHERE id IN
			(SELECT min(id) FROM ` + outboxTable + ` GROUP BY dest, redrive)` + readyRow + ` ORDER BY id LIMIT ?`
		var err error
		if heads, err = queryOutRows(b.tx, q, maxLanes); err != nil {
			return err
		}
	} else {
		heads = []outRow{{dest: lane}}
		if d, ok := strings.CutSuffix(lane, "\x00redrive"); ok {
			heads[0] = outRow{dest: d, redrive: true}
		}
	}
	now := p.sys.clock.Now().UnixNano()
	for _, h := range heads {
		if lane == "" && !p.ob.claim(&h) {
			continue
		}
		rows, err := p.laneRows(b, h)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			p.ob.free(h.lane())
			continue
		}
		p.ob.hold(h.lane(), rows[0].id)
		if rows[0].nextAt > now {
			p.ob.retryAt(p, h.lane(), time.Unix(0, rows[0].nextAt))
			continue
		}
		b.ob.sends = append(b.ob.sends, rows)
	}
	return nil
}

// readyRow keeps, in a query on outboxTable o, the rows that may leave: a
// redriven letter waits while the skip marker that stands for it is still
// in its lane (the receiver must have skipped it first).
var readyRow = ` AND NOT (o.redrive = 1 AND EXISTS (SELECT 1 FROM ` + outboxTable + ` s
	WHERE s.dest = o.dest AND s.redrive = 0 AND s.kind = ` + strconv.Itoa(rowSkip) + ` AND s.epoch = o.epoch AND s.seq = o.seq))`

// laneRows returns the first rows of the lane of h, as many as one delivery
// takes: at most maxBundle (one for redriven letters, which do not follow
// each other), about MaxMessageSize/2 bytes, and only the due ones after
// the first, all of one epoch.
func (p *part) laneRows(b *batch, h outRow) ([]outRow, error) {
	limit := maxBundle
	if h.redrive {
		limit = 1
	}
	rows, err := queryOutRows(b.tx, `SELECT `+outRowColumns+` FROM `+outboxTable+` o WHERE dest = ? AND redrive = ?`+readyRow+` ORDER BY id LIMIT ?`,
		h.dest, h.redrive, limit)
	if err != nil || len(rows) == 0 {
		return nil, err
	}
	now, size := p.sys.clock.Now().UnixNano(), 0
	for i, r := range rows {
		size += len(r.body) + len(r.name) + 64
		if i > 0 && (r.epoch != rows[0].epoch || r.nextAt > now || size > MaxMessageSize/2) {
			return rows[:i], nil
		}
	}
	return rows, nil
}

// pumpOrSettle answers the alarm index's wake: deliver what is pending, or,
// when the outbox is empty, remove p's entry from the index.
func (p *part) pumpOrSettle(b *batch) error {
	var pending bool
	if ok, err := p.has(b.tx, compOutbox); err != nil {
		return err
	} else if ok {
		if err := b.tx.QueryRowContext(context.Background(), `SELECT EXISTS (SELECT 1 FROM `+outboxTable+`)`).Scan(&pending); err != nil {
			return err
		}
	}
	if !pending {
		p.ob.indexed = false
		return p.sys.alarms.settle(p.path, outboxAlarm, time.Time{})
	}
	// Still pending: the entry's lease (alarmLease) wakes p again later.
	p.ob.indexed = true
	return p.pump(b, "")
}

// settleDelivery records the outcome of an attempt: the rows the receiver
// handled are deleted and their lane moves on; the row it failed is retried
// after a backoff or, past the bounds, moved to the dead-letter table.
func (p *part) settleDelivery(b *batch, m outboxResult) error {
	bg := context.Background()
	for _, r := range m.rows[:m.through] {
		if _, err := b.tx.ExecContext(bg, `DELETE FROM `+outboxTable+` WHERE id = ?`, r.id); err != nil {
			return err
		}
	}
	lane := m.rows[0].lane()
	mine := p.ob.holder(lane) == m.rows[0].id // else an attempt of an earlier incarnation
	if mine {
		b.ob.settled = append(b.ob.settled, lane)
	}
	if m.err == nil {
		p.countDelivery("ok", m.took)
		if !mine {
			return nil
		}
		for _, r := range m.rows {
			if r.kind == rowSkip {
				// A redriven letter may have waited for this marker.
				p.ob.free(lane)
				return p.pump(b, "")
			}
		}
		n := len(b.ob.sends)
		if err := p.pump(b, lane); err != nil {
			return err
		}
		p.sendDurableNow(b, n)
		return nil
	}
	p.countDelivery("error", m.took)
	if !mine {
		return nil
	}
	r := m.rows[m.through]
	cur, err := scanOutRow(b.tx.QueryRowContext(bg, `SELECT `+outRowColumns+` FROM `+outboxTable+` WHERE id = ?`, r.id))
	if errors.Is(err, sql.ErrNoRows) {
		return p.pump(b, lane) // redriven or discarded meanwhile
	}
	if err != nil {
		return err
	}
	p.ob.hold(lane, cur.id)
	now := p.sys.clock.Now()
	opts := p.sys.opts.Delivery
	attempts := cur.attempts + 1
	if errors.Is(m.err, ErrNoPart) {
		return p.receiverGone(b, cur, attempts, m.err)
	}
	if cur.kind != rowSkip && (attempts >= opts.MaxAttempts || now.Sub(time.Unix(0, cur.created)) >= opts.MaxAge) {
		return p.kill(b, cur, attempts, m.err)
	}
	// A skip marker is retried for as long as it takes: it carries no
	// effect, and the lane cannot move on without it.
	next := now.Add(opts.Backoff.Delay(min(attempts, 64), rand.Float64()))
	if _, err := b.tx.ExecContext(bg, `UPDATE `+outboxTable+` SET attempts = ?, next_at = ?, last_error = ? WHERE id = ?`,
		attempts, next.UnixNano(), truncate(m.err.Error(), 1024), r.id); err != nil {
		return err
	}
	p.ob.retryAt(p, lane, next)
	return nil
}

// An outboxBatch is what a batch holds for the durable messages: the
// component's hook into the batch (see batch.settle).
type outboxBatch struct {
	sends   [][]outRow // deliveries (rows of one lane each, which they hold), sent once it is durable
	settled []string   // lanes p holds whose attempt's outcome the batch recorded (see outbox.failed)
	fresh   []outRow   // durable messages it stored: sent once it is durable, when their lanes are free

	minFresh, maxFresh int64 // the outbox rows it stored, 0 if none (see sendDurableNow)
}

// stored notes that the batch stored outbox row id.
func (b *outboxBatch) stored(id int64) {
	if b.minFresh == 0 || id < b.minFresh {
		b.minFresh = id
	}
	b.maxFresh = max(b.maxFresh, id)
}

// batchDurable sends, once b's batch is durable, the deliveries it took
// and the messages it stored whose lanes are free.
func (ob *outbox) batchDurable(p *part, b *outboxBatch) {
	if b.maxFresh > ob.durable {
		ob.durable = b.maxFresh // batches settle in commit order
	}
	if len(b.sends) > 0 || len(b.settled) > 0 {
		ob.succeeded()
	}
	for _, rows := range b.sends {
		p.send(rows)
	}
	for _, r := range b.fresh {
		if !r.behind && ob.claim(&r) {
			p.send([]outRow{r})
		} // else it follows the older messages of its lane, when that moves on
	}
}

// batchFailed: nothing of b's batch happened. The lanes whose deliveries
// it took or whose outcomes it recorded are pumped again, from the file,
// after a backoff that grows while batches keep failing (a full disk).
// Without that they would wait for the alarm index's lease (alarmLease).
func (ob *outbox) batchFailed(p *part, b *outboxBatch) {
	lanes := b.settled
	for _, rows := range b.sends {
		lanes = append(lanes, rows[0].lane())
	}
	ob.failed(p, lanes)
}

// sendDurableNow sends at once, of the deliveries b.ob.sends[from:], the rows
// that are durable already: stored by a batch that has been released (after
// its commit and sync). The next messages of a lane then leave as soon as
// the previous ones are acknowledged, without waiting for b's own commit
// and sync, which only delete the acknowledged rows (should they be lost,
// the receiver's inbox acknowledges the redelivery). The rows of a delivery
// that are not durable yet wait for the next round of their lane.
func (p *part) sendDurableNow(b *batch, from int) {
	durable := p.ob.durable
	kept := b.ob.sends[:from]
	for _, rows := range b.ob.sends[from:] {
		n := 0
		for n < len(rows) && rows[n].id <= durable && (b.ob.minFresh == 0 || rows[n].id < b.ob.minFresh) {
			n++
		}
		if n == 0 {
			kept = append(kept, rows)
		} else {
			p.send(rows[:n])
		}
	}
	b.ob.sends = kept
}

func (p *part) countDelivery(outcome string, took time.Duration) {
	if m := p.sys.metrics; m != nil {
		m.deliveries.WithLabelValues(outcome).Inc()
		m.deliveryTime.Observe(took.Seconds())
	}
}

// activateOutbox runs when p opens a file that has the runtime's outbox
// or inbox tables: it forgets what the last incarnation had in flight,
// prunes old lanes and inbox rows, and, when messages wait in the outbox,
// makes sure the alarm index knows and starts delivering them.
func (p *part) activateOutbox(outbox bool) error {
	var pending bool
	err := p.db.Update(context.Background(), func(tx *persistence.Tx) error {
		if err := p.pruneDurable(tx); err != nil {
			return err
		}
		if outbox {
			return tx.QueryRowContext(context.Background(), `SELECT EXISTS (SELECT 1 FROM `+outboxTable+`)`).Scan(&pending)
		}
		return nil
	})
	if err != nil || !pending {
		return err
	}
	if err := p.ob.index(p); err != nil {
		return err
	}
	p.sys.inflight.add()
	env := &envelope{to: p.path, from: p.path, msg: outboxPump{}, ctx: context.Background()}
	if !p.post(env) {
		p.sys.finish(env, nil, nil)
	}
	return nil
}
