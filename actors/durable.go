package actors

import (
	"errors"
	"fmt"
	"time"

	"github.com/fractalrt/fractal/supervisor"
)

// Delivery configures durable messages. The zero value uses the defaults
// named below.
type Delivery struct {
	// MaxAttempts is the number of failed deliveries after which a message
	// is moved to the dead-letter table (DefaultMaxAttempts if zero).
	MaxAttempts int

	// MaxAge is the age after which a message that fails once more is
	// moved to the dead-letter table (DefaultMaxAge if zero).
	MaxAge time.Duration

	// Backoff spaces the retries (DefaultDeliveryBackoff if zero).
	Backoff supervisor.Backoff

	// Timeout bounds one delivery attempt (DefaultDeliveryTimeout if
	// zero): a receiver that has not acknowledged by then is tried again.
	Timeout time.Duration

	// InboxRetention is how long a receiver keeps a sender's row after
	// its last message (DefaultInboxRetention if zero). It must exceed
	// MaxAge plus LaneIdle, and Open refuses a smaller one: a redelivery
	// is at most MaxAge old, and a sender opens a new lane (whose epoch
	// the receiver does not need to know) only after LaneIdle without a
	// message on it, so no redelivery can find its row pruned.
	InboxRetention time.Duration
}

// Defaults for Delivery's zero fields.
const (
	DefaultMaxAttempts     = 25
	DefaultMaxAge          = 24 * time.Hour
	DefaultDeliveryTimeout = 30 * time.Second
	DefaultInboxRetention  = 7 * 24 * time.Hour

	// LaneIdle is how long a sender keeps a lane with nothing in flight
	// before forgetting it: the next message opens a new lane.
	LaneIdle = time.Hour
)

// DefaultDeliveryBackoff spaces the retries of a durable message: 100 ms,
// doubling, at most 5 minutes, ±20%. With DefaultMaxAttempts a message is
// retried for a little over an hour before it dies.
var DefaultDeliveryBackoff = supervisor.Backoff{Initial: 100 * time.Millisecond, Max: 5 * time.Minute, Multiplier: 2, Jitter: 0.2}

func (d *Delivery) setDefaults() error {
	if d.MaxAttempts == 0 {
		d.MaxAttempts = DefaultMaxAttempts
	}
	if d.MaxAge == 0 {
		d.MaxAge = DefaultMaxAge
	}
	if d.Backoff == (supervisor.Backoff{}) {
		d.Backoff = DefaultDeliveryBackoff
	}
	if d.Timeout == 0 {
		d.Timeout = DefaultDeliveryTimeout
	}
	if d.InboxRetention == 0 {
		d.InboxRetention = DefaultInboxRetention
	}
	switch {
	case d.MaxAttempts < 1:
		return fmt.Errorf("actors: Delivery.MaxAttempts %d must be positive", d.MaxAttempts)
	case d.MaxAge < 0 || d.Timeout < 0:
		return errors.New("actors: Delivery.MaxAge and Timeout must not be negative")
	case d.InboxRetention <= d.MaxAge+LaneIdle:
		return fmt.Errorf("actors: Delivery.InboxRetention %v must exceed MaxAge + LaneIdle (%v)", d.InboxRetention, d.MaxAge+LaneIdle)
	}
	if err := d.Backoff.Validate(); err != nil {
		return fmt.Errorf("actors: Delivery.Backoff: %w", err)
	}
	return nil
}

// ErrDiscarded is the error of the Reply a caller receives when an operator
// discarded its dead Call (System.DiscardDeadLetter).
var ErrDiscarded = errors.New("actors: dead message discarded")

// A Reply is what a part that made a Call receives once the receiver
// handled it: the receiver's reply value, or its handler's error. A reply
// travels as durably as the call did, and reaches the caller once.
type Reply struct {
	ID    int64  // as returned by Context.Call
	From  string // the path the call went to
	Value any    // the receiver's reply (its type registered), nil on error
	Error string // the receiver handler's error; empty on success
}

// Err returns the receiver handler's error, or nil. Its text is the
// handler's; a discarded dead call's error wraps ErrDiscarded.
func (r Reply) Err() error {
	switch {
	case r.Error == "":
		return nil
	case r.Error == ErrDiscarded.Error():
		return ErrDiscarded
	}
	return errors.New(r.Error)
}

// replyBody is the stored form of a Reply.
type replyBody struct {
	Name  string `json:",omitempty"` // registered name of the value; "" for nil
	Body  []byte `json:",omitempty"`
	Error string `json:",omitempty"`
}

// SendDurable sends msg to the part at to as a durable message: it is
// stored in this part's file in the message's transaction (nothing is sent
// if it rolls back), delivered after the commit, retried until the receiver
// has handled it, and handled once. Messages from this part to one
// receiver are handled in the order they were sent. msg's type must be
// registered (RegisterMessage); to is resolved as in Send.
//
// The receiver's handler error makes the runtime retry the message; after
// Delivery.MaxAttempts or Delivery.MaxAge it becomes a dead letter (see
// System.DeadLetters).
func (c *Context) SendDurable(to string, msg any) error {
	_, err := c.durable(to, msg, rowSend)
	return err
}

// Call sends msg to the part at to as a durable request and returns its
// ID. The receiver's handler runs once; its reply value (its type
// registered) or its error comes back to this part as a Reply message with
// that ID, durably too. Unlike SendDurable, a handler error is an answer,
// not a reason to retry: a saga compensates on it.
func (c *Context) Call(to string, msg any) (int64, error) {
	return c.durable(to, msg, rowCall)
}

func (c *Context) durable(to string, msg any, kind int) (int64, error) {
	if err := c.usable(); err != nil {
		return 0, err
	}
	p, err := c.part.path.Resolve(to)
	if err != nil {
		return 0, err
	}
	if _, err := c.part.sys.tree.match(p); err != nil {
		return 0, err
	}
	name, body, err := EncodeMessage(msg)
	if err != nil {
		return 0, err
	}
	r, err := c.part.enqueue(c.tx, outRow{dest: p.String(), kind: kind, name: name, body: body})
	if err != nil {
		return 0, fmt.Errorf("actors: %s: storing a durable message: %w", c.part.path, err)
	}
	c.durables = append(c.durables, r)
	return r.id, nil
}
