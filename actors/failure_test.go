package actors_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
	"github.com/fractalrt/fractal/persistence"
)

func TestPanicRestartsAndKeepsAcknowledged(t *testing.T) {
	h := newHarness(t)
	h.MustRequest("c/a/x", add{7})
	h.MustRequest("c/a/y", add{3})
	_, err := h.Request("c/a/x", addPanic{100})
	var pe *actors.PanicError
	if !errors.Is(err, actors.ErrPanic) || !errors.As(err, &pe) || pe.Path.String() != "c/a/x" {
		t.Fatalf("error = %v, want a PanicError for c/a/x", err)
	}
	// The part was restarted, reloaded its file, and serves again.
	if got := counter(t, h, "c/a/x"); got != 7 {
		t.Fatalf("counter = %d after the panic, want 7", got)
	}
	if got := h.MustRequest("c/a/x", add{1}); got != 8 {
		t.Fatalf("add after restart = %v, want 8", got)
	}
	// Its sibling was not disturbed.
	if got := counter(t, h, "c/a/y"); got != 3 {
		t.Fatalf("sibling counter = %d, want 3", got)
	}
}

// restartCounter counts its activations in memory and in its file.
type restartCounter struct{ activations int }

func (r *restartCounter) Activate(c *actors.Context) error {
	r.activations++
	_, err := c.Exec(`UPDATE counter SET n = n + 1000`)
	return err
}

func (r *restartCounter) Handle(c *actors.Context, msg any) (any, error) {
	if _, ok := msg.(get); ok {
		var n int
		err := c.QueryRow(`SELECT n FROM counter`).Scan(&n)
		return [2]int{r.activations, n}, err
	}
	return counterHandler(c, msg)
}

func TestRestartReloadsFromFile(t *testing.T) {
	h := actortest.New(t, actors.Options{Kinds: []actors.Kind{
		{Name: "top", Pattern: "r", Migrations: counterMigrations, New: func(actors.Path) actors.Handler { return &restartCounter{} }},
	}})
	h.MustRequest("r", add{1})
	if got := h.MustRequest("r", get{}); got != [2]int{1, 1001} {
		t.Fatalf("before restart: %v", got)
	}
	h.Restart("r")
	// A new handler was made (activations starts again at 1) and Activate
	// ran once more against the file.
	if got := h.MustRequest("r", get{}); got != [2]int{1, 2001} {
		t.Fatalf("after restart: %v, want [1 2001]", got)
	}
	if err := h.System().Restart(context.Background(), "r/none"); !errors.Is(err, actors.ErrNoKind) {
		t.Fatalf("restart of an undeclared path: %v", err)
	}
}

func TestRestartOfInactivePart(t *testing.T) {
	h := newHarness(t)
	if err := h.System().Restart(context.Background(), "c/q"); !errors.Is(err, actors.ErrNotActive) {
		t.Fatalf("restart of an inactive part: %v, want ErrNotActive", err)
	}
}

// A restart of a parent stops its active children; messages queued for them
// are not lost but rerouted and handled after reactivation.
func TestParentRestartLosesNoQueuedMessage(t *testing.T) {
	h := newHarness(t)
	h.MustRequest("c/a/x", add{0})
	const n = 300
	for i := 0; i < n; i++ {
		h.Send("c/a/x", add{1})
		if i == n/2 {
			h.Restart("c/a")
		}
	}
	actortest.Eventually(t, func() bool { return counter(t, h, "c/a/x") == n })
}

type panicky struct{ inNew, inActivate bool }

func (k panicky) Activate(*actors.Context) error {
	if k.inActivate {
		panic("test: Activate panicked")
	}
	return nil
}

// A kind whose constructor or Activate panics fails its activation: the
// caller gets an error wrapping ErrActivation and ErrPanic, not a hang.
func TestActivationPanicIsAnError(t *testing.T) {
	for _, k := range []panicky{{inNew: true}, {inActivate: true}} {
		h := actortest.New(t, actors.Options{Kinds: []actors.Kind{{
			Name: "top", Pattern: "p", Migrations: counterMigrations,
			New: func(actors.Path) actors.Handler {
				if k.inNew {
					panic("test: New panicked")
				}
				return k
			},
		}}})
		_, err := h.Request("p", add{1})
		if !errors.Is(err, actors.ErrActivation) || !errors.Is(err, actors.ErrPanic) {
			t.Fatalf("%+v: error %v, want ErrActivation and ErrPanic", k, err)
		}
		if n := h.QueryInt("p", "SELECT n FROM counter"); n != 0 {
			t.Fatalf("%+v: counter %d after failed activation", k, n)
		}
	}
}

// A part whose file is corrupt fails alone: its callers get an error that
// names it, its siblings and its parent answer normally.
func TestCorruptFileFailsAlone(t *testing.T) {
	h := newHarness(t)
	for _, p := range []string{"c/a/x", "c/a/y", "c/a/z"} {
		h.MustRequest(p, add{3})
	}
	h.Close()
	good, err := os.ReadFile(h.File("c/a/y"))
	if err != nil {
		t.Fatal(err)
	}
	corrupt(t, h.File("c/a/y"))
	h.Reopen()
	_, err = h.Request("c/a/y", get{})
	if err == nil || !strings.Contains(err.Error(), "c/a/y") || !errors.Is(err, actors.ErrActivation) || !errors.Is(err, persistence.ErrCorrupt) {
		t.Fatalf("request to the corrupt part: %v; want ErrActivation and ErrCorrupt naming c/a/y", err)
	}
	for _, p := range []string{"c/a/x", "c/a/z", "c/a", "c"} {
		want := 3
		if p == "c/a" || p == "c" {
			want = 0
		}
		if got := counter(t, h, p); got != want {
			t.Errorf("%s = %d beside a corrupt sibling, want %d", p, got, want)
		}
	}
	// It keeps failing clearly, without taking anything down.
	if _, err := h.Request("c/a/y", add{1}); !errors.Is(err, persistence.ErrCorrupt) {
		t.Fatalf("second request: %v", err)
	}
	// Deleting the file does not make an empty part of it: its parent
	// knows it had one.
	os.Remove(h.File("c/a/y"))
	if _, err := h.Request("c/a/y", get{}); !errors.Is(err, actors.ErrFileMissing) {
		t.Fatalf("request to a part whose file was deleted: %v", err)
	}
	// Nor does an empty file (truncated, or caught half restored), which
	// SQLite would take for a new database; and it stays as it is.
	if err := os.WriteFile(h.File("c/a/y"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Request("c/a/y", add{1}); !errors.Is(err, actors.ErrFileMissing) {
		t.Fatalf("request to a part whose file is empty: %v", err)
	}
	if fi, err := os.Stat(h.File("c/a/y")); err != nil || fi.Size() != 0 {
		t.Fatalf("the empty file was written: %v, %v", fi, err)
	}
	// Restore a good file: the part recovers at its next message (the
	// cleanup's integrity check needs a good file too).
	if err := os.WriteFile(h.File("c/a/y"), good, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := counter(t, h, "c/a/y"); got != 3 {
		t.Fatalf("restored part = %d, want 3", got)
	}
}

// corrupt overwrites the body of a closed SQLite file with garbage, leaving
// its header, so that opening works and reading fails.
func corrupt(t *testing.T, file string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for i := 100; i < len(b); i++ {
		b[i] = byte(i*7 + 13)
	}
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// While a parent restarts (it waits for its children to stop), messages
// for it and its subtree are held for the new incarnation, not bounced.
func TestRequestsDuringParentRestart(t *testing.T) {
	h := newHarness(t)
	for i := range 20 {
		h.MustRequest(fmt.Sprintf("c/a/x%d", i), add{1})
	}
	for round := range 3 {
		h.Restart("c/a")
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := h.Request(fmt.Sprintf("c/a/x%d", i), add{1}); err != nil {
					t.Errorf("round %d, c/a/x%d: %v", round, i, err)
				}
			}()
		}
		if _, err := h.Request("c/a", add{1}); err != nil {
			t.Errorf("round %d, c/a: %v", round, err)
		}
		wg.Wait()
	}
	for i := range 20 {
		if got := counter(t, h, fmt.Sprintf("c/a/x%d", i)); got != 4 {
			t.Errorf("c/a/x%d = %d, want 4", i, got)
		}
	}
}

// A message held during a restart that panics when handled does not lose
// the messages held after it.
func TestPanicInHeldMessageKeepsTheRest(t *testing.T) {
	h := newHarness(t)
	h.MustRequest("c/a/x", add{0})
	h.Restart("c/a")
	results := make(chan error, 3)
	for _, m := range []any{add{1}, addPanic{1}, add{10}} {
		go func() {
			_, err := h.Request("c/a/x", m)
			results <- err
		}()
	}
	var panics, oks int
	for range 3 {
		switch err := <-results; {
		case errors.Is(err, actors.ErrPanic):
			panics++
		case err == nil:
			oks++
		default:
			t.Fatalf("request failed: %v", err)
		}
	}
	if panics != 1 || oks != 2 {
		t.Fatalf("%d panics and %d successes, want 1 and 2", panics, oks)
	}
	if got := counter(t, h, "c/a/x"); got != 11 {
		t.Fatalf("counter = %d, want 11", got)
	}
}
