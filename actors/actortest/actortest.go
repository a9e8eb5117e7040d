// Package actortest runs fractal kinds in tests: a System on a temporary data
// directory, helpers to send messages, look inside a part's file and force
// restarts, and an integrity check of every part's file when the test ends.
//
//	func TestCounter(t *testing.T) {
//		h := actortest.New(t, actors.Options{Kinds: []actors.Kind{counterKind}})
//		h.MustRequest("counters/a", Incr{})
//		h.Restart("counters/a")
//		if got := h.QueryInt("counters/a", "SELECT n FROM counter"); got != 1 {
//			t.Fatalf("n = %d after restart, want 1", got)
//		}
//	}
//
// # Time
//
// A test of what the runtime times (Context.After, alarms, delivery
// retries, restart backoff, idle timeouts) passes a fake Clock as
// actors.Options.Clock and advances it: nothing happens before the test
// says so, and a minute of the test's time passes in a moment.
//
//	clk := actortest.NewClock(time.Time{})
//	h := actortest.New(t, actors.Options{Kinds: kinds, Clock: clk})
//	h.MustRequest("t/a", remind{after: time.Minute}) // its handler calls c.After
//	clk.WaitTimerAt(t, time.Minute) // armed once the handler has committed
//	clk.Advance(time.Minute)        // posts the message before it returns
//	// a request to t/a made now is handled after the timer's message
//
// Advance runs the due callbacks before it returns; what the runtime does
// in reaction happens on its goroutines afterwards, and it may arm the
// next timer only then: WaitTimer waits for a timer due within a delay,
// WaitTimerAt for one due exactly then (not the runtime's own 1 s ticks),
// and AdvanceUntil
// advances step by step until a condition holds. Everything timed moves
// together: an advance past a kind's idle timeout passivates its idle
// parts (and cancels their plain timers) as the wall clock would.
//
// # Waiting for conditions
//
// A test waits for what it expects, never for a duration: Eventually and
// CheckFor poll a condition within a bound (CheckFor reports what was still
// missing), Poll does so without failing the test, and WaitDelivered waits
// until parts have delivered every durable message they sent. What a test
// expects not to happen it checks after something that would have revealed
// it: a request to the part, which is handled after the messages already
// in its mailbox, or an advance of the fake clock past the time it would
// have happened.
package actortest

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/persistence"
)

// Timeout bounds every request a Harness makes.
const Timeout = 10 * time.Second

// A Harness is a System on a temporary data directory for one test.
type Harness struct {
	t    testing.TB
	dir  string
	opts actors.Options
	sys  *actors.System
}

// New opens a System with opts on a new temporary directory. When the test
// ends the System is closed and every part's file must pass SQLite's
// integrity check, or the test fails.
func New(t testing.TB, opts actors.Options) *Harness {
	t.Helper()
	return Open(t, t.TempDir(), opts)
}

// Open is New on a directory the test chose, for example one that an
// earlier Harness left behind.
func Open(t testing.TB, dir string, opts actors.Options) *Harness {
	t.Helper()
	h := &Harness{t: t, dir: dir, opts: opts}
	h.open()
	t.Cleanup(func() {
		h.Close()
		CheckDir(t, dir)
	})
	return h
}

func (h *Harness) open() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	sys, err := actors.Open(ctx, h.dir, h.opts)
	if err != nil {
		h.t.Fatalf("actortest: open %s: %v", h.dir, err)
	}
	h.sys = sys
}

// System returns the System under test.
func (h *Harness) System() *actors.System { return h.sys }

// Dir returns the data directory.
func (h *Harness) Dir() string { return h.dir }

// Request sends msg to path and waits (at most Timeout) for the reply.
func (h *Harness) Request(path string, msg any) (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	return h.sys.Request(ctx, path, msg)
}

// MustRequest is Request that fails the test on error.
func (h *Harness) MustRequest(path string, msg any) any {
	h.t.Helper()
	reply, err := h.Request(path, msg)
	if err != nil {
		h.t.Fatalf("actortest: request %s %T: %v", path, msg, err)
	}
	return reply
}

// Send sends msg to path without waiting, failing the test if it is refused.
func (h *Harness) Send(path string, msg any) {
	h.t.Helper()
	if err := h.sys.Send(path, msg); err != nil {
		h.t.Fatalf("actortest: send %s %T: %v", path, msg, err)
	}
}

// Restart forces a restart of the active part at path, as its parent does
// after a failure, failing the test if the part is not active.
func (h *Harness) Restart(path string) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	if err := h.sys.Restart(ctx, path); err != nil {
		h.t.Fatalf("actortest: restart %s: %v", path, err)
	}
}

// Close closes the System; closing twice is harmless.
func (h *Harness) Close() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	if err := h.sys.Close(ctx); err != nil {
		h.t.Errorf("actortest: close: %v", err)
	}
}

// Reopen closes the System and opens a new one on the same directory with
// the same options, as a process restart would.
func (h *Harness) Reopen() {
	h.t.Helper()
	h.Close()
	h.open()
}

// File returns the path of the SQLite file of the part at path.
func (h *Harness) File(path string) string {
	h.t.Helper()
	return actors.MustParsePath(path).File(h.dir)
}

// Exists reports whether the part at path has a file on disk.
func (h *Harness) Exists(path string) bool {
	h.t.Helper()
	_, err := os.Stat(h.File(path))
	return err == nil
}

// Query runs a read-only query on the file of the part at path, through a
// connection of its own (the part may be active), and returns the rows.
func (h *Harness) Query(path, query string, args ...any) [][]any {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	db, err := persistence.Open(ctx, h.File(path), &persistence.Options{ReadOnly: true})
	if err != nil {
		h.t.Fatalf("actortest: open %s read-only: %v", path, err)
	}
	defer db.Close()
	var out [][]any
	err = db.View(ctx, func(tx *persistence.Tx) error {
		rows, err := tx.Query(query, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		cols, err := rows.Columns()
		if err != nil {
			return err
		}
		for rows.Next() {
			row := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range row {
				ptrs[i] = &row[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				return err
			}
			out = append(out, row)
		}
		return rows.Err()
	})
	if err != nil {
		h.t.Fatalf("actortest: query %s: %v", path, err)
	}
	return out
}

// QueryInt runs a query that returns one integer, on the file of the part at
// path.
func (h *Harness) QueryInt(path, query string, args ...any) int64 {
	h.t.Helper()
	rows := h.Query(path, query, args...)
	if len(rows) != 1 || len(rows[0]) != 1 {
		h.t.Fatalf("actortest: query %s: %q returned %d rows, want one value", path, query, len(rows))
	}
	n, ok := rows[0][0].(int64)
	if !ok {
		h.t.Fatalf("actortest: query %s: %q returned %T, want int64", path, query, rows[0][0])
	}
	return n
}

// CheckDir runs SQLite's integrity check on every part file under dir,
// failing the test for each file that does not pass.
func CheckDir(t testing.TB, dir string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || d.Name() != actors.PartFileName {
			return nil
		}
		if err := persistence.CheckFile(ctx, path); err != nil {
			t.Errorf("actortest: integrity check of %s: %v", path, err)
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("actortest: walk %s: %v", dir, err)
	}
}
