package actors_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
	"github.com/fractalrt/fractal/persistence"
)

// hold blocks its part until release is closed, so that messages queue up
// behind it and form one batch.
type hold struct{ entered, release chan struct{} }

func blockingKinds() []actors.Kind {
	k := testKinds()
	for i := range k {
		k[i].Handler = actors.HandlerFunc(func(c *actors.Context, msg any) (any, error) {
			if m, ok := msg.(hold); ok {
				close(m.entered)
				<-m.release
				return "released", nil
			}
			return counterHandler(c, msg)
		})
	}
	return k
}

// batchHarness serves blockingKinds with no time bound on batches, so that
// everything queued behind a hold forms one batch however slow the
// handlers run (the race detector slows them down a lot).
func batchHarness(t *testing.T) *actortest.Harness {
	return actortest.New(t, actors.Options{Kinds: blockingKinds(), MaxBatchDelay: time.Hour})
}

// queueBehind blocks the part at path and returns a function that lets it
// go once the caller has queued its messages.
func queueBehind(t *testing.T, h *actortest.Harness, path string) (unblock func()) {
	t.Helper()
	m := hold{entered: make(chan struct{}), release: make(chan struct{})}
	h.Send(path, m)
	<-m.entered
	return func() { close(m.release) }
}

// reply is what a request queued by queueRequests got.
type reply struct {
	v   any
	err error
}

// queueRequests sends msgs to path, one request each, in order: each is in
// the part's mailbox before the next is sent. The part must be held by
// queueBehind, so that they all wait in one batch.
func queueRequests(t *testing.T, h *actortest.Harness, path string, msgs ...any) []chan reply {
	t.Helper()
	out := make([]chan reply, len(msgs))
	for i, m := range msgs {
		out[i] = make(chan reply, 1)
		go func() {
			v, err := h.Request(path, m)
			out[i] <- reply{v, err}
		}()
		actortest.Eventually(t, func() bool { return h.System().MailboxLen(path) >= i+2 })
	}
	return out
}

func TestGroupCommitBatchesQueuedMessages(t *testing.T) {
	for _, d := range []actors.Durability{actors.PowerLoss, actors.PowerLossPerCommit, actors.ProcessCrash} {
		t.Run(d.String(), func(t *testing.T) {
			// No time bound here: the race detector slows handlers enough
			// to reach the default one.
			h := actortest.New(t, actors.Options{Kinds: blockingKinds(), Durability: d, MaxBatchDelay: time.Hour})
			h.MustRequest("c/a", add{0})
			h.MustRequest("c", add{0}) // its parent has noted c/a's new file: no commit of its comes later
			before := h.System().Stats()
			unblock := queueBehind(t, h, "c/a")
			const n = 100
			for range n {
				h.Send("c/a", add{1})
			}
			unblock()
			// Queued behind the adds, so they are all done when it answers.
			if got := counter(t, h, "c/a"); got != n {
				t.Fatalf("counter = %d, want %d", got, n)
			}
			st := h.System().Stats()
			msgs, commits := st.Messages-before.Messages, st.Commits-before.Commits
			// hold, the n adds and the get were queued together: at most
			// MaxBatch messages per commit, so they fit in one (two if the
			// get came a little late).
			if msgs != n+2 || commits > 2 {
				t.Fatalf("%d messages in %d commits: queued messages were not batched", msgs, commits)
			}
			if d != actors.PowerLoss && st.Syncs != 0 {
				t.Fatalf("%d barrier syncs without the barrier", st.Syncs)
			}
		})
	}
}

func TestBatchBounds(t *testing.T) {
	for name, o := range map[string]actors.Options{
		"MaxBatch=1":        {MaxBatch: 1},
		"MaxBatchDelay=1ns": {MaxBatchDelay: time.Nanosecond},
	} {
		t.Run(name, func(t *testing.T) {
			o.Kinds = blockingKinds()
			testEachMessageCommits(t, o)
		})
	}
}

func testEachMessageCommits(t *testing.T, o actors.Options) {
	h := actortest.New(t, o)
	h.MustRequest("c/a", add{0})
	h.MustRequest("c", add{0}) // its parent has noted c/a's new file: no commit of its comes later
	before := h.System().Stats()
	unblock := queueBehind(t, h, "c/a")
	for range 20 {
		h.Send("c/a", add{1})
	}
	unblock()
	if got := counter(t, h, "c/a"); got != 20 {
		t.Fatalf("counter = %d, want 20", got)
	}
	st := h.System().Stats()
	if msgs, commits := st.Messages-before.Messages, st.Commits-before.Commits; msgs != commits {
		t.Fatalf("MaxBatch 1: %d messages in %d commits", msgs, commits)
	}
}

// In one batch, a failing message is rolled back alone and its caller gets
// its error; the others commit.
func TestBatchFailureIsolated(t *testing.T) {
	h := batchHarness(t)
	h.MustRequest("c/a", add{0})
	unblock := queueBehind(t, h, "c/a")
	msgs := []any{add{1}, addFail{100}, add{10}, forwardFail{To: "./x"}, add{100}}
	results := queueRequests(t, h, "c/a", msgs...)
	unblock()
	want := []reply{{1, nil}, {nil, errTest}, {11, nil}, {nil, errTest}, {111, nil}}
	for i := range msgs {
		got := <-results[i]
		if got.v != want[i].v || !errors.Is(got.err, want[i].err) {
			t.Errorf("message %d (%T): got %v, %v; want %v, %v", i, msgs[i], got.v, got.err, want[i].v, want[i].err)
		}
	}
	if got := counter(t, h, "c/a"); got != 111 {
		t.Fatalf("counter = %d, want 111", got)
	}
	h.Close()
	if h.Exists("c/a/x") {
		t.Fatal("a message sent by a failed handler in the batch was delivered")
	}
}

// A panic in a batch: the messages before it commit and are answered, the
// panicking one gets a PanicError, the part restarts and handles the rest.
func TestBatchPanicCommitsTheRest(t *testing.T) {
	h := batchHarness(t)
	h.MustRequest("c/a", add{0})
	unblock := queueBehind(t, h, "c/a")
	errs := queueRequests(t, h, "c/a", add{1}, addPanic{100}, add{10})
	unblock()
	if r := <-errs[0]; r.err != nil {
		t.Fatalf("message before the panic: %v", r.err)
	}
	if r := <-errs[1]; !errors.Is(r.err, actors.ErrPanic) {
		t.Fatalf("panicking message: %v", r.err)
	}
	if r := <-errs[2]; r.err != nil {
		t.Fatalf("message after the panic: %v", r.err)
	}
	if got := counter(t, h, "c/a"); got != 11 {
		t.Fatalf("counter = %d, want 11", got)
	}
}

// A commit that fails turns every reply of its batch into an error, and
// nothing of the batch persists.
func TestBatchCommitFailureFailsAll(t *testing.T) {
	h := batchHarness(t)
	h.MustRequest("c/a", add{5})
	unblock := queueBehind(t, h, "c/a")
	msgs := []any{add{1}, addOrphan{}, forward{To: "./x"}}
	errs := queueRequests(t, h, "c/a", msgs...)
	unblock()
	for i := range msgs {
		if r := <-errs[i]; !errors.Is(r.err, persistence.ErrCommit) {
			t.Errorf("message %d (%T): %v, want ErrCommit", i, msgs[i], r.err)
		}
	}
	if got := counter(t, h, "c/a"); got != 5 {
		t.Fatalf("counter = %d after a failed batch, want 5", got)
	}
	h.Close()
	if h.Exists("c/a/x") {
		t.Fatal("a message of a failed batch was sent")
	}
}

func TestOptionsValidated(t *testing.T) {
	for _, o := range []actors.Options{
		{Durability: actors.Durability(7)},
		{MaxBatch: -1},
		{MaxBatchDelay: -1},
	} {
		o.Kinds = testKinds()
		if _, err := actors.Open(t.Context(), t.TempDir(), o); err == nil {
			t.Errorf("Open with %+v succeeded", o)
		}
	}
	if s := fmt.Sprint(actors.PowerLoss, actors.PowerLossPerCommit, actors.ProcessCrash); s != "power-loss power-loss-per-commit process-crash" {
		t.Errorf("durability names: %s", s)
	}
}

// A part slower than its callers: its mailbox is bounded and callers get a
// backpressure error instead of the process growing.
func TestMailboxBoundGivesBackpressure(t *testing.T) {
	h := actortest.New(t, actors.Options{Kinds: blockingKinds(), MaxMailbox: 10, MaxBatchDelay: time.Hour})
	h.MustRequest("c/a", add{0})
	unblock := queueBehind(t, h, "c/a") // the hold counts as one until handled
	for range 9 {
		h.Send("c/a", add{1})
	}
	if err := h.System().Send("c/a", add{1}); !errors.Is(err, actors.ErrBackpressure) {
		t.Fatalf("send to a full mailbox: %v, want ErrBackpressure", err)
	}
	if _, err := h.Request("c/a", add{1}); !errors.Is(err, actors.ErrBackpressure) {
		t.Fatalf("request to a full mailbox: %v, want ErrBackpressure", err)
	}
	if _, err := h.Request("c/b", add{1}); err != nil {
		t.Fatalf("another part is not affected: %v", err)
	}
	unblock()
	// The queue drains; a request made before it has is refused too.
	actortest.Eventually(t, func() bool {
		v, err := h.Request("c/a", get{})
		if errors.Is(err, actors.ErrBackpressure) {
			return false
		}
		if err != nil || v != 9 {
			t.Fatalf("counter = %v, %v; want the 9 admitted messages", v, err)
		}
		return true
	})
}
