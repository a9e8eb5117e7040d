package actors_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
	"github.com/fractalrt/fractal/supervisor"
)

// incarnations counts, per path, how many times a part's handler was made:
// once per activation and once per restart.
type incarnations struct {
	mu sync.Mutex
	n  map[string]int
}

func (in *incarnations) get(path string) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.n[path]
}

func (in *incarnations) kind(name, pattern string, spec supervisor.Spec, rt supervisor.RestartType) actors.Kind {
	return actors.Kind{
		Name: name, Pattern: pattern, Migrations: counterMigrations,
		Supervision: spec, Restart: rt,
		New: func(p actors.Path) actors.Handler {
			in.mu.Lock()
			in.n[p.String()]++
			in.mu.Unlock()
			return actors.HandlerFunc(counterHandler)
		},
	}
}

// supervised starts a parent "s" supervising its children with spec, the
// children of restart type rt, and activates s/a, s/b, s/c in that order.
func supervised(t *testing.T, spec supervisor.Spec, rt supervisor.RestartType) (*actortest.Harness, *incarnations) {
	return supervisedWith(t, actors.Options{}, spec, rt)
}

// supervisedWith is supervised on a System with opts.
func supervisedWith(t *testing.T, opts actors.Options, spec supervisor.Spec, rt supervisor.RestartType) (*actortest.Harness, *incarnations) {
	in := &incarnations{n: map[string]int{}}
	opts.Kinds = []actors.Kind{
		in.kind("parent", "s", spec, supervisor.Permanent),
		in.kind("child", "s/*", supervisor.Spec{}, rt),
	}
	h := actortest.New(t, opts)
	for i, c := range []string{"s", "s/a", "s/b", "s/c"} {
		h.MustRequest(c, add{i})
	}
	return h, in
}

// expectIncarnations waits until the parts in want were made as many
// times as it says, then checks that nothing more happens: the parent's
// decisions on the failures so far are made on its goroutine, before it
// handles a message sent now, and restarts they post reach a child before
// a message sent after them.
func expectIncarnations(t *testing.T, h *actortest.Harness, in *incarnations, want map[string]int) {
	t.Helper()
	actortest.Eventually(t, func() bool {
		for p, n := range want {
			if in.get(p) != n {
				return false
			}
		}
		return true
	})
	for _, p := range []string{"s", "s/a", "s/b", "s/c"} {
		if _, ok := want[p]; ok && h.System().Active(p) {
			counter(t, h, p)
		}
	}
	for p, n := range want {
		if got := in.get(p); got != n {
			t.Errorf("%s made %d times, want %d", p, got, n)
		}
	}
}

func panicIn(t *testing.T, h *actortest.Harness, path string) {
	t.Helper()
	if _, err := h.Request(path, addPanic{100}); !errors.Is(err, actors.ErrPanic) {
		t.Fatalf("panic in %s: %v", path, err)
	}
}

func TestSupervisionStrategies(t *testing.T) {
	cases := []struct {
		strategy supervisor.Strategy
		want     map[string]int // after a panic in s/b
	}{
		{supervisor.OneForOne, map[string]int{"s": 1, "s/a": 1, "s/b": 2, "s/c": 1}},
		{supervisor.OneForAll, map[string]int{"s": 1, "s/a": 2, "s/b": 2, "s/c": 2}},
		{supervisor.RestForOne, map[string]int{"s": 1, "s/a": 1, "s/b": 2, "s/c": 2}},
	}
	for _, tc := range cases {
		t.Run(tc.strategy.String(), func(t *testing.T) {
			h, in := supervised(t, supervisor.Spec{Strategy: tc.strategy, Intensity: 5, Period: time.Minute}, supervisor.Permanent)
			panicIn(t, h, "s/b")
			expectIncarnations(t, h, in, tc.want)
			// Nothing acknowledged was lost, anywhere.
			for i, c := range []string{"s", "s/a", "s/b", "s/c"} {
				if got := counter(t, h, c); got != i {
					t.Errorf("%s = %d after the restarts, want %d", c, got, i)
				}
			}
		})
	}
}

func TestTemporaryChildIsNotRestarted(t *testing.T) {
	h, in := supervised(t, supervisor.Spec{Strategy: supervisor.OneForAll, Intensity: 5, Period: time.Minute}, supervisor.Temporary)
	panicIn(t, h, "s/b")
	actortest.Eventually(t, func() bool { return !h.System().Active("s/b") })
	// one_for_all does not apply to a child that is not restarted.
	expectIncarnations(t, h, in, map[string]int{"s": 1, "s/a": 1, "s/b": 1, "s/c": 1})
	// Its next message activates it again, from its file.
	if got := counter(t, h, "s/b"); got != 2 {
		t.Fatalf("s/b = %d, want 2", got)
	}
	if in.get("s/b") != 2 {
		t.Fatalf("s/b made %d times, want 2", in.get("s/b"))
	}
}

// Beyond the intensity the parent gives up: it stops its children and fails
// itself, and its own parent restarts it.
func TestIntensityExceededEscalates(t *testing.T) {
	h, in := supervised(t, supervisor.Spec{Strategy: supervisor.OneForOne, Intensity: 1, Period: time.Minute}, supervisor.Permanent)
	panicIn(t, h, "s/a") // restarted: 1 restart in the period
	expectIncarnations(t, h, in, map[string]int{"s": 1, "s/a": 2})
	panicIn(t, h, "s/a") // the second exceeds: escalate
	actortest.Eventually(t, func() bool { return h.System().Stats().Escalations == 1 })
	expectIncarnations(t, h, in, map[string]int{"s": 2, "s/a": 2, "s/b": 1, "s/c": 1})
	for _, c := range []string{"s/a", "s/b", "s/c"} {
		if h.System().Active(c) {
			t.Errorf("%s still active after its parent escalated", c)
		}
	}
	for i, c := range []string{"s", "s/a", "s/b", "s/c"} {
		if got := counter(t, h, c); got != i {
			t.Errorf("%s = %d after the escalation, want %d", c, got, i)
		}
	}
}

func TestRestartBackoffDelaysTheRestart(t *testing.T) {
	const delay = 300 * time.Millisecond
	clk := actortest.NewClock(time.Time{})
	h, in := supervisedWith(t, actors.Options{Clock: clk}, supervisor.Spec{
		Strategy: supervisor.OneForOne, Intensity: 5, Period: time.Minute,
		Backoff: supervisor.Backoff{Initial: delay, Max: delay, Multiplier: 1},
	}, supervisor.Permanent)
	panicIn(t, h, "s/a")
	// The message after the panic waits in the suspended mailbox until
	// the delayed restart.
	type result struct {
		v   any
		err error
	}
	got := make(chan result, 1)
	go func() {
		v, err := h.Request("s/a", get{})
		got <- result{v, err}
	}()
	clk.WaitTimer(t, delay) // the parent's decision: restart after the backoff
	clk.Advance(delay - time.Nanosecond)
	if n := in.get("s/a"); n != 1 {
		t.Fatalf("s/a made %d times before the %v backoff passed, want 1", n, delay)
	}
	select {
	case r := <-got:
		t.Fatalf("s/a answered (%v, %v) while its restart waited for the backoff", r.v, r.err)
	default:
	}
	clk.Advance(time.Nanosecond)
	if r := <-got; r.err != nil || r.v != 1 {
		t.Fatalf("s/a = %v, %v; want 1", r.v, r.err)
	}
	if in.get("s/a") != 2 {
		t.Fatalf("s/a made %d times, want 2", in.get("s/a"))
	}
}

func TestInvalidSupervisionRefused(t *testing.T) {
	h := actors.HandlerFunc(counterHandler)
	for _, k := range []actors.Kind{
		{Name: "a", Pattern: "a", Handler: h, Supervision: supervisor.Spec{Intensity: -1}},
		{Name: "a", Pattern: "a", Handler: h, Restart: supervisor.RestartType(9)},
	} {
		_, err := actors.Open(t.Context(), t.TempDir(), actors.Options{Kinds: []actors.Kind{k}})
		if !errors.Is(err, actors.ErrInvalidTree) {
			t.Errorf("%v: %v, want ErrInvalidTree", k, err)
		}
	}
}
