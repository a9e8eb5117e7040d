package persistence_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/fractalrt/fractal/persistence"
)

func TestBackupIsAConsistentCopy(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.db")
	db := openTestDBAt(t, src, &persistence.Options{Migrations: []persistence.Migration{{SQL: `CREATE TABLE t (x INTEGER)`}}})
	mustUpdate(t, db, execAll(`INSERT INTO t VALUES (1), (2), (3)`))

	// A backup taken through a read-only connection while the writer holds
	// an open, uncommitted transaction sees only committed rows.
	tx, err := db.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`INSERT INTO t VALUES (100)`); err != nil {
		t.Fatal(err)
	}
	ro, err := persistence.Open(context.Background(), src, &persistence.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(dir, "copy.db")
	if err := ro.Backup(context.Background(), dest); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := ro.Backup(context.Background(), dest); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("backup over an existing file: %v, want fs.ErrExist", err)
	}
	ro.Close()
	for _, suffix := range []string{"-wal", "-shm"} {
		if _, err := os.Stat(dest + suffix); err == nil {
			t.Errorf("backup left %s", dest+suffix)
		}
	}

	cp := openTestDBAt(t, dest, &persistence.Options{Migrations: []persistence.Migration{{SQL: `CREATE TABLE t (x INTEGER)`}}})
	var n, sum int
	if err := cp.View(context.Background(), func(tx *persistence.Tx) error {
		return tx.QueryRow(`SELECT count(*), sum(x) FROM t`).Scan(&n, &sum)
	}); err != nil {
		t.Fatal(err)
	}
	if n != 3 || sum != 6 {
		t.Fatalf("copy holds %d rows summing to %d, want the 3 committed rows (6)", n, sum)
	}
	if cp.Version() != 1 {
		t.Fatalf("copy at version %d", cp.Version())
	}
}
