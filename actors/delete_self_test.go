package actors_test

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
	"github.com/fractalrt/fractal/persistence"
)

// Context.Delete deletes the part once the message commits: its reply
// goes out, its durable message is delivered first.
func TestContextDelete(t *testing.T) {
	h, _, _ := deleteHarness(t, actors.Options{})
	h.MustRequest("c/a/x", add{1})
	if got := h.MustRequest("c/a", delSelf{Notify: "c/b"}); got != "bye" {
		t.Fatalf("reply %v", got)
	}
	actortest.Eventually(t, func() bool {
		_, err := h.Request("c/a", get{})
		return errors.Is(err, actors.ErrNoPart)
	})
	if got := counter(t, h, "c/b"); got != 1 {
		t.Fatalf("c/b = %d: the durable message was not delivered before the delete", got)
	}
	actortest.Eventually(t, func() bool { return !exists(actors.MustParsePath("c/a").Dir(h.Dir())) })
	if got := children(t, h, "c"); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("children: %v", got)
	}
}

// A Context.Delete that could not finish before Close (its durable message
// undeliverable) is carried out after Open.
func TestContextDeleteSurvivesClose(t *testing.T) {
	h, down, attempts := deleteHarness(t, actors.Options{})
	down.set("c/b", true)
	h.MustRequest("c/a", delSelf{Notify: "c/b"})
	actortest.Eventually(t, func() bool { return attempts.Load() > 0 })
	h.Reopen()
	if got := children(t, h, "c"); !slices.Contains(got, "a") {
		t.Fatalf("c/a deleted with its message undelivered: children %v", got)
	}
	down.set("c/b", false)
	actortest.Eventually(t, func() bool {
		_, err := h.Request("c/a", get{})
		return errors.Is(err, actors.ErrNoPart)
	})
	if got := counter(t, h, "c/b"); got != 1 {
		t.Fatalf("c/b = %d", got)
	}
}

// A Context.Delete whose deletion failed (its subtree overlapped a drain)
// is tried again at once after a reopen, not when its alarm's lease ends.
func TestContextDeleteRetriedAfterReopen(t *testing.T) {
	logs := &logLines{}
	h, _, _ := deleteHarness(t, actors.Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	h.MustRequest("c/a/x", add{1})
	release, err := h.System().Drain(context.Background(), "c/a/x")
	if err != nil {
		t.Fatal(err)
	}
	h.MustRequest("c/a", delSelf{})
	index := filepath.Join(h.Dir(), "_fractal_alarms.db")
	leased := func() bool { // the delete alarm's wake was sent, and its entry leased
		db, err := persistence.Open(context.Background(), index, &persistence.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var n int
		if err := db.View(context.Background(), func(tx *persistence.Tx) error {
			return tx.QueryRow(`SELECT count(*) FROM alarms WHERE path = 'c/a' AND name = '_fractal.delete' AND due > ?`,
				time.Now().Add(10*time.Second).UnixNano()).Scan(&n)
		}); err != nil {
			t.Fatal(err)
		}
		return n == 1
	}
	actortest.Eventually(t, leased)
	actortest.Eventually(t, func() bool { return logs.has("deleting a part: tried again") }) // refused: a drain overlaps
	release()
	if got := children(t, h, "c"); !slices.Contains(got, "a") {
		t.Fatalf("c/a deleted while its subtree was drained: %v", got)
	}
	h.Reopen()
	// Without activating c/a (an activation registers its alarms again).
	actortest.Eventually(t, func() bool { return !slices.Contains(children(t, h, "c"), "a") })
	if _, err := h.Request("c/a", get{}); !errors.Is(err, actors.ErrNoPart) {
		t.Fatalf("request to c/a: %v, want ErrNoPart", err)
	}
}

// logLines collects a logger's output.
type logLines struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logLines) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Contains(l.b.String(), s)
}
