package persistence

import (
	"bytes"
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"testing"
)

// The file Open writes for a new database is byte for byte what SQLite
// writes when it converts an empty file to WAL mode itself.
func TestNewFileIsWhatSQLiteWrites(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sqlite.db")
	dsn, err := fileURI(path, false)
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, err := sql.Open("sqlite", dsn)
	if err != nil {
		t.Fatal(err)
	}
	var mode string
	if err := sqlDB.QueryRow("PRAGMA journal_mode = WAL").Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v", mode, err)
	}
	if err := sqlDB.Close(); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := emptyWALDatabase(); !bytes.Equal(got, want) {
		t.Fatalf("new file (%d bytes) differs from SQLite's (%d bytes):\n% x\nwant\n% x", len(got), len(want), got[:112], want[:min(len(want), 112)])
	}

	// And Open makes that file, which SQLite takes as an intact,
	// empty database in WAL mode.
	ours := filepath.Join(dir, "ours.db")
	db, err := Open(context.Background(), ours, &Options{Sync: SyncNormal})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(ours); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("file made by Open differs from SQLite's (%v)", err)
	}
	if err := CheckFile(context.Background(), ours); err != nil {
		t.Fatal(err)
	}
}

// Open of a missing file that another Open creates meanwhile opens it as an
// existing file; a file Open cannot create leaves nothing behind.
func TestCreateFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.db")
	if created, err := createFile(path, true); err != nil || !created {
		t.Fatalf("createFile = %v, %v; want true, nil", created, err)
	}
	if created, err := createFile(path, false); err != nil || created {
		t.Fatalf("createFile of an existing file = %v, %v; want false, nil", created, err)
	}
	missing := filepath.Join(dir, "missing", "x.db")
	if _, err := createFile(missing, false); err == nil {
		t.Fatal("createFile in a missing directory succeeded")
	}
	if _, err := os.Stat(missing); err == nil {
		t.Fatal("failed createFile left a file")
	}
}
