package persistence_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/fractalrt/fractal/persistence"
)

// openTestDB opens a database file in a fresh temporary directory; see
// openTestDBAt.
func openTestDB(t *testing.T, opts *persistence.Options) *persistence.DB {
	t.Helper()
	return openTestDBAt(t, filepath.Join(t.TempDir(), "test.db"), opts)
}

// openTestDBAt opens the database file at path. At cleanup it closes the DB
// (a no-op if the test closed it already) and checks the file's integrity
// with CheckFile.
func openTestDBAt(t *testing.T, path string, opts *persistence.Options) *persistence.DB {
	t.Helper()
	db, err := persistence.Open(context.Background(), path, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("Close(%s): %v", path, err)
		}
		if err := persistence.CheckFile(context.Background(), path); err != nil {
			t.Errorf("CheckFile(%s): %v", path, err)
		}
	})
	return db
}

// mustUpdate runs fn in db.Update and fails the test on error.
func mustUpdate(t *testing.T, db *persistence.DB, fn func(tx *persistence.Tx) error) {
	t.Helper()
	if err := db.Update(context.Background(), fn); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

// execAll returns a function executing the statements in order.
func execAll(stmts ...string) func(tx *persistence.Tx) error {
	return func(tx *persistence.Tx) error {
		for _, s := range stmts {
			if _, err := tx.Exec(s); err != nil {
				return err
			}
		}
		return nil
	}
}

// queryInts returns the single integer column of query's rows, read in a
// View.
func queryInts(t *testing.T, db *persistence.DB, query string, args ...any) []int {
	t.Helper()
	var out []int
	err := db.View(context.Background(), func(tx *persistence.Tx) error {
		rows, err := tx.Query(query, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var v int
			if err := rows.Scan(&v); err != nil {
				return err
			}
			out = append(out, v)
		}
		return rows.Err()
	})
	if err != nil {
		t.Fatalf("View %q: %v", query, err)
	}
	return out
}

// queryString returns the single text value of query, read in a View.
func queryString(t *testing.T, db *persistence.DB, query string) string {
	t.Helper()
	var s string
	err := db.View(context.Background(), func(tx *persistence.Tx) error {
		return tx.QueryRow(query).Scan(&s)
	})
	if err != nil {
		t.Fatalf("View %q: %v", query, err)
	}
	return s
}

// fileDigest returns the SHA-256 and size of the file at path.
func fileDigest(t *testing.T, path string) ([32]byte, int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b), int64(len(b))
}

// exists reports whether path exists.
func exists(t *testing.T, path string) bool {
	t.Helper()
	_, err := os.Stat(path)
	if err == nil {
		return true
	}
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return false
}
