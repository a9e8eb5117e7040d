package actors

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
)

// A handler that waits on a part already waiting along its own call path
// (itself, or a part whose handler called it, directly or through others)
// would wait out its whole deadline: that part handles one message at a
// time, and the message it is handling waits for this one. The runtime
// knows the path through the handler's Context.Context: each handler's
// context carries the link of its part, chained to the links its request's
// context carried. System.Request, Restart and Drain check it and fail at
// once with a *callCycleError.

// A callLink is one part handling a request along a call path; the links of
// a path are chained from the innermost (the part whose handler runs now)
// to the outermost.
type callLink struct {
	path  Path
	prev  *callLink   // the link of the part whose handler made the request; nil for the first
	ended atomic.Bool // the handler returned: its part no longer waits on this path
}

// callKey is the context key of the innermost callLink.
type callKey struct{}

// callsOf returns the innermost link of ctx's call path, or nil.
func callsOf(ctx context.Context) *callLink {
	l, _ := ctx.Value(callKey{}).(*callLink)
	return l
}

// waiting returns the link of the part at p if it waits along l's path,
// or nil. The path ends, going outwards, at the first link whose handler
// has returned: the parts before it no longer wait on this path, they go on
// once that handler's reply is released.
func (l *callLink) waiting(p Path) *callLink {
	for ; l != nil && !l.ended.Load(); l = l.prev {
		if l.path == p {
			return l
		}
	}
	return nil
}

// from returns the paths of the links from w (outermost) to l (innermost).
func (l *callLink) from(w *callLink) []Path {
	var out []Path
	for ; l != nil; l = l.prev {
		out = append(out, l.path)
		if l == w {
			break
		}
	}
	slices.Reverse(out)
	return out
}

// CallPath returns the parts whose handlers wait along the call path that
// ctx belongs to, outermost first: the part whose handler's
// Context.Context ctx derives from is last. It is nil outside a handler,
// and once that handler has returned. An Options.Remote carries it to the
// node that serves a request (see WithCallPath), so that cycles across
// nodes fail at once too.
//
// A path holds each part once (a request to a part already on it is
// refused), so it is never longer than the number of active parts.
func CallPath(ctx context.Context) []Path {
	var out []Path
	for l := callsOf(ctx); l != nil && !l.ended.Load(); l = l.prev {
		out = append(out, l.path)
	}
	slices.Reverse(out)
	return out
}

// WithCallPath returns a copy of ctx whose call path is path (outermost
// first), replacing any ctx carries: for an Options.Remote serving a
// request made on another node, with the CallPath of the caller's context
// there. Requests made along it to a part in path fail at once with
// ErrCallCycle.
func WithCallPath(ctx context.Context, path []Path) context.Context {
	var l *callLink
	for _, p := range path {
		l = &callLink{path: p, prev: l}
	}
	return context.WithValue(ctx, callKey{}, l)
}

// callContext returns the context of c's handler: the request's, carrying
// c's part as the innermost link of its call path. It is made on first use
// (most handlers never ask) and is the request's own once c has ended.
func (c *Context) callContext() context.Context {
	c.callOnce.Do(func() {
		c.call = &callLink{path: c.part.path, prev: callsOf(c.ctx)}
		c.callCtx = context.WithValue(c.ctx, callKey{}, c.call)
	})
	return c.callCtx
}

// endCall marks c's link ended: a goroutine of the handler still using its
// context after it returned does not find its part waiting.
func (c *Context) endCall() {
	c.callOnce.Do(func() { c.callCtx = c.ctx })
	if c.call != nil {
		c.call.ended.Store(true)
	}
}

// A callCycleError is the error of a request, restart or drain that would
// wait on a part already waiting along its own call path. It wraps
// ErrCallCycle, and ErrCallToSelf when the request is for the calling part
// itself.
type callCycleError struct {
	cycle []Path // from the part waited on to the caller, then the target
	op    string // "request", "restart" or "drain"
	why   string // when the part waited on is not the target: how the op waits on it
}

func (e *callCycleError) Error() string {
	var b strings.Builder
	b.WriteString("actors: ")
	if e.self() {
		b.WriteString("call to self: ")
	} else {
		b.WriteString("call cycle: ")
	}
	for i, p := range e.cycle {
		if i > 0 {
			b.WriteString(" -> ")
			if i == len(e.cycle)-1 && e.op != "request" {
				b.WriteString(e.op + " ")
			}
		}
		b.WriteString(p.String())
	}
	if e.why != "" {
		b.WriteString(" (" + e.why + ")")
	}
	return b.String()
}

// self reports whether the request is for the calling part itself.
func (e *callCycleError) self() bool {
	n := len(e.cycle)
	return e.op == "request" && n == 2 && e.cycle[0] == e.cycle[1]
}

// Unwrap returns ErrCallCycle, and ErrCallToSelf for a call to self.
func (e *callCycleError) Unwrap() []error {
	if e.self() {
		return []error{ErrCallCycle, ErrCallToSelf}
	}
	return []error{ErrCallCycle}
}

// checkRequest fails a request for the part at to, made along ctx's call
// path, when that part is waiting along it.
func checkRequest(ctx context.Context, to Path) error {
	l := callsOf(ctx)
	if w := l.waiting(to); w != nil {
		return &callCycleError{cycle: append(l.from(w), to), op: "request"}
	}
	return nil
}

// checkRoute fails a request for the part at to, made along ctx's call
// path, that would wait in the mailbox of via, an active ancestor that
// activates to, when via is waiting along that path.
func checkRoute(ctx context.Context, to, via Path) error {
	l := callsOf(ctx)
	if w := l.waiting(via); w != nil {
		return &callCycleError{cycle: append(l.from(w), to), op: "request",
			why: fmt.Sprintf("%s is not active, and %s, which activates it, waits on this call", to, via)}
	}
	return nil
}

// checkRestart fails a restart of the part at p, asked along ctx's call
// path, when p's parent, which restarts it, waits along that path.
func checkRestart(ctx context.Context, p Path) error {
	l := callsOf(ctx)
	if w := l.waiting(p.Parent()); w != nil {
		return &callCycleError{cycle: append(l.from(w), p), op: "restart",
			why: fmt.Sprintf("%s, which restarts it, waits on this call", w.path)}
	}
	return nil
}

// checkDrain fails a drain of the subtree at p, asked along ctx's call
// path, when a part it waits for waits along that path: p's parent (which
// activates p) or a part of the subtree (which must stop).
func checkDrain(ctx context.Context, p Path) error {
	l := callsOf(ctx)
	for w := l; w != nil && !w.ended.Load(); w = w.prev {
		switch {
		case w.path == p.Parent():
			return &callCycleError{cycle: append(l.from(w), p), op: "drain",
				why: fmt.Sprintf("%s, which activates it, waits on this call", w.path)}
		case p.Contains(w.path):
			return &callCycleError{cycle: append(l.from(w), p), op: "drain",
				why: fmt.Sprintf("%s, which must stop, waits on this call", w.path)}
		}
	}
	return nil
}
