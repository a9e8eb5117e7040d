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

func TestTimerFires(t *testing.T) {
	h := actortest.New(t, actors.Options{Kinds: timerKinds(-1)})
	h.MustRequest("t/a", remind{after: 10 * time.Millisecond})
	actortest.Eventually(t, func() bool { return counter(t, h, "t/a") == 1 })
}

func TestTimerOfARolledBackHandlerNeverFires(t *testing.T) {
	h := actortest.New(t, actors.Options{Kinds: timerKinds(-1)})
	if _, err := h.Request("t/a", remindFail{}); !errors.Is(err, errTest) {
		t.Fatal(err)
	}
	h.MustRequest("t/a", remind{after: 30 * time.Millisecond}) // a later one that does fire
	actortest.Eventually(t, func() bool { return counter(t, h, "t/a") == 1 })
	time.Sleep(50 * time.Millisecond)
	if got := counter(t, h, "t/a"); got != 1 {
		t.Fatalf("counter %d: the rolled-back handler's timer fired", got)
	}
}

// A plain timer dies with its part's activation: it neither fires into a
// passivated part nor reactivates it.
func TestTimerCancelledByPassivation(t *testing.T) {
	h := actortest.New(t, actors.Options{Kinds: timerKinds(10 * time.Millisecond)})
	h.MustRequest("t/a", remind{after: 150 * time.Millisecond})
	actortest.Eventually(t, func() bool { return !h.System().Active("t/a") })
	time.Sleep(250 * time.Millisecond)
	if h.System().Active("t/a") {
		t.Fatal("a cancelled timer reactivated its part")
	}
	h.Close()
	if n := h.QueryInt("t/a", "SELECT n FROM counter"); n != 0 {
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
