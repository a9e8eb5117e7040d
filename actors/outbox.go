package actors

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/fractalrt/fractal/persistence"
)

// Durable messages (Context.SendDurable, Context.Call) are store and
// forward, as mail is:
//
//   - The sender writes the message to the outbox table of its own file, in
//     the transaction of the handler that sends it: it exists if and only
//     if that handler's writes do.
//   - Once that commit is durable, the runtime delivers it, and retries with
//     exponential backoff while the receiver cannot take it (passivated,
//     failing, restarting, on a node that cannot be reached, its handler
//     failing). A message that still fails after Delivery.MaxAttempts or
//     Delivery.MaxAge moves to the dead-letter table of the sender's file.
//   - Messages from one sender to one receiver form a lane: they carry
//     consecutive sequence numbers and one is in flight at a time, so the
//     receiver sees them in the order they were sent.
//   - The receiver records the sender's sequence number in its inbox table
//     in the same transaction as the handling: a redelivery (its
//     acknowledgement was lost, the sender crashed before deleting it) is
//     acknowledged without being handled again. Effects happen exactly once.
//   - The sender deletes the message when its delivery is acknowledged.
//
// The inbox keeps one row per sender, not one per message: the last
// sequence number handled, and the lane's epoch (a number the sender takes
// from its outbox when it opens a lane, larger than any before it). See
// Delivery.InboxRetention for how long rows are kept.
const (
	outboxTable  = "_fractal_outbox"
	lanesTable   = "_fractal_lanes"
	deadTable    = "_fractal_dead"
	inboxTable   = "_fractal_inbox"
	skippedTable = "_fractal_skipped"

	// outboxAlarm is the name under which a part with undelivered messages
	// is kept in the System's alarm index, so that it is woken (after a
	// passivation, a crash, a restart of the process) to deliver them.
	// Handlers cannot use names starting with reservedAlarmPrefix.
	outboxAlarm         = reservedAlarmPrefix + "outbox"
	reservedAlarmPrefix = "_fractal."

	// maxLanes bounds the deliveries one part has in flight at a time
	// (one per lane); more lanes wait for a free slot.
	maxLanes = 1024
)

// Kinds of outbox rows.
const (
	rowSend  = 0 // SendDurable
	rowCall  = 1 // Call: the receiver answers with a rowReply
	rowReply = 2 // a receiver's answer to a Call
	rowSkip  = 3 // stands for a dead letter, so the lane moves on
)

// An outRow is one row of an outbox.
type outRow struct {
	id         int64
	dest       string
	epoch, seq int64
	kind       int
	ref        int64
	name       string
	body       []byte
	created    int64
	attempts   int
	nextAt     int64
	redrive    bool

	// behind: older messages of its lane were in the outbox when it was
	// stored, so it must not leave on its own (see enqueue).
	behind bool
}

// lane names the lane of r: its receiver, and whether it is a redriven
// dead letter (those travel outside the lane's order).
func (r *outRow) lane() string {
	if r.redrive {
		return r.dest + "\x00redrive"
	}
	return r.dest
}

// enqueue stores r in p's outbox in tx, in the lane of its receiver
// (opening one if needed), and notes p in the alarm index so that the
// message is delivered even if p or the process stops first.
func (p *part) enqueue(tx *persistence.Tx, r outRow) (outRow, error) {
	bg := context.Background()
	if err := p.install(tx, compOutbox); err != nil {
		return r, err
	}
	now := p.sys.clock.Now().UnixNano()
	r.created, r.nextAt = now, now
	// A delivery always starts at the head of its lane: a receiver that
	// has no row for its sender takes the first message it sees as the
	// lane's start, so a message that overtook an older one (waiting in
	// the outbox of a part just activated, before its pump ran) would have
	// the older one taken for a duplicate.
	if err := tx.QueryRowContext(bg, `SELECT EXISTS (SELECT 1 FROM `+outboxTable+` WHERE dest = ? AND redrive = 0)`, r.dest).Scan(&r.behind); err != nil {
		return r, err
	}
	err := tx.QueryRowContext(bg, `SELECT epoch, next FROM `+lanesTable+` WHERE dest = ?`, r.dest).Scan(&r.epoch, &r.seq)
	newLane := errors.Is(err, sql.ErrNoRows)
	if err != nil && !newLane {
		return r, err
	}
	err = tx.QueryRowContext(bg, `INSERT INTO `+outboxTable+` (dest, epoch, seq, kind, ref, name, body, created, next_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
		r.dest, r.epoch, r.seq, r.kind, r.ref, r.name, r.body, now, now).Scan(&r.id)
	if err != nil {
		return r, err
	}
	if b := p.batch; b != nil {
		b.ob.stored(r.id)
	}
	if newLane {
		// The row's id is larger than every id before it (AUTOINCREMENT),
		// so it is an epoch no earlier lane to this receiver had.
		r.epoch, r.seq = r.id, 1
		if _, err := tx.ExecContext(bg, `UPDATE `+outboxTable+` SET epoch = ?, seq = 1 WHERE id = ?`, r.epoch, r.id); err != nil {
			return r, err
		}
		_, err = tx.ExecContext(bg, `INSERT INTO `+lanesTable+` (dest, epoch, next, at) VALUES (?, ?, 2, ?)`, r.dest, r.epoch, now)
	} else {
		_, err = tx.ExecContext(bg, `UPDATE `+lanesTable+` SET next = next + 1, at = ? WHERE dest = ?`, now, r.dest)
	}
	if err != nil {
		return r, err
	}
	return r, p.ob.index(p)
}

const outRowColumns = `id, dest, epoch, seq, kind, ref, name, body, created, attempts, next_at, redrive`

func scanOutRow(row interface{ Scan(...any) error }) (outRow, error) {
	var r outRow
	err := row.Scan(&r.id, &r.dest, &r.epoch, &r.seq, &r.kind, &r.ref, &r.name, &r.body, &r.created, &r.attempts, &r.nextAt, &r.redrive)
	return r, err
}

func queryOutRows(tx *persistence.Tx, q string, args ...any) ([]outRow, error) {
	rows, err := tx.QueryContext(context.Background(), q, args...)
	if err != nil {
		return nil, err
	}
	var out []outRow
	for rows.Next() {
		r, err := scanOutRow(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Close()
}

// kill moves r to the dead-letter table. A redriven row leaves its lane,
// as does a row whose receiver is deleted (ErrNoPart: it keeps no inbox
// to tell); any other stays in its place as a skip marker, which tells
// the receiver that this sequence number will not come (unless redriven),
// so that the messages behind it can be handled.
func (p *part) kill(b *batch, r outRow, attempts int, cause error) error {
	bg := context.Background()
	now := p.sys.clock.Now().UnixNano()
	if _, err := b.tx.ExecContext(bg, `INSERT INTO `+deadTable+` (id, dest, epoch, seq, kind, ref, name, body, created, attempts, last_error, died)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.id, r.dest, r.epoch, r.seq, r.kind, r.ref, r.name, r.body, r.created, attempts, truncate(cause.Error(), 1024), now); err != nil {
		return err
	}
	p.logger().Warn("durable message moved to the dead letters", "to", r.dest, "id", r.id, "attempts", attempts, "err", cause)
	if m := p.sys.metrics; m != nil {
		m.deadLetters.Inc()
	}
	if r.redrive || errors.Is(cause, ErrNoPart) {
		if _, err := b.tx.ExecContext(bg, `DELETE FROM `+outboxTable+` WHERE id = ?`, r.id); err != nil {
			return err
		}
		return p.pump(b, r.lane())
	}
	if _, err := b.tx.ExecContext(bg, `UPDATE `+outboxTable+` SET kind = ?, name = '', body = x'', attempts = 0, next_at = ?, last_error = '' WHERE id = ?`,
		rowSkip, now, r.id); err != nil {
		return err
	}
	return p.pump(b, r.lane())
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// answer stores in p's outbox the Reply to the call callID of caller.
func (p *part) answer(tx *persistence.Tx, caller string, callID int64, val any, herr error) (outRow, error) {
	var rb replyBody
	if herr != nil {
		rb.Error = truncate(herr.Error(), 4096)
		if errors.Is(herr, ErrDiscarded) {
			rb.Error = ErrDiscarded.Error()
		}
	} else if val != nil {
		name, body, err := EncodeMessage(val)
		if err != nil {
			rb.Error = fmt.Sprintf("actors: the reply of %s could not be encoded: %v", p.path, err)
		} else {
			rb.Name, rb.Body = name, body
		}
	}
	_, body, err := EncodeMessage(rb)
	if err != nil {
		return outRow{}, err
	}
	return p.enqueue(tx, outRow{dest: caller, kind: rowReply, ref: callID, name: "fractal.reply", body: body})
}

// pruneDurable forgets, when p activates, the lanes idle for LaneIdle with
// nothing pending, and the inbox rows older than Delivery.InboxRetention
// (see Delivery.InboxRetention for why that is safe). At most pruneBatch
// rows each per activation.
func (p *part) pruneDurable(tx *persistence.Tx) error {
	const pruneBatch = 256
	bg := context.Background()
	now := p.sys.clock.Now()
	if p.schema&compOutbox != 0 {
		if _, err := tx.ExecContext(bg, `DELETE FROM `+lanesTable+` WHERE dest IN (SELECT dest FROM `+lanesTable+`
			WHERE at < ? AND NOT EXISTS (SELECT 1 FROM `+outboxTable+` o WHERE o.dest = `+lanesTable+`.dest) LIMIT ?)`,
			now.Add(-LaneIdle).UnixNano(), pruneBatch); err != nil {
			return err
		}
	}
	if p.schema&compInbox == 0 {
		return nil
	}
	_, err := tx.ExecContext(bg, `DELETE FROM `+inboxTable+` WHERE sender IN (SELECT sender FROM `+inboxTable+` WHERE at < ? LIMIT ?)`,
		now.Add(-p.sys.opts.Delivery.InboxRetention).UnixNano(), pruneBatch)
	return err
}
