package actors

import (
	"context"
	"sync"
)

// inflight counts the messages accepted and not yet finished, so that Close
// can wait for them. Messages sent by handlers are counted before the
// message that sent them finishes, so the count cannot reach zero while
// work that was accepted is still under way.
type inflight struct {
	mu      sync.Mutex
	n       int
	closing bool
	zero    chan struct{} // closed once n is zero while closing
	zeroed  bool          // zero is closed
}

func (f *inflight) init() { f.zero = make(chan struct{}) }

// begin counts a message from outside; it fails once Close has begun.
func (f *inflight) begin() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closing {
		return false
	}
	f.n++
	return true
}

// add counts a message sent by a handler, which is accepted while closing.
func (f *inflight) add() {
	f.mu.Lock()
	f.n++
	f.mu.Unlock()
}

func (f *inflight) end() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n--
	f.signal()
}

// signal closes zero when closing and nothing is in flight; f.mu is held.
func (f *inflight) signal() {
	if f.n == 0 && f.closing && !f.zeroed {
		f.zeroed = true
		close(f.zero)
	}
}

func (f *inflight) drain(ctx context.Context) error {
	f.mu.Lock()
	f.closing = true
	f.signal()
	f.mu.Unlock()
	select {
	case <-f.zero:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
