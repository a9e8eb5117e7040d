package actors_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
	"github.com/fractalrt/fractal/supervisor"
)

func idleKinds(in *incarnations, parent, child time.Duration) []actors.Kind {
	k := []actors.Kind{
		in.kind("parent", "s", supervisor.Spec{}, supervisor.Permanent),
		in.kind("child", "s/*", supervisor.Spec{}, supervisor.Permanent),
	}
	k[0].IdleTimeout, k[1].IdleTimeout = parent, child
	return k
}

// An idle part is passivated (file closed, actor gone) and its next
// message activates it again from its file.
func TestIdlePartIsPassivated(t *testing.T) {
	in := &incarnations{n: map[string]int{}}
	h := actortest.New(t, actors.Options{Kinds: idleKinds(in, -1, 20*time.Millisecond)})
	h.MustRequest("s/a", add{5})
	// Counted once the part has stopped, a moment after it is gone from
	// the active parts.
	actortest.Eventually(t, func() bool {
		return !h.System().Active("s/a") && h.System().Stats().Passivations == 1
	})
	if got := counter(t, h, "s/a"); got != 5 {
		t.Fatalf("after reactivation s/a = %d, want 5", got)
	}
	if in.get("s/a") != 2 {
		t.Fatalf("s/a made %d times, want 2 (activation, reactivation)", in.get("s/a"))
	}
}

// A parent with active children is not passivated, however idle.
func TestParentWithActiveChildrenStays(t *testing.T) {
	in := &incarnations{n: map[string]int{}}
	clk := actortest.NewClock(time.Time{})
	h := actortest.New(t, actors.Options{Kinds: idleKinds(in, 10*time.Millisecond, -1), Clock: clk})
	h.MustRequest("s/a", add{1})
	// Twenty idle timeouts of the parent, one pass of the passivator each
	// (every 10 ms): each WaitTimer returns once the passivator took the
	// previous tick, so at least nineteen passes have run.
	for range 20 {
		clk.WaitTimer(t, 10*time.Millisecond)
		clk.Advance(10 * time.Millisecond)
	}
	if !h.System().Active("s") || !h.System().Active("s/a") {
		t.Fatal("a parent with an active child was passivated")
	}
	// A passivation the passes asked for would stop the part before it
	// handles these requests, which would then make it again.
	counter(t, h, "s")
	counter(t, h, "s/a")
	if in.get("s") != 1 || in.get("s/a") != 1 {
		t.Fatalf("s made %d times, s/a %d: a parent with an active child was passivated", in.get("s"), in.get("s/a"))
	}
}

// Messages keep arriving while parts are being passivated and activated
// again: none is lost, none applied twice.
func TestNoMessageLostAcrossPassivation(t *testing.T) {
	in := &incarnations{n: map[string]int{}}
	clk := actortest.NewClock(time.Time{})
	h := actortest.New(t, actors.Options{Kinds: idleKinds(in, -1, time.Millisecond), Clock: clk})
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 0))
	const parts, n = 8, 400
	want := make([]int, parts)
	for i := range n {
		k := r.IntN(parts)
		want[k]++
		h.Send(fmt.Sprintf("s/p%d", k), add{1})
		if i%20 == 0 {
			// Let some go idle: the passivator looks every 10 ms.
			clk.Advance(time.Duration(r.IntN(3)) * 10 * time.Millisecond)
		}
	}
	for k := range parts {
		path := fmt.Sprintf("s/p%d", k)
		actortest.Eventually(t, func() bool { return counter(t, h, path) == want[k] })
	}
	clk.AdvanceUntil(t, 10*time.Millisecond, func() bool { return h.System().Stats().Passivations > 0 }) // or it proves nothing
}

// Beyond MaxActiveParts the least recently used idle leaves are
// passivated.
func TestCapOnActiveParts(t *testing.T) {
	in := &incarnations{n: map[string]int{}}
	h := actortest.New(t, actors.Options{Kinds: idleKinds(in, -1, -1), MaxActiveParts: 5})
	for i := range 20 {
		h.MustRequest(fmt.Sprintf("s/p%02d", i), add{i})
	}
	activeLeaves := func() (n int) {
		for i := range 20 {
			if h.System().Active(fmt.Sprintf("s/p%02d", i)) {
				n++
			}
		}
		return n
	}
	// "s" and four leaves.
	actortest.Eventually(t, func() bool { return activeLeaves() <= 4 })
	if !h.System().Active("s/p19") {
		t.Fatal("the most recently used part was passivated")
	}
	for i := range 20 {
		if got := counter(t, h, fmt.Sprintf("s/p%02d", i)); got != i {
			t.Fatalf("s/p%02d = %d, want %d", i, got, i)
		}
	}
}

// A burst of activations over the cap is passivated as it comes, not at the
// passivator's next tick (a second here, with parts that never idle out):
// the number of active parts stays close to the cap throughout, so that a
// cap derived from the descriptor limit keeps the process within it.
func TestCapHoldsDuringABurst(t *testing.T) {
	in := &incarnations{n: map[string]int{}}
	const maxActive, parts = 10, 60
	h := actortest.New(t, actors.Options{Kinds: idleKinds(in, -1, -1), MaxActiveParts: maxActive})
	peak := 0
	for i := range parts {
		h.MustRequest(fmt.Sprintf("s/p%02d", i), add{1})
		n := 0
		for j := range i + 1 {
			if h.System().Active(fmt.Sprintf("s/p%02d", j)) {
				n++
			}
		}
		peak = max(peak, n)
	}
	if peak > 2*maxActive {
		t.Fatalf("%d parts active at once with a cap of %d", peak, maxActive)
	}
	t.Logf("peak %d active leaves with a cap of %d", peak, maxActive)
}
