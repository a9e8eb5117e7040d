package actors_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/fractalrt/fractal/actors"
)

// A part whose file was deleted while the System was closed: its parent
// recorded it (System.Children), so its callers should get an error naming
// it, not a new empty part that silently lost what was acknowledged.
func TestDeletedPartFileIsAnError(t *testing.T) {
	h := newHarness(t)
	h.MustRequest("c/a/x", add{5})
	h.Close()
	for _, s := range []string{"", "-wal", "-shm"} {
		os.Remove(h.File("c/a/x") + s)
	}
	h.Reopen()
	v, err := h.Request("c/a/x", get{})
	if !errors.Is(err, actors.ErrActivation) || !strings.Contains(err.Error(), "c/a/x") {
		t.Fatalf("a part whose file was deleted answered %v, %v; want ErrActivation naming it", v, err)
	}
}

// A part whose first activation failed before its file existed is not
// taken for a lost file later: its parent notes a child's file only once it
// exists.
func TestFailedFirstActivationIsNotALostFile(t *testing.T) {
	h := newHarness(t)
	h.MustRequest("c/a", add{1})
	blocker := actors.MustParsePath("c/a/y").Dir(h.Dir())
	if err := os.WriteFile(blocker, []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Request("c/a/y", add{1}); !errors.Is(err, actors.ErrActivation) {
		t.Fatalf("activation over a file in the way: %v", err)
	}
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	h.Close()
	h.Reopen() // y is spawned anew
	if v, err := h.Request("c/a/y", add{2}); err != nil || v != 2 {
		t.Fatalf("after the obstacle went: %v, %v", v, err)
	}
}
