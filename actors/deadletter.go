package actors

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// A DeadLetter is a durable message that could not be delivered within
// Delivery.MaxAttempts or Delivery.MaxAge. It stays in the dead-letter
// table of its sender's file until an operator redrives or discards it.
type DeadLetter struct {
	ID       int64     // the message's ID in its sender's outbox (Call's ID for a call)
	From     string    // the sender
	To       string    // the receiver
	Type     string    // the message's registered name
	Message  any       // the message, decoded; nil if its type is no longer registered
	Call     bool      // sent with Call: its caller waits for a Reply
	Reply    bool      // a Reply on its way back to a caller
	Attempts int       // deliveries tried
	Error    string    // the last attempt's error
	Created  time.Time // when it was sent
	Died     time.Time // when it moved to the dead letters
}

// MaxDeadLettersListed bounds the letters DeadLetters returns at once.
const MaxDeadLettersListed = 1000

// ErrNoDeadLetter is returned by RedriveDeadLetter and DiscardDeadLetter
// for an ID that is not in the part's dead-letter table.
var ErrNoDeadLetter = errors.New("actors: no such dead letter")

// DeadLetters returns the dead letters of the part at path (the sender's),
// oldest first, at most MaxDeadLettersListed. It activates the part.
func (s *System) DeadLetters(ctx context.Context, path string) ([]DeadLetter, error) {
	v, err := s.Request(ctx, path, deadLetterOp{op: "list"})
	if err != nil {
		return nil, err
	}
	return v.([]DeadLetter), nil
}

// RedriveDeadLetter sends the dead letter id of the part at path again,
// with its attempts reset, outside the order of its lane (the messages sent
// after it may have been handled). It is handled by its receiver unless it
// was handled already: the receiver knows which sequence numbers it
// skipped.
func (s *System) RedriveDeadLetter(ctx context.Context, path string, id int64) error {
	_, err := s.Request(ctx, path, deadLetterOp{op: "redrive", id: id})
	return err
}

// DiscardDeadLetter deletes the dead letter id of the part at path. For a
// call, the caller then receives a Reply whose error wraps ErrDiscarded, so
// that it can compensate; the receiver will not handle the call, unless it
// already had when its acknowledgement was lost (the attempts failed
// afterwards for another reason): check the receiver before discarding a
// call whose attempts timed out.
func (s *System) DiscardDeadLetter(ctx context.Context, path string, id int64) error {
	_, err := s.Request(ctx, path, deadLetterOp{op: "discard", id: id})
	return err
}

// Undelivered returns the number of durable messages the part at path sent
// that their receivers have not acknowledged yet (including, while they
// travel, the markers that tell a receiver a dead letter will not come).
// It activates the part.
func (s *System) Undelivered(ctx context.Context, path string) (int, error) {
	v, err := s.Request(ctx, path, deadLetterOp{op: "undelivered"})
	if err != nil {
		return 0, err
	}
	return v.(int), nil
}

func (p *part) deadLetterOp(b *batch, m deadLetterOp) (any, error) {
	ok, err := p.has(b.tx, compOutbox) // outboxTable and deadTable
	if err != nil {
		return nil, err
	}
	if m.op == "undelivered" {
		var n int
		if !ok {
			return 0, nil
		}
		err := b.tx.QueryRowContext(context.Background(), `SELECT count(*) FROM `+outboxTable).Scan(&n)
		return n, err
	}
	if !ok {
		if m.op == "list" {
			return []DeadLetter{}, nil
		}
		return nil, fmt.Errorf("%w: %s has no dead letters", ErrNoDeadLetter, p.path)
	}
	bg := context.Background()
	if m.op == "list" {
		rows, err := b.tx.QueryContext(bg, `SELECT id, dest, kind, name, body, attempts, last_error, created, died
			FROM `+deadTable+` ORDER BY id LIMIT ?`, MaxDeadLettersListed)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		letters := []DeadLetter{}
		for rows.Next() {
			var l DeadLetter
			var kind int
			var body []byte
			var created, died int64
			if err := rows.Scan(&l.ID, &l.To, &kind, &l.Type, &body, &l.Attempts, &l.Error, &created, &died); err != nil {
				return nil, err
			}
			l.From, l.Call, l.Reply = p.path.String(), kind == rowCall, kind == rowReply
			l.Created, l.Died = time.Unix(0, created), time.Unix(0, died)
			if kind == rowReply {
				l.Message, _ = decodeItem(&delivery{From: l.To}, &deliveryItem{Kind: rowReply, Body: body})
			} else {
				l.Message, _ = DecodeMessage(l.Type, body)
			}
			letters = append(letters, l)
		}
		return letters, rows.Err()
	}
	r, err := scanOutRow(b.tx.QueryRowContext(bg, `SELECT id, dest, epoch, seq, kind, ref, name, body, created, attempts, 0, 0
		FROM `+deadTable+` WHERE id = ?`, m.id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s has no dead letter %d", ErrNoDeadLetter, p.path, m.id)
	}
	if err != nil {
		return nil, err
	}
	if _, err := b.tx.ExecContext(bg, `DELETE FROM `+deadTable+` WHERE id = ?`, m.id); err != nil {
		return nil, err
	}
	now := p.sys.clock.Now().UnixNano()
	switch m.op {
	case "discard":
		if r.kind != rowCall {
			return nil, nil
		}
		// The caller is this part: it learns through a Reply to itself,
		// which travels as any other.
		rb, err := p.answer(b.tx, p.path.String(), r.id, nil, ErrDiscarded)
		if err != nil {
			return nil, err
		}
		b.ob.fresh = append(b.ob.fresh, rb)
		return nil, nil
	case "redrive":
		// Outside its lane: the receiver handles it only if it skipped its
		// sequence number, so it leaves only once the skip marker that
		// stands for it has been acknowledged (see pump).
		var id int64
		if err := b.tx.QueryRowContext(bg, `INSERT INTO `+outboxTable+` (dest, epoch, seq, kind, ref, name, body, created, next_at, redrive)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1) RETURNING id`, r.dest, r.epoch, r.seq, r.kind, r.ref, r.name, r.body, r.created, now).Scan(&id); err != nil {
			return nil, err
		}
		b.ob.stored(id)
		if err := p.ob.index(p); err != nil {
			return nil, err
		}
		return nil, p.pump(b, "")
	}
	return nil, fmt.Errorf("actors: unknown dead-letter operation %q", m.op)
}
