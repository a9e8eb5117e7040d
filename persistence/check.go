package persistence

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// maxIntegrityProblems bounds the problems IntegrityCheck reports.
const maxIntegrityProblems = 10

// IntegrityCheck runs PRAGMA integrity_check on the file. It returns nil
// when SQLite answers "ok", and otherwise an error wrapping [ErrCorrupt]
// that lists the first problems found. It waits for the current transaction
// to end.
func (db *DB) IntegrityCheck(ctx context.Context) error {
	if err := db.acquire(ctx); err != nil {
		return wrapAcquire("integrity check", err)
	}
	defer db.release()
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.closed.Load() {
		return ErrClosed
	}

	rows, err := db.conn.QueryContext(ctx, "PRAGMA integrity_check("+strconv.Itoa(maxIntegrityProblems)+")")
	if err != nil {
		return fmt.Errorf("persistence: integrity check %s: %w", db.path, db.classify(err))
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return fmt.Errorf("persistence: integrity check %s: %w", db.path, db.classify(err))
		}
		for _, line := range strings.Split(s, "\n") {
			if line = strings.TrimSpace(line); line != "" && len(problems) < maxIntegrityProblems {
				problems = append(problems, line)
			}
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("persistence: integrity check %s: %w", db.path, db.classify(err))
	}
	if len(problems) == 1 && problems[0] == "ok" {
		return nil
	}
	if len(problems) == 0 {
		return fmt.Errorf("%w: %s: integrity check returned no result", ErrCorrupt, db.path)
	}
	return fmt.Errorf("%w: %s: %s", ErrCorrupt, db.path, strings.Join(problems, "; "))
}

// CheckFile opens the file at path read-only, runs [DB.IntegrityCheck] and
// closes it. The error wraps [ErrCorrupt] when the file is damaged or is not
// a SQLite database, and [fs.ErrNotExist] when it is missing.
//
// A file in rollback-journal mode that a crash left with a hot journal
// (path + "-journal") cannot be read read-only: SQLite must roll the
// interrupted transaction back first, which the next read-write open does.
// CheckFile then checks what that open would find: it copies the file and
// its journal to a temporary directory (as much space as the file takes),
// rolls the copy back and checks the copy, leaving the original as it was.
//
// Like any read-only DB, it may leave empty -wal and -shm files next to a
// WAL-mode database (see [Options.ReadOnly]).
func CheckFile(ctx context.Context, path string) error {
	err := checkFile(ctx, path)
	if sqliteExtendedCode(err) != sqliteReadOnlyRollback {
		return err
	}
	if _, serr := os.Stat(path + "-journal"); serr != nil {
		return err
	}
	tmp, terr := os.MkdirTemp("", "fractal-check-")
	if terr != nil {
		return errors.Join(err, fmt.Errorf("persistence: check %s: recovering a copy: %w", path, terr))
	}
	defer os.RemoveAll(tmp)
	cp := filepath.Join(tmp, filepath.Base(path))
	for _, suffix := range []string{"", "-journal"} {
		if cerr := copyFile(path+suffix, cp+suffix); cerr != nil {
			return errors.Join(err, fmt.Errorf("persistence: check %s: recovering a copy: %w", path, cerr))
		}
	}
	// The first read of a read-write connection rolls the copy's journal
	// back.
	if rerr := rollBack(ctx, cp); rerr != nil {
		return fmt.Errorf("persistence: check %s (rolled back in a copy): %w", path, classify(rerr))
	}
	if cerr := checkFile(ctx, cp); cerr != nil {
		return fmt.Errorf("persistence: check %s (rolled back in a copy): %w", path, cerr)
	}
	return nil
}

// checkFile is CheckFile without the recovery of a hot journal.
func checkFile(ctx context.Context, path string) error {
	db, err := Open(ctx, path, &Options{ReadOnly: true})
	if err != nil {
		return err
	}
	checkErr := db.IntegrityCheck(ctx)
	closeErr := db.Close()
	return errors.Join(checkErr, closeErr)
}

// rollBack opens the file at path read-write, which rolls a hot journal
// back, and closes it.
func rollBack(ctx context.Context, path string) error {
	dsn, err := fileURI(path, false)
	if err != nil {
		return err
	}
	db, err := sql.Open("sqlite", strings.Replace(dsn, "mode=rwc", "mode=rw", 1))
	if err != nil {
		return err
	}
	var n int
	err = db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema`).Scan(&n)
	return errors.Join(err, db.Close())
}

// copyFile copies the file src to a new file dst.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
