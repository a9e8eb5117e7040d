package persistence_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"github.com/fractalrt/fractal/persistence"
)

// testLayer is a layer whose version is the application_id itself, at
// most known; its migrations create tables l1, l2, ...
type testLayer struct {
	known  int32
	fail   bool  // Migrate fails after creating its tables
	checks int   // calls of Check
	ran    []int // versions Migrate started from
}

func (l *testLayer) layer() *persistence.Layer {
	return &persistence.Layer{
		Check: func(id int32) (bool, error) {
			l.checks++
			if id > l.known {
				return false, fmt.Errorf("%w: layer version %d, known %d", persistence.ErrSchemaTooNew, id, l.known)
			}
			return id < l.known, nil
		},
		Migrate: func(tx *persistence.Tx, id int32) (int32, error) {
			l.ran = append(l.ran, int(id))
			for v := id + 1; v <= l.known; v++ {
				if _, err := tx.Exec(fmt.Sprintf(`CREATE TABLE l%d (x)`, v)); err != nil {
					return 0, err
				}
			}
			if l.fail {
				return 0, errors.New("layer refuses")
			}
			return l.known, nil
		},
	}
}

func tableNames(t *testing.T, db *persistence.DB) []string {
	t.Helper()
	var names []string
	err := db.View(context.Background(), func(tx *persistence.Tx) error {
		rows, err := tx.Query(`SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				return err
			}
			names = append(names, n)
		}
		return rows.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// A layer is migrated with the migrations, in their transaction, and its
// version kept in application_id; a current file is opened without a write.
func TestLayerMigratesWithMigrations(t *testing.T) {
	path := filepath.Join(t.TempDir(), "l.db")
	kv := []persistence.Migration{{Name: "kv", SQL: `CREATE TABLE kv (k, v)`}}
	l := &testLayer{known: 2}
	db := openTestDBAt(t, path, &persistence.Options{Migrations: kv, Layer: l.layer()})
	if got := db.ApplicationID(); got != 2 {
		t.Fatalf("ApplicationID = %d, want 2", got)
	}
	if got := tableNames(t, db); !slices.Equal(got, []string{"kv", "l1", "l2"}) {
		t.Fatalf("tables %q", got)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if got := queryInts(t, openTestDBAt(t, path, &persistence.Options{ReadOnly: true}), `PRAGMA application_id`); !slices.Equal(got, []int{2}) {
		t.Fatalf("application_id in the file: %v", got)
	}

	// Current: Check is asked, Migrate is not, nothing is written.
	sum, _ := fileDigest(t, path)
	l.ran = nil
	db = openTestDBAt(t, path, &persistence.Options{Migrations: kv, Layer: l.layer()})
	if db.WroteAtOpen() || len(l.ran) != 0 || db.ApplicationID() != 2 {
		t.Fatalf("current file: wrote %v, Migrate ran from %v, ApplicationID %d", db.WroteAtOpen(), l.ran, db.ApplicationID())
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if got, _ := fileDigest(t, path); got != sum {
		t.Fatal("opening a current file changed it")
	}

	// A newer layer alone migrates (user_version is current).
	l.known = 3
	db = openTestDBAt(t, path, &persistence.Options{Migrations: kv, Layer: l.layer()})
	if !slices.Equal(l.ran, []int{2}) || db.ApplicationID() != 3 || db.Version() != 1 {
		t.Fatalf("Migrate ran from %v, ApplicationID %d, Version %d", l.ran, db.ApplicationID(), db.Version())
	}
}

// A file whose layer Check refuses is left as it was, log files included,
// and a read-only Open refuses it too.
func TestLayerTooNewLeavesFileUntouched(t *testing.T) {
	path := filepath.Join(t.TempDir(), "l.db")
	db := openTestDBAt(t, path, &persistence.Options{Layer: (&testLayer{known: 5}).layer()})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	sum, size := fileDigest(t, path)
	for _, ro := range []bool{false, true} {
		db, err := persistence.Open(context.Background(), path, &persistence.Options{ReadOnly: ro, Layer: (&testLayer{known: 4}).layer()})
		if err == nil {
			db.Close()
			t.Fatalf("read-only %v: Open of a newer layer succeeded", ro)
		}
		if !errors.Is(err, persistence.ErrSchemaTooNew) {
			t.Fatalf("read-only %v: %v does not wrap ErrSchemaTooNew", ro, err)
		}
		if !ro && (exists(t, path+"-wal") || exists(t, path+"-shm")) {
			t.Error("refused Open left a -wal or -shm file")
		}
		if got, gotSize := fileDigest(t, path); got != sum {
			t.Fatalf("read-only %v: file changed, size %d -> %d", ro, size, gotSize)
		}
	}
}

// A failing layer migration rolls back the pending migrations too.
func TestLayerFailureRollsBackEverything(t *testing.T) {
	path := filepath.Join(t.TempDir(), "l.db")
	kv := []persistence.Migration{{Name: "kv", SQL: `CREATE TABLE kv (k, v)`}}
	db := openTestDBAt(t, path, &persistence.Options{Migrations: kv, Layer: (&testLayer{known: 1}).layer()})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	more := append(kv, persistence.Migration{Name: "more", SQL: `CREATE TABLE more (x)`})
	_, err := persistence.Open(context.Background(), path, &persistence.Options{Migrations: more, Layer: (&testLayer{known: 2, fail: true}).layer()})
	if !errors.Is(err, persistence.ErrMigration) {
		t.Fatalf("Open with a failing layer: %v, want ErrMigration", err)
	}
	db = openTestDBAt(t, path, &persistence.Options{ReadOnly: true})
	if got := tableNames(t, db); !slices.Equal(got, []string{"kv", "l1"}) {
		t.Fatalf("tables after the failed migration: %q", got)
	}
	if v := queryInts(t, db, `PRAGMA application_id`); !slices.Equal(v, []int{1}) {
		t.Fatalf("application_id after the failed migration: %v", v)
	}
	if db.Version() != 1 {
		t.Fatalf("user_version after the failed migration: %d", db.Version())
	}
}

// The layer owns application_id: a migration that sets it does not keep
// it.
func TestLayerOwnsApplicationID(t *testing.T) {
	m := []persistence.Migration{{SQL: `PRAGMA application_id = 77`}}
	db := openTestDB(t, &persistence.Options{Migrations: m, Layer: (&testLayer{known: 1}).layer()})
	if got := queryInts(t, db, `PRAGMA application_id`); !slices.Equal(got, []int{1}) {
		t.Fatalf("application_id = %v, want the layer's 1", got)
	}
}
