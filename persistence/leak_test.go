package persistence_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/fractalrt/fractal/persistence"
)

func openFDs() int { e, _ := os.ReadDir("/proc/self/fd"); return len(e) }

// A failing Open must not keep any descriptor open.
func TestFailedOpenLeaksNoDescriptor(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	bad := []persistence.Migration{{SQL: "CREATE TABLE t (a)"}, {SQL: "INSERT INTO missing VALUES (1)"}}
	file := filepath.Join(dir, "f.db")
	_, err := persistence.Open(ctx, file, &persistence.Options{Migrations: bad})
	if !errors.Is(err, persistence.ErrMigration) {
		t.Fatal(err)
	}
	before := openFDs()
	for range 50 {
		persistence.Open(ctx, file, &persistence.Options{Migrations: bad})
	}
	if after := openFDs(); after != before {
		t.Fatalf("50 failed opens: %d descriptors before, %d after", before, after)
	}
}

// A read-only DB refuses every statement that could write anywhere: the
// read-only open mode covers its own file only, and a query could turn
// query_only off or attach another file read-write.
func TestReadOnlyRefusesWritesAnywhere(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	file := filepath.Join(dir, "f.db")
	db, err := persistence.Open(ctx, file, &persistence.Options{Migrations: []persistence.Migration{{SQL: "CREATE TABLE t (a); INSERT INTO t VALUES (1)"}}})
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	ro, err := persistence.Open(ctx, file, &persistence.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	other := filepath.Join(dir, "other.db")
	for _, q := range []string{
		"PRAGMA query_only = 0",
		"ATTACH '" + other + "' AS o",
		"VACUUM INTO '" + other + "'",
		"PRAGMA user_version = 7",
		"CREATE TEMP TABLE x (a)",
	} {
		err := ro.View(ctx, func(tx *persistence.Tx) error {
			_, err := tx.Exec(q)
			return err
		})
		if err == nil {
			t.Errorf("%s: accepted by a read-only DB", q)
		}
	}
	if _, err := os.Stat(other); err == nil {
		t.Error("a read-only DB created another file")
	}
	var n int
	err = ro.View(ctx, func(tx *persistence.Tx) error {
		return tx.QueryRow("SELECT a FROM t JOIN pragma_table_info('t') WHERE name = 'a'").Scan(&n)
	})
	if err != nil || n != 1 {
		t.Fatalf("a read through a read-only DB: %d, %v", n, err)
	}
	if err := ro.IntegrityCheck(ctx); err != nil {
		t.Fatalf("integrity check through a read-only DB: %v", err)
	}
}
