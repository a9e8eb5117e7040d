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
