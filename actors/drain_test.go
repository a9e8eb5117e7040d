package actors_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
	"github.com/fractalrt/fractal/persistence"
)

// Drain stops a subtree under load and closes its files; messages sent
// meanwhile wait and are handled after release; nothing is lost or applied
// twice, and the subtree's files are quiet while it is drained.
func TestDrainHoldsMessagesUntilRelease(t *testing.T) {
	h := newHarness(t)
	sys := h.System()
	ctx := context.Background()
	h.MustRequest("c/a/x", add{1})
	h.MustRequest("c/b/x", add{1})

	const writers, each = 4, 50
	var wg sync.WaitGroup
	var answered atomic.Int64
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				path := "c/a/x"
				if (w+i)%2 == 0 {
					path = "c/a/y"
				}
				if _, err := sys.Request(ctx, path, add{1}); err != nil {
					errs <- err
				}
				answered.Add(1)
			}
		}()
	}
	// Under load: the writers are under way, most of their requests to come.
	actortest.Eventually(t, func() bool { return answered.Load() >= writers })
	release, err := sys.Drain(ctx, "c/a")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"c/a", "c/a/x", "c/a/y"} {
		if sys.Active(p) {
			t.Fatalf("%s active while drained", p)
		}
	}
	if !sys.Active("c") || !sys.Active("c/b/x") {
		t.Fatal("drain stopped parts outside the subtree")
	}
	// The files are closed: a consistent copy can be taken, and no write
	// reaches them while drained.
	file := actors.MustParsePath("c/a/x").File(sys.Dir())
	db, err := persistence.Open(ctx, file, &persistence.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	copy1 := filepath.Join(t.TempDir(), "x.db")
	if err := db.Backup(ctx, copy1); err != nil {
		t.Fatal(err)
	}
	db.Close()
	waited := make(chan error, 1)
	go func() {
		_, err := sys.Request(ctx, "c/a/x", add{1000})
		waited <- err
	}()
	select {
	case err := <-waited:
		t.Fatalf("a request to a drained subtree returned (%v) before release", err)
	case <-time.After(50 * time.Millisecond):
	}
	if _, err := sys.Drain(ctx, "c/a/x"); !errors.Is(err, actors.ErrDraining) {
		t.Fatalf("overlapping drain: %v, want ErrDraining", err)
	}
	if got := h.MustRequest("c/b/x", add{1}); got != 2 {
		t.Fatalf("c/b/x = %v during another subtree's drain, want 2", got)
	}
	release()
	release() // harmless
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	x, y := counter(t, h, "c/a/x"), counter(t, h, "c/a/y")
	if x+y != 1+writers*each+1000 {
		t.Fatalf("c/a/x + c/a/y = %d + %d, want %d", x, y, 1+writers*each+1000)
	}
}
