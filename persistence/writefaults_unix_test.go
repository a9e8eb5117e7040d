//go:build unix

package persistence_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fractalrt/fractal/internal/unprivileged"
	"github.com/fractalrt/fractal/persistence"
)

// A file this process may not write is refused at Open, with ErrReadOnly
// and the file's name, and left as it was; SQLite alone would open it
// read-only and refuse each write later. A directory in which SQLite cannot
// create the log is refused with ErrReadOnly too. Root ignores permissions,
// so under root the test runs again as the user nobody.
func TestOpenRefusesAFileItMayNotWrite(t *testing.T) {
	if os.Geteuid() == 0 {
		unprivileged.Run(t, t.Name(), 2*time.Minute)
		return
	}
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "a.db")
	db := openTestDBAt(t, path, &persistence.Options{Migrations: kvSchema})
	mustUpdate(t, db, execAll(`INSERT INTO kv VALUES (1, 'one')`))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	before, size := fileDigest(t, path)
	if err := os.Chmod(path, 0o444); err != nil {
		t.Fatal(err)
	}
	_, err := persistence.Open(ctx, path, &persistence.Options{Migrations: kvSchema})
	if !errors.Is(err, persistence.ErrReadOnly) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Open of a file mode 0444: %v; want ErrReadOnly naming %s", err, path)
	}
	t.Logf("file: %v", err)
	if after, n := fileDigest(t, path); after != before || n != size {
		t.Error("the refused file changed")
	}
	// Reading it is still allowed.
	ro, err := persistence.Open(ctx, path, &persistence.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("read-only Open of a file mode 0444: %v", err)
	}
	if got := queryString(t, ro, `SELECT v FROM kv WHERE k = 1`); got != "one" {
		t.Errorf("read %q, want one", got)
	}
	ro.Close()

	// Writable file, but no log can be created beside it.
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"-wal", "-shm"} {
		if err := os.Remove(path + s); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o755) })
	_, err = persistence.Open(ctx, path, &persistence.Options{Migrations: kvSchema})
	if !errors.Is(err, persistence.ErrReadOnly) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Open in a directory mode 0555: %v; want ErrReadOnly naming %s", err, path)
	}
	t.Logf("directory: %v", err)

	// Repaired, it opens and writes.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	db = openTestDBAt(t, path, &persistence.Options{Migrations: kvSchema})
	mustUpdate(t, db, execAll(`INSERT INTO kv VALUES (2, 'two')`))
}

// SQLite's SQLITE_FULL ("database or disk is full") wraps ErrDiskFull, in
// the statement's error and in the commit's, and the DB stays usable.
// (A full file system is in internal/chaos's TestDiskFull, which needs a
// tmpfs; max_page_count gives SQLite's own error without one.)
func TestFullIsErrDiskFull(t *testing.T) {
	db := openTestDB(t, &persistence.Options{Migrations: kvSchema})
	ctx := context.Background()
	var pages int
	if err := db.View(ctx, func(tx *persistence.Tx) error {
		return tx.QueryRow(`PRAGMA page_count`).Scan(&pages)
	}); err != nil {
		t.Fatal(err)
	}
	mustUpdate(t, db, execAll(`PRAGMA max_page_count = `+strconv.Itoa(pages+2)))
	err := db.Update(ctx, func(tx *persistence.Tx) error {
		_, err := tx.Exec(`INSERT INTO kv VALUES (1, ?)`, strings.Repeat("x", 64<<10))
		return err
	})
	if !errors.Is(err, persistence.ErrDiskFull) {
		t.Fatalf("a write past max_page_count: %v; want ErrDiskFull", err)
	}
	t.Log(err)
	mustUpdate(t, db, execAll(`INSERT INTO kv VALUES (2, 'small')`))
	if got := queryString(t, db, `SELECT group_concat(k) FROM kv`); got != "2" {
		t.Errorf("rows %q, want 2", got)
	}
}
