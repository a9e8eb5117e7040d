package actortest

import (
	"container/heap"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fractalrt/fractal/actors"
)

// A Clock is a fake actors.Clock for tests: its time moves only when the
// test calls Advance, and the timers armed on it (Context.After, alarms,
// delivery retries, restart backoff, passivation) fire then, in the order
// of their due times. Pass it as actors.Options.Clock:
//
//	clk := actortest.NewClock(time.Time{})
//	h := actortest.New(t, actors.Options{Kinds: kinds, Clock: clk})
//
// Advance runs the due callbacks one after another on its caller's
// goroutine, each with Now at its due time, and returns once they have all
// run, timers armed by those callbacks and due within the advance
// included. The runtime's callbacks only post a message to a part or wake
// one of its goroutines, so when Advance returns every message a due timer
// sends is in its part's mailbox: a request to that part made afterwards
// is handled after it, and a test can check the outcome at once instead of
// polling. (Running each callback on a goroutine of its own, as
// time.AfterFunc does, would leave their order and their completion to the
// scheduler.) A callback that AfterFunc arms with d <= 0 still runs at
// once, on a goroutine of its own, as its caller may hold a lock that the
// callback takes.
//
// What the runtime does in reaction to a timer happens on its own
// goroutines after Advance returns, and it may arm the next timer only
// then: a test that advances again waits for that timer first with
// WaitTimer.
//
// A Clock is safe for concurrent use; Advance calls are serialized. A
// callback must not call Advance.
type Clock struct {
	advancing sync.Mutex // held by Advance: one advance at a time

	mu     sync.Mutex
	now    time.Time
	timers timerHeap     // pending, earliest first; as many as the runtime arms (it bounds its own)
	seq    uint64        // arming order, which breaks ties of due times
	armed  chan struct{} // closed (and replaced) when a timer is armed
}

// Epoch is the time a Clock made with a zero start begins at.
var Epoch = time.Date(2030, time.January, 1, 0, 0, 0, 0, time.UTC)

// NewClock returns a Clock set to start, or to Epoch when start is zero.
func NewClock(start time.Time) *Clock {
	if start.IsZero() {
		start = Epoch
	}
	return &Clock{now: start, armed: make(chan struct{})}
}

// Now returns the Clock's current time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc arranges for f to run when the Clock has been advanced by d
// (at once, on a goroutine of its own, when d <= 0).
func (c *Clock) AfterFunc(d time.Duration, f func()) actors.Timer {
	if d <= 0 {
		go f()
		return firedTimer{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	ft := &fakeTimer{c: c, due: c.now.Add(d), seq: c.seq, f: f, index: -1}
	heap.Push(&c.timers, ft)
	close(c.armed)
	c.armed = make(chan struct{})
	return ft
}

// Advance moves the Clock forward by d (nothing for d <= 0), running the
// callbacks of the timers that become due, in the order of their due
// times (then of their arming), each with Now at its due time. It returns
// once they have run.
func (c *Clock) Advance(d time.Duration) {
	c.advancing.Lock()
	defer c.advancing.Unlock()
	c.mu.Lock()
	target := c.now
	if d > 0 {
		target = target.Add(d)
	}
	c.mu.Unlock()
	for {
		c.mu.Lock()
		if len(c.timers) == 0 || c.timers[0].due.After(target) {
			c.now = target
			c.mu.Unlock()
			return
		}
		ft := heap.Pop(&c.timers).(*fakeTimer)
		if ft.due.After(c.now) {
			c.now = ft.due
		}
		c.mu.Unlock()
		ft.f()
	}
}

// AdvanceUntil advances the Clock by step, again and again, until cond
// returns true, failing the test if it has not within Timeout (of the wall
// clock). It drives what takes several timers in turn, each armed by the
// runtime once the previous one fired (an alarm's retries with backoff,
// the passivator's ticks), where the test cares that it happens rather
// than when: a test of when advances to just before and checks. It calls
// cond every 2 ms of the wall clock.
func (c *Clock) AdvanceUntil(t testing.TB, step time.Duration, cond func() bool) {
	t.Helper()
	if !Poll(Timeout, 2*time.Millisecond, func() bool { c.Advance(step); return cond() }) {
		t.Fatalf("actortest: condition not met within %v, advancing %v at a time to %s", Timeout, step, c)
	}
}

// Pending returns the number of timers armed and neither fired nor
// stopped.
func (c *Clock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// Next returns how long from Now the earliest pending timer is due, and
// false when no timer is pending.
func (c *Clock) Next() (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.timers) == 0 {
		return 0, false
	}
	return c.timers[0].due.Sub(c.now), true
}

// WaitTimer waits until a timer due within d of Now is pending, failing
// the test if none is within Timeout (of the wall clock). A test calls it
// before Advance when the runtime arms the timer it means to fire on a
// goroutine of its own: a part's timer once the handler that set it has
// committed, the alarm waker's after an alarm was set, the passivator's
// after its previous tick.
func (c *Clock) WaitTimer(t testing.TB, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	if err := c.BlockUntilDue(ctx, d); err != nil {
		t.Fatalf("actortest: %v", err)
	}
}

// WaitTimerAt waits until a timer due exactly d after Now is pending,
// failing the test if none is within Timeout (of the wall clock). Unlike
// WaitTimer, it is not satisfied by the runtime's own periodic timers (the
// passivator's and the alarm waker's ticks, due within a second): use it
// to wait for a timer of a known delay longer than those.
func (c *Clock) WaitTimerAt(t testing.TB, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	if err := c.BlockUntilDueAt(ctx, d); err != nil {
		t.Fatalf("actortest: %v", err)
	}
}

// BlockUntilDue is WaitTimer for code without a testing.TB: it returns
// once a timer due within d of Now is pending, or an error when ctx ends
// first.
func (c *Clock) BlockUntilDue(ctx context.Context, d time.Duration) error {
	return c.blockUntil(ctx, fmt.Sprintf("due within %v", d), func(due, now time.Time) bool { return !due.After(now.Add(d)) })
}

// BlockUntilDueAt is WaitTimerAt for code without a testing.TB: it returns
// once a timer due exactly d after Now is pending, or an error when ctx
// ends first.
func (c *Clock) BlockUntilDueAt(ctx context.Context, d time.Duration) error {
	return c.blockUntil(ctx, fmt.Sprintf("due at %v", d), func(due, now time.Time) bool { return due.Equal(now.Add(d)) })
}

// blockUntil returns once a pending timer's due time satisfies match.
func (c *Clock) blockUntil(ctx context.Context, what string, match func(due, now time.Time) bool) error {
	for {
		c.mu.Lock()
		due := false
		for _, ft := range c.timers {
			if match(ft.due, c.now) {
				due = true
				break
			}
		}
		armed, n := c.armed, len(c.timers)
		c.mu.Unlock()
		if due {
			return nil
		}
		select {
		case <-armed:
		case <-ctx.Done():
			return fmt.Errorf("no timer %s armed (%d pending): %w", what, n, ctx.Err())
		}
	}
}

// String describes the Clock for test failures: its time and its pending
// timers.
func (c *Clock) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("actortest.Clock(%s, %d pending)", c.now.Format(time.RFC3339Nano), len(c.timers))
}

// A fakeTimer is a pending call of a Clock.
type fakeTimer struct {
	c     *Clock
	due   time.Time
	seq   uint64
	f     func()
	index int // in c.timers; -1 once fired or stopped
}

// Stop cancels the call; it reports whether it did.
func (ft *fakeTimer) Stop() bool {
	ft.c.mu.Lock()
	defer ft.c.mu.Unlock()
	if ft.index < 0 {
		return false
	}
	heap.Remove(&ft.c.timers, ft.index)
	return true
}

// firedTimer is the Timer of a call that ran at once.
type firedTimer struct{}

func (firedTimer) Stop() bool { return false }

// timerHeap orders pending timers by due time, then by arming order.
type timerHeap []*fakeTimer

func (h timerHeap) Len() int { return len(h) }

func (h timerHeap) Less(i, j int) bool {
	if !h[i].due.Equal(h[j].due) {
		return h[i].due.Before(h[j].due)
	}
	return h[i].seq < h[j].seq
}

func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}

func (h *timerHeap) Push(x any) {
	ft := x.(*fakeTimer)
	ft.index = len(*h)
	*h = append(*h, ft)
}

func (h *timerHeap) Pop() any {
	old := *h
	ft := old[len(old)-1]
	old[len(old)-1] = nil
	ft.index = -1
	*h = old[:len(old)-1]
	return ft
}

var _ actors.Clock = (*Clock)(nil)
