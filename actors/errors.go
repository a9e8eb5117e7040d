package actors

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers distinguish them with errors.Is; the errors the
// runtime returns wrap them with the path and the cause.
var (
	// ErrClosed is returned by a System that has been closed, and to callers
	// whose messages were still queued when Close gave up waiting for them.
	ErrClosed = errors.New("actors: system closed")

	// ErrNoKind is returned for a path that no declared kind's pattern
	// matches. Nothing is created for such a path.
	ErrNoKind = errors.New("actors: no kind declared for path")

	// ErrInvalidTree is returned by Open when the declared kinds do not form
	// a valid tree (a bad pattern, a missing parent level, two kinds for one
	// level, a kind without a handler).
	ErrInvalidTree = errors.New("actors: invalid tree")

	// ErrPanic is wrapped by the error a caller receives when the handler of
	// its message panicked. The message's writes were rolled back and the
	// part was restarted by its parent.
	ErrPanic = errors.New("actors: handler panicked")

	// ErrUnknownMessage is for handlers to wrap when they receive a message
	// type they do not handle, for example
	//
	//	return nil, fmt.Errorf("%w: %T", actors.ErrUnknownMessage, msg)
	ErrUnknownMessage = errors.New("actors: unknown message type")

	// ErrActivation is wrapped by the error a caller receives when the target
	// part's file could not be opened (an I/O error, a file from a newer
	// schema, a failing migration). The part tries again at its next message.
	ErrActivation = errors.New("actors: part could not be activated")

	// ErrFileMissing is wrapped by the ErrActivation error of a part whose
	// file is gone, or empty, although its parent recorded it: it had a
	// file, and activating it empty would silently lose what it
	// acknowledged.
	ErrFileMissing = errors.New("actors: part file missing")

	// ErrLocked is returned by Open when another System (in this process or
	// another) already has the data directory open.
	ErrLocked = errors.New("actors: data directory is in use")

	// ErrUndeliverable is returned when a message could not reach its part
	// after being rerouted too many times (see maxHops), which only happens
	// while parts keep stopping under it.
	ErrUndeliverable = errors.New("actors: message could not be delivered")

	// ErrBackpressure is returned by Request and Send when the target
	// part's mailbox is full (Options.MaxMailbox): the part is slower than
	// its callers. Retry later, or slow down.
	ErrBackpressure = errors.New("actors: mailbox full")

	// ErrFenced is wrapped by the error callers receive when Options.Fence
	// refused a part's commit, or the release of its replies: this node no
	// longer owns the part, and nothing it did for them was acknowledged.
	ErrFenced = errors.New("actors: fenced: this node no longer owns the part")

	// ErrNotActive is returned by System.Restart for a part that is not
	// active.
	ErrNotActive = errors.New("actors: part is not active")

	// ErrNoPart is returned for a message to a part that was deleted
	// (System.Delete, Context.Delete), or to a path below one, until
	// System.Reuse lets the path be used again. Nothing is created for
	// such a message. A durable message that gets it becomes a dead letter
	// of its sender at once.
	ErrNoPart = errors.New("actors: no such part")

	// ErrOutboxNotEmpty is returned by System.Delete when durable messages
	// sent by parts of the subtree were still undelivered when its context
	// ended: a part is deleted only once its outbox is empty, and nothing
	// was deleted.
	ErrOutboxNotEmpty = errors.New("actors: durable messages still undelivered")

	// ErrRemotePart is returned by System.Delete and System.Reuse for a
	// path that Options.Remote says another node serves: delete it on that
	// node.
	ErrRemotePart = errors.New("actors: part served by another node")

	// ErrCallCycle is wrapped by the error of a System.Request (or
	// Scatter, Restart, Drain, DeadLetters...) made from a handler with
	// its Context.Context, that would wait on a part already waiting along
	// the same call path: a part whose handler made the request, directly
	// or through other parts, or that must activate or restart the target
	// first. The request fails at once instead of waiting out its
	// deadline, nothing is sent, and the handler decides what its own
	// message does with the error. The error's text names the cycle
	// ("actors: call cycle: a -> b -> a").
	ErrCallCycle = errors.New("actors: call cycle")

	// ErrCallToSelf is wrapped, with ErrCallCycle, by the error of a
	// System.Request made from a handler, with its Context.Context, to
	// its own part ("actors: call to self: a -> a").
	ErrCallToSelf = errors.New("actors: call to self")
)

// PanicError is the error a caller receives when the handler of its message
// panicked. It wraps ErrPanic.
type PanicError struct {
	Path  Path // the part whose handler panicked
	Value any  // the value passed to panic
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("actors: handler of %s panicked: %v", e.Path, e.Value)
}

// Unwrap returns ErrPanic, or the panic value itself when it is an error.
func (e *PanicError) Unwrap() []error {
	if err, ok := e.Value.(error); ok {
		return []error{ErrPanic, err}
	}
	return []error{ErrPanic}
}
