package actors_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
	"github.com/fractalrt/fractal/persistence"
	"github.com/fractalrt/fractal/supervisor"
)

// Messages of the delete tests, besides the counter's and dAdd, dSend.
type (
	delSelf  struct{ Notify string }    // SendDurable dAdd{1} to Notify (if set), then Context.Delete
	delAlarm struct{ In time.Duration } // set the alarm "a" due in In
)

// deleteHandler is counterHandler plus durable messages (dAdd, failing
// while its part is down; dSend), Context.Delete and alarms.
func deleteHandler(down *downParts, attempts *atomic.Int64) actors.HandlerFunc {
	return func(c *actors.Context, msg any) (any, error) {
		switch m := msg.(type) {
		case dAdd:
			attempts.Add(1)
			if _, ok := down.m.Load(c.Path().String()); ok {
				return nil, errDown
			}
			return counterHandler(c, add(m))
		case dSend:
			for _, n := range m.N {
				if err := c.SendDurable(m.To, dAdd{n}); err != nil {
					return nil, err
				}
			}
			return nil, nil
		case delSelf:
			if m.Notify != "" {
				if err := c.SendDurable(m.Notify, dAdd{1}); err != nil {
					return nil, err
				}
			}
			return "bye", c.Delete()
		case delAlarm:
			return nil, c.SetAlarm("a", time.Now().Add(m.In))
		case actors.Alarm:
			return nil, nil
		}
		return counterHandler(c, msg)
	}
}

// deleteKinds: counters three levels deep ("c", "c/*", "c/*/*") that
// also take durable messages and delete themselves.
func deleteKinds(down *downParts, attempts *atomic.Int64) []actors.Kind {
	h := deleteHandler(down, attempts)
	return []actors.Kind{
		{Name: "top", Pattern: "c", Migrations: counterMigrations, Handler: h},
		{Name: "mid", Pattern: "c/*", Migrations: counterMigrations, Handler: h},
		{Name: "leaf", Pattern: "c/*/*", Migrations: counterMigrations, Handler: h},
	}
}

func deleteHarness(t *testing.T, opts actors.Options) (*actortest.Harness, *downParts, *atomic.Int64) {
	t.Helper()
	down, attempts := &downParts{}, &atomic.Int64{}
	opts.Kinds = deleteKinds(down, attempts)
	if opts.Delivery == (actors.Delivery{}) {
		opts.Delivery = fastDelivery
	}
	return actortest.New(t, opts), down, attempts
}

func deletePath(t *testing.T, h *actortest.Harness, path string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), actortest.Timeout)
	defer cancel()
	if err := h.System().Delete(ctx, path); err != nil {
		t.Fatalf("delete %s: %v", path, err)
	}
}

func children(t *testing.T, h *actortest.Harness, path string) []string {
	t.Helper()
	names, err := h.System().Children(context.Background(), path)
	if err != nil {
		t.Fatalf("children of %q: %v", path, err)
	}
	return names
}

func exists(file string) bool {
	_, err := os.Stat(file)
	return err == nil
}

// dirEntries lists the names in the directory of the part at path.
func dirEntries(t *testing.T, h *actortest.Harness, path string) []string {
	t.Helper()
	dir := h.Dir()
	if path != "" {
		dir = actors.MustParsePath(path).Dir(h.Dir())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// A deleted part's directory (its subtree's, active and passive parts
// alike) and its parent's record of it are gone; the parent's file passes
// its check, the siblings are untouched.
func TestDeleteRemovesSubtree(t *testing.T) {
	h, _, _ := deleteHarness(t, actors.Options{})
	for _, p := range []string{"c/a", "c/a/x", "c/a/y", "c/b"} {
		h.MustRequest(p, add{1})
	}
	h.Reopen()
	h.MustRequest("c/a/x", add{1}) // c/a and c/a/x active, c/a/y passive
	if got := children(t, h, "c"); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("children before: %v", got)
	}
	deletePath(t, h, "c/a")
	if dir := actors.MustParsePath("c/a").Dir(h.Dir()); exists(dir) {
		t.Fatalf("%s still exists", dir)
	}
	for _, name := range dirEntries(t, h, "c") {
		if name != actors.PartFileName && !strings.HasPrefix(name, actors.PartFileName+"-") && name != "b" {
			t.Errorf("left in c's directory: %s", name)
		}
	}
	if got := children(t, h, "c"); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("children after: %v, want [b]", got)
	}
	if err := persistence.CheckFile(context.Background(), h.File("c")); err != nil {
		t.Fatalf("check of the parent: %v", err)
	}
	for _, p := range []string{"c/a", "c/a/x", "c/a/y"} {
		if h.System().Active(p) {
			t.Errorf("%s still active", p)
		}
	}
	if got := counter(t, h, "c/b"); got != 1 {
		t.Fatalf("sibling c/b = %d, want 1", got)
	}
	if n := h.System().Stats().Deletions; n != 1 {
		t.Fatalf("Stats.Deletions = %d, want 1", n)
	}
}

// Every message to a deleted part or below it gets ErrNoPart and creates
// nothing, after a reopen too, until Reuse; Scatter skips it.
func TestMessagesToDeletedPartGetErrNoPart(t *testing.T) {
	h, _, _ := deleteHarness(t, actors.Options{})
	for _, p := range []string{"c/a", "c/a/x", "c/b"} {
		h.MustRequest(p, add{1})
	}
	deletePath(t, h, "c/a")
	check := func() {
		t.Helper()
		for _, p := range []string{"c/a", "c/a/x", "c/a/new"} {
			if _, err := h.Request(p, add{1}); !errors.Is(err, actors.ErrNoPart) {
				t.Errorf("request to %s: %v, want ErrNoPart", p, err)
			}
		}
	}
	check()
	h.Send("c/a", add{1})
	h.Send("c/a/z", add{1})
	h.MustRequest("c/b", forward{To: "../a"})
	for r := range h.System().Scatter(context.Background(), "c/*", get{}, nil) {
		if r.Path.String() != "c/b" || r.Err != nil {
			t.Errorf("scatter: %s %v", r.Path, r.Err)
		}
	}
	h.Close() // waits for the sends
	if dir := actors.MustParsePath("c/a").Dir(h.Dir()); exists(dir) {
		t.Fatalf("messages after the delete created %s", dir)
	}
	h.Reopen()
	check()
	if dir := actors.MustParsePath("c/a").Dir(h.Dir()); exists(dir) {
		t.Fatalf("messages after a reopen created %s", dir)
	}
	if err := h.System().Reuse(context.Background(), "c/a"); err != nil {
		t.Fatal(err)
	}
	if got := counter(t, h, "c/a"); got != 0 {
		t.Fatalf("reused c/a = %d, want a new part (0)", got)
	}
	if got := counter(t, h, "c/a/x"); got != 0 {
		t.Fatalf("reused c/a/x = %d, want a new part (0)", got)
	}
}

// A top-level part is recorded by the root file: its deletion works the
// same.
func TestDeleteTopLevelPart(t *testing.T) {
	h, _, _ := deleteHarness(t, actors.Options{})
	h.MustRequest("c/a/x", add{1})
	deletePath(t, h, "c")
	if got := children(t, h, ""); len(got) != 0 {
		t.Fatalf("root's children: %v", got)
	}
	if exists(actors.MustParsePath("c").Dir(h.Dir())) {
		t.Fatal("c's directory is still there")
	}
	h.Reopen()
	if _, err := h.Request("c/a/x", get{}); !errors.Is(err, actors.ErrNoPart) {
		t.Fatalf("request below the deleted c: %v, want ErrNoPart", err)
	}
	if err := h.System().Reuse(context.Background(), "c"); err != nil {
		t.Fatal(err)
	}
	if got := counter(t, h, "c/a/x"); got != 0 {
		t.Fatalf("c/a/x after reuse = %d, want 0", got)
	}
}

// A durable message on its way to a part that gets deleted becomes a dead
// letter of its sender at once, with ErrNoPart, not after its attempts
// run out; so does one sent later.
func TestDurableToDeletedPartIsDeadAtOnce(t *testing.T) {
	opts := actors.Options{Delivery: fastDelivery}
	opts.Delivery.MaxAttempts = 1_000_000 // so only ErrNoPart can kill them
	h, down, attempts := deleteHarness(t, opts)
	h.MustRequest("c/b", add{1})
	down.set("c/b", true)
	h.MustRequest("c/a", dSend{To: "c/b", N: []int{1, 2}})
	actortest.Eventually(t, func() bool { return attempts.Load() >= 2 }) // being retried
	deletePath(t, h, "c/b")
	h.MustRequest("c/a", dSend{To: "c/b", N: []int{3}})
	actortest.Eventually(t, func() bool { return outboxLen(h, "c/a") == 0 })
	dead, err := h.System().DeadLetters(context.Background(), "c/a")
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for _, l := range dead {
		got = append(got, l.Message.(dAdd).N)
		if !strings.Contains(l.Error, actors.ErrNoPart.Error()) {
			t.Errorf("dead letter %d: error %q does not name ErrNoPart", l.ID, l.Error)
		}
	}
	if !slices.Equal(got, []int{1, 2, 3}) {
		t.Fatalf("dead letters %v, want [1 2 3]", got)
	}
}

// Delete waits for the subtree's own durable messages; when they cannot
// be delivered within its context, it deletes nothing.
func TestDeleteWaitsForOutbox(t *testing.T) {
	h, down, _ := deleteHarness(t, actors.Options{})
	down.set("c/b", true)
	h.MustRequest("c/a", add{1})
	h.MustRequest("c/a/x", dSend{To: "c/b", N: []int{7}})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := h.System().Delete(ctx, "c/a"); !errors.Is(err, actors.ErrOutboxNotEmpty) {
		t.Fatalf("delete with a message undeliverable: %v, want ErrOutboxNotEmpty", err)
	}
	if got := counter(t, h, "c/a"); got != 1 {
		t.Fatalf("after the refused delete c/a = %d, want 1", got)
	}
	if got := children(t, h, "c/a"); !slices.Equal(got, []string{"x"}) {
		t.Fatalf("after the refused delete children of c/a: %v", got)
	}
	down.set("c/b", false)
	deletePath(t, h, "c/a")
	if got := counter(t, h, "c/b"); got != 7 {
		t.Fatalf("c/b = %d: the deleted part's message was not delivered first", got)
	}
}

// Requests racing with a delete either are handled before it or get
// ErrNoPart, never another error, and once one sender got ErrNoPart it
// gets nothing else.
func TestDeleteIsAtomicForMessages(t *testing.T) {
	h, _, _ := deleteHarness(t, actors.Options{})
	h.MustRequest("c/a", add{1})
	var wg sync.WaitGroup
	var handled atomic.Int64
	stop := make(chan struct{})
	for w := range 4 {
		wg.Go(func() {
			refused := false
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, err := h.Request("c/a", add{1})
				switch {
				case err == nil && refused:
					t.Errorf("sender %d: handled after ErrNoPart", w)
					return
				case err == nil:
					handled.Add(1)
				case errors.Is(err, actors.ErrNoPart):
					refused = true
				default:
					t.Errorf("sender %d: %v", w, err)
					return
				}
			}
		})
	}
	actortest.Eventually(t, func() bool { return handled.Load() > 20 })
	deletePath(t, h, "c/a")
	for range 10 {
		if _, err := h.Request("c/a", add{1}); !errors.Is(err, actors.ErrNoPart) {
			t.Fatalf("after the delete: %v", err)
		}
	}
	close(stop)
	wg.Wait()
}

// A deleted part's alarms leave the System's index.
func TestDeleteClearsAlarms(t *testing.T) {
	h, _, _ := deleteHarness(t, actors.Options{})
	h.MustRequest("c/a/x", delAlarm{In: time.Hour})
	index := filepath.Join(h.Dir(), "_fractal_alarms.db")
	count := func() int {
		db, err := persistence.Open(context.Background(), index, &persistence.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var n int
		if err := db.View(context.Background(), func(tx *persistence.Tx) error {
			return tx.QueryRow(`SELECT count(*) FROM alarms WHERE path LIKE 'c/a%'`).Scan(&n)
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if count() != 1 {
		t.Fatal("the alarm is not in the index")
	}
	deletePath(t, h, "c/a")
	if n := count(); n != 0 {
		t.Fatalf("%d entries of the deleted subtree left in the alarm index", n)
	}
}

// Deletions are counted by the deleted part's kind.
func TestDeleteMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	h, _, _ := deleteHarness(t, actors.Options{Registerer: reg})
	h.MustRequest("c/a/x", add{1})
	deletePath(t, h, "c/a/x")
	deletePath(t, h, "c/a")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "fractal_deletions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	if want := map[string]float64{"top": 0, "mid": 1, "leaf": 1}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("fractal_deletions_total %v, want %v", got, want)
	}
}

// A path another node serves is deleted there, not here.
func TestDeleteRefusesRemotePart(t *testing.T) {
	h := actortest.New(t, actors.Options{Kinds: testKinds(), Remote: &fakeRemote{}})
	err := h.System().Delete(context.Background(), "c/remote")
	if !errors.Is(err, actors.ErrRemotePart) {
		t.Fatalf("delete of a remote part: %v, want ErrRemotePart", err)
	}
}

// A child that is deleted is not restarted by its parent's supervision,
// and a deleted part's siblings keep theirs.
func TestDeletedChildLeavesSupervision(t *testing.T) {
	in := &incarnations{n: map[string]int{}}
	h := actortest.New(t, actors.Options{Kinds: []actors.Kind{
		in.kind("parent", "s", supervisor.Spec{Strategy: supervisor.OneForAll, Intensity: 10, Period: time.Second}, supervisor.Permanent),
		in.kind("child", "s/*", supervisor.Spec{}, supervisor.Permanent),
	}})
	h.MustRequest("s/a", add{1})
	h.MustRequest("s/b", add{1})
	deletePath(t, h, "s/a")
	panicIn(t, h, "s/b") // one_for_all: restarts the group, which s/a left
	if got := counter(t, h, "s/b"); got != 1 {
		t.Fatalf("s/b = %d", got)
	}
	if h.System().Active("s/a") || in.get("s/a") != 1 {
		t.Fatalf("deleted s/a brought back: active %v, made %d times", h.System().Active("s/a"), in.get("s/a"))
	}
}

// A child deleted while a group restart waits between stopping its
// children and starting them again is not started again.
func TestDeleteDuringGroupRestart(t *testing.T) {
	in := &incarnations{n: map[string]int{}}
	clk := actortest.NewClock(time.Time{})
	spec := supervisor.Spec{Strategy: supervisor.OneForAll, Intensity: 10, Period: time.Minute,
		Backoff: supervisor.Backoff{Initial: time.Hour, Max: time.Hour, Multiplier: 1}}
	h := actortest.New(t, actors.Options{Clock: clk, Kinds: []actors.Kind{
		in.kind("parent", "s", spec, supervisor.Permanent),
		in.kind("child", "s/*", supervisor.Spec{}, supervisor.Permanent),
	}})
	for _, c := range []string{"s/a", "s/b", "s/c"} {
		h.MustRequest(c, add{1})
	}
	panicIn(t, h, "s/b") // the group restart waits an hour of the fake clock
	deletePath(t, h, "s/a")
	clk.Advance(time.Hour)
	actortest.Eventually(t, func() bool { return in.get("s/b") == 2 && in.get("s/c") == 2 })
	if in.get("s/a") != 1 || exists(actors.MustParsePath("s/a").Dir(h.Dir())) {
		t.Fatalf("the group restart brought the deleted s/a back: made %d times", in.get("s/a"))
	}
	if _, err := h.Request("s/a", get{}); !errors.Is(err, actors.ErrNoPart) {
		t.Fatalf("request to s/a: %v", err)
	}
}

// When the parent cannot commit the tombstone, Delete fails and deletes
// nothing: the messages it held are handled.
func TestDeleteFailsWhenTheParentCannotCommit(t *testing.T) {
	var fenced atomic.Bool
	errFence := errors.New("test: fenced")
	h, _, _ := deleteHarness(t, actors.Options{Fence: func(p actors.Path) error {
		if fenced.Load() && p.String() == "c" {
			return errFence
		}
		return nil
	}})
	h.MustRequest("c/a/x", add{1})
	fenced.Store(true)
	err := h.System().Delete(context.Background(), "c/a")
	if !errors.Is(err, errFence) {
		t.Fatalf("delete with the parent fenced: %v", err)
	}
	fenced.Store(false)
	if got := counter(t, h, "c/a/x"); got != 1 {
		t.Fatalf("c/a/x = %d after the failed delete", got)
	}
	if got := children(t, h, "c"); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("children of c: %v", got)
	}
}

// A handler that deletes a subtree its call path waits in fails at once
// with ErrCallCycle, instead of waiting for itself to stop.
func TestDeleteFromHandlerInItsCallPath(t *testing.T) {
	var sys atomic.Pointer[actors.System]
	type deleteOther struct{ Path string }
	h := actors.HandlerFunc(func(c *actors.Context, msg any) (any, error) {
		if m, ok := msg.(deleteOther); ok {
			return nil, sys.Load().Delete(c.Context(), m.Path)
		}
		return counterHandler(c, msg)
	})
	kinds := []actors.Kind{
		{Name: "top", Pattern: "c", Migrations: counterMigrations, Handler: h},
		{Name: "mid", Pattern: "c/*", Migrations: counterMigrations, Handler: h},
		{Name: "leaf", Pattern: "c/*/*", Migrations: counterMigrations, Handler: h},
	}
	hs := actortest.New(t, actors.Options{Kinds: kinds})
	sys.Store(hs.System())
	hs.MustRequest("c/b", add{1})
	for _, tc := range []struct{ from, path string }{
		{"c/a/x", "c/a"},   // its own subtree
		{"c/a", "c/a"},     // itself
		{"c", "c/a"},       // its child: it records the tombstone
		{"c/b", "c/b/y"},   // its own child
		{"c/a/x", "c/a/x"}, // itself, a leaf
	} {
		_, err := hs.Request(tc.from, deleteOther{tc.path})
		if !errors.Is(err, actors.ErrCallCycle) {
			t.Errorf("%s deleting %s: %v, want ErrCallCycle", tc.from, tc.path, err)
		}
	}
	if _, err := hs.Request("c/a/x", deleteOther{"c/b"}); err != nil {
		t.Fatalf("c/a/x deleting c/b: %v", err)
	}
	if _, err := hs.Request("c/b", get{}); !errors.Is(err, actors.ErrNoPart) {
		t.Fatalf("c/b after its deletion from a handler: %v", err)
	}
}
