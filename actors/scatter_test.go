package actors_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
)

// Messages of the scatter test kinds.
type (
	scatterTouch struct{} // creates the part; replies "ok"
	scatterProbe struct{} // replies the part's path, behaving by the part's name (see scatterWorld.handle)
)

var errScatterFail = errors.New("test: scatter probe failed")

// scatterWorld is the shared state of the scatter test kinds: a tree "s",
// "s/*", "s/*/*" whose parts answer scatterProbe with their path, except
//
//   - "slow": blocks until release is closed, whatever its request's context;
//   - "fail": returns errScatterFail;
//   - "wait...": blocks until its request's context is done (or release);
//   - any part sleeps delay first.
type scatterWorld struct {
	delay     time.Duration
	release   chan struct{}
	inFlight  atomic.Int64 // probes being handled, across all parts
	maxFlight atomic.Int64 // the most seen at once
	cancelled atomic.Int64 // "wait" probes that saw their context end
	activated sync.Map     // path -> true, for each part activated
}

func newScatterWorld(t *testing.T) *scatterWorld {
	w := &scatterWorld{release: make(chan struct{})}
	t.Cleanup(func() { w.free() })
	return w
}

// free releases the parts that block; it may be called more than once.
func (w *scatterWorld) free() {
	select {
	case <-w.release:
	default:
		close(w.release)
	}
}

func (w *scatterWorld) kinds() []actors.Kind {
	newHandler := func(actors.Path) actors.Handler { return scatterHandler{w} }
	return []actors.Kind{
		{Name: "top", Pattern: "s", Migrations: counterMigrations, New: newHandler},
		{Name: "mid", Pattern: "s/*", Migrations: counterMigrations, New: newHandler},
		{Name: "leaf", Pattern: "s/*/*", Migrations: counterMigrations, New: newHandler},
	}
}

func (w *scatterWorld) harness(t *testing.T, paths ...string) *actortest.Harness {
	t.Helper()
	h := actortest.New(t, actors.Options{Kinds: w.kinds()})
	for _, p := range paths {
		h.MustRequest(p, scatterTouch{})
	}
	return h
}

// activatedParts returns the parts activated since the last reset, sorted.
func (w *scatterWorld) activatedParts() []string {
	var out []string
	w.activated.Range(func(k, _ any) bool {
		out = append(out, k.(string))
		return true
	})
	slices.Sort(out)
	return out
}

type scatterHandler struct{ w *scatterWorld }

func (h scatterHandler) Activate(c *actors.Context) error {
	h.w.activated.Store(c.Path().String(), true)
	return nil
}

func (h scatterHandler) Handle(c *actors.Context, msg any) (any, error) {
	switch msg.(type) {
	case scatterTouch:
		return "ok", nil
	case scatterProbe:
		return h.w.handle(c)
	}
	return nil, fmt.Errorf("%w: %T", actors.ErrUnknownMessage, msg)
}

func (w *scatterWorld) handle(c *actors.Context) (any, error) {
	n := w.inFlight.Add(1)
	defer w.inFlight.Add(-1)
	for m := w.maxFlight.Load(); n > m && !w.maxFlight.CompareAndSwap(m, n); m = w.maxFlight.Load() {
	}
	if w.delay > 0 {
		time.Sleep(w.delay)
	}
	switch name := c.Path().Name(); {
	case name == "slow":
		<-w.release
	case name == "fail":
		return nil, errScatterFail
	case strings.HasPrefix(name, "wait"):
		select {
		case <-c.Context().Done():
			w.cancelled.Add(1)
			return nil, c.Context().Err()
		case <-w.release:
		}
	}
	return c.Path().String(), nil
}

// scatterAll runs a scatter to its end and returns its results.
func scatterAll(t *testing.T, h *actortest.Harness, pattern string, opts *actors.ScatterOptions) []actors.ScatterResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), actortest.Timeout)
	defer cancel()
	var out []actors.ScatterResult
	for r := range h.System().Scatter(ctx, pattern, scatterProbe{}, opts) {
		out = append(out, r)
	}
	return out
}

// okPaths checks that every result is a reply naming its own part and
// returns the parts, sorted.
func okPaths(t *testing.T, pattern string, rs []actors.ScatterResult) []string {
	t.Helper()
	var paths []string
	for _, r := range rs {
		if r.Err != nil {
			t.Errorf("%s: %s: %v", pattern, r.Path, r.Err)
			continue
		}
		if r.Reply != r.Path.String() {
			t.Errorf("%s: %s replied %v", pattern, r.Path, r.Reply)
		}
		paths = append(paths, r.Path.String())
	}
	slices.Sort(paths)
	return paths
}

// scatterGoroutines counts the goroutines running Scatter's code.
func scatterGoroutines() int {
	buf := make([]byte, 1<<16)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "actors.(*scatter)") {
			count++
		}
	}
	return count
}

// scatterCorrupt writes garbage over the file of the part at path while the
// system is closed, then reopens it. The garbage is removed before the
// harness checks the files' integrity.
func scatterCorrupt(t *testing.T, h *actortest.Harness, path string) {
	t.Helper()
	h.Close()
	file := h.File(path)
	for _, f := range []string{file + "-wal", file + "-shm"} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(file, bytes.Repeat([]byte("this is not a database "), 512), 0o644); err != nil {
		t.Fatal(err)
	}
	h.Reopen()
	t.Cleanup(func() {
		for _, f := range []string{file, file + "-wal", file + "-shm"} {
			os.Remove(f)
		}
	})
}

var scatterTree = []string{
	"s/a/x", "s/a/y", "s/a/z",
	"s/b/x", "s/b/w",
	"s/c",
	"s/d/q",
}

func TestScatterPatterns(t *testing.T) {
	w := newScatterWorld(t)
	h := w.harness(t, scatterTree...)
	cases := []struct {
		pattern string
		want    string
	}{
		{"s/*/*", "[s/a/x s/a/y s/a/z s/b/w s/b/x s/d/q]"},
		{"s/a/*", "[s/a/x s/a/y s/a/z]"},
		{"s/*", "[s/a s/b s/c s/d]"},
		{"s/*/x", "[s/b/x s/a/x]"},
		{"*/b/*", "[s/b/w s/b/x]"},
		{"*", "[s]"},
		{"s", "[s]"},
		{"s/a/x", "[s/a/x]"},
		{"s/c/*", "[]"},     // a part without children
		{"s/a/never", "[]"}, // never activated
		{"s/zzz/*", "[]"},   // a parent never activated
		{"s/*/never", "[]"}, // a literal matching no child
	}
	check := func(when string) {
		t.Helper()
		for _, c := range cases {
			want := strings.Fields(strings.Trim(c.want, "[]"))
			slices.Sort(want)
			got := okPaths(t, c.pattern, scatterAll(t, h, c.pattern, nil))
			if fmt.Sprint(got) != fmt.Sprint(want) && !(len(got) == 0 && len(want) == 0) {
				t.Errorf("%s: Scatter(%q) found %v, want %v", when, c.pattern, got, want)
			}
		}
	}
	check("while active")
	if h.Exists("s/zzz") || h.Exists("s/a/never") {
		t.Error("a scatter created a part that matched nothing")
	}

	// After a reopen nothing is active: the walk reads the parents'
	// files, and only the matching parts, with the ancestors that
	// Request goes through, are activated.
	h.Reopen()
	w.activated.Clear()
	if got := okPaths(t, "s/a/*", scatterAll(t, h, "s/a/*", nil)); fmt.Sprint(got) != "[s/a/x s/a/y s/a/z]" {
		t.Fatalf("after reopen: s/a/* found %v", got)
	}
	if got := fmt.Sprint(w.activatedParts()); got != "[s s/a s/a/x s/a/y s/a/z]" {
		t.Errorf("scatter s/a/* activated %s, want the matches and their ancestors only", got)
	}
	w.activated.Clear()
	if got := okPaths(t, "s/*/x", scatterAll(t, h, "s/*/x", nil)); fmt.Sprint(got) != "[s/a/x s/b/x]" {
		t.Fatalf("after reopen: s/*/x found %v", got)
	}
	if got := fmt.Sprint(w.activatedParts()); got != "[s/b s/b/x]" {
		t.Errorf("scatter s/*/x activated %s, want s/b and s/b/x (the rest was active)", got)
	}
	check("after reopen")
}

func TestScatterInvalidPattern(t *testing.T) {
	w := newScatterWorld(t)
	h := w.harness(t, "s/a/x")
	for pattern, want := range map[string]error{
		"":           actors.ErrInvalidPath,
		"/s":         actors.ErrInvalidPath,
		"s/":         actors.ErrInvalidPath,
		"s//a":       actors.ErrInvalidPath,
		"s/../a":     actors.ErrInvalidPath,
		"../s/*":     actors.ErrInvalidPath,
		"s/./*":      actors.ErrInvalidPath,
		"s/*/*/*":    actors.ErrNoKind,
		"t/*":        actors.ErrNoKind,
		"t":          actors.ErrNoKind,
		"*/*/*/*/*/": actors.ErrInvalidPath,
	} {
		rs := scatterAll(t, h, pattern, nil)
		if len(rs) != 1 || !errors.Is(rs[0].Err, want) || !rs[0].Path.IsRoot() {
			t.Errorf("Scatter(%q) = %+v, want one result with an error wrapping %v", pattern, rs, want)
		}
	}
	for _, opts := range []*actors.ScatterOptions{{Concurrency: -1}, {PerPart: -time.Second}} {
		if rs := scatterAll(t, h, "s/*/*", opts); len(rs) != 1 || rs[0].Err == nil {
			t.Errorf("Scatter with %+v = %+v, want one error", *opts, rs)
		}
	}
	if w.inFlight.Load() != 0 || w.maxFlight.Load() != 0 {
		t.Error("an invalid scatter asked a part")
	}
}

func TestScatterConcurrencyBound(t *testing.T) {
	w := newScatterWorld(t)
	var paths []string
	for _, mid := range []string{"a", "b", "c"} {
		for i := range 5 {
			paths = append(paths, fmt.Sprintf("s/%s/%d", mid, i))
		}
	}
	h := w.harness(t, paths...)
	w.delay = 20 * time.Millisecond
	for _, limit := range []int{1, 3} {
		w.maxFlight.Store(0)
		got := okPaths(t, "s/*/*", scatterAll(t, h, "s/*/*", &actors.ScatterOptions{Concurrency: limit}))
		if len(got) != len(paths) {
			t.Fatalf("concurrency %d: %d results, want %d", limit, len(got), len(paths))
		}
		m := w.maxFlight.Load()
		if m > int64(limit) {
			t.Errorf("concurrency %d: %d parts were handling the request at once", limit, m)
		}
		if limit > 1 && m < 2 {
			t.Errorf("concurrency %d: the parts were asked one at a time", limit)
		}
	}
}

// One part too slow for the deadline and one that fails: every other part
// answers, and each of those two yields its error, by the deadline.
func TestScatterSlowAndFailingParts(t *testing.T) {
	for _, variant := range []struct {
		name    string
		failing string // the failing part
		wantErr error  // what it yields
		damage  bool   // its file is corrupt
	}{
		{"handler error", "s/b/fail", errScatterFail, false},
		{"corrupt file", "s/b/bad", actors.ErrActivation, true},
	} {
		t.Run(variant.name, func(t *testing.T) {
			w := newScatterWorld(t)
			h := w.harness(t, append([]string{"s/a/slow", variant.failing}, scatterTree...)...)
			if variant.damage {
				scatterCorrupt(t, h, variant.failing)
			}
			const deadline, margin = time.Second, 500 * time.Millisecond
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			var got []string
			errs := map[string]error{}
			for r := range h.System().Scatter(ctx, "s/*/*", scatterProbe{}, nil) {
				if r.Err != nil {
					errs[r.Path.String()] = r.Err
					continue
				}
				if time.Since(start) >= deadline {
					t.Errorf("%s answered after the deadline", r.Path)
				}
				got = append(got, r.Path.String())
			}
			elapsed := time.Since(start)
			w.free()
			t.Logf("search ended after %v (deadline %v)", elapsed, deadline)
			slices.Sort(got)
			if want := "[s/a/x s/a/y s/a/z s/b/w s/b/x s/d/q]"; fmt.Sprint(got) != want {
				t.Errorf("replies from %v, want %s", got, want)
			}
			if len(errs) != 2 {
				t.Errorf("errors %v, want one for s/a/slow and one for %s", errs, variant.failing)
			}
			if err := errs["s/a/slow"]; !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("slow part: %v, want an error wrapping context.DeadlineExceeded", err)
			}
			if err := errs[variant.failing]; !errors.Is(err, variant.wantErr) {
				t.Errorf("failing part: %v, want an error wrapping %v", err, variant.wantErr)
			}
			if elapsed > deadline+margin {
				t.Errorf("the search took %v, past its deadline of %v", elapsed, deadline)
			}
		})
	}
}

func TestScatterPerPartTimeout(t *testing.T) {
	w := newScatterWorld(t)
	h := w.harness(t, "s/a/slow", "s/a/x")
	start := time.Now()
	rs := scatterAll(t, h, "s/a/*", &actors.ScatterOptions{PerPart: 200 * time.Millisecond})
	elapsed := time.Since(start)
	w.free()
	if len(rs) != 2 {
		t.Fatalf("results %+v, want two", rs)
	}
	for _, r := range rs {
		switch r.Path.String() {
		case "s/a/slow":
			if !errors.Is(r.Err, context.DeadlineExceeded) {
				t.Errorf("slow part: %v, want a deadline error", r.Err)
			}
		case "s/a/x":
			if r.Err != nil || r.Reply != "s/a/x" {
				t.Errorf("s/a/x: %v, %v", r.Reply, r.Err)
			}
		}
	}
	if elapsed > actortest.Timeout/2 {
		t.Errorf("the search took %v despite PerPart", elapsed)
	}
}

// Breaking out of the loop cancels the requests still in flight (their
// handlers see their context end) and leaves no goroutine behind.
func TestScatterBreakCancels(t *testing.T) {
	w := newScatterWorld(t)
	paths := []string{"s/a/fast"}
	for i := range 6 {
		paths = append(paths, fmt.Sprintf("s/a/wait%d", i))
	}
	h := w.harness(t, paths...)
	before := scatterGoroutines()
	ctx, cancel := context.WithTimeout(context.Background(), actortest.Timeout)
	defer cancel()
	start := time.Now()
	n := 0
	for r := range h.System().Scatter(ctx, "s/a/*", scatterProbe{}, nil) {
		n++
		if r.Err != nil || r.Path.String() != "s/a/fast" {
			t.Fatalf("first result %+v, want s/a/fast's reply", r)
		}
		actortest.Eventually(t, func() bool { return w.inFlight.Load() == 6 })
		if scatterGoroutines() <= before {
			t.Fatal("no scatter goroutine seen while requests are in flight")
		}
		break
	}
	if n != 1 {
		t.Fatalf("%d results", n)
	}
	if elapsed := time.Since(start); elapsed > actortest.Timeout/2 {
		t.Errorf("breaking out took %v", elapsed)
	}
	// The last goroutine closes the results, then returns.
	actortest.Eventually(t, func() bool { return scatterGoroutines() == before })
	// The blocked handlers were cancelled, not released.
	actortest.Eventually(t, func() bool { return w.inFlight.Load() == 0 })
	if c := w.cancelled.Load(); c != 6 {
		t.Errorf("%d handlers saw their request cancelled, want 6", c)
	}
}

// A context that has ended before the walk yields one result saying the
// tree was not searched, and asks nobody.
func TestScatterContextAlreadyDone(t *testing.T) {
	w := newScatterWorld(t)
	h := w.harness(t, scatterTree...)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var rs []actors.ScatterResult
	for r := range h.System().Scatter(ctx, "s/*/*", scatterProbe{}, nil) {
		rs = append(rs, r)
	}
	if len(rs) != 1 || !errors.Is(rs[0].Err, actors.ErrIncomplete) || !errors.Is(rs[0].Err, context.Canceled) || rs[0].Path.String() != "s" {
		t.Fatalf("results %+v, want one ErrIncomplete for s wrapping context.Canceled", rs)
	}
	if w.maxFlight.Load() != 0 {
		t.Error("a part was asked")
	}
}

// A parent whose file cannot be read yields ErrIncomplete for its subtree;
// the rest of the tree is searched.
func TestScatterUnlistableParent(t *testing.T) {
	w := newScatterWorld(t)
	h := w.harness(t, scatterTree...)
	scatterCorrupt(t, h, "s/b")
	var got []string
	var incomplete []string
	for _, r := range scatterAll(t, h, "s/*/*", nil) {
		switch {
		case errors.Is(r.Err, actors.ErrIncomplete):
			incomplete = append(incomplete, r.Path.String())
		case r.Err != nil:
			t.Errorf("%s: %v", r.Path, r.Err)
		default:
			got = append(got, r.Path.String())
		}
	}
	slices.Sort(got)
	if fmt.Sprint(got) != "[s/a/x s/a/y s/a/z s/d/q]" || fmt.Sprint(incomplete) != "[s/b]" {
		t.Fatalf("replies %v, incomplete %v; want the parts outside s/b, and s/b incomplete", got, incomplete)
	}
}
