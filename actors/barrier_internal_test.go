package actors

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fractalrt/fractal/persistence"
)

type incr struct{}
type read struct{}
type tell struct{ to string }

// gatedSystem opens a PowerLoss system whose barrier syncs the data
// directory's file system only when the test lets it: gate.enter receives
// when a sync starts, and the sync proceeds once gate.release is sent to.
func gatedSystem(t *testing.T) (*System, *gate) {
	t.Helper()
	h := HandlerFunc(func(c *Context, msg any) (any, error) {
		var n int
		switch m := msg.(type) {
		case incr:
			err := c.QueryRow(`UPDATE counter SET n = n + 1 RETURNING n`).Scan(&n)
			return n, err
		case read:
			err := c.QueryRow(`SELECT n FROM counter`).Scan(&n)
			return n, err
		case tell:
			return nil, c.Send(m.to, incr{})
		}
		return nil, fmt.Errorf("%w: %T", ErrUnknownMessage, msg)
	})
	migrations := []persistence.Migration{{SQL: `CREATE TABLE counter (n INTEGER NOT NULL); INSERT INTO counter VALUES (0)`}}
	dir := t.TempDir()
	fd, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fd.Close() }) // after Close, which stops the syncs that use fd
	s, err := Open(context.Background(), dir, Options{Kinds: []Kind{
		{Name: "top", Pattern: "c", Handler: h, Migrations: migrations},
		{Name: "child", Pattern: "c/*", Handler: h, Migrations: migrations},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	g := &gate{enter: make(chan struct{}, 100), release: make(chan struct{}, 100)}
	s.barrier.Close()
	s.barrier = persistence.NewBarrierFunc(func() error {
		if g.closed.Load() {
			g.enter <- struct{}{}
			<-g.release
		}
		g.syncs.Add(1)
		return unix.Syncfs(int(fd.Fd()))
	})
	return s, g
}

// A gate holds the barrier's syncs while closed.
type gate struct {
	closed         atomic.Bool
	enter, release chan struct{}
	syncs          atomic.Int64
}

// close makes the syncs that start from now on wait for release, once
// every callback handed to the barrier so far has run.
func (g *gate) close(t *testing.T, s *System) {
	t.Helper()
	if err := s.barrier.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	g.closed.Store(true)
}

// open lets syncs through without waiting from now on.
func (g *gate) open() {
	g.closed.Store(false)
	go func() {
		for range g.enter {
			g.release <- struct{}{}
		}
	}()
}

func fileCounter(t *testing.T, s *System, path string) int {
	t.Helper()
	db, err := persistence.Open(context.Background(), MustParsePath(path).File(s.Dir()), &persistence.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.View(context.Background(), func(tx *persistence.Tx) error {
		return tx.QueryRow(`SELECT n FROM counter`).Scan(&n)
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func request(s *System, path string, msg any) chan result {
	ch := make(chan result, 1)
	go func() {
		v, err := s.Request(context.Background(), path, msg)
		ch <- result{v, err}
	}()
	return ch
}

func notYet(t *testing.T, ch chan result, what string) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("%s released before the barrier's sync returned: %v, %v", what, r.val, r.err)
	case <-time.After(50 * time.Millisecond):
	}
}

// The proof that the shared barrier never lets a reply or a message out
// before the bytes it depends on are synced: while the sync is held, the
// commit is already in the file (so the sync covers it), yet nothing that
// depends on it is observable; once the sync returns, it is.
func TestNoReplyBeforeTheBarrierSync(t *testing.T) {
	s, g := gatedSystem(t)
	if v, err := s.Request(context.Background(), "c", read{}); err != nil || v != 0 {
		t.Fatalf("first read: %v, %v", v, err) // activates c
	}
	g.close(t, s)

	w := request(s, "c", incr{})
	<-g.enter // a sync started: the commit is in the file before it
	if n := fileCounter(t, s, "c"); n != 1 {
		t.Fatalf("file holds n=%d while the sync runs, want the committed 1", n)
	}
	notYet(t, w, "the reply of a write")

	// A read of the unsynced write, committed while the sync runs, waits
	// for the next sync although it wrote nothing itself.
	r := request(s, "c", read{})
	notYet(t, r, "a read of an unsynced write")

	// A message sent by a handler waits too.
	tl := request(s, "c", tell{to: "./x"})
	notYet(t, tl, "the reply of a sender")
	if _, ok := s.parts.Load("c/x"); ok {
		t.Fatal("a held message reached its target before the sync")
	}

	g.release <- struct{}{} // sync #1 returns
	if res := <-w; res.err != nil || res.val != 1 {
		t.Fatalf("write reply after the sync: %v, %v", res.val, res.err)
	}
	notYet(t, r, "a read of an unsynced write") // it waits for sync #2
	g.open()
	if res := <-r; res.err != nil || res.val != 1 {
		t.Fatalf("read reply: %v, %v", res.val, res.err)
	}
	if res := <-tl; res.err != nil {
		t.Fatalf("sender reply: %v", res.err)
	}
	waitFor(t, func() bool {
		v, err := s.Request(context.Background(), "c/x", read{})
		if err != nil {
			t.Fatal(err)
		}
		return v == 1
	}, "the held message")
}

// A message that writes nothing causes no sync when nothing of its part
// waits for one.
func TestReadOnlyMessageCausesNoSync(t *testing.T) {
	s, g := gatedSystem(t)
	if _, err := s.Request(context.Background(), "c", incr{}); err != nil {
		t.Fatal(err)
	}
	before := g.syncs.Load()
	for range 20 {
		if v, err := s.Request(context.Background(), "c", read{}); err != nil || v != 1 {
			t.Fatalf("read: %v, %v", v, err)
		}
	}
	if after := g.syncs.Load(); after != before {
		t.Fatalf("20 reads caused %d syncs", after-before)
	}
	if _, err := s.Request(context.Background(), "c", incr{}); err != nil {
		t.Fatal(err)
	}
	if after := g.syncs.Load(); after != before+1 {
		t.Fatalf("a write caused %d syncs, want 1", after-before)
	}
}

// A part reopened from a file that was synced, with nothing of its own or
// of its parent's waiting for a sync, answers a read at once; a part
// stopped while its last commit still waits for the sync makes its next
// incarnation's first reply wait for that sync.
func TestReopenWaitsOnlyForWhatIsNotSynced(t *testing.T) {
	s, g := gatedSystem(t)
	t.Cleanup(func() { // before Close, should the test fail with a sync held
		if g.closed.Load() {
			g.open()
			g.release <- struct{}{}
		}
	})
	ctx := context.Background()
	if _, err := s.Request(ctx, "c/x", incr{}); err != nil {
		t.Fatal(err)
	}
	restartParent := func() {
		t.Helper()
		if err := s.Restart(ctx, "c"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { return !s.Active("c/x") }, "c/x to stop with its parent")
	}
	restartParent() // c/x stops with its commit synced
	g.close(t, s)
	select {
	case r := <-request(s, "c/x", read{}):
		if r.err != nil || r.val != 1 {
			t.Fatalf("read after reopen with nothing to sync: %v, %v", r.val, r.err)
		}
	case <-g.enter:
		t.Fatal("the reply of a part reopened from a synced file waited for a sync")
	}

	// A write whose sync is held, then a stop: the next incarnation's
	// read waits for that sync.
	w := request(s, "c/x", incr{})
	<-g.enter
	restartParent()
	r := request(s, "c/x", read{})
	notYet(t, r, "the first reply of a part reopened over an unsynced commit")
	g.open()
	g.release <- struct{}{}
	if res := <-w; res.err != nil || res.val != 2 {
		t.Fatalf("write: %v, %v", res.val, res.err)
	}
	if res := <-r; res.err != nil || res.val != 2 {
		t.Fatalf("read: %v, %v", res.val, res.err)
	}
}
