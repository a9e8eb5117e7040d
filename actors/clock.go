package actors

import "time"

// A Clock tells the runtime the time and runs its timers: batch bounds,
// Context.After, alarms, delivery retries, restart backoff and
// passivation all go through the System's Clock (Options.Clock), so that a
// test can drive them with a fake clock (actortest.Clock) instead of
// sleeping.
//
// A Clock must be safe for concurrent use. AfterFunc's f runs on another
// goroutine than AfterFunc's caller (the wall clock: one of its own;
// actortest.Clock: the goroutine that advances it) and must not block for
// long: the runtime's callbacks only post a message to a part or signal a
// channel.
type Clock interface {
	// Now returns the current time.
	Now() time.Time

	// AfterFunc arranges for f to run once d has passed (at once for
	// d <= 0, still on another goroutine) and returns a Timer that can
	// cancel it.
	AfterFunc(d time.Duration, f func()) Timer
}

// A Timer is a pending call arranged by Clock.AfterFunc.
type Timer interface {
	// Stop cancels the call; it reports whether it did (false when f has
	// run or is running, or the Timer was stopped already).
	Stop() bool
}

// realClock is the wall clock: the default Clock.
type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// Now returns the time on the System's Clock (Options.Clock). A handler
// that works out a due time, for SetAlarm or for its own records, reads it
// here rather than from time.Now, so that a test driving a fake clock
// controls it.
func (c *Context) Now() time.Time { return c.part.sys.clock.Now() }

// since returns the time elapsed on s's clock since t.
func (s *System) since(t time.Time) time.Duration { return s.clock.Now().Sub(t) }

// after returns a channel that receives once d has passed on s's clock,
// and the Timer that cancels it: the runtime's loops wait on it with their
// other channels.
func (s *System) after(d time.Duration) (<-chan struct{}, Timer) {
	ch := make(chan struct{}, 1)
	return ch, s.clock.AfterFunc(d, func() { ch <- struct{}{} })
}
