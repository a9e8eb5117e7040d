package persistence_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/fractalrt/fractal/persistence"
)

var kvSchema = []persistence.Migration{
	{Name: "create kv", SQL: `CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT NOT NULL)`},
}

func TestSyncModeString(t *testing.T) {
	for m, want := range map[persistence.SyncMode]string{
		persistence.SyncFull:    "FULL",
		persistence.SyncNormal:  "NORMAL",
		persistence.SyncMode(7): "SyncMode(7)",
	} {
		if got := m.String(); got != want {
			t.Errorf("SyncMode(%d).String() = %q, want %q", int(m), got, want)
		}
	}
	var zero persistence.SyncMode
	if zero != persistence.SyncFull {
		t.Errorf("zero SyncMode is %v, want FULL", zero)
	}
}

func TestPragmas(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts *persistence.Options
		sync int
	}{
		{"nil options", nil, 2},
		{"full", &persistence.Options{Sync: persistence.SyncFull}, 2},
		{"normal", &persistence.Options{Sync: persistence.SyncNormal, BusyTimeout: 1500 * time.Millisecond}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := openTestDB(t, tc.opts)
			if got := queryString(t, db, "PRAGMA journal_mode"); got != "wal" {
				t.Errorf("journal_mode = %q, want wal", got)
			}
			if got := queryInts(t, db, "PRAGMA synchronous"); !slices.Equal(got, []int{tc.sync}) {
				t.Errorf("synchronous = %v, want %d", got, tc.sync)
			}
			if got := queryInts(t, db, "PRAGMA foreign_keys"); !slices.Equal(got, []int{1}) {
				t.Errorf("foreign_keys = %v, want 1", got)
			}
			wantBusy := 5000
			if tc.opts != nil && tc.opts.BusyTimeout != 0 {
				wantBusy = int(tc.opts.BusyTimeout.Milliseconds())
			}
			if got := queryInts(t, db, "PRAGMA busy_timeout"); !slices.Equal(got, []int{wantBusy}) {
				t.Errorf("busy_timeout = %v, want %d", got, wantBusy)
			}
			if got := queryInts(t, db, "PRAGMA query_only"); !slices.Equal(got, []int{1}) {
				t.Errorf("query_only inside View = %v, want 1", got)
			}
			var qo int
			tx, err := db.Begin(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if err := tx.QueryRow("PRAGMA query_only").Scan(&qo); err != nil || qo != 0 {
				t.Errorf("query_only inside Begin = %d, %v; want 0", qo, err)
			}
			if err := tx.Rollback(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestOpenInvalidOptions(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	for _, opts := range []*persistence.Options{
		{Sync: persistence.SyncMode(9)},
		{BusyTimeout: -time.Second},
	} {
		if db, err := persistence.Open(ctx, filepath.Join(dir, "x.db"), opts); err == nil {
			db.Close()
			t.Errorf("Open with %+v succeeded", opts)
		}
	}
	if exists(t, filepath.Join(dir, "x.db")) {
		t.Error("rejected Open created the file")
	}
	if _, err := persistence.Open(ctx, "", nil); err == nil {
		t.Error("Open with an empty path succeeded")
	}
}

func TestOpenMissingParentDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "x.db")
	db, err := persistence.Open(context.Background(), path, nil)
	if err == nil {
		db.Close()
		t.Fatal("Open succeeded")
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("error %v does not wrap fs.ErrNotExist", err)
	}
}

func TestOpenNewFileAndPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "we?ird #name%.db")
	db := openTestDBAt(t, path, &persistence.Options{Migrations: kvSchema})
	if db.Path() != path {
		t.Errorf("Path() = %q, want %q", db.Path(), path)
	}
	if db.Version() != 1 {
		t.Errorf("Version() = %d, want 1", db.Version())
	}
	mustUpdate(t, db, execAll(`INSERT INTO kv VALUES (1, 'a')`))
	if !exists(t, path) {
		t.Fatalf("%s was not created", path)
	}
}

func TestMigrationsUpgradeStepByStep(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.db")
	funcRuns := 0
	all := []persistence.Migration{
		{Name: "create items", SQL: `
			CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL);
			INSERT INTO items(id, name) VALUES (1, 'seed');`},
		{Name: "add price", SQL: `ALTER TABLE items ADD COLUMN price INTEGER NOT NULL DEFAULT 0`},
		{Name: "price seed", Func: func(tx *persistence.Tx) error {
			funcRuns++
			_, err := tx.Exec(`UPDATE items SET price = 42 WHERE id = ?`, 1)
			return err
		}},
	}

	db := openTestDBAt(t, path, &persistence.Options{Migrations: all[:1]})
	if db.Version() != 1 {
		t.Fatalf("Version() = %d, want 1", db.Version())
	}
	mustUpdate(t, db, execAll(`INSERT INTO items(id, name) VALUES (2, 'kept')`))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db = openTestDBAt(t, path, &persistence.Options{Migrations: all})
	if db.Version() != 3 {
		t.Fatalf("Version() = %d, want 3", db.Version())
	}
	if got := queryInts(t, db, `PRAGMA user_version`); !slices.Equal(got, []int{3}) {
		t.Errorf("user_version = %v, want 3", got)
	}
	if got := queryInts(t, db, `SELECT id FROM items ORDER BY id`); !slices.Equal(got, []int{1, 2}) {
		t.Errorf("ids = %v, want [1 2]", got)
	}
	if got := queryInts(t, db, `SELECT price FROM items ORDER BY id`); !slices.Equal(got, []int{42, 0}) {
		t.Errorf("prices = %v, want [42 0]", got)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	// Nothing pending: no migration runs again.
	db = openTestDBAt(t, path, &persistence.Options{Migrations: all})
	if db.Version() != 3 || funcRuns != 1 {
		t.Errorf("after reopen: Version() = %d, Func ran %d times; want 3 and 1", db.Version(), funcRuns)
	}
}

func TestSchemaTooNewLeavesFileUntouched(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new.db")
	three := []persistence.Migration{
		{Name: "a", SQL: `CREATE TABLE a(x)`},
		{Name: "b", SQL: `CREATE TABLE b(x)`},
		{Name: "c", SQL: `CREATE TABLE c(x)`},
	}
	db := openTestDBAt(t, path, &persistence.Options{Migrations: three})
	mustUpdate(t, db, execAll(`INSERT INTO a VALUES (1)`))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	sum, size := fileDigest(t, path)

	for _, opts := range []*persistence.Options{
		{Migrations: three[:1]},
		{Migrations: three[:1], ReadOnly: true},
	} {
		db, err := persistence.Open(context.Background(), path, opts)
		if err == nil {
			db.Close()
			t.Fatalf("Open with %d migrations (read-only %v) succeeded", len(opts.Migrations), opts.ReadOnly)
		}
		if !errors.Is(err, persistence.ErrSchemaTooNew) {
			t.Fatalf("error %v does not wrap ErrSchemaTooNew", err)
		}
		for _, want := range []string{path, "3", "1"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %q", err, want)
			}
		}
		if !opts.ReadOnly {
			if exists(t, path+"-wal") {
				t.Error("refused Open left a -wal file")
			}
			if exists(t, path+"-shm") {
				t.Error("refused Open left a -shm file")
			}
		}
		if gotSum, gotSize := fileDigest(t, path); gotSum != sum || gotSize != size {
			t.Errorf("file changed: size %d -> %d", size, gotSize)
		}
	}
}

func TestFailingMigrationRollsBackAllPending(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
	base := []persistence.Migration{{Name: "base", SQL: `CREATE TABLE base(x); INSERT INTO base VALUES (1);`}}
	db := openTestDBAt(t, path, &persistence.Options{Migrations: base})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	before, _ := fileDigest(t, path)

	good := persistence.Migration{Name: "create extra", SQL: `CREATE TABLE extra(x); INSERT INTO base VALUES (2);`}
	for _, tc := range []struct {
		name string
		bad  persistence.Migration
		want string
	}{
		{"sql", persistence.Migration{Name: "broken sql", SQL: `CREATE TABLE oops(x); SELEC nonsense`}, `"broken sql"`},
		{"func", persistence.Migration{Name: "failing func", Func: func(tx *persistence.Tx) error {
			if _, err := tx.Exec(`INSERT INTO base VALUES (3)`); err != nil {
				return err
			}
			return errors.New("data does not fit")
		}}, "data does not fit"},
		{"empty", persistence.Migration{}, "#2"},
		{"commit inside", persistence.Migration{Name: "commits", Func: func(tx *persistence.Tx) error {
			return tx.Commit()
		}}, "commits"},
		{"foreign key", persistence.Migration{Name: "orphan", SQL: `
			CREATE TABLE parent(id INTEGER PRIMARY KEY);
			CREATE TABLE child(id INTEGER PRIMARY KEY, pid INTEGER NOT NULL REFERENCES parent(id));
			INSERT INTO child VALUES (1, 99);`}, "foreign_key_check"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			migs := []persistence.Migration{base[0], good, tc.bad}
			db, err := persistence.Open(context.Background(), path, &persistence.Options{Migrations: migs})
			if err == nil {
				db.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, persistence.ErrMigration) {
				t.Fatalf("error %v does not wrap ErrMigration", err)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "migration 2") {
				t.Errorf("error %q does not name the migration (%s)", err, tc.want)
			}
			if after, _ := fileDigest(t, path); after != before {
				t.Error("file content changed")
			}
		})
	}

	db = openTestDBAt(t, path, &persistence.Options{Migrations: base})
	if db.Version() != 1 {
		t.Errorf("Version() = %d, want 1", db.Version())
	}
	if got := queryInts(t, db, `SELECT count(*) FROM sqlite_schema WHERE name IN ('extra', 'oops', 'parent')`); !slices.Equal(got, []int{0}) {
		t.Errorf("tables of failed migrations exist: %v", got)
	}
	if got := queryInts(t, db, `SELECT x FROM base`); !slices.Equal(got, []int{1}) {
		t.Errorf("base rows = %v, want [1]", got)
	}
	if got := queryInts(t, db, `PRAGMA foreign_keys`); !slices.Equal(got, []int{1}) {
		t.Errorf("foreign_keys = %v, want 1", got)
	}
}

func TestMigrationPanicRollsBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.db")
	migs := []persistence.Migration{
		{Name: "ok", SQL: `CREATE TABLE t(x)`},
		{Name: "panics", Func: func(*persistence.Tx) error { panic("boom") }},
	}
	func() {
		defer func() {
			if p := recover(); p != "boom" {
				t.Errorf("recovered %v, want boom", p)
			}
		}()
		db, err := persistence.Open(context.Background(), path, &persistence.Options{Migrations: migs})
		t.Errorf("Open returned %v, %v instead of panicking", db, err)
	}()
	db := openTestDBAt(t, path, nil)
	if db.Version() != 0 {
		t.Errorf("Version() = %d, want 0", db.Version())
	}
}

func TestUpdateErrorPersistsNothing(t *testing.T) {
	db := openTestDB(t, &persistence.Options{Migrations: kvSchema})
	errStop := errors.New("stop")
	err := db.Update(context.Background(), func(tx *persistence.Tx) error {
		if _, err := tx.Exec(`INSERT INTO kv VALUES (1, 'a')`); err != nil {
			return err
		}
		return errStop
	})
	if !errors.Is(err, errStop) {
		t.Fatalf("Update returned %v, want %v", err, errStop)
	}
	if got := queryInts(t, db, `SELECT count(*) FROM kv`); !slices.Equal(got, []int{0}) {
		t.Errorf("rows = %v after failed Update, want 0", got)
	}
}

func TestUpdatePanicRollsBackAndRepanics(t *testing.T) {
	db := openTestDB(t, &persistence.Options{Migrations: kvSchema})
	func() {
		defer func() {
			if p := recover(); p != "kaboom" {
				t.Errorf("recovered %v, want kaboom", p)
			}
		}()
		_ = db.Update(context.Background(), func(tx *persistence.Tx) error {
			if _, err := tx.Exec(`INSERT INTO kv VALUES (1, 'a')`); err != nil {
				return err
			}
			panic("kaboom")
		})
		t.Error("Update did not re-panic")
	}()
	if got := queryInts(t, db, `SELECT count(*) FROM kv`); !slices.Equal(got, []int{0}) {
		t.Errorf("rows = %v after panicking Update, want 0", got)
	}
	// The DB is usable: the transaction slot was released.
	mustUpdate(t, db, execAll(`INSERT INTO kv VALUES (2, 'b')`))
	if got := queryInts(t, db, `SELECT k FROM kv`); !slices.Equal(got, []int{2}) {
		t.Errorf("rows = %v, want [2]", got)
	}
}

func TestUpdateCommits(t *testing.T) {
	db := openTestDB(t, &persistence.Options{Migrations: kvSchema})
	mustUpdate(t, db, execAll(`INSERT INTO kv VALUES (1, 'a')`, `INSERT INTO kv VALUES (2, 'b')`))
	if got := queryInts(t, db, `SELECT k FROM kv ORDER BY k`); !slices.Equal(got, []int{1, 2}) {
		t.Errorf("rows = %v, want [1 2]", got)
	}
	err := db.Update(context.Background(), func(tx *persistence.Tx) error { return tx.Rollback() })
	if !errors.Is(err, persistence.ErrTxManaged) {
		t.Errorf("Rollback inside Update = %v, want ErrTxManaged", err)
	}
}

func TestViewRefusesWritesAndRollsBack(t *testing.T) {
	db := openTestDB(t, &persistence.Options{Migrations: kvSchema})
	err := db.View(context.Background(), func(tx *persistence.Tx) error {
		_, err := tx.Exec(`INSERT INTO kv VALUES (1, 'a')`)
		return err
	})
	if err == nil {
		t.Fatal("write inside View succeeded")
	}
	if got := queryInts(t, db, `SELECT count(*) FROM kv`); !slices.Equal(got, []int{0}) {
		t.Errorf("rows = %v, want 0", got)
	}
	// query_only is off again for write transactions.
	mustUpdate(t, db, execAll(`INSERT INTO kv VALUES (1, 'a')`))
}

func TestSavepoints(t *testing.T) {
	db := openTestDB(t, &persistence.Options{Migrations: kvSchema})
	ctx := context.Background()
	ins := func(tx *persistence.Tx, k int) {
		t.Helper()
		if _, err := tx.Exec(`INSERT INTO kv VALUES (?, 'x')`, k); err != nil {
			t.Fatal(err)
		}
	}
	mustUpdate(t, db, func(tx *persistence.Tx) error {
		ins(tx, 1)
		sp, err := tx.Savepoint()
		if err != nil {
			return err
		}
		ins(tx, 2)
		if err := sp.Rollback(); err != nil {
			return err
		}
		if err := sp.Release(); !errors.Is(err, persistence.ErrTxDone) {
			t.Errorf("Release after Rollback = %v, want ErrTxDone", err)
		}
		ins(tx, 3)

		outer, err := tx.Savepoint()
		if err != nil {
			return err
		}
		ins(tx, 4)
		inner, err := tx.Savepoint()
		if err != nil {
			return err
		}
		ins(tx, 5)
		if err := inner.Rollback(); err != nil {
			return err
		}
		innermost, err := tx.Savepoint()
		if err != nil {
			return err
		}
		ins(tx, 6)
		if err := outer.Release(); err != nil {
			return err
		}
		if err := innermost.Rollback(); !errors.Is(err, persistence.ErrTxDone) {
			t.Errorf("Rollback of a savepoint released with its parent = %v, want ErrTxDone", err)
		}

		last, err := tx.Savepoint()
		if err != nil {
			return err
		}
		ins(tx, 7)
		return last.Release()
	})
	if got := queryInts(t, db, `SELECT k FROM kv ORDER BY k`); !slices.Equal(got, []int{1, 3, 4, 6, 7}) {
		t.Errorf("rows = %v, want [1 3 4 6 7]", got)
	}

	// A savepoint of an ended transaction is done too.
	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := tx.Savepoint()
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := sp.Release(); !errors.Is(err, persistence.ErrTxDone) {
		t.Errorf("Release after the Tx ended = %v, want ErrTxDone", err)
	}
}

const deferredFKSchema = `
	CREATE TABLE parent(id INTEGER PRIMARY KEY);
	CREATE TABLE child(
		id  INTEGER PRIMARY KEY,
		pid INTEGER NOT NULL REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED
	);
	CREATE TABLE log(msg TEXT);`

func TestCommitFailureRollsBack(t *testing.T) {
	db := openTestDB(t, &persistence.Options{Migrations: []persistence.Migration{{Name: "fk", SQL: deferredFKSchema}}})
	ctx := context.Background()
	mustUpdate(t, db, execAll(`INSERT INTO parent VALUES (1)`, `INSERT INTO child VALUES (1, 1)`))

	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		`INSERT INTO log VALUES ('should vanish')`,
		`INSERT INTO child VALUES (2, 99)`, // accepted now, checked at COMMIT
	} {
		if _, err := tx.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	err = tx.Commit()
	if !errors.Is(err, persistence.ErrCommit) {
		t.Fatalf("Commit = %v, want ErrCommit", err)
	}
	if !strings.Contains(err.Error(), "FOREIGN KEY") {
		t.Errorf("Commit error %q does not carry SQLite's message", err)
	}
	if err := tx.Rollback(); !errors.Is(err, persistence.ErrTxDone) {
		t.Errorf("Rollback after failed Commit = %v, want ErrTxDone", err)
	}
	if _, err := tx.Exec(`SELECT 1`); !errors.Is(err, persistence.ErrTxDone) {
		t.Errorf("Exec after failed Commit = %v, want ErrTxDone", err)
	}
	if got := queryInts(t, db, `SELECT count(*) FROM log`); !slices.Equal(got, []int{0}) {
		t.Errorf("log rows = %v, want 0", got)
	}
	if got := queryInts(t, db, `SELECT id FROM child ORDER BY id`); !slices.Equal(got, []int{1}) {
		t.Errorf("child ids = %v, want [1]", got)
	}

	// Still usable, and the same statements commit once the parent exists.
	mustUpdate(t, db, execAll(`INSERT INTO child VALUES (2, 2)`, `INSERT INTO parent VALUES (2)`))
	if got := queryInts(t, db, `SELECT id FROM child ORDER BY id`); !slices.Equal(got, []int{1, 2}) {
		t.Errorf("child ids = %v, want [1 2]", got)
	}

	// Through Update as well.
	err = db.Update(ctx, execAll(`INSERT INTO log VALUES ('x')`, `INSERT INTO child VALUES (3, 77)`))
	if !errors.Is(err, persistence.ErrCommit) {
		t.Errorf("Update = %v, want ErrCommit", err)
	}
	if got := queryInts(t, db, `SELECT count(*) FROM log`); !slices.Equal(got, []int{0}) {
		t.Errorf("log rows = %v, want 0", got)
	}
}

func TestTransactionRolledBackBySQLite(t *testing.T) {
	db := openTestDB(t, &persistence.Options{Migrations: kvSchema})
	ctx := context.Background()
	mustUpdate(t, db, execAll(`INSERT INTO kv VALUES (1, 'a')`))

	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`INSERT INTO kv VALUES (2, 'b')`); err != nil {
		t.Fatal(err)
	}
	// The conflict clause ROLLBACK makes SQLite abort the whole transaction.
	if _, err := tx.Exec(`INSERT OR ROLLBACK INTO kv VALUES (1, 'dup')`); err == nil {
		t.Fatal("conflicting insert succeeded")
	}
	if _, err := tx.Exec(`INSERT INTO kv VALUES (3, 'c')`); !errors.Is(err, persistence.ErrTxDone) {
		t.Errorf("Exec after SQLite's rollback = %v, want ErrTxDone", err)
	}
	if err := tx.Commit(); !errors.Is(err, persistence.ErrCommit) {
		t.Errorf("Commit after SQLite's rollback = %v, want ErrCommit", err)
	}
	if got := queryInts(t, db, `SELECT k FROM kv ORDER BY k`); !slices.Equal(got, []int{1}) {
		t.Errorf("rows = %v, want [1]", got)
	}
	mustUpdate(t, db, execAll(`INSERT INTO kv VALUES (2, 'b')`))
}

func TestCommitWithCancelledContext(t *testing.T) {
	db := openTestDB(t, &persistence.Options{Migrations: kvSchema})
	ctx, cancel := context.WithCancel(context.Background())
	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`INSERT INTO kv VALUES (1, 'a')`); err != nil {
		t.Fatal(err)
	}
	cancel()
	err = tx.Commit()
	if !errors.Is(err, persistence.ErrCommit) || !errors.Is(err, context.Canceled) {
		t.Errorf("Commit = %v, want ErrCommit and context.Canceled", err)
	}
	if got := queryInts(t, db, `SELECT count(*) FROM kv`); !slices.Equal(got, []int{0}) {
		t.Errorf("rows = %v, want 0", got)
	}
}

func TestTxDone(t *testing.T) {
	db := openTestDB(t, &persistence.Options{Migrations: kvSchema})
	tx, err := db.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); !errors.Is(err, persistence.ErrTxDone) {
		t.Errorf("second Commit = %v, want ErrTxDone", err)
	}
	if err := tx.Rollback(); !errors.Is(err, persistence.ErrTxDone) {
		t.Errorf("Rollback after Commit = %v, want ErrTxDone", err)
	}
	if _, err := tx.Query(`SELECT 1`); !errors.Is(err, persistence.ErrTxDone) {
		t.Errorf("Query after Commit = %v, want ErrTxDone", err)
	}
	var n int
	if err := tx.QueryRow(`SELECT 1`).Scan(&n); !errors.Is(err, persistence.ErrTxDone) {
		t.Errorf("QueryRow after Commit = %v, want ErrTxDone", err)
	}
	if _, err := tx.Savepoint(); !errors.Is(err, persistence.ErrTxDone) {
		t.Errorf("Savepoint after Commit = %v, want ErrTxDone", err)
	}
}

func TestOpenRowsAreClosedWhenTxEnds(t *testing.T) {
	db := openTestDB(t, &persistence.Options{Migrations: kvSchema})
	mustUpdate(t, db, execAll(`INSERT INTO kv VALUES (1, 'a')`, `INSERT INTO kv VALUES (2, 'b')`))
	tx, err := db.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rows, err := tx.Query(`SELECT k FROM kv`)
	if err != nil {
		t.Fatal(err)
	}
	if !rows.Next() {
		t.Fatal("no row")
	}
	_ = tx.QueryRow(`SELECT k FROM kv`) // never scanned
	if _, err := tx.Exec(`INSERT INTO kv VALUES (3, 'c')`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatalf("Commit with open rows: %v", err)
	}
	if got := queryInts(t, db, `SELECT count(*) FROM kv`); !slices.Equal(got, []int{3}) {
		t.Errorf("rows = %v, want 3", got)
	}
	// Close must not wait for the leaked rows.
	done := make(chan error, 1)
	go func() { done <- db.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked on rows left open")
	}
}

func TestCloseTwiceAndMethodsAfterClose(t *testing.T) {
	db := openTestDB(t, &persistence.Options{Migrations: kvSchema})
	ctx := context.Background()
	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`INSERT INTO kv VALUES (1, 'in flight')`); err != nil {
		t.Fatal(err)
	}
	sp, err := tx.Savepoint()
	if err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = db.Close() })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent Close %d: %v", i, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Errorf("Close after Close = %v, want nil", err)
	}

	check := func(name string, err error) {
		t.Helper()
		if !errors.Is(err, persistence.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
	_, err = db.Begin(ctx)
	check("Begin", err)
	check("Update", db.Update(ctx, func(*persistence.Tx) error { return nil }))
	check("View", db.View(ctx, func(*persistence.Tx) error { return nil }))
	check("Checkpoint", db.Checkpoint(ctx))
	check("IntegrityCheck", db.IntegrityCheck(ctx))
	_, err = tx.Exec(`SELECT 1`)
	check("Tx.Exec", err)
	_, err = tx.Query(`SELECT 1`)
	check("Tx.Query", err)
	var n int
	check("Tx.QueryRow", tx.QueryRow(`SELECT 1`).Scan(&n))
	_, err = tx.Savepoint()
	check("Tx.Savepoint", err)
	check("Savepoint.Release", sp.Release())
	check("Savepoint.Rollback", sp.Rollback())
	check("Tx.Commit", tx.Commit())
	check("Tx.Rollback", tx.Rollback())
	if db.Path() == "" || db.Version() != 1 {
		t.Errorf("Path/Version after Close = %q, %d", db.Path(), db.Version())
	}

	// The open transaction was rolled back.
	db2 := openTestDBAt(t, db.Path(), &persistence.Options{Migrations: kvSchema})
	if got := queryInts(t, db2, `SELECT count(*) FROM kv`); !slices.Equal(got, []int{0}) {
		t.Errorf("rows = %v, want 0", got)
	}
}

func TestCloseWakesWaitingBegin(t *testing.T) {
	// In a bubble, synctest.Wait returns once the second Begin is blocked
	// waiting for the connection, not before.
	synctest.Test(t, func(t *testing.T) {
		db := openTestDB(t, nil)
		tx, err := db.Begin(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan error, 1)
		go func() {
			_, err := db.Begin(context.Background())
			got <- err
		}()
		synctest.Wait()
		select {
		case err := <-got:
			t.Fatalf("a second Begin returned (%v) while a transaction was open", err)
		default:
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-got; !errors.Is(err, persistence.ErrClosed) {
			t.Errorf("waiting Begin = %v, want ErrClosed", err)
		}
		if err := tx.Commit(); !errors.Is(err, persistence.ErrClosed) {
			t.Errorf("Commit after Close = %v, want ErrClosed", err)
		}
	})
}

func TestCloseRemovesWALFiles(t *testing.T) {
	db := openTestDB(t, &persistence.Options{Migrations: kvSchema})
	path := db.Path()
	for i := range 50 {
		mustUpdate(t, db, execAll(fmt.Sprintf(`INSERT INTO kv VALUES (%d, 'v')`, i)))
	}
	if !exists(t, path+"-wal") || !exists(t, path+"-shm") {
		t.Fatal("no -wal or -shm file while open: not in WAL mode?")
	}
	if err := db.Checkpoint(context.Background()); err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	if fi, err := os.Stat(path + "-wal"); err != nil || fi.Size() != 0 {
		t.Errorf("-wal after Checkpoint(TRUNCATE): %v, %v; want size 0", fi, err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for _, suffix := range []string{"-wal", "-shm", "-journal"} {
		if exists(t, path+suffix) {
			t.Errorf("%s left after Close", suffix)
		}
	}
}

func TestReadOnly(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ro.db")
	rw := openTestDBAt(t, path, &persistence.Options{Migrations: kvSchema})
	mustUpdate(t, rw, execAll(`INSERT INTO kv VALUES (1, 'a')`))
	if err := rw.Close(); err != nil {
		t.Fatal(err)
	}
	sum, _ := fileDigest(t, path)

	ro := openTestDBAt(t, path, &persistence.Options{ReadOnly: true})
	if ro.Version() != 1 {
		t.Errorf("Version() = %d, want 1", ro.Version())
	}
	if got := queryInts(t, ro, `SELECT k FROM kv`); !slices.Equal(got, []int{1}) {
		t.Errorf("rows = %v, want [1]", got)
	}
	if err := ro.Update(ctx, execAll(`INSERT INTO kv VALUES (2, 'b')`)); err == nil {
		t.Error("Update on a read-only DB succeeded")
	}
	tx, err := ro.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`DELETE FROM kv`); err == nil {
		t.Error("DELETE on a read-only DB succeeded")
	}
	if _, err := tx.Exec(`PRAGMA user_version = 9`); err == nil {
		t.Error("PRAGMA user_version on a read-only DB succeeded")
	}
	if err := tx.Commit(); err != nil {
		t.Errorf("Commit of a read transaction: %v", err)
	}
	if err := ro.Checkpoint(ctx); err == nil {
		t.Error("Checkpoint on a read-only DB succeeded")
	}
	if err := ro.IntegrityCheck(ctx); err != nil {
		t.Errorf("IntegrityCheck: %v", err)
	}
	if err := ro.Close(); err != nil {
		t.Fatal(err)
	}
	if after, _ := fileDigest(t, path); after != sum {
		t.Error("read-only use changed the file")
	}

	missing := filepath.Join(t.TempDir(), "missing.db")
	db, err := persistence.Open(ctx, missing, &persistence.Options{ReadOnly: true})
	if err == nil {
		db.Close()
		t.Fatal("read-only Open of a missing file succeeded")
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("error %v does not wrap fs.ErrNotExist", err)
	}
	if exists(t, missing) {
		t.Error("read-only Open created the file")
	}
	if err := persistence.CheckFile(ctx, missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("CheckFile of a missing file = %v, want fs.ErrNotExist", err)
	}
}

func TestReadOnlyWithPendingMigrations(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	rw := openTestDBAt(t, path, &persistence.Options{Migrations: kvSchema})
	if err := rw.Close(); err != nil {
		t.Fatal(err)
	}
	two := append(slices.Clone(kvSchema), persistence.Migration{Name: "more", SQL: `CREATE TABLE more(x)`})
	ro := openTestDBAt(t, path, &persistence.Options{ReadOnly: true, Migrations: two})
	if ro.Version() != 1 {
		t.Errorf("Version() = %d, want 1 (read-only applies no migration)", ro.Version())
	}
}

var damagedSchema = []persistence.Migration{{Name: "tables", SQL: `
	CREATE TABLE a(id INTEGER PRIMARY KEY, v TEXT);
	CREATE TABLE b(id INTEGER PRIMARY KEY, v TEXT);
	CREATE INDEX b_v ON b(v);`}}

// corruptCopy writes a database with some content through the test helper,
// and returns a copy of the file on which damage applies.
func corruptCopy(t *testing.T, damage func(b []byte)) string {
	t.Helper()
	db := openTestDB(t, &persistence.Options{Migrations: damagedSchema})
	mustUpdate(t, db, func(tx *persistence.Tx) error {
		for i := range 300 {
			v := strings.Repeat(fmt.Sprint(i), 20)
			if _, err := tx.Exec(`INSERT INTO a VALUES (?, ?)`, i, v); err != nil {
				return err
			}
			if _, err := tx.Exec(`INSERT INTO b VALUES (?, ?)`, i, v); err != nil {
				return err
			}
		}
		return nil
	})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(db.Path())
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 8*4096 {
		t.Fatalf("file too small (%d bytes) to damage", len(b))
	}
	damage(b)
	dst := filepath.Join(t.TempDir(), "damaged.db")
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dst
}

func TestIntegrityCheckDetectsDamagedPages(t *testing.T) {
	path := corruptCopy(t, func(b []byte) {
		// Pages 3 to 6 (page size 4096): b-tree pages of the tables.
		for i := 2 * 4096; i < 6*4096; i++ {
			b[i] = byte(i*7 + 13)
		}
	})
	ctx := context.Background()
	err := persistence.CheckFile(ctx, path)
	if !errors.Is(err, persistence.ErrCorrupt) {
		t.Fatalf("CheckFile = %v, want ErrCorrupt", err)
	}
	t.Logf("CheckFile: %v", err)

	db, err := persistence.Open(ctx, path, &persistence.Options{Migrations: damagedSchema})
	if err != nil {
		if !errors.Is(err, persistence.ErrCorrupt) {
			t.Fatalf("Open = %v, want success or ErrCorrupt", err)
		}
		return
	}
	defer db.Close()
	if err := db.IntegrityCheck(ctx); !errors.Is(err, persistence.ErrCorrupt) {
		t.Errorf("IntegrityCheck = %v, want ErrCorrupt", err)
	}
}

func TestIntegrityCheckDetectsDamagedHeader(t *testing.T) {
	path := corruptCopy(t, func(b []byte) {
		copy(b, "this is not a SQLite database at all, sorry")
	})
	ctx := context.Background()
	err := persistence.CheckFile(ctx, path)
	if !errors.Is(err, persistence.ErrCorrupt) {
		t.Fatalf("CheckFile = %v, want ErrCorrupt", err)
	}
	t.Logf("CheckFile: %v", err)
	db, err := persistence.Open(ctx, path, &persistence.Options{Migrations: damagedSchema})
	if err == nil {
		db.Close()
		t.Fatal("Open of a damaged header succeeded")
	}
	if !errors.Is(err, persistence.ErrCorrupt) {
		t.Errorf("Open = %v, want ErrCorrupt", err)
	}
}

func TestBeginIsSerialized(t *testing.T) {
	db := openTestDB(t, &persistence.Options{Migrations: kvSchema})
	ctx := context.Background()

	first, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	secondStarted := make(chan *persistence.Tx, 1)
	go func() {
		tx, err := db.Begin(ctx)
		if err != nil {
			t.Error(err)
			close(secondStarted)
			return
		}
		secondStarted <- tx
	}()
	select {
	case <-secondStarted:
		t.Fatal("second Begin returned while the first transaction is open")
	case <-time.After(50 * time.Millisecond):
	}

	// A Begin with a deadline gives up.
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := db.Begin(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Begin with an expiring context = %v, want DeadlineExceeded", err)
	}

	if _, err := first.Exec(`INSERT INTO kv VALUES (1, 'first')`); err != nil {
		t.Fatal(err)
	}
	if err := first.Commit(); err != nil {
		t.Fatal(err)
	}
	second := <-secondStarted
	if second == nil {
		t.FailNow()
	}
	var v string
	if err := second.QueryRow(`SELECT v FROM kv WHERE k = 1`).Scan(&v); err != nil || v != "first" {
		t.Errorf("second transaction reads %q, %v; want first", v, err)
	}
	if err := second.Rollback(); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentUpdates(t *testing.T) {
	db := openTestDB(t, &persistence.Options{
		Sync:       persistence.SyncNormal,
		Migrations: []persistence.Migration{{Name: "counter", SQL: `CREATE TABLE c(n INTEGER); INSERT INTO c VALUES (0);`}},
	})
	ctx := context.Background()
	const workers, rounds = 8, 25
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range rounds {
				err := db.Update(ctx, func(tx *persistence.Tx) error {
					var n int
					if err := tx.QueryRow(`SELECT n FROM c`).Scan(&n); err != nil {
						return err
					}
					_, err := tx.Exec(`UPDATE c SET n = ?`, n+1)
					return err
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	// Readers and maintenance run alongside.
	wg.Go(func() {
		for range rounds {
			err := db.View(ctx, func(tx *persistence.Tx) error {
				var n int
				return tx.QueryRow(`SELECT n FROM c`).Scan(&n)
			})
			if err != nil {
				t.Error(err)
			}
			if err := db.Checkpoint(ctx); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
	if got := queryInts(t, db, `SELECT n FROM c`); !slices.Equal(got, []int{workers * rounds}) {
		t.Errorf("counter = %v, want %d", got, workers*rounds)
	}
}

// A file in rollback-journal mode copied with its hot journal in the middle
// of a transaction (what a crash leaves) cannot be read read-only; CheckFile
// checks it as the next read-write open would find it, rolled back, and
// leaves the original and its journal as they were.
func TestCheckFileRollsAHotJournalBackInACopy(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "live.db")
	db, err := sql.Open("sqlite", src)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	for _, q := range []string{
		`PRAGMA journal_mode = DELETE`,
		`PRAGMA cache_size = 2`, // dirty pages spill to the file before COMMIT
		`CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT NOT NULL)`,
		`WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < 500) INSERT INTO kv SELECT k, 'committed' FROM n`,
		`BEGIN`,
		`UPDATE kv SET v = printf('%0500d', k)`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// The crash: the file and its journal as they are mid-transaction.
	crashed := filepath.Join(dir, "crashed.db")
	for _, s := range []string{"", "-journal"} {
		b, err := os.ReadFile(src + s)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(crashed+s, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec(`ROLLBACK`); err != nil {
		t.Fatal(err)
	}
	before, _ := fileDigest(t, crashed)
	journal, _ := fileDigest(t, crashed+"-journal")
	// What CheckFile has to get past: a read-only open is refused.
	if _, err := persistence.Open(context.Background(), crashed, &persistence.Options{ReadOnly: true}); !errors.Is(err, persistence.ErrReadOnly) {
		t.Fatalf("a read-only open of a file with a hot journal: %v; want SQLite's refusal (ErrReadOnly)", err)
	}

	if err := persistence.CheckFile(context.Background(), crashed); err != nil {
		t.Fatalf("CheckFile of a file with a hot journal: %v", err)
	}
	if after, _ := fileDigest(t, crashed); after != before {
		t.Error("CheckFile changed the file")
	}
	if after, _ := fileDigest(t, crashed+"-journal"); after != journal {
		t.Error("CheckFile changed the journal")
	}
	// The runtime's open rolls it back: the committed rows, unchanged.
	live := openTestDBAt(t, crashed, nil)
	if got := queryString(t, live, `SELECT group_concat(DISTINCT v) FROM kv`); got != "committed" {
		t.Errorf("after the rollback: %q, want committed", got)
	}
}
