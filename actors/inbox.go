package actors

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/fractalrt/fractal/persistence"
)

// A delivery is one attempt to deliver consecutive outbox rows of one
// lane (at most maxBundle, and about MaxMessageSize/2 bytes); it travels as
// an envelope's message, to another node too (hence exported fields and a
// registered name).
type delivery struct {
	From    string
	Epoch   int64
	Redrive bool // a dead letter sent again: handled only if it was skipped
	Items   []deliveryItem
}

// A deliveryItem is one outbox row of a delivery.
type deliveryItem struct {
	ID   int64 // sender's outbox row
	Seq  int64
	Kind int
	Ref  int64 // rowReply: the call's ID
	Name string
	Body []byte
}

// A deliveryAck answers a delivery: its first Through items are handled
// (or were already); Error, when not empty, is why the next one was not.
type deliveryAck struct {
	Through int
	Error   string `json:",omitempty"`
}

// maxBundle bounds the rows of one delivery: a lane whose receiver is slow
// to acknowledge (its commit waits for a sync) moves that many at a time.
const maxBundle = 64

func init() {
	MustRegisterMessage[*delivery]("fractal.delivery")
	MustRegisterMessage[deliveryAck]("fractal.ack")
	MustRegisterMessage[replyBody]("fractal.reply")
}

// errOutOfOrder answers a delivery that arrived before the one before it
// in its lane; the sender tries again.
var errOutOfOrder = errors.New("actors: durable message out of order")

// runIn handles the durable messages of d addressed to p, in
// order, each under its own savepoint in b's transaction: a message is
// handled unless the inbox says it already was, and the inbox advances in
// the same transaction. It stops at the first message that fails; the
// acknowledgement says how many went through.
func (d *delivery) runIn(p *part, env *envelope, b *batch) {
	ack := deliveryAck{}
	for i := range d.Items {
		if err := p.deliverItem(env, b, d, &d.Items[i]); err != nil {
			ack.Error = truncate(err.Error(), 4096)
			break
		}
		ack.Through++
	}
	b.hold(env, ack, nil, outOK)
}

// deliverItem handles one message of d. A panic of the handler rolls it
// back, commits the messages before it and fails the whole delivery (the
// sender sends them again; the inbox knows they were handled).
func (p *part) deliverItem(env *envelope, b *batch, d *delivery, it *deliveryItem) error {
	sp, err := b.tx.Savepoint()
	if err != nil {
		return err
	}
	apply, err := p.admitDelivery(b.tx, d, it)
	if err == nil && apply && it.Kind == rowSkip {
		err = p.recordDelivery(b.tx, d, it, true)
		apply = false
	}
	if err != nil {
		_ = sp.Rollback()
		return err
	}
	if !apply {
		return sp.Release() // a duplicate is acknowledged as it was the first time
	}
	msg, err := decodeItem(d, it)
	if err != nil {
		_ = sp.Rollback()
		return fmt.Errorf("actors: %s: %w", p.path, err)
	}
	c, reply, perr, herr := p.run(env, b, msg)
	if perr != nil {
		if rerr := sp.Rollback(); rerr != nil {
			p.logger().Error("rollback", "err", rerr)
		}
		p.failBatch(env, b, perr)
	}
	if herr != nil {
		rerr := sp.Rollback()
		if it.Kind != rowCall {
			if rerr != nil {
				p.logger().Error("rollback", "err", rerr)
			}
			return herr // retried by the sender, then dead-lettered
		}
		// A call's error is its answer: the handler's writes go, the
		// answer and the inbox stay.
		if rerr == nil {
			sp, rerr = b.tx.Savepoint()
		}
		if rerr != nil {
			return rerr
		}
		if rerr = p.install(b.tx, compInbox); rerr != nil { // its installation went with the rollback, if it was this message's
			_ = sp.Rollback()
			return rerr
		}
		c.durables, c.out = nil, nil
	}
	ferr := p.recordDelivery(b.tx, d, it, false)
	if ferr == nil && it.Kind == rowCall {
		var r outRow
		r, ferr = p.answer(b.tx, d.From, it.ID, reply, herr)
		c.durables = append(c.durables, r)
	}
	if ferr == nil {
		ferr = sp.Release()
	} else {
		_ = sp.Rollback()
	}
	if ferr != nil {
		return fmt.Errorf("actors: %s: recording a durable message: %w", p.path, ferr)
	}
	p.holdOut(b, c.out)
	b.ob.fresh = append(b.ob.fresh, c.durables...)
	return nil
}

// decodeItem returns the message of it, a Reply for a reply.
func decodeItem(d *delivery, it *deliveryItem) (any, error) {
	if it.Kind != rowReply {
		return DecodeMessage(it.Name, it.Body)
	}
	m, err := DecodeMessage("fractal.reply", it.Body)
	if err != nil {
		return nil, err
	}
	rb := m.(replyBody)
	r := Reply{ID: it.Ref, Error: rb.Error}
	if from, err := ParsePath(d.From); err == nil {
		r.From = from.String()
	}
	if rb.Name != "" {
		if r.Value, err = DecodeMessage(rb.Name, rb.Body); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// admitDelivery decides, from p's inbox, whether d is to be handled (true),
// was handled already (false), or came too early (errOutOfOrder).
func (p *part) admitDelivery(tx *persistence.Tx, d *delivery, it *deliveryItem) (bool, error) {
	bg := context.Background()
	if err := p.install(tx, compInbox); err != nil {
		return false, err
	}
	if d.Redrive {
		var n int
		err := tx.QueryRowContext(bg, `SELECT count(*) FROM `+skippedTable+` WHERE sender = ? AND epoch = ? AND seq = ?`, d.From, d.Epoch, it.Seq).Scan(&n)
		return n > 0, err
	}
	var epoch, seq int64
	err := tx.QueryRowContext(bg, `SELECT epoch, seq FROM `+inboxTable+` WHERE sender = ?`, d.From).Scan(&epoch, &seq)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return true, nil // the lane's first message, or its row outlived retention
	case err != nil:
		return false, err
	case d.Epoch > epoch:
		return true, nil // a new lane
	case d.Epoch < epoch, it.Seq <= seq:
		return false, nil
	case it.Seq == seq+1:
		return true, nil
	}
	return false, fmt.Errorf("%w: %s sent #%d, #%d expected", errOutOfOrder, d.From, it.Seq, seq+1)
}

// recordDelivery advances p's inbox past d; skip records that d's sequence
// number was skipped (a dead letter), so that a redrive is handled.
func (p *part) recordDelivery(tx *persistence.Tx, d *delivery, it *deliveryItem, skip bool) error {
	bg := context.Background()
	if d.Redrive {
		_, err := tx.ExecContext(bg, `DELETE FROM `+skippedTable+` WHERE sender = ? AND epoch = ? AND seq = ?`, d.From, d.Epoch, it.Seq)
		return err
	}
	if _, err := tx.ExecContext(bg, `INSERT INTO `+inboxTable+` (sender, epoch, seq, at) VALUES (?, ?, ?, ?)
		ON CONFLICT (sender) DO UPDATE SET epoch = excluded.epoch, seq = excluded.seq, at = excluded.at`,
		d.From, d.Epoch, it.Seq, p.sys.clock.Now().UnixNano()); err != nil {
		return err
	}
	if skip {
		_, err := tx.ExecContext(bg, `INSERT OR IGNORE INTO `+skippedTable+` (sender, epoch, seq) VALUES (?, ?, ?)`, d.From, d.Epoch, it.Seq)
		return err
	}
	return nil
}
