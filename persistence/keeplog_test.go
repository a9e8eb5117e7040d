package persistence_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/fractalrt/fractal/persistence"
)

// walHeaderSize and walFrameSize describe the -wal file of a database with
// 4096-byte pages (the default): a 32-byte header, then frames of a 24-byte
// header and one page.
const (
	walHeaderSize = 32
	walFrameSize  = 24 + 4096
)

// logState is what a reopen must not change in a kept log: the files
// themselves and the log's header, which SQLite rewrites (and syncs) only
// when it starts the log again.
type logState struct {
	wal, shm os.FileInfo
	header   []byte
}

func readLogState(t *testing.T, path string) logState {
	t.Helper()
	var s logState
	var err error
	if s.wal, err = os.Stat(path + "-wal"); err != nil {
		t.Fatalf("no -wal file: %v", err)
	}
	if s.shm, err = os.Stat(path + "-shm"); err != nil {
		t.Fatalf("no -shm file: %v", err)
	}
	b, err := os.ReadFile(path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < walHeaderSize+walFrameSize {
		t.Fatalf("-wal file of %d bytes: no frame kept", len(b))
	}
	s.header = b[:walHeaderSize]
	return s
}

// keys returns the keys of the kv table of the database at path, read
// through a read-only DB.
func keys(t *testing.T, path string) []int {
	t.Helper()
	db, err := persistence.Open(context.Background(), path, &persistence.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	return queryInts(t, db, `SELECT k FROM kv ORDER BY k`)
}

func insertKeys(t *testing.T, db *persistence.DB, from, to int) {
	t.Helper()
	for k := from; k < to; k++ {
		mustUpdate(t, db, execAll(fmt.Sprintf(`INSERT INTO kv VALUES (%d, 'v')`, k)))
	}
}

func wantKeys(n int) []int {
	want := make([]int, n)
	for i := range want {
		want[i] = i
	}
	return want
}

// A file closed with CloseKeepLog keeps its -wal and -shm files, and the
// next Open reuses them without starting the log again: the first write
// after a reopen appends to the log, so SQLite neither creates the files
// nor writes and syncs a new log header.
func TestCloseKeepLogReopenReusesLog(t *testing.T) {
	for _, mode := range []persistence.SyncMode{persistence.SyncNormal, persistence.SyncFull} {
		t.Run(mode.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "kept.db")
			opts := &persistence.Options{Sync: mode, Migrations: kvSchema}
			db := openTestDBAt(t, path, opts)
			insertKeys(t, db, 0, 3)
			if err := db.CloseKeepLog(); err != nil {
				t.Fatal(err)
			}
			before := readLogState(t, path)
			for round := 1; round <= 3; round++ {
				db := openTestDBAt(t, path, opts)
				insertKeys(t, db, 3*round, 3*round+3)
				if err := db.CloseKeepLog(); err != nil {
					t.Fatal(err)
				}
				after := readLogState(t, path)
				if !os.SameFile(before.wal, after.wal) || !os.SameFile(before.shm, after.shm) {
					t.Fatalf("round %d: -wal or -shm file created again", round)
				}
				if !bytes.Equal(before.header, after.header) {
					t.Fatalf("round %d: the log was started again (header % x, was % x)", round, after.header, before.header)
				}
			}
			if got := keys(t, path); !slices.Equal(got, wantKeys(12)) {
				t.Fatalf("keys %v, want 0..11", got)
			}
		})
	}
}

// CloseKeepLog checkpoints before it closes: the database file alone holds
// every commit, so losing the log after the close (or copying the database
// file without it) loses nothing. A copy of what is on disk, log included,
// holds them too.
func TestCloseKeepLogLeavesCompleteDatabaseFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kept.db")
	db := openTestDBAt(t, path, &persistence.Options{Sync: persistence.SyncNormal, Migrations: kvSchema})
	insertKeys(t, db, 0, 10)
	if err := db.CloseKeepLog(); err != nil {
		t.Fatal(err)
	}
	db = openTestDBAt(t, path, &persistence.Options{Sync: persistence.SyncNormal, Migrations: kvSchema})
	insertKeys(t, db, 10, 20)
	if err := db.CloseKeepLog(); err != nil {
		t.Fatal(err)
	}
	copyFile := func(from, to string) {
		t.Helper()
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	alone := filepath.Join(dir, "alone.db")
	copyFile(path, alone)
	if got := keys(t, alone); !slices.Equal(got, wantKeys(20)) {
		t.Fatalf("database file without its log: keys %v, want 0..19", got)
	}
	with := filepath.Join(dir, "with-log.db")
	copyFile(path, with)
	copyFile(path+"-wal", with+"-wal")
	if got := keys(t, with); !slices.Equal(got, wantKeys(20)) {
		t.Fatalf("database file and its log: keys %v, want 0..19", got)
	}
	if err := persistence.CheckFile(context.Background(), with); err != nil {
		t.Fatal(err)
	}
}

// The kept log stays short: a long one is truncated and started again at
// close, and an empty one gets one frame, so that the next reopen appends
// to it rather than starting it.
func TestCloseKeepLogBoundsTheLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kept.db")
	opts := &persistence.Options{Sync: persistence.SyncNormal, Migrations: kvSchema}
	db := openTestDBAt(t, path, opts)
	insertKeys(t, db, 0, 200) // a frame or more each
	if err := db.CloseKeepLog(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path + "-wal")
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != walHeaderSize+walFrameSize {
		t.Errorf("-wal file of %d bytes after 200 commits, want one frame (%d bytes)", fi.Size(), walHeaderSize+walFrameSize)
	}
	before := readLogState(t, path)

	// An empty log (truncated by Checkpoint) is given one frame too.
	db = openTestDBAt(t, path, opts)
	insertKeys(t, db, 200, 201)
	if err := db.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := db.CloseKeepLog(); err != nil {
		t.Fatal(err)
	}
	seeded := readLogState(t, path)
	if seeded.wal.Size() != walHeaderSize+walFrameSize {
		t.Errorf("-wal file of %d bytes after a checkpoint, want one frame", seeded.wal.Size())
	}
	if bytes.Equal(before.header, seeded.header) {
		t.Error("the log was not started again after a checkpoint emptied it")
	}
	db = openTestDBAt(t, path, opts)
	insertKeys(t, db, 201, 202)
	if err := db.CloseKeepLog(); err != nil {
		t.Fatal(err)
	}
	if after := readLogState(t, path); !bytes.Equal(seeded.header, after.header) {
		t.Error("the reopen after a seeded log started it again")
	}
	if got := keys(t, path); !slices.Equal(got, wantKeys(202)) {
		t.Fatalf("keys: %d of them, want 202", len(got))
	}
}

// CloseKeepLog does not wait for a reader of another connection (a tool
// reading a live file): the commits that reader's snapshot keeps from the
// database file stay in the log, where the next reader or writer finds
// them. Close, which must truncate the log, waits for the busy timeout
// instead and reports an incomplete checkpoint.
func TestCloseKeepLogWithReader(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "kept.db")
	opts := &persistence.Options{Sync: persistence.SyncNormal, Migrations: kvSchema, BusyTimeout: 5 * time.Second}
	rw := openTestDBAt(t, path, opts)
	insertKeys(t, rw, 0, 2)
	ro := openTestDBAt(t, path, &persistence.Options{ReadOnly: true})
	tx, err := ro.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := tx.QueryRow(`SELECT count(*) FROM kv`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("reader: %d rows, %v", n, err)
	}
	insertKeys(t, rw, 2, 5)
	start := time.Now()
	if err := rw.CloseKeepLog(); err != nil {
		t.Fatalf("CloseKeepLog with a reader: %v", err)
	}
	if d := time.Since(start); d > opts.BusyTimeout/2 {
		t.Errorf("CloseKeepLog waited %v for the reader", d)
	}
	if err := tx.QueryRow(`SELECT count(*) FROM kv`).Scan(&n); err != nil || n != 2 {
		t.Errorf("reader's snapshot after the writer closed: %d rows, %v", n, err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	// A new reader (the fractal command, System.Children) sees every
	// commit, those only in the log included.
	if got := keys(t, path); !slices.Equal(got, wantKeys(5)) {
		t.Fatalf("new reader: keys %v, want 0..4", got)
	}
	if err := ro.Close(); err != nil {
		t.Fatal(err)
	}
	rw = openTestDBAt(t, path, opts)
	if got := queryInts(t, rw, `SELECT k FROM kv ORDER BY k`); !slices.Equal(got, wantKeys(5)) {
		t.Fatalf("reopened writer: keys %v, want 0..4", got)
	}
	if err := rw.Close(); err != nil {
		t.Fatal(err)
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		if exists(t, path+suffix) {
			t.Errorf("%s left after Close", suffix)
		}
	}
}

// A read-only DB may be the first connection to a file closed with
// CloseKeepLog: it rebuilds the log's index, reads, and leaves the log for
// the next writer, which does not start it again.
func TestReadOnlyOpenOfKeptLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kept.db")
	opts := &persistence.Options{Sync: persistence.SyncNormal, Migrations: kvSchema}
	db := openTestDBAt(t, path, opts)
	insertKeys(t, db, 0, 4)
	if err := db.CloseKeepLog(); err != nil {
		t.Fatal(err)
	}
	before := readLogState(t, path)
	if got := keys(t, path); !slices.Equal(got, wantKeys(4)) {
		t.Fatalf("read-only: keys %v, want 0..3", got)
	}
	if err := persistence.CheckFile(context.Background(), path); err != nil {
		t.Fatal(err)
	}
	db = openTestDBAt(t, path, opts)
	insertKeys(t, db, 4, 5)
	if err := db.CloseKeepLog(); err != nil {
		t.Fatal(err)
	}
	after := readLogState(t, path)
	if !os.SameFile(before.wal, after.wal) || !bytes.Equal(before.header, after.header) {
		t.Error("the log was created or started again after a read-only open")
	}
	if got := keys(t, path); !slices.Equal(got, wantKeys(5)) {
		t.Fatalf("keys %v, want 0..4", got)
	}
}

// CloseKeepLog on a read-only DB is Close, and a second close of either
// kind does nothing.
func TestCloseKeepLogTwice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kept.db")
	db := openTestDBAt(t, path, &persistence.Options{Migrations: kvSchema})
	insertKeys(t, db, 0, 1)
	if err := db.CloseKeepLog(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Errorf("Close after CloseKeepLog: %v", err)
	}
	if err := db.CloseKeepLog(); err != nil {
		t.Errorf("CloseKeepLog again: %v", err)
	}
	if err := db.Update(context.Background(), execAll(`INSERT INTO kv VALUES (9, 'v')`)); err != persistence.ErrClosed {
		t.Errorf("Update after CloseKeepLog: %v, want ErrClosed", err)
	}
	ro := openTestDBAt(t, path, &persistence.Options{ReadOnly: true})
	if err := ro.CloseKeepLog(); err != nil {
		t.Errorf("CloseKeepLog of a read-only DB: %v", err)
	}
}

// A database file removed without its kept log (by hand, say) is created
// anew as an empty database: the log of the removed file is not applied to
// it, as SQLite does not apply a log to an empty file.
func TestRemovedFileWithKeptLogStartsEmpty(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kept.db")
	opts := &persistence.Options{Sync: persistence.SyncNormal, Migrations: kvSchema}
	db := openTestDBAt(t, path, opts)
	insertKeys(t, db, 0, 5)
	if err := db.CloseKeepLog(); err != nil {
		t.Fatal(err)
	}
	db = openTestDBAt(t, path, opts)
	insertKeys(t, db, 5, 8) // these are in the kept log
	if err := db.CloseKeepLog(); err != nil {
		t.Fatal(err)
	}
	if !exists(t, path+"-wal") {
		t.Fatal("no log kept")
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	db = openTestDBAt(t, path, opts)
	if got := queryInts(t, db, `SELECT k FROM kv`); len(got) != 0 {
		t.Fatalf("new file has keys %v from the removed file's log", got)
	}
	if err := db.IntegrityCheck(context.Background()); err != nil {
		t.Fatal(err)
	}
}
