package actors_test

import (
	"errors"
	"testing"
	"time"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
)

// Messages of the timer kind.
type (
	remind     struct{ after time.Duration } // set a timer that adds 1
	remindFail struct{}                      // set a timer, then fail
	remindMany struct{ n int }               // set n timers of an hour
)

func timerKinds(idle time.Duration) []actors.Kind {
	h := actors.HandlerFunc(func(c *actors.Context, msg any) (any, error) {
		switch m := msg.(type) {
		case remind:
			return nil, c.After(m.after, add{1})
		case remindFail:
			if err := c.After(time.Millisecond, add{1}); err != nil {
				return nil, err
			}
			return nil, errTest
		case remindMany:
			for range m.n {
				if err := c.After(time.Hour, add{1}); err != nil {
					return nil, err
				}
			}
			return nil, nil
		}
		return counterHandler(c, msg)
	})
	return []actors.Kind{
		{Name: "top", Pattern: "t", Handler: h, Migrations: counterMigrations, IdleTimeout: -1},
		{Name: "leaf", Pattern: "t/*", Handler: h, Migrations: counterMigrations, IdleTimeout: idle},
	}
}

// A timer fires when its delay has passed, not before.
func TestTimerFires(t *testing.T) {
	clk := actortest.NewClock(time.Time{})
	h := actortest.New(t, actors.Options{Kinds: timerKinds(-1), Clock: clk})
	h.MustRequest("t/a", remind{after: 10 * time.Millisecond})
	clk.WaitTimer(t, 10*time.Millisecond)
	clk.Advance(10*time.Millisecond - time.Nanosecond)
	if got := counter(t, h, "t/a"); got != 0 {
		t.Fatalf("counter %d before the timer was due", got)
	}
	// Advance posts what fell due before it returns: the get below is
	// handled after it.
	clk.Advance(time.Nanosecond)
	if got := counter(t, h, "t/a"); got != 1 {
		t.Fatalf("counter %d once the timer was due, want 1", got)
	}
}

func TestTimerOfARolledBackHandlerNeverFires(t *testing.T) {
	clk := actortest.NewClock(time.Time{})
	h := actortest.New(t, actors.Options{Kinds: timerKinds(-1), Clock: clk})
	if _, err := h.Request("t/a", remindFail{}); !errors.Is(err, errTest) {
		t.Fatal(err)
	}
	h.MustRequest("t/a", remind{after: 30 * time.Millisecond}) // a later one that does fire
	clk.WaitTimer(t, 30*time.Millisecond)
	// Past both: the rolled-back handler's timer, had it been set, would
	// have fired first, and both messages would be handled before the get.
	clk.Advance(time.Second)
	if got := counter(t, h, "t/a"); got != 1 {
		t.Fatalf("counter %d, want 1: only the committed handler's timer fires", got)
	}
}

// A plain timer dies with its part's activation: it neither fires into a
// passivated part nor reactivates it.
func TestTimerCancelledByPassivation(t *testing.T) {
	clk := actortest.NewClock(time.Time{})
	h := actortest.New(t, actors.Options{Kinds: timerKinds(10 * time.Millisecond), Clock: clk})
	h.MustRequest("t/a", remind{after: 150 * time.Millisecond})
	// The passivator's first tick (a quarter of the idle timeout, at least
	// 10 ms) finds t/a idle for its whole timeout.
	clk.WaitTimer(t, 10*time.Millisecond)
	clk.Advance(10 * time.Millisecond)
	actortest.Eventually(t, func() bool { return !h.System().Active("t/a") })
	clk.Advance(time.Second) // far past the timer's due time
	if h.System().Active("t/a") {
		t.Fatal("a cancelled timer reactivated its part")
	}
	// Had the timer posted its message, it would be handled before this
	// get, which activates t/a again.
	if n := counter(t, h, "t/a"); n != 0 {
		t.Fatalf("counter %d: a timer fired after passivation", n)
	}
}

func TestTimersBounded(t *testing.T) {
	h := actortest.New(t, actors.Options{Kinds: timerKinds(-1)})
	h.MustRequest("t/a", remindMany{n: actors.MaxTimers - 1})
	if _, err := h.Request("t/a", remindMany{n: 2}); !errors.Is(err, actors.ErrTooManyTimers) {
		t.Fatalf("over the bound: %v, want ErrTooManyTimers", err)
	}
}
