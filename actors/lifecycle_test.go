package actors_test

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
	"github.com/fractalrt/fractal/supervisor"
)

// lcExit asks a lifecycle test's part to end normally (Context.Stop).
type lcExit struct{}

// events records the opening and closing of part files, in order.
type events struct {
	mu  sync.Mutex
	log []string
}

func (e *events) add(event string, p actors.Path) {
	e.mu.Lock()
	e.log = append(e.log, event+" "+p.Name())
	e.mu.Unlock()
}

// since returns the events recorded after the first n.
func (e *events) since(n int) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.log[n:])
}

func (e *events) len() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.log)
}

// waitEvents waits until the events after the first n are want (in
// order), failing when they go elsewhere or take longer than a minute.
func (e *events) wait(t *testing.T, n int, want ...string) {
	t.Helper()
	var got []string
	done := actortest.Poll(time.Minute, time.Millisecond, func() bool {
		got = e.since(n)
		if len(got) > len(want) || !slices.Equal(got, want[:len(got)]) {
			t.Fatalf("events %v, want %v", got, want)
		}
		return len(got) == len(want)
	})
	if !done {
		t.Fatalf("events %v after a minute, want %v", got, want)
	}
}

// lcHandler is counterHandler, and lcExit.
func lcHandler(c *actors.Context, msg any) (any, error) {
	if _, ok := msg.(lcExit); ok {
		c.Stop()
		return "bye", nil
	}
	return counterHandler(c, msg)
}

// lifecycleSystem opens a system whose parent "g" supervises its children
// "g/*" with spec; the children have restart type rt.
func lifecycleSystem(t *testing.T, spec supervisor.Spec, rt supervisor.RestartType) (*actortest.Harness, *events) {
	return lifecycleSystemClock(t, spec, rt, nil)
}

// lifecycleSystemClock is lifecycleSystem on clk (nil: the wall clock).
func lifecycleSystemClock(t *testing.T, spec supervisor.Spec, rt supervisor.RestartType, clk actors.Clock) (*actortest.Harness, *events) {
	t.Helper()
	ev := &events{}
	h := actortest.New(t, actors.Options{Durability: actors.ProcessCrash, Clock: clk, Kinds: []actors.Kind{
		{Name: "group", Pattern: "g", Handler: actors.HandlerFunc(lcHandler), Migrations: counterMigrations, Supervision: spec},
		{Name: "member", Pattern: "g/*", Handler: actors.HandlerFunc(lcHandler), Migrations: counterMigrations, Restart: rt},
	}})
	actors.SetTrace(h.System(), ev.add) // before any part runs
	return h, ev
}

// TestGroupRestartOrder: a failure in a one_for_all or rest_for_one group
// stops the group's children one after the other in reverse start order
// (the failed one first: it is gone already), each stop complete (its file
// closed) before the next begins, then starts them one after the other in
// start order, each activation complete before the next. 20 runs each.
func TestGroupRestartOrder(t *testing.T) {
	for _, tc := range []struct {
		strategy supervisor.Strategy
		want     []string // after g/b fails, with g/a, g/b, g/c started in that order
	}{
		{supervisor.OneForAll, []string{"close b", "close c", "close a", "open a", "open b", "open c"}},
		{supervisor.RestForOne, []string{"close b", "close c", "open b", "open c"}},
	} {
		t.Run(tc.strategy.String(), func(t *testing.T) {
			for run := range 20 {
				spec := supervisor.Spec{Strategy: tc.strategy, Intensity: 100, Period: time.Minute}
				h, ev := lifecycleSystem(t, spec, supervisor.Permanent)
				for _, c := range []string{"g", "g/a", "g/b", "g/c"} {
					h.MustRequest(c, add{1})
				}
				n := ev.len()
				if _, err := h.Request("g/b", addPanic{}); !errors.Is(err, actors.ErrPanic) {
					t.Fatalf("run %d: panic answered %v", run, err)
				}
				ev.wait(t, n, tc.want...)
				// Every member serves again, from its file.
				for _, c := range []string{"g/a", "g/b", "g/c"} {
					if v := h.MustRequest(c, add{1}); v != 2 {
						t.Fatalf("run %d: %s counts %v after the restart, want 2", run, c, v)
					}
				}
				if got := ev.since(n); len(got) != len(tc.want) {
					t.Fatalf("run %d: events %v after serving again, want only %v", run, got, tc.want)
				}
			}
		})
	}
}

// TestGroupRestartHoldsMessages: messages sent to the group's members while
// the restart runs (one_for_all, with a backoff delay on a fake clock, so
// that they are sent between the stops and the starts) are handled by the
// new incarnations, each once.
func TestGroupRestartHoldsMessages(t *testing.T) {
	spec := supervisor.Spec{Strategy: supervisor.OneForAll, Intensity: 100, Period: time.Hour,
		Backoff: supervisor.Backoff{Initial: time.Minute, Max: time.Minute, Multiplier: 1}}
	clk := actortest.NewClock(time.Time{})
	h, ev := lifecycleSystemClock(t, spec, supervisor.Permanent, clk)
	for _, c := range []string{"g", "g/a", "g/b", "g/c"} {
		h.MustRequest(c, add{1})
	}
	n := ev.len()
	if _, err := h.Request("g/b", addPanic{}); !errors.Is(err, actors.ErrPanic) {
		t.Fatalf("panic answered %v", err)
	}
	ev.wait(t, n, "close b", "close c", "close a")
	clk.WaitTimerAt(t, time.Minute) // the plan waits for its delay
	for _, c := range []string{"g/a", "g/b", "g/c"} {
		h.Send(c, add{1})
	}
	if got := ev.since(n); len(got) != 3 {
		t.Fatalf("events %v before the delay passed", got)
	}
	clk.Advance(time.Minute)
	ev.wait(t, n, "close b", "close c", "close a", "open a", "open b", "open c")
	for _, c := range []string{"g/a", "g/b", "g/c"} {
		if v := h.MustRequest(c, get{}); v != 2 {
			t.Fatalf("%s counts %v, want 2: the message sent during the restart handled once", c, v)
		}
	}
}

// TestNormalExit: Context.Stop ends a part after its message commits. A
// transient or temporary part is not restarted (its file closes and stays
// closed) and its next message activates it again; a permanent one is
// restarted at once. Messages that arrive meanwhile are not lost.
func TestNormalExit(t *testing.T) {
	for _, tc := range []struct {
		rt   supervisor.RestartType
		want []string
	}{
		{supervisor.Transient, []string{"close a"}},
		{supervisor.Temporary, []string{"close a"}},
		{supervisor.Permanent, []string{"close a", "open a"}},
	} {
		t.Run(tc.rt.String(), func(t *testing.T) {
			h, ev := lifecycleSystem(t, supervisor.Spec{}, tc.rt)
			h.MustRequest("g/a", add{1})
			n := ev.len()
			if v := h.MustRequest("g/a", lcExit{}); v != "bye" {
				t.Fatalf("exit answered %v", v)
			}
			ev.wait(t, n, tc.want...)
			if tc.rt != supervisor.Permanent {
				actortest.Eventually(t, func() bool { return !h.System().Active("g/a") })
				if got := ev.since(n); strings.Join(got, ",") != "close a" {
					t.Fatalf("events %v: a %s part was started again after a normal exit", got, tc.rt)
				}
			}
			// Its state is whole, and its next message is served.
			if v := h.MustRequest("g/a", add{1}); v != 2 {
				t.Fatalf("g/a counts %v after its exit, want 2", v)
			}
			if h.System().Stats().Restarts != map[bool]uint64{true: 1, false: 0}[tc.rt == supervisor.Permanent] {
				t.Fatalf("%d restarts counted", h.System().Stats().Restarts)
			}
		})
	}
}

// TestNormalExitKeepsLaterMessages: messages queued behind the one that
// stops the part are handled once, by its next incarnation.
func TestNormalExitKeepsLaterMessages(t *testing.T) {
	h, _ := lifecycleSystem(t, supervisor.Spec{}, supervisor.Transient)
	h.MustRequest("g/a", add{1})
	errs := make(chan error, 21)
	go func() {
		_, err := h.Request("g/a", lcExit{})
		errs <- err
	}()
	for range 20 {
		go func() {
			_, err := h.Request("g/a", add{1})
			errs <- err
		}()
	}
	for range 21 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if v := h.MustRequest("g/a", get{}); v != 21 {
		t.Fatalf("g/a counts %v, want 21: each message once", v)
	}
}

// TestTemporaryFailureNotRestarted: a temporary part that fails is stopped,
// not restarted, and activated again by its next message.
func TestTemporaryFailureNotRestarted(t *testing.T) {
	h, ev := lifecycleSystem(t, supervisor.Spec{Strategy: supervisor.OneForOne, Intensity: 100, Period: time.Minute}, supervisor.Temporary)
	h.MustRequest("g/a", add{1})
	n := ev.len()
	if _, err := h.Request("g/a", addPanic{}); !errors.Is(err, actors.ErrPanic) {
		t.Fatalf("panic answered %v", err)
	}
	ev.wait(t, n, "close a")
	actortest.Eventually(t, func() bool { return !h.System().Active("g/a") })
	if got := ev.since(n); len(got) != 1 || h.System().Stats().Restarts != 0 {
		t.Fatalf("events %v, %d restarts: a temporary part was restarted", got, h.System().Stats().Restarts)
	}
	if v := h.MustRequest("g/a", add{1}); v != 2 {
		t.Fatalf("g/a counts %v, want 2", v)
	}
}
