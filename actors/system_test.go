package actors_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
	"github.com/fractalrt/fractal/persistence"
)

// Messages of the test kinds.
type (
	add         struct{ N int }     // add N to the counter; reply the new value
	addFail     struct{ N int }     // add N, then return an error
	addPanic    struct{ N int }     // add N, then panic
	get         struct{}            // reply the counter
	addOrphan   struct{}            // violate a deferred foreign key: the commit fails
	forward     struct{ To string } // send add{1} to To, then reply
	forwardFail struct{ To string } // send add{1} to To, then fail
)

var errTest = errors.New("test: handler failed")

var counterMigrations = []persistence.Migration{
	{Name: "counter", SQL: `CREATE TABLE counter (n INTEGER NOT NULL); INSERT INTO counter VALUES (0)`},
	{Name: "deferred fk", SQL: `CREATE TABLE parent (id INTEGER PRIMARY KEY);
		CREATE TABLE child (pid INTEGER NOT NULL REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)`},
}

func counterHandler(c *actors.Context, msg any) (any, error) {
	incr := func(n int) (int, error) {
		var v int
		err := c.QueryRow(`UPDATE counter SET n = n + ? RETURNING n`, n).Scan(&v)
		return v, err
	}
	switch m := msg.(type) {
	case add:
		return incr(m.N)
	case addFail:
		if _, err := incr(m.N); err != nil {
			return nil, err
		}
		return nil, errTest
	case addPanic:
		if _, err := incr(m.N); err != nil {
			return nil, err
		}
		panic("test: handler panicked")
	case get:
		return incr(0)
	case addOrphan:
		if _, err := incr(1); err != nil {
			return nil, err
		}
		_, err := c.Exec(`INSERT INTO child (pid) VALUES (42)`)
		return "written", err
	case forward:
		return "sent", c.Send(m.To, add{1})
	case forwardFail:
		if err := c.Send(m.To, add{1}); err != nil {
			return nil, err
		}
		return nil, errTest
	}
	return nil, fmt.Errorf("%w: %T", actors.ErrUnknownMessage, msg)
}

// testKinds: a tree of counters, three levels deep.
func testKinds() []actors.Kind {
	h := actors.HandlerFunc(counterHandler)
	return []actors.Kind{
		{Name: "top", Pattern: "c", Migrations: counterMigrations, Handler: h},
		{Name: "mid", Pattern: "c/*", Migrations: counterMigrations, Handler: h},
		{Name: "leaf", Pattern: "c/*/*", Migrations: counterMigrations, Handler: h},
	}
}

func newHarness(t *testing.T) *actortest.Harness {
	return actortest.New(t, actors.Options{Kinds: testKinds()})
}

func counter(t *testing.T, h *actortest.Harness, path string) int {
	t.Helper()
	v, err := h.Request(path, get{})
	if err != nil {
		t.Fatalf("get %s: %v", path, err)
	}
	return v.(int)
}

func TestRequestCommitsBeforeReply(t *testing.T) {
	h := newHarness(t)
	for i := 1; i <= 3; i++ {
		if got := h.MustRequest("c/a/x", add{1}); got != i {
			t.Fatalf("add #%d replied %v", i, got)
		}
		// The reply was released: the write must already be in the file,
		// visible to another connection.
		if n := h.QueryInt("c/a/x", "SELECT n FROM counter"); n != int64(i) {
			t.Fatalf("after reply %d the file holds n=%d", i, n)
		}
	}
}

func TestHandlerErrorRollsBack(t *testing.T) {
	h := newHarness(t)
	h.MustRequest("c/a", add{5})
	_, err := h.Request("c/a", addFail{100})
	if !errors.Is(err, errTest) {
		t.Fatalf("error = %v, want the handler's error", err)
	}
	if got := counter(t, h, "c/a"); got != 5 {
		t.Fatalf("counter = %d after a failed message, want 5", got)
	}
}

func TestCommitFailureTurnsReplyIntoError(t *testing.T) {
	h := newHarness(t)
	h.MustRequest("c/a", add{1})
	reply, err := h.Request("c/a", addOrphan{})
	if !errors.Is(err, persistence.ErrCommit) {
		t.Fatalf("reply %v, error %v; want an error wrapping persistence.ErrCommit", reply, err)
	}
	if reply != nil {
		t.Fatalf("reply %v released although the commit failed", reply)
	}
	if got := counter(t, h, "c/a"); got != 1 {
		t.Fatalf("counter = %d after the failed commit, want 1", got)
	}
	if n := h.QueryInt("c/a", "SELECT count(*) FROM child"); n != 0 {
		t.Fatalf("%d rows of the failed commit persisted", n)
	}
}

func TestSendHeldUntilCommit(t *testing.T) {
	h := newHarness(t)
	// Sent by a message that fails: never delivered.
	if _, err := h.Request("c/a", forwardFail{To: "./x"}); !errors.Is(err, errTest) {
		t.Fatalf("forwardFail: %v", err)
	}
	// Sent by a message that commits: delivered, relative path resolved.
	h.MustRequest("c/a", forward{To: "./x"})
	actortest.Eventually(t, func() bool { return counter(t, h, "c/a/x") == 1 })
	h.MustRequest("c/a/x", forward{To: "../../b"})
	actortest.Eventually(t, func() bool { return counter(t, h, "c/b") == 1 })
	// The failed one never arrived, even later.
	h.Close()
	if n := h.QueryInt("c/a/x", "SELECT n FROM counter"); n != 1 {
		t.Fatalf("c/a/x counter = %d, want 1: a message sent by a rolled-back handler was delivered", n)
	}
}

func TestSendRefusesBadPaths(t *testing.T) {
	h := newHarness(t)
	for _, to := range []string{"../../..", "../../../etc", "./", "c//x", "./x/y/z"} {
		_, err := h.Request("c/a", forward{To: to})
		if !errors.Is(err, actors.ErrInvalidPath) && !errors.Is(err, actors.ErrNoKind) {
			t.Errorf("send to %q from c/a: error %v, want ErrInvalidPath or ErrNoKind", to, err)
		}
	}
}

func TestReopenKeepsState(t *testing.T) {
	h := newHarness(t)
	paths := []string{"c", "c/a", "c/a/x", "c/b/alice@example.org", "c/B/Zoë"}
	for i, p := range paths {
		h.MustRequest(p, add{i + 1})
	}
	h.Reopen()
	for i, p := range paths {
		if got := counter(t, h, p); got != i+1 {
			t.Errorf("%s = %d after reopen, want %d", p, got, i+1)
		}
	}
}

func TestCloseTwiceAndAfterClose(t *testing.T) {
	h := newHarness(t)
	h.MustRequest("c/a", add{1})
	ctx := context.Background()
	if err := h.System().Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.System().Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := h.System().Request(ctx, "c/a", get{}); !errors.Is(err, actors.ErrClosed) {
		t.Fatalf("request after Close: %v, want ErrClosed", err)
	}
	if err := h.System().Send("c/a", get{}); !errors.Is(err, actors.ErrClosed) {
		t.Fatalf("send after Close: %v, want ErrClosed", err)
	}
	// Close closed every file: no WAL left behind.
	if _, err := os.Stat(h.File("c/a") + "-wal"); !os.IsNotExist(err) {
		t.Fatalf("WAL file left after Close: %v", err)
	}
}

func TestCloseWaitsForAcceptedMessages(t *testing.T) {
	h := newHarness(t)
	const n = 200
	for i := 0; i < n; i++ {
		h.Send(fmt.Sprintf("c/p%d", i%10), add{1})
	}
	// Messages sent by handlers while closing are delivered too.
	h.Send("c/a", forward{To: "./x"})
	h.Close()
	var total int64
	for i := 0; i < 10; i++ {
		total += h.QueryInt(fmt.Sprintf("c/p%d", i), "SELECT n FROM counter")
	}
	if total != n {
		t.Fatalf("%d of %d accepted messages applied before Close returned", total, n)
	}
	if got := h.QueryInt("c/a/x", "SELECT n FROM counter"); got != 1 {
		t.Fatalf("message sent during Close: counter %d, want 1", got)
	}
}

func TestInvalidPathCreatesNothing(t *testing.T) {
	h := newHarness(t)
	before := listDir(t, h.Dir())
	for _, p := range []string{"../../etc/passwd", "", "c//x", "/c", "c/", "c/..", "c/./x", "c/a/x/../../../.."} {
		_, err := h.Request(p, add{1})
		if !errors.Is(err, actors.ErrInvalidPath) {
			t.Errorf("request to %q: %v, want ErrInvalidPath", p, err)
		}
	}
	for _, p := range []string{"d", "c/a/x/y", "etc/passwd"} {
		_, err := h.Request(p, add{1})
		if !errors.Is(err, actors.ErrNoKind) {
			t.Errorf("request to %q: %v, want ErrNoKind", p, err)
		}
	}
	if after := listDir(t, h.Dir()); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Fatalf("bad paths created files:\nbefore %v\nafter  %v", before, after)
	}
}

func listDir(t *testing.T, dir string) []string {
	var out []string
	err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		out = append(out, p)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func TestNewerSchemaRefusedAndUntouched(t *testing.T) {
	dir := t.TempDir()
	h := actortest.Open(t, dir, actors.Options{Kinds: testKinds()})
	h.MustRequest("c/a", add{1})
	h.MustRequest("c/b", add{2})
	h.Close()
	file := h.File("c/a")
	sum := fileSum(t, file)

	// The same tree with an older schema for "mid".
	kinds := testKinds()
	kinds[1].Migrations = kinds[1].Migrations[:1]
	h2 := actortest.Open(t, t.TempDir(), actors.Options{Kinds: kinds})
	h2.Close()
	sys, err := actors.Open(context.Background(), dir, actors.Options{Kinds: kinds})
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close(context.Background())
	_, err = sys.Request(context.Background(), "c/a", get{})
	if !errors.Is(err, actors.ErrActivation) || !errors.Is(err, persistence.ErrSchemaTooNew) {
		t.Fatalf("request to a newer file: %v, want ErrActivation and ErrSchemaTooNew", err)
	}
	// The parent still serves: one part's failure does not stop others.
	if _, err := sys.Request(context.Background(), "c", get{}); err != nil {
		t.Fatalf("parent of the refused part: %v", err)
	}
	if err := sys.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := fileSum(t, file); got != sum {
		t.Fatalf("refused file was modified")
	}
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func TestExpiredRequestNotHandled(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.System().Request(ctx, "c/a", add{1}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled request: %v", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	h.System().Request(ctx, "c/a", add{1})
	if got := counter(t, h, "c/a"); got != 0 {
		t.Fatalf("an expired request was applied: counter %d", got)
	}
}

func TestDirectoryLocked(t *testing.T) {
	h := newHarness(t)
	_, err := actors.Open(context.Background(), h.Dir(), actors.Options{Kinds: testKinds()})
	if !errors.Is(err, actors.ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
}

func TestInvalidTree(t *testing.T) {
	h := actors.HandlerFunc(counterHandler)
	cases := []struct {
		name  string
		kinds []actors.Kind
		want  string
	}{
		{"missing parent", []actors.Kind{{Name: "a", Pattern: "a/*", Handler: h}}, "parent level"},
		{"overlap", []actors.Kind{{Name: "a", Pattern: "a", Handler: h}, {Name: "b", Pattern: "*", Handler: h}}, "both match"},
		{"duplicate name", []actors.Kind{{Name: "a", Pattern: "a", Handler: h}, {Name: "a", Pattern: "b", Handler: h}}, "twice"},
		{"no handler", []actors.Kind{{Name: "a", Pattern: "a"}}, "exactly one"},
		{"both handlers", []actors.Kind{{Name: "a", Pattern: "a", Handler: h, New: func(actors.Path) actors.Handler { return h }}}, "exactly one"},
		{"bad name", []actors.Kind{{Name: "a b", Pattern: "a", Handler: h}}, "name"},
		{"bad pattern", []actors.Kind{{Name: "a", Pattern: "a//b", Handler: h}}, "segment"},
		{"dotdot pattern", []actors.Kind{{Name: "a", Pattern: "..", Handler: h}}, "segment"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := actors.Open(context.Background(), dir, actors.Options{Kinds: tc.kinds})
			if !errors.Is(err, actors.ErrInvalidTree) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want ErrInvalidTree mentioning %q", err, tc.want)
			}
		})
	}
}

func TestManyPartsConcurrently(t *testing.T) {
	h := newHarness(t)
	const parts, each = 40, 25
	var wg sync.WaitGroup
	errs := make(chan error, parts)
	for i := 0; i < parts; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			path := fmt.Sprintf("c/g%d/p%d", i%4, i)
			for j := 0; j < each; j++ {
				if _, err := h.Request(path, add{1}); err != nil {
					errs <- err
					return
				}
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i := 0; i < parts; i++ {
		if got := counter(t, h, fmt.Sprintf("c/g%d/p%d", i%4, i)); got != each {
			t.Fatalf("part %d counter %d, want %d", i, got, each)
		}
	}
}

func (panicky) Handle(c *actors.Context, msg any) (any, error) { return counterHandler(c, msg) }

func TestChildrenRecordedDurably(t *testing.T) {
	h := newHarness(t)
	for _, p := range []string{"c/a/x", "c/a/y", "c/b", "c/a/alice@example.org"} {
		h.MustRequest(p, add{1})
	}
	check := func(when string) {
		t.Helper()
		for path, want := range map[string]string{"": "[c]", "c": "[a b]", "c/a": "[alice@example.org x y]", "c/b": "[]", "c/q": "[]"} {
			got, err := h.System().Children(context.Background(), path)
			if err != nil || fmt.Sprint(got) != want {
				t.Errorf("%s: Children(%q) = %v, %v; want %s", when, path, got, err, want)
			}
		}
	}
	check("while active")
	h.Reopen()
	check("after reopen, nothing active")
	if _, err := h.System().Children(context.Background(), "../x"); !errors.Is(err, actors.ErrInvalidPath) {
		t.Fatalf("Children of an invalid path: %v", err)
	}
}

// A message a handler sends outside its own subtree passes through the
// smallest common whole; one inside it goes straight to its target.
func TestSendOutsideSubtreeEscalates(t *testing.T) {
	h := newHarness(t)
	h.MustRequest("c/b/y", add{0})
	relays := func() uint64 { return h.System().Stats().Relays }

	before := relays()
	h.MustRequest("c/a", forward{To: "./x"}) // inside: direct
	actortest.Eventually(t, func() bool { return counter(t, h, "c/a/x") == 1 })
	if relays() != before {
		t.Fatalf("a send into the sender's own subtree was relayed")
	}
	h.MustRequest("c/a/x", forward{To: "../../b/y"}) // via c
	actortest.Eventually(t, func() bool { return counter(t, h, "c/b/y") == 1 })
	if got := relays() - before; got != 1 {
		t.Fatalf("%d relays for a send across subtrees, want 1", got)
	}
	h.MustRequest("c/a/x", forward{To: "c/a"}) // to an ancestor: via that ancestor itself
	actortest.Eventually(t, func() bool { return counter(t, h, "c/a") == 1 })
	if got := relays() - before; got != 2 {
		t.Fatalf("%d relays, want 2", got)
	}
}
