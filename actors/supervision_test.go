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
	in := &incarnations{n: map[string]int{}}
	h := actortest.New(t, actors.Options{Kinds: []actors.Kind{
		in.kind("parent", "s", spec, supervisor.Permanent),
		in.kind("child", "s/*", supervisor.Spec{}, rt),
	}})
	for i, c := range []string{"s", "s/a", "s/b", "s/c"} {
		h.MustRequest(c, add{i})
	}
	return h, in
}

func expectIncarnations(t *testing.T, in *incarnations, want map[string]int) {
	t.Helper()
	actortest.Eventually(t, func() bool {
		for p, n := range want {
			if in.get(p) != n {
				return false
			}
		}
		return true
	})
	// And nothing more happens: give stray restarts a moment to show.
	time.Sleep(50 * time.Millisecond)
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
			expectIncarnations(t, in, tc.want)
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
	expectIncarnations(t, in, map[string]int{"s": 1, "s/a": 1, "s/b": 1, "s/c": 1})
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
	expectIncarnations(t, in, map[string]int{"s": 1, "s/a": 2})
	panicIn(t, h, "s/a") // the second exceeds: escalate
	actortest.Eventually(t, func() bool { return h.System().Stats().Escalations == 1 })
	expectIncarnations(t, in, map[string]int{"s": 2, "s/a": 2, "s/b": 1, "s/c": 1})
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
	h, in := supervised(t, supervisor.Spec{
		Strategy: supervisor.OneForOne, Intensity: 5, Period: time.Minute,
		Backoff: supervisor.Backoff{Initial: delay, Max: delay, Multiplier: 1},
	}, supervisor.Permanent)
	start := time.Now()
	panicIn(t, h, "s/a")
	// The message after the panic waits in the suspended mailbox until
	// the delayed restart.
	if got := counter(t, h, "s/a"); got != 1 {
		t.Fatalf("s/a = %d, want 1", got)
	}
	if elapsed := time.Since(start); elapsed < delay {
		t.Fatalf("restarted after %v, before the %v backoff", elapsed, delay)
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
