package chaos

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fractalrt/fractal/actors"
	"github.com/fractalrt/fractal/actors/actortest"
	"github.com/fractalrt/fractal/persistence"
)

var seedFlag = flag.Uint64("chaos.seed", 0, "seed of the tests' random choices (0: from the clock); each test prints the one it used")

// newRand returns a seeded generator for t and logs its seed, so that a
// failure can be replayed with -chaos.seed.
func newRand(t testing.TB) (*rand.Rand, uint64) {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (replay with -chaos.seed=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, 0x5eed)), seed
}

// childCommand returns the command that runs this test binary again as a
// child process in the given role (see TestMain), and the buffer that
// keeps the end of its standard error.
func childCommand(t testing.TB, role string, env ...string) (*exec.Cmd, *tailBuffer) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(append(os.Environ(), childEnv+"="+role), env...)
	stderr := &tailBuffer{}
	cmd.Stderr = stderr
	return cmd, stderr
}

// tailBuffer keeps the last 64 KiB written to it; it is safe for
// concurrent use.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - 64<<10; over > 0 {
		b.buf = b.buf[over:]
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// childTrouble returns what a child's stderr says went wrong inside it (a
// data race, a panic, a fatal runtime error), or "".
func childTrouble(stderr string) string {
	for _, bad := range []string{"WARNING: DATA RACE", "panic:", "fatal error:", "SIGSEGV"} {
		if i := strings.Index(stderr, bad); i >= 0 {
			return stderr[i:min(len(stderr), i+4000)]
		}
	}
	return ""
}

// lineWriter writes whole lines to w, one write each, from any goroutine:
// on a pipe a write of less than PIPE_BUF bytes is atomic, so the reader
// sees every line that was written before the process died, and never
// half of one as a whole.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lineWriter) printf(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	s = strings.ReplaceAll(s, "\n", " ") + "\n"
	l.mu.Lock()
	defer l.mu.Unlock()
	io.WriteString(l.w, s)
}

// partFiles returns the part files under dir by path, and the runtime's
// own files (the root file and the alarm index).
func partFiles(t testing.TB, dir string) (parts map[string]string, runtime []string) {
	t.Helper()
	parts = map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		switch {
		case d.Name() == actors.PartFileName:
			path, err := actors.PathFromDir(dir, filepath.Dir(p))
			if err != nil {
				return fmt.Errorf("part file outside the tree's layout: %s: %w", p, err)
			}
			parts[path.String()] = p
		case strings.HasSuffix(d.Name(), ".db") && filepath.Dir(p) == dir:
			runtime = append(runtime, p)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	return parts, runtime
}

// readOnly opens file read-only and runs fn in a read transaction.
func readOnly(ctx context.Context, file string, fn func(tx *persistence.Tx) error) error {
	db, err := persistence.Open(ctx, file, &persistence.Options{ReadOnly: true})
	if err != nil {
		return err
	}
	defer db.Close()
	return db.View(ctx, fn)
}

// hotJournal reports whether err is SQLite refusing a read-only open of
// file because a rollback journal left by a crash must be rolled back
// first (SQLITE_READONLY_ROLLBACK). The runtime's files use a write-ahead
// log, but a file is created in rollback mode: a kill during its creation
// leaves such a journal, which the next read-write open rolls back.
func hotJournal(file string, err error) bool {
	if err == nil || !strings.Contains(err.Error(), "(776)") {
		return false
	}
	_, serr := os.Stat(file + "-journal")
	return serr == nil
}

// recoveredCopy copies file and its companions to a temporary directory
// and opens the copy read-write once, which rolls its hot journal back as
// the runtime's next open of the original would, and returns the copy: a
// check reads what the runtime will see, and leaves the original for the
// runtime's own recovery.
func recoveredCopy(t testing.TB, file string) string {
	t.Helper()
	tmp := t.TempDir()
	dst := filepath.Join(tmp, filepath.Base(file))
	for _, suffix := range []string{"", "-journal", "-wal"} {
		b, err := os.ReadFile(file + suffix)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst+suffix, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	db, err := sql.Open("sqlite", dst)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_schema`).Scan(&n); err != nil {
		t.Fatalf("recovering a copy of %s: %v", file, err)
	}
	return dst
}

// waitDelivered polls the outboxes of senders until none holds a durable
// message or within has passed since start, and returns how many are still
// undelivered (0 once all were delivered).
func waitDelivered(t testing.TB, sys *actors.System, senders []string, start time.Time, within time.Duration) int {
	t.Helper()
	ctx := context.Background()
	left := 0
	actortest.Poll(within-time.Since(start), 20*time.Millisecond, func() bool {
		left = 0
		for _, p := range senders {
			n, err := sys.Undelivered(ctx, p)
			if err != nil {
				t.Fatalf("undelivered messages of %s: %v", p, err)
			}
			left += n
		}
		return left == 0
	})
	return left
}

// queryStrings runs a query returning one text column (NULL as "").
func queryStrings(tx *persistence.Tx, query string, args ...any) ([]string, error) {
	rows, err := tx.Query(query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s *string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		if s == nil {
			out = append(out, "")
		} else {
			out = append(out, *s)
		}
	}
	return out, rows.Err()
}

// hasTable reports whether table exists in tx's file.
func hasTable(tx *persistence.Tx, table string) (bool, error) {
	var n int
	err := tx.QueryRow(`SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?`, table).Scan(&n)
	return n > 0, err
}

// checkAll runs SQLite's integrity check on every part file and runtime
// file under dir and returns the failures; hot counts the files that had
// a rollback journal, which CheckFile rolls back in a copy (see hotJournal).
func checkAll(t testing.TB, dir string) (checked, hot int, failures []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	parts, runtime := partFiles(t, dir)
	files := runtime
	for _, f := range parts {
		files = append(files, f)
	}
	for _, f := range files {
		checked++
		if _, err := os.Stat(f + "-journal"); err == nil {
			hot++ // CheckFile checks it rolled back, in a copy
		}
		if err := persistence.CheckFile(ctx, f); err != nil {
			failures = append(failures, fmt.Sprintf("%s: %v", f, err))
		}
	}
	return checked, hot, failures
}

// sum returns a file's bytes, for comparisons.
func fileBytes(t testing.TB, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sameFile(t testing.TB, file string, want []byte) bool {
	t.Helper()
	got, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(got, want)
}

// newRandFrom returns a generator for a derived seed.
func newRandFrom(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0xfa17)) }
