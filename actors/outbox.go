package actors

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fractalrt/fractal/persistence"
	"github.com/fractalrt/fractal/supervisor"
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

func createOutbox(tx *persistence.Tx) error {
	for _, q := range []string{
		`CREATE TABLE IF NOT EXISTS ` + outboxTable + ` (
			id INTEGER PRIMARY KEY AUTOINCREMENT,
			dest TEXT NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL,
			kind INTEGER NOT NULL, ref INTEGER NOT NULL, name TEXT NOT NULL, body BLOB NOT NULL,
			created INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL,
			last_error TEXT NOT NULL DEFAULT '', redrive INTEGER NOT NULL DEFAULT 0)`,
		`CREATE INDEX IF NOT EXISTS ` + outboxTable + `_dest ON ` + outboxTable + ` (dest, redrive, id)`,
		`CREATE TABLE IF NOT EXISTS ` + lanesTable + ` (dest TEXT PRIMARY KEY, epoch INTEGER NOT NULL,
			next INTEGER NOT NULL, at INTEGER NOT NULL) WITHOUT ROWID`,
		`CREATE TABLE IF NOT EXISTS ` + deadTable + ` (id INTEGER PRIMARY KEY,
			dest TEXT NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL,
			kind INTEGER NOT NULL, ref INTEGER NOT NULL, name TEXT NOT NULL, body BLOB NOT NULL,
			created INTEGER NOT NULL, attempts INTEGER NOT NULL, last_error TEXT NOT NULL, died INTEGER NOT NULL)`,
	} {
		if _, err := tx.ExecContext(context.Background(), q); err != nil {
			return err
		}
	}
	return nil
}

// enqueue stores r in p's outbox in tx, in the lane of its receiver
// (opening one if needed), and notes p in the alarm index so that the
// message is delivered even if p or the process stops first.
func (p *part) enqueue(tx *persistence.Tx, r outRow) (outRow, error) {
	bg := context.Background()
	if err := createOutbox(tx); err != nil {
		return r, err
	}
	now := time.Now().UnixNano()
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
		b.stored(r.id)
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

// An outbox is the in-memory state of one part's durable deliveries: which
// lanes have a delivery in flight or a retry waiting. It is reset when the
// part stops; the table is the truth, and a new incarnation starts again
// from it. mu guards it: batches release (and so dispatch) from the
// barrier's goroutine.
type outbox struct {
	mu      sync.Mutex
	busy    map[string]int64       // lane -> row in flight or waiting for its retry
	timers  map[string]*time.Timer // lane -> its retry
	indexed bool                   // p noted in the alarm index by this incarnation
	stopped bool
	fails   int // batches in a row that failed with deliveries to send or settle (see failed)
}

// failed arranges for the lanes, which p holds, to be pumped again: the
// batch that was to send their rows or record their attempts' outcomes
// failed (its commit, or the recording itself). The delay is the delivery
// backoff for the number of such failures in a row, at most alarmLease.
func (ob *outbox) failed(p *part, lanes []string) {
	if len(lanes) == 0 {
		return
	}
	ob.mu.Lock()
	if ob.stopped {
		ob.mu.Unlock()
		return // the next incarnation pumps every lane
	}
	ob.fails++
	n := ob.fails
	if ob.busy == nil {
		ob.busy = make(map[string]int64)
	}
	for _, lane := range lanes {
		if _, ok := ob.busy[lane]; !ok {
			ob.busy[lane] = 0 // p holds it again; its pump finds the row
		}
	}
	ob.mu.Unlock()
	delay := min(p.sys.opts.Delivery.Backoff.Delay(min(n, 64), rand.Float64()), alarmLease)
	at := time.Now().Add(delay)
	for _, lane := range lanes {
		ob.retryAt(p, lane, at)
	}
}

// succeeded ends a run of failures (see failed).
func (ob *outbox) succeeded() {
	ob.mu.Lock()
	ob.fails = 0
	ob.mu.Unlock()
}

// index notes p in the alarm index, once per incarnation: the entry stays
// until a wake finds p's outbox empty.
func (ob *outbox) index(p *part) error {
	ob.mu.Lock()
	done := ob.indexed
	ob.mu.Unlock()
	if done {
		return nil
	}
	if err := p.sys.alarms.note(p.path, outboxAlarm, time.Now().Add(alarmLease)); err != nil {
		return err
	}
	ob.mu.Lock()
	ob.indexed = true
	ob.mu.Unlock()
	return nil
}

// claim marks r's lane busy with r, unless it is busy already or too many
// are.
func (ob *outbox) claim(r *outRow) bool {
	ob.mu.Lock()
	defer ob.mu.Unlock()
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
	ob.mu.Lock()
	defer ob.mu.Unlock()
	if !ob.stopped && ob.busy != nil {
		if _, ok := ob.busy[lane]; ok {
			ob.busy[lane] = row
		}
	}
}

// holder returns the row that holds lane, or 0.
func (ob *outbox) holder(lane string) int64 {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	return ob.busy[lane]
}

func (ob *outbox) free(lane string) {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	delete(ob.busy, lane)
	if t := ob.timers[lane]; t != nil {
		t.Stop()
		delete(ob.timers, lane)
	}
}

func (ob *outbox) inFlight() bool {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	return len(ob.busy) > 0
}

// stop forgets everything and cancels the retries: p is stopping.
func (ob *outbox) stop() {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	for _, t := range ob.timers {
		t.Stop()
	}
	ob.busy, ob.timers, ob.indexed, ob.stopped = nil, nil, false, true
}

// reset prepares a new incarnation.
func (ob *outbox) reset() {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	ob.stopped = false
}

// retryAt posts an outboxPump for lane to p at t.
func (ob *outbox) retryAt(p *part, lane string, t time.Time) {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	if ob.stopped {
		return
	}
	if ob.timers == nil {
		ob.timers = make(map[string]*time.Timer)
	}
	if old := ob.timers[lane]; old != nil {
		old.Stop()
	}
	ob.timers[lane] = time.AfterFunc(time.Until(t), func() {
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

// runOutbox handles a runtime message (about p's outbox, dead letters or
// children) in b's transaction.
// The deliveries it decides are sent after b is durable.
func (p *part) runOutbox(env *envelope, b *batch, msg any) {
	sp, err := b.tx.Savepoint()
	if err != nil {
		b.holdRuntime(env, nil, fmt.Errorf("actors: %s: %w", p.path, err), outError)
		return
	}
	var val any
	switch m := msg.(type) {
	case outboxPump:
		err = p.pump(b, m.lane)
	case alarmWake:
		err = p.pumpOrSettle(b)
	case outboxResult:
		err = p.settleDelivery(b, m)
		if err != nil && p.ob.holder(m.rows[0].lane()) == m.rows[0].id {
			// The outcome is not recorded and the attempt is over:
			// the lane's rows go again (settled below also covers a
			// failure of b's commit).
			p.ob.failed(p, []string{m.rows[0].lane()})
		}
	case deadLetterOp:
		val, err = p.deadLetterOp(b, m)
	case childCreated:
		err = p.childCreatedTx(b, m.seg)
	}
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

const outRowColumns = `id, dest, epoch, seq, kind, ref, name, body, created, attempts, next_at, redrive`

func scanOutRow(row interface{ Scan(...any) error }) (outRow, error) {
	var r outRow
	err := row.Scan(&r.id, &r.dest, &r.epoch, &r.seq, &r.kind, &r.ref, &r.name, &r.body, &r.created, &r.attempts, &r.nextAt, &r.redrive)
	return r, err
}

// pump claims each free lane (or lane, which p holds already) and, once b
// is durable, sends its first rows; a lane whose first row is not due yet
// gets a retry timer instead.
func (p *part) pump(b *batch, lane string) error {
	if ok, err := hasTable(b.tx, outboxTable); err != nil || !ok {
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
	now := time.Now().UnixNano()
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
		b.sends = append(b.sends, rows)
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
	now, size := time.Now().UnixNano(), 0
	for i, r := range rows {
		size += len(r.body) + len(r.name) + 64
		if i > 0 && (r.epoch != rows[0].epoch || r.nextAt > now || size > MaxMessageSize/2) {
			return rows[:i], nil
		}
	}
	return rows, nil
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

// pumpOrSettle answers the alarm index's wake: deliver what is pending, or,
// when the outbox is empty, remove p's entry from the index.
func (p *part) pumpOrSettle(b *batch) error {
	var pending bool
	if ok, err := hasTable(b.tx, outboxTable); err != nil {
		return err
	} else if ok {
		if err := b.tx.QueryRowContext(context.Background(), `SELECT EXISTS (SELECT 1 FROM `+outboxTable+`)`).Scan(&pending); err != nil {
			return err
		}
	}
	if !pending {
		p.ob.mu.Lock()
		p.ob.indexed = false
		p.ob.mu.Unlock()
		return p.sys.alarms.settle(p.path, outboxAlarm, time.Time{})
	}
	// Still pending: the entry's lease (alarmLease) wakes p again later.
	p.ob.mu.Lock()
	p.ob.indexed = true
	p.ob.mu.Unlock()
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
		b.settled = append(b.settled, lane)
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
		n := len(b.sends)
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
	now := time.Now()
	opts := p.sys.opts.Delivery
	attempts := cur.attempts + 1
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

// stored notes that b stored outbox row id.
func (b *batch) stored(id int64) {
	if b.minFresh == 0 || id < b.minFresh {
		b.minFresh = id
	}
	b.maxFresh = max(b.maxFresh, id)
}

// sendDurableNow sends at once, of the deliveries b.sends[from:], the rows
// that are durable already: stored by a batch that has been released (after
// its commit and sync). The next messages of a lane then leave as soon as
// the previous ones are acknowledged, without waiting for b's own commit
// and sync, which only delete the acknowledged rows (should they be lost,
// the receiver's inbox acknowledges the redelivery). The rows of a delivery
// that are not durable yet wait for the next round of their lane.
func (p *part) sendDurableNow(b *batch, from int) {
	durable := p.durableOut.Load()
	kept := b.sends[:from]
	for _, rows := range b.sends[from:] {
		n := 0
		for n < len(rows) && rows[n].id <= durable && (b.minFresh == 0 || rows[n].id < b.minFresh) {
			n++
		}
		if n == 0 {
			kept = append(kept, rows)
		} else {
			p.send(rows[:n])
		}
	}
	b.sends = kept
}

// kill moves r to the dead-letter table. A redriven row leaves its lane;
// any other stays in its place as a skip marker, which tells the receiver
// that this sequence number will not come (unless redriven), so that the
// messages behind it can be handled.
func (p *part) kill(b *batch, r outRow, attempts int, cause error) error {
	bg := context.Background()
	now := time.Now().UnixNano()
	if _, err := b.tx.ExecContext(bg, `INSERT INTO `+deadTable+` (id, dest, epoch, seq, kind, ref, name, body, created, attempts, last_error, died)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.id, r.dest, r.epoch, r.seq, r.kind, r.ref, r.name, r.body, r.created, attempts, truncate(cause.Error(), 1024), now); err != nil {
		return err
	}
	p.logger().Warn("durable message moved to the dead letters", "to", r.dest, "id", r.id, "attempts", attempts, "err", cause)
	if m := p.sys.metrics; m != nil {
		m.deadLetters.Inc()
	}
	if r.redrive {
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

func (p *part) countDelivery(outcome string, took time.Duration) {
	if m := p.sys.metrics; m != nil {
		m.deliveries.WithLabelValues(outcome).Inc()
		m.deliveryTime.Observe(took.Seconds())
	}
}

// handleDelivery handles the durable messages of d addressed to p, in
// order, each under its own savepoint in b's transaction: a message is
// handled unless the inbox says it already was, and the inbox advances in
// the same transaction. It stops at the first message that fails; the
// acknowledgement says how many went through.
func (p *part) handleDelivery(env *envelope, b *batch, d *delivery) {
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
		b.hold(env, nil, perr, outPanic)
		p.commit()
		p.queued.Add(-1) // see handle
		p.current = nil
		panic(perr)
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
		if rerr = createInbox(b.tx); rerr != nil { // its creation went with the rollback, if it was this message's
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
	b.out = append(b.out, c.out...)
	b.fresh = append(b.fresh, c.durables...)
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

func createInbox(tx *persistence.Tx) error {
	for _, q := range []string{
		`CREATE TABLE IF NOT EXISTS ` + inboxTable + ` (sender TEXT PRIMARY KEY, epoch INTEGER NOT NULL,
			seq INTEGER NOT NULL, at INTEGER NOT NULL) WITHOUT ROWID`,
		`CREATE TABLE IF NOT EXISTS ` + skippedTable + ` (sender TEXT NOT NULL, epoch INTEGER NOT NULL,
			seq INTEGER NOT NULL, PRIMARY KEY (sender, epoch, seq)) WITHOUT ROWID`,
	} {
		if _, err := tx.ExecContext(context.Background(), q); err != nil {
			return err
		}
	}
	return nil
}

// admitDelivery decides, from p's inbox, whether d is to be handled (true),
// was handled already (false), or came too early (errOutOfOrder).
func (p *part) admitDelivery(tx *persistence.Tx, d *delivery, it *deliveryItem) (bool, error) {
	bg := context.Background()
	if err := createInbox(tx); err != nil {
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
		d.From, d.Epoch, it.Seq, time.Now().UnixNano()); err != nil {
		return err
	}
	if skip {
		_, err := tx.ExecContext(bg, `INSERT OR IGNORE INTO `+skippedTable+` (sender, epoch, seq) VALUES (?, ?, ?)`, d.From, d.Epoch, it.Seq)
		return err
	}
	return nil
}

// pruneDurable forgets, when p activates, the lanes idle for LaneIdle with
// nothing pending, and the inbox rows older than Delivery.InboxRetention
// (see Delivery.InboxRetention for why that is safe). At most pruneBatch
// rows each per activation.
func (p *part) pruneDurable(tx *persistence.Tx) error {
	const pruneBatch = 256
	bg := context.Background()
	now := time.Now()
	if ok, err := hasTable(tx, lanesTable); err != nil {
		return err
	} else if ok {
		if _, err := tx.ExecContext(bg, `DELETE FROM `+lanesTable+` WHERE dest IN (SELECT dest FROM `+lanesTable+`
			WHERE at < ? AND NOT EXISTS (SELECT 1 FROM `+outboxTable+` o WHERE o.dest = `+lanesTable+`.dest) LIMIT ?)`,
			now.Add(-LaneIdle).UnixNano(), pruneBatch); err != nil {
			return err
		}
	}
	if ok, err := hasTable(tx, inboxTable); err != nil || !ok {
		return err
	}
	_, err := tx.ExecContext(bg, `DELETE FROM `+inboxTable+` WHERE sender IN (SELECT sender FROM `+inboxTable+` WHERE at < ? LIMIT ?)`,
		now.Add(-p.sys.opts.Delivery.InboxRetention).UnixNano(), pruneBatch)
	return err
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
