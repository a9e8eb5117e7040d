package actors

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/fractalrt/fractal/persistence"
)

// A Context is what a handler sees of the message it is handling: the part's
// path, SQL access inside the message's transaction, and a way to send
// messages that leave only after the transaction commits.
//
// A Context is valid only during the call it was passed to; keep no
// reference to it.
type Context struct {
	ctx      context.Context
	part     *part
	tx       *persistence.Tx
	out      []*envelope // held until commit: the output gate
	durables []outRow    // durable messages stored by this call
	rows     []*sql.Rows // opened by Query, closed by end
	done     bool
	exit     bool // Stop was called

	callOnce sync.Once       // makes callCtx (see callContext)
	call     *callLink       // c's part on its request's call path, once asked for
	callCtx  context.Context // what Context returns
}

// Context returns the context of the request being handled: its deadline
// and cancellation are the caller's. Statements run through c are
// interrupted when it is done.
//
// It also carries the call path: the parts whose handlers wait along it,
// this one last. Pass it to System.Request (and Scatter, Restart, Drain,
// DeadLetters...) from a handler: a request that would wait on a part
// already waiting along its path (this part itself, or a part that called
// it) then fails at once with ErrCallCycle instead of waiting out its
// deadline. A request made with another context (context.Background())
// is not checked.
func (c *Context) Context() context.Context { return c.callContext() }

// Path returns the path of the part handling the message.
func (c *Context) Path() Path { return c.part.path }

// Kind returns the name of the part's kind.
func (c *Context) Kind() string { return c.part.kind.Name }

// Logger returns the system's logger, with the part's path attached.
func (c *Context) Logger() *slog.Logger { return c.part.logger() }

// errContextDone is returned by a Context's methods after its call returned.
var errContextDone = errors.New("actors: Context used after its handler returned")

// usable reports why a statement cannot run now: the handler returned, or
// the request's context is done.
func (c *Context) usable() error {
	if c.done {
		return errContextDone
	}
	return c.ctx.Err()
}

// Statements run with a context that is never cancelled, after checking the
// request's: the driver watches a cancellable context with a goroutine per
// statement, which would cost more than a small statement itself. So a
// request's deadline stops its handler at its next statement, not in the
// middle of one.

// Exec runs a statement in the message's transaction.
func (c *Context) Exec(query string, args ...any) (sql.Result, error) {
	if err := c.usable(); err != nil {
		return nil, err
	}
	return c.tx.ExecContext(context.Background(), query, args...)
}

// Query runs a query in the message's transaction. Close the rows before
// returning; the runtime closes any left open when the handler returns.
func (c *Context) Query(query string, args ...any) (*sql.Rows, error) {
	if err := c.usable(); err != nil {
		return nil, err
	}
	rows, err := c.tx.QueryContext(context.Background(), query, args...)
	if err == nil {
		c.rows = append(c.rows, rows)
	}
	return rows, err
}

// QueryRow runs a query that returns at most one row, in the message's
// transaction; its Scan reports any error.
func (c *Context) QueryRow(query string, args ...any) *persistence.Row {
	if err := c.usable(); err != nil {
		return persistence.ErrRow(err)
	}
	return c.tx.QueryRowContext(context.Background(), query, args...)
}

// end closes what the handler left open; the Context is unusable after.
func (c *Context) end() {
	c.done = true
	c.endCall()
	for _, r := range c.rows {
		_ = r.Close()
	}
	c.rows = nil
}

// Tx returns the transaction the message runs in, for what Exec, Query and
// QueryRow do not cover (nested savepoints, for example). It is shared with
// the other messages of the batch, each under its own savepoint: do not
// commit or roll it back, and prefer c's methods, which honour the
// message's deadline.
func (c *Context) Tx() *persistence.Tx { return c.tx }

// Send sends msg to the part at to, once the message being handled has
// committed; if it rolls back, nothing is sent. to is absolute
// ("mail/example.org/bob") or relative to this part ("..",
// "../bob@example.org", "./drafts").
//
// A message to this part's own subtree goes straight to its target. A
// message to anywhere else crosses this part's boundary: it escalates to
// the smallest whole that contains both this part and the target (activating
// it if needed) and travels down from there, as mail between domains goes
// through the whole. Delivery is at most once: a part that
// cannot handle the message (its file cannot be opened, its handler fails)
// drops it after logging.
func (c *Context) Send(to string, msg any) error {
	if c.done {
		return errContextDone
	}
	p, err := c.part.path.Resolve(to)
	if err != nil {
		return err
	}
	if _, err := c.part.sys.tree.match(p); err != nil {
		return err
	}
	env := &envelope{to: p, msg: msg, ctx: context.Background(), from: c.part.path}
	if !c.part.path.Contains(p) {
		// Outside this part's subtree: through the smallest common whole.
		env.via, env.relayed = CommonAncestor(c.part.path, p), true
	}
	c.out = append(c.out, env)
	return nil
}

// MaxTimers bounds the timers waiting for one part (see Context.After).
const MaxTimers = 1024

// ErrTooManyTimers is returned by Context.After when MaxTimers timers
// already wait for the part.
var ErrTooManyTimers = errors.New("actors: too many timers for one part")

// After sends msg to this part itself after d, once the message being
// handled has committed (a rolled-back handler sets no timer). It is a plain
// timer for an active part, kept in memory only: it is cancelled when the
// part stops, by passivation, restart or Close, and does not survive a
// crash. Use it for timeouts and retries while a part is busy; at most
// MaxTimers wait per part.
func (c *Context) After(d time.Duration, msg any) error {
	if c.done {
		return errContextDone
	}
	if d < 0 {
		return fmt.Errorf("actors: After: negative delay %v", d)
	}
	held := 0
	for _, e := range c.out {
		if e.timer != nil {
			held++
		}
	}
	if c.part.timerCount()+held >= MaxTimers {
		return fmt.Errorf("%w: %s has %d", ErrTooManyTimers, c.part.path, MaxTimers)
	}
	c.out = append(c.out, &envelope{to: c.part.path, msg: msg, ctx: context.Background(), from: c.part.path, delay: d, timer: c.part})
	return nil
}

func (c *Context) String() string {
	return fmt.Sprintf("actors.Context(%s)", c.part.path)
}

// Stop ends this part normally (OTP's normal exit) once the message being
// handled has committed: its batch commits at once, its reply goes out as
// usual, and the messages that reach the part after this one wait while
// its parent decides, as the part's Kind.Restart says:
//
//   - supervisor.Transient and supervisor.Temporary parts are not
//     restarted: the part stops, its file closes, and its next message
//     activates it again;
//   - a supervisor.Permanent part (the default) is restarted at once, as
//     OTP restarts a permanent child whatever its exit: its file is reopened
//     and Activate runs again. Such restarts count towards the parent's
//     restart intensity.
//
// Stop has no effect when the handler returns an error or panics (nothing
// committed), nor in Activate.
func (c *Context) Stop() {
	if !c.done {
		c.exit = true
	}
}
