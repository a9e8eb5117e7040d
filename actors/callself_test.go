package actors_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
)

// Messages of the calling kinds.
type (
	// call adds 1 to the counter, then requests Next (get{} if nil) from
	// the part at To with its Context.Context, or with a context of its own
	// of Timeout when Timeout is set. The inner error is kept in the reply
	// (the handler succeeds) unless Fail is set, when the handler returns
	// it. Before the request, it closes Arrive and waits for Await, if
	// set; after it, it closes Asked and waits for Then, if set.
	call struct {
		To      string
		Next    any
		Timeout time.Duration
		Fail    bool
		Arrive  chan<- struct{}
		Await   <-chan struct{}
		Asked   chan<- struct{}
		Then    <-chan struct{}
	}
	// restartOf asks the System, from the handler, to restart the part at
	// To; drainOf to drain the subtree at To.
	restartOf struct{ To string }
	drainOf   struct{ To string }
	// scatterOf scatters get{} over Pattern and replies each part's error
	// (or nil).
	scatterOf struct{ Pattern string }
	// keepContext hands the handler's Context.Context to the test.
	keepContext struct{ Into chan<- context.Context }
)

// called is what call replies: the inner request's reply and error, and
// whether the handler's context was still live when it returned.
type called struct {
	Reply   any
	Err     error
	CtxLeft time.Duration // time left to the handler's deadline when the request returned
	CtxErr  error
	Took    time.Duration // the inner request's
}

// callHarness is a tree of counters whose handlers also make requests.
func callHarness(t *testing.T) *actortest.Harness {
	var h *actortest.Harness
	handle := func(c *actors.Context, msg any) (any, error) {
		sys := h.System()
		switch m := msg.(type) {
		case call:
			if _, err := c.Exec(`UPDATE counter SET n = n + 1`); err != nil {
				return nil, err
			}
			if m.Arrive != nil {
				close(m.Arrive)
			}
			if m.Await != nil {
				<-m.Await
			}
			next := m.Next
			if next == nil {
				next = get{}
			}
			start := time.Now() // before the deadline's clock starts
			ctx := c.Context()
			if m.Timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(context.Background(), m.Timeout)
				defer cancel()
			}
			reply, err := sys.Request(ctx, m.To, next)
			took := time.Since(start)
			if m.Asked != nil {
				close(m.Asked)
			}
			if m.Then != nil {
				<-m.Then
			}
			if err != nil && m.Fail {
				return nil, err
			}
			r := called{Reply: reply, Err: err, CtxErr: c.Context().Err(), Took: took}
			if d, ok := c.Context().Deadline(); ok {
				r.CtxLeft = time.Until(d)
			}
			return r, nil
		case restartOf:
			return nil, sys.Restart(c.Context(), m.To)
		case drainOf:
			release, err := sys.Drain(c.Context(), m.To)
			if err == nil {
				release()
			}
			return nil, err
		case scatterOf:
			errs := map[string]error{}
			for r := range sys.Scatter(c.Context(), m.Pattern, get{}, nil) {
				errs[r.Path.String()] = r.Err
			}
			return errs, nil
		case keepContext:
			m.Into <- c.Context()
			return nil, nil
		}
		return counterHandler(c, msg)
	}
	hf := actors.HandlerFunc(handle)
	h = actortest.New(t, actors.Options{Kinds: []actors.Kind{
		{Name: "top", Pattern: "k", Migrations: counterMigrations, Handler: hf},
		{Name: "mid", Pattern: "k/*", Migrations: counterMigrations, Handler: hf},
		{Name: "leaf", Pattern: "k/*/*", Migrations: counterMigrations, Handler: hf},
	}})
	return h
}

// request sends msg to path with a deadline a minute away: a request that
// waited for it would show.
func request(t *testing.T, h *actortest.Harness, path string, msg any) (any, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return h.System().Request(ctx, path, msg)
}

// atOnce checks that a handler's inner request returned well before the
// handler's own deadline (a minute, see request), with an error wrapping
// want, whose text names the cycle.
func atOnce(t *testing.T, r called, want error, text string) {
	t.Helper()
	if !errors.Is(r.Err, want) || !errors.Is(r.Err, actors.ErrCallCycle) {
		t.Fatalf("inner request: reply %v, error %v; want an error wrapping %v and ErrCallCycle", r.Reply, r.Err, want)
	}
	if r.CtxErr != nil || r.CtxLeft < 30*time.Second {
		t.Fatalf("inner request returned with %v left of the deadline (context error %v): it waited", r.CtxLeft, r.CtxErr)
	}
	if !strings.Contains(r.Err.Error(), text) {
		t.Fatalf("error %q does not name the cycle %q", r.Err, text)
	}
}

func TestCallToSelfFailsAtOnce(t *testing.T) {
	h := callHarness(t)
	v, err := request(t, h, "k/a", call{To: "k/a", Next: add{100}})
	if err != nil {
		t.Fatal(err)
	}
	r := v.(called)
	atOnce(t, r, actors.ErrCallToSelf, "call to self: k/a -> k/a")
	// The handler handled the error and succeeded: its own write
	// committed, and the inner message was never delivered.
	if got := counter(t, h, "k/a"); got != 1 {
		t.Fatalf("counter = %d, want 1 (the handler's own add, not the inner add{100})", got)
	}

	// A handler that returns the error rolls back, as for any error.
	_, err = request(t, h, "k/a", call{To: "k/a", Next: add{100}, Fail: true})
	if !errors.Is(err, actors.ErrCallToSelf) {
		t.Fatalf("error %v, want ErrCallToSelf", err)
	}
	if got := counter(t, h, "k/a"); got != 1 {
		t.Fatalf("counter = %d after the failed handler, want 1", got)
	}
}

func TestCallCycleFailsAtOnce(t *testing.T) {
	h := callHarness(t)
	// k/a -> k/b -> k/a: k/b's request to k/a fails at once; k/b returns
	// the error, which k/a handles.
	v, err := request(t, h, "k/a", call{To: "k/b", Next: call{To: "k/a", Next: add{100}, Fail: true}})
	if err != nil {
		t.Fatal(err)
	}
	r := v.(called)
	atOnce(t, r, actors.ErrCallCycle, "call cycle: k/a -> k/b -> k/a")
	if errors.Is(r.Err, actors.ErrCallToSelf) {
		t.Fatalf("%v: a cycle through another part is not a call to self", r.Err)
	}
	if a, b := counter(t, h, "k/a"), counter(t, h, "k/b"); a != 1 || b != 0 {
		t.Fatalf("counters k/a %d, k/b %d; want 1 (committed) and 0 (rolled back)", a, b)
	}

	// Three parts: k/a -> k/b -> k/c -> k/a.
	v, err = request(t, h, "k/a", call{To: "k/b", Next: call{To: "k/c", Fail: true,
		Next: call{To: "k/a", Fail: true}}})
	if err != nil {
		t.Fatal(err)
	}
	atOnce(t, v.(called), actors.ErrCallCycle, "call cycle: k/a -> k/b -> k/c -> k/a")
}

func TestCallChainWithoutCycle(t *testing.T) {
	h := callHarness(t)
	// k/a -> k/b -> k/c, then k/a -> k/c -> k/b: parts that were on an
	// earlier call path, or on none, are free.
	for _, path := range [][]string{{"k/b", "k/c"}, {"k/c", "k/b"}} {
		v, err := request(t, h, "k/a", call{To: path[0], Next: call{To: path[1]}})
		if err != nil {
			t.Fatal(err)
		}
		r := v.(called)
		if r.Err != nil {
			t.Fatalf("k/a -> %s: %v", strings.Join(path, " -> "), r.Err)
		}
		inner := r.Reply.(called)
		if inner.Err != nil {
			t.Fatalf("k/a -> %s: %v", strings.Join(path, " -> "), inner.Err)
		}
	}
	for path, want := range map[string]int{"k/a": 2, "k/b": 1, "k/c": 1} {
		if got := counter(t, h, path); got != want {
			t.Errorf("%s = %d, want %d", path, got, want)
		}
	}
	// A child calls its parent, and the parent an active child.
	if r := mustCall(t, h, "k/a/x", call{To: "k/a"}); r.Err != nil {
		t.Fatalf("child -> parent: %v", r.Err)
	}
	if r := mustCall(t, h, "k/a", call{To: "k/a/x"}); r.Err != nil {
		t.Fatalf("parent -> active child: %v", r.Err)
	}
	// A grandparent calls a part whose parent, not itself, activates it.
	if r := mustCall(t, h, "k", call{To: "k/a/new"}); r.Err != nil || r.Reply != 0 {
		t.Fatalf("k -> k/a/new (activated by k/a): %v, %v", r.Reply, r.Err)
	}
}

func mustCall(t *testing.T, h *actortest.Harness, path string, msg call) called {
	t.Helper()
	v, err := request(t, h, path, msg)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return v.(called)
}

// A part that is not active is activated by its parent, in the parent's
// mailbox: a parent requesting its own child that is not active would wait
// for itself.
func TestCallToInactiveChildFailsAtOnce(t *testing.T) {
	h := callHarness(t)
	h.MustRequest("k/a", get{})
	if h.System().Active("k/a/x") {
		t.Fatal("k/a/x active before any message")
	}
	r := mustCall(t, h, "k/a", call{To: "k/a/x", Next: add{100}})
	atOnce(t, r, actors.ErrCallCycle, "call cycle: k/a -> k/a/x (k/a/x is not active, and k/a, which activates it, waits on this call)")
	if errors.Is(r.Err, actors.ErrCallToSelf) {
		t.Fatalf("%v: not a call to self", r.Err)
	}
	// The same for a grandchild whose parent is not active either.
	r = mustCall(t, h, "k", call{To: "k/b/y"})
	atOnce(t, r, actors.ErrCallCycle, "call cycle: k -> k/b/y (k/b/y is not active, and k, which activates it, waits on this call)")
	if h.System().Active("k/a/x") || h.System().Active("k/b") {
		t.Fatal("the refused requests activated a part")
	}
	// Once the child is active, the parent reaches it directly.
	h.MustRequest("k/a/x", get{})
	if r := mustCall(t, h, "k/a", call{To: "k/a/x", Next: add{100}}); r.Err != nil || r.Reply != 100 {
		t.Fatalf("k/a -> active k/a/x: %v, %v", r.Reply, r.Err)
	}
}

// A part's restart is done by its parent, and a drain waits for the
// parent of the subtree and for the subtree's parts to stop.
func TestRestartAndDrainAlongTheCallPath(t *testing.T) {
	h := callHarness(t)
	h.MustRequest("k/a/x", get{})
	for _, tc := range []struct {
		at   string
		msg  any
		text string
	}{
		{"k/a", restartOf{To: "k/a/x"}, "call cycle: k/a -> restart k/a/x (k/a, which restarts it, waits on this call)"},
		{"k/a", drainOf{To: "k/a/x"}, "call cycle: k/a -> drain k/a/x (k/a, which activates it, waits on this call)"},
		{"k/a/x", drainOf{To: "k/a"}, "call cycle: k/a/x -> drain k/a (k/a/x, which must stop, waits on this call)"},
	} {
		_, err := request(t, h, tc.at, tc.msg)
		if !errors.Is(err, actors.ErrCallCycle) || err.Error() != "actors: "+tc.text {
			t.Errorf("%s: %T%+v: error %v, want %q", tc.at, tc.msg, tc.msg, err, tc.text)
		}
	}
	if !h.System().Active("k/a/x") {
		t.Fatal("k/a/x was stopped")
	}
	// Restarting or draining a part elsewhere is not refused.
	h.MustRequest("k/b/y", get{})
	if _, err := request(t, h, "k/a", restartOf{To: "k/b/y"}); err != nil {
		t.Fatal(err)
	}
	if _, err := request(t, h, "k/a", drainOf{To: "k/b"}); err != nil {
		t.Fatal(err)
	}
}

// Scatter (and whatever else uses Request) from a handler sees the call
// path too: the part itself fails at once, the others answer.
func TestScatterFromHandler(t *testing.T) {
	h := callHarness(t)
	for _, p := range []string{"k/a", "k/b", "k/c"} {
		h.MustRequest(p, get{})
	}
	v, err := request(t, h, "k/b", scatterOf{Pattern: "k/*"})
	if err != nil {
		t.Fatal(err)
	}
	errs := v.(map[string]error)
	if len(errs) != 3 || errs["k/a"] != nil || errs["k/c"] != nil || !errors.Is(errs["k/b"], actors.ErrCallToSelf) {
		t.Fatalf("scatter from k/b: %v", errs)
	}
}

// The call path is what a handler's Context.Context carries: a request
// made with another context is not checked, and a call to self waits for
// its deadline.
func TestCallToSelfWithoutContextWaitsForDeadline(t *testing.T) {
	h := callHarness(t)
	const wait = 200 * time.Millisecond
	start := time.Now()
	r := mustCall(t, h, "k/a", call{To: "k/a", Next: add{100}, Timeout: wait})
	if !errors.Is(r.Err, context.DeadlineExceeded) || errors.Is(r.Err, actors.ErrCallCycle) {
		t.Fatalf("inner request: %v, %v; want context.DeadlineExceeded", r.Reply, r.Err)
	}
	if took := time.Since(start); took < wait {
		t.Fatalf("returned after %v, before its deadline", took)
	}
	// The inner message, found after its deadline, was not handled.
	if got := counter(t, h, "k/a"); got != 1 {
		t.Fatalf("counter = %d, want 1", got)
	}
}

// A goroutine of a handler that uses its context after the handler
// returned is not refused: the part no longer waits on that path.
func TestCallPathEndsWithItsHandler(t *testing.T) {
	h := callHarness(t)
	ch := make(chan context.Context, 1)
	h.Send("k/a", keepContext{Into: ch}) // a context without deadline
	ctx := <-ch
	h.MustRequest("k/a", get{}) // handled after: the handler has returned
	if got := actors.CallPath(ctx); len(got) != 0 {
		t.Fatalf("call path after the handler returned: %v", got)
	}
	if _, err := h.System().Request(ctx, "k/a", get{}); err != nil {
		t.Fatalf("request with the context of a handler that returned: %v", err)
	}

	// k/a calls k/b, whose handler returns while k/a still runs: the path
	// ends with k/b's handler, k/a is not waiting on it any more, and a
	// request along it to k/a waits for k/a's handler (it does not fail).
	asked, then := make(chan struct{}), make(chan struct{})
	outer := make(chan error, 1)
	octx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel() // not before the request along it is answered
	go func() {
		_, err := h.System().Request(octx, "k/a", call{To: "k/b", Next: keepContext{Into: ch}, Asked: asked, Then: then})
		outer <- err
	}()
	ctx = <-ch
	<-asked // k/b replied: its handler returned; k/a's still runs
	if got := actors.CallPath(ctx); len(got) != 0 {
		t.Fatalf("call path after k/b's handler returned: %v", got)
	}
	inner := make(chan error, 1)
	go func() {
		_, err := h.System().Request(ctx, "k/a", get{})
		inner <- err
	}()
	close(then)
	if err := <-inner; err != nil {
		t.Fatalf("request along the ended path: %v", err)
	}
	if err := <-outer; err != nil {
		t.Fatal(err)
	}
}

// Two requests that cross (k/a calls k/b while k/b, on a call of its own,
// calls k/a) are on two call paths: neither is a cycle of its own, and both
// wait for their deadlines, as two gen_server calls that cross do.
func TestCrossedCallsWaitForDeadline(t *testing.T) {
	h := callHarness(t)
	const wait = 300 * time.Millisecond
	inA, inB := make(chan struct{}), make(chan struct{})
	results := make(chan called, 2)
	for _, m := range []struct {
		at  string
		msg call
	}{
		{"k/a", call{To: "k/b", Timeout: wait, Arrive: inA, Await: inB}},
		{"k/b", call{To: "k/a", Timeout: wait, Arrive: inB, Await: inA}},
	} {
		go func() {
			v, err := request(t, h, m.at, m.msg)
			if err != nil {
				results <- called{Err: fmt.Errorf("%s: %w", m.at, err)}
				return
			}
			results <- v.(called)
		}()
	}
	// The first to return waited for its deadline; the other one could
	// not be handled before that handler returned, and may have been
	// handled then, if its own deadline was a little later.
	for i := range 2 {
		r := <-results
		if errors.Is(r.Err, actors.ErrCallCycle) || (i == 0 && !errors.Is(r.Err, context.DeadlineExceeded)) || (r.Err != nil && !errors.Is(r.Err, context.DeadlineExceeded)) {
			t.Fatalf("crossed call %d: %v, %v; want context.DeadlineExceeded", i, r.Reply, r.Err)
		}
		if r.Took < wait {
			t.Fatalf("crossed call %d returned after %v, before the deadline %v", i, r.Took, wait)
		}
	}
}
